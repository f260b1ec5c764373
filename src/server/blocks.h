// The blocks service (service.proto BlockRequest, UnblockRequest, ListBlocksRequest): the
// accounts an account has blocked at the server. The list is the account's, for every device;
// what a block changes elsewhere (no one-time prekeys, sends dropped) is in the keys and delivery
// services. Thread-safe; owned by the Server.
#pragma once

#include "server/context.h"
#include "server/service.h"

namespace sotto::server {

class BlocksService final : public Service {
 public:
  explicit BlocksService(Context& ctx);
  void add_routes(Router& router) override;

 private:
  void on_block(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_list_blocks(const SessionPtr& s, wire::service::Response& out);

  Context& ctx_;
};

}  // namespace sotto::server
