#include "crypto/ed25519.h"

#include <sodium.h>

namespace sotto::crypto {

Ed25519KeyPair Ed25519KeyPair::generate(Rng& rng) {
  return from_seed(rng.secret<kEd25519SeedSize>());
}

Ed25519KeyPair Ed25519KeyPair::from_seed(Secret<kEd25519SeedSize> seed) {
  ensure_sodium_initialized();
  Ed25519KeyPair kp;
  Secret<crypto_sign_SECRETKEYBYTES> expanded;
  crypto_sign_seed_keypair(kp.public_key.data(), expanded.data(), seed.data());
  kp.seed = std::move(seed);
  return kp;
}

Ed25519Signature Ed25519KeyPair::sign(ByteView message) const {
  ensure_sodium_initialized();
  Secret<crypto_sign_SECRETKEYBYTES> expanded;
  Ed25519PublicKey pub{};
  crypto_sign_seed_keypair(pub.data(), expanded.data(), seed.data());
  Ed25519Signature sig{};
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), expanded.data());
  return sig;
}

tl::expected<void, Error> ed25519_verify(ByteView public_key, ByteView message,
                                         ByteView signature) {
  ensure_sodium_initialized();
  if (public_key.size() != kEd25519PublicKeySize || signature.size() != kEd25519SignatureSize) {
    return tl::unexpected(Error::invalid_length);
  }
  if (crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                  public_key.data()) != 0) {
    return tl::unexpected(Error::bad_signature);
  }
  return {};
}

}  // namespace sotto::crypto
