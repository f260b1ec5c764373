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
