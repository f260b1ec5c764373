// What every service of the relay is made of (docs/architecture.md section 9): a Service
// registers its request kinds with the router (router.h) and may hook a device's login, a
// connection that has room again, and the periodic housekeeping. A handler gets a Call: the
// session, the request, and the response the router sends when the handler returns
// Outcome::reply. The small helpers below are what handlers share to fill a response.
// Services are owned by the Server facade (server.h) and live as long as it; a service must be
// thread-safe, since handlers run on every I/O thread at once and store callbacks on the store's
// writer thread.
#pragma once

#include <string>
#include <string_view>

#include "contract/username.h"
#include "server/session.h"
#include "service.pb.h"
#include "store/server/store.h"

namespace sotto::server {

class Router;

// The username rule (src/contract/username.h), for every handler that reads a name.
using contract::normalize_username;

enum class Outcome {
  reply,      // the router sends `out` now
  later,      // the handler answers by itself (send_response), e.g. once a write is durable
  logged_in,  // as reply, then the services' after_login run (the session has just logged in)
};

struct Call {
  const SessionPtr& session;
  wire::service::Request& request;
  // Prepared by the router: the request's id and status OK. A handler that refuses sets the
  // status (fail, fail_retry); a handler that answers later moves it away.
  wire::service::Response& out;
};

class Service {
 public:
  virtual ~Service() = default;
  // Called once, when the Server assembles the router: Router::route for each request kind.
  virtual void add_routes(Router& router) = 0;
  // The session has just logged in; its LoginResult or response has been sent. Services run in
  // the order the Server added them.
  virtual void after_login(const SessionPtr& s) { (void)s; }
  // The session's connection has room for more pushes (net::ConnectionHandler::on_writable).
  virtual void on_writable(const SessionPtr& s) { (void)s; }
  // Periodic housekeeping (Server::maintenance).
  virtual void maintenance() {}
};

void fail(wire::service::Response& out, wire::service::Code code, std::string_view message);
// A refusal the client may retry after `retry_after_ms` (RATE_LIMITED, UNAVAILABLE).
void fail_retry(wire::service::Response& out, wire::service::Code code, std::string_view message,
                std::uint32_t retry_after_ms);
wire::service::Code code_of(store::Error e);

// "account/device": the key of a device in the registry and in per-device rate limits.
std::string device_key(store::AccountId account, store::DeviceId device);
// Protobuf `bytes` fields are std::string; the store takes byte views.
ByteView view(const std::string& s);
std::string str(ByteView b);

}  // namespace sotto::server
