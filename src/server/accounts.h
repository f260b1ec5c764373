// The accounts service (docs/architecture.md section 4): registration (with invite codes),
// login (a challenge and an AuthenticateRequest, or the proof in the upgrade request), recovery,
// the device list and its changes, link tokens and linking a device, and the announcement of the
// server's next TLS key after each login. Thread-safe; owned by the Server.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/context.h"
#include "server/next_key.h"
#include "server/service.h"

namespace sotto::server {

class AccountsService final : public Service {
 public:
  explicit AccountsService(Context& ctx);
  void add_routes(Router& router) override;
  // Pushes the next key's announcement while there is one.
  void after_login(const SessionPtr& s) override;

  // Server::create_invites and Server::announce_next_key.
  std::vector<std::string> create_invites(std::size_t count, std::uint64_t days);
  void announce_next_key(std::optional<NextServerKey> next);

 private:
  // The login proof in the upgrade request: answered with a LoginResult push. True when the
  // session logged in.
  bool login_in_upgrade(const SessionPtr& s, std::string_view authorization);
  void on_register(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_challenge(const SessionPtr& s, wire::service::Response& out);
  void on_authenticate(const SessionPtr& s, wire::service::Request& r,
                       wire::service::Response& out);
  void on_list_devices(const SessionPtr& s, wire::service::Request& r,
                       wire::service::Response& out);
  void on_remove_device(const SessionPtr& s, wire::service::Request& r,
                        wire::service::Response& out);
  void on_link_token(const SessionPtr& s, wire::service::Response& out);
  void on_link_device(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_recover(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  // Pushes DevicesChanged to every online device of the account except `changed` (the device
  // added or removed).
  void notify_devices_changed(store::AccountId account, store::DeviceId changed);

  Context& ctx_;
  Router* router_ = nullptr;  // set by add_routes; the upgrade login runs the login's filters

  std::mutex next_key_mutex_;                            // guards the two below
  std::shared_ptr<const wire::service::Push> next_key_;  // the announcement; null: none
  // The devices next_key_ was pushed to (memory only, never logged): the operator sees how many
  // on /metrics before `key activate` (devices that were never told must re-pin by hand).
  std::set<std::pair<store::AccountId, store::DeviceId>> told_next_key_;
};

}  // namespace sotto::server
