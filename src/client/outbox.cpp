#include "client/outbox.h"

#include <algorithm>
#include <thread>

#include "client/attachment_history.h"
#include "client/errors.h"
#include "client/text.h"
#include "contract/ids.h"
#include "protocol/session.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;
using SteadyClock = std::chrono::steady_clock;

// Whether an error is worth retrying after a reconnect.
bool transient(const Error& e) {
  return e.code == ErrorCode::network || e.code == ErrorCode::timeout ||
         e.code == ErrorCode::server || e.code == ErrorCode::rate_limited;
}

}  // namespace

std::string encode_padded(content::Content& c, KtClient& kt) {
  const Bytes head = kt.gossip_head();
  if (head.empty()) {
    c.clear_kt_tree_head();
  } else {
    c.set_kt_tree_head(std::string(head.begin(), head.end()));
  }
  return encode_padded(c);
}

std::string encode_padded(content::Content& c) {
  c.clear_padding();
  const std::size_t pad = padding_length(c.ByteSizeLong());
  c.set_padding(std::string(pad, '\0'));
  return c.SerializeAsString();
}

std::array<std::uint8_t, 16> new_message_id(std::uint64_t now_ms, crypto::Rng& rng) {
  return contract::time_ordered_id(now_ms, rng);
}

Outbox::Outgoing::~Outgoing() {
  for (auto& part : parts) wipe(part.plaintext);
}

Result<SendResult> Outbox::send_text(const std::string& to, const std::string& body,
                                     const std::vector<std::string>& attachments) {
  auto user = normalize_username(to);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  if (body.empty() && attachments.empty()) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "empty message"));
  }
  if (body.size() > kMaxBodyBytes) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "message too long (at most 64 KiB)"));
  }
  if (!valid_utf8(body)) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the message is not valid UTF-8 text; nothing was sent"));
  }
  const std::string& self = account_.username;
  const bool note_to_self = *user == self;
  const std::uint64_t timestamp = next_timestamp();

  Outgoing out;
  out.recipient = *user;
  out.timestamp = timestamp;
  out.message_id = new_message_id(timestamp, account_.rng);
  {
    content::Content data_content;
    data_content.mutable_data()->set_body(body);
    data_content.mutable_data()->set_timestamp(timestamp);
    for (const auto& a : attachments) {
      if (!data_content.mutable_data()->add_attachments()->ParseFromString(a)) {
        return tl::unexpected(make_error(ErrorCode::invalid_argument, "malformed attachment"));
      }
    }
    content::Content sync_content;
    auto* sent = sync_content.mutable_sync()->mutable_sent();
    sent->set_destination(*user);
    sent->set_timestamp(timestamp);
    *sent->mutable_message() = data_content.data();
    if (!note_to_self)
      out.parts.push_back(Part{*user, encode_padded(data_content, account_.kt), true, {}});
    out.parts.push_back(Part{self, encode_padded(sync_content, account_.kt), note_to_self, {}});
    wipe(*data_content.mutable_data()->mutable_body());
    wipe(*sent->mutable_message()->mutable_body());
  }
  auto result = deliver(out);
  if (!result) return result;
  store::StoredMessage m{
      "local-" + to_hex(out.message_id), *user, self, account_.device_id, timestamp, body, true};
  (void)account_.store->add_message(m);  // the message is sent; a history failure must not say
                                         // otherwise
  if (!attachments.empty())
    (void)save_message_attachments(*account_.store, m.envelope_id, attachments);
  return result;
}

Result<SendResult> Outbox::send_contents(const std::string& to, std::uint64_t timestamp,
                                         content::Content* to_user, content::Content* to_own,
                                         std::optional<std::chrono::milliseconds> timeout) {
  const std::string& self = account_.username;
  const bool note_to_self = to == self;
  Outgoing out;
  out.recipient = to;
  out.timestamp = timestamp;
  out.message_id = new_message_id(timestamp, account_.rng);
  out.timeout = timeout;
  if (to_user && !note_to_self)
    out.parts.push_back(Part{to, encode_padded(*to_user, account_.kt), true, {}});
  if (to_own) {
    out.parts.push_back(
        Part{self, encode_padded(*to_own, account_.kt), note_to_self || !to_user, {}});
  }
  if (!to_user) out.recipient = self;
  if (out.parts.empty()) return SendResult{timestamp, 0, {}};
  // Without a copy for our other devices, the server is told it gets only part of the devices
  // it would expect (ours are left out on purpose).
  out.subset = to_own == nullptr;
  return deliver(out);
}

