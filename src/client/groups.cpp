#include "client/groups.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <thread>

#include "client/attachment_format.h"
#include "client/attachment_history.h"
#include "client/content_codec.h"
#include "client/errors.h"
#include "client/group_codec.h"
#include "client/group_log.h"
#include "client/text.h"
#include "crypto/secret.h"
#include "protocol/messages.h"
#include "protocol/sender_keys.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;
using SteadyClock = std::chrono::steady_clock;

constexpr std::string_view kGroupsValue = "groups";
std::string state_value(const std::string& hex) {
  return "group/" + hex;
}
std::string shared_value(const std::string& hex) {
  return "group-sk/" + hex;
}
std::string join_value(const std::string& hex) {
  return "group-join/" + hex;
}
std::string peer_of(const std::string& hex) {
  return "group:" + hex;
}

std::string device_key(const std::string& user, std::uint32_t device) {
  return user + " " + std::to_string(device);
}

protocol::SenderKeyName key_name(const std::string& hex, const std::string& user,
                                 std::uint32_t device) {
  return {hex, protocol::Address{user, protocol::DeviceId(device)}};
}

Error invalid(std::string why) {
  return make_error(ErrorCode::invalid_argument, std::move(why));
}

// Whether a change takes anyone out of the group (then every remaining sender starts a new
// chain, which the members who went never get).
bool removes_someone(const content::GroupChange& c) {
  return c.remove_members_size() > 0 || c.leave();
}

}  // namespace

// --- store ------------------------------------------------------------------------------------

Result<std::optional<content::GroupState>> load_group_state(store::ClientStore& store,
                                                            const std::string& hex) {
  auto v = store.load_value(state_value(hex));
  if (!v) return tl::unexpected(from_store(v.error()));
  if (!v->has_value()) return std::optional<content::GroupState>{};
  content::GroupState s;
  if (!s.ParseFromArray((*v)->view().data(), static_cast<int>((*v)->view().size())) ||
      check_group_state(s) || to_hex(as_bytes(s.id())) != hex) {
    return tl::unexpected(
        make_error(ErrorCode::store, "a group's state in the local store is damaged"));
  }
  return std::optional<content::GroupState>{std::move(s)};
}

Group group_of(const content::GroupState& s, const std::string& self) {
  Group g;
  g.id = to_hex(as_bytes(s.id()));
  g.revision = s.revision();
  g.name = s.name();
  g.description = s.description();
  for (const auto& m : s.members()) g.members.push_back({m.user(), m.admin()});
  g.expire_timer = s.expire_timer();
  g.member = find_member(s, self) != nullptr;
  g.admin = is_admin(s, self);
  g.invite_link = !s.invite_secret().empty();
  return g;
}

Result<std::optional<content::GroupState>> Groups::load(const std::string& hex) {
  return load_group_state(*account_.store, hex);
}

Result<void> Groups::save(const content::GroupState& s) {
  const std::string hex = to_hex(as_bytes(s.id()));
  std::string bytes = s.SerializeAsString();
  auto saved = account_.store->save_value(state_value(hex), as_bytes(bytes));
  wipe(bytes);
  if (!saved) return tl::unexpected(from_store(saved.error()));
  auto ids = account_.store->load_value(kGroupsValue);
  if (!ids) return tl::unexpected(from_store(ids.error()));
  Bytes list;
  if (ids->has_value()) list.assign((*ids)->view().begin(), (*ids)->view().end());
  const ByteView id = as_bytes(s.id());
  for (std::size_t i = 0; i + kGroupIdBytes <= list.size(); i += kGroupIdBytes) {
    if (std::equal(id.begin(), id.end(), list.begin() + static_cast<std::ptrdiff_t>(i))) {
      return {};
    }
  }
  list.insert(list.end(), id.begin(), id.end());
  return store_result(account_.store->save_value(kGroupsValue, list));
}

