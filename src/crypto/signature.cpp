#include "crypto/signature.h"

#include <openssl/bn.h>
#include <sodium.h>

#include <algorithm>
#include <memory>

#include "crypto/hash.h"
#include "crypto/openssl_util.h"

namespace sotto::crypto {
namespace {

struct BnFree { void operator()(BIGNUM* p) const { BN_free(p); } };
struct BnCtxFree { void operator()(BN_CTX* p) const { BN_CTX_free(p); } };
using Bn = std::unique_ptr<BIGNUM, BnFree>;

const BIGNUM* field_prime() {
  // p = 2^255 - 19
  static BIGNUM* p = [] {
    BIGNUM* v = BN_new();
    if (v == nullptr || BN_set_bit(v, 255) != 1 || BN_sub_word(v, 19) != 1) detail::fail("BN p");
    return v;
  }();
  return p;
}

// Edwards y = (u - 1) / (u + 1) mod p (RFC 7748 section 4.1 birational map), little-endian.
bool montgomery_u_to_edwards_y(std::span<const std::uint8_t, 32> u_bytes,
                               std::array<std::uint8_t, 32>& y_out) {
  thread_local std::unique_ptr<BN_CTX, BnCtxFree> ctx(BN_CTX_new());
  std::array<std::uint8_t, 32> u_masked{};
  for (std::size_t i = 0; i < 32; ++i) u_masked[i] = u_bytes[i];
  u_masked[31] &= 0x7F;  // RFC 7748: the high bit of u is ignored
  Bn u(BN_lebin2bn(u_masked.data(), 32, nullptr));
  Bn num(BN_new());
  Bn den(BN_new());
  Bn y(BN_new());
  if (!u || !num || !den || !y || !ctx) detail::fail("BN_new");
  if (BN_nnmod(u.get(), u.get(), field_prime(), ctx.get()) != 1) detail::fail("BN_nnmod");
  if (BN_mod_sub(num.get(), u.get(), BN_value_one(), field_prime(), ctx.get()) != 1 ||
      BN_mod_add(den.get(), u.get(), BN_value_one(), field_prime(), ctx.get()) != 1) {
    detail::fail("BN_mod_add");
  }
  if (BN_is_zero(den.get())) return false;  // u = -1 has no Edwards image
  if (BN_mod_inverse(den.get(), den.get(), field_prime(), ctx.get()) == nullptr) return false;
  if (BN_mod_mul(y.get(), num.get(), den.get(), field_prime(), ctx.get()) != 1) {
    detail::fail("BN_mod_mul");
  }
  return BN_bn2lebinpad(y.get(), y_out.data(), 32) == 32;
}

void reduce_scalar(const std::uint8_t* in, std::size_t n, std::uint8_t out[32]) {
  std::uint8_t wide[64] = {};
  for (std::size_t i = 0; i < n; ++i) wide[i] = in[i];
  crypto_core_ed25519_scalar_reduce(out, wide);
  sodium_memzero(wide, sizeof wide);
}

}  // namespace

EdwardsPublicBytes curve25519_edwards_public(const Secret<kX25519KeySize>& montgomery_private) {
  ensure_sodium_initialized();
  Secret<32> a = montgomery_private.clone();
  x25519_clamp(a);
  EdwardsPublicBytes edwards_public{};
  if (crypto_scalarmult_ed25519_base_noclamp(edwards_public.data(), a.data()) != 0) {
    detail::fail("ed25519 base multiplication");
  }
  return edwards_public;
}

Curve25519Signature curve25519_sign(const Secret<kX25519KeySize>& montgomery_private,
                                    ByteView message, Rng& rng) {
  return curve25519_sign(montgomery_private, curve25519_edwards_public(montgomery_private), message,
                         rng);
}

Curve25519Signature curve25519_sign(const Secret<kX25519KeySize>& montgomery_private,
                                    const EdwardsPublicBytes& edwards_public, ByteView message,
                                    Rng& rng) {
  ensure_sodium_initialized();
  Secret<32> a = montgomery_private.clone();
  x25519_clamp(a);
  const std::uint8_t sign_bit = edwards_public[31] & 0x80;

  // Nonce: SHA-512(0xFE || 0xFF * 31 || a || M || Z), Z 64 random bytes (the reference's
  // hedged nonce; any uniformly random nonce is equally valid for verifiers).
  static const std::uint8_t kPrefix[32] = {
      0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  Secret<64> z = rng.secret<64>();
  Sha512Digest nonce_hash = sha512({ByteView(kPrefix, 32), a.view(), message, z.view()});
  Secret<32> r;
  crypto_core_ed25519_scalar_reduce(r.data(), nonce_hash.data());
  sodium_memzero(nonce_hash.data(), nonce_hash.size());

  Curve25519Signature sig{};
  if (crypto_scalarmult_ed25519_base_noclamp(sig.data(), r.data()) != 0) {
    detail::fail("ed25519 nonce multiplication");
  }
  Sha512Digest h_wide = sha512({ByteView(sig.data(), 32), ByteView(edwards_public), message});
  std::uint8_t h[32];
  crypto_core_ed25519_scalar_reduce(h, h_wide.data());

  Secret<32> a_reduced;
  reduce_scalar(a.data(), 32, a_reduced.data());
  Secret<32> ha;
  crypto_core_ed25519_scalar_mul(ha.data(), h, a_reduced.data());
  crypto_core_ed25519_scalar_add(sig.data() + 32, r.data(), ha.data());
  sig[63] |= sign_bit;
  return sig;
}

tl::expected<void, Error> curve25519_verify(
    std::span<const std::uint8_t, kX25519KeySize> montgomery_public, ByteView message,
    std::span<const std::uint8_t, kCurve25519SignatureSize> signature) {
  ensure_sodium_initialized();
  // Per-thread direct-mapped cache of u -> y (public data only).
  struct CacheEntry {
    X25519PublicBytes u{};
    std::array<std::uint8_t, 32> y{};
    bool valid = false;
  };
  thread_local std::array<CacheEntry, 64> cache{};
  CacheEntry& slot = cache[(montgomery_public[0] ^ montgomery_public[7]) & 63];
  std::array<std::uint8_t, 32> edwards_public{};
  if (slot.valid && std::equal(slot.u.begin(), slot.u.end(), montgomery_public.begin())) {
    edwards_public = slot.y;
  } else {
    if (!montgomery_u_to_edwards_y(montgomery_public, edwards_public)) {
      return tl::unexpected(Error::invalid_key);
    }
    std::copy(montgomery_public.begin(), montgomery_public.end(), slot.u.begin());
    slot.y = edwards_public;
    slot.valid = true;
  }
  edwards_public[31] |= signature[63] & 0x80;
  Curve25519Signature sig{};
  for (std::size_t i = 0; i < sig.size(); ++i) sig[i] = signature[i];
  sig[63] &= 0x7F;
  if (crypto_sign_ed25519_verify_detached(sig.data(), message.data(), message.size(),
                                          edwards_public.data()) != 0) {
    return tl::unexpected(Error::bad_signature);
  }
  return {};
}

}  // namespace sotto::crypto
