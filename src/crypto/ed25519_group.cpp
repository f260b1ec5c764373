#include "crypto/ed25519_group.h"

#include <sodium.h>

#include <algorithm>

#include "crypto/rng.h"

namespace sotto::crypto::ed25519_group {

static_assert(crypto_core_ed25519_BYTES == kPointSize &&
              crypto_core_ed25519_SCALARBYTES == kScalarSize &&
              crypto_core_ed25519_NONREDUCEDSCALARBYTES == 64);

Point identity();

namespace {

bool is_zero(const Scalar& s) {
  return sodium_is_zero(s.data(), s.size()) == 1;
}

// 8^-1 mod L: n * P for a point with a torsion component is computed as (n/8) * (8P) plus
// (n mod 8) times the torsion part.
const Scalar& inverse_of_eight() {
  static const Scalar inv = [] {
    ensure_sodium_initialized();
    Scalar eight{};
    eight[0] = 8;
    Scalar out{};
    crypto_core_ed25519_scalar_invert(out.data(), eight.data());
    return out;
  }();
  return inv;
}

// libsodium's multiplication of a subgroup point other than the identity; it fails only for a
// zero result, which callers rule out beforehand, and that result is the identity anyway.
Point subgroup_mul(const Scalar& n, const Point& p) {
  Point r{};
  if (crypto_scalarmult_ed25519_noclamp(r.data(), n.data(), p.data()) != 0) r = identity();
  return r;
}

}  // namespace

Point identity() {
  Point p{};
  p[0] = 1;
  return p;
}

bool is_identity(const Point& p) {
  return p == identity();
}

std::optional<Point> decode_point(ByteView bytes) {
  if (bytes.size() != kPointSize) return std::nullopt;
  ensure_sodium_initialized();
  Point in{};
  std::copy(bytes.begin(), bytes.end(), in.begin());
  // libsodium's add decodes any point of the curve (it refuses x^2 without a square root) and
  // re-encodes canonically; an input that does not come back unchanged had y >= p or a
  // negative zero x, which RFC 8032 decoding refuses.
  Point out{};
  const Point id = identity();
  if (crypto_core_ed25519_add(out.data(), in.data(), id.data()) != 0) return std::nullopt;
  if (out != in) return std::nullopt;
  return in;
}

Point add(const Point& p, const Point& q) {
  Point r{};
  if (crypto_core_ed25519_add(r.data(), p.data(), q.data()) != 0) r = identity();  // not decoded
  return r;
}

Point sub(const Point& p, const Point& q) {
  Point r{};
  if (crypto_core_ed25519_sub(r.data(), p.data(), q.data()) != 0) r = identity();  // not decoded
  return r;
}

Point mul_cofactor(const Point& p) {
  Point r = add(p, p);
  r = add(r, r);
  return add(r, r);
}

Point mul(const Scalar& n, const Point& p) {
  ensure_sodium_initialized();
  const Scalar n_mod_l = reduce(n);
  // libsodium multiplies only points of the prime-order subgroup (and refuses a zero result):
  // try it first, since honest points are in the subgroup; it checks membership itself.
  if (is_zero(n_mod_l)) {
    if ((n[0] & 7) == 0 || crypto_core_ed25519_is_valid_point(p.data()) == 1) return identity();
  } else {
    Point r{};
    if (crypto_scalarmult_ed25519_noclamp(r.data(), n_mod_l.data(), p.data()) == 0) return r;
  }
  // p = P + T with P in the subgroup and T of order dividing 8: P = 8^-1 * (8p), T = p - P,
  // n * p = (n * 8^-1 mod L) * (8p) + (n mod 8) * T.
  const Point p8 = mul_cofactor(p);
  Point prime_part = identity();
  Point n_prime = identity();
  if (!is_identity(p8)) {
    prime_part = subgroup_mul(inverse_of_eight(), p8);
    const Scalar k = scalar_mul(n_mod_l, inverse_of_eight());
    if (!is_zero(k)) n_prime = subgroup_mul(k, p8);
  }
  const Point torsion = sub(p, prime_part);
  Point n_torsion = identity();
  for (int i = 0; i < (n[0] & 7); ++i) n_torsion = add(n_torsion, torsion);
  return add(n_prime, n_torsion);
}

Point mul_base(const Scalar& n) {
  ensure_sodium_initialized();
  const Scalar n_mod_l = reduce(n);
  if (is_zero(n_mod_l)) return identity();
  Point r{};
  if (crypto_scalarmult_ed25519_base_noclamp(r.data(), n_mod_l.data()) != 0) r = identity();
  return r;
}

Scalar reduce(ByteView wide) {
  std::array<std::uint8_t, 64> buf{};
  std::copy_n(wide.begin(), std::min<std::size_t>(wide.size(), buf.size()), buf.begin());
  Scalar out{};
  crypto_core_ed25519_scalar_reduce(out.data(), buf.data());
  sodium_memzero(buf.data(), buf.size());
  return out;
}

Scalar scalar_add(const Scalar& a, const Scalar& b) {
  Scalar out{};
  crypto_core_ed25519_scalar_add(out.data(), a.data(), b.data());
  return out;
}

Scalar scalar_mul(const Scalar& a, const Scalar& b) {
  Scalar out{};
  crypto_core_ed25519_scalar_mul(out.data(), a.data(), b.data());
  return out;
}

bool is_reduced(const Scalar& s) {
  return reduce(s) == s;
}

}  // namespace sotto::crypto::ed25519_group
