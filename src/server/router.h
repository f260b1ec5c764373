// The relay's router: it turns a connection's frames into calls of the services' handlers.
// For each frame: parse (a malformed frame is answered BAD_REQUEST), the authentication gate
// (every request kind needs a logged-in session unless its route says otherwise), the route's
// filters in order (rate limits, refusing before the handler runs), then the handler; the
// response goes out when the handler returns (or later, by the handler itself). After a login
// it runs every service's after_login. Adding a service: implement Service (service.h), call
// Router::route for its request kinds in add_routes, and have the Server add it.
// Owned by the Server facade with the services it routes to; routes are fixed once the Server is
// built, so handling needs no lock of its own. Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "net/ws_server.h"
#include "server/context.h"
#include "server/service.h"

namespace sotto::server {

class Router {
 public:
  using Handler = std::function<Outcome(Call&)>;
  // Runs before the handler; false refuses the call, with the reason already in `call.out`.
  using Filter = std::function<bool(Call&)>;
  enum class Access {
    logged_in,  // refused UNAUTHENTICATED until the session has logged in
    open,       // before login too: registration, login, linking, recovery, provisioning
  };

  explicit Router(Context& ctx);

  // Adds a service: its routes, and its hooks (in the order services are added).
  void add(Service& service);
  void route(wire::service::Request::BodyCase kind, Access access, Handler handler,
             std::vector<Filter> filters = {});
  // The login proof a client put in its upgrade request; true when it logged the session in
  // (the hook also answers the client). Set by the accounts service.
  void on_upgrade_login(std::function<bool(const SessionPtr&, std::string_view)> login);

  // A token per call from `bucket`, keyed by the source address or by the account (with
  // `prefix` in front, to share a bucket between kinds); an empty bucket refuses RATE_LIMITED
  // with `message` and the time to wait.
  Filter limit_per_address(RateLimiter& bucket, std::string prefix, std::string message);
  Filter limit_per_account(RateLimiter& bucket, std::string prefix, std::string message);

  // The route's filters, then its handler (no gate, no reply). BAD_REQUEST for a kind without a
  // route.
  Outcome run(Call& call);
  // Every service's after_login, in order.
  void after_login(const SessionPtr& s);

  // From the transport (Server forwards net::ConnectionHandler's calls).
  void on_open(const net::ConnectionPtr& c, std::string_view authorization);
  void on_frame(const net::ConnectionPtr& c, ByteView frame);
  void on_close(const net::ConnectionPtr& c);
  void on_writable(const net::ConnectionPtr& c);
  void maintenance();

 private:
  struct Route {
    Access access = Access::logged_in;
    Handler handler;
    std::vector<Filter> filters;
  };
  void handle(const SessionPtr& s, wire::service::Request& request);
  Filter limit(RateLimiter& bucket, std::function<std::string(const Session&)> key,
               std::string message);

  Context& ctx_;
  std::map<int, Route> routes_;  // by Request body case
  std::vector<Service*> services_;
  std::function<bool(const SessionPtr&, std::string_view)> upgrade_login_;
};

}  // namespace sotto::server
