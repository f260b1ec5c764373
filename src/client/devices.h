// The account's devices: listing them (with the names only the account's devices can read),
// removing one, and telling the app when the list changed (a device added or removed, seen on
// every device of the account: the server pushes DevicesChanged to those online, and every
// device compares the list with the one it saw last when it connects).
//
// Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <optional>
#include <vector>

#include "client/account.h"
#include "client/journal.h"
#include "client/outbox.h"
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
  // journals each security alert it raises. With `hold`, a version with a device this device
  // would report is left for recheck(), which the listener runs once it has handled what the
  // server already sent (another device's word that it linked the device may be among it).
  [[nodiscard]] Result<void> monitor(const ConnectionPtr& c, bool hold = false);
  [[nodiscard]] bool recheck_pending() const { return recheck_.load(); }
  [[nodiscard]] Result<void> recheck(const ConnectionPtr& c);
  // Tells the account's other devices of a change this device made to its devices (a link
  // started, a device linked or removed: content.proto OwnDeviceChange), best effort.
  void tell_own_devices(const OwnDeviceChange& change, Outbox& outbox);
  // The auth key the log holds for our device `id`, as this device accepted it (none before
  // its monitoring saw it, or without a log).
  [[nodiscard]] std::optional<std::array<std::uint8_t, 32>> accepted_auth_key(std::uint32_t id);

 private:
  Account& account_;
  ServerLink& link_;
  Sessions& sessions_;
  Journal& journal_;
  std::atomic<bool> recheck_{false};
};

}  // namespace sotto::client
