// What the relay's router and services share (the "shared state" apart from the sessions):
// config, store, metrics, randomness, clock, the session registry and the rate-limit buckets.
// Owned by the Server facade (server.h); services hold a reference for their whole life.
// Thread-safe: every member is either read-only after construction or thread-safe itself.
#pragma once

#include <cstdint>
#include <functional>

#include "crypto/rng.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/rate_limiter.h"
#include "server/registry.h"
#include "store/server/store.h"

namespace sotto::server {

class KeyTransparency;  // server/kt.h

using NowMs = std::function<std::uint64_t()>;

// Every token bucket of the relay (docs/abuse.md), built from the config. Most are applied by
// the router as filters before a handler runs (router.h); the few that depend on what the
// request holds are taken inside their handler.
struct RateLimits {
  explicit RateLimits(const ServerConfig& config);

  RateLimiter registrations;   // per address key: registrations, device links, recoveries
  RateLimiter logins;          // per address key (net/address_key.h), before the proof
  RateLimiter account_logins;  // per account, after the proof
  RateLimiter bundle_fetches;  // per account: bundles and identity keys
  // One-time prekeys handed out per target "account/device" to other accounts.
  RateLimiter pre_key_handouts;
  RateLimiter block_changes;  // per account
  RateLimiter recoveries;     // per username
  // Per account: sends and their bytes, acknowledged ids, other accounts' device lists, link
  // tokens; provisioning per source address (open) and per account (send).
  RateLimiter sends;
  RateLimiter send_bytes;
  RateLimiter acks;
  RateLimiter device_lists;
  RateLimiter link_tokens;
  RateLimiter provisioning;
  RateLimiter kt_audits;  // per address key: audit records and co-signatures (auditors)
};

struct Context {
  Context(const ServerConfig& config, store::ServerStore& store, Metrics& metrics, crypto::Rng& rng,
          NowMs now_ms);

  // The gauge of bytes the store holds, read again after anything that changes them.
  void update_stored_bytes_gauge();

  const ServerConfig config;
  store::ServerStore& store;
  Metrics& metrics;
  crypto::Rng& rng;
  const NowMs now_ms;
  SessionRegistry registry;
  RateLimits limits;
  // The key transparency log (server/kt.h); null when the server keeps none. Set before the first
  // connection (Server::set_key_transparency), never after.
  KeyTransparency* kt = nullptr;
};

}  // namespace sotto::server