Result<std::vector<std::string>> Groups::shared_with(const std::string& hex) {
  auto v = account_.store->load_value(shared_value(hex));
  if (!v) return tl::unexpected(from_store(v.error()));
  std::vector<std::string> out;
  if (!v->has_value()) return out;
  std::string text = bytes_string((*v)->view());
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    if (end == std::string::npos) break;
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Result<void> Groups::save_shared_with(const std::string& hex,
                                      const std::vector<std::string>& devices) {
  std::string text;
  for (const auto& d : devices) text += d + "\n";
  return store_result(account_.store->save_value(shared_value(hex), as_bytes(text)));
}

Result<void> Groups::rotate(const std::string& hex) {
  protocol::SenderKeyRecord fresh;
  (void)protocol::sender_key_distribution(fresh, account_.rng);  // a new chain and signing key
  if (auto saved = account_.store->save_sender_key(
          key_name(hex, account_.username, account_.device_id), fresh);
      !saved) {
    return tl::unexpected(from_protocol(saved.error()));
  }
  return save_shared_with(hex, {});
}

Group Groups::to_group(const content::GroupState& s) {
  return group_of(s, account_.username);
}

bool Groups::note(const std::string& hex, const Message& base, Event::Kind kind,
                  const std::string& detail, std::uint64_t timestamp) {
  const bool refused = kind == Event::Kind::group_refused;
  if (!hex.empty()) {
    // A change is a row of the group's history (so it is applied once), a notice like a
    // refusal: no one replies to it, reacts to it or reads it, and `history` says what it is.
    // (Rows written before this have the bare id and read as messages.)
    store::StoredMessage row{
        std::string(store::kNoticePrefix) + (refused ? "" : "change-") + base.id,
        peer_of(hex),
        base.from,
        base.device,
        timestamp,
        refused ? "[refused: " + detail + "]" : "[" + detail + "]",
        base.from == account_.username};
    if (!account_.store->add_message(row)) return false;
  }
  Event e;
  e.kind = kind;
  e.message = base;
  e.message.timestamp = timestamp;
  e.message.group = hex;
  if (!hex.empty()) e.message.conversation = peer_of(hex);
  e.detail = detail;
  return journal_.record(e).has_value();
}

// --- receiving --------------------------------------------------------------------------------

Groups::ContentResult Groups::on_content(ByteView plaintext, const std::string& source,
                                         std::uint32_t device, const Message& base, bool accepted) {
  ContentResult r;
  if (plaintext.size() > kMaxContentBytes) return r;
  content::Content c;
  if (!c.ParseFromArray(plaintext.data(), static_cast<int>(plaintext.size()))) return r;
  const std::string& self = account_.username;

  if (!c.sender_key_distribution().empty()) {
    if (c.sender_key_group_id().size() == kGroupIdBytes) {
      const auto name = key_name(to_hex(as_bytes(c.sender_key_group_id())), source, device);
      auto processed = protocol::process_sender_key_distribution(
          name, as_bytes(c.sender_key_distribution()), *account_.store);
      if (!processed && processed.error() == protocol::Error::store_failure) {
        r.ok = false;
        return r;
      }
      // A distribution that does not decode is dropped: the sender's messages then fail to
      // decrypt, which is reported.
    }
    if (c.body_case() == content::Content::BODY_NOT_SET) r.handled = true;
  }
  if (c.has_data() && c.data().has_sender_key_request()) {
    return on_sender_key_request(c.data().sender_key_request(), source, device);
  }
  if (!c.has_data() || (!c.data().has_group() && !c.data().has_group_change())) return r;
  r.handled = true;
  const content::DataMessage& d = c.data();
  const std::uint64_t timestamp = d.timestamp();
  const auto refuse = [&](const std::string& hex, const std::string& why) {
    r.ok = note(hex, base, Event::Kind::group_refused, why, timestamp);
    return r;
  };
  if (!d.has_group() || d.group().id().size() != kGroupIdBytes) {
    return refuse({}, "a group message from " + source + " without a valid group id");
  }
  const std::string hex = to_hex(as_bytes(d.group().id()));
  if (!d.has_group_change()) {
    return refuse(
        hex, "a group message from " + source + " sent outside the group's Sender Keys; not shown");
  }
  auto seen = account_.store->has_message(peer_of(hex), source, device, timestamp);
  if (!seen) {
    r.ok = false;
    return r;
  }
  if (*seen) return r;  // applied before (the same change sent again)
  const content::GroupChange& change = d.group_change();
  if (!accepted) {
    return refuse(hex, "a change from " + source +
                           ", whose new identity key is not accepted yet; not applied");
  }
  auto state = load(hex);
  if (!state) {
    r.ok = false;
    return r;
  }

  if (change.join_refused()) return on_join_refused(hex, source, base, timestamp);
  if (!change.join_secret().empty()) {
    // A request to join by link, addressed to this device of an admin.
    const auto& s = *state;
    const bool valid =
        s.has_value() && is_admin(*s, self) && !s->invite_secret().empty() &&
        crypto::constant_time_equal(as_bytes(change.join_secret()), as_bytes(s->invite_secret()));
    if (!valid) {
      const bool admin = s.has_value() && is_admin(*s, self);
      (void)refuse(s.has_value() ? hex : std::string(),
                   source + (s.has_value() && !admin
                                 ? " asked to join through an invite link of ours, but we are no "
                                   "longer an admin of this group"
                                 : " asked to join with an invite link that is not valid (reset, "
                                   "turned off, or not this group's)"));
      // The joiner hears that the link did not work (and nothing else of the group), also from
      // an admin who has left or was demoted since making the link.
      if (r.ok && s.has_value()) {
        r.followup = [this, group_id = d.group().id(), source, device] {
          answer_join_refused(group_id, source, device);
        };
      }
      return r;
    }
    if (find_member(*s, source) != nullptr) return r;
    r.followup = [this, hex, source] {
      std::lock_guard lock(mu_);
      content::GroupChange add;
      auto* m = add.add_add_members();
      m->set_user(source);
      add.set_via_link(true);
      (void)author(hex, std::move(add));
    };
    return r;
  }

  return take_change(hex, d, source, device, base);
}

Groups::EnvelopeResult Groups::on_sender_key_message(const svc::Envelope& envelope,
                                                     const std::string& id, const Message& base,
                                                     ByteView content_hash) {
  EnvelopeResult r;
  const auto source = normalize_username(envelope.source());
  if (!source) {
    r.failure = "a group message without a valid sender";
    return r;
  }
  auto message = protocol::SenderKeyMessage::decode(as_bytes(envelope.content()));
  if (!message) {
    r.failure = "a group message that cannot be read";
    return r;
  }
  const std::uint32_t device = envelope.source_device();
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto committed = account_.store->transaction([&] {
    const auto fail_store = [&] { return !(r.store_error = true); };
    auto ids = account_.store->load_value(kGroupsValue);
    if (!ids) return fail_store();
    // The group whose chain from this sender has the message's key id; the sender must be a
    // member of it as this device knows the group.
    std::optional<std::string> group;
    bool shares_a_group = false;  // only a fellow member is asked for its key
    if (ids->has_value()) {
      const ByteView list = (*ids)->view();
      for (std::size_t i = 0; i + kGroupIdBytes <= list.size() && !group; i += kGroupIdBytes) {
        const std::string hex = to_hex(list.subspan(i, kGroupIdBytes));
        auto s = load(hex);
        if (!s || !s->has_value() || find_member(**s, *source) == nullptr ||
            find_member(**s, account_.username) == nullptr) {
          continue;
        }
        shares_a_group = true;
        auto record = account_.store->load_sender_key(key_name(hex, *source, device));
        if (!record) return fail_store();
        if (record->has_value() && (*record)->find(message->key_id) != nullptr) group = hex;
      }
    }
    if (!group) {
      r.failure = "a group message from " + *source +
                  " under a key this device was not given for a group it shares with them";
      if (shares_a_group) {
        r.followup =
            ask_for_sender_key(*source, device, message->key_id.value, envelope.client_timestamp());
      }
      if (r.followup) *r.failure += "; asked the sender for its key and the message again";
      return false;
    }
    auto plain =
        protocol::group_decrypt(key_name(*group, *source, device), as_bytes(envelope.content()),
                                *account_.store, account_.clock.now_ms());
    if (!plain) {
      if (plain.error() == protocol::Error::store_failure) return fail_store();
      r.failure = describe_decrypt_failure(plain.error());
      return false;
    }
    content::Content c;
    const ByteView bytes = plain->view();
    if (bytes.size() > kMaxContentBytes ||
        !c.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
        (!c.has_data() && !c.has_edit() && !c.has_typing())) {
      r.failure = "a group message whose content cannot be read";
      return false;
    }
    r.kt_tree_head.assign(c.kt_tree_head().begin(), c.kt_tree_head().end());
    // The group the content names (where its kind keeps it) must be the key's.
    const std::string named = c.has_typing() ? c.typing().group_id()
                              : c.has_edit() ? c.edit().data().group().id()
                                             : c.data().group().id();
    const bool change = c.has_data() && c.data().has_group_change();
    // What is shown is read again from the plaintext (group_messages.cpp).
    if (c.has_data()) wipe(*c.mutable_data()->mutable_body());
    if (c.has_edit()) wipe(*c.mutable_edit()->mutable_data()->mutable_body());
    if (named.size() != kGroupIdBytes || to_hex(as_bytes(named)) != *group) {
      r.failure = "a group message that names another group than its key's";
      return false;
    }
    if (change) {
      r.failure = "a group change sent under a Sender Key (changes come in 1:1 sessions only)";
      return false;
    }
    if (!receive_content(bytes, *group, *source, device, id, base, r.receipts)) {
      return fail_store();
    }
    if (!account_.store->mark_envelope(id, content_hash)) return fail_store();
    return true;
  });
  if (!committed) r.store_error = true;
  return r;
}

// --- sending ----------------------------------------------------------------------------------

Result<SharedOutcome> Groups::send_shared(const ConnectionPtr& c,
                                          const std::vector<SharedRecipient>& recipients,
                                          const std::string& ciphertext, std::uint64_t timestamp,
                                          const std::array<std::uint8_t, 16>& message_id) {
  MultiSendMessage m;
  m.message_id = message_id;
  m.timestamp = timestamp;
  m.shared_type = kSenderKeyMessageType;
  m.shared_content.assign(ciphertext.begin(), ciphertext.end());
  // A member device whose queue is full (offline for long) must not keep the message from the
  // others: the server leaves it out and names it (docs/delivery.md), and the sender is told.
  m.leave_out_full = true;
  m.recipients.reserve(recipients.size());
  for (const auto& r : recipients) {
    if (r.devices.empty()) continue;
    MultiSendRecipient out{r.user, {}, false};
    out.devices.reserve(r.devices.size());
    for (const auto& [device, registration] : r.devices) {
      out.devices.push_back({device, registration, std::nullopt, {}});
    }
    m.recipients.push_back(std::move(out));
  }
  SharedOutcome outcome;
  if (m.recipients.empty()) {
    outcome.stored = true;  // nobody else: nothing to send
    return outcome;
  }
  auto answered = multi_send(c, m, account_.options.request_timeout);
  if (!answered) return tl::unexpected(answered.error());
  outcome.stored = answered->status == MultiSendOutcome::Status::stored;
  if (outcome.stored) outcome.left_out = std::move(answered->queue_full);
  outcome.mismatches = std::move(answered->mismatches);
  outcome.unknown_users = std::move(answered->unknown_users);
  return outcome;
}

Result<SendResult> Groups::send(const std::string& id, const std::string& body,
                                const std::vector<std::string>& attachments) {
  if (attachments.size() > kMaxAttachmentsPerMessage) {
    return tl::unexpected(invalid("too many attachments in one message (at most 32)"));
  }
  if (body.empty() && attachments.empty()) return tl::unexpected(invalid("empty message"));
  if (body.size() > kMaxBodyBytes)
    return tl::unexpected(invalid("message too long (at most 64 KiB)"));
  if (!valid_utf8(body)) {
    return tl::unexpected(invalid("the message is not valid UTF-8 text; nothing was sent"));
  }
  auto resolved = resolve(id);
  if (!resolved) return tl::unexpected(resolved.error());
  const std::string hex = *resolved;
  const std::string& self = account_.username;
  const std::uint64_t timestamp = outbox_.next_timestamp();
  content::Content c;
  c.mutable_data()->set_body(body);
  c.mutable_data()->set_timestamp(timestamp);
  for (const auto& a : attachments) {
    if (!c.mutable_data()->add_attachments()->ParseFromString(a)) {
      return tl::unexpected(invalid("malformed attachment"));
    }
  }
  auto sent = send_content(hex, c, timestamp, Fanout::everyone);
  for (auto& a : *c.mutable_data()->mutable_attachments()) wipe(*a.mutable_key());
  wipe(*c.mutable_data()->mutable_body());
  if (!sent) return sent;
  std::lock_guard crypto_lock(account_.crypto_mu);
  store::StoredMessage row{"local-" + to_hex(new_message_id(timestamp, account_.rng)),
                           peer_of(hex),
                           self,
                           account_.device_id,
                           timestamp,
                           body,
                           true};
  (void)account_.store->add_message(row);  // sent; a history failure must not say otherwise
  if (!attachments.empty()) {
    (void)save_message_attachments(*account_.store, row.envelope_id, attachments);
  }
  wipe(row.body);
  return sent;
}

Result<SendResult> Groups::send_content(const std::string& hex, content::Content& message,
                                        std::uint64_t timestamp, Fanout fanout) {
  std::lock_guard lock(mu_);
  const std::string& self = account_.username;
  content::GroupState state;
  std::string ciphertext;
  std::string distribution;  // our chain as it is before this message (Content, padded)
  std::vector<std::string> shared;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto loaded = load(hex);
    if (!loaded) return tl::unexpected(loaded.error());
    if (!loaded->has_value() || find_member(**loaded, self) == nullptr) {
      return tl::unexpected(make_error(ErrorCode::forbidden, "you are not a member of this group"));
    }
    state = std::move(**loaded);
    const auto own = key_name(hex, self, account_.device_id);
    auto skdm = protocol::create_sender_key_distribution(own, *account_.store, account_.rng);
    if (!skdm) return tl::unexpected(from_protocol(skdm.error()));
    content::Content dist;
    dist.set_sender_key_distribution(bytes_string(*skdm));
    dist.set_sender_key_group_id(state.id());
    distribution = encode_padded(dist, account_.kt);

    // The group this is for, where the kind of content keeps it.
    if (message.has_typing()) {
      message.mutable_typing()->set_group_id(state.id());
    } else {
      auto* g = message.has_edit() ? message.mutable_edit()->mutable_data()->mutable_group()
                                   : message.mutable_data()->mutable_group();
      g->set_id(state.id());
      g->set_revision(state.revision());
    }
    std::string plaintext = encode_padded(message, account_.kt);
    auto ct = protocol::group_encrypt(own, as_bytes(plaintext), *account_.store, account_.rng);
    wipe(plaintext);
    if (!ct) return tl::unexpected(from_protocol(ct.error()));
    ciphertext = bytes_string(*ct);
    auto s = shared_with(hex);
    if (!s) return tl::unexpected(s.error());
    shared = std::move(*s);
  }

  const auto deadline = SteadyClock::now() + account_.options.send_timeout;
  const auto message_id = new_message_id(timestamp, account_.rng);
  std::vector<std::string> members;
  for (const auto& m : state.members()) {
    if (fanout == Fanout::everyone || m.user() != self) members.push_back(m.user());
  }
  std::size_t devices_sent = 0;
  std::vector<std::string> left_out;
  std::optional<Error> last_error;
  for (int round = 0;; ++round) {
    if (round > kMaxStaleRetries + 1) {
      return tl::unexpected(last_error.value_or(
          make_error(ErrorCode::server, "the members' device lists keep changing; try again")));
    }
    if (SteadyClock::now() > deadline) {
      return tl::unexpected(
          last_error.value_or(make_error(ErrorCode::timeout, "not sent: the send timed out")));
    }
    auto connected = link_.ensure_connected(deadline);
    if (!connected) return tl::unexpected(connected.error());
    const ConnectionPtr c = connected->connection;

    std::vector<SharedRecipient> recipients;
    for (const auto& user : members) {
      const auto devices = [&]() -> Result<std::vector<std::uint32_t>> {
        std::lock_guard crypto_lock(account_.crypto_mu);
        auto d = account_.store->session_devices(user);
        if (!d) return tl::unexpected(from_store(d.error()));
        if (user == self) std::erase(*d, account_.device_id);
        return *d;
      };
      auto listed = devices();
      if (!listed) return tl::unexpected(listed.error());
      if (listed->empty()) {
        // No session with any device of the member yet (or, for us, with our other devices,
        // which the server checks only when we list our account): sessions with all of them.
        std::vector<std::uint32_t> wanted;
        if (user == self) {
          svc::Request list;
          list.mutable_list_devices();
          auto answered = link_.call_ok(c, std::move(list));
          if (!answered) return tl::unexpected(answered.error());
          for (const auto& d : answered->list_devices().devices()) {
            if (d.id() != account_.device_id) wanted.push_back(d.id());
          }
          if (wanted.empty()) continue;  // no other device of ours
        }
        auto bundles = sessions_.fetch_bundles(c, user, wanted);
        if (!bundles) {
          if (bundles.error().code == ErrorCode::not_found) continue;  // the account is gone
          return tl::unexpected(bundles.error());
        }
        {
          std::lock_guard crypto_lock(account_.crypto_mu);
          auto ok = sessions_.process_bundles(user, *bundles);
          auto reported = sessions_.record_identity_changes();
          if (!ok) return tl::unexpected(ok.error());
          if (!reported) return tl::unexpected(reported.error());
        }
        listed = devices();
        if (!listed) return tl::unexpected(listed.error());
      }
      std::vector<std::uint32_t> need;
      for (auto d : *listed) {
        if (std::find(shared.begin(), shared.end(), device_key(user, d)) == shared.end()) {
          need.push_back(d);
        }
      }
      if (!need.empty()) {
        // Our chain first, in the 1:1 session, so the device can read this message.
        auto sent = outbox_.send_to_devices(user, need, distribution, outbox_.next_timestamp());
        if (!sent) return tl::unexpected(sent.error());
        for (auto d : need) shared.push_back(device_key(user, d));
        std::lock_guard crypto_lock(account_.crypto_mu);
        if (auto saved = save_shared_with(hex, shared); !saved) {
          return tl::unexpected(saved.error());
        }
      }
      SharedRecipient r{user, {}};
      {
        std::lock_guard crypto_lock(account_.crypto_mu);
        for (auto d : *listed) {
          const std::string key = device_key(user, d);
          if (auto known = registrations_.find(key); known != registrations_.end()) {
            r.devices.emplace_back(d, known->second);
            continue;
          }
          auto record = account_.store->load_session({user, protocol::DeviceId(d)});
          if (!record) return tl::unexpected(from_protocol(record.error()));
          if (!record->has_value() || !(*record)->has_current()) continue;
          const std::uint32_t registration = (*record)->current().remote_registration_id.value;
          registrations_[key] = registration;
          r.devices.emplace_back(d, registration);
        }
      }
      recipients.push_back(std::move(r));
    }
    auto outcome = send_shared(c, recipients, ciphertext, timestamp, message_id);
    if (!outcome) {
      // Lost connection or no answer: the send may have been stored; the same message id makes a
      // retry stored at most once.
      last_error = outcome.error();
      if (outcome.error().code != ErrorCode::network &&
          outcome.error().code != ErrorCode::timeout) {
        return tl::unexpected(outcome.error());
      }
      continue;
    }
    if (outcome->stored) {
      for (const auto& r : recipients) devices_sent += r.devices.size();
      for (const auto& full : outcome->left_out) {
        for (auto d : full.device_ids) {
          left_out.push_back(full.username + " (device " + std::to_string(d) + ")");
          if (devices_sent > 0) --devices_sent;
        }
      }
      break;
    }
    for (const auto& gone : outcome->unknown_users) std::erase(members, gone);
    for (const auto& mismatch : outcome->mismatches) {
      const std::string& user = mismatch.username;
      // The registration ids we had for this member may be the stale ones: read them again.
      std::erase_if(registrations_,
                    [&](const auto& entry) { return entry.first.starts_with(user + " "); });
      {
        std::lock_guard crypto_lock(account_.crypto_mu);
        for (auto d : mismatch.extra) {
          if (auto archived = sessions_.archive({user, protocol::DeviceId(d)}); !archived) {
            return tl::unexpected(archived.error());
          }
        }
        // A re-installed (stale) or gone device needs our chain again if it comes back.
        std::erase_if(shared, [&](const std::string& k) {
          for (auto d : mismatch.extra) {
            if (k == device_key(user, d)) return true;
          }
          for (auto d : mismatch.stale) {
            if (k == device_key(user, d)) return true;
          }
          return false;
        });
        if (auto saved = save_shared_with(hex, shared); !saved) {
          return tl::unexpected(saved.error());
        }
      }
      std::vector<std::uint32_t> fetch = mismatch.missing;
      fetch.insert(fetch.end(), mismatch.stale.begin(), mismatch.stale.end());
      if (fetch.empty()) continue;
      auto bundles = sessions_.fetch_bundles(c, user, fetch);
      if (!bundles) return tl::unexpected(bundles.error());
      std::lock_guard crypto_lock(account_.crypto_mu);
      auto ok = sessions_.process_bundles(user, *bundles);
      auto reported = sessions_.record_identity_changes();
      if (!ok) return tl::unexpected(ok.error());
      if (!reported) return tl::unexpected(reported.error());
    }
  }
  return SendResult{timestamp, devices_sent, std::move(left_out)};
}

