// The session registry: every open connection's session, the logged-in devices by
// (account, device), the devices waiting at a provisioning address, and, per device, how many
// accepted envelopes still wait for their commit before anything newer may be pushed to it
// (docs/delivery.md, no overtaking). It is the state all services share about who is online; it
// sends nothing by itself except broadcast().
// Thread-safe. Its one lock is the first in the server's lock order: it is taken before a
// session's mutex and before a delivery's, and never while either is held (docs/delivery.md).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/ws_server.h"
#include "server/metrics.h"
#include "server/session.h"
#include "store/server/store.h"

namespace sotto::server {

class SessionRegistry {
 public:
  explicit SessionRegistry(Metrics& metrics);

  // A new connection's session, not logged in.
  SessionPtr open(const net::ConnectionPtr& c);
  // The connection's session; null once closed (or never opened).
  SessionPtr find(const net::ConnectionPtr& c);
  // Forgets the connection's session: its device is offline, its provisioning address gone.
  // False when it was not open.
  bool close(const net::ConnectionPtr& c);

  // The session the device is logged in on; null when offline.
  SessionPtr online(store::AccountId account, store::DeviceId device);

  struct SignIn {
    SessionPtr replaced;  // the device's previous session (to be closed by the caller)
    bool in_use = false;  // refused: another copy of the device's data is online
  };
  // Logs `s` in as the device, unless another copy of the device's data (another non-empty
  // `instance`) is online; the same copy, or one that does not say, replaces the older session.
  SignIn sign_in(const SessionPtr& s, store::AccountId account, store::DeviceId device,
                 const std::string& username, const std::string& instance);
  // Logs the session out at once (its next request is refused) and, when `close`, closes its
  // connection with `reason`.
  void sign_out(const SessionPtr& s, const std::string& reason, bool close);
  // Sends a copy of `push` to each of these devices of the account that is online.
  void broadcast(store::AccountId account, const std::vector<store::DeviceId>& devices,
                 const wire::service::Push& push);

  // The session's provisioning address (replacing an earlier one of the same session).
  void set_provisioning(const SessionPtr& s, const std::string& address);
  // The session waiting at the address; null when none.
  SessionPtr provisioning(const std::string& address);

  // Under the registry's lock: calls `decide(target, waiting)` with the device's online session
  // (null when offline) and whether envelopes accepted earlier for it still wait for their
  // commit. When `decide` returns true, one more envelope waits (release_waiting() when it has
  // gone its way). `decide` may take the target's mutex and a delivery's, in that order.
  template <class Decide>
  void with_device(store::AccountId account, store::DeviceId device, Decide&& decide) {
    const DeviceKey key = key_of(account, device);
    std::lock_guard lock(mutex_);
    decide_locked(key, decide);
  }
  // with_device() for `n` devices under one taking of the lock (a send's envelopes, in order):
  // calls `decide(i, target, waiting)` for i in [0, n), `device_of(i)` giving the i-th (account,
  // device). A group send to 1,000 devices takes the lock once, not 1,000 times.
  template <class DeviceOf, class Decide>
  void with_devices(std::size_t n, DeviceOf&& device_of, Decide&& decide) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < n; ++i) {
      const auto [account, device] = device_of(i);
      decide_locked(key_of(account, device),
                    [&](SessionPtr target, bool waiting) { return decide(i, target, waiting); });
    }
  }
  void release_waiting(store::AccountId account, store::DeviceId device);
  // The online sessions of many devices at once (null where offline), and release_waiting() for
  // many: one taking of the lock each.
  std::vector<SessionPtr> online(
      const std::vector<std::pair<store::AccountId, store::DeviceId>>& devices);
  void release_waiting(const std::vector<std::pair<store::AccountId, store::DeviceId>>& devices);

 private:
  // (account, device) as one integer: account ids are SQLite rowids, far below 2^32 on any real
  // server; a larger one still gets a key of its own (mixed, and the map compares whole keys).
  struct DeviceKey {
    store::AccountId account = 0;
    store::DeviceId device = 0;
    bool operator==(const DeviceKey&) const = default;
  };
  struct DeviceKeyHash {
    std::size_t operator()(const DeviceKey& k) const noexcept {
      return std::hash<std::uint64_t>{}((static_cast<std::uint64_t>(k.account) << 20) ^
                                        (static_cast<std::uint64_t>(k.account) >> 44) ^ k.device);
    }
  };
  static DeviceKey key_of(store::AccountId account, store::DeviceId device) {
    return {account, device};
  }
  template <class Decide>
  void decide_locked(const DeviceKey& key, Decide&& decide) {
    SessionPtr target;
    if (auto it = online_.find(key); it != online_.end()) target = it->second.lock();
    auto waiting = awaiting_commit_.find(key);
    if (decide(std::move(target), waiting != awaiting_commit_.end())) {
      if (waiting != awaiting_commit_.end()) {
        ++waiting->second;
      } else {
        awaiting_commit_.emplace(key, 1);
      }
    }
  }

  Metrics& metrics_;
  std::mutex mutex_;                                        // guards the maps below
  std::unordered_map<std::uint64_t, SessionPtr> sessions_;  // by connection id
  std::unordered_map<DeviceKey, std::weak_ptr<Session>, DeviceKeyHash> online_;
  std::unordered_map<std::string, std::weak_ptr<Session>> provisioning_;  // by address bytes
  // Per device: envelopes accepted but not pushed before their commit. While any is waiting,
  // newer envelopes for that device are not pushed ahead of it.
  std::unordered_map<DeviceKey, std::size_t, DeviceKeyHash> awaiting_commit_;
};

}  // namespace sotto::server
