#include "server/keys.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

#include "crypto/signature.h"
#include "server/kt.h"
#include "server/limits.h"
#include "server/router.h"

namespace sotto::server {

namespace svc = sotto::wire::service;
using store::AccountId;
using store::DeviceId;

bool is_public_key(const std::string& k) {
  return k.size() == 33 && static_cast<std::uint8_t>(k[0]) == 0x05;
}

// The identity key's curve25519 signature over a serialized public key (prekeys) or a context
// string (device binding).
bool identity_signed(const std::string& identity_key, ByteView message, const std::string& sig) {
  if (!is_public_key(identity_key) || sig.size() != crypto::kCurve25519SignatureSize) return false;
  std::array<std::uint8_t, 32> pub{};
  std::memcpy(pub.data(), identity_key.data() + 1, 32);
  return crypto::curve25519_verify(pub, message,
                                   std::span<const std::uint8_t, 64>(
                                       reinterpret_cast<const std::uint8_t*>(sig.data()), 64))
      .has_value();
}

// Validates the keys of an upload or a new device. Returns an error text or empty.
std::string check_keys(const svc::DeviceKeys& keys, const std::string& identity_key,
                       bool require_signed) {
  if (keys.has_signed_pre_key()) {
    const auto& spk = keys.signed_pre_key();
    if (!is_public_key(spk.public_key())) return "signed prekey must be 33 bytes starting 0x05";
    if (spk.id() == 0 || spk.id() > 0xFFFFFF) return "signed prekey id out of range";
    if (!identity_signed(identity_key, view(spk.public_key()), spk.signature())) {
      return "signed prekey signature does not verify";
    }
  } else if (require_signed) {
    return "signed prekey required";
  }
  if (static_cast<std::size_t>(keys.pre_keys_size()) > kMaxPreKeysPerUpload)
    return "too many prekeys";
  std::set<std::uint32_t> ids;
  for (const auto& pk : keys.pre_keys()) {
    if (!is_public_key(pk.public_key())) return "prekey must be 33 bytes starting 0x05";
    if (pk.id() == 0 || pk.id() > 0xFFFFFF) return "prekey id out of range";
    if (!ids.insert(pk.id()).second) return "duplicate prekey id";
  }
  return {};
}

store::SignedPreKeyRecord signed_record(const svc::SignedPreKey& k) {
  return {k.id(), Bytes(k.public_key().begin(), k.public_key().end()),
          Bytes(k.signature().begin(), k.signature().end())};
}

std::vector<store::OneTimePreKeyRecord> pre_key_records(const svc::DeviceKeys& keys) {
  std::vector<store::OneTimePreKeyRecord> out;
  for (const auto& pk : keys.pre_keys()) {
    out.push_back({pk.id(), Bytes(pk.public_key().begin(), pk.public_key().end())});
  }
  return out;
}

KeysService::KeysService(Context& ctx) : ctx_(ctx) {}

void KeysService::add_routes(Router& router) {
  router.route(svc::Request::kUploadKeys, Router::Access::logged_in, [this](Call& c) {
    on_upload_keys(c.session, c.request, c.out);
    return Outcome::reply;
  });
  router.route(svc::Request::kKeyCount, Router::Access::logged_in, [this](Call& c) {
    on_key_count(c.session, c.request, c.out);
    return Outcome::reply;
  });
  // Bundles and identity keys share one bucket per account.
  router.route(svc::Request::kFetchBundles, Router::Access::logged_in,
               [this](Call& c) {
                 on_fetch_bundles(c.session, c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_account(ctx_.limits.bundle_fetches, "",
                                         "too many bundle fetches by this account")});
  router.route(svc::Request::kIdentityKey, Router::Access::logged_in,
               [this](Call& c) {
                 on_identity_key(c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_account(ctx_.limits.bundle_fetches, "",
                                         "too many key fetches by this account")});
  router.route(svc::Request::kKtKeys, Router::Access::open, [this](Call& c) {
    on_kt_keys(c.out);
    return Outcome::reply;
  });
  // Auditing is open (auditors have no account), one bucket per source address for both kinds.
  router.route(svc::Request::kKtAudit, Router::Access::open,
               [this](Call& c) {
                 on_kt_audit(c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_address(ctx_.limits.kt_audits, "",
                                         "too many audit requests from this address")});
  router.route(svc::Request::kKtCosign, Router::Access::open,
               [this](Call& c) {
                 on_kt_cosign(c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_address(ctx_.limits.kt_audits, "",
                                         "too many audit requests from this address")});
  // Monitoring shares the bundle bucket: one per connect and a few a day.
  router.route(svc::Request::kKtMonitor, Router::Access::logged_in,
               [this](Call& c) {
                 on_kt_monitor(c.session, c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_account(ctx_.limits.bundle_fetches, "",
                                         "too many monitoring requests by this account")});
  // Gossip checks: one per tree head a client sees in a message that differs from its own.
  router.route(svc::Request::kKtConsistency, Router::Access::logged_in,
               [this](Call& c) {
                 on_kt_consistency(c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_account(ctx_.limits.bundle_fetches, "",
                                         "too many tree head checks by this account")});
}

void KeysService::on_kt_keys(svc::Response& out) {
  if (ctx_.kt == nullptr) {
    fail(out, svc::NOT_FOUND, "this server keeps no transparency log");
    return;
  }
  const auto keys = ctx_.kt->public_keys();
  auto* r = out.mutable_kt_keys();
  r->set_signing_key(std::string(keys.signing_key.begin(), keys.signing_key.end()));
  r->set_vrf_key(std::string(keys.vrf_key.begin(), keys.vrf_key.end()));
}

void KeysService::on_kt_monitor(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (ctx_.kt == nullptr) {
    fail(out, svc::NOT_FOUND, "this server keeps no transparency log");
    return;
  }
  std::string username;
  {
    std::lock_guard lock(s->mutex);
    username = s->username;
  }
  auto p = ctx_.kt->monitor(username, r.kt_monitor().kt_known_size());
  if (!p) {
    fail(out, p.error() == transparency::Error::invalid_argument ? svc::BAD_REQUEST : svc::INTERNAL,
         p.error() == transparency::Error::invalid_argument
             ? "kt_known_size is beyond the transparency log"
             : "transparency log failure");
    return;
  }
  auto* m = out.mutable_kt_monitor();
  m->set_tree_head(std::string(p->tree_head.begin(), p->tree_head.end()));
  m->set_consistency(std::string(p->consistency.begin(), p->consistency.end()));
  m->set_monitor(std::string(p->proof.begin(), p->proof.end()));
  for (const auto& c : p->cosignatures) fill_kt_cosignature(c, *m->add_cosignatures());
}

void KeysService::on_kt_audit(svc::Request& r, svc::Response& out) {
  if (ctx_.kt == nullptr) {
    fail(out, svc::NOT_FOUND, "this server keeps no transparency log");
    return;
  }
  const auto& req = r.kt_audit();
  const std::uint32_t count = std::min(req.count(), kMaxAuditRecordsPerAnswer);
  if (count == 0) {
    fail(out, svc::BAD_REQUEST, "count must be at least 1");
    return;
  }
  auto audit = ctx_.kt->audit(req.start(), count);
  if (!audit) {
    fail(out, svc::INTERNAL, "transparency log failure");
    return;
  }
  auto* a = out.mutable_kt_audit();
  a->set_tree_head(std::string(audit->tree_head.begin(), audit->tree_head.end()));
  for (const Bytes& record : audit->records)
    a->add_records(std::string(record.begin(), record.end()));
}

void KeysService::on_kt_cosign(svc::Request& r, svc::Response& out) {
  if (ctx_.kt == nullptr) {
    fail(out, svc::NOT_FOUND, "this server keeps no transparency log");
    return;
  }
  const auto& req = r.kt_cosign();
  transparency::Cosignature c;
  auto head = transparency::decode_signed_tree_head(view(req.tree_head()));
  if (!head || req.auditor_key().size() != c.auditor_key.size() ||
      req.signature().size() != c.signature.size()) {
    fail(out, svc::BAD_REQUEST, "malformed co-signature");
    return;
  }
  std::memcpy(c.auditor_key.data(), req.auditor_key().data(), c.auditor_key.size());
  std::memcpy(c.signature.data(), req.signature().data(), c.signature.size());
  c.head = *head;
  c.time_ms = req.time_ms();
  auto added = ctx_.kt->add_cosignature(c);
  if (added) return;
  using R = KeyTransparency::CosignRefusal;
  switch (added.error()) {
    case R::unknown_auditor:
      fail(out, svc::FORBIDDEN, "this server does not keep co-signatures of that auditor");
      return;
    case R::bad_head:
      fail(out, svc::BAD_REQUEST, "not a tree head this log signed");
      return;
    case R::bad_signature:
      fail(out, svc::BAD_REQUEST, "the co-signature does not verify");
      return;
    case R::too_new:
      fail(out, svc::BAD_REQUEST, "the co-signature's time is ahead of the server's clock");
      return;
    case R::storage:
      fail(out, svc::INTERNAL, "store failure");
      return;
  }
}

void KeysService::on_kt_consistency(svc::Request& r, svc::Response& out) {
  if (ctx_.kt == nullptr) {
    fail(out, svc::NOT_FOUND, "this server keeps no transparency log");
    return;
  }
  const std::uint64_t old_size = r.kt_consistency().old_size();
  const std::uint64_t new_size = r.kt_consistency().new_size();
  auto& log = ctx_.kt->log();
  if (!ctx_.kt->refresh()) {
    fail(out, svc::INTERNAL, "transparency log failure");
    return;
  }
  // Every head ever signed has at least one entry, and the log never shrinks: a size beyond it
  // was never signed by this log.
  if (old_size == 0 || old_size > new_size || new_size > log.head().head.size) {
    fail(out, svc::BAD_REQUEST, "the sizes are not 0 < old_size <= new_size <= the log's size");
    return;
  }
  auto old_head = log.head_at(old_size);
  auto new_head = log.head_at(new_size);
  auto proof = log.consistency(old_size, new_size);
  if (!old_head || !new_head || !proof) {
    fail(out, svc::INTERNAL, "transparency log failure");
    return;
  }
  const auto str_of = [](const Bytes& b) { return std::string(b.begin(), b.end()); };
  auto* m = out.mutable_kt_consistency();
  m->set_old_head(str_of(transparency::encode_signed_tree_head(*old_head)));
  m->set_new_head(str_of(transparency::encode_signed_tree_head(*new_head)));
  if (old_size != new_size)
    m->set_consistency(str_of(transparency::encode_consistency_proof(*proof)));
}

void KeysService::after_login(const SessionPtr& s) {
  auto count = ctx_.store.keys().count_pre_keys(s->account, s->device);
  if (count && *count < kPreKeysLowThreshold) {
    svc::Push p;
    p.mutable_keys_low()->set_count(*count);
    send_push(*s, std::move(p));
  }
}

void KeysService::on_upload_keys(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  auto account = ctx_.store.accounts().find_account(s->account);
  if (!account) {
    fail(out, code_of(account.error()), "account not found");
    return;
  }
  const auto& keys = r.upload_keys().keys();
  if (auto e = check_keys(keys, str(account->identity_key), false); !e.empty()) {
    fail(out, svc::BAD_REQUEST, e);
    return;
  }
  if (keys.has_signed_pre_key()) {
    if (auto ok = ctx_.store.keys().set_signed_pre_key(s->account, s->device,
                                                       signed_record(keys.signed_pre_key()));
        !ok) {
      fail(out, code_of(ok.error()), "store failure");
      return;
    }
  }
  if (r.upload_keys().replace_pre_keys()) {
    if (auto ok = ctx_.store.keys().replace_pre_keys(s->account, s->device, pre_key_records(keys));
        !ok) {
      fail(out, code_of(ok.error()), "store failure");
      return;
    }
  } else if (keys.pre_keys_size() > 0) {
    if (auto ok = ctx_.store.keys().add_pre_keys(s->account, s->device, pre_key_records(keys));
        !ok) {
      fail(out, code_of(ok.error()), "store failure");
      return;
    }
  }
}

void KeysService::on_key_count(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (r.key_count().list_ids()) {
    // The ids the device's keys still have here, as ranges (ids are handed out oldest first and
    // uploaded in runs, so a few ranges describe them): what the client may not prune yet.
    auto ids = ctx_.store.keys().pre_key_ids(s->account, s->device);
    if (!ids) {
      fail(out, code_of(ids.error()), "store failure");
      return;
    }
    auto* k = out.mutable_key_count();
    k->set_count(static_cast<std::uint32_t>(ids->size()));
    k->set_message_ttl_seconds(ctx_.config.message_ttl_days * 86400);
    svc::PreKeyIdRange* range = nullptr;
    for (const std::uint32_t id : *ids) {
      if (range != nullptr && range->last() + 1 == id) {
        range->set_last(id);
      } else {
        range = k->add_held();
        range->set_first(id);
        range->set_last(id);
      }
    }
    return;
  }
  auto count = ctx_.store.keys().count_pre_keys(s->account, s->device);
  if (!count) {
    fail(out, code_of(count.error()), "store failure");
    return;
  }
  out.mutable_key_count()->set_count(*count);
}

void KeysService::on_fetch_bundles(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  const auto& req = r.fetch_bundles();
  auto username = normalize_username(req.username());
  auto account = username ? ctx_.store.accounts().find_account(*username)
                          : tl::expected<store::AccountRecord, store::Error>(
                                tl::unexpected(store::Error::not_found));
  if (!account) {
    fail(out, svc::NOT_FOUND, "no such user");
    return;
  }
  // A blocked requester gets bundles as anyone else, only without one-time prekeys: what it
  // would see from a busy device, so the answer does not tell it it is blocked.
  bool blocked = false;
  if (account->id != s->account) {
    auto b = ctx_.store.blocks().is_blocked(account->id, s->account);
    blocked = b && *b;
  }
  std::set<std::uint32_t> wanted(req.device_ids().begin(), req.device_ids().end());
  for (const auto& d : account->devices) {
    if (!wanted.empty() && !wanted.contains(d.id)) continue;
    auto spk = ctx_.store.keys().signed_pre_key(account->id, d.id);
    if (!spk) continue;  // a device without a signed prekey cannot be messaged yet
    auto* b = out.mutable_fetch_bundles()->add_bundles();
    b->set_registration_id(d.registration_id);
    b->set_device_id(d.id);
    b->set_signed_pre_key_id(spk->id);
    b->set_signed_pre_key(str(spk->public_key));
    b->set_signed_pre_key_signature(str(spk->signature));
    b->set_identity_key(str(account->identity_key));
    // One-time prekeys go to other accounts at a bounded rate per target device (and never to
    // an account the target blocks); beyond it the bundle has none, which X3DH allows. The
    // account's own devices are not counted.
    if (account->id != s->account &&
        (blocked || !ctx_.limits.pre_key_handouts.allow(device_key(account->id, d.id)))) {
      continue;
    }
    auto otk = ctx_.store.keys().take_pre_key(account->id, d.id);
    if (otk && otk->has_value()) {
      b->set_pre_key_id((*otk)->id);
      b->set_pre_key(str((*otk)->public_key));
    }
    notify_keys_low(account->id, d.id);
  }
  if (out.fetch_bundles().bundles_size() == 0) {
    fail(out, svc::NOT_FOUND, "no such device");
    return;
  }
  if (ctx_.kt != nullptr) {
    (void)fill_kt_proof(*ctx_.kt, account->username, req.kt_known_size(),
                        *out.mutable_fetch_bundles()->mutable_kt(), out);
  }
}

void KeysService::notify_keys_low(AccountId account, DeviceId device) {
  auto count = ctx_.store.keys().count_pre_keys(account, device);
  if (!count || *count >= kPreKeysLowThreshold) return;
  SessionPtr target = ctx_.registry.online(account, device);
  if (!target) return;
  svc::Push p;
  p.mutable_keys_low()->set_count(*count);
  send_push(*target, std::move(p));
}

void KeysService::on_identity_key(svc::Request& r, svc::Response& out) {
  auto username = normalize_username(r.identity_key().username());
  auto account = username ? ctx_.store.accounts().find_account(*username)
                          : tl::expected<store::AccountRecord, store::Error>(
                                tl::unexpected(store::Error::not_found));
  if (!account) {
    fail(out, account.error() == store::Error::not_found ? svc::NOT_FOUND : svc::INTERNAL,
         account.error() == store::Error::not_found ? "no such user" : "store failure");
    return;
  }
  out.mutable_identity_key()->set_identity_key(str(account->identity_key));
  if (ctx_.kt != nullptr) {
    (void)fill_kt_proof(*ctx_.kt, account->username, r.identity_key().kt_known_size(),
                        *out.mutable_identity_key()->mutable_kt(), out);
  }
}

}  // namespace sotto::server
