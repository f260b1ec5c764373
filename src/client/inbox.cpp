#include "client/inbox.h"

#include <algorithm>

#include "client/attachment_history.h"
#include "client/contacts.h"
#include "client/content_codec.h"
#include "client/errors.h"
#include "client/groups.h"
#include "crypto/hash.h"
#include "protocol/messages.h"
#include "protocol/session.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

// The ratchet key a message was sent with, read without a session (the MAC is not checked):
// what a resend request names so the sender can tell which session broke.
Bytes ratchet_key_of(const svc::Envelope& envelope) {
  const ByteView bytes = as_bytes(envelope.content());
  if (envelope.type() == static_cast<std::uint32_t>(protocol::MessageType::pre_key)) {
    if (auto m = protocol::PreKeySignalMessage::decode(bytes)) {
      const auto key = m->message.ratchet_key.serialize();
      return Bytes(key.begin(), key.end());
    }
  } else if (envelope.type() == static_cast<std::uint32_t>(protocol::MessageType::signal)) {
    if (auto m = protocol::SignalMessage::decode(bytes)) {
      const auto key = m->ratchet_key.serialize();
      return Bytes(key.begin(), key.end());
    }
  }
  return {};
}

// What identifies a ciphertext among those processed (not secret: a hash of what the server
// holds too).
Bytes content_hash(const svc::Envelope& envelope) {
  const auto digest = crypto::sha256({as_bytes(envelope.content())});
  return Bytes(digest.begin(), digest.begin() + 16);
}

}  // namespace

struct Inbox::Outcome {
  std::optional<protocol::Error> decrypt_error;
  bool store_error = false;
  std::optional<std::pair<std::uint32_t, bool>> history_request;  // device, wants history
  std::function<void()> group_followup;  // sent once the envelope is processed (groups.h)
  Conversations::Receipts receipts;      // delivery receipts to send once processed
  Bytes kt_tree_head;                    // the sender's gossiped tree head, to check
};

void Inbox::check_gossip(const std::string& sender, ByteView head) {
  if (head.empty()) return;
  auto c = link_.current();
  if (!c) return;  // checked with the sender's next message
  const auto ask = [&](svc::Request r) {
    return c->call(std::move(r), account_.options.request_timeout);
  };
  auto alerts = account_.kt.check_gossip(ask, sender, head);
  if (!alerts || alerts->empty()) return;
  std::lock_guard crypto_lock(account_.crypto_mu);
  for (Event& e : *alerts) (void)journal_.record(e);
}

void Inbox::acknowledge(const std::string& envelope_id) {
  auto c = link_.current();
  if (!c) return;  // not acknowledged: the server delivers it again and we drop the copy
  svc::Request request;
  request.mutable_ack()->add_envelope_ids(envelope_id);
  (void)c->call(std::move(request), account_.options.request_timeout);
}

