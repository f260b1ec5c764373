#include "crypto/x25519.h"

#include <sodium.h>

namespace sotto::crypto {

void x25519_clamp(Secret<kX25519KeySize>& scalar) noexcept {
  scalar.data()[0] &= 248;
  scalar.data()[31] &= 127;
  scalar.data()[31] |= 64;
}

X25519KeyPair x25519_generate(Rng& rng) {
  ensure_sodium_initialized();
  X25519KeyPair kp;
  rng.fill(kp.private_key.span());
  x25519_clamp(kp.private_key);
  kp.public_key = x25519_public_from_private(kp.private_key);
  return kp;
}

X25519PublicBytes x25519_public_from_private(const Secret<kX25519KeySize>& priv) {
  ensure_sodium_initialized();
  X25519PublicBytes pub{};
  crypto_scalarmult_curve25519_base(pub.data(), priv.data());
  return pub;
}

tl::expected<Secret<32>, Error> x25519_agree(
    const Secret<kX25519KeySize>& priv, std::span<const std::uint8_t, kX25519KeySize> their_public) {
  ensure_sodium_initialized();
  Secret<32> shared;
  if (crypto_scalarmult_curve25519(shared.data(), priv.data(), their_public.data()) != 0) {
    return tl::unexpected(Error::invalid_key);
  }
  return shared;
}

}  // namespace sotto::crypto
