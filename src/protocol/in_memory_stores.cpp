#include "protocol/in_memory_stores.h"

namespace sotto::protocol {

InMemoryIdentityKeyStore::InMemoryIdentityKeyStore(IdentityKeyPair identity,
                                                   RegistrationId registration_id,
                                                   TrustPolicy policy)
    : identity_(std::move(identity)), registration_id_(registration_id), policy_(policy) {}

tl::expected<IdentityKeyPair, Error> InMemoryIdentityKeyStore::identity_key_pair() {
  return identity_.clone();
}

tl::expected<RegistrationId, Error> InMemoryIdentityKeyStore::local_registration_id() {
  return registration_id_;
}

tl::expected<bool, Error> InMemoryIdentityKeyStore::save_identity(const Address& address,
                                                                  const PublicKey& key) {
  auto [it, inserted] = known_.try_emplace(address.name, key);
  if (inserted) return false;
  const bool changed = it->second != key;
  it->second = key;
  return changed;
}

tl::expected<bool, Error> InMemoryIdentityKeyStore::is_trusted_identity(const Address& address,
                                                                        const PublicKey& key,
                                                                        Direction) {
  if (policy_ == TrustPolicy::always) return true;
  auto it = known_.find(address.name);
  return it == known_.end() || it->second == key;
}

tl::expected<std::optional<PublicKey>, Error> InMemoryIdentityKeyStore::load_identity(
    const Address& address) {
  auto it = known_.find(address.name);
  if (it == known_.end()) return std::optional<PublicKey>{};
  return std::optional<PublicKey>{it->second};
}

tl::expected<std::optional<SessionRecord>, Error> InMemorySessionStore::load_session(
    const Address& address) {
  auto it = records_.find(address);
  if (it == records_.end()) return std::optional<SessionRecord>{};
  // Decoded where the caller receives it: a record holds secrets, and every move of one
  // copies and wipes them.
  tl::expected<std::optional<SessionRecord>, Error> out(tl::in_place, std::in_place);
  if (!SessionRecord::decode(it->second.view(), **out)) return tl::unexpected(Error::store_failure);
  return out;
}

tl::expected<void, Error> InMemorySessionStore::save_session(const Address& address,
                                                             const SessionRecord& record) {
  records_.insert_or_assign(address, record.encode());
  return {};
}

std::optional<Bytes> InMemorySessionStore::raw(const Address& address) const {
  auto it = records_.find(address);
  if (it == records_.end()) return std::nullopt;
  return Bytes(it->second.view().begin(), it->second.view().end());
}

tl::expected<std::optional<PreKeyRecord>, Error> InMemoryPreKeyStore::load_pre_key(PreKeyId id) {
  auto it = keys_.find(id);
  if (it == keys_.end()) return std::optional<PreKeyRecord>{};
  return std::optional<PreKeyRecord>{it->second.clone()};
}

tl::expected<void, Error> InMemoryPreKeyStore::save_pre_key(const PreKeyRecord& record) {
  keys_.insert_or_assign(record.id, record.clone());
  return {};
}

tl::expected<void, Error> InMemoryPreKeyStore::remove_pre_key(PreKeyId id) {
  keys_.erase(id);
  return {};
}

tl::expected<std::optional<SignedPreKeyRecord>, Error>
InMemorySignedPreKeyStore::load_signed_pre_key(SignedPreKeyId id) {
  auto it = keys_.find(id);
  if (it == keys_.end()) return std::optional<SignedPreKeyRecord>{};
  return std::optional<SignedPreKeyRecord>{it->second.clone()};
}

tl::expected<void, Error> InMemorySignedPreKeyStore::save_signed_pre_key(
    const SignedPreKeyRecord& record) {
  keys_.insert_or_assign(record.id, record.clone());
  return {};
}

tl::expected<std::optional<SenderKeyRecord>, Error> InMemorySenderKeyStore::load_sender_key(
    const SenderKeyName& name) {
  auto it = records_.find(name);
  if (it == records_.end()) return std::optional<SenderKeyRecord>{};
  auto record = SenderKeyRecord::decode(it->second.view());
  if (!record) return tl::unexpected(Error::store_failure);
  return std::optional<SenderKeyRecord>{std::move(*record)};
}

tl::expected<void, Error> InMemorySenderKeyStore::save_sender_key(const SenderKeyName& name,
                                                                  const SenderKeyRecord& record) {
  records_.insert_or_assign(name, record.encode());
  return {};
}

}  // namespace sotto::protocol
