// The multi-recipient send (service.proto MultiSendRequest) up to the point where its envelopes
// go to the store: checks the request's shape against the limits (limits.h), looks up every
// recipient, checks each one's device list as a SendRequest's is checked, drops what recipients
// who blocked the sender would get, and builds one envelope per listed device, those without
// content of their own sharing one body (store::QueuedEnvelope::body), stored once. The delivery
// service hands the result to the store and delivers it exactly as a SendRequest's envelopes.
// Stateless: plan_multi_send() only reads the store; thread-safe as the store is.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <tl/expected.hpp>
#include <vector>

#include "server/config.h"
#include "store/server/store.h"

namespace sotto::wire::service {
class MultiSendRequest;
class Response;
}  // namespace sotto::wire::service

namespace sotto::server {

// What a multi-send asks of the per-account send buckets, from the request alone (before any
// lookup: a refused request costs the server nothing more). See limits.h kEnvelopesPerSendToken.
struct MultiSendCost {
  std::uint32_t send_tokens = 0;
  std::uint64_t bytes = 0;  // every envelope's content, counted once per device that gets it
};

// The request's shape (sizes, counts, duplicates, names) against the limits: empty when fine,
// else why (a BAD_REQUEST or TOO_LARGE refusal, see `too_large`), before anything is looked up.
struct ShapeProblem {
  std::string why;
  bool too_large = false;
};
[[nodiscard]] ShapeProblem check_multi_send_shape(const wire::service::MultiSendRequest& req,
                                                  const ServerConfig& config);
// REQUIRES: check_multi_send_shape found nothing.
[[nodiscard]] MultiSendCost multi_send_cost(const wire::service::MultiSendRequest& req);

struct MultiSendSender {
  store::AccountId account = 0;
  store::DeviceId device = 0;
  std::string username;
};

// A multi-send ready for the store.
struct MultiSendPlan {
  // Every listed device's envelope except those of recipients who blocked the sender (they get
  // nothing, and the sender is not told).
  std::vector<store::QueuedEnvelope> envelopes;
  // What the storage budget is charged before blocks are applied (so that a blocked sender is
  // refused exactly when anyone else would be): the shared body once, plus every own content.
  std::uint64_t reserve_bytes = 0;
  // What storing `envelopes` adds (at most reserve_bytes): the rest of the reservation is given
  // back at once.
  std::uint64_t stored_bytes = 0;
};

// A refusal: the response's status, and with STALE_DEVICES its mismatches, with NOT_FOUND its
// unknown users, in `out` (service.proto SendResponse).
struct MultiSendRefusal {
  int code = 0;  // svc::Code
  std::string why;
};

// Looks every recipient up, checks device lists (any mismatch refuses the whole send: nothing is
// stored) and blocks, and builds the envelopes, each with an id from `next_id`. `out` gets the
// mismatches or unknown users of a refusal. REQUIRES: check_multi_send_shape found nothing.
[[nodiscard]] tl::expected<MultiSendPlan, MultiSendRefusal> plan_multi_send(
    const wire::service::MultiSendRequest& req, const MultiSendSender& sender,
    store::ServerStore& store, const ServerConfig& config, std::uint64_t now_ms,
    const std::function<store::EnvelopeId()>& next_id, wire::service::Response& out);

// The store's dedup key of a send (SendRequest or MultiSendRequest): the client's message id,
// then the sender account (little-endian), so that a retry of either is stored once.
[[nodiscard]] Bytes send_dedup_key(const std::string& client_message_id, store::AccountId sender);

}  // namespace sotto::server
