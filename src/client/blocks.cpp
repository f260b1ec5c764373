#include "client/blocks.h"

#include <algorithm>

#include "client/errors.h"
#include "client/stored_values.h"

namespace sotto::client {

namespace {

using SteadyClock = std::chrono::steady_clock;

}  // namespace

Result<void> Blocks::block(const std::string& user) {
  return change(user, true);
}

Result<void> Blocks::unblock(const std::string& user) {
  return change(user, false);
}

Result<void> Blocks::change(const std::string& user, bool block) {
  const auto name = normalize_username(user);
  if (!name) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  if (*name == account_.username) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument,
                   block ? "you cannot block yourself" : "you cannot unblock yourself"));
  }
  auto connected = link_.ensure_connected(SteadyClock::now() + account_.options.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  svc::Request request;
  if (block) {
    request.mutable_block()->set_username(*name);
  } else {
    request.mutable_unblock()->set_username(*name);
  }
  auto r = link_.call_ok(connected->connection, std::move(request));
  if (!r) {
    if (r.error().code == ErrorCode::not_found) {
      return tl::unexpected(make_error(ErrorCode::not_found, "no user named " + *name));
    }
    return tl::unexpected(r.error());
  }
  std::lock_guard lock(mu_);
  std::set<std::string> names = cached();
  if (block) {
    names.insert(*name);
  } else {
    names.erase(*name);
  }
  return save(names);
}

Result<std::vector<std::string>> Blocks::list() {
  auto connected = link_.ensure_connected(SteadyClock::now() + account_.options.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  return refresh(connected->connection);
}

Result<std::vector<std::string>> Blocks::refresh(const ConnectionPtr& c) {
  svc::Request request;
  request.mutable_list_blocks();
  auto r = link_.call_ok(c, std::move(request));
  if (!r) return tl::unexpected(r.error());
  std::set<std::string> names;
  for (const auto& n : r->list_blocks().usernames()) {
    if (auto name = normalize_username(n)) names.insert(*name);
  }
  std::lock_guard lock(mu_);
  if (!cache_ || *cache_ != names) {
    if (auto saved = save(names); !saved) return tl::unexpected(saved.error());
  }
  return std::vector<std::string>(names.begin(), names.end());
}

bool Blocks::is_blocked(const std::string& user) {
  const auto name = normalize_username(user);
  if (!name) return false;
  std::lock_guard lock(mu_);
  return cached().contains(*name);
}

Result<bool> Blocks::confirm(const std::string& user) {
  const auto name = normalize_username(user);
  if (!name) return false;
  const ConnectionPtr c = link_.current();
  if (!c) return tl::unexpected(make_error(ErrorCode::network, "not connected"));
  auto names = refresh(c);
  if (!names) return tl::unexpected(names.error());
  return std::find(names->begin(), names->end(), *name) != names->end();
}

const std::set<std::string>& Blocks::cached() {
  if (!cache_) {
    auto stored = account_.store->load_value(kBlockedValue);
    cache_.emplace();
    if (stored && stored->has_value()) *cache_ = decode_names((*stored)->view());
  }
  return *cache_;
}

Result<void> Blocks::save(const std::set<std::string>& names) {
  if (auto saved = account_.store->save_value(kBlockedValue, encode_names(names)); !saved) {
    cache_.reset();  // read again from the store next time
    return tl::unexpected(from_store(saved.error()));
  }
  cache_ = names;
  return {};
}

}  // namespace sotto::client
