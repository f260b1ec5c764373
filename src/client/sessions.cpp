#include "client/sessions.h"

#include <algorithm>

#include "client/errors.h"
#include "protocol/session.h"

namespace sotto::client {

Result<std::vector<protocol::PreKeyBundle>> Sessions::fetch_bundles(
    const ConnectionPtr& c, const std::string& user, const std::vector<std::uint32_t>& devices) {
  svc::Request request;
  auto* fetch = request.mutable_fetch_bundles();
  fetch->set_username(user);
  for (auto d : devices) fetch->add_device_ids(d);
  fetch->set_kt_known_size(account_.kt.known_size());
  auto response = c->call(std::move(request), account_.options.request_timeout);
  if (!response) return tl::unexpected(response.error());
  std::vector<protocol::PreKeyBundle> out;
  if (response->status().code() == svc::NOT_FOUND) {
    if (devices.empty()) return tl::unexpected(make_error(ErrorCode::not_found, "no such user"));
    return out;  // those devices are gone; the next send says so
  }
  if (response->status().code() != svc::OK) return tl::unexpected(status_error(*response));
  // Key transparency: every bundle's identity key and device must be in the log, or none is used.
  const auto& fetched = response->fetch_bundles();
  auto logged = account_.kt.verify(c, account_.options.request_timeout, user,
                                   fetched.has_kt() ? &fetched.kt() : nullptr);
  if (!logged) return tl::unexpected(logged.error());
  if (*logged) {
    if (auto ok = KtClient::check_bundles(user, **logged, fetched.bundles()); !ok)
      return tl::unexpected(ok.error());
  }
  for (const auto& b : response->fetch_bundles().bundles()) {
    const std::string bytes = b.SerializeAsString();
    auto bundle = protocol::PreKeyBundle::decode(as_bytes(bytes));
    if (!bundle) continue;  // a malformed bundle: that device stays without a session
    out.push_back(std::move(*bundle));
  }
  return out;
}

Result<void> Sessions::process_bundles(const std::string& user,
                                       const std::vector<protocol::PreKeyBundle>& bundles) {
  auto st = account_.stores();
  for (const auto& bundle : bundles) {
    if (user == account_.username && bundle.device_id.value == account_.device_id) continue;
    const protocol::Address address{user, bundle.device_id};
    auto ok = protocol::process_pre_key_bundle(address, bundle, st, account_.rng,
                                               account_.protocol_clock);
    if (!ok) {
      if (ok.error() == protocol::Error::untrusted_identity) {
        // Refused for sending, but it is the key the contact has now: remember it, so the
        // safety number shown is the one to compare, and the user can accept it.
        if (auto noted = account_.identities.note(user, bundle.identity_key); !noted) {
          return tl::unexpected(from_store(noted.error()));
        }
        return tl::unexpected(from_protocol(ok.error()));
      }
      if (ok.error() == protocol::Error::store_failure) {
        return tl::unexpected(from_protocol(ok.error()));
      }
      // A bundle whose signature fails: no session with that device; the server keeps
      // reporting it missing and the send eventually fails with a clear error.
      continue;
    }
  }
  return {};
}

namespace {

// The identity key the server holds for `user`, with the log's proof of the account
// (kt_known_size: the newest head this device verified), checked: the key, and the account value
// the log proves (nullopt when there is no log).
struct LookedUp {
  protocol::PublicKey key;
  std::optional<transparency::AccountValue> logged;
};
Result<LookedUp> look_up(Account& account, ServerLink& link, const ConnectionPtr& c,
                         const std::string& user) {
  svc::Request request;
  request.mutable_identity_key()->set_username(user);
  request.mutable_identity_key()->set_kt_known_size(account.kt.known_size());
  auto response = link.call_ok(c, std::move(request));
  if (!response) return tl::unexpected(response.error());
  const auto& r = response->identity_key();
  auto key = protocol::PublicKey::decode(as_bytes(r.identity_key()));
  if (!key) {
    return tl::unexpected(
        make_error(ErrorCode::server, "the server sent a malformed identity key"));
  }
  auto logged =
      account.kt.verify(c, account.options.request_timeout, user, r.has_kt() ? &r.kt() : nullptr);
  if (!logged) return tl::unexpected(logged.error());
  if (*logged) {
    const auto bytes = key->serialize();
    if (!std::equal(bytes.begin(), bytes.end(), (*logged)->identity_key.begin())) {
      return tl::unexpected(security_alert_error(
          "unlogged_key", user,
          "the server gave an identity key that is not the one in the key transparency log"));
    }
  }
  return LookedUp{*key, std::move(*logged)};
}

}  // namespace

Result<void> Sessions::check_logged_sender(const ConnectionPtr& c, const std::string& user,
                                           std::uint32_t device, std::uint32_t registration_id,
                                           const protocol::PublicKey& identity) {
  const auto key = identity.serialize();
  if (account_.kt.logged_device(user, device, registration_id, ByteView(key))) return {};
  auto looked = look_up(account_, link_, c, user);
  if (!looked) return tl::unexpected(looked.error());
  if (!looked->logged) return {};  // no log to check against
  if (account_.kt.logged_device(user, device, registration_id, ByteView(key))) return {};
  return tl::unexpected(security_alert_error(
      "unlogged_key", user,
      "a message from device " + std::to_string(device) + " (registration id " +
          std::to_string(registration_id) +
          ") comes with a device or identity key that is not in the key transparency log; it "
          "was not read, and nothing is encrypted to that device"));
}

Result<protocol::PublicKey> Sessions::lookup_identity(const ConnectionPtr& c,
                                                      const std::string& user) {
  auto looked = look_up(account_, link_, c, user);
  if (!looked) return tl::unexpected(looked.error());
  return looked->key;
}

Result<void> Sessions::archive(const protocol::Address& address) {
  auto record = account_.store->load_session(address);
  if (!record) return tl::unexpected(from_protocol(record.error()));
  if (!record->has_value() || !(*record)->has_current()) return {};
  (*record)->archive_current();
  if (auto saved = account_.store->save_session(address, **record); !saved) {
    return tl::unexpected(from_protocol(saved.error()));
  }
  return {};
}

Result<void> Sessions::record_identity_changes() {
  for (const IdentityChange& change : account_.identities.take_changes()) {
    // A new contact's key is not a change; it is worth telling only when it is not accepted (the
    // policy "never"): what it sends is held until the user verifies the key.
    if (change.first && change.accepted) continue;
    Event e;
    e.kind = Event::Kind::identity_changed;
    e.user = change.user;
    e.accepted = change.accepted;
    e.changed_at = change.changed_at;
    e.message.from = change.user;
    e.message.conversation = change.user;
    auto held = account_.store->held_count(change.user);
    if (!held) return tl::unexpected(from_store(held.error()));
    e.held = *held;
    if (auto recorded = journal_.record(e); !recorded) {
      return tl::unexpected(from_store(recorded.error()));
    }
  }
  return {};
}

}  // namespace sotto::client
