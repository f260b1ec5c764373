#include "protocol/keys.h"

namespace sotto::protocol {

tl::expected<PublicKey, Error> PublicKey::decode(ByteView serialized) {
  if (serialized.size() != kSerializedPublicKeySize || serialized[0] != kDjbKeyType) {
    return tl::unexpected(Error::invalid_key);
  }
  return from_raw(serialized.subspan(1));
}

tl::expected<PublicKey, Error> PublicKey::from_raw(ByteView raw) {
  if (raw.size() != kPublicKeySize) return tl::unexpected(Error::invalid_key);
  crypto::X25519PublicBytes b{};
  std::copy(raw.begin(), raw.end(), b.begin());
  return PublicKey(b);
}

std::array<std::uint8_t, kSerializedPublicKeySize> PublicKey::serialize() const {
  std::array<std::uint8_t, kSerializedPublicKeySize> out{};
  out[0] = kDjbKeyType;
  std::copy(bytes_.begin(), bytes_.end(), out.begin() + 1);
  return out;
}

tl::expected<void, Error> PublicKey::verify(ByteView message, ByteView signature) const {
  if (signature.size() != crypto::kCurve25519SignatureSize) {
    return tl::unexpected(Error::bad_signature);
  }
  auto r = crypto::curve25519_verify(
      bytes_, message, std::span<const std::uint8_t, crypto::kCurve25519SignatureSize>(
                           signature.data(), crypto::kCurve25519SignatureSize));
  if (!r) return tl::unexpected(Error::bad_signature);
  return {};
}

KeyPair KeyPair::generate(crypto::Rng& rng) {
  auto kp = crypto::x25519_generate(rng);
  return {PublicKey(kp.public_key), std::move(kp.private_key)};
}

KeyPair KeyPair::from_private(PrivateKey priv) {
  crypto::x25519_clamp(priv);
  PublicKey pub(crypto::x25519_public_from_private(priv));
  return {pub, std::move(priv)};
}

crypto::Curve25519Signature KeyPair::sign(ByteView message, crypto::Rng& rng) const {
  return crypto::curve25519_sign(private_key, message, rng);
}

tl::expected<crypto::Secret<32>, Error> KeyPair::agree(const PublicKey& theirs) const {
  auto shared = crypto::x25519_agree(private_key, theirs.span());
  if (!shared) return tl::unexpected(Error::invalid_key);
  return std::move(*shared);
}

RegistrationId generate_registration_id(crypto::Rng& rng) {
  return RegistrationId((rng.next_u32() % 16380u) + 1u);
}

std::vector<PreKeyRecord> generate_pre_keys(crypto::Rng& rng, PreKeyId start, std::size_t count) {
  constexpr std::uint32_t kMaxPreKeyId = 0xFFFFFE;
  std::vector<PreKeyRecord> out;
  out.reserve(count);
  std::uint32_t id = start.value == 0 ? 1 : start.value;
  for (std::size_t i = 0; i < count; ++i) {
    if (id > kMaxPreKeyId) id = 1;
    out.push_back({PreKeyId(id), KeyPair::generate(rng)});
    ++id;
  }
  return out;
}

SignedPreKeyRecord generate_signed_pre_key(crypto::Rng& rng, const IdentityKeyPair& identity,
                                           SignedPreKeyId id, std::uint64_t timestamp) {
  KeyPair kp = KeyPair::generate(rng);
  const auto serialized = kp.public_key.serialize();
  auto sig = identity.sign(serialized, rng);
  return {id, std::move(kp), sig, timestamp};
}

}  // namespace sotto::protocol
