#include "server/provisioning.h"

#include "server/limits.h"
#include "server/router.h"

namespace sotto::server {

namespace svc = sotto::wire::service;

ProvisioningService::ProvisioningService(Context& ctx) : ctx_(ctx) {}

void ProvisioningService::add_routes(Router& router) {
  // Before login, counted per source address; after, per account.
  router.route(svc::Request::kProvisioningOpen, Router::Access::open,
               [this](Call& c) {
                 on_provisioning_open(c.session, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_address(ctx_.limits.provisioning, "open/",
                                         "too many provisioning addresses from this address")});
  router.route(svc::Request::kProvisioningSend, Router::Access::logged_in,
               [this](Call& c) {
                 on_provisioning_send(c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_account(ctx_.limits.provisioning, "send/",
                                         "too many provisioning messages from this account")});
}

void ProvisioningService::on_provisioning_open(const SessionPtr& s, svc::Response& out) {
  std::array<std::uint8_t, kProvisioningAddressSize> address{};
  ctx_.rng.fill(address);
  const std::string key = str(address);
  ctx_.registry.set_provisioning(s, key);
  // The new device now waits for a person to enter its code on another device: it may wait as
  // long as a link token lives (pings keep it from the idle timeout; it still counts as not
  // logged in, and its frames stay small).
  s->connection->extend_login_deadline(std::chrono::seconds(kLinkTokenLifetimeSeconds));
  out.mutable_provisioning_open()->set_address(key);
}

void ProvisioningService::on_provisioning_send(svc::Request& r, svc::Response& out) {
  const auto& req = r.provisioning_send();
  if (req.address().size() != kProvisioningAddressSize || req.ciphertext().empty() ||
      req.ciphertext().size() > kMaxProvisioningMessageBytes) {
    fail(out, svc::BAD_REQUEST, "bad provisioning address or message size");
    return;
  }
  SessionPtr target = ctx_.registry.provisioning(req.address());
  if (!target) {
    fail(out, svc::NOT_FOUND, "no device is waiting at that provisioning address");
    return;
  }
  svc::Push p;
  p.mutable_provisioning()->set_ciphertext(req.ciphertext());
  send_push(*target, std::move(p));
}

}  // namespace sotto::server
