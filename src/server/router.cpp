#include "server/router.h"

#include "net/address_key.h"

namespace sotto::server {

namespace svc = sotto::wire::service;

Router::Router(Context& ctx) : ctx_(ctx) {}

void Router::add(Service& service) {
  service.add_routes(*this);
  services_.push_back(&service);
}

void Router::route(svc::Request::BodyCase kind, Access access, Handler handler,
                   std::vector<Filter> filters) {
  routes_[static_cast<int>(kind)] = Route{access, std::move(handler), std::move(filters)};
}

void Router::on_upgrade_login(std::function<bool(const SessionPtr&, std::string_view)> login) {
  upgrade_login_ = std::move(login);
}

Router::Filter Router::limit(RateLimiter& bucket, std::function<std::string(const Session&)> key,
                             std::string message) {
  return [this, &bucket, key = std::move(key), message = std::move(message)](Call& call) {
    if (const auto wait = bucket.take(key(*call.session), 1)) {
      ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
      fail_retry(call.out, svc::RATE_LIMITED, message, wait);
      return false;
    }
    return true;
  };
}

Router::Filter Router::limit_per_address(RateLimiter& bucket, std::string prefix,
                                         std::string message) {
  return limit(
      bucket,
      [prefix = std::move(prefix)](const Session& s) {
        return prefix + net::address_key(s.connection->remote_address());
      },
      std::move(message));
}

Router::Filter Router::limit_per_account(RateLimiter& bucket, std::string prefix,
                                         std::string message) {
  // The account is set once at login, before any call that needs it, and never changes.
  return limit(
      bucket,
      [prefix = std::move(prefix)](const Session& s) { return prefix + std::to_string(s.account); },
      std::move(message));
}

Outcome Router::run(Call& call) {
  auto it = routes_.find(static_cast<int>(call.request.body_case()));
  if (it == routes_.end()) {
    fail(call.out, svc::BAD_REQUEST, "empty request");
    return Outcome::reply;
  }
  for (const auto& filter : it->second.filters) {
    if (!filter(call)) return Outcome::reply;
  }
  return it->second.handler(call);
}

void Router::after_login(const SessionPtr& s) {
  for (Service* service : services_) service->after_login(s);
}

void Router::on_open(const net::ConnectionPtr& c, std::string_view authorization) {
  SessionPtr s = ctx_.registry.open(c);
  ctx_.metrics.connections.fetch_add(1, std::memory_order_relaxed);
  if (!authorization.empty() && upgrade_login_ && upgrade_login_(s, authorization)) {
    after_login(s);
  }
}

void Router::on_close(const net::ConnectionPtr& c) {
  if (ctx_.registry.close(c)) ctx_.metrics.connections.fetch_sub(1, std::memory_order_relaxed);
}

void Router::on_writable(const net::ConnectionPtr& c) {
  if (SessionPtr s = ctx_.registry.find(c)) {
    for (Service* service : services_) service->on_writable(s);
  }
}

void Router::maintenance() {
  for (Service* service : services_) service->maintenance();
}

void Router::on_frame(const net::ConnectionPtr& c, ByteView bytes) {
  SessionPtr s = ctx_.registry.find(c);
  if (!s) return;
  svc::Frame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || !frame.has_request()) {
    ctx_.metrics.bad_frames.fetch_add(1, std::memory_order_relaxed);
    svc::Response out;
    // The transport splits well-formed batches (net/batch.h): one seen here is malformed or nested.
    fail(out, svc::BAD_REQUEST,
         frame.has_batch() ? "malformed frame: a batch must hold well-formed frames, not batches"
                           : "malformed frame: expected a Request");
    send_response(*s, std::move(out));
    return;
  }
  handle(s, *frame.mutable_request());
}

void Router::handle(const SessionPtr& s, svc::Request& r) {
  svc::Response out;
  out.set_id(r.id());
  out.mutable_status()->set_code(svc::OK);
  // A kind without a route (an empty request) is behind the gate too.
  auto it = routes_.find(static_cast<int>(r.body_case()));
  if (it == routes_.end() || it->second.access == Access::logged_in) {
    std::lock_guard lock(s->mutex);
    if (!s->authenticated) {
      fail(out, svc::UNAUTHENTICATED, "authenticate first");
      send_response(*s, std::move(out));
      return;
    }
  }
  Call call{s, r, out};
  const Outcome outcome = run(call);
  if (outcome == Outcome::later) return;
  send_response(*s, std::move(out));
  if (outcome == Outcome::logged_in) after_login(s);
}

}  // namespace sotto::server