// --- authoring --------------------------------------------------------------------------------

Result<std::string> resolve_group_id(store::ClientStore& store, const std::string& id) {
  if (auto bytes = parse_group_id(id)) return to_hex(*bytes);
  // The first digits, as the terminal output shows them (at least 8): the one group known here
  // whose id starts with them.
  const bool hex_digits = !id.empty() && std::all_of(id.begin(), id.end(), [](char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
  });
  if (!hex_digits || id.size() < 8 || id.size() >= 2 * kGroupIdBytes) {
    return tl::unexpected(invalid("a group id is 64 hex digits (or its first 8 or more)"));
  }
  std::string prefix = id;
  for (auto& ch : prefix) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  auto ids = store.load_value(kGroupsValue);
  if (!ids) return tl::unexpected(from_store(ids.error()));
  std::optional<std::string> found;
  if (ids->has_value()) {
    const ByteView list = (*ids)->view();
    for (std::size_t i = 0; i + kGroupIdBytes <= list.size(); i += kGroupIdBytes) {
      std::string candidate = to_hex(list.subspan(i, kGroupIdBytes));
      if (!candidate.starts_with(prefix) || candidate == found) continue;
      if (found) {
        return tl::unexpected(
            invalid("several groups have ids starting with " + prefix + "; give more digits"));
      }
      found = std::move(candidate);
    }
  }
  if (!found) return tl::unexpected(make_error(ErrorCode::not_found, "no such group"));
  return *found;
}

