#include "server/blocks.h"

#include "server/router.h"

namespace sotto::server {

namespace svc = sotto::wire::service;

BlocksService::BlocksService(Context& ctx) : ctx_(ctx) {}

void BlocksService::add_routes(Router& router) {
  const auto block = [this](Call& c) {
    on_block(c.session, c.request, c.out);
    return Outcome::reply;
  };
  router.route(svc::Request::kBlock, Router::Access::logged_in, block);
  router.route(svc::Request::kUnblock, Router::Access::logged_in, block);
  router.route(svc::Request::kListBlocks, Router::Access::logged_in, [this](Call& c) {
    on_list_blocks(c.session, c.out);
    return Outcome::reply;
  });
}

// Block or unblock (service.proto BlockRequest): the list is the account's, for every device.
// Both are idempotent; only input that names no other account is refused.
void BlocksService::on_block(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  const bool block = r.has_block();
  auto username = normalize_username(block ? r.block().username() : r.unblock().username());
  if (!username) {
    fail(out, svc::BAD_REQUEST, "invalid username");
    return;
  }
  // The token is taken before the lookup: otherwise block and unblock would tell which usernames
  // exist, as fast as one can ask.
  if (const auto wait = ctx_.limits.block_changes.take(std::to_string(s->account), 1)) {
    ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many block changes by this account", wait);
    return;
  }
  auto account = ctx_.store.accounts().find_account(*username);
  if (!account) {
    fail(out, account.error() == store::Error::not_found ? svc::NOT_FOUND : svc::INTERNAL,
         account.error() == store::Error::not_found ? "no such user" : "store failure");
    return;
  }
  if (account->id == s->account) {
    fail(out, svc::BAD_REQUEST,
         block ? "an account cannot block itself" : "an account cannot unblock itself");
    return;
  }
  if (block) {
    if (auto ok = ctx_.store.blocks().block(s->account, account->id); !ok) {
      if (ok.error() == store::Error::conflict) {
        fail(out, svc::BAD_REQUEST, "the block list is full");
      } else {
        fail(out, code_of(ok.error()), "store failure");
      }
    }
    return;
  }
  if (auto ok = ctx_.store.blocks().unblock(s->account, account->id); !ok)
    fail(out, code_of(ok.error()), "store failure");
}

void BlocksService::on_list_blocks(const SessionPtr& s, svc::Response& out) {
  auto names = ctx_.store.blocks().blocked(s->account);
  if (!names) {
    fail(out, code_of(names.error()), "store failure");
    return;
  }
  auto* list = out.mutable_list_blocks();
  for (auto& n : *names) list->add_usernames(std::move(n));
}

}  // namespace sotto::server
