// The edwards25519 group and its scalars, for constructions that need more than signatures (the
// key-transparency VRF, RFC 9381). Everything is composed from libsodium's crypto_core_ed25519_*
// and crypto_scalarmult_ed25519*_noclamp; no field or group arithmetic is written here.
//
// Points travel as their 32-byte RFC 8032 encodings. Unlike libsodium 1.0.18's own checks, which
// refuse any point outside the prime-order subgroup, these functions accept every point of the
// curve (RFC 8032 decoding) and multiply it correctly, torsion component included: RFC 9381's
// encode-to-curve and its verification of third-party points need exactly that.
// All functions are thread-safe and allocate nothing.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "crypto/bytes.h"

namespace sotto::crypto::ed25519_group {

inline constexpr std::size_t kPointSize = 32;
inline constexpr std::size_t kScalarSize = 32;

using Point = std::array<std::uint8_t, kPointSize>;
// A little-endian integer below 2^256; functions say when they need it reduced (below L).
using Scalar = std::array<std::uint8_t, kScalarSize>;

// The neutral element's encoding (x = 0, y = 1).
Point identity();
bool is_identity(const Point& p);

// RFC 8032 section 5.1.3 decoding: y below p, the point on the curve, and no negative zero x.
// Accepts points of any order. std::nullopt when the bytes encode no point.
std::optional<Point> decode_point(ByteView bytes);

// p + q and p - q for any points of the curve (decoded ones).
Point add(const Point& p, const Point& q);
Point sub(const Point& p, const Point& q);
// 8p: clears the torsion component, landing in the prime-order subgroup.
Point mul_cofactor(const Point& p);
// n * p for any integer n below 2^256 and any point p of the curve.
Point mul(const Scalar& n, const Point& p);
// n * B for the standard base point; n need not be reduced.
Point mul_base(const Scalar& n);

// Scalars modulo L, the prime order of the subgroup.
Scalar reduce(ByteView wide);  // any 0..64 bytes, little-endian, taken mod L
Scalar scalar_add(const Scalar& a, const Scalar& b);
Scalar scalar_mul(const Scalar& a, const Scalar& b);
bool is_reduced(const Scalar& s);  // s < L

}  // namespace sotto::crypto::ed25519_group
