// Signatures made with Curve25519 (X25519) key pairs, in the form libsignal-protocol-c uses for
// signed prekeys and sender keys ("curve_sigs"): the Montgomery private scalar a signs as an
// Ed25519 key A = aB without negation, and the sign bit of A travels in the top bit of S (bit 255
// of the signature, always zero in a canonical S). Verification maps the Montgomery u-coordinate
// to the Edwards y = (u - 1) / (u + 1), takes the sign bit from the signature, clears it and runs
// libsodium's strict Ed25519 verification. A strict XEdDSA verifier would reject about half of
// the reference's signatures; this one accepts both those and XEdDSA's (sign bit zero).
// Built from libsodium's Ed25519 group and scalar operations and OpenSSL's SHA-512 and bignums;
// no curve arithmetic is written here. Verification keeps a small per-thread cache of
// u -> y conversions (public values only), since a group's signing keys verify many messages.
// Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "crypto/error.h"
#include "crypto/rng.h"
#include "crypto/secret.h"
#include "crypto/x25519.h"

namespace sotto::crypto {

inline constexpr std::size_t kCurve25519SignatureSize = 64;
using Curve25519Signature = std::array<std::uint8_t, kCurve25519SignatureSize>;

using EdwardsPublicBytes = std::array<std::uint8_t, 32>;

// The Edwards form A = aB (with its sign bit) that signatures by this key are made under. It costs
// a base-point multiplication, so signers that sign often (sender keys) compute it once and pass
// it to the second overload below.
[[nodiscard]] EdwardsPublicBytes curve25519_edwards_public(
    const Secret<kX25519KeySize>& montgomery_private);

// Signs with 64 bytes of fresh randomness mixed into the nonce, as the reference does.
[[nodiscard]] Curve25519Signature curve25519_sign(const Secret<kX25519KeySize>& montgomery_private,
                                                  ByteView message, Rng& rng);
// REQUIRES: edwards_public == curve25519_edwards_public(montgomery_private).
[[nodiscard]] Curve25519Signature curve25519_sign(const Secret<kX25519KeySize>& montgomery_private,
                                                  const EdwardsPublicBytes& edwards_public,
                                                  ByteView message, Rng& rng);

[[nodiscard]] tl::expected<void, Error> curve25519_verify(
    std::span<const std::uint8_t, kX25519KeySize> montgomery_public, ByteView message,
    std::span<const std::uint8_t, kCurve25519SignatureSize> signature);

}  // namespace sotto::crypto