Result<std::string> Groups::resolve(const std::string& id) {
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto resolved = resolve_group_id(*account_.store, id);
  if (!resolved) return tl::unexpected(resolved.error());
  const std::string hex = *resolved;
  auto s = load(hex);
  if (!s) return tl::unexpected(s.error());
  if (!s->has_value()) return tl::unexpected(make_error(ErrorCode::not_found, "no such group"));
  return hex;
}

Result<content::GroupState> Groups::author(const std::string& hex, content::GroupChange change) {
  const std::string& self = account_.username;
  content::GroupState before;
  content::GroupState after;
  const std::uint64_t timestamp = outbox_.next_timestamp();
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto loaded = load(hex);
    if (!loaded) return tl::unexpected(loaded.error());
    if (!loaded->has_value()) {
      return tl::unexpected(make_error(ErrorCode::not_found, "no such group"));
    }
    before = std::move(**loaded);
    if (find_member(before, self) == nullptr) {
      return tl::unexpected(make_error(ErrorCode::forbidden, "you are not a member of this group"));
    }
    if (!change.leave() && !is_admin(before, self)) {
      return tl::unexpected(
          make_error(ErrorCode::forbidden, "only an admin of the group can change it"));
    }
    // Made on the change that made our current revision (docs/groups.md, section 8).
    auto log = load_log(hex, before);
    if (!log) return tl::unexpected(log.error());
    change.clear_state();
    change.set_parent(log->entries(log->entries_size() - 1).hash());
    auto applied = apply_group_change(before, change, self, before.revision());
    if (!applied) return tl::unexpected(invalid(applied.error()));
    after = std::move(*applied);
    const Bytes hash = change_hash(as_bytes(before.id()), before.revision(), self,
                                   account_.device_id, timestamp, change);
    push_entry(*log, own_entry(after, change, hash, self, account_.device_id, timestamp));
    Message base;
    base.id = "local-" + to_hex(new_message_id(timestamp, account_.rng));
    base.from = self;
    base.device = account_.device_id;
    bool ok = false;
    auto committed = account_.store->transaction([&] {
      ok = save_log(hex, *log).has_value() &&
           (!removes_someone(change) || rotate(hex).has_value()) &&
           note(hex, base, Event::Kind::group_changed, describe_group_change(change, self),
                timestamp);
      return ok;
    });
    if (!committed || !*committed || !ok) {
      return tl::unexpected(make_error(ErrorCode::store, "the group could not be saved"));
    }
  }
  // Members in the new state get the state with the change (a new member needs it); those who
  // went get the change only (not the new invite secret).
  content::Content with_state;
  auto* d = with_state.mutable_data();
  d->set_timestamp(timestamp);
  d->mutable_group()->set_id(before.id());
  d->mutable_group()->set_revision(before.revision());
  *d->mutable_group_change() = change;
  content::Content without_state = with_state;
  *d->mutable_group_change()->mutable_state() = after;
  const std::string full = encode_padded(with_state, account_.kt);
  const std::string bare = encode_padded(without_state, account_.kt);
  std::set<std::string> users;
  for (const auto& m : before.members()) users.insert(m.user());
  for (const auto& m : after.members()) users.insert(m.user());
  std::optional<Error> first_error;
  for (const auto& user : users) {
    const std::string& bytes = find_member(after, user) != nullptr ? full : bare;
    auto sent = outbox_.send_content(user, bytes, timestamp);
    if (!sent && sent.error().code != ErrorCode::not_found && !first_error) {
      first_error = sent.error();
    }
  }
  if (first_error) {
    first_error->message =
        "the change is made here, but not every member was told: " + first_error->message;
    return tl::unexpected(*first_error);
  }
  return after;
}