std::uint64_t Outbox::next_timestamp() {
  const std::uint64_t now = account_.clock.now_ms();
  std::uint64_t last = last_timestamp_.load();
  std::uint64_t next = 0;
  do {
    next = std::max(now, last + 1);
  } while (!last_timestamp_.compare_exchange_weak(last, next));
  return next;
}

Result<void> Outbox::send_to_devices(const std::string& user,
                                     const std::vector<std::uint32_t>& devices,
                                     const std::string& plaintext, std::uint64_t timestamp) {
  Outgoing out;
  out.recipient = user;
  out.subset = true;
  out.timestamp = timestamp;
  out.message_id = new_message_id(account_.clock.now_ms(), account_.rng);
  out.parts.push_back(Part{user, plaintext, true, devices});
  auto sent = deliver(out);
  if (!sent) return tl::unexpected(sent.error());
  return {};
}

Result<SendResult> Outbox::send_content(const std::string& user, const std::string& plaintext,
                                        std::uint64_t timestamp) {
  Outgoing out;
  out.recipient = user;
  // Another user's devices as a subset: a full send would have to carry our own devices too,
  // which get their copy from the send to our own account.
  out.subset = user != account_.username;
  out.timestamp = timestamp;
  out.message_id = new_message_id(account_.clock.now_ms(), account_.rng);
  out.parts.push_back(Part{user, plaintext, true, {}});
  return deliver(out);
}

Result<void> Outbox::send_to_own_devices(const std::string& plaintext,
                                         std::chrono::milliseconds timeout) {
  Outgoing out;
  out.recipient = account_.username;
  out.timestamp = next_timestamp();
  out.message_id = new_message_id(out.timestamp, account_.rng);
  out.timeout = timeout;
  out.parts.push_back(Part{account_.username, plaintext, true, {}});
  auto sent = deliver(out);
  if (!sent) return tl::unexpected(sent.error());
  return {};
}

Result<protocol::CiphertextMessage> Outbox::encrypt_for(const ConnectionPtr& c,
                                                        const protocol::Address& address,
                                                        ByteView plaintext) {
  auto st = account_.stores();
  auto ct = protocol::encrypt(address, plaintext, st);
  if (ct || ct.error() != protocol::Error::untrusted_identity) {
    if (!ct) return tl::unexpected(from_protocol(ct.error()));
    return std::move(*ct);
  }
  // The session was built with a key the contact no longer has. When the user has accepted the
  // contact's current key, the session is simply stale: build one from a fresh bundle (the old
  // state is archived, so messages still on their way from it decrypt).
  auto record = account_.store->load_session(address);
  if (!record) return tl::unexpected(from_protocol(record.error()));
  auto current = account_.identities.load_identity(address);
  if (!current) return tl::unexpected(from_protocol(current.error()));
  if (!record->has_value() || !(*record)->has_current() || !current->has_value() ||
      (*record)->current().remote_identity == **current) {
    return tl::unexpected(from_protocol(protocol::Error::untrusted_identity));
  }
  auto accepted = account_.identities.accepted(address.name, **current);
  if (!accepted) return tl::unexpected(from_store(accepted.error()));
  if (!*accepted) return tl::unexpected(from_protocol(protocol::Error::untrusted_identity));
  auto bundles = sessions_.fetch_bundles(c, address.name, {address.device.value});
  if (!bundles) return tl::unexpected(bundles.error());
  if (auto ok = sessions_.process_bundles(address.name, *bundles); !ok) {
    return tl::unexpected(ok.error());
  }
  auto again = protocol::encrypt(address, plaintext, st);
  if (!again) return tl::unexpected(from_protocol(again.error()));
  return std::move(*again);
}

