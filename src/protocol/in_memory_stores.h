// In-memory implementations of the protocol store interfaces, for tests, benchmarks and
// ephemeral bots. Records are kept in their encoded storage form, so every load and save runs the
// same codec a persistent client store runs. Not thread-safe.
#pragma once

#include <map>

#include "crypto/secret.h"
#include "protocol/sender_keys.h"
#include "protocol/stores.h"

namespace sotto::protocol {

enum class TrustPolicy {
  on_first_use,  // the first key seen for an account is trusted; a different one is not
  always,        // every key is trusted (a changed key is still recorded and reported)
};

class InMemoryIdentityKeyStore final : public IdentityKeyStore {
 public:
  InMemoryIdentityKeyStore(IdentityKeyPair identity, RegistrationId registration_id,
                           TrustPolicy policy = TrustPolicy::on_first_use);

  tl::expected<IdentityKeyPair, Error> identity_key_pair() override;
  tl::expected<RegistrationId, Error> local_registration_id() override;
  tl::expected<bool, Error> save_identity(const Address& address, const PublicKey& key) override;
  tl::expected<bool, Error> is_trusted_identity(const Address& address, const PublicKey& key,
                                                Direction direction) override;
  tl::expected<std::optional<PublicKey>, Error> load_identity(const Address& address) override;

  void set_policy(TrustPolicy policy) { policy_ = policy; }

 private:
  IdentityKeyPair identity_;
  RegistrationId registration_id_;
  TrustPolicy policy_;
  std::map<std::string, PublicKey> known_;  // identities are per account, not per device
};

class InMemorySessionStore final : public SessionStore {
 public:
  tl::expected<std::optional<SessionRecord>, Error> load_session(const Address& address) override;
  tl::expected<void, Error> save_session(const Address& address, const SessionRecord& record) override;
  // The stored bytes, for tests that check a failed operation changed nothing.
  [[nodiscard]] std::optional<Bytes> raw(const Address& address) const;

 private:
  std::map<Address, crypto::SecretBuffer> records_;
};

class InMemoryPreKeyStore final : public PreKeyStore {
 public:
  tl::expected<std::optional<PreKeyRecord>, Error> load_pre_key(PreKeyId id) override;
  tl::expected<void, Error> save_pre_key(const PreKeyRecord& record) override;
  tl::expected<void, Error> remove_pre_key(PreKeyId id) override;
  [[nodiscard]] std::size_t size() const { return keys_.size(); }

 private:
  std::map<PreKeyId, PreKeyRecord> keys_;
};

class InMemorySignedPreKeyStore final : public SignedPreKeyStore {
 public:
  tl::expected<std::optional<SignedPreKeyRecord>, Error> load_signed_pre_key(
      SignedPreKeyId id) override;
  tl::expected<void, Error> save_signed_pre_key(const SignedPreKeyRecord& record) override;

 private:
  std::map<SignedPreKeyId, SignedPreKeyRecord> keys_;
};

class InMemorySenderKeyStore final : public SenderKeyStore {
 public:
  tl::expected<std::optional<SenderKeyRecord>, Error> load_sender_key(
      const SenderKeyName& name) override;
  tl::expected<void, Error> save_sender_key(const SenderKeyName& name,
                                            const SenderKeyRecord& record) override;

 private:
  std::map<SenderKeyName, crypto::SecretBuffer> records_;
};

}  // namespace sotto::protocol