bool Inbox::handle(const svc::Envelope& envelope) {
  const std::string id = to_hex(as_bytes(envelope.id()));
  // Processed before: this envelope id (a re-delivery), or this very ciphertext under another
  // id (a send the server showed before it was durable, stored again when its sender retried).
  const Bytes hash = content_hash(envelope);
  auto seen = account_.store->seen_envelope(id);
  auto seen_content = account_.store->seen_content(hash);
  if (!seen || !seen_content) return false;  // the store failed: leave it with the server
  if (*seen || *seen_content) {
    if (!*seen) (void)account_.store->mark_envelope(id, hash);
    acknowledge(envelope.id());
    return true;
  }
  // From an account we block: queued before the block, or sent before the server heard of it.
  // Acknowledged and dropped, never decrypted or shown, once the server confirms the block (the
  // local copy of the list may predate an unblock on another device). Unconfirmed: left with
  // the server, to be delivered again.
  if (envelope.source() != account_.username && blocks_.is_blocked(envelope.source())) {
    auto blocked = blocks_.confirm(envelope.source());
    if (!blocked) return false;
    if (*blocked) {
      if (!account_.store->mark_envelope(id, hash)) return false;
      acknowledge(envelope.id());
      return true;
    }
  }
  if (envelope.type() == kPlaintextContentType) return handle_plaintext(envelope, id);

  Message base;
  base.id = id;
  base.from = envelope.source();
  base.device = envelope.source_device();
  base.timestamp = envelope.client_timestamp();
  base.server_timestamp = envelope.server_timestamp();
  base.conversation = envelope.source();

  if (envelope.type() == kSenderKeyMessageType && groups_ != nullptr) {
    // A group message: no session, so nothing to ask again; a failure is reported and kept.
    auto r = groups_->on_sender_key_message(envelope, id, base, hash);
    if (r.store_error) return false;
    if (r.failure && !record_failure(envelope, id, base, *r.failure)) return false;
    acknowledge(envelope.id());
    if (!r.receipts.empty()) conversations_.send_delivery_receipts(r.receipts);
    if (r.followup) r.followup();  // asks the sender for its Sender Key (groups.h)
    if (auto source = normalize_username(envelope.source())) check_gossip(*source, r.kt_tree_head);
    return true;
  }

  switch (check_sender(envelope, id, base)) {
    case SenderCheck::later:
      return false;  // left with the server: checked again when it comes again
    case SenderCheck::refused:
      acknowledge(envelope.id());
      return true;
    case SenderCheck::go_on:
      break;
  }
  Outcome outcome;
  apply(envelope, id, base, outcome);
  if (outcome.store_error) return false;
  if (outcome.decrypt_error) {
    const auto source = normalize_username(envelope.source());
    std::string why = describe_decrypt_failure(*outcome.decrypt_error);
    if (!source) {
      why = "a message without a valid sender";
    } else {
      // Ask the sending device for it again; a request that could not be sent leaves the
      // envelope with the server, to try again on the next delivery.
      auto asked = outbox_.request_resend(*source, envelope.source_device(),
                                          envelope.client_timestamp(), ratchet_key_of(envelope));
      if (!asked) {
        if (asked.error().code != ErrorCode::not_found &&
            asked.error().code != ErrorCode::invalid_argument) {
          return false;
        }
        why += "; the sending device is gone, so it cannot be sent again";
      } else {
        why += "; asked the sender to send it again";
      }
    }
    if (!record_failure(envelope, id, base, why)) return false;
  }
  acknowledge(envelope.id());
  if (outcome.group_followup) outcome.group_followup();
  if (!outcome.receipts.empty()) conversations_.send_delivery_receipts(outcome.receipts);
  if (outcome.history_request) {
    // Answered once the request itself is safely processed.
    history_.on_request(outcome.history_request->first, outcome.history_request->second);
  }
  if (auto source = normalize_username(envelope.source())) {
    check_gossip(*source, outcome.kt_tree_head);
  }
  return true;
}

Inbox::SenderCheck Inbox::check_sender(const svc::Envelope& envelope, const std::string& id,
                                       const Message& base) {
  if (envelope.type() != static_cast<std::uint32_t>(protocol::MessageType::pre_key)) {
    return SenderCheck::go_on;
  }
  const auto source = normalize_username(envelope.source());
  auto message = protocol::PreKeySignalMessage::decode(as_bytes(envelope.content()));
  if (!source || !message) return SenderCheck::go_on;  // decryption refuses it and says why
  if (*source == account_.username && envelope.source_device() == account_.device_id) {
    return SenderCheck::go_on;
  }
  {
    // A device this one already has a session with under that identity key (a message re-sent
    // before our first answer, or a new session from a device we talk to) was checked before.
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto record =
        account_.store->load_session({*source, protocol::DeviceId(envelope.source_device())});
    if (!record) return SenderCheck::later;
    if (record->has_value()) {
      const protocol::SessionRecord& r = **record;
      const auto same = [&](const protocol::SessionState& state) {
        return state.remote_identity == message->identity_key;
      };
      if ((r.has_current() && same(r.current())) ||
          std::any_of(r.previous().begin(), r.previous().end(), same)) {
        return SenderCheck::go_on;
      }
    }
  }
  auto c = link_.current();
  if (!c) return SenderCheck::later;
  auto checked = sessions_.check_logged_sender(
      c, *source, envelope.source_device(), message->registration_id.value, message->identity_key);
  if (checked) return SenderCheck::go_on;
  auto alert = security_alert_of(checked.error());
  if (!alert) {
    // The account is gone: decryption goes on (and fails or not) as it would have.
    return checked.error().code == ErrorCode::not_found ? SenderCheck::go_on : SenderCheck::later;
  }
  if (!record_failure(envelope, id, base,
                      "it came from a device that is not in the key transparency log, so it "
                      "was not read")) {
    return SenderCheck::later;
  }
  Event e;
  e.kind = Event::Kind::security_alert;
  e.alert = alert->kind;
  e.user = alert->user;
  e.detail = alert->detail;
  std::lock_guard crypto_lock(account_.crypto_mu);
  (void)journal_.record(e);
  return SenderCheck::refused;
}

bool Inbox::handle_plaintext(const svc::Envelope& envelope, const std::string& id) {
  const auto source = normalize_username(envelope.source());
  if (auto request = read_plaintext_content(as_bytes(envelope.content())); request && source) {
    auto resent = outbox_.resend(*source, envelope.source_device(), *request);
    if (!resent && resent.error().code != ErrorCode::not_found &&
        resent.error().code != ErrorCode::untrusted_identity) {
      return false;  // asked again when the server delivers it again
    }
  }
  // Anything else sent outside a session is not ours to act on.
  if (!account_.store->mark_envelope(id)) return false;
  acknowledge(envelope.id());
  return true;
}

