// Validated forms of the Signal v3 wire messages. decode() checks the size limit first, then the
// version byte, then the protobuf, then every required field and key; a decoded message keeps its
// original bytes, because MACs and signatures cover the bytes as sent, not a re-encoding.
// docs/wire-format.md shows each message byte by byte. Plain values; thread-compatible.
#pragma once

#include <optional>

#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "crypto/secret.h"
#include "protocol/error.h"
#include "protocol/keys.h"
#include "protocol/limits.h"
#include "protocol/types.h"

namespace sotto::protocol {

// The type codes the reference library gives its ciphertext messages.
enum class MessageType : int { signal = 2, pre_key = 3, sender_key = 4, sender_key_distribution = 5 };

struct SignalMessage {
  std::uint8_t version = kMessageVersion;
  PublicKey ratchet_key;
  std::uint32_t counter = 0;
  std::uint32_t previous_counter = 0;
  Bytes ciphertext;
  Bytes serialized;  // version byte || protobuf || 8-byte MAC

  [[nodiscard]] static tl::expected<SignalMessage, Error> decode(ByteView bytes);
  // Serializes and appends the MAC computed with (sender identity, receiver identity).
  [[nodiscard]] static SignalMessage create(const PublicKey& ratchet_key, std::uint32_t counter,
                                            std::uint32_t previous_counter, Bytes ciphertext,
                                            const crypto::Secret<32>& mac_key,
                                            const PublicKey& sender_identity,
                                            const PublicKey& receiver_identity);
  // Constant-time comparison of the truncated MAC.
  [[nodiscard]] bool verify_mac(const PublicKey& sender_identity,
                                const PublicKey& receiver_identity,
                                const crypto::Secret<32>& mac_key) const;
};

struct PreKeySignalMessage {
  std::uint8_t version = kMessageVersion;
  RegistrationId registration_id;
  std::optional<PreKeyId> pre_key_id;
  SignedPreKeyId signed_pre_key_id;
  PublicKey base_key;
  PublicKey identity_key;
  SignalMessage message;
  Bytes serialized;  // version byte || protobuf

  [[nodiscard]] static tl::expected<PreKeySignalMessage, Error> decode(ByteView bytes);
  [[nodiscard]] static PreKeySignalMessage create(RegistrationId registration_id,
                                                  std::optional<PreKeyId> pre_key_id,
                                                  SignedPreKeyId signed_pre_key_id,
                                                  const PublicKey& base_key,
                                                  const PublicKey& identity_key,
                                                  SignalMessage message);
};

struct SenderKeyMessage {
  std::uint8_t version = kMessageVersion;
  SenderKeyId key_id;
  std::uint32_t iteration = 0;
  Bytes ciphertext;
  Bytes serialized;  // version byte || protobuf || 64-byte signature

  [[nodiscard]] static tl::expected<SenderKeyMessage, Error> decode(ByteView bytes);
  [[nodiscard]] static SenderKeyMessage create(SenderKeyId key_id, std::uint32_t iteration,
                                               Bytes ciphertext, const PrivateKey& signing_key,
                                               const crypto::EdwardsPublicBytes& signing_edwards,
                                               crypto::Rng& rng);
  [[nodiscard]] tl::expected<void, Error> verify_signature(const PublicKey& signing_key) const;
};

struct SenderKeyDistributionMessage {
  std::uint8_t version = kMessageVersion;
  SenderKeyId key_id;
  std::uint32_t iteration = 0;
  crypto::Secret<32> chain_key;
  PublicKey signing_key;
  Bytes serialized;  // version byte || protobuf (secret: holds the chain key)

  [[nodiscard]] static tl::expected<SenderKeyDistributionMessage, Error> decode(ByteView bytes);
  [[nodiscard]] static SenderKeyDistributionMessage create(SenderKeyId key_id,
                                                           std::uint32_t iteration,
                                                           const crypto::Secret<32>& chain_key,
                                                           const PublicKey& signing_key);
};

// What encrypt hands back: the type decides which decrypt call the receiver makes.
struct CiphertextMessage {
  MessageType type;
  Bytes serialized;
};

}  // namespace sotto::protocol
