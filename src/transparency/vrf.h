// ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381, suite 0x03): the verifiable random function that
// hides usernames in the key-transparency prefix tree. The log holds the secret key; anyone with
// the public key checks that an output belongs to a label without learning other labels.
// Composed from crypto/ed25519_group.h (libsodium's group operations) and SHA-512.
//
// VrfKeyPair owns its secret (wiped on destruction, moved not copied); it is immutable after
// construction, so prove() is thread-safe. The free functions are thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "crypto/rng.h"
#include "crypto/secret.h"
#include "transparency/error.h"

namespace sotto::transparency {

inline constexpr std::size_t kVrfSecretKeySize = 32;
inline constexpr std::size_t kVrfPublicKeySize = 32;
inline constexpr std::size_t kVrfProofSize = 80;  // Gamma (32) || c (16) || s (32)
inline constexpr std::size_t kVrfOutputSize = 64;

using VrfPublicKey = std::array<std::uint8_t, kVrfPublicKeySize>;
using VrfProof = std::array<std::uint8_t, kVrfProofSize>;
using VrfOutput = std::array<std::uint8_t, kVrfOutputSize>;

class VrfKeyPair {
 public:
  // RFC 9381 section 5.1 with RFC 8032 key generation: the secret scalar and nonce key come
  // from SHA-512 of the 32-byte secret key, the public key is x * B.
  [[nodiscard]] static VrfKeyPair from_secret(const crypto::Secret<kVrfSecretKeySize>& sk);
  [[nodiscard]] static VrfKeyPair generate(crypto::Rng& rng);

  const VrfPublicKey& public_key() const noexcept { return public_key_; }
  // pi for alpha (RFC 9381 section 5.1). Deterministic.
  [[nodiscard]] VrfProof prove(ByteView alpha) const;
  // beta for alpha, the same as proof_to_hash(prove(alpha)).
  [[nodiscard]] VrfOutput evaluate(ByteView alpha) const;

 private:
  VrfKeyPair() = default;
  crypto::Secret<32> scalar_;     // x, clamped as RFC 8032 does
  crypto::Secret<32> nonce_key_;  // the second half of SHA-512(sk)
  VrfPublicKey public_key_{};
};

// RFC 9381 section 5.3 with validate_key = TRUE: refuses a public key that does not decode or is
// of small order, a proof whose Gamma does not decode or whose s is not below L, and a proof
// whose challenge does not match. Returns beta.
[[nodiscard]] tl::expected<VrfOutput, Error> vrf_verify(ByteView public_key, ByteView alpha,
                                                        ByteView proof);

// RFC 9381 section 5.2: beta from a proof, without verifying it.
[[nodiscard]] tl::expected<VrfOutput, Error> vrf_proof_to_hash(ByteView proof);

}  // namespace sotto::transparency
