// The provisioning service (service.proto ProvisioningOpen, ProvisioningSend): a device being
// linked waits at a random address; an existing device of the account sends it one sealed
// message there, which the server relays as a push and never reads (docs/architecture.md
// section 4). Addresses live in the session registry, for as long as the waiting connection.
// Thread-safe; owned by the Server.
#pragma once

#include "server/context.h"
#include "server/service.h"

namespace sotto::server {

class ProvisioningService final : public Service {
 public:
  explicit ProvisioningService(Context& ctx);
  void add_routes(Router& router) override;

 private:
  void on_provisioning_open(const SessionPtr& s, wire::service::Response& out);
  void on_provisioning_send(wire::service::Request& r, wire::service::Response& out);

  Context& ctx_;
};

}  // namespace sotto::server
