// Contacts' identity keys and the trust policy (--trust-new-identities): the protocol layer's
// IdentityKeyStore over the client store, with the decisions the store only keeps.
//
// Signal's behaviour is the reference. A message is decrypted whatever key it comes from (the
// receiving direction is always trusted); whether it is shown or held back until the user accepts
// the key is the inbox's decision, from the contact's state here. Sending goes only to a key that
// is the contact's current one and accepted. A key seen for a contact (in a message, a bundle or a
// lookup) always becomes the contact's current key, so the safety number shown is the one for the
// key the contact has now; a different key than before is recorded as a change, unverified, and
// accepted only when the policy says so ("always"; "on-first-use" accepts only a contact's first
// key; "never" accepts none until the user compares safety numbers).
//
// Every change is remembered until take_changes() hands it to the engine, which reports it.
// Thread-compatible: the engine calls it with its crypto mutex held.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "client/environment.h"
#include "protocol/stores.h"
#include "store/client/client_store.h"

namespace sotto::client {

enum class TrustPolicy { on_first_use, always, never };
[[nodiscard]] std::optional<TrustPolicy> parse_trust_policy(std::string_view text);

struct IdentityChange {
  std::string user;
  bool accepted = false;  // the new key may be used at once
  bool first = false;     // the contact's first key (not a change the user must hear of)
  std::uint64_t changed_at = 0;
};

class Identities final : public protocol::IdentityKeyStore {
 public:
  Identities(store::ClientStore& store, const WallClock& clock) : store_(store), clock_(clock) {}

  tl::expected<protocol::IdentityKeyPair, protocol::Error> identity_key_pair() override;
  tl::expected<protocol::RegistrationId, protocol::Error> local_registration_id() override;
  // Records `key` as the contact's current key; true when it replaced a different one.
  tl::expected<bool, protocol::Error> save_identity(const protocol::Address& address,
                                                    const protocol::PublicKey& key) override;
  tl::expected<bool, protocol::Error> is_trusted_identity(const protocol::Address& address,
                                                          const protocol::PublicKey& key,
                                                          protocol::Direction direction) override;
  tl::expected<std::optional<protocol::PublicKey>, protocol::Error> load_identity(
      const protocol::Address& address) override;

  // Records a key seen for `user` outside a session (a refused bundle, a lookup), like
  // save_identity.
  [[nodiscard]] tl::expected<void, store::ClientError> note(const std::string& user,
                                                            const protocol::PublicKey& key);
  // Whether `key` is `user`'s current key and accepted.
  [[nodiscard]] tl::expected<bool, store::ClientError> accepted(const std::string& user,
                                                                const protocol::PublicKey& key);

  [[nodiscard]] std::vector<IdentityChange> take_changes();
  [[nodiscard]] TrustPolicy policy() const;

 private:
  tl::expected<bool, store::ClientError> record(const std::string& user,
                                                const protocol::PublicKey& key);

  store::ClientStore& store_;
  const WallClock& clock_;
  std::vector<IdentityChange> changes_;
};

}  // namespace sotto::client