Result<void> Outbox::encrypt_part(const ConnectionPtr& c, Part& part, svc::SendRequest& request) {
  const bool self = part.user == account_.username;
  const auto own_device = account_.device_id;
  std::vector<std::uint32_t> devices;
  if (part.devices) {
    devices = *part.devices;
    std::erase(devices, self ? own_device : 0u);
    auto existing = account_.store->session_devices(part.user);
    if (!existing) return tl::unexpected(from_store(existing.error()));
    std::vector<std::uint32_t> missing;
    for (auto d : devices) {
      if (std::find(existing->begin(), existing->end(), d) == existing->end()) missing.push_back(d);
    }
    if (!missing.empty()) {
      auto bundles = sessions_.fetch_bundles(c, part.user, missing);
      if (!bundles) return tl::unexpected(bundles.error());
      if (auto ok = sessions_.process_bundles(part.user, *bundles); !ok) return ok;
    }
  } else {
    const auto list = [&]() -> Result<std::vector<std::uint32_t>> {
      auto d = account_.store->session_devices(part.user);
      if (!d) return tl::unexpected(from_store(d.error()));
      if (self) std::erase(*d, own_device);
      return *d;
    };
    auto listed = list();
    if (!listed) return tl::unexpected(listed.error());
    if (listed->empty() && part.fetch_if_none) {
      std::vector<std::uint32_t> wanted;
      if (self) {
        // Our other devices: ask which exist, so a note to self reaches them.
        svc::Request r;
        r.mutable_list_devices();
        auto answered = link_.call_ok(c, std::move(r));
        if (!answered) return tl::unexpected(answered.error());
        for (const auto& d : answered->list_devices().devices()) {
          if (d.id() != own_device) wanted.push_back(d.id());
        }
      }
      if (!self || !wanted.empty()) {
        auto bundles = sessions_.fetch_bundles(c, part.user, wanted);
        if (!bundles) return tl::unexpected(bundles.error());
        if (auto ok = sessions_.process_bundles(part.user, *bundles); !ok) return ok;
        listed = list();
        if (!listed) return tl::unexpected(listed.error());
      }
    }
    devices = std::move(*listed);
  }
  for (auto d : devices) {
    const protocol::Address address{part.user, protocol::DeviceId(d)};
    auto ct = encrypt_for(c, address, as_bytes(part.plaintext));
    if (!ct) {
      if (ct.error().code == ErrorCode::protocol) {
        // A record without a usable state: archive it; the server reports the device missing
        // and the retry builds a fresh session.
        if (auto archived = sessions_.archive(address); !archived) return archived;
        continue;
      }
      return tl::unexpected(ct.error());
    }
    auto record = account_.store->load_session(address);
    if (!record || !record->has_value() || !(*record)->has_current()) {
      return tl::unexpected(make_error(ErrorCode::store, "a session vanished while sending"));
    }
    auto* m = request.add_messages();
    m->set_destination(part.user);
    m->set_device_id(d);
    m->set_registration_id((*record)->current().remote_registration_id.value);
    m->set_type(static_cast<std::uint32_t>(ct->type));
    m->set_content(bytes_string(ct->serialized));
  }
  return {};
}

Result<void> Outbox::repair(const ConnectionPtr& c, const svc::SendResponse& response) {
  for (const auto& mismatch : response.mismatch()) {
    auto user = normalize_username(mismatch.username());
    if (!user) continue;
    std::vector<std::uint32_t> fetch(mismatch.missing().begin(), mismatch.missing().end());
    fetch.insert(fetch.end(), mismatch.stale().begin(), mismatch.stale().end());
    {
      std::lock_guard crypto_lock(account_.crypto_mu);
      for (auto d : mismatch.extra()) {
        // Gone from the account: nothing more is sent to it, and what it sent before still
        // decrypts with the archived state.
        if (auto archived = sessions_.archive({*user, protocol::DeviceId(d)}); !archived) {
          return archived;
        }
      }
    }
    if (fetch.empty()) continue;
    auto bundles = sessions_.fetch_bundles(c, *user, fetch);
    if (!bundles) return tl::unexpected(bundles.error());
    std::lock_guard crypto_lock(account_.crypto_mu);
    // A re-installed device's new session archives the old state instead of deleting it: the
    // messages it sent before re-installing still decrypt.
    auto ok = sessions_.process_bundles(*user, *bundles);
    auto reported = sessions_.record_identity_changes();
    if (!ok) return ok;
    if (!reported) return reported;
  }
  return {};
}

