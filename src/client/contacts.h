// Contacts, safety numbers and trust (identities.h has the rules). The safety number shown is
// always the one with the key the contact has now (asked of the server when it is reachable);
// trust() accepts exactly that key, the one the user was shown, and with digits marks it
// verified only when they match. Accepting a key releases the messages held back until then.
//
// Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "client/account.h"
#include "client/journal.h"
#include "client/server_link.h"
#include "client/sessions.h"

namespace sotto::client {

[[nodiscard]] Message to_message(const store::StoredMessage& m);

// The user accepted `key` (and, with `verified`, verified it) for `user`: recorded when it is the
// contact's current key (or the contact has none yet), and the messages held until then are
// released as message events. Returns how many; 0, with nothing changed, when the contact has
// another key by now. REQUIRES: crypto_mu held; joins the caller's store transaction.
[[nodiscard]] Result<std::size_t> accept_key(Account& account, Journal& journal,
                                             const std::string& user,
                                             const protocol::PublicKey& key, bool verified);
// A contact learned elsewhere (a backup, another device of the account): a contact this device
// knows with another key keeps it (what it learned is newer); with the same key, what the user
// decided is kept from either.
[[nodiscard]] Result<void> merge_contact(store::ClientStore& store, const store::Contact& incoming);

class Contacts {
 public:
  Contacts(Account& account, ServerLink& link, Sessions& sessions, Journal& journal)
      : account_(account), link_(link), sessions_(sessions), journal_(journal) {}

  [[nodiscard]] Result<std::vector<Contact>> list();
  [[nodiscard]] Result<SafetyNumber> safety_number(const std::string& user);
  // Returns the safety number, and whether held messages were released.
  [[nodiscard]] Result<SafetyNumber> trust(const std::string& user,
                                           const std::optional<std::string>& digits,
                                           bool& released);
  [[nodiscard]] Result<std::vector<Message>> history(const std::string& user, std::size_t limit);

 private:
  // The contact's key: asks the server (recording a change) when it is reachable soon, else
  // the one stored. not_found when neither knows one.
  [[nodiscard]] Result<store::Contact> current(const std::string& user, bool ask_server);
  [[nodiscard]] Result<SafetyNumber> number(const store::Contact& contact);

  Account& account_;
  ServerLink& link_;
  Sessions& sessions_;
  Journal& journal_;
};

}  // namespace sotto::client
