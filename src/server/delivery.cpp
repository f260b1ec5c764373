#include "server/delivery.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>

#include "contract/ids.h"
#include "server/limits.h"
#include "server/multi_send.h"
#include "server/router.h"

namespace sotto::server {

namespace svc = sotto::wire::service;
using store::AccountId;
using store::DeviceId;
using store::EnvelopeId;

namespace {

// How long a client is told to wait when storage is over budget: acknowledgements and expiry
// free it, at a pace the server cannot predict.
constexpr std::uint32_t kStorageRetryMs = 30'000;

// What an envelope's acknowledgement tells the store of it (see Session::inflight).
store::MessageStore::Removing removing(const store::QueuedEnvelope& env) {
  return {env.source, env.payload().size(), env.body != nullptr || env.shared};
}

std::string id_key(const EnvelopeId& id) {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}

svc::Push envelope_push(const store::QueuedEnvelope& env) {
  svc::Push p;
  auto* e = p.mutable_envelope();
  e->set_id(id_key(env.id));
  e->set_source(env.source);
  e->set_source_device(env.source_device);
  e->set_type(env.type);
  e->set_content(str(env.payload()));
  e->set_client_timestamp(env.client_timestamp);
  e->set_server_timestamp(env.server_timestamp);
  return p;
}

}  // namespace

DeliveryService::DeliveryService(Context& ctx) : ctx_(ctx) {
  // The gauge counts what the store holds, so it starts from there and not from zero.
  if (auto stored = ctx_.store.messages().count_all()) {
    ctx_.metrics.queue_depth.store(static_cast<std::int64_t>(*stored), std::memory_order_relaxed);
  }
  ctx_.update_stored_bytes_gauge();
  // Reads the free space once now (the gauge is then right from the start), and tells the
  // operator at once when sends could not be stored.
  if (auto why = storage_refusal(0); !why.empty()) {
    spdlog::warn(
        "event=storage_full reason=\"{}\" stored_bytes={} max_stored_bytes={} disk_free_bytes={} "
        "min_free_disk_bytes={} (every send will be refused until there is room)",
        why, ctx_.store.messages().stored_bytes(), ctx_.config.max_stored_bytes,
        disk_free_bytes_.load(std::memory_order_relaxed), ctx_.config.min_free_disk_bytes);
  }
}

void DeliveryService::add_routes(Router& router) {
  // Both answer once the store's write is durable.
  router.route(svc::Request::kSend, Router::Access::logged_in, [this](Call& c) {
    on_send(c.session, c.request, std::move(c.out));
    return Outcome::later;
  });
  router.route(svc::Request::kMultiSend, Router::Access::logged_in, [this](Call& c) {
    on_multi_send(c.session, c.request, std::move(c.out));
    return Outcome::later;
  });
  router.route(svc::Request::kAck, Router::Access::logged_in, [this](Call& c) {
    on_ack(c.session, c.request, std::move(c.out));
    return Outcome::later;
  });
}

void DeliveryService::after_login(const SessionPtr& s) {
  drain(s);
}

void DeliveryService::on_writable(const SessionPtr& s) {
  drain(s);
}

std::string DeliveryService::reserve_storage(std::uint64_t bytes) {
  // Reserved first and checked after, so that two sends on two threads cannot both take the same
  // room; a refusal gives its reservation back.
  const std::uint64_t reserved = reserved_bytes_.fetch_add(bytes) + bytes;
  std::string why = storage_refusal(reserved);
  if (!why.empty()) {
    reserved_bytes_.fetch_sub(bytes);
    // The operator hears of it, at most once a minute (the counter on /metrics counts them all).
    const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t last = storage_warned_ms_.load(std::memory_order_relaxed);
    if ((last < 0 || now - last >= 60'000) &&
        storage_warned_ms_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
      spdlog::warn(
          "event=storage_full reason=\"{}\" stored_bytes={} max_stored_bytes={} "
          "disk_free_bytes={} min_free_disk_bytes={} (sends are refused until acknowledgements "
          "and expiry make room)",
          why, ctx_.store.messages().stored_bytes(), ctx_.config.max_stored_bytes,
          disk_free_bytes_.load(std::memory_order_relaxed), ctx_.config.min_free_disk_bytes);
    }
  }
  return why;
}

std::string DeliveryService::storage_refusal(std::uint64_t reserved) {
  const std::uint64_t stored = ctx_.store.messages().stored_bytes();
  if (stored + reserved > ctx_.config.max_stored_bytes) {
    return "server storage is full (its message budget is used up)";
  }
  if (ctx_.config.min_free_disk_bytes == 0 || ctx_.config.data_dir.empty()) return {};
  // statvfs at most once a second, whoever asks: a send costs no system call.
  const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  std::int64_t checked = disk_checked_ms_.load(std::memory_order_relaxed);
  if ((checked < 0 || now - checked >= 1000) &&
      disk_checked_ms_.compare_exchange_strong(checked, now, std::memory_order_relaxed)) {
    struct statvfs fs {};
    if (statvfs(ctx_.config.data_dir.c_str(), &fs) == 0) {
      const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
      disk_free_bytes_.store(free_bytes, std::memory_order_relaxed);
      ctx_.metrics.disk_free_bytes.store(static_cast<std::int64_t>(free_bytes),
                                         std::memory_order_relaxed);
    }
  }
  const std::uint64_t free_bytes = disk_free_bytes_.load(std::memory_order_relaxed);
  if (free_bytes < ctx_.config.min_free_disk_bytes ||
      free_bytes - ctx_.config.min_free_disk_bytes < reserved) {
    return "server storage is full (its disk is almost full)";
  }
  return {};
}

bool DeliveryService::within_send_rate(const SessionPtr& s, double tokens, double bytes,
                                       svc::Response& out) {
  const std::string who = std::to_string(s->account);
  std::uint32_t wait = ctx_.limits.sends.take(who, tokens);
  if (wait == 0) wait = ctx_.limits.send_bytes.take(who, bytes);
  if (wait == 0) return true;
  ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
  ctx_.metrics.sends_refused.fetch_add(1, std::memory_order_relaxed);
  fail_retry(out, svc::RATE_LIMITED, "too many messages sent by this account", wait);
  send_response(*s, std::move(out));
  return false;
}

void DeliveryService::on_send(const SessionPtr& s, svc::Request& r, svc::Response&& out) {
  // Once the send has claimed its dedup key (begin_send), every answer goes through answer_send,
  // which answers the retries queued behind it too.
  std::string claimed;
  const auto respond = [&](svc::Response&& o) {
    if (claimed.empty()) {
      send_response(*s, std::move(o));
    } else {
      answer_send(claimed, s, std::move(o));
    }
  };
  const auto refuse = [&](svc::Code code, std::string_view why) {
    ctx_.metrics.sends_refused.fetch_add(1, std::memory_order_relaxed);
    fail(out, code, why);
    respond(std::move(out));
  };
  const auto& req = r.send();
  if (req.client_message_id().size() != kClientMessageIdSize)
    return refuse(svc::BAD_REQUEST, "client message id must be 16 bytes");
  if (req.messages_size() == 0 ||
      static_cast<std::size_t>(req.messages_size()) > kMaxMessagesPerSend) {
    return refuse(svc::BAD_REQUEST, "a send carries 1 to 64 messages");
  }
  // Counted before anything is looked up or stored: one account cannot fill the disk or hold
  // the store's writer (docs/abuse.md).
  std::uint64_t request_bytes = 0;
  for (const auto& m : req.messages()) request_bytes += m.content().size();
  if (!within_send_rate(s, 1, static_cast<double>(request_bytes), out)) return;
  const std::uint64_t now = ctx_.now_ms();
  // A retry of a send (same client message id) is never pushed: one still under way is answered
  // with it (begin_send), one already stored as it was, before anything is checked or pushed
  // (its envelopes would have new ids, and an online recipient would get the message twice).
  Bytes dedup = send_dedup_key(req.client_message_id(), s->account);
  {
    std::string key(reinterpret_cast<const char*>(dedup.data()), dedup.size());
    if (!begin_send(key, s, out)) return;
    claimed = std::move(key);
  }
  // (Sends under way hold their key in begin_send: the store need only say what it committed.)
  if (auto sent = ctx_.store.messages().sent(dedup); !sent) {
    return refuse(svc::INTERNAL, "store failure");
  } else if (*sent) {
    out.mutable_send()->set_server_timestamp(now);
    return respond(std::move(out));
  }
  auto recipient_name = normalize_username(req.recipient());
  if (!recipient_name) return refuse(svc::BAD_REQUEST, "invalid recipient");
  auto recipient = ctx_.store.accounts().find_account(*recipient_name);
  if (!recipient) return refuse(svc::NOT_FOUND, "no such user");
  auto self = ctx_.store.accounts().find_account(s->account);
  if (!self) return refuse(svc::INTERNAL, "account not found");
  // Blocked by the recipient (service.proto BlockRequest): the send is answered as usual, and
  // nothing is stored for the recipient's devices (the sender's own devices still get theirs).
  bool blocked_by_recipient = false;
  if (recipient->id != self->id) {
    auto blocked = ctx_.store.blocks().is_blocked(recipient->id, self->id);
    if (!blocked) return refuse(svc::INTERNAL, "store failure");
    blocked_by_recipient = *blocked;
  }

  // Expected devices: every device of the recipient, and our own other devices.
  struct Expect {
    const store::AccountRecord* account;
    std::map<std::uint32_t, std::uint32_t> devices;  // id -> registration id
    std::set<std::uint32_t> given;
    svc::DeviceMismatch mismatch;
  };
  std::vector<Expect> expects;
  expects.push_back({&*recipient, {}, {}, {}});
  if (recipient->id != self->id) expects.push_back({&*self, {}, {}, {}});
  for (auto& e : expects) {
    for (const auto& d : e.account->devices) {
      if (e.account->id == self->id && d.id == s->device) continue;
      e.devices[d.id] = d.registration_id;
    }
    e.mismatch.set_username(e.account->username);
  }
  std::vector<store::QueuedEnvelope> envelopes;
  const std::uint64_t expires = now / 1000 + ctx_.config.message_ttl_days * 86400;
  for (const auto& m : req.messages()) {
    if (m.content().empty() || m.content().size() > ctx_.config.max_message_bytes) {
      return refuse(svc::TOO_LARGE, "message content empty or above the size limit");
    }
    auto dest = normalize_username(m.destination());
    Expect* e = nullptr;
    for (auto& x : expects) {
      if (dest && x.account->username == *dest) e = &x;
    }
    if (e == nullptr)
      return refuse(svc::BAD_REQUEST,
                    "a message is addressed outside the recipient and our own account");
    if (!e->given.insert(m.device_id()).second)
      return refuse(svc::BAD_REQUEST, "two messages for one device");
    auto it = e->devices.find(m.device_id());
    if (it == e->devices.end()) {
      e->mismatch.add_extra(m.device_id());
      continue;
    }
    if (it->second != m.registration_id()) e->mismatch.add_stale(m.device_id());
    store::QueuedEnvelope env;
    env.id = next_envelope_id(now);
    env.account = e->account->id;
    env.device = m.device_id();
    env.source = s->username;
    env.source_device = s->device;
    env.type = m.type();
    env.content.assign(m.content().begin(), m.content().end());
    env.client_timestamp = req.timestamp();
    env.server_timestamp = now;
    env.expires_at = expires;
    env.source_account = s->account;
    envelopes.push_back(std::move(env));
  }
  bool mismatched = false;
  for (auto& e : expects) {
    // A send to some devices only (a resend, a retry request) leaves the others out on purpose.
    for (const auto& [id, reg] : e.devices) {
      (void)reg;
      if (!req.device_subset() && !e.given.contains(id)) e.mismatch.add_missing(id);
    }
    if (e.mismatch.missing_size() || e.mismatch.extra_size() || e.mismatch.stale_size()) {
      mismatched = true;
      *out.mutable_send()->add_mismatch() = e.mismatch;
    }
  }
  // (A retry of a send accepted before the device list changed was answered above.)
  if (mismatched) return refuse(svc::STALE_DEVICES, "device list out of date");
  // The storage budget (docs/abuse.md): refused before anything is stored, and told apart from
  // a failure so that the client retries later. Counted before a block drops the recipient's
  // envelopes, so that a blocked sender is refused exactly when anyone else would be (a send
  // accepted only because it was dropped would tell it it is blocked).
  std::uint64_t stored_bytes = 0;
  for (const auto& env : envelopes) stored_bytes += env.content.size();
  if (auto why = reserve_storage(stored_bytes); !why.empty()) {
    ctx_.metrics.storage_refusals.fetch_add(1, std::memory_order_relaxed);
    ctx_.metrics.sends_refused.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::UNAVAILABLE, why, kStorageRetryMs);
    return respond(std::move(out));
  }
  if (blocked_by_recipient) {
    std::erase_if(envelopes, [&](const auto& env) { return env.account == recipient->id; });
    std::uint64_t kept = 0;
    for (const auto& env : envelopes) kept += env.content.size();
    reserved_bytes_.fetch_sub(stored_bytes - kept);
    stored_bytes = kept;
    if (envelopes.empty()) {
      out.mutable_send()->set_server_timestamp(now);
      return respond(std::move(out));
    }
  }

  store_and_deliver(
      std::move(envelopes), std::move(dedup), stored_bytes, false,
      [this, s, out = std::move(out), now, key = std::move(claimed)](Stored stored) mutable {
        if (!stored) {
          ctx_.metrics.sends_refused.fetch_add(1, std::memory_order_relaxed);
          fail_stored(out, stored.error());
        } else {
          out.mutable_send()->set_server_timestamp(now);
        }
        answer_send(key, s, std::move(out));
      });
}

bool DeliveryService::begin_send(const std::string& key, const SessionPtr& s,
                                 const svc::Response& out) {
  std::lock_guard lock(sends_mu_);
  auto [it, first] = sending_.try_emplace(key);
  if (!first) it->second.push_back({s, out.id()});
  return first;
}

void DeliveryService::answer_send(const std::string& key, const SessionPtr& s,
                                  svc::Response&& out) {
  std::vector<WaitingRetry> retries;
  {
    std::lock_guard lock(sends_mu_);
    if (auto it = sending_.find(key); it != sending_.end()) {
      retries = std::move(it->second);
      sending_.erase(it);
    }
  }
  // Each retry gets the original's answer under its own request id: stored or refused alike (a
  // refused send stored nothing, so the client may send it again).
  for (auto& retry : retries) {
    svc::Response copy = out;
    copy.set_id(retry.request_id);
    send_response(*retry.session, std::move(copy));
  }
  send_response(*s, std::move(out));
}

void DeliveryService::on_multi_send(const SessionPtr& s, svc::Request& r, svc::Response&& out) {
  // As on_send: once the dedup key is claimed, every answer goes through answer_send.
  std::string claimed;
  const auto respond = [&](svc::Response&& o) {
    if (claimed.empty()) {
      send_response(*s, std::move(o));
    } else {
      answer_send(claimed, s, std::move(o));
    }
  };
  const auto refuse = [&](svc::Code code, std::string_view why) {
    ctx_.metrics.sends_refused.fetch_add(1, std::memory_order_relaxed);
    fail(out, code, why);
    respond(std::move(out));
  };
  const auto& req = r.multi_send();
  if (auto shape = check_multi_send_shape(req, ctx_.config); !shape.why.empty())
    return refuse(shape.too_large ? svc::TOO_LARGE : svc::BAD_REQUEST, shape.why);
  // Counted before anything is looked up or stored, per envelope (limits.h
  // kEnvelopesPerSendToken) and per byte delivered (docs/abuse.md, "Group sends").
  const MultiSendCost cost = multi_send_cost(req);
  if (!within_send_rate(s, cost.send_tokens, static_cast<double>(cost.bytes), out)) return;
  const std::uint64_t now = ctx_.now_ms();
  Bytes dedup = send_dedup_key(req.client_message_id(), s->account);
  // A retry of a send already accepted (its answer lost) is answered as the original was, before
  // anything is checked again or pushed: its envelopes would have new ids, and an online
  // recipient would get the message twice. (One lookup per request, however many recipients.)
  // One still under way is answered with it.
  {
    std::string key(reinterpret_cast<const char*>(dedup.data()), dedup.size());
    if (!begin_send(key, s, out)) return;
    claimed = std::move(key);
  }
  if (auto sent = ctx_.store.messages().sent(dedup); !sent) {
    return refuse(svc::INTERNAL, "store failure");
  } else if (*sent) {
    out.mutable_multi_send()->set_server_timestamp(now);
    report_left_out(**sent, out);  // the devices the original left out, again
    return respond(std::move(out));
  }
  auto plan = plan_multi_send(
      req, {s->account, s->device, s->username}, ctx_.store, ctx_.config, now,
      [&] { return next_envelope_id(now); }, out);
  if (!plan) return refuse(static_cast<svc::Code>(plan.error().code), plan.error().why);
  // The storage budget, charged before blocks drop anything (as for a SendRequest): the shared
  // body once, however many devices get it.
  if (auto why = reserve_storage(plan->reserve_bytes); !why.empty()) {
    ctx_.metrics.storage_refusals.fetch_add(1, std::memory_order_relaxed);
    ctx_.metrics.sends_refused.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::UNAVAILABLE, why, kStorageRetryMs);
    return respond(std::move(out));
  }
  reserved_bytes_.fetch_sub(plan->reserve_bytes - plan->stored_bytes);
  if (plan->envelopes.empty()) {  // every recipient blocked the sender
    out.mutable_multi_send()->set_server_timestamp(now);
    return respond(std::move(out));
  }
  // From here exactly as a SendRequest's envelopes: pushed before the commit where the device is
  // caught up, the sender answered once durable, the rest delivered after the commit.
  // With leave_out_full, a device whose queue is full does not hold up the others: they get the
  // message, and the answer lists the devices left out (docs/delivery.md, "A full queue in a
  // group send"). Without it (an older client, which would not send to them again), all or
  // nothing as before.
  store_and_deliver(
      std::move(plan->envelopes), std::move(dedup), plan->stored_bytes, req.leave_out_full(),
      [this, s, out = std::move(out), now, key = std::move(claimed)](Stored stored) mutable {
        if (!stored) {
          ctx_.metrics.sends_refused.fetch_add(1, std::memory_order_relaxed);
          fail_stored(out, stored.error());
        } else {
          out.mutable_multi_send()->set_server_timestamp(now);
          report_left_out(*stored, out);
        }
        answer_send(key, s, std::move(out));
      });
}

