#include "client/kt.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <set>

#include "client/stored_values.h"
#include "client/util.h"
#include "crypto/encoding.h"

namespace sotto::client {

namespace kt = transparency;

namespace {

constexpr std::string_view kUnlogged = "unlogged_key";
constexpr std::string_view kInconsistent = "log_inconsistent";
constexpr std::string_view kSplitView = "split_view";
constexpr std::size_t kMaxGossipRemembered = 1024;

Bytes bytes_of(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

std::string format_time_ms(std::uint64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char out[32];
  std::strftime(out, sizeof out, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return out;
}

}  // namespace

Error security_alert_error(std::string_view kind, const std::string& user,
                           const std::string& detail) {
  return make_error(ErrorCode::security_alert,
                    "security alert (" + std::string(kind) + ") for " + user + ": " + detail);
}

Result<std::optional<KtClient::Pinned>> KtClient::pinned() {
  std::lock_guard lock(mu_);
  if (auto ok = load_locked(); !ok) return tl::unexpected(ok.error());
  if (!tracker_) return std::optional<Pinned>();
  return std::optional<Pinned>(Pinned{tracker_->keys(), tracker_->current()});
}

std::uint64_t KtClient::known_size() {
  std::lock_guard lock(mu_);
  if (!load_locked()) return 0;
  if (!tracker_ || !tracker_->current()) return 0;
  return tracker_->current()->head.size;
}

Result<void> KtClient::load_locked() {
  if (loaded_) return {};
  auto required = store_.load_value(kKtRequireAuditorValue);
  if (!required) return tl::unexpected(make_error(ErrorCode::store, "cannot read the auditor"));
  required_.reset();
  if (*required) {
    const ByteView r = (*required)->view();
    // A damaged requirement requires what cannot be met rather than nothing.
    AuditorRequirement req;
    if (r.size() == 40) {
      std::copy_n(r.begin(), 32, req.key.begin());
      for (std::size_t i = 32; i < 40; ++i) req.max_age_ms = req.max_age_ms << 8 | r[i];
    }
    required_ = req;
  }
  auto keys = store_.load_value(kKtKeysValue);
  if (!keys) return tl::unexpected(make_error(ErrorCode::store, "cannot read the log's keys"));
  if (*keys) {
    const ByteView k = (*keys)->view();
    if (k.size() != 64) {
      return tl::unexpected(make_error(ErrorCode::store, "the pinned log keys are damaged"));
    }
    kt::LogPublicKeys pinned;
    std::copy_n(k.begin(), 32, pinned.signing_key.begin());
    std::copy_n(k.begin() + 32, 32, pinned.vrf_key.begin());
    tracker_.emplace(pinned);
    auto head = store_.load_value(kKtHeadValue);
    if (!head) return tl::unexpected(make_error(ErrorCode::store, "cannot read the tree head"));
    if (*head) {
      // Our own copy: a head that does not decode or verify is as good as none (the next
      // lookup takes the server's on trust again), never a reason to stop.
      auto sth = kt::decode_signed_tree_head((*head)->view());
      if (sth) (void)tracker_->advance(*sth, {});
    }
    auto versions = store_.load_value(kKtVersionsValue);
    if (!versions) return tl::unexpected(make_error(ErrorCode::store, "cannot read versions"));
    if (*versions) versions_ = decode_versions((*versions)->view());
  }
  loaded_ = true;
  return {};
}

Result<void> KtClient::save_head_locked() {
  const Bytes encoded = kt::encode_signed_tree_head(*tracker_->current());
  if (!store_.save_value(kKtHeadValue, encoded)) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot save the tree head"));
  }
  std::lock_guard lock(gossip_mu_);
  gossip_ = encoded;
  return {};
}

Bytes KtClient::gossip_head() {
  std::lock_guard lock(gossip_mu_);
  if (!gossip_) {
    // The head saved by an earlier run; one that does not decode is not sent.
    auto stored = store_.load_value(kKtHeadValue);
    if (!stored) return {};  // the store failed: try again with the next message
    gossip_.emplace();
    if (*stored && kt::decode_signed_tree_head((*stored)->view())) {
      const ByteView v = (*stored)->view();
      gossip_->assign(v.begin(), v.end());
    }
  }
  return *gossip_;
}

Result<std::vector<Event>> KtClient::check_gossip(const Ask& ask, const std::string& sender,
                                                  ByteView head) {
  std::lock_guard lock(mu_);
  std::vector<Event> alerts;
  if (auto ok = load_locked(); !ok) return tl::unexpected(ok.error());
  if (!tracker_ || !tracker_->current()) return alerts;
  auto theirs = kt::decode_signed_tree_head(head);
  if (!theirs) return alerts;
  const Bytes key(head.begin(), head.begin() + kt::kTreeHeadSize);  // the head, not its signature
  if (consistent_.contains(key)) return alerts;
  if (!kt::verify_tree_head(*theirs, tracker_->keys().signing_key)) return alerts;
  const kt::SignedTreeHead ours = *tracker_->current();
  const auto describe = [](const kt::TreeHead& h) {
    return "size " + std::to_string(h.size) + ", " + format_time_ms(h.timestamp_ms);
  };
  const auto split = [&](const std::string& why) {
    if (reported_.size() >= kMaxGossipRemembered) reported_.clear();
    if (reported_.emplace(sender, key).second) {
      Event e;
      e.kind = Event::Kind::security_alert;
      e.alert = std::string(kSplitView);
      e.user = sender;
      e.detail = sender + "'s device was shown a key transparency log (tree head of " +
                 describe(theirs->head) + ") that is not the one this device was shown (" +
                 describe(ours.head) + "): " + why +
                 ". The server is showing different users different logs, so the keys it hands "
                 "out cannot be trusted; compare safety numbers in person";
      alerts.push_back(std::move(e));
    }
    return alerts;
  };
  const auto remember = [&] {
    if (consistent_.size() >= kMaxGossipRemembered) consistent_.clear();
    consistent_.insert(key);
  };
  if (theirs->head.size == ours.head.size) {
    if (theirs->head != ours.head) return split("two different heads of one size");
    remember();
    return alerts;
  }
  const bool older = theirs->head.size < ours.head.size;
  // An honest log's heads never go back in time as it grows.
  if (older ? theirs->head.timestamp_ms > ours.head.timestamp_ms
            : theirs->head.timestamp_ms < ours.head.timestamp_ms) {
    return split("the smaller head is the later one");
  }
  const kt::TreeHead& from = older ? theirs->head : ours.head;
  const kt::TreeHead& to = older ? ours.head : theirs->head;
  svc::Request request;
  request.mutable_kt_consistency()->set_old_size(from.size);
  request.mutable_kt_consistency()->set_new_size(to.size);
  auto response = ask(std::move(request));
  if (!response) return tl::unexpected(response.error());
  const auto code = response->status().code();
  if (code == svc::BAD_REQUEST || code == svc::NOT_FOUND) {
    return split("the server denies having signed a log of " + std::to_string(to.size) +
                 " entries");
  }
  if (code != svc::OK) return tl::unexpected(status_error(*response));
  const auto& r = response->kt_consistency();
  auto old_head = kt::decode_signed_tree_head(as_bytes(r.old_head()));
  auto new_head = kt::decode_signed_tree_head(as_bytes(r.new_head()));
  auto proof = kt::decode_consistency_proof(as_bytes(r.consistency()));
  if (!old_head || !new_head || !proof) return split("the server's answer is malformed");
  if (old_head->head != from || new_head->head != to) {
    return split("the server now signs another head of the same size");
  }
  if (!kt::verify_consistency_proof(from, to, *proof)) {
    return split("the server cannot prove that one extends the other");
  }
  if (!older) {
    // A newer head, proven to extend ours: it becomes ours, so the lookups after this one ask
    // from it.
    if (auto advanced = tracker_->advance(*theirs, *proof); !advanced) {
      return split("the newer head does not extend this device's");
    }
    if (auto saved = save_head_locked(); !saved) return tl::unexpected(saved.error());
  }
  remember();
  return alerts;
}

Result<void> KtClient::set_required_auditor(const std::optional<AuditorRequirement>& r) {
  std::lock_guard lock(mu_);
  if (auto ok = load_locked(); !ok) return tl::unexpected(ok.error());
  if (!r) {
    if (!store_.remove_value(kKtRequireAuditorValue))
      return tl::unexpected(make_error(ErrorCode::store, "cannot save the auditor"));
    required_.reset();
    return {};
  }
  Bytes value(r->key.begin(), r->key.end());
  for (int shift = 56; shift >= 0; shift -= 8)
    value.push_back(static_cast<std::uint8_t>(r->max_age_ms >> shift));
  if (!store_.save_value(kKtRequireAuditorValue, value))
    return tl::unexpected(make_error(ErrorCode::store, "cannot save the auditor"));
  required_ = r;
  return {};
}

Result<std::optional<AuditorRequirement>> KtClient::required_auditor() {
  std::lock_guard lock(mu_);
  if (auto ok = load_locked(); !ok) return tl::unexpected(ok.error());
  return required_;
}

void KtClient::set_clock(std::function<std::uint64_t()> now_ms) {
  std::lock_guard lock(mu_);
  now_ms_ = std::move(now_ms);
}

std::optional<std::string> KtClient::cosignature_problem(
    const AuditorRequirement& required, const kt::LogPublicKeys& log_keys,
    const kt::SignedTreeHead& head,
    const google::protobuf::RepeatedPtrField<svc::KtCosignature>& cosignatures,
    std::uint64_t now_ms) {
  const std::string auditor = "auditor " + crypto::to_hex(required.key).substr(0, 16);
  std::optional<std::string> problem;
  for (const svc::KtCosignature& c : cosignatures) {
    const ByteView key = as_bytes(c.auditor_key());
    if (key.size() != required.key.size() ||
        !std::equal(key.begin(), key.end(), required.key.begin())) {
      continue;
    }
    auto cosigned = kt::decode_signed_tree_head(as_bytes(c.tree_head()));
    if (!cosigned || !kt::verify_tree_head(*cosigned, log_keys.signing_key) ||
        !kt::verify_cosignature_at(cosigned->head, c.time_ms(), key, as_bytes(c.signature()))) {
      problem = "the " + auditor + "'s co-signature does not verify";
      continue;
    }
    const kt::TreeHead& h = cosigned->head;
    bool consistent = false;
    if (h.size == head.head.size) {
      consistent = h == head.head && c.consistency().empty();
    } else if (h.size < head.head.size) {
      auto proof = kt::decode_consistency_proof(as_bytes(c.consistency()));
      consistent = proof && kt::verify_consistency_proof(h, head.head, *proof).has_value();
    }
    if (!consistent) {
      problem = "the log is not consistent with the head the " + auditor + " co-signed";
      continue;
    }
    const std::uint64_t age = now_ms > c.time_ms() ? now_ms - c.time_ms() : 0;
    if (age > required.max_age_ms) {
      problem = "the " + auditor + "'s newest co-signature is " + std::to_string(age / 1000) +
                " s old, more than the " + std::to_string(required.max_age_ms / 1000) +
                " s this device accepts";
      continue;
    }
    return std::nullopt;
  }
  if (problem) return problem;
  return "the answer carries no co-signature by the required " + auditor;
}

std::optional<std::string> KtClient::unmet_requirement_locked(
    const kt::SignedTreeHead& head,
    const google::protobuf::RepeatedPtrField<svc::KtCosignature>& cosignatures) {
  if (!required_) return std::nullopt;
  const std::uint64_t now =
      now_ms_ ? now_ms_()
              : static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
  auto problem = cosignature_problem(*required_, tracker_->keys(), head, cosignatures, now);
  return problem;
}

Result<bool> KtClient::ensure_keys_locked(const ConnectionPtr& c,
                                          std::chrono::milliseconds timeout) {
  if (auto ok = load_locked(); !ok) return tl::unexpected(ok.error());
  if (tracker_) return true;
  if (server_has_no_log_) return false;
  svc::Request request;
  request.mutable_kt_keys();
  auto response = c->call(std::move(request), timeout);
  if (!response) return tl::unexpected(response.error());
  // NOT_FOUND: a server without a log; BAD_REQUEST: one older than the log, which does not know
  // the request. Either way there is nothing to pin yet.
  if (response->status().code() == svc::NOT_FOUND ||
      response->status().code() == svc::BAD_REQUEST) {
    server_has_no_log_ = true;
    return false;
  }
  if (response->status().code() != svc::OK) return tl::unexpected(status_error(*response));
  const auto& r = response->kt_keys();
  if (r.signing_key().size() != 32 || r.vrf_key().size() != 32) {
    return tl::unexpected(make_error(ErrorCode::protocol, "the server's log keys are malformed"));
  }
  Bytes both = bytes_of(r.signing_key());
  both.insert(both.end(), r.vrf_key().begin(), r.vrf_key().end());
  if (!store_.save_value(kKtKeysValue, both)) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot pin the log's keys"));
  }
  kt::LogPublicKeys pinned;
  std::copy_n(both.begin(), 32, pinned.signing_key.begin());
  std::copy_n(both.begin() + 32, 32, pinned.vrf_key.begin());
  tracker_.emplace(pinned);
  return true;
}

Result<std::optional<kt::AccountValue>> KtClient::verify(const ConnectionPtr& c,
                                                         std::chrono::milliseconds timeout,
                                                         const std::string& user,
                                                         const svc::KtProof* proof) {
  std::lock_guard lock(mu_);
  auto pinned = ensure_keys_locked(c, timeout);
  if (!pinned) return tl::unexpected(pinned.error());
  if (!*pinned && required_) {
    return tl::unexpected(security_alert_error(
        kUnlogged, user,
        "the server keeps no key transparency log, so there is no auditor co-signature, which "
        "this device requires; nothing was encrypted to this account's keys"));
  }
  if (!*pinned) return std::nullopt;
  if (proof == nullptr || proof->tree_head().empty()) {
    return tl::unexpected(
        security_alert_error(kUnlogged, user, "the server gave no key transparency proof"));
  }
  auto head = kt::decode_signed_tree_head(as_bytes(proof->tree_head()));
  if (!head) {
    return tl::unexpected(security_alert_error(kUnlogged, user, "the tree head is malformed"));
  }
  kt::ConsistencyProof consistency;
  if (!proof->consistency().empty()) {
    auto decoded = kt::decode_consistency_proof(as_bytes(proof->consistency()));
    if (!decoded) {
      return tl::unexpected(
          security_alert_error(kInconsistent, user, "the consistency proof is malformed"));
    }
    consistency = std::move(*decoded);
  }
  if (auto unmet = unmet_requirement_locked(*head, proof->cosignatures())) {
    return tl::unexpected(security_alert_error(
        kUnlogged, user, *unmet + "; nothing was encrypted to this account's keys"));
  }
  const std::optional<kt::SignedTreeHead> before = tracker_->current();
  if (auto advanced = tracker_->advance(*head, consistency); !advanced) {
    const bool signature = advanced.error() == kt::Error::bad_signature;
    return tl::unexpected(security_alert_error(
        signature ? kUnlogged : kInconsistent, user,
        std::string(signature ? "the tree head is not signed by the pinned log key"
                              : "the server's log is not consistent with the one this device "
                                "saw before (") +
            (signature ? "" : std::string(kt::to_string(advanced.error())) + ")")));
  }
  if (tracker_->current() != before) {
    if (auto saved = save_head_locked(); !saved) return tl::unexpected(saved.error());
  }
  auto search = kt::decode_search_proof(as_bytes(proof->search()));
  if (!search) {
    return tl::unexpected(security_alert_error(kUnlogged, user, "the search proof is malformed"));
  }
  auto found = kt::verify_search(tracker_->keys(), tracker_->current()->head, user, *search);
  if (!found) {
    return tl::unexpected(security_alert_error(
        kUnlogged, user,
        "the search proof does not verify (" + std::string(kt::to_string(found.error())) + ")"));
  }
  if (!*found) {
    return tl::unexpected(
        security_alert_error(kUnlogged, user, "the account is not in the key transparency log"));
  }
  const std::uint32_t version = (*found)->version;
  auto seen = versions_.find(user);
  if (seen != versions_.end() && version < seen->second) {
    return tl::unexpected(security_alert_error(kInconsistent, user,
                                               "the log shows version " + std::to_string(version) +
                                                   " of the account after version " +
                                                   std::to_string(seen->second) + " (a rollback)"));
  }
  if (seen == versions_.end() || version > seen->second) {
    versions_[user] = version;
    if (!store_.save_value(kKtVersionsValue, encode_versions(versions_))) {
      return tl::unexpected(make_error(ErrorCode::store, "cannot save the contact's version"));
    }
  }
  if (values_.size() >= kMaxGossipRemembered) values_.clear();
  values_[user] = (*found)->value;
  return std::move((*found)->value);
}

bool KtClient::logged_device(const std::string& user, std::uint32_t device,
                             std::uint32_t registration_id, ByteView identity_key) {
  std::lock_guard lock(mu_);
  auto it = values_.find(user);
  if (it == values_.end()) return false;
  const kt::AccountValue& v = it->second;
  return identity_key.size() == v.identity_key.size() &&
         std::equal(identity_key.begin(), identity_key.end(), v.identity_key.begin()) &&
         std::any_of(v.devices.begin(), v.devices.end(), [&](const kt::DeviceEntry& d) {
           return d.device_id == device && d.registration_id == registration_id;
         });
}

Result<KtClient::OwnCheck> KtClient::monitor_own(const ConnectionPtr& c,
                                                 std::chrono::milliseconds timeout,
                                                 const std::string& username,
                                                 std::uint32_t self_device, ByteView self_auth_key,
                                                 bool hold_unknown) {
  std::lock_guard lock(mu_);
  OwnCheck out;
  std::vector<Event>& alerts = out.alerts;
  const auto alert = [&](std::string_view kind, std::string detail) {
    Event e;
    e.kind = Event::Kind::security_alert;
    e.alert = std::string(kind);
    e.user = username;
    e.detail = std::move(detail);
    alerts.push_back(std::move(e));
  };
  auto pinned = ensure_keys_locked(c, timeout);
  if (!pinned) return tl::unexpected(pinned.error());
  if (!*pinned) return out;
  svc::Request request;
  request.mutable_kt_monitor()->set_kt_known_size(
      tracker_->current() ? tracker_->current()->head.size : 0);
  auto response = c->call(std::move(request), timeout);
  if (!response) return tl::unexpected(response.error());
  if (response->status().code() != svc::OK) return tl::unexpected(status_error(*response));
  const auto& m = response->kt_monitor();
  auto head = kt::decode_signed_tree_head(as_bytes(m.tree_head()));
  auto consistency = m.consistency().empty()
                         ? tl::expected<kt::ConsistencyProof, kt::Error>(kt::ConsistencyProof{})
                         : kt::decode_consistency_proof(as_bytes(m.consistency()));
  if (!head || !consistency) {
    alert(kInconsistent, "the server's monitoring answer is malformed");
    return out;
  }
  if (auto unmet = unmet_requirement_locked(*head, m.cosignatures())) {
    // Once per head: the next checks of the same head would only repeat it.
    if (unmet_reported_size_ != head->head.size) {
      unmet_reported_size_ = head->head.size;
      alert(kUnlogged, *unmet + "; this device could not check its own account's keys in the log");
    }
    return out;
  }
  const std::optional<kt::SignedTreeHead> before = tracker_->current();
  if (auto advanced = tracker_->advance(*head, *consistency); !advanced) {
    alert(kInconsistent,
          "the server's log is not consistent with the one this device saw before (" +
              std::string(kt::to_string(advanced.error())) + ")");
    return out;
  }
  if (tracker_->current() != before) {
    if (auto saved = save_head_locked(); !saved) return tl::unexpected(saved.error());
  }
  auto proof = kt::decode_monitor_proof(as_bytes(m.monitor()));
  auto versions =
      proof ? kt::verify_monitor(tracker_->keys(), tracker_->current()->head, username, *proof)
            : tl::unexpected(proof.error());
  if (!versions) {
    alert(kInconsistent, "the log's history of this account does not verify (" +
                             std::string(kt::to_string(versions.error())) + ")");
    return out;
  }
  if (versions->empty()) {
    alert(kInconsistent, "this account is not in the server's key transparency log");
    return out;
  }
  // What this device accepts and what its siblings told it (record_own_device_change, which an
  // inbox transaction may run meanwhile) are read, used and written in one store transaction.
  bool store_failed = false;
  const auto evaluate = [&]() -> bool {
    auto own = store_.load_value(kKtOwnValue);
    auto checked_value = store_.load_value(kKtOwnCheckedValue);
    auto linking = store_.load_value(kKtLinkingValue);
    auto expected_value = store_.load_value(kKtExpectedValue);
    if (!own || !checked_value || !linking || !expected_value) {
      store_failed = true;
      return false;
    }
    std::optional<kt::AccountValue> accepted;
    std::uint32_t checked = 0;
    if (*own && *checked_value && (**checked_value).view().size() == 4) {
      auto decoded = kt::decode_account_value((**own).view());
      if (decoded) accepted = std::move(*decoded);
      for (auto b : (**checked_value).view()) checked = checked << 8 | b;
    }
    kt::AccountValue expected;
    if (*expected_value) {
      auto decoded = kt::decode_account_value((**expected_value).view());
      if (decoded) expected = std::move(*decoded);  // a damaged list is as good as none
    }
    const std::size_t expected_before = expected.devices.size();
    bool pending_link = linking->has_value();
    const auto when = [&](std::uint64_t entry) {
      return "log entry " + std::to_string(entry) + ", in the log since " +
             format_time_ms(tracker_->current()->head.timestamp_ms) + " at the latest";
    };
    if (!accepted) {
      // The first check: what the account is now is this device's baseline (trust on first
      // use).
      accepted = versions->back().value;
      checked = static_cast<std::uint32_t>(versions->size());
    } else if (versions->size() < checked) {
      alert(kInconsistent, "the log shows " + std::to_string(versions->size()) +
                               " versions of this account after " + std::to_string(checked) +
                               " (a rollback)");
      return false;
    }
    const std::array<std::uint8_t, 32> no_key{};
    for (std::size_t i = checked; i < versions->size() && !out.held; ++i) {
      const kt::LabelVersion& v = (*versions)[i];
      std::vector<Event> found;  // this version's alerts
      bool link_used = false;
      std::vector<std::uint32_t> expected_used;
      if (v.value.identity_key != accepted->identity_key) {
        Event e;
        e.detail =
            "the account's identity key changed in " + when(v.entry) + ", and not by this device";
        found.push_back(std::move(e));
      }
      for (const kt::DeviceEntry& d : v.value.devices) {
        const bool known = std::any_of(
            accepted->devices.begin(), accepted->devices.end(), [&](const kt::DeviceEntry& a) {
              return a.device_id == d.device_id && a.registration_id == d.registration_id &&
                     a.auth_key == d.auth_key;
            });
        if (known) continue;
        const bool self = d.device_id == self_device && self_auth_key.size() == d.auth_key.size() &&
                          std::equal(d.auth_key.begin(), d.auth_key.end(), self_auth_key.begin());
        if (self) continue;
        // A device another device of the account named (exactly), then the first new device
        // after a link this device started or was told of.
        const bool named = std::any_of(
            expected.devices.begin(), expected.devices.end(), [&](const kt::DeviceEntry& x) {
              return x.device_id == d.device_id && x.registration_id == d.registration_id &&
                     (x.auth_key == no_key || x.auth_key == d.auth_key);
            });
        if (named) {
          expected_used.push_back(d.device_id);
          continue;
        }
        if (pending_link && !link_used) {
          link_used = true;
          continue;
        }
        Event e;
        e.detail = "device " + std::to_string(d.device_id) + " (registration id " +
                   std::to_string(d.registration_id) +
                   ") was added to the account, and no device of the account said it linked it: " +
                   when(v.entry) +
                   ". If you did not link it, remove it from the primary device (sotto devices "
                   "remove " +
                   std::to_string(d.device_id) + ")";
        found.push_back(std::move(e));
      }
      if (!found.empty() && hold_unknown) {
        out.held = true;  // this version stays unchecked until the caller checks again
        break;
      }
      for (Event& e : found) alert("unknown_device", std::move(e.detail));
      // A named device accounts for the link that made it; a link is used once.
      if (link_used || !expected_used.empty()) pending_link = false;
      std::erase_if(expected.devices, [&](const kt::DeviceEntry& x) {
        return std::find(expected_used.begin(), expected_used.end(), x.device_id) !=
               expected_used.end();
      });
      accepted = v.value;  // removals included: a removed device that comes back is new again
      checked = static_cast<std::uint32_t>(i + 1);
    }
    // A device already accepted (by the link alone, before it was named) needs no naming.
    std::erase_if(expected.devices, [&](const kt::DeviceEntry& x) {
      return std::any_of(
          accepted->devices.begin(), accepted->devices.end(), [&](const kt::DeviceEntry& a) {
            return a.device_id == x.device_id && a.registration_id == x.registration_id;
          });
    });
    const Bytes checked_bytes{
        static_cast<std::uint8_t>(checked >> 24), static_cast<std::uint8_t>(checked >> 16),
        static_cast<std::uint8_t>(checked >> 8), static_cast<std::uint8_t>(checked)};
    const bool saved =
        store_.save_value(kKtOwnValue, kt::encode_account_value(*accepted)).has_value() &&
        store_.save_value(kKtOwnCheckedValue, checked_bytes).has_value() &&
        (pending_link || !linking->has_value() ||
         store_.remove_value(kKtLinkingValue).has_value()) &&
        (expected.devices.size() == expected_before ||
         store_.save_value(kKtExpectedValue, kt::encode_account_value(expected)).has_value());
    if (!saved) store_failed = true;
    return saved;
  };
  auto committed = store_.transaction(evaluate);
  if (!committed || store_failed) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot save the monitoring state"));
  }
  return out;
}