Result<Group> Groups::create(const std::string& name, const std::vector<std::string>& members) {
  if (auto bad = group_text_problem(name, kMaxGroupNameBytes, "name", false)) {
    return tl::unexpected(invalid(*bad));
  }
  const std::string& self = account_.username;
  content::GroupChange add;
  std::set<std::string> seen{self};
  for (const auto& m : members) {
    auto user = normalize_username(m);
    if (!user) return tl::unexpected(invalid("invalid username: " + m));
    if (*user == self) {
      return tl::unexpected(
          invalid("you are in the group already (its admin): give the other members only"));
    }
    if (!seen.insert(*user).second) continue;
    add.add_add_members()->set_user(*user);
  }
  if (seen.size() > kMaxGroupMembers) {
    return tl::unexpected(invalid("a group has at most 1024 members"));
  }
  {
    std::vector<std::string> added;
    for (const auto& m : add.add_members()) added.push_back(m.user());
    if (auto exist = check_accounts(added); !exist) return tl::unexpected(exist.error());
  }
  std::lock_guard lock(mu_);
  content::GroupState s;
  Bytes id(kGroupIdBytes);
  account_.rng.fill(id);
  s.set_id(bytes_string(id));
  s.set_name(name);
  auto* me = s.add_members();
  me->set_user(self);
  me->set_admin(true);
  const std::string hex = to_hex(id);
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto committed = account_.store->transaction(
        [&] { return save_log(hex, log_from_state(s)) && rotate(hex); });
    if (!committed || !*committed) {
      return tl::unexpected(make_error(ErrorCode::store, "the group could not be saved"));
    }
  }
  if (add.add_members_size() == 0) {
    // Only us: the group exists at revision 0; our other devices hear at the first change.
    return to_group(s);
  }
  auto after = author(hex, std::move(add));
  if (!after) return tl::unexpected(after.error());
  return to_group(*after);
}

