// A device's name ("Alice's laptop"), encrypted to the account's identity key so that every
// device of the account (they share the identity key pair) can read it and the server, which
// stores it (service.proto NewDevice.name, DeviceInfo.name), cannot.
//
// Blob (kDeviceNameOverhead + name bytes, at most kMaxDeviceNameBlobSize):
//   ephemeral X25519 public key (32) || nonce (24) || XChaCha20-Poly1305 ciphertext and tag
// with key = HKDF-SHA256(ikm = X25519(ephemeral private, identity public), salt = none,
// info = kDeviceNameInfo, 32 bytes) and associated data = the ephemeral public key.
//
// Confidential, not authenticated: anyone who knows the identity public key (the server and
// every contact do) can make a blob that opens, so a name is a label for the user, never
// evidence of which device is which.
//
// Names are valid UTF-8 of 1 to kMaxDeviceNameSize bytes once ASCII white space is trimmed from
// both ends, without control characters (C0, DEL, C1), line or paragraph separators, or the
// bidirectional embedding, override and isolate controls (which could make one name display as
// another). open() applies the same rules to what it decrypts. Pure functions (randomness
// injected); thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <tl/expected.hpp>

#include "contract/limits.h"
#include "crypto/bytes.h"
#include "crypto/rng.h"
#include "protocol/keys.h"

namespace sotto::client {

inline constexpr std::size_t kMaxDeviceNameSize = 64;
// The largest name the server stores (NewDevice.name).
inline constexpr std::size_t kMaxDeviceNameBlobSize = contract::kMaxDeviceNameBytes;
inline constexpr std::size_t kDeviceNameOverhead = 32 + 24 + 16;
inline constexpr std::string_view kDeviceNameInfo = "sotto-device-name-v1";

enum class DeviceNameError {
  empty,              // nothing left once white space is trimmed
  too_long,           // more than kMaxDeviceNameSize bytes
  invalid_utf8,       // not valid UTF-8
  control_character,  // a control, separator or bidirectional control character
  invalid_key,        // the identity key or the blob's ephemeral key is not usable (low order)
  malformed,          // a blob of an impossible size, or a name not in its stored form
  does_not_open,      // sealed to another identity key, or altered
};
[[nodiscard]] std::string_view to_string(DeviceNameError e);

// The name as it is stored: `name` with ASCII white space trimmed from both ends, checked as
// above.
[[nodiscard]] tl::expected<std::string, DeviceNameError> normalize_device_name(
    std::string_view name);

// Seals normalize_device_name(name) to the account's identity key.
[[nodiscard]] tl::expected<Bytes, DeviceNameError> seal_device_name(
    std::string_view name, const protocol::PublicKey& identity, crypto::Rng& rng);

// Opens a blob with the account's identity key pair. The size is checked before any work; a
// name that decrypts but breaks the rules (or is not in its normalised form) is refused.
[[nodiscard]] tl::expected<std::string, DeviceNameError> open_device_name(
    ByteView blob, const protocol::IdentityKeyPair& identity);

}  // namespace sotto::client
