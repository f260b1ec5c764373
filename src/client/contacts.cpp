#include "client/contacts.h"

#include "client/attachment_history.h"
#include "client/errors.h"
#include "protocol/fingerprint.h"

namespace sotto::client {

namespace {
using SteadyClock = std::chrono::steady_clock;
}  // namespace

Message to_message(const store::StoredMessage& m) {
  Message out;
  out.id = m.envelope_id;
  out.from = m.sender;
  out.device = m.sender_device;
  out.timestamp = m.timestamp;
  out.body = m.body;
  out.conversation = m.peer;
  out.outgoing = m.outgoing;
  out.notice = m.envelope_id.starts_with(store::kNoticePrefix);
  return out;
}

Result<std::size_t> accept_key(Account& account, Journal& journal, const std::string& user,
                               const protocol::PublicKey& key, bool verified) {
  auto loaded = account.store->load_contact(user);
  if (!loaded) return tl::unexpected(from_store(loaded.error()));
  store::Contact c = loaded->value_or(store::Contact{user, key, false, false, 0});
  if (c.identity_key != key) return std::size_t{0};  // the contact has another key by now
  c.accepted = true;
  c.verified = verified || c.verified;
  if (auto saved = account.store->save_contact(c); !saved) {
    return tl::unexpected(from_store(saved.error()));
  }
  auto held = account.store->take_held(user);
  if (!held) return tl::unexpected(from_store(held.error()));
  for (const auto& m : *held) {
    if (auto added = account.store->add_message(m); !added) {
      return tl::unexpected(from_store(added.error()));
    }
    Event e;
    e.kind = Event::Kind::message;
    e.message = to_message(m);
    e.message.attachments = load_message_attachments(*account.store, m.envelope_id);
    if (auto recorded = journal.record(e); !recorded) {
      return tl::unexpected(from_store(recorded.error()));
    }
  }
  return held->size();
}

Result<void> merge_contact(store::ClientStore& store, const store::Contact& incoming) {
  auto local = store.load_contact(incoming.username);
  if (!local) return tl::unexpected(from_store(local.error()));
  store::Contact c = incoming;
  if (local->has_value() && (*local)->identity_key) {
    // What this device learned since is newer: the key stays; what the user decided about
    // that same key is kept from either.
    if ((*local)->identity_key != incoming.identity_key) return {};
    c.accepted = c.accepted || (*local)->accepted;
    c.verified = c.verified || (*local)->verified;
    c.identity_changed_at = (*local)->identity_changed_at;
  }
  if (auto saved = store.save_contact(c); !saved) return tl::unexpected(from_store(saved.error()));
  return {};
}

Result<std::vector<Contact>> Contacts::list() {
  auto list = account_.store->contacts();
  if (!list) return tl::unexpected(from_store(list.error()));
  std::vector<Contact> out;
  for (const auto& c : *list) {
    if (c.username == account_.username) continue;
    Contact contact;
    contact.username = c.username;
    contact.accepted = c.accepted;
    contact.verified = c.verified;
    contact.identity_changed_at = c.identity_changed_at;
    if (c.identity_key) contact.identity_key_hex = to_hex(c.identity_key->serialize());
    auto held = account_.store->held_count(c.username);
    if (!held) return tl::unexpected(from_store(held.error()));
    contact.held = *held;
    out.push_back(std::move(contact));
  }
  return out;
}

Result<store::Contact> Contacts::current(const std::string& user, bool ask_server) {
  std::optional<Error> unreachable;
  if (ask_server) {
    auto connected = link_.ensure_connected(SteadyClock::now() + account_.options.request_timeout);
    auto key = connected ? sessions_.lookup_identity(connected->connection, user)
                         : Result<protocol::PublicKey>(tl::unexpected(connected.error()));
    if (!key && key.error().code == ErrorCode::not_found) {
      return tl::unexpected(make_error(ErrorCode::not_found, "no such user"));
    }
    if (key) {
      std::lock_guard crypto_lock(account_.crypto_mu);
      bool ok = false;
      auto committed = account_.store->transaction([&] {
        ok = account_.identities.note(user, *key).has_value() &&
             sessions_.record_identity_changes().has_value();
        return ok;
      });
      if (!committed || !*committed || !ok) {
        (void)account_.identities.take_changes();
        return tl::unexpected(make_error(ErrorCode::store, "cannot record the contact's key"));
      }
    } else {
      unreachable = key.error();  // the key stored is the best there is
    }
  }
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto c = account_.store->load_contact(user);
  if (!c) return tl::unexpected(from_store(c.error()));
  if (!c->has_value() || !(*c)->identity_key) {
    if (unreachable) return tl::unexpected(*unreachable);
    return tl::unexpected(
        make_error(ErrorCode::not_found, "no identity key known for this user yet"));
  }
  return std::move(**c);
}

Result<SafetyNumber> Contacts::number(const store::Contact& contact) {
  auto fp = protocol::compute_fingerprint(account_.username, account_.identity_public,
                                          contact.username, *contact.identity_key);
  if (!fp) return tl::unexpected(from_protocol(fp.error()));
  SafetyNumber n;
  n.digits = fp->displayable;
  n.scannable = fp->scannable;
  n.identity_key_hex = to_hex(contact.identity_key->serialize());
  n.changed_at = contact.identity_changed_at;
  n.accepted = contact.accepted;
  n.verified = contact.verified;
  auto held = account_.store->held_count(contact.username);
  if (!held) return tl::unexpected(from_store(held.error()));
  n.held = *held;
  return n;
}

Result<SafetyNumber> Contacts::safety_number(const std::string& user_in) {
  auto user = normalize_username(user_in);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  if (*user == account_.username) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "a safety number is computed with another user"));
  }
  auto contact = current(*user, true);
  if (!contact) return tl::unexpected(contact.error());
  return number(*contact);
}

