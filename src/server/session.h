// One connection's state at the relay: who logged in on it (if anyone), its login challenge, its
// provisioning address, and its delivery bookkeeping (what was pushed and not yet acknowledged).
// Sessions are owned by shared pointers: the registry (registry.h) holds every open one, and
// handlers and store callbacks keep the ones they work for alive.
// Thread-safety: `mutex` guards the members below it; `instance` is guarded by the registry's
// lock. The registry's lock is taken before a session's (docs/delivery.md, lock order).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "net/ws_server.h"
#include "server/limits.h"
#include "store/server/store.h"

namespace sotto::wire::service {
class Response;
class Push;
}  // namespace sotto::wire::service

namespace sotto::server {

struct Session {
  net::ConnectionPtr connection;
  // The copy of the device's data that logged in (AuthenticateRequest.instance; empty: not
  // given). Guarded by the registry's lock, with its map of online devices.
  std::string instance;
  std::mutex mutex;  // guards everything below
  bool authenticated = false;
  store::AccountId account = 0;
  store::DeviceId device = 0;
  std::string username;
  std::optional<std::array<std::uint8_t, kChallengeSize>> challenge;
  std::uint64_t challenge_at = 0;
  std::string provisioning_address;
  // Delivery: envelopes pushed and not yet acknowledged; the drain cursor; whether the stored
  // backlog has been pushed once (after which new envelopes are pushed as they commit).
  // Pushed and not acknowledged yet, by envelope id: each one's sender and size, which its
  // acknowledgement hands to the store (no lookup of the row before deleting it).
  std::unordered_map<std::string, store::MessageStore::Removing> inflight;
  // Acknowledged, and their deletion not yet durable: the drain must not push them again.
  std::unordered_set<std::string> acked;
  std::optional<store::EnvelopeId> cursor;
  bool draining = false;
  bool drained = false;
  bool missed = false;  // a live delivery was skipped while draining: drain must look again
};

using SessionPtr = std::shared_ptr<Session>;

// Sends a response or a push frame on the session's connection (queued by the transport; never
// blocks). Call with no lock held.
void send_response(Session& s, wire::service::Response&& response);
void send_push(Session& s, wire::service::Push&& push);

}  // namespace sotto::server
