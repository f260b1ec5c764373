// Linking a new device (docs/architecture.md section 4): the new device shows a link code, an
// existing device seals the account secrets to it, the server relays the sealed bytes.
//
// Link code: base32 of provisioning address (16) || X25519 public key (32) || the first two bytes
// of SHA-256 over the previous 48 (a typo check), i.e. 50 bytes = 80 characters, shown in
// groups of 4 separated by '-'. Decoding ignores case, spaces and '-'.
//
// Sealing (content.proto ProvisionEnvelope): an ephemeral X25519 key agrees with the new device's
// key; HKDF-SHA256(shared, salt empty, info "sotto-provision-v1") gives 44 bytes: the AES-256-GCM
// key [0,32) and nonce [32,44); the associated data is "sotto-provision-v1".
// Pure functions (randomness injected); thread-safe.
#pragma once

#include <array>
#include <string>

#include "contract/limits.h"
#include "crypto/rng.h"
#include "crypto/secret.h"
#include "crypto/x25519.h"
#include "sotto/client.h"

namespace sotto::client {

inline constexpr std::size_t kProvisioningAddressSize = contract::kProvisioningAddressSize;
inline constexpr std::size_t kLinkCodeChecksumSize = 2;

struct LinkCode {
  std::array<std::uint8_t, kProvisioningAddressSize> address{};
  crypto::X25519PublicBytes public_key{};
};

[[nodiscard]] std::string encode_link_code(const LinkCode& code);
[[nodiscard]] Result<LinkCode> decode_link_code(std::string_view text);

// Seals the serialized ProvisionMessage to `device_key`; returns the serialized
// ProvisionEnvelope.
[[nodiscard]] Bytes seal_provision(ByteView provision_message,
                                   const crypto::X25519PublicBytes& device_key, crypto::Rng& rng);
// Opens a serialized ProvisionEnvelope with the new device's ephemeral key; returns the
// serialized ProvisionMessage.
[[nodiscard]] Result<crypto::SecretBuffer> open_provision(ByteView envelope,
                                                          const crypto::X25519KeyPair& device_key);

}  // namespace sotto::client