void DeliveryService::report_left_out(const std::vector<store::MessageStore::Refusal>& refused,
                                      svc::Response& out) {
  if (refused.empty()) return;
  // Grouped by recipient, in the order the store gave them; named as the account is now.
  std::vector<std::pair<AccountId, svc::QueueFullDevices*>> by_account;
  for (const auto& r : refused) {
    svc::QueueFullDevices* entry = nullptr;
    for (auto& [account, e] : by_account) {
      if (account == r.account) entry = e;
    }
    if (entry == nullptr) {
      auto record = ctx_.store.accounts().find_account(r.account);
      if (!record) continue;  // the account is gone: nothing to send it again
      entry = out.mutable_multi_send()->add_queue_full();
      entry->set_username(record->username);
      by_account.emplace_back(r.account, entry);
    }
    entry->add_device_ids(r.device);
    if (r.why == store::Error::queue_share_full) {
      entry->set_sender_share(true);
      ctx_.metrics.queue_share_refusals.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void DeliveryService::fail_stored(svc::Response& out, store::Error e) {
  switch (e) {
    case store::Error::queue_full:
      fail(out, svc::QUEUE_FULL, "a recipient device queue is full");
      break;
    case store::Error::queue_share_full:
      ctx_.metrics.queue_share_refusals.fetch_add(1, std::memory_order_relaxed);
      fail(out, svc::QUEUE_FULL,
           "this account holds its share of a recipient device's queue: more can be "
           "stored once that device has received what is waiting");
      break;
    default:
      fail(out, code_of(e), "store failure");
      break;
  }
}

void DeliveryService::store_and_deliver(std::vector<store::QueuedEnvelope> envelopes, Bytes dedup,
                                        std::uint64_t reserved, bool partial,
                                        std::function<void(Stored)> answer) {
  // Envelopes go to recipients that are online and caught up at once, before the commit; an
  // envelope acknowledged before the writer reaches it is never written (the store cancels it).
  // The sender is answered only once the send is durable either way. Others are delivered after
  // the commit (live, or by the drain from the store), and until then no later envelope for the
  // same device overtakes them (docs/delivery.md).
  const auto started = std::chrono::steady_clock::now();
  auto delivery = std::make_shared<Delivery>();
  delivery->envelopes = envelopes;
  delivery->pushed.assign(envelopes.size(), false);
  delivery->pushed_to.assign(envelopes.size(), 0);
  delivery->counted.assign(envelopes.size(), false);
  delivery->refused.assign(envelopes.size(), false);
  prepare_shared_frame(*delivery);
  auto done = [this, delivery, started, reserved, answer = std::move(answer)](Stored stored) {
    ctx_.metrics.commit_latency.observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    reserved_bytes_.fetch_sub(reserved, std::memory_order_relaxed);
    ctx_.update_stored_bytes_gauge();
    if (stored) {
      std::size_t kept = delivery->envelopes.size();
      if (!stored->empty()) {
        // The devices whose queue was full get nothing: not pushed after the commit, and the
        // sender is told which (docs/delivery.md, "A full queue in a group send").
        std::lock_guard dlock(delivery->mu);
        for (std::size_t i = 0; i < delivery->envelopes.size(); ++i) {
          const auto& env = delivery->envelopes[i];
          for (const auto& r : *stored) {
            if (r.account == env.account && r.device == env.device) {
              delivery->refused[i] = true;
              --kept;
              break;
            }
          }
        }
      }
      ctx_.metrics.messages_in.fetch_add(kept, std::memory_order_relaxed);
      ctx_.metrics.queue_depth.fetch_add(static_cast<std::int64_t>(kept),
                                         std::memory_order_relaxed);
    }
    const bool ok = stored.has_value();
    answer(std::move(stored));
    deliver_after_commit(*delivery, ok);
  };
  if (partial) {
    ctx_.store.messages().enqueue_partial(std::move(envelopes), std::move(dedup), std::move(done));
  } else {
    ctx_.store.messages().enqueue(std::move(envelopes), std::move(dedup),
                                  [done = std::move(done)](tl::expected<void, store::Error> r) {
                                    if (!r) return done(tl::unexpected(r.error()));
                                    done(std::vector<store::MessageStore::Refusal>{});
                                  });
  }
  deliver_before_commit(*delivery);
}

store::EnvelopeId DeliveryService::next_envelope_id(std::uint64_t now_ms) {
  static constexpr std::size_t kRandomBytes = contract::kIdUniqueBytes;
  static_assert(std::tuple_size_v<store::EnvelopeId> == contract::kIdSize);
  std::lock_guard lock(id_mutex_);
  if (id_pool_used_ + kRandomBytes > id_pool_.size()) {
    ctx_.rng.fill(id_pool_);
    id_pool_used_ = 0;
  }
  const store::EnvelopeId id = contract::time_ordered_id(
      now_ms,
      std::span<const std::uint8_t, kRandomBytes>(id_pool_.data() + id_pool_used_, kRandomBytes));
  std::memset(id_pool_.data() + id_pool_used_, 0, kRandomBytes);  // each byte is handed out once
  id_pool_used_ += kRandomBytes;
  return id;
}

Bytes DeliveryService::push_frame(const Delivery& delivery, std::size_t i) {
  const auto& env = delivery.envelopes[i];
  const SharedFrame& t = delivery.shared_frame;
  if (env.body && env.body.get() == t.body && env.source_device == t.source_device &&
      env.type == t.type && env.client_timestamp == t.client_timestamp &&
      env.server_timestamp == t.server_timestamp && env.source == t.source) {
    // The shared body's frame, serialized once for the whole send: only the id differs.
    Bytes frame = t.frame;
    std::memcpy(frame.data() + t.id_at, env.id.data(), env.id.size());
    return frame;
  }
  svc::Frame frame;
  *frame.mutable_push() = envelope_push(env);
  Bytes bytes(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(bytes.data());
  return bytes;
}

void DeliveryService::prepare_shared_frame(Delivery& delivery) {
  const store::QueuedEnvelope* first = nullptr;
  for (const auto& env : delivery.envelopes) {
    if (env.body) {
      first = &env;
      break;
    }
  }
  if (first == nullptr) return;
  // Serialized with a marker id, which is then found and overwritten per envelope. An id is
  // always 16 bytes, so no length before it changes with it.
  store::QueuedEnvelope marked = *first;
  marked.id.fill(0xA5);
  svc::Frame frame;
  *frame.mutable_push() = envelope_push(marked);
  Bytes bytes(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(bytes.data());
  const auto at = std::search(bytes.begin(), bytes.end(), marked.id.begin(), marked.id.end());
  if (at == bytes.end()) return;
  // The marker must occur once: a body that holds it too would be patched in the wrong place.
  if (std::search(at + 1, bytes.end(), marked.id.begin(), marked.id.end()) != bytes.end()) return;
  SharedFrame& t = delivery.shared_frame;
  t.id_at = static_cast<std::size_t>(at - bytes.begin());
  t.frame = std::move(bytes);
  t.body = first->body.get();
  t.source = first->source;
  t.source_device = first->source_device;
  t.type = first->type;
  t.client_timestamp = first->client_timestamp;
  t.server_timestamp = first->server_timestamp;
}

void DeliveryService::deliver_before_commit(Delivery& delivery) {
  const auto& envelopes = delivery.envelopes;
  std::vector<std::pair<SessionPtr, std::size_t>> pushes;
  // A chunk of envelopes per taking of the registry's lock: a group send does not hold it for
  // all its recipients at once, and the first pushes leave before the last are decided.
  for (std::size_t from = 0; from < envelopes.size(); from += kRegistryChunk) {
    const std::size_t n = std::min(kRegistryChunk, envelopes.size() - from);
    ctx_.registry.with_devices(
        n,
        [&](std::size_t k) {
          const auto& env = envelopes[from + k];
          return std::pair<AccountId, DeviceId>{env.account, env.device};
        },
        [&](std::size_t k, const SessionPtr& target, bool waiting) {
          const std::size_t i = from + k;
          const auto& env = envelopes[i];
          if (target && !waiting) {
            std::lock_guard tlock(target->mutex);
            std::lock_guard dlock(delivery.mu);
            // Paced by bytes too: a connection with enough unsent already gets it from the drain.
            if (!delivery.committed && target->drained &&
                target->inflight.size() < kMaxInflightPushes && target->connection->writable() &&
                target->inflight.try_emplace(id_key(env.id), removing(env)).second) {
              delivery.pushed[i] = true;
              delivery.pushed_to[i] = target->connection->id();
              target->cursor = env.id;
              pushes.emplace_back(target, i);
              return false;
            }
          }
          // Delivered after the commit; until then, later envelopes for this device wait too.
          std::lock_guard dlock(delivery.mu);
          if (!delivery.committed) {
            delivery.counted[i] = true;
            return true;
          }
          return false;
        });
    for (auto& [target, i] : pushes) target->connection->send(push_frame(delivery, i));
    ctx_.metrics.messages_out.fetch_add(pushes.size(), std::memory_order_relaxed);
    pushes.clear();
  }
}

void DeliveryService::deliver_after_commit(Delivery& delivery, bool stored) {
  {
    // The commit may even come before deliver_before_commit has run: then that pushes nothing.
    std::lock_guard dlock(delivery.mu);
    delivery.committed = true;
  }
  const auto& envelopes = delivery.envelopes;
  std::vector<std::pair<AccountId, DeviceId>> devices;
  std::vector<std::pair<AccountId, DeviceId>> release;
  std::vector<std::pair<SessionPtr, std::size_t>> pushes;
  for (std::size_t from = 0; from < envelopes.size(); from += kRegistryChunk) {
    const std::size_t n = std::min(kRegistryChunk, envelopes.size() - from);
    devices.clear();
    for (std::size_t k = 0; k < n; ++k)
      devices.emplace_back(envelopes[from + k].account, envelopes[from + k].device);
    std::vector<SessionPtr> targets =
        stored ? ctx_.registry.online(devices) : std::vector<SessionPtr>(n);
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = from + k;
      const auto& env = envelopes[i];
      SessionPtr& target = targets[k];
      bool counted = false;
      if (target) {
        std::lock_guard lock(target->mutex);
        std::lock_guard dlock(delivery.mu);
        counted = delivery.counted[i];
        delivery.counted[i] = false;
        // Until the backlog has been pushed once, the drain picks this envelope up in order; a
        // device too far behind goes back to draining, resumed by its acknowledgements (too many
        // in flight) or by its connection's on_writable (too many bytes unsent).
        if (delivery.refused[i]) {
          // not stored (its device's queue is full): the sender is told, nothing is pushed
        } else if (delivery.pushed[i] && delivery.pushed_to[i] == target->connection->id()) {
          // pushed before the commit, on this very connection
        } else if (!target->drained || target->inflight.size() >= kMaxInflightPushes ||
                   !target->connection->writable()) {
          target->missed = true;
          target->drained = false;
        } else if (target->inflight.try_emplace(id_key(env.id), removing(env)).second) {
          // (Also when it went out before the commit on a connection that has closed since: the
          // device's new connection has drained without it. A copy it had already acknowledged
          // is dropped by envelope id.)
          delivery.pushed[i] = true;
          delivery.pushed_to[i] = target->connection->id();
          target->cursor = env.id;
          pushes.emplace_back(std::move(target), i);
        }
      } else {
        std::lock_guard dlock(delivery.mu);
        counted = delivery.counted[i];
        delivery.counted[i] = false;
      }
      if (counted) release.emplace_back(env.account, env.device);
    }
    // Pushed before the wait counts are released: no later envelope overtakes these.
    for (auto& [target, i] : pushes) target->connection->send(push_frame(delivery, i));
    ctx_.metrics.messages_out.fetch_add(pushes.size(), std::memory_order_relaxed);
    pushes.clear();
    ctx_.registry.release_waiting(release);
    release.clear();
  }
}

void DeliveryService::drain(const SessionPtr& s) {
  std::optional<EnvelopeId> cursor;
  AccountId account = 0;
  DeviceId device = 0;
  {
    std::lock_guard lock(s->mutex);
    if (!s->authenticated || s->draining || s->drained) return;
    // Refilled a page at a time: a client acknowledges each envelope, and a store read per
    // acknowledgement would cost more than the push it feeds.
    if (s->inflight.size() + kDrainBatch > kMaxInflightPushes) return;
    s->draining = true;
    cursor = s->cursor;
    account = s->account;
    device = s->device;
  }
  // Paced by bytes as well as by count: the drain stops while the connection has enough unsent
  // (net::Connection::writable) and its on_writable brings it back, so a backlog of large
  // messages leaves as fast as the device reads it, never as a burst into the outbound limit.
  bool full = false;
  while (!full) {
    std::size_t room = 0;
    {
      std::lock_guard lock(s->mutex);
      room = kMaxInflightPushes - std::min(kMaxInflightPushes, s->inflight.size());
    }
    if (room < kDrainBatch) break;
    if (!s->connection->writable()) break;
    const std::size_t want = kDrainBatch;
    auto batch = ctx_.store.messages().load(account, device, want, cursor, kDrainLoadBytes);
    if (!batch && batch.error() == store::Error::not_found) {
      // The cursor's envelope was acknowledged and deleted: continue from the head of the queue,
      // skipping what is already in flight.
      cursor.reset();
      batch = ctx_.store.messages().load(account, device, want, cursor, kDrainLoadBytes);
    }
    if (!batch) break;
    std::size_t bytes = 0;
    for (const auto& env : *batch) bytes += env.content.size();
    for (const auto& env : *batch) {
      bool pushing = false;
      {
        std::lock_guard lock(s->mutex);
        const std::string key = id_key(env.id);
        if (!s->acked.contains(key) && !s->inflight.contains(key)) {  // else pushed already
          if (!s->connection->writable()) {
            // This one and the rest wait, in order: the cursor stays before it.
            full = true;
            break;
          }
          s->inflight.try_emplace(key, removing(env));
          pushing = true;
        }
        cursor = env.id;
        s->cursor = env.id;
      }
      if (pushing) {
        send_push(*s, envelope_push(env));
        ctx_.metrics.messages_out.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (full) break;
    if (batch->size() < want && bytes < kDrainLoadBytes) {
      std::lock_guard lock(s->mutex);
      if (s->missed) {  // a send committed during this pass: look once more
        s->missed = false;
        continue;
      }
      s->drained = true;
      s->draining = false;
      svc::Push done;
      done.mutable_queue_drained();
      send_push(*s, std::move(done));
      return;
    }
  }
  std::lock_guard lock(s->mutex);
  s->draining = false;
}

void DeliveryService::on_ack(const SessionPtr& s, svc::Request& r, svc::Response&& out) {
  const auto& ids = r.ack().envelope_ids();
  if (static_cast<std::size_t>(ids.size()) > kMaxAckIds) {
    fail(out, svc::BAD_REQUEST, "too many ids in one acknowledgement");
    send_response(*s, std::move(out));
    return;
  }
  std::vector<EnvelopeId> list;
  list.reserve(static_cast<std::size_t>(ids.size()));
  for (const auto& id : ids) {
    if (id.size() != kEnvelopeIdSize) {
      fail(out, svc::BAD_REQUEST, "envelope ids are 16 bytes");
      send_response(*s, std::move(out));
      return;
    }
    EnvelopeId e{};
    std::memcpy(e.data(), id.data(), kEnvelopeIdSize);
    list.push_back(e);
  }
  // The bucket counts only ids this connection was never given (or already acknowledged): those
  // are what a flood is made of. Ids of envelopes it was pushed are bounded by the pushes, and
  // refusing them would leave them in flight, holding delivery slots, for as long as the
  // connection lives (the client does not repeat an acknowledgement).
  std::size_t unknown = 0;
  {
    std::lock_guard lock(s->mutex);
    for (const auto& id : ids) unknown += s->inflight.contains(id) ? 0 : 1;
  }
  if (unknown > 0) {
    const auto wait =
        ctx_.limits.acks.take(std::to_string(s->account), static_cast<double>(unknown));
    if (wait != 0 && unknown == static_cast<std::size_t>(ids.size())) {
      ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
      fail_retry(out, svc::RATE_LIMITED, "too many acknowledgements by this account", wait);
      send_response(*s, std::move(out));
      return;
    }
    // Refused or not, ids it was never given change nothing below.
  }
  // Only envelopes pushed on this connection (and not acknowledged yet) reach the store: an id
  // it was never given costs no write. (One pushed on an earlier connection is pushed again by
  // the drain, and its acknowledgement then counts.)
  std::vector<std::string> keys;
  std::vector<store::MessageStore::Removing> known;
  {
    std::lock_guard lock(s->mutex);
    std::size_t kept = 0;
    for (std::size_t i = 0; i < list.size(); ++i) {
      std::string key = ids[static_cast<int>(i)];
      auto it = s->inflight.find(key);
      if (it == s->inflight.end()) continue;
      known.push_back(std::move(it->second));
      s->inflight.erase(it);
      s->acked.insert(key);
      list[kept++] = list[i];
      keys.push_back(std::move(key));
    }
    list.resize(kept);
  }
  if (list.empty()) {
    send_response(*s, std::move(out));
    drain(s);
    return;
  }
  // Answered once the deletion is durable; the next pushes need not wait for that.
  ctx_.store.messages().remove_async(
      s->account, s->device, std::move(list),
      [this, s, keys = std::move(keys),
       out = std::move(out)](tl::expected<std::size_t, store::Error> removed) mutable {
        {
          std::lock_guard lock(s->mutex);
          for (const auto& key : keys) s->acked.erase(key);
        }
        if (!removed) {
          fail(out, code_of(removed.error()), "store failure");
        } else {
          ctx_.metrics.messages_acked.fetch_add(*removed, std::memory_order_relaxed);
          ctx_.metrics.queue_depth.fetch_sub(static_cast<std::int64_t>(*removed),
                                             std::memory_order_relaxed);
          ctx_.update_stored_bytes_gauge();
        }
        send_response(*s, std::move(out));
      },
      std::move(known));
  drain(s);
}

void DeliveryService::maintenance() {
  auto expired = ctx_.store.messages().expire(ctx_.now_ms() / 1000);
  if (expired && *expired > 0) {
    ctx_.metrics.queue_depth.fetch_sub(static_cast<std::int64_t>(*expired),
                                       std::memory_order_relaxed);
    spdlog::info("event=expire envelopes={}", *expired);
  }
  ctx_.update_stored_bytes_gauge();
}

}  // namespace sotto::server
