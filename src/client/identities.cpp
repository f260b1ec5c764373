#include "client/identities.h"

namespace sotto::client {

std::optional<TrustPolicy> parse_trust_policy(std::string_view text) {
  if (text == kTrustOnFirstUse) return TrustPolicy::on_first_use;
  if (text == kTrustAlways) return TrustPolicy::always;
  if (text == kTrustNever) return TrustPolicy::never;
  return std::nullopt;
}

TrustPolicy Identities::policy() const {
  // Validated by the store when the settings are saved and loaded.
  return parse_trust_policy(store_.settings().trust_policy).value_or(TrustPolicy::on_first_use);
}

tl::expected<protocol::IdentityKeyPair, protocol::Error> Identities::identity_key_pair() {
  return store_.identity_key_pair();
}

tl::expected<protocol::RegistrationId, protocol::Error> Identities::local_registration_id() {
  return store_.local_registration_id();
}

tl::expected<bool, store::ClientError> Identities::record(const std::string& user,
                                                          const protocol::PublicKey& key) {
  auto loaded = store_.load_contact(user);
  if (!loaded) return tl::unexpected(loaded.error());
  store::Contact c = loaded->value_or(store::Contact{user, std::nullopt, false, false, 0});
  if (c.identity_key && *c.identity_key == key) return false;
  const bool first = !c.identity_key.has_value();
  const TrustPolicy p = policy();
  c.identity_key = key;
  c.verified = false;
  c.accepted = p == TrustPolicy::always || (first && p == TrustPolicy::on_first_use);
  if (!first) c.identity_changed_at = clock_.now_ms();
  if (auto saved = store_.save_contact(c); !saved) return tl::unexpected(saved.error());
  changes_.push_back(IdentityChange{user, c.accepted, first, c.identity_changed_at});
  return !first;
}

tl::expected<bool, protocol::Error> Identities::save_identity(const protocol::Address& address,
                                                              const protocol::PublicKey& key) {
  auto r = record(address.name, key);
  if (!r) return tl::unexpected(protocol::Error::store_failure);
  return *r;
}

tl::expected<void, store::ClientError> Identities::note(const std::string& user,
                                                        const protocol::PublicKey& key) {
  auto r = record(user, key);
  if (!r) return tl::unexpected(r.error());
  return {};
}

tl::expected<bool, protocol::Error> Identities::is_trusted_identity(
    const protocol::Address& address, const protocol::PublicKey& key,
    protocol::Direction direction) {
  // A message is decrypted whatever its key; the inbox holds it back when the key is not
  // accepted.
  if (direction == protocol::Direction::receiving) return true;
  auto c = store_.load_contact(address.name);
  if (!c) return tl::unexpected(protocol::Error::store_failure);
  const TrustPolicy p = policy();
  if (!c->has_value() || !(*c)->identity_key) return p != TrustPolicy::never;
  if (*(*c)->identity_key != key) return p == TrustPolicy::always;
  return (*c)->accepted;
}

tl::expected<std::optional<protocol::PublicKey>, protocol::Error> Identities::load_identity(
    const protocol::Address& address) {
  auto c = store_.load_contact(address.name);
  if (!c) return tl::unexpected(protocol::Error::store_failure);
  if (!c->has_value()) return std::optional<protocol::PublicKey>{};
  return (*c)->identity_key;
}

tl::expected<bool, store::ClientError> Identities::accepted(const std::string& user,
                                                            const protocol::PublicKey& key) {
  auto c = store_.load_contact(user);
  if (!c) return tl::unexpected(c.error());
  return c->has_value() && (*c)->identity_key == key && (*c)->accepted;
}

std::vector<IdentityChange> Identities::take_changes() {
  return std::exchange(changes_, {});
}

}  // namespace sotto::client
