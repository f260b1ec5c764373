// Ed25519 signatures (RFC 8032) over libsodium, for device authentication keys: each device signs
// the server's login challenge with its own key; the server keeps only the public key.
// Thread-safe.
#pragma once

#include <array>
#include <span>
#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "crypto/error.h"
#include "crypto/rng.h"
#include "crypto/secret.h"

namespace sotto::crypto {

inline constexpr std::size_t kEd25519PublicKeySize = 32;
inline constexpr std::size_t kEd25519SeedSize = 32;
inline constexpr std::size_t kEd25519SignatureSize = 64;

using Ed25519PublicKey = std::array<std::uint8_t, kEd25519PublicKeySize>;
using Ed25519Signature = std::array<std::uint8_t, kEd25519SignatureSize>;

// A key pair is only ever made from its seed, so its public key always matches its secret key:
// signing with a secret key and a public key that do not belong together gives the secret key
// away (two signatures of one message under two public keys reveal the scalar). The expanded
// secret key is kept, so that a signature costs one scalar multiplication, not two.
class Ed25519KeyPair {
 public:
  // Holds no key (empty()): its signatures verify under no public key. Assign a real pair
  // before use. A moved-from pair is empty too: its secret is wiped and its public key cleared.
  Ed25519KeyPair() = default;
  Ed25519KeyPair(Ed25519KeyPair&& other) noexcept;
  Ed25519KeyPair& operator=(Ed25519KeyPair&& other) noexcept;

  [[nodiscard]] static Ed25519KeyPair generate(Rng& rng);
  [[nodiscard]] static Ed25519KeyPair from_seed(const Secret<kEd25519SeedSize>& seed);
  [[nodiscard]] Ed25519KeyPair clone() const;

  [[nodiscard]] bool empty() const noexcept { return !has_key_; }
  const Ed25519PublicKey& public_key() const noexcept { return public_key_; }
  // The 32 bytes the pair is derived from: what a store keeps.
  ByteView seed() const noexcept { return secret_.view().first(kEd25519SeedSize); }
  [[nodiscard]] Ed25519Signature sign(ByteView message) const;

 private:
  static constexpr std::size_t kSecretKeySize = 64;

  Ed25519PublicKey public_key_{};
  Secret<kSecretKeySize> secret_;  // libsodium's secret key: the seed, then the public key
  bool has_key_ = false;
};

[[nodiscard]] tl::expected<void, Error> ed25519_verify(ByteView public_key, ByteView message,
                                                       ByteView signature);

}  // namespace sotto::crypto
