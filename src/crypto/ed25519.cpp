#include "crypto/ed25519.h"

#include <sodium.h>

#include <utility>

namespace sotto::crypto {

static_assert(crypto_sign_SECRETKEYBYTES == 64 &&
              crypto_sign_PUBLICKEYBYTES == kEd25519PublicKeySize &&
              crypto_sign_SEEDBYTES == kEd25519SeedSize &&
              crypto_sign_BYTES == kEd25519SignatureSize);

Ed25519KeyPair::Ed25519KeyPair(Ed25519KeyPair&& other) noexcept
    : public_key_(other.public_key_), secret_(std::move(other.secret_)), has_key_(other.has_key_) {
  other.public_key_.fill(0);
  other.has_key_ = false;
}

Ed25519KeyPair& Ed25519KeyPair::operator=(Ed25519KeyPair&& other) noexcept {
  if (this != &other) {
    public_key_ = other.public_key_;
    secret_ = std::move(other.secret_);
    has_key_ = other.has_key_;
    other.public_key_.fill(0);
    other.has_key_ = false;
  }
  return *this;
}

Ed25519KeyPair Ed25519KeyPair::generate(Rng& rng) {
  return from_seed(rng.secret<kEd25519SeedSize>());
}

Ed25519KeyPair Ed25519KeyPair::from_seed(const Secret<kEd25519SeedSize>& seed) {
  ensure_sodium_initialized();
  Ed25519KeyPair kp;
  crypto_sign_seed_keypair(kp.public_key_.data(), kp.secret_.data(), seed.data());
  kp.has_key_ = true;
  return kp;
}

Ed25519KeyPair Ed25519KeyPair::clone() const {
  Ed25519KeyPair kp;
  kp.public_key_ = public_key_;
  kp.secret_ = secret_.clone();
  kp.has_key_ = has_key_;
  return kp;
}

Ed25519Signature Ed25519KeyPair::sign(ByteView message) const {
  ensure_sodium_initialized();
  Ed25519Signature sig{};
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret_.data());
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
