// The account's devices: listing them (with the names only the account's devices can read),
// removing one, and telling the app when the list changed (a device added or removed, seen on
// every device of the account: the server pushes DevicesChanged to those online, and every
// device compares the list with the one it saw last when it connects).
//
// Thread-safe.
#pragma once

#include <vector>

#include "client/account.h"
#include "client/journal.h"
#include "client/server_link.h"
#include "client/sessions.h"

namespace sotto::client {

inline constexpr std::string_view kKnownDevicesValue = "devices.known";

class Devices {
 public:
  Devices(Account& account, ServerLink& link, Sessions& sessions, Journal& journal)
      : account_(account), link_(link), sessions_(sessions), journal_(journal) {}

  [[nodiscard]] Result<std::vector<Device>> list();
  [[nodiscard]] Result<std::vector<Device>> list(const ConnectionPtr& c);
  [[nodiscard]] Result<void> remove(std::uint32_t id);
  // Journals a devices_changed event when the list differs from the one seen last (the first
  // time, only remembers it).
  [[nodiscard]] Result<void> refresh(const ConnectionPtr& c);
  // Key transparency: checks our own account's versions in the log (KtClient::monitor_own) and
  // journals each security alert it raises.
  [[nodiscard]] Result<void> monitor(const ConnectionPtr& c);

 private:
  Account& account_;
  ServerLink& link_;
  Sessions& sessions_;
  Journal& journal_;
};

}  // namespace sotto::client
