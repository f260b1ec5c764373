#include "transparency/vrf.h"

#include <algorithm>
#include <optional>

#include "crypto/ed25519_group.h"
#include "crypto/hash.h"

namespace sotto::transparency {

namespace g = crypto::ed25519_group;

namespace {

constexpr std::uint8_t kSuite = 0x03;  // ECVRF-EDWARDS25519-SHA512-TAI
constexpr std::uint8_t kEncodeFront = 0x01;
constexpr std::uint8_t kChallengeFront = 0x02;
constexpr std::uint8_t kProofToHashFront = 0x03;
constexpr std::uint8_t kBack = 0x00;
constexpr std::size_t kChallengeSize = 16;

ByteView one(const std::uint8_t& b) {
  return {&b, 1};
}

// RFC 9381 section 5.4.1.1, try-and-increment. Any point of the curve is accepted as a
// candidate (RFC 8032 decoding) and its cofactor cleared afterwards; a check that refused points
// outside the prime-order subgroup would move on to the wrong counter most of the time.
std::optional<g::Point> encode_to_curve(const VrfPublicKey& pk, ByteView alpha) {
  for (unsigned ctr = 0; ctr < 256; ++ctr) {
    const auto c = static_cast<std::uint8_t>(ctr);
    const crypto::Sha512Digest h =
        crypto::sha512({one(kSuite), one(kEncodeFront), pk, alpha, one(c), one(kBack)});
    if (auto p = g::decode_point(ByteView(h).first(32))) return g::mul_cofactor(*p);
  }
  return std::nullopt;  // probability about 2^-256
}

std::array<std::uint8_t, kChallengeSize> challenge(const g::Point& y, const g::Point& h,
                                                   const g::Point& gamma, const g::Point& u,
                                                   const g::Point& v) {
  const crypto::Sha512Digest d =
      crypto::sha512({one(kSuite), one(kChallengeFront), y, h, gamma, u, v, one(kBack)});
  std::array<std::uint8_t, kChallengeSize> c{};
  std::copy_n(d.begin(), kChallengeSize, c.begin());
  return c;
}

VrfOutput gamma_to_hash(const g::Point& gamma) {
  const g::Point g8 = g::mul_cofactor(gamma);
  return crypto::sha512({one(kSuite), one(kProofToHashFront), g8, one(kBack)});
}

g::Scalar widen(ByteView c) {
  g::Scalar s{};
  std::copy(c.begin(), c.end(), s.begin());
  return s;
}

}  // namespace

VrfKeyPair VrfKeyPair::from_secret(const crypto::Secret<kVrfSecretKeySize>& sk) {
  VrfKeyPair kp;
  crypto::Sha512Digest h = crypto::sha512({sk.view()});
  h[0] &= 248;
  h[31] &= 127;
  h[31] |= 64;
  kp.scalar_ = crypto::Secret<32>(ByteView(h).first(32));
  kp.nonce_key_ = crypto::Secret<32>(ByteView(h).subspan(32, 32));
  crypto::secure_wipe(h.data(), h.size());
  g::Scalar x{};
  std::copy_n(kp.scalar_.data(), 32, x.begin());
  kp.public_key_ = g::mul_base(x);
  crypto::secure_wipe(x.data(), x.size());
  return kp;
}

VrfKeyPair VrfKeyPair::generate(crypto::Rng& rng) {
  return from_secret(rng.secret<kVrfSecretKeySize>());
}

VrfProof VrfKeyPair::prove(ByteView alpha) const {
  g::Scalar x{};
  std::copy_n(scalar_.data(), 32, x.begin());
  // encode_to_curve fails only with probability 2^-256; the identity then stands in, which
  // verification refuses rather than accepting anything.
  const g::Point h = encode_to_curve(public_key_, alpha).value_or(g::identity());
  const g::Point gamma = g::mul(x, h);
  // Nonce, RFC 9381 section 5.4.2.2: SHA-512(second half of SHA-512(sk) || h) mod L.
  crypto::Sha512Digest k_wide = crypto::sha512({nonce_key_.view(), h});
  g::Scalar k = g::reduce(k_wide);
  crypto::secure_wipe(k_wide.data(), k_wide.size());
  const auto c = challenge(public_key_, h, gamma, g::mul_base(k), g::mul(k, h));
  const g::Scalar s = g::scalar_add(k, g::scalar_mul(widen(c), g::reduce(x)));
  crypto::secure_wipe(k.data(), k.size());
  crypto::secure_wipe(x.data(), x.size());

  VrfProof pi{};
  std::copy(gamma.begin(), gamma.end(), pi.begin());
  std::copy(c.begin(), c.end(), pi.begin() + 32);
  std::copy(s.begin(), s.end(), pi.begin() + 48);
  return pi;
}

VrfOutput VrfKeyPair::evaluate(ByteView alpha) const {
  const VrfProof pi = prove(alpha);
  return *vrf_proof_to_hash(pi);
}

tl::expected<VrfOutput, Error> vrf_proof_to_hash(ByteView proof) {
  if (proof.size() != kVrfProofSize) return tl::unexpected(Error::malformed);
  const auto gamma = g::decode_point(proof.first(32));
  if (!gamma) return tl::unexpected(Error::bad_vrf_proof);
  return gamma_to_hash(*gamma);
}

tl::expected<VrfOutput, Error> vrf_verify(ByteView public_key, ByteView alpha, ByteView proof) {
  if (public_key.size() != kVrfPublicKeySize) return tl::unexpected(Error::invalid_key);
  if (proof.size() != kVrfProofSize) return tl::unexpected(Error::malformed);
  const auto y = g::decode_point(public_key);
  // validate_key: a small-order key (8Y = identity) would let one proof fit many outputs.
  if (!y || g::is_identity(g::mul_cofactor(*y))) return tl::unexpected(Error::invalid_key);
  const auto gamma = g::decode_point(proof.first(32));
  if (!gamma) return tl::unexpected(Error::bad_vrf_proof);
  const g::Scalar c = widen(proof.subspan(32, kChallengeSize));
  const g::Scalar s = widen(proof.subspan(48, 32));
  if (!g::is_reduced(s)) return tl::unexpected(Error::bad_vrf_proof);

  VrfPublicKey pk{};
  std::copy(public_key.begin(), public_key.end(), pk.begin());
  const auto h = encode_to_curve(pk, alpha);
  if (!h) return tl::unexpected(Error::bad_vrf_proof);
  const g::Point u = g::sub(g::mul_base(s), g::mul(c, *y));
  const g::Point v = g::sub(g::mul(s, *h), g::mul(c, *gamma));
  const auto expected = challenge(*y, *h, *gamma, u, v);
  if (!std::equal(expected.begin(), expected.end(), proof.begin() + 32))
    return tl::unexpected(Error::bad_vrf_proof);
  return gamma_to_hash(*gamma);
}

}  // namespace sotto::transparency
