// Sessions with other devices: fetching prekey bundles, building sessions from them, looking up
// a user's identity key, and reporting identity changes to the journal. Used by the outbox (send
// and resend), the contacts flow (safety numbers, trust) and the inbox.
//
// A session is never deleted while its peer may still send with it: a device that is gone, or
// whose session broke, has its current state archived (messages it sent before still decrypt
// with the archived state), and a new session from a fresh bundle archives the one it replaces.
#pragma once

#include <string>
#include <vector>

#include "client/account.h"
#include "client/journal.h"
#include "client/server_link.h"
#include "protocol/bundle.h"

namespace sotto::client {

class Sessions {
 public:
  Sessions(Account& account, ServerLink& link, Journal& journal)
      : account_(account), link_(link), journal_(journal) {}

  // Bundles of `user`'s devices (every device when `devices` is empty); not_found for a user
  // the server does not know. Each takes one of the device's one-time prekeys.
  [[nodiscard]] Result<std::vector<protocol::PreKeyBundle>> fetch_bundles(
      const ConnectionPtr& c, const std::string& user, const std::vector<std::uint32_t>& devices);
  // Builds a session from each bundle (our own device's skipped). A bundle whose identity key is
  // not accepted makes that key the contact's current one (so the safety number shown is the
  // one with the key the contact has now) and fails with untrusted_identity, changing no session.
  // REQUIRES: crypto_mu held.
  [[nodiscard]] Result<void> process_bundles(const std::string& user,
                                             const std::vector<protocol::PreKeyBundle>& bundles);
  // The identity key the server holds for `user` (takes no prekey); when the server keeps a key
  // transparency log, the one the log proves (a security_alert error otherwise).
  [[nodiscard]] Result<protocol::PublicKey> lookup_identity(const ConnectionPtr& c,
                                                            const std::string& user);
  // Key transparency for a message that starts a session: `user`'s device must be in the log
  // with this registration id and identity key (a lookup, once per device and process), or the
  // error is a security_alert (unlogged_key) and nothing may be read from or encrypted to it.
  // Nothing to check when the server keeps no log.
  [[nodiscard]] Result<void> check_logged_sender(const ConnectionPtr& c, const std::string& user,
                                                 std::uint32_t device,
                                                 std::uint32_t registration_id,
                                                 const protocol::PublicKey& identity);
  // Archives the current state of the session with `address` (see above). REQUIRES: crypto_mu.
  [[nodiscard]] Result<void> archive(const protocol::Address& address);
  // Journals the identity changes the last operations made (not a contact's first key), with
  // the number of messages held for each. REQUIRES: crypto_mu held, inside the store
  // transaction of the change when there is one.
  [[nodiscard]] Result<void> record_identity_changes();

 private:
  Account& account_;
  ServerLink& link_;
  Journal& journal_;
};

}  // namespace sotto::client
