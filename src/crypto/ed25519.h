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

struct Ed25519KeyPair {
  Ed25519PublicKey public_key{};
  Secret<kEd25519SeedSize> seed;  // the private key is derived from the seed on use

  [[nodiscard]] static Ed25519KeyPair generate(Rng& rng);
  [[nodiscard]] static Ed25519KeyPair from_seed(Secret<kEd25519SeedSize> seed);
  [[nodiscard]] Ed25519Signature sign(ByteView message) const;
};

[[nodiscard]] tl::expected<void, Error> ed25519_verify(ByteView public_key, ByteView message,
                                                       ByteView signature);

}  // namespace sotto::crypto
