#include "server/server.h"

#include "server/accounts.h"
#include "server/attachments.h"
#include "server/blocks.h"
#include "server/context.h"
#include "server/delivery.h"
#include "server/keys.h"
#include "server/limits.h"
#include "server/provisioning.h"
#include "server/router.h"

namespace sotto::server {

// Members are built in this order and destroyed in reverse: the services and the router refer
// to the context.
struct Server::Parts {
  Parts(const ServerConfig& config, store::ServerStore& store, Metrics& metrics, crypto::Rng& rng,
        NowMs now_ms)
      : ctx(config, store, metrics, rng, std::move(now_ms)),
        router(ctx),
        accounts(ctx),
        delivery(ctx),
        keys(ctx),
        provisioning(ctx),
        blocks(ctx),
        attachments(config, rng, ctx.now_ms) {
    // The order of after_login: the next key's announcement, then the stored envelopes, then
    // a word if the prekeys run low.
    router.add(accounts);
    router.add(delivery);
    router.add(keys);
    router.add(provisioning);
    router.add(blocks);
    router.add(attachments);
  }

  Context ctx;
  Router router;
  AccountsService accounts;
  DeliveryService delivery;
  KeysService keys;
  ProvisioningService provisioning;
  BlocksService blocks;
  AttachmentService attachments;  // docs/attachments.md
};

Server::Server(const ServerConfig& config, store::ServerStore& store, Metrics& metrics,
               crypto::Rng& rng, NowMs now_ms)
    : parts_(std::make_unique<Parts>(config, store, metrics, rng, std::move(now_ms))) {}

Server::~Server() = default;

void Server::set_key_transparency(KeyTransparency* kt) {
  parts_->ctx.kt = kt;
}

void Server::on_open(const net::ConnectionPtr& c, std::string_view authorization) {
  parts_->router.on_open(c, authorization);
}

void Server::on_frame(const net::ConnectionPtr& c, ByteView frame) {
  parts_->router.on_frame(c, frame);
}

void Server::on_close(const net::ConnectionPtr& c) {
  parts_->router.on_close(c);
}

void Server::on_writable(const net::ConnectionPtr& c) {
  parts_->router.on_writable(c);
}

void Server::maintenance() {
  parts_->router.maintenance();
}

std::vector<std::string> Server::create_invites(std::size_t count, std::uint64_t days) {
  return parts_->accounts.create_invites(count, days);
}

void Server::announce_next_key(std::optional<NextServerKey> next) {
  parts_->accounts.announce_next_key(std::move(next));
}

}  // namespace sotto::server
