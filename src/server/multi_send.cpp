#include "server/multi_send.h"

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <unordered_set>

#include "server/limits.h"
#include "server/server.h"
#include "service.pb.h"

namespace sotto::server {

namespace svc = sotto::wire::service;

namespace {

// The one type a shared content may have: a Sender Key message, the only ciphertext every member
// of a group can read (service.proto Envelope.type).
constexpr std::uint32_t kSenderKeyMessageType = 4;

tl::unexpected<MultiSendRefusal> refuse(svc::Code code, std::string why) {
  return tl::unexpected(MultiSendRefusal{static_cast<int>(code), std::move(why)});
}

}  // namespace

Bytes send_dedup_key(const std::string& client_message_id, store::AccountId sender) {
  // The client's message id first: its leading time places the row (store.h).
  Bytes dedup(client_message_id.size() + 8);
  std::memcpy(dedup.data(), client_message_id.data(), client_message_id.size());
  for (std::size_t i = 0; i < 8; ++i)
    dedup[client_message_id.size() + i] =
        static_cast<std::uint8_t>(static_cast<std::uint64_t>(sender) >> (8 * i));
  return dedup;
}

ShapeProblem check_multi_send_shape(const svc::MultiSendRequest& req, const ServerConfig& config) {
  if (req.client_message_id().size() != kClientMessageIdSize)
    return {"client message id must be 16 bytes"};
  if (req.recipients_size() == 0 ||
      static_cast<std::size_t>(req.recipients_size()) > kMaxMultiSendRecipients)
    return {"a multi-send has 1 to " + std::to_string(kMaxMultiSendRecipients) + " recipients"};
  std::size_t devices = 0;
  bool uses_shared = false;
  for (const auto& r : req.recipients()) {
    if (r.devices_size() == 0 ||
        static_cast<std::size_t>(r.devices_size()) > kMaxMultiSendDevicesPerRecipient)
      return {"a multi-send lists 1 to " + std::to_string(kMaxMultiSendDevicesPerRecipient) +
              " devices per recipient"};
    devices += static_cast<std::size_t>(r.devices_size());
    for (const auto& d : r.devices()) {
      if (d.content().empty()) {
        uses_shared = true;
      } else if (d.content().size() > config.max_message_bytes) {
        return {"a device's content is above the size limit", true};
      }
    }
  }
  if (devices > kMaxMultiSendDevices)
    return {"a multi-send lists at most " + std::to_string(kMaxMultiSendDevices) + " devices"};
  if (req.shared_content().size() > config.max_message_bytes)
    return {"shared content above the size limit", true};
  if (uses_shared) {
    if (req.shared_content().empty())
      return {"a device without content of its own needs the shared content"};
    if (req.shared_type() != kSenderKeyMessageType)
      return {"shared content must be a Sender Key message (type 4)"};
  }
  return {};
}

MultiSendCost multi_send_cost(const svc::MultiSendRequest& req) {
  MultiSendCost cost;
  std::size_t envelopes = 0;
  for (const auto& r : req.recipients()) {
    for (const auto& d : r.devices()) {
      ++envelopes;
      cost.bytes += d.content().empty() ? req.shared_content().size() : d.content().size();
    }
  }
  cost.send_tokens =
      static_cast<std::uint32_t>((envelopes + kEnvelopesPerSendToken - 1) / kEnvelopesPerSendToken);
  return cost;
}

tl::expected<MultiSendPlan, MultiSendRefusal> plan_multi_send(
    const svc::MultiSendRequest& req, const MultiSendSender& sender, store::ServerStore& store,
    const ServerConfig& config, std::uint64_t now_ms,
    const std::function<store::EnvelopeId()>& next_id, svc::Response& out) {
  // Every recipient looked up first: the unknown ones are reported together.
  std::vector<store::AccountRecord> accounts;
  accounts.reserve(static_cast<std::size_t>(req.recipients_size()));
  std::unordered_set<std::string> seen;
  seen.reserve(static_cast<std::size_t>(req.recipients_size()));
  std::vector<std::string> unknown;
  for (const auto& r : req.recipients()) {
    auto name = normalize_username(r.username());
    if (!name) return refuse(svc::BAD_REQUEST, "invalid recipient");
    if (!seen.insert(*name).second) return refuse(svc::BAD_REQUEST, "a recipient listed twice");
    auto account = name == sender.username ? store.accounts().find_account(sender.account)
                                           : store.accounts().find_account(*name);
    if (!account) {
      if (account.error() != store::Error::not_found) return refuse(svc::INTERNAL, "store failure");
      unknown.push_back(r.username());
      accounts.emplace_back();
      continue;
    }
    accounts.push_back(std::move(*account));
  }
  if (!unknown.empty()) {
    auto* body = out.mutable_multi_send();
    for (auto& u : unknown) body->add_unknown_users(std::move(u));
    return refuse(svc::NOT_FOUND, "no such user");
  }

  // Device lists, as a SendRequest's: every device of each recipient (our own account: every
  // other device) unless the recipient is a subset, none that does not exist, none re-installed.
  const auto shared_body =
      std::make_shared<const Bytes>(req.shared_content().begin(), req.shared_content().end());
  const std::uint64_t expires = now_ms / 1000 + config.message_ttl_days * 86400;
  MultiSendPlan plan;
  bool mismatched = false;
  bool uses_shared = false;
  std::vector<bool> own_content;  // per envelope, to drop blocked recipients' bytes below
  std::vector<std::size_t> recipient_of;
  for (int i = 0; i < req.recipients_size(); ++i) {
    const auto& r = req.recipients(i);
    const store::AccountRecord& account = accounts[static_cast<std::size_t>(i)];
    std::map<std::uint32_t, std::uint32_t> devices;  // id -> registration id
    for (const auto& d : account.devices) {
      if (account.id == sender.account && d.id == sender.device) continue;
      devices[d.id] = d.registration_id;
    }
    svc::DeviceMismatch mismatch;
    std::set<std::uint32_t> given;
    for (const auto& d : r.devices()) {
      if (!given.insert(d.device_id()).second)
        return refuse(svc::BAD_REQUEST, "a device listed twice for one recipient");
      auto it = devices.find(d.device_id());
      if (it == devices.end()) {
        mismatch.add_extra(d.device_id());
        continue;
      }
      if (it->second != d.registration_id()) mismatch.add_stale(d.device_id());
      if (mismatched || mismatch.stale_size() > 0) continue;  // nothing is stored anyway
      store::QueuedEnvelope env;
      env.id = next_id();
      env.account = account.id;
      env.device = d.device_id();
      env.source = sender.username;
      env.source_device = sender.device;
      if (d.content().empty()) {
        env.type = req.shared_type();
        env.body = shared_body;
        uses_shared = true;
        own_content.push_back(false);
      } else {
        env.type = d.type();
        env.content.assign(d.content().begin(), d.content().end());
        plan.reserve_bytes += env.content.size();
        own_content.push_back(true);
      }
      env.client_timestamp = req.timestamp();
      env.server_timestamp = now_ms;
      env.expires_at = expires;
      env.source_account = sender.account;
      plan.envelopes.push_back(std::move(env));
      recipient_of.push_back(static_cast<std::size_t>(i));
    }
    if (!r.device_subset()) {
      for (const auto& [id, reg] : devices) {
        (void)reg;
        if (!given.contains(id)) mismatch.add_missing(id);
      }
    }
    if (mismatch.missing_size() || mismatch.extra_size() || mismatch.stale_size()) {
      mismatched = true;
      mismatch.set_username(account.username);
      *out.mutable_multi_send()->add_mismatch() = std::move(mismatch);
    }
  }
  if (mismatched) return refuse(svc::STALE_DEVICES, "device list out of date");
  if (uses_shared) plan.reserve_bytes += shared_body->size();

  // Blocks (service.proto BlockRequest): a recipient who blocked the sender gets nothing, and the
  // sender is answered as if it had.
  std::vector<bool> blocked(static_cast<std::size_t>(req.recipients_size()), false);
  bool any_blocked = false;
  for (std::size_t i = 0; i < accounts.size(); ++i) {
    if (accounts[i].id == sender.account) continue;
    auto b = store.blocks().is_blocked(accounts[i].id, sender.account);
    if (!b) return refuse(svc::INTERNAL, "store failure");
    blocked[i] = *b;
    any_blocked = any_blocked || *b;
  }
  plan.stored_bytes = plan.reserve_bytes;
  if (any_blocked) {
    std::vector<store::QueuedEnvelope> kept;
    kept.reserve(plan.envelopes.size());
    bool keeps_shared = false;
    std::uint64_t bytes = 0;
    for (std::size_t e = 0; e < plan.envelopes.size(); ++e) {
      if (blocked[recipient_of[e]]) continue;
      if (own_content[e]) {
        bytes += plan.envelopes[e].content.size();
      } else {
        keeps_shared = true;
      }
      kept.push_back(std::move(plan.envelopes[e]));
    }
    if (keeps_shared) bytes += shared_body->size();
    plan.envelopes = std::move(kept);
    plan.stored_bytes = bytes;
  }
  return plan;
}

}  // namespace sotto::server