Result<Group> Groups::update(const std::string& id, const GroupUpdate& u) {
  std::lock_guard lock(mu_);
  auto hex = resolve(id);
  if (!hex) return tl::unexpected(hex.error());
  {
    // Who may change it, and whether there is a picture to remove, before anything is uploaded
    // or authored: a member who left hears that, not that admins only may change it.
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto loaded = load(*hex);
    if (!loaded) return tl::unexpected(loaded.error());
    if (!loaded->has_value() || find_member(**loaded, account_.username) == nullptr) {
      return tl::unexpected(make_error(ErrorCode::forbidden, "you are not a member of this group"));
    }
    if (u.remove_avatar && !u.avatar && !(*loaded)->has_avatar()) {
      return tl::unexpected(invalid("the group has no picture; nothing was changed"));
    }
  }
  std::vector<content::GroupChange> changes;
  const auto names = [&](const std::vector<std::string>& in,
                         google::protobuf::RepeatedPtrField<std::string>* out) -> Result<void> {
    for (const auto& n : in) {
      auto user = normalize_username(n);
      if (!user) return tl::unexpected(invalid("invalid username: " + n));
      *out->Add() = *user;
    }
    return {};
  };
  if (!u.add.empty()) {
    content::GroupChange c;
    for (const auto& n : u.add) {
      auto user = normalize_username(n);
      if (!user) return tl::unexpected(invalid("invalid username: " + n));
      c.add_add_members()->set_user(*user);
    }
    changes.push_back(std::move(c));
  }
  if (!u.remove.empty()) {
    content::GroupChange c;
    if (auto ok = names(u.remove, c.mutable_remove_members()); !ok)
      return tl::unexpected(ok.error());
    for (const auto& user : c.remove_members()) {
      if (user == account_.username) {
        return tl::unexpected(invalid(
            "you cannot remove yourself from a group: leave it instead (`sotto group leave ID`, "
            "the daemon's quitGroup); nothing was changed"));
      }
    }
    changes.push_back(std::move(c));
  }
  if (!u.make_admin.empty()) {
    content::GroupChange c;
    if (auto ok = names(u.make_admin, c.mutable_promote_admins()); !ok)
      return tl::unexpected(ok.error());
    changes.push_back(std::move(c));
  }
  if (!u.revoke_admin.empty()) {
    content::GroupChange c;
    if (auto ok = names(u.revoke_admin, c.mutable_demote_admins()); !ok)
      return tl::unexpected(ok.error());
    changes.push_back(std::move(c));
  }
  if (u.name) {
    if (auto bad = group_text_problem(*u.name, kMaxGroupNameBytes, "name", false)) {
      return tl::unexpected(invalid(*bad));
    }
  }
  if (u.description) {
    if (auto bad =
            group_text_problem(*u.description, kMaxGroupDescriptionBytes, "description", true)) {
      return tl::unexpected(invalid(*bad));
    }
  }
  if (!u.add.empty()) {
    std::vector<std::string> added;
    for (const auto& m : changes.front().add_members()) added.push_back(m.user());
    if (auto exist = check_accounts(added); !exist) return tl::unexpected(exist.error());
  }
  if (u.name) {
    content::GroupChange c;
    c.set_set_name(true);
    c.set_name(*u.name);
    changes.push_back(std::move(c));
  }
  if (u.description) {
    content::GroupChange c;
    c.set_set_description(true);
    c.set_description(*u.description);
    changes.push_back(std::move(c));
  }
  if (u.expire_timer) {
    content::GroupChange c;
    c.set_set_expire_timer(true);
    c.set_expire_timer(*u.expire_timer);
    changes.push_back(std::move(c));
  }
  if (u.avatar && u.remove_avatar) {
    return tl::unexpected(invalid("a new group picture or none, not both"));
  }
  if (u.avatar) {
    auto pointer = upload_avatar(*hex, *u.avatar);
    if (!pointer) return tl::unexpected(pointer.error());
    content::GroupChange c;
    c.set_set_avatar(true);
    *c.mutable_avatar() = std::move(*pointer);
    changes.push_back(std::move(c));
  }
  if (u.remove_avatar) {
    content::GroupChange c;
    c.set_set_avatar(true);
    changes.push_back(std::move(c));
  }
  if (u.reset_link || u.disable_link) {
    content::GroupChange c;
    c.set_set_invite_secret(true);
    if (!u.disable_link) {
      Bytes secret(kInviteSecretBytes);
      account_.rng.fill(secret);
      c.set_invite_secret(bytes_string(secret));
    }
    changes.push_back(std::move(c));
  }
  if (changes.empty()) return tl::unexpected(invalid("nothing to change"));
  std::optional<content::GroupState> last;
  bool avatar_changed = false;
  for (auto& c : changes) {
    avatar_changed = avatar_changed || c.set_avatar();
    auto after = author(*hex, std::move(c));
    if (!after) return tl::unexpected(after.error());
    last = std::move(*after);
  }
  // Our own picture is saved as the members save it (fetched back, so it is the same bytes); a
  // failure here is tried again later.
  if (avatar_changed) (void)fetch_avatar(*hex);
  Group g = to_group(*last);
  std::lock_guard crypto_lock(account_.crypto_mu);
  fill_avatar(g, *last);
  return g;
}