std::pair<Bytes, Bytes> KtClient::pinned_for_link() {
  std::lock_guard lock(mu_);
  if (!load_locked() || !tracker_) return {};
  const auto& keys = tracker_->keys();
  Bytes both(keys.signing_key.begin(), keys.signing_key.end());
  both.insert(both.end(), keys.vrf_key.begin(), keys.vrf_key.end());
  Bytes head;
  if (tracker_->current()) head = kt::encode_signed_tree_head(*tracker_->current());
  return {std::move(both), std::move(head)};
}

bool record_own_device_change(store::ClientStore& store, const OwnDeviceChange& change) {
  if (change.link_started && !store.save_value(kKtLinkingValue, Bytes{1})) return false;
  if (change.device_id == 0) return true;
  auto stored = store.load_value(kKtExpectedValue);
  if (!stored) return false;
  kt::AccountValue expected;
  if (*stored) {
    auto decoded = kt::decode_account_value((**stored).view());
    if (decoded) expected = std::move(*decoded);
  }
  std::erase_if(expected.devices,
                [&](const kt::DeviceEntry& d) { return d.device_id == change.device_id; });
  if (!change.removed) {
    kt::DeviceEntry d;
    d.device_id = change.device_id;
    d.registration_id = change.registration_id;
    if (change.auth_key) d.auth_key = *change.auth_key;
    auto at = std::lower_bound(
        expected.devices.begin(), expected.devices.end(), d.device_id,
        [](const kt::DeviceEntry& e, std::uint32_t id) { return e.device_id < id; });
    expected.devices.insert(at, std::move(d));
    // Bounded as a logged value is: the lowest ids are the oldest links.
    if (expected.devices.size() > kt::kMaxDevices) expected.devices.erase(expected.devices.begin());
  }
  return store.save_value(kKtExpectedValue, kt::encode_account_value(expected)).has_value();
}

