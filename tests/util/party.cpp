#include "util/party.h"

namespace sotto::testing {

using namespace sotto::protocol;

Party::Party(std::string n, std::uint32_t d, std::uint64_t seed)
    : name(std::move(n)),
      device(d),
      rng(seed),
      identity(KeyPair::generate(rng)),
      registration_id(generate_registration_id(rng)),
      identities(std::make_unique<InMemoryIdentityKeyStore>(identity.clone(), registration_id)),
      signed_pre_key(generate_signed_pre_key(rng, identity, SignedPreKeyId(1), 0)) {
  for (auto& pk : generate_pre_keys(rng, PreKeyId(1), pre_key_count)) {
    (void)pre_keys.save_pre_key(pk);
  }
  (void)signed_pre_keys.save_signed_pre_key(signed_pre_key);
}

PreKeyBundle Party::bundle(bool with_one_time_pre_key) {
  PreKeyBundle b;
  b.registration_id = registration_id;
  b.device_id = DeviceId(device);
  if (with_one_time_pre_key) {
    auto pk = pre_keys.load_pre_key(PreKeyId(next_pre_key));
    if (pk && pk->has_value()) {
      b.pre_key_id = (*pk)->id;
      b.pre_key = (*pk)->key_pair.public_key;
    }
    ++next_pre_key;
  }
  b.signed_pre_key_id = signed_pre_key.id;
  b.signed_pre_key = signed_pre_key.key_pair.public_key;
  b.signed_pre_key_signature = signed_pre_key.signature;
  b.identity_key = identity.public_key;
  return b;
}

tl::expected<CiphertextMessage, Error> Party::encrypt(const Address& to, std::string_view text) {
  auto s = stores();
  return protocol::encrypt(to, as_bytes(text), s);
}

tl::expected<std::string, Error> Party::decrypt(const Address& from, const CiphertextMessage& m) {
  auto s = stores();
  auto r = m.type == MessageType::pre_key
               ? decrypt_pre_key_message(from, m.serialized, s, rng, clock)
               : decrypt_signal_message(from, m.serialized, s, rng, clock);
  if (!r) return tl::unexpected(r.error());
  return std::string(r->plaintext.view().begin(), r->plaintext.view().end());
}

}  // namespace sotto::testing