Result<Group> Groups::leave(const std::string& id) {
  std::lock_guard lock(mu_);
  auto hex = resolve(id);
  if (!hex) return tl::unexpected(hex.error());
  content::GroupChange c;
  c.set_leave(true);
  auto after = author(*hex, std::move(c));
  if (!after) return tl::unexpected(after.error());
  return to_group(*after);
}

Result<std::string> Groups::invite_link(const std::string& id, bool reset) {
  std::lock_guard lock(mu_);
  auto hex = resolve(id);
  if (!hex) return tl::unexpected(hex.error());
  content::GroupState s;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto loaded = load(*hex);
    if (!loaded) return tl::unexpected(loaded.error());
    if (!loaded->has_value() || find_member(**loaded, account_.username) == nullptr) {
      return tl::unexpected(make_error(ErrorCode::forbidden, "you are not a member of this group"));
    }
    s = std::move(**loaded);
  }
  if (!is_admin(s, account_.username)) {
    return tl::unexpected(
        make_error(ErrorCode::forbidden, "only an admin of the group can give its invite link"));
  }
  if (reset || s.invite_secret().empty()) {
    content::GroupChange c;
    c.set_set_invite_secret(true);
    Bytes secret(kInviteSecretBytes);
    account_.rng.fill(secret);
    c.set_invite_secret(bytes_string(secret));
    auto after = author(*hex, std::move(c));
    if (!after) return tl::unexpected(after.error());
    s = std::move(*after);
  }
  InviteLink link{Bytes(s.id().begin(), s.id().end()),
                  Bytes(s.invite_secret().begin(), s.invite_secret().end()), account_.username,
                  account_.device_id};
  return format_invite_link(link);
}