Result<SendResult> Outbox::deliver(Outgoing& out) {
  const auto deadline = SteadyClock::now() + out.timeout.value_or(account_.options.send_timeout);
  std::optional<svc::SendRequest> built;
  int stale_rounds = 0;
  Backoff retry_backoff(kBackoffInitial, std::chrono::milliseconds(5000));
  std::optional<Error> last_error;

  const auto give_up = [&](Error e) -> Result<SendResult> {
    if (e.code == ErrorCode::network || e.code == ErrorCode::timeout) {
      e.message = "not sent: " + e.message;
    }
    return tl::unexpected(std::move(e));
  };
  const auto pause = [&]() -> bool {
    const auto delay = retry_backoff.next(account_.rng);
    if (SteadyClock::now() + delay > deadline) return false;
    std::this_thread::sleep_for(delay);
    return true;
  };

  for (;;) {
    if (SteadyClock::now() > deadline) {
      return give_up(last_error.value_or(make_error(ErrorCode::timeout, "the send timed out")));
    }
    auto connected = link_.ensure_connected(deadline);
    if (!connected) return give_up(connected.error());
    const ConnectionPtr c = connected->connection;

    if (!built) {
      svc::SendRequest request;
      request.set_recipient(out.recipient);
      request.set_client_message_id(bytes_string(out.message_id));
      request.set_timestamp(out.timestamp);
      request.set_device_subset(out.subset);
      Result<void> ok;
      {
        std::lock_guard crypto_lock(account_.crypto_mu);
        for (auto& part : out.parts) {
          ok = encrypt_part(c, part, request);
          if (!ok) break;
        }
        auto reported = sessions_.record_identity_changes();
        if (ok && !reported) ok = reported;
      }
      if (!ok) {
        if (transient(ok.error())) {
          last_error = ok.error();
          if (!pause()) return give_up(ok.error());
          continue;
        }
        return tl::unexpected(ok.error());
      }
      if (request.messages_size() == 0) {
        if (out.recipient != account_.username) {
          return tl::unexpected(
              make_error(ErrorCode::not_found, "the user has no device to send to"));
        }
        return SendResult{out.timestamp, 0, {}};  // a note to self and no other device
      }
      built = std::move(request);
    }

    svc::Request request;
    *request.mutable_send() = *built;
    auto response = c->call(std::move(request), account_.options.request_timeout);
    if (!response) {
      // Lost connection or no answer: the server may or may not have stored the message;
      // resending the same request with the same id is stored at most once.
      last_error = response.error();
      continue;
    }
    switch (response->status().code()) {
      case svc::OK: {
        // Kept for a while, in case a recipient device asks for it again.
        const std::uint64_t now = account_.clock.now_ms();
        for (const auto& part : out.parts) {
          (void)account_.store->log_sent(part.user, out.timestamp, now, as_bytes(part.plaintext));
        }
        if (now > kResendLogMs) (void)account_.store->expire_sent(now - kResendLogMs);
        keys_.maintain_if_due(c);
        return SendResult{out.timestamp, static_cast<std::size_t>(built->messages_size()), {}};
      }
      case svc::STALE_DEVICES: {
        if (++stale_rounds > kMaxStaleRetries) {
          return tl::unexpected(make_error(
              ErrorCode::server, "the recipient's device list keeps changing; try again"));
        }
        auto repaired = repair(c, response->send());
        if (!repaired) {
          if (!transient(repaired.error())) return tl::unexpected(repaired.error());
          last_error = repaired.error();
        }
        built.reset();
        continue;
      }
      case svc::NOT_FOUND:
        return tl::unexpected(make_error(ErrorCode::not_found, "no such user"));
      case svc::RATE_LIMITED:
      case svc::UNAVAILABLE:
        if (const std::uint32_t ms = response->status().retry_after_ms(); ms > 0) {
          // The server said when: waited for when the send's time allows, else reported now
          // (nothing was stored) with that time.
          const auto delay = std::chrono::milliseconds(ms);
          if (SteadyClock::now() + delay > deadline) return give_up(status_error(*response));
          std::this_thread::sleep_for(delay);
          last_error = status_error(*response);
          continue;
        }
        [[fallthrough]];
      case svc::INTERNAL:
      case svc::QUEUE_FULL:
        last_error = status_error(*response);
        if (!pause()) return give_up(*last_error);
        continue;
      default:
        return tl::unexpected(status_error(*response));
    }
  }
}