Result<void> pin_log_from_link(store::ClientStore& store, ByteView keys, ByteView head) {
  if (keys.empty()) return {};  // a linking device that had pinned no log
  if (keys.size() != 64) {
    return tl::unexpected(
        make_error(ErrorCode::protocol, "the provisioning message's log keys are malformed"));
  }
  if (!store.save_value(kKtKeysValue, keys)) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot pin the log's keys"));
  }
  if (head.empty()) return {};
  kt::LogPublicKeys pinned;
  std::copy_n(keys.begin(), 32, pinned.signing_key.begin());
  std::copy_n(keys.begin() + 32, 32, pinned.vrf_key.begin());
  kt::TreeHeadTracker tracker(pinned);
  auto sth = kt::decode_signed_tree_head(head);
  // A head that does not verify is left out: the first lookup takes the server's, under the
  // pinned key.
  if (!sth || !tracker.advance(*sth, {})) return {};
  if (!store.save_value(kKtHeadValue, head)) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot save the tree head"));
  }
  return {};
}

Result<void> KtClient::check_bundles(
    const std::string& user, const kt::AccountValue& value,
    const google::protobuf::RepeatedPtrField<sotto::wire::PreKeyBundle>& bundles) {
  for (const auto& b : bundles) {
    const ByteView key = as_bytes(b.identity_key());
    if (key.size() != value.identity_key.size() ||
        !std::equal(key.begin(), key.end(), value.identity_key.begin())) {
      return tl::unexpected(security_alert_error(
          kUnlogged, user,
          "device " + std::to_string(b.device_id()) +
              " comes with an identity key that is not the one in the key transparency log"));
    }
    const bool logged =
        std::any_of(value.devices.begin(), value.devices.end(), [&](const kt::DeviceEntry& d) {
          return d.device_id == b.device_id() && d.registration_id == b.registration_id();
        });
    if (!logged) {
      return tl::unexpected(security_alert_error(
          kUnlogged, user,
          "device " + std::to_string(b.device_id()) + " (registration id " +
              std::to_string(b.registration_id()) +
              ") is not in the key transparency log; nothing was encrypted to it"));
    }
  }
  return {};
}

Result<void> KtClient::check_devices(
    const std::string& user, const kt::AccountValue& value,
    const google::protobuf::RepeatedPtrField<svc::DeviceInfo>& devices) {
  std::set<std::pair<std::uint32_t, std::uint32_t>> listed;
  for (const auto& d : devices) listed.emplace(d.id(), d.registration_id());
  std::set<std::pair<std::uint32_t, std::uint32_t>> logged;
  for (const auto& d : value.devices) logged.emplace(d.device_id, d.registration_id);
  for (const auto& d : listed) {
    if (!logged.contains(d)) {
      return tl::unexpected(security_alert_error(
          kUnlogged, user,
          "device " + std::to_string(d.first) + " (registration id " + std::to_string(d.second) +
              ") is not in the key transparency log; nothing was encrypted to it"));
    }
  }
  if (listed != logged) {
    return tl::unexpected(security_alert_error(
        kInconsistent, user, "the server's device list leaves out devices the log holds"));
  }
  return {};
}

}  // namespace sotto::client
