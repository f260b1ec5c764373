#include "server/registry.h"

#include "server/service.h"
#include "service.pb.h"

namespace sotto::server {

SessionRegistry::SessionRegistry(Metrics& metrics) : metrics_(metrics) {}

SessionPtr SessionRegistry::open(const net::ConnectionPtr& c) {
  auto s = std::make_shared<Session>();
  s->connection = c;
  std::lock_guard lock(mutex_);
  sessions_[c->id()] = s;
  return s;
}

SessionPtr SessionRegistry::find(const net::ConnectionPtr& c) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(c->id());
  return it == sessions_.end() ? nullptr : it->second;
}

bool SessionRegistry::close(const net::ConnectionPtr& c) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(c->id());
  if (it == sessions_.end()) return false;
  SessionPtr s = it->second;
  sessions_.erase(it);
  std::lock_guard slock(s->mutex);
  if (s->authenticated) {
    auto on = online_.find(key_of(s->account, s->device));
    if (on != online_.end() && on->second.lock() == s) online_.erase(on);
    metrics_.authenticated_connections.fetch_sub(1, std::memory_order_relaxed);
  }
  if (!s->provisioning_address.empty()) provisioning_.erase(s->provisioning_address);
  return true;
}

SessionPtr SessionRegistry::online(store::AccountId account, store::DeviceId device) {
  std::lock_guard lock(mutex_);
  auto it = online_.find(key_of(account, device));
  return it == online_.end() ? nullptr : it->second.lock();
}

SessionRegistry::SignIn SessionRegistry::sign_in(const SessionPtr& s, store::AccountId account,
                                                 store::DeviceId device,
                                                 const std::string& username,
                                                 const std::string& instance) {
  SignIn result;
  std::lock_guard lock(mutex_);
  auto& slot = online_[key_of(account, device)];
  result.replaced = slot.lock();
  // Two copies of one device's data would fork its ratchets: while one copy is online, another
  // is refused. (The same copy reconnecting replaces its older connection, as does a device
  // that does not say which copy it is.)
  result.in_use = result.replaced && !result.replaced->instance.empty() && !instance.empty() &&
                  result.replaced->instance != instance;
  if (!result.in_use) {
    std::lock_guard slock(s->mutex);
    s->authenticated = true;
    s->account = account;
    s->device = device;
    s->username = username;
    s->instance = instance;
    slot = s;
  }
  return result;
}

void SessionRegistry::sign_out(const SessionPtr& target, const std::string& reason, bool close) {
  {
    std::lock_guard lock(mutex_);
    std::lock_guard slock(target->mutex);
    if (target->authenticated) {
      target->authenticated = false;
      auto on = online_.find(key_of(target->account, target->device));
      if (on != online_.end() && on->second.lock() == target) online_.erase(on);
      metrics_.authenticated_connections.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  if (close) target->connection->close(reason);
}

void SessionRegistry::broadcast(store::AccountId account,
                                const std::vector<store::DeviceId>& devices,
                                const wire::service::Push& push) {
  for (const store::DeviceId d : devices) {
    if (SessionPtr target = online(account, d)) send_push(*target, wire::service::Push(push));
  }
}

void SessionRegistry::set_provisioning(const SessionPtr& s, const std::string& address) {
  std::lock_guard lock(mutex_);
  std::lock_guard slock(s->mutex);
  if (!s->provisioning_address.empty()) provisioning_.erase(s->provisioning_address);
  s->provisioning_address = address;
  provisioning_[address] = s;
}

SessionPtr SessionRegistry::provisioning(const std::string& address) {
  std::lock_guard lock(mutex_);
  auto it = provisioning_.find(address);
  return it == provisioning_.end() ? nullptr : it->second.lock();
}

void SessionRegistry::release_waiting(store::AccountId account, store::DeviceId device) {
  std::lock_guard lock(mutex_);
  auto it = awaiting_commit_.find(key_of(account, device));
  if (it != awaiting_commit_.end() && --it->second == 0) awaiting_commit_.erase(it);
}

std::vector<SessionPtr> SessionRegistry::online(
    const std::vector<std::pair<store::AccountId, store::DeviceId>>& devices) {
  std::vector<SessionPtr> out(devices.size());
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < devices.size(); ++i) {
    auto it = online_.find(key_of(devices[i].first, devices[i].second));
    if (it != online_.end()) out[i] = it->second.lock();
  }
  return out;
}

void SessionRegistry::release_waiting(
    const std::vector<std::pair<store::AccountId, store::DeviceId>>& devices) {
  if (devices.empty()) return;
  std::lock_guard lock(mutex_);
  for (const auto& [account, device] : devices) {
    auto it = awaiting_commit_.find(key_of(account, device));
    if (it != awaiting_commit_.end() && --it->second == 0) awaiting_commit_.erase(it);
  }
}

}  // namespace sotto::server
