// The relay server (docs/architecture.md sections 4-5): the facade that apps and tests build and
// that the transport (net::WsServer) calls per connection. Inside, a router (router.h) parses
// frames, applies the authentication gate and the rate-limit filters and dispatches to one
// service per area: accounts, keys, delivery (docs/delivery.md), provisioning and blocks
// (service.h says how to add one); the session registry (registry.h) is the state they share
// about who is online. It sits on the storage interfaces (store::ServerStore) and never sees a
// plaintext or a private key: message contents are opaque.
// Thread-safe: connection callbacks arrive on several I/O threads, send completions on the
// store's writer thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "contract/username.h"
#include "crypto/rng.h"
#include "net/ws_server.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/next_key.h"
#include "store/server/store.h"

namespace sotto::server {

class KeyTransparency;  // server/kt.h

// The username rule (src/contract/username.h).
using contract::normalize_username;

class Server final : public net::ConnectionHandler {
 public:
  using NowMs = std::function<std::uint64_t()>;
  Server(const ServerConfig& config, store::ServerStore& store, Metrics& metrics, crypto::Rng& rng,
         NowMs now_ms);
  ~Server() override;

  void on_open(const net::ConnectionPtr& c, std::string_view authorization) override;
  void on_frame(const net::ConnectionPtr& c, ByteView frame) override;
  void on_close(const net::ConnectionPtr& c) override;
  // The connection has room again for pushes: the drain goes on (delivery is paced by bytes).
  void on_writable(const net::ConnectionPtr& c) override;

  // Periodic housekeeping: expires old envelopes and dedup keys.
  void maintenance();
  // Creates `count` invite codes valid for `days`; returns them. A registration accepts a code in
  // any case, with or without its dashes.
  std::vector<std::string> create_invites(std::size_t count, std::uint64_t days);
  // From now on, every login is followed by this announcement (none: no more announcements).
  // Devices already logged in are not told: they hear it at their next login.
  void announce_next_key(std::optional<NextServerKey> next);
  // Lookups carry proofs from this log, and KtKeysRequest names its keys (server/kt.h). REQUIRES:
  // called before the first connection; `kt` outlives the server.
  void set_key_transparency(KeyTransparency* kt);

 private:
  struct Parts;  // the shared context, the router and the services (server.cpp)
  std::unique_ptr<Parts> parts_;
};

}  // namespace sotto::server