Result<Group> Groups::join(const std::string& text) {
  auto link = parse_invite_link(text);
  if (!link) return tl::unexpected(invalid("not a group invite link (sotto-group:...)"));
  if (link->admin == account_.username) {
    return tl::unexpected(invalid("this invite link is our own"));
  }
  std::lock_guard lock(mu_);
  const std::string hex = to_hex(link->group_id);
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto s = load(hex);
    if (!s) return tl::unexpected(s.error());
    if (s->has_value() && find_member(**s, account_.username) != nullptr) return to_group(**s);
    if (auto saved = account_.store->save_value(join_value(hex), as_bytes(link->admin)); !saved) {
      return tl::unexpected(from_store(saved.error()));
    }
  }
  content::Content c;
  auto* d = c.mutable_data();
  const std::uint64_t timestamp = outbox_.next_timestamp();
  d->set_timestamp(timestamp);
  d->mutable_group()->set_id(bytes_string(link->group_id));
  d->mutable_group_change()->set_join_secret(bytes_string(link->secret));
  std::string bytes = encode_padded(c, account_.kt);
  auto sent = outbox_.send_to_devices(link->admin, {link->device}, bytes, timestamp);
  wipe(bytes);
  if (!sent) return tl::unexpected(sent.error());
  Group g;
  g.id = hex;
  return g;
}

Result<std::vector<Group>> Groups::list() {
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto ids = account_.store->load_value(kGroupsValue);
  if (!ids) return tl::unexpected(from_store(ids.error()));
  std::vector<Group> out;
  if (!ids->has_value()) return out;
  const ByteView list = (*ids)->view();
  for (std::size_t i = 0; i + kGroupIdBytes <= list.size(); i += kGroupIdBytes) {
    auto s = load(to_hex(list.subspan(i, kGroupIdBytes)));
    if (!s) return tl::unexpected(s.error());
    if (s->has_value()) {
      out.push_back(to_group(**s));
      fill_avatar(out.back(), **s);
    }
  }
  return out;
}

Result<Group> Groups::info(const std::string& id) {
  auto hex = resolve(id);
  if (!hex) return tl::unexpected(hex.error());
  // A picture whose download failed (or that came with a backup) is fetched now; still failing,
  // the group is shown with its picture "not downloaded".
  (void)fetch_avatar(*hex);
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto s = load(*hex);
  if (!s) return tl::unexpected(s.error());
  Group g = to_group(**s);
  fill_avatar(g, **s);
  return g;
}

Result<std::vector<Message>> Groups::history(const std::string& id, std::size_t limit) {
  auto hex = resolve(id);
  if (!hex) return tl::unexpected(hex.error());
  auto rows = account_.store->messages(peer_of(*hex), limit);
  if (!rows) return tl::unexpected(from_store(rows.error()));
  std::vector<Message> out;
  for (auto& r : *rows) {
    Message m;
    m.id = r.envelope_id;
    m.from = r.sender;
    m.device = r.sender_device;
    m.timestamp = r.timestamp;
    m.body = std::move(r.body);
    m.conversation = r.peer;
    m.outgoing = r.outgoing;
    m.group = *hex;
    m.attachments = load_message_attachments(*account_.store, m.id);
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace sotto::client
