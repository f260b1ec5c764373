// Blocking senders at the server (service.proto BlockRequest): the list is the account's, kept by
// the server and shared by all its devices; the server stores nothing a blocked account sends to
// us. Each device keeps a copy (ClientStore value kBlockedValue), refreshed at every connection,
// so that it also drops what was queued for it before the block (it is acknowledged, never
// decrypted or shown). Before dropping, the device asks the server again (the copy may be stale
// if another device unblocked meanwhile); such envelopes are few, as the server stores nothing
// new from a blocked account.
//
// Thread-safe.
#pragma once

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/account.h"
#include "client/server_link.h"

namespace sotto::client {

inline constexpr std::string_view kBlockedValue = "blocks.list";

class Blocks {
 public:
  Blocks(Account& account, ServerLink& link) : account_(account), link_(link) {}

  // Blocks or unblocks `user` (any case); invalid_argument for a malformed name or our own
  // account, not_found for no such user. Doing it twice is not an error.
  [[nodiscard]] Result<void> block(const std::string& user);
  [[nodiscard]] Result<void> unblock(const std::string& user);
  // The blocked usernames, sorted, as the server has them (and the local copy updated).
  [[nodiscard]] Result<std::vector<std::string>> list();
  [[nodiscard]] Result<std::vector<std::string>> refresh(const ConnectionPtr& c);
  // Whether `user` is on the local copy of the list.
  [[nodiscard]] bool is_blocked(const std::string& user);
  // Whether `user` is blocked, asked of the server on the open connection (the local copy may
  // be stale: another device may have unblocked them since this one connected). An error when
  // there is no open connection or the server did not answer.
  [[nodiscard]] Result<bool> confirm(const std::string& user);

 private:
  [[nodiscard]] Result<void> change(const std::string& user, bool block);
  [[nodiscard]] Result<void> save(const std::set<std::string>& names);
  const std::set<std::string>& cached();  // REQUIRES: mu_ held

  Account& account_;
  ServerLink& link_;
  std::mutex mu_;
  std::optional<std::set<std::string>> cache_;
};

}  // namespace sotto::client
