// Curve25519 keys as the protocol uses them: public keys serialize as 0x05 || u (33 bytes),
// private keys are clamped 32-byte scalars held in crypto::Secret. Identity keys sign prekeys with
// crypto::curve25519_sign. Plain values; thread-compatible.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include <tl/expected.hpp>

#include "crypto/rng.h"
#include "crypto/secret.h"
#include "crypto/signature.h"
#include "crypto/x25519.h"
#include "protocol/error.h"
#include "protocol/types.h"

namespace sotto::protocol {

inline constexpr std::uint8_t kDjbKeyType = 0x05;
inline constexpr std::size_t kPublicKeySize = 32;
inline constexpr std::size_t kSerializedPublicKeySize = 33;

class PublicKey {
 public:
  PublicKey() { bytes_.fill(0); }
  explicit PublicKey(const crypto::X25519PublicBytes& bytes) : bytes_(bytes) {}

  // Accepts exactly 33 bytes starting with 0x05, as the reference's curve_decode_point does.
  [[nodiscard]] static tl::expected<PublicKey, Error> decode(ByteView serialized);
  // Raw 32-byte u-coordinate (local storage).
  [[nodiscard]] static tl::expected<PublicKey, Error> from_raw(ByteView raw);

  std::array<std::uint8_t, kSerializedPublicKeySize> serialize() const;
  const crypto::X25519PublicBytes& bytes() const { return bytes_; }
  std::span<const std::uint8_t, kPublicKeySize> span() const { return bytes_; }
  ByteView view() const { return {bytes_.data(), bytes_.size()}; }

  [[nodiscard]] tl::expected<void, Error> verify(ByteView message, ByteView signature) const;

  friend auto operator<=>(const PublicKey&, const PublicKey&) = default;

 private:
  crypto::X25519PublicBytes bytes_;
};

using PrivateKey = crypto::Secret<32>;

struct KeyPair {
  PublicKey public_key;
  PrivateKey private_key;

  [[nodiscard]] static KeyPair generate(crypto::Rng& rng);
  [[nodiscard]] static KeyPair from_private(PrivateKey priv);
  [[nodiscard]] KeyPair clone() const { return {public_key, private_key.clone()}; }

  [[nodiscard]] crypto::Curve25519Signature sign(ByteView message, crypto::Rng& rng) const;
  [[nodiscard]] tl::expected<crypto::Secret<32>, Error> agree(const PublicKey& theirs) const;
};

// The account's long-term identity (shared by all its devices, as in Signal).
using IdentityKeyPair = KeyPair;

struct PreKeyRecord {
  PreKeyId id;
  KeyPair key_pair;
  [[nodiscard]] PreKeyRecord clone() const { return {id, key_pair.clone()}; }
};

struct SignedPreKeyRecord {
  SignedPreKeyId id;
  KeyPair key_pair;
  crypto::Curve25519Signature signature;  // identity signature over key_pair.public_key.serialize()
  std::uint64_t timestamp = 0;            // seconds since the epoch, for rotation
  [[nodiscard]] SignedPreKeyRecord clone() const {
    return {id, key_pair.clone(), signature, timestamp};
  }
};

// Registration ids: 14 bits, 1..16380, as the reference generates them.
[[nodiscard]] RegistrationId generate_registration_id(crypto::Rng& rng);

// One-time prekeys with consecutive ids from `start`, wrapping within 1..0xFFFFFE.
[[nodiscard]] std::vector<PreKeyRecord> generate_pre_keys(crypto::Rng& rng, PreKeyId start,
                                                          std::size_t count);

[[nodiscard]] SignedPreKeyRecord generate_signed_pre_key(crypto::Rng& rng,
                                                         const IdentityKeyPair& identity,
                                                         SignedPreKeyId id,
                                                         std::uint64_t timestamp);

}  // namespace sotto::protocol