Result<void> Outbox::request_resend(const std::string& user, std::uint32_t device,
                                    std::uint64_t timestamp, ByteView ratchet_key) {
  content::PlaintextContent request;
  auto* error = request.mutable_decryption_error();
  error->set_timestamp(timestamp);
  if (!ratchet_key.empty()) error->set_ratchet_key(bytes_string(ratchet_key));
  error->set_device_id(account_.device_id);
  const std::string bytes = request.SerializeAsString();

  const auto deadline = SteadyClock::now() + account_.options.request_timeout;
  auto connected = link_.ensure_connected(deadline);
  if (!connected) return tl::unexpected(connected.error());
  const ConnectionPtr c = connected->connection;
  // The device's registration id, which the server checks (there is no session to take it from).
  svc::Request list;
  list.mutable_list_devices()->set_username(user);
  list.mutable_list_devices()->set_kt_known_size(account_.kt.known_size());
  auto listed = link_.call_ok(c, std::move(list));
  if (!listed) return tl::unexpected(listed.error());
  // Key transparency: another account's device list must be the one its log proves, as bundles
  // must (docs/transparency.md).
  const auto& answer = listed->list_devices();
  auto logged = account_.kt.verify(c, account_.options.request_timeout, user,
                                   answer.has_kt() ? &answer.kt() : nullptr);
  if (!logged) return tl::unexpected(logged.error());
  if (*logged) {
    if (auto ok = KtClient::check_devices(user, **logged, answer.devices()); !ok) {
      return tl::unexpected(ok.error());
    }
  }
  std::optional<std::uint32_t> registration_id;
  for (const auto& d : listed->list_devices().devices()) {
    if (d.id() == device) registration_id = d.registration_id();
  }
  if (!registration_id) {
    return tl::unexpected(make_error(ErrorCode::not_found, "the sending device is gone"));
  }
  svc::Request send;
  auto* s = send.mutable_send();
  s->set_recipient(user);
  const auto id = new_message_id(account_.clock.now_ms(), account_.rng);
  s->set_client_message_id(bytes_string(id));
  s->set_timestamp(account_.clock.now_ms());
  s->set_device_subset(true);
  auto* m = s->add_messages();
  m->set_destination(user);
  m->set_device_id(device);
  m->set_registration_id(*registration_id);
  m->set_type(kPlaintextContentType);
  m->set_content(bytes);
  auto sent = link_.call_ok(c, std::move(send));
  if (!sent) return tl::unexpected(sent.error());
  return {};
}

Result<void> Outbox::resend(const std::string& user, std::uint32_t device,
                            const ResendRequest& request) {
  auto logged = account_.store->load_sent(user, request.timestamp);
  if (!logged) return tl::unexpected(from_store(logged.error()));
  if (!logged->has_value() || (*logged)->resends >= kMaxResends) return {};
  std::string plaintext = bytes_string((*logged)->content.view());
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    const protocol::Address address{user, protocol::DeviceId(device)};
    auto record = account_.store->load_session(address);
    if (!record) return tl::unexpected(from_protocol(record.error()));
    if (record->has_value() && (*record)->has_current()) {
      const auto ours = (*record)->current().sender_chain.ratchet.public_key.serialize();
      // The failed message was sent with our current session (or the device could not even
      // read which): that session is broken on the other side, so the resend starts a new one.
      const bool broken =
          request.ratchet_key.empty() || crypto::constant_time_equal(ours, request.ratchet_key);
      if (broken) {
        if (auto archived = sessions_.archive(address); !archived) return archived;
      }
    }
  }
  auto sent = send_to_devices(user, {device}, plaintext, request.timestamp);
  wipe(plaintext);
  if (!sent) return sent;
  (void)account_.store->count_resend(user, request.timestamp);
  return {};
}

}  // namespace sotto::client