Result<SafetyNumber> Contacts::trust(const std::string& user_in,
                                     const std::optional<std::string>& digits_in, bool& released) {
  released = false;
  auto user = normalize_username(user_in);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  if (*user == account_.username) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "your own key needs no trust"));
  }
  std::optional<std::string> digits;
  if (digits_in) {
    std::string d;
    for (char ch : *digits_in) {
      // As shown (groups of five on three lines) or typed: any white space or dash between.
      if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '-') continue;
      if (ch < '0' || ch > '9') {
        return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                         "a safety number has only digits (spaces and line "
                                         "breaks are ignored)"));
      }
      d += ch;
    }
    if (d.size() != 60) {
      return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                       "a safety number has 60 digits (spaces are ignored)"));
    }
    digits = std::move(d);
  }
  // The key the user was shown (safety_number() records the server's); the server is asked only
  // when none is known yet.
  auto contact = current(*user, false);
  if (!contact && contact.error().code == ErrorCode::not_found) contact = current(*user, true);
  if (!contact) return tl::unexpected(contact.error());
  auto shown = number(*contact);
  if (!shown) return tl::unexpected(shown.error());
  if (digits && !crypto::constant_time_equal(as_bytes(*digits), as_bytes(shown->digits))) {
    return tl::unexpected(make_error(
        ErrorCode::safety_number_mismatch,
        "the digits given are not the safety number with this contact's current key; nothing "
        "was changed. Compare again: if they still differ, someone may be intercepting"));
  }

  std::lock_guard crypto_lock(account_.crypto_mu);
  if (!digits && account_.identities.policy() == TrustPolicy::never) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the trust policy \"never\" accepts a key only when its "
                                     "safety number is given and matches"));
  }
  store::Contact updated = *contact;
  // The key may have changed since it was shown: accept only the one the number was made with.
  auto latest = account_.store->load_contact(*user);
  if (!latest) return tl::unexpected(from_store(latest.error()));
  if (!latest->has_value() || (*latest)->identity_key != contact->identity_key) {
    return tl::unexpected(make_error(ErrorCode::untrusted_identity,
                                     "the contact's key changed again meanwhile; look at the new "
                                     "safety number first"));
  }
  const bool verified = digits.has_value() || (contact->verified && contact->accepted);
  std::size_t count = 0;
  auto committed = account_.store->transaction([&] {
    auto accepted = accept_key(account_, journal_, *user, *contact->identity_key, verified);
    if (!accepted) return false;
    count = *accepted;
    return true;
  });
  if (!committed || !*committed) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot record the contact's trust"));
  }
  released = count > 0;
  shown->accepted = true;
  shown->verified = verified;
  shown->held = 0;
  return *shown;
}

Result<std::vector<Message>> Contacts::history(const std::string& user_in, std::size_t limit) {
  auto user = normalize_username(user_in);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  auto list = account_.store->messages(*user, limit);
  if (!list) return tl::unexpected(from_store(list.error()));
  std::vector<Message> out;
  for (const auto& m : *list) out.push_back(to_message(m));
  return out;
}

}  // namespace sotto::client