void Inbox::apply(const svc::Envelope& envelope, const std::string& id, const Message& base,
                  Outcome& outcome) {
  const std::string& self = account_.username;
  const auto source = normalize_username(envelope.source());
  if (!source) {
    outcome.decrypt_error = protocol::Error::malformed;
    return;
  }
  const protocol::Address address{*source, protocol::DeviceId(envelope.source_device())};
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto st = account_.stores();
  auto committed = account_.store->transaction([&] {
    tl::expected<protocol::Decrypted, protocol::Error> decrypted =
        tl::unexpected(protocol::Error::malformed);
    if (envelope.type() == static_cast<std::uint32_t>(protocol::MessageType::pre_key)) {
      decrypted = protocol::decrypt_pre_key_message(address, as_bytes(envelope.content()), st,
                                                    account_.rng, account_.protocol_clock);
    } else if (envelope.type() == static_cast<std::uint32_t>(protocol::MessageType::signal)) {
      decrypted = protocol::decrypt_signal_message(address, as_bytes(envelope.content()), st,
                                                   account_.rng, account_.protocol_clock);
    }
    if (!decrypted) {
      // A duplicate at the protocol level in an envelope never seen before is not a
      // re-delivery (those are dropped by envelope id): the sender's keys went back in time
      // (a data directory restored from a copy), so it is a failure like any other.
      outcome.decrypt_error = decrypted.error();
      (void)account_.identities.take_changes();
      return false;  // nothing was written; the failure is recorded after the resend request
    }
    const auto fail = [&] { return !(outcome.store_error = true); };
    const auto journal = [&](Event& e) { return journal_.record(e).has_value(); };
    outcome.kt_tree_head = gossip_head_of(decrypted->plaintext.view());

    if (groups_ != nullptr) {
      // Group changes and Sender Key distributions. A change from a key the user has not
      // accepted is refused like any other the client cannot vouch for.
      bool accepted = true;
      if (*source != self) {
        auto contact = account_.store->load_contact(*source);
        if (!contact) return fail();
        accepted = !(contact->has_value() && (*contact)->identity_key == decrypted->identity &&
                     !(*contact)->accepted);
      }
      auto g = groups_->on_content(decrypted->plaintext.view(), *source, envelope.source_device(),
                                   base, accepted);
      if (!g.ok) return fail();
      if (g.handled) {
        if (!sessions_.record_identity_changes()) return fail();
        if (!account_.store->mark_envelope(id, content_hash(envelope))) return fail();
        outcome.group_followup = std::move(g.followup);
        return true;
      }
    }

    std::optional<std::string> unreadable;  // decrypted, but not something we can show
    ReceivedContent c = read_content(decrypted->plaintext.view(), *source == self);
    // Shows a message (or a copy of what our other device sent) once: a message sent again
    // after a decryption failure has the same device and timestamp.
    const auto show = [&](Message m) -> bool {
      auto duplicate = account_.store->has_message(m.conversation, m.from, m.device, m.timestamp);
      if (!duplicate) return false;
      if (*duplicate) return true;
      store::StoredMessage stored{id,          m.conversation, m.from,    m.device,
                                  m.timestamp, m.body,         m.outgoing};
      const bool added = account_.store->add_message(stored).has_value();
      wipe(stored.body);
      if (!added) return false;
      if (!m.attachments.empty()) {
        std::vector<std::string> pointers;
        for (const auto& a : m.attachments) pointers.push_back(a.pointer);
        const bool kept = save_message_attachments(*account_.store, id, pointers);
        for (auto& p : pointers) wipe(p);
        if (!kept) return false;
      }
      Event e;
      e.kind = Event::Kind::message;
      e.message = std::move(m);
      return journal(e);
    };
    // A message is held until the user accepts the key it came from; a message from an earlier
    // key of the contact (sent before it changed) is shown.
    bool held = false;
    const bool action = c.extras.reaction_target || c.extras.delete_target ||
                        c.extras.edit_target || c.extras.expire_timer_update;
    if ((c.kind == ReceivedContent::Kind::message || c.kind == ReceivedContent::Kind::receipt ||
         c.kind == ReceivedContent::Kind::typing) &&
        *source != self) {
      auto contact = account_.store->load_contact(*source);
      if (!contact) return fail();
      held = contact->has_value() && (*contact)->identity_key == decrypted->identity &&
             !(*contact)->accepted;
      // Only a text is kept for later; what changes other messages (or says it was received,
      // or typing) from a key not accepted is dropped.
      if (held && (action || c.kind != ReceivedContent::Kind::message)) {
        c.kind = ReceivedContent::Kind::nothing;
        held = false;
      }
      if (held) {
        store::StoredMessage stored{
            id, base.conversation, base.from, base.device, c.timestamp, c.body, false};
        const bool kept = account_.store->hold_message(stored).has_value();
        wipe(stored.body);
        if (!kept) return fail();
        // Its attachments wait beside it (attachment_history.h) until it is released.
        if (!c.attachments.empty() &&
            !save_message_attachments(*account_.store, id, c.attachments)) {
          return fail();
        }
      }
    }
    // A key change is told before what came with it (and after a held message, which it counts).
    if (!sessions_.record_identity_changes()) return fail();
    switch (c.kind) {
      case ReceivedContent::Kind::message: {
        if (held) break;
        Message m = base;
        m.outgoing = *source == self;
        for (const auto& a : c.attachments) m.attachments.push_back(public_attachment(a));
        if (!conversations_.receive(c, std::move(m), show, outcome.receipts)) return fail();
        break;
      }
      case ReceivedContent::Kind::sent_copy: {
        Message m = base;
        m.conversation = c.destination;
        for (const auto& a : c.attachments) m.attachments.push_back(public_attachment(a));
        m.outgoing = true;
        if (!conversations_.receive(c, std::move(m), show, outcome.receipts)) return fail();
        break;
      }
      case ReceivedContent::Kind::receipt:
        if (!conversations_.receive_receipt(*source, c)) return fail();
        break;
      case ReceivedContent::Kind::typing:
        if (!conversations_.receive_typing(*source, c)) return fail();
        break;
      case ReceivedContent::Kind::read_sync:
        if (!conversations_.receive_read_sync(c)) return fail();
        break;
      case ReceivedContent::Kind::settings_sync:
        if (!conversations_.receive_settings(c)) return fail();
        break;
      case ReceivedContent::Kind::history_request:
        outcome.history_request = {envelope.source_device(), c.wants_history};
        break;
      case ReceivedContent::Kind::history_chunk:
        if (!history_.import(c.history, c.contacts, c.last, c.total)) return fail();
        // The messages' state and the groups (group_converge.cpp).
        if (groups_ != nullptr &&
            !groups_->import_history_extras(c.history, c.history_states, c.groups)) {
          return fail();
        }
        break;
      case ReceivedContent::Kind::device_change: {
        // Key transparency: another device of ours linked (or removed) a device; our monitoring
        // accepts it (a check held for it runs again once the listener is idle).
        OwnDeviceChange change;
        change.link_started = c.device_change.link_started;
        change.device_id = c.device_change.device_id;
        change.registration_id = c.device_change.registration_id;
        change.auth_key = c.device_change.auth_key;
        change.removed = c.device_change.removed;
        if (!record_own_device_change(*account_.store, change)) return fail();
        break;
      }
      case ReceivedContent::Kind::trust_update:
        // Another device of ours accepted the key: so do we, if it is the key we have.
        if (!accept_key(account_, journal_, c.user, *c.identity_key, c.verified)) return fail();
        break;
      case ReceivedContent::Kind::unreadable:
        unreadable = c.why;
        break;
      case ReceivedContent::Kind::nothing:
        break;
    }
    // Receipts and content of later versions: nothing to show; the envelope is consumed.
    if (unreadable) {
      Event e;
      e.kind = Event::Kind::decrypt_failed;
      e.message = base;
      e.detail = *unreadable;
      store::StoredMessage row{std::string(store::kNoticePrefix) + id,
                               base.conversation,
                               base.from,
                               base.device,
                               base.timestamp,
                               "[not shown: " + *unreadable + "]",
                               false};
      if (!account_.store->add_message(row) || !journal(e)) return fail();
    }
    if (!account_.store->mark_envelope(id, content_hash(envelope))) return fail();
    return true;
  });
  if (!committed || (!*committed && !outcome.decrypt_error)) outcome.store_error = true;
  if (outcome.store_error) (void)account_.identities.take_changes();
}

bool Inbox::record_failure(const svc::Envelope& envelope, const std::string& id,
                           const Message& base, const std::string& why) {
  Event e;
  e.kind = Event::Kind::decrypt_failed;
  e.message = base;
  e.detail = why;
  // A notice in the history, not the message: the message itself may still come (resent).
  store::StoredMessage row{std::string(store::kNoticePrefix) + id,
                           base.conversation,
                           base.from,
                           base.device,
                           base.timestamp,
                           "[could not be decrypted: " + why + "]",
                           false};
  std::lock_guard crypto_lock(account_.crypto_mu);
  bool saved = false;
  auto ok = account_.store->transaction([&] {
    saved = account_.store->add_message(row).has_value() && journal_.record(e).has_value() &&
            account_.store->mark_envelope(id, content_hash(envelope)).has_value();
    return saved;
  });
  return ok && *ok && saved;
}

}  // namespace sotto::client
