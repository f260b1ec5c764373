#include "client/conversations.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "client/attachment_format.h"
#include "client/attachment_history.h"
#include "client/contacts.h"
#include "client/emoji.h"
#include "client/errors.h"
#include "client/groups.h"
#include "client/text.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

Error invalid(std::string message) {
  return make_error(ErrorCode::invalid_argument, std::move(message));
}

constexpr std::uint64_t ms_of(std::chrono::hours h) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(h).count());
}

// A prefix of `text` of at most `max` bytes that does not cut a UTF-8 sequence.
std::string excerpt(const std::string& text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n);
}

Result<void> check_body(const std::string& body) {
  if (body.empty()) return tl::unexpected(invalid("empty message"));
  if (body.size() > kMaxBodyBytes)
    return tl::unexpected(invalid("message too long (at most 64 KiB)"));
  if (!valid_utf8(body)) {
    return tl::unexpected(invalid("the message is not valid UTF-8 text; nothing was sent"));
  }
  return {};
}

void set_ref(content::Quote& q, const MessageRef& ref, const std::string& text) {
  q.set_author(ref.author);
  q.set_timestamp(ref.timestamp);
  q.set_text(text);
}

// Whether an edit or delete at `action_ts` (arriving at the server at `server_ts`, 0: unknown) of
// a message sent at `target_ts` is within `window`.
bool in_time(std::uint64_t target_ts, std::uint64_t action_ts, std::uint64_t server_ts,
             std::uint64_t window) {
  if (action_ts <= target_ts || action_ts - target_ts > window) return false;
  return server_ts == 0 || server_ts <= target_ts + window + kLateArrivalSlackMs;
}

}  // namespace

// --- state -------------------------------------------------------------------------------------

bool Conversations::load(const std::string& peer, const std::string& author, std::uint64_t ts,
                         MessageState& out) {
  out.Clear();
  auto record = account_.store->load_message_state(peer, author, ts);
  if (!record) return false;
  if (record->has_value()) {
    if (auto s = decode_state((*record)->view())) out = std::move(*s);
  }
  return true;
}

bool Conversations::save(const std::string& peer, const std::string& author, std::uint64_t ts,
                         const MessageState& s) {
  crypto::SecretBuffer record = encode_state(s);
  const bool saved =
      account_.store->save_message_state(peer, author, ts, s.expires_at(), record.view())
          .has_value();
  if (saved && s.expires_at() != 0) wake();
  return saved;
}

std::uint32_t Conversations::timer_locked(const std::string& peer) {
  auto v = account_.store->load_value(std::string(kTimerValuePrefix) + peer);
  if (!v || !v->has_value() || (*v)->size() != 4) return 0;
  const auto* p = (*v)->data();
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

bool Conversations::read_receipts_locked() {
  auto v = account_.store->load_value(kReadReceiptsValue);
  if (!v || !v->has_value() || (*v)->size() != 1) return true;
  return (*v)->data()[0] != 0;
}

Result<std::uint32_t> Conversations::timer(const std::string& user) {
  auto peer = conversation_of(user);
  if (!peer) return tl::unexpected(peer.error());
  return timer_for(*peer);
}

Result<void> Conversations::set_read_receipts(bool on) {
  const std::uint8_t v = on ? 1 : 0;
  if (auto saved = account_.store->save_value(kReadReceiptsValue, ByteView(&v, 1)); !saved) {
    return tl::unexpected(from_store(saved.error()));
  }
  // The account's other devices follow. Best effort, and short: the setting is changed here
  // whether or not they can be told now (it can be set there too).
  content::Content c;
  c.mutable_sync()->mutable_settings()->set_read_receipts_off(!on);
  (void)outbox_.send_to_own_devices(encode_padded(c, account_.kt), kSettingsSyncTimeout);
  return {};
}

bool Conversations::receive_settings(const ReceivedContent& c) {
  const std::uint8_t v = c.read_receipts ? 1 : 0;
  return account_.store->save_value(kReadReceiptsValue, ByteView(&v, 1)).has_value();
}

Result<bool> Conversations::read_receipts() {
  return read_receipts_locked();
}

Result<std::string> Conversations::conversation_of(const std::string& user) {
  if (user.rfind("group:", 0) == 0) {
    // A group's messages are kept under "group:" + its id (groups.h).
    if (groups_ == nullptr) return tl::unexpected(invalid("groups are not available here"));
    auto state = groups_->state(user.substr(6));
    if (!state) return tl::unexpected(state.error());
    return "group:" + to_hex(as_bytes(state->id()));
  }
  auto peer = normalize_username(user);
  if (!peer) return tl::unexpected(invalid("invalid username"));
  return *peer;
}

// --- reading -----------------------------------------------------------------------------------

Result<std::vector<Message>> Conversations::decorate(store::ClientStore& store,
                                                     const std::string& peer,
                                                     const std::vector<store::StoredMessage>& rows,
                                                     std::uint64_t now_ms) {
  std::map<std::pair<std::string, std::uint64_t>, MessageState> states;
  if (auto list = store.message_states(peer)) {
    for (auto& row : *list) {
      if (auto s = decode_state(row.record.view())) {
        states.emplace(std::make_pair(row.author, row.timestamp), std::move(*s));
      }
    }
  }  // a store without the table yet (an older file read without write access): no states
  std::vector<Message> out;
  out.reserve(rows.size());
  for (const auto& row : rows) {
    Message m = to_message(row);
    if (peer.rfind("group:", 0) == 0) m.group = peer.substr(6);
    if (auto it = states.find({row.sender, row.timestamp});
        it != states.end() && row.envelope_id.rfind(store::kNoticePrefix, 0) != 0) {
      apply_state(it->second, m);
      if (m.expires_at != 0 && m.expires_at <= now_ms) continue;  // gone, not yet removed
    }
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::vector<Message>> Conversations::history(const std::string& user, std::size_t limit) {
  auto peer = conversation_of(user);
  if (!peer) return tl::unexpected(peer.error());
  // Not behind a request to the server that holds crypto_mu (a daemon answers history while a
  // send waits): what is due is hidden below anyway, and the expiry thread removes it.
  expire_due_if_free();
  auto rows = account_.store->messages(*peer, limit);
  if (!rows) return tl::unexpected(from_store(rows.error()));
  auto out = decorate(*account_.store, *peer, *rows, account_.clock.now_ms());
  for (auto& row : *rows) wipe(row.body);
  if (out) mark_mentions(*out, account_.username);
  return out;
}

Result<Message> Conversations::find(const std::string& id) {
  if (id.empty()) return tl::unexpected(invalid("empty message id"));
  tl::expected<std::optional<store::StoredMessage>, store::ClientError> found =
      std::optional<store::StoredMessage>{};
  if (const auto colon = id.rfind(':'); colon != std::string::npos) {
    auto author = normalize_username(id.substr(0, colon));
    std::uint64_t ts = 0;
    const char* first = id.data() + colon + 1;
    const char* last = id.data() + id.size();
    const auto [end, ec] = std::from_chars(first, last, ts);
    if (!author || ec != std::errc() || end != last || ts == 0) {
      return tl::unexpected(
          invalid("a message id is the id shown by receive or history, or "
                  "AUTHOR:TIMESTAMP"));
    }
    found = account_.store->find_message_by_ref(*author, ts);
  } else if (id.find_first_not_of("0123456789") == std::string::npos && id.size() <= 19) {
    // The timestamp alone, as the CLI shows it: enough unless two messages share it.
    auto at = account_.store->find_messages_at(std::stoull(id));
    if (!at) return tl::unexpected(from_store(at.error()));
    if (at->size() > 1) {
      for (auto& m : *at) wipe(m.body);
      return tl::unexpected(
          invalid("several messages have this timestamp; name one as "
                  "AUTHOR:TIMESTAMP"));
    }
    if (!at->empty()) found = std::optional<store::StoredMessage>{std::move(at->front())};
  } else {
    found = account_.store->find_message_by_id(id);
  }
  if (!found) return tl::unexpected(from_store(found.error()));
  if (!found->has_value() || (*found)->envelope_id.rfind(store::kNoticePrefix, 0) == 0) {
    return tl::unexpected(make_error(ErrorCode::not_found,
                                     "no message with this id on this device (ids are shown by "
                                     "`receive` and `history`)"));
  }
  auto decorated = decorate(*account_.store, (*found)->peer, {**found}, account_.clock.now_ms());
  if (!decorated) return tl::unexpected(decorated.error());
  if (decorated->empty()) {
    return tl::unexpected(make_error(ErrorCode::not_found, "that message has disappeared"));
  }
  mark_mentions(*decorated, account_.username);
  return std::move(decorated->front());
}

// --- sending -----------------------------------------------------------------------------------

Result<SendResult> Conversations::send_action(const std::string& conversation,
                                              content::Content& to_peer, content::Content& to_own,
                                              std::uint64_t timestamp) {
  if (conversation.rfind("group:", 0) == 0) {
    // One Sender Key message for every member device and our other devices alike.
    return groups_->send_content(conversation.substr(6), to_peer, timestamp,
                                 Groups::Fanout::everyone);
  }
  return outbox_.send_contents(conversation, timestamp, &to_peer, &to_own);
}

Result<SendResult> Conversations::send_data(const std::string& peer, content::Content& data,
                                            std::uint64_t timestamp) {
  content::Content sync;
  auto* sent = sync.mutable_sync()->mutable_sent();
  sent->set_destination(peer);
  sent->set_timestamp(timestamp);
  *sent->mutable_message() = data.data();
  auto result = send_action(peer, data, sync, timestamp);
  wipe(*sent->mutable_message()->mutable_body());
  return result;
}

void Conversations::apply_own(const std::string& peer, std::uint64_t timestamp,
                              ReceivedContent& c) {
  c.kind = ReceivedContent::Kind::sent_copy;
  c.timestamp = timestamp;
  Message base;
  base.from = account_.username;
  base.conversation = peer;
  base.outgoing = true;
  std::lock_guard crypto_lock(account_.crypto_mu);
  (void)account_.store->transaction([&] { return apply_action(c, base, false); });
}

Result<SendResult> Conversations::send(const std::string& to, const std::string& body,
                                       const SendOptions& options) {
  auto peer = conversation_of(to);
  if (!peer) return tl::unexpected(peer.error());
  if (options.attachments.size() > kMaxAttachmentsPerMessage) {
    return tl::unexpected(invalid("too many attachments in one message (at most 32)"));
  }
  // A message may be files alone; text, when there is any, follows the usual rules.
  if (!(body.empty() && !options.attachments.empty())) {
    if (auto ok = check_body(body); !ok) return tl::unexpected(ok.error());
  }
  const std::string& self = account_.username;
  Message m;
  m.from = self;
  m.device = account_.device_id;
  m.conversation = *peer;
  m.outgoing = true;
  if (options.quote) {
    auto author = normalize_username(options.quote->author);
    if (!author) return tl::unexpected(invalid("the quoted message's author is not a username"));
    auto quoted = account_.store->find_message(*peer, *author, options.quote->timestamp);
    if (!quoted) return tl::unexpected(from_store(quoted.error()));
    if (!quoted->has_value()) {
      return tl::unexpected(
          make_error(ErrorCode::not_found, "the quoted message is not in this conversation"));
    }
    m.quote = MessageRef{*author, options.quote->timestamp};
    m.quote_text = excerpt((*quoted)->body, kQuoteExcerptBytes);
    wipe((*quoted)->body);
    MessageState quoted_state;
    {
      std::lock_guard crypto_lock(account_.crypto_mu);
      if (!load(*peer, *author, options.quote->timestamp, quoted_state)) {
        return tl::unexpected(from_store(store::ClientError::io));
      }
    }
    if (quoted_state.deleted()) {
      return tl::unexpected(invalid("the quoted message was deleted for everyone"));
    }
  }
  if (options.mentions.size() > static_cast<std::size_t>(kMaxMentions)) {
    return tl::unexpected(invalid("too many mentions"));
  }
  for (const auto& x : options.mentions) {
    auto user = normalize_username(x.user);
    if (!user || x.length == 0 || std::uint64_t{x.start} + x.length > body.size()) {
      return tl::unexpected(invalid("a mention names a username and a part of the text"));
    }
    m.mentions.push_back(Mention{*user, x.start, x.length});
  }
  if (peer->rfind("group:", 0) == 0 && !m.mentions.empty()) {
    std::lock_guard crypto_lock(account_.crypto_mu);
    for (const auto& x : m.mentions) {
      if (!groups_->has_member_locked(peer->substr(6), x.user)) {
        return tl::unexpected(invalid("a mention names " + x.user + ", who is not in the group"));
      }
    }
  }
  auto timer_in_force = timer_for(*peer);
  if (!timer_in_force) return tl::unexpected(timer_in_force.error());
  const std::uint32_t timer = *timer_in_force;
  const std::uint64_t timestamp = outbox_.next_timestamp();
  content::Content data;
  auto* d = data.mutable_data();
  d->set_body(body);
  d->set_timestamp(timestamp);
  d->set_expire_timer(timer);
  if (m.quote) set_ref(*d->mutable_quote(), *m.quote, m.quote_text);
  std::vector<std::string> pointers;
  for (const auto& a : options.attachments) {
    if (!d->add_attachments()->ParseFromString(a.pointer)) {
      return tl::unexpected(invalid("malformed attachment"));
    }
    pointers.push_back(a.pointer);
  }
  for (const auto& x : m.mentions) {
    auto* o = d->add_mentions();
    o->set_user(x.user);
    o->set_start(x.start);
    o->set_length(x.length);
  }
  auto result = send_data(*peer, data, timestamp);
  wipe(*d->mutable_body());
  if (!result) return result;
  m.timestamp = timestamp;
  m.expire_timer = timer;
  if (timer != 0) m.expires_at = timestamp + std::uint64_t{timer} * 1000;
  const auto local_id = new_message_id(timestamp, account_.rng);
  store::StoredMessage row{
      "local-" + to_hex(local_id), *peer, self, account_.device_id, timestamp, body, true};
  // The message is sent; a history failure must not say otherwise.
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    (void)account_.store->transaction([&] {
      if (!account_.store->add_message(row)) return false;
      if (!pointers.empty() &&
          !save_message_attachments(*account_.store, row.envelope_id, pointers)) {
        return false;
      }
      if (!has_state(m)) return true;
      MessageState s;
      fill_state(m, s);
      return save(*peer, self, timestamp, s);
    });
  }
  wipe(row.body);
  for (auto& p : pointers) wipe(p);
  return result;
}

Result<SendResult> Conversations::react(const std::string& conversation, const MessageRef& target,
                                        const std::string& emoji, bool remove) {
  auto peer = conversation_of(conversation);
  if (!peer) return tl::unexpected(peer.error());
  auto author = normalize_username(target.author);
  if (!author) return tl::unexpected(invalid("the message's author is not a username"));
  if (!remove) {
    if (const std::string why = why_not_one_emoji(emoji); !why.empty()) {
      return tl::unexpected(
          invalid("a reaction is one emoji (such as 👍 or ❤️), and this is not: " + why));
    }
  }
  auto found = account_.store->find_message(*peer, *author, target.timestamp);
  if (!found) return tl::unexpected(from_store(found.error()));
  if (!found->has_value()) {
    return tl::unexpected(
        make_error(ErrorCode::not_found, "no such message in the conversation with " + *peer));
  }
  const std::uint64_t timestamp = outbox_.next_timestamp();
  content::Content data;
  auto* d = data.mutable_data();
  d->set_timestamp(timestamp);
  auto* r = d->mutable_reaction();
  if (!remove) r->set_emoji(emoji);
  r->set_remove(remove);
  r->set_target_author(*author);
  r->set_target_timestamp(target.timestamp);
  auto result = send_data(*peer, data, timestamp);
  if (!result) return result;
  ReceivedContent c;
  c.extras.reaction_target = MessageRef{*author, target.timestamp};
  if (!remove) c.extras.emoji = emoji;
  apply_own(*peer, timestamp, c);
  return result;
}

Result<SendResult> Conversations::edit(const std::string& conversation, std::uint64_t target,
                                       const std::string& body) {
  auto peer = conversation_of(conversation);
  if (!peer) return tl::unexpected(peer.error());
  if (auto ok = check_body(body); !ok) return tl::unexpected(ok.error());
  const std::string& self = account_.username;
  auto found = account_.store->find_message(*peer, self, target);
  if (!found) return tl::unexpected(from_store(found.error()));
  if (!found->has_value()) {
    return tl::unexpected(make_error(ErrorCode::not_found,
                                     "no message of ours with this id in the conversation (only "
                                     "one's own messages can be edited)"));
  }
  MessageState state;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    if (!load(*peer, self, target, state))
      return tl::unexpected(from_store(store::ClientError::io));
  }
  if (state.deleted()) return tl::unexpected(invalid("the message was deleted"));
  const std::uint64_t timestamp = outbox_.next_timestamp();
  if (!in_time(target, timestamp, 0, ms_of(kEditWindow))) {
    return tl::unexpected(invalid("too late to edit: a message can be edited for 24 hours"));
  }
  content::Content data;
  auto* e = data.mutable_edit();
  e->set_target_timestamp(target);
  e->mutable_data()->set_body(body);
  e->mutable_data()->set_timestamp(timestamp);
  e->mutable_data()->set_expire_timer(state.expire_timer());
  content::Content sync;
  auto* sent = sync.mutable_sync()->mutable_sent();
  sent->set_destination(*peer);
  sent->set_timestamp(timestamp);
  *sent->mutable_edit() = *e;
  auto result = send_action(*peer, data, sync, timestamp);
  wipe(*e->mutable_data()->mutable_body());
  wipe(*sent->mutable_edit()->mutable_data()->mutable_body());
  if (!result) return result;
  ReceivedContent c;
  c.body = body;
  c.extras.edit_target = target;
  apply_own(*peer, timestamp, c);
  return result;
}

Result<SendResult> Conversations::remote_delete(const std::string& conversation,
                                                std::uint64_t target) {
  auto peer = conversation_of(conversation);
  if (!peer) return tl::unexpected(peer.error());
  const std::string& self = account_.username;
  auto found = account_.store->find_message(*peer, self, target);
  if (!found) return tl::unexpected(from_store(found.error()));
  if (!found->has_value()) {
    return tl::unexpected(make_error(ErrorCode::not_found,
                                     "no message of ours with this id in the conversation (only "
                                     "one's own messages can be deleted for everyone)"));
  }
  const std::uint64_t timestamp = outbox_.next_timestamp();
  if (!in_time(target, timestamp, 0, ms_of(kDeleteWindow))) {
    return tl::unexpected(
        invalid("too late to delete for everyone: that is possible for 24 hours after sending"));
  }
  content::Content data;
  auto* d = data.mutable_data();
  d->set_timestamp(timestamp);
  d->mutable_delete_()->set_target_timestamp(target);
  auto result = send_data(*peer, data, timestamp);
  if (!result) return result;
  ReceivedContent c;
  c.extras.delete_target = target;
  apply_own(*peer, timestamp, c);
  return result;
}

Result<SendResult> Conversations::set_timer(const std::string& user, std::uint32_t seconds) {
  auto peer = conversation_of(user);
  if (!peer) return tl::unexpected(peer.error());
  if (seconds > kMaxExpireTimer) {
    return tl::unexpected(invalid("a disappearing-message timer is at most one year"));
  }
  if (peer->rfind("group:", 0) == 0) {
    // A group's timer is part of its state: an admin's change (docs/groups.md).
    GroupUpdate u;
    u.expire_timer = seconds;
    auto changed = groups_->update(peer->substr(6), u);
    if (!changed) return tl::unexpected(changed.error());
    return SendResult{outbox_.next_timestamp(), 0, {}};
  }
  const std::uint64_t timestamp = outbox_.next_timestamp();
  content::Content data;
  auto* d = data.mutable_data();
  d->set_timestamp(timestamp);
  d->set_expire_timer(seconds);
  d->set_expire_timer_update(true);
  auto result = send_data(*peer, data, timestamp);
  if (!result) return result;
  ReceivedContent c;
  c.extras.expire_timer = seconds;
  c.extras.expire_timer_update = true;
  apply_own(*peer, timestamp, c);
  return result;
}

Result<void> Conversations::send_typing(const std::string& user, bool started) {
  auto peer = conversation_of(user);
  if (!peer) return tl::unexpected(peer.error());
  if (*peer == account_.username) return {};
  content::Content typing;
  const std::uint64_t timestamp = outbox_.next_timestamp();
  typing.mutable_typing()->set_timestamp(timestamp);
  typing.mutable_typing()->set_action(started ? content::TypingMessage::STARTED
                                              : content::TypingMessage::STOPPED);
  if (peer->rfind("group:", 0) == 0) {
    // To the other members only, under the group's Sender Key; nothing is kept.
    auto sent =
        groups_->send_content(peer->substr(6), typing, timestamp, Groups::Fanout::others_only);
    if (!sent) return tl::unexpected(sent.error());
    return {};
  }
  auto sent =
      outbox_.send_contents(*peer, timestamp, &typing, nullptr, account_.options.request_timeout);
  if (!sent) return tl::unexpected(sent.error());
  return {};
}

Result<std::size_t> Conversations::mark_read(const std::string& user,
                                             const std::vector<std::uint64_t>& timestamps) {
  auto peer = conversation_of(user);
  if (!peer) return tl::unexpected(peer.error());
  if (peer->rfind("group:", 0) == 0) return mark_read_in_group(*peer, timestamps);
  std::vector<std::uint64_t> marked;
  bool receipts_on = true;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    receipts_on = read_receipts_locked();
    auto rows = account_.store->messages(*peer, 0);
    if (!rows) return tl::unexpected(from_store(rows.error()));
    const std::uint64_t now = account_.clock.now_ms();
    auto done = account_.store->transaction([&] {
      for (const auto& row : *rows) {
        if (row.outgoing || row.sender != *peer ||
            row.envelope_id.rfind(store::kNoticePrefix, 0) == 0) {
          continue;
        }
        if (!timestamps.empty() &&
            std::find(timestamps.begin(), timestamps.end(), row.timestamp) == timestamps.end()) {
          continue;
        }
        MessageState s;
        if (!load(*peer, row.sender, row.timestamp, s)) return false;
        if (s.read_at() != 0) continue;
        s.set_read_at(now);
        if (s.expire_timer() != 0) s.set_expires_at(now + std::uint64_t{s.expire_timer()} * 1000);
        if (!save(*peer, row.sender, row.timestamp, s)) return false;
        marked.push_back(row.timestamp);
      }
      return true;
    });
    for (auto& row : *rows) wipe(row.body);
    if (!done || !*done) return tl::unexpected(from_store(store::ClientError::io));
  }
  if (marked.empty()) return std::size_t{0};
  // Our other devices start the same timers; the author hears of it unless receipts are off.
  content::Content receipt;
  receipt.mutable_receipt()->set_type(content::ReceiptMessage::READ);
  content::Content sync;
  for (auto t : marked) {
    receipt.mutable_receipt()->add_timestamps(t);
    auto* r = sync.mutable_sync()->add_read();
    r->set_author(*peer);
    r->set_timestamp(t);
  }
  auto sent = outbox_.send_contents(*peer, outbox_.next_timestamp(),
                                    receipts_on ? &receipt : nullptr, &sync);
  if (!sent) return tl::unexpected(sent.error());
  return marked.size();
}

void Conversations::send_delivery_receipts(const Receipts& receipts) {
  std::map<std::string, std::vector<std::uint64_t>> by_user;
  for (const auto& [user, ts] : receipts) by_user[user].push_back(ts);
  for (const auto& [user, list] : by_user) {
    content::Content receipt;
    receipt.mutable_receipt()->set_type(content::ReceiptMessage::DELIVERY);
    for (auto t : list) receipt.mutable_receipt()->add_timestamps(t);
    (void)outbox_.send_contents(user, outbox_.next_timestamp(), &receipt, nullptr,
                                account_.options.request_timeout);
  }
}

// --- receiving ---------------------------------------------------------------------------------

bool Conversations::receive(const ReceivedContent& c, Message base,
                            const std::function<bool(Message)>& show, Receipts& receipts) {
  const auto& x = c.extras;
  if (x.reaction_target || x.delete_target || x.edit_target || x.expire_timer_update) {
    if (!apply_action(c, base, true)) return false;
    if (x.edit_target && !base.outgoing) receipts.emplace_back(base.from, c.timestamp);
    return true;
  }
  Message m = std::move(base);
  m.body = c.body;
  m.timestamp = c.timestamp;
  m.quote = x.quote;
  m.quote_text = x.quote_text;
  m.mentions = x.mentions;
  for (const auto& mention : m.mentions) {
    m.mentions_me = m.mentions_me || (!m.outgoing && mention.user == account_.username);
  }
  if (m.quote && !current_quote(m.conversation, m)) return false;
  m.expire_timer = x.expire_timer;
  // Counted from sending for the author's devices, from reading for the recipient's.
  if (m.outgoing && x.expire_timer != 0) {
    m.expires_at = m.timestamp + std::uint64_t{x.expire_timer} * 1000;
  }
  auto duplicate = account_.store->has_message(m.conversation, m.from, m.device, m.timestamp);
  if (!duplicate) return false;
  if (*duplicate) return true;
  const std::string peer = m.conversation;
  const std::string author = m.from;
  const std::uint64_t ts = m.timestamp;
  MessageState s;
  const bool stateful = has_state(m);
  if (stateful) fill_state(m, s);
  if (!m.outgoing) receipts.emplace_back(author, ts);
  if (!show(std::move(m))) return false;
  // A group message always has a state row: it tells it from the group's change notes, which
  // share its history (group_messages.cpp, reading).
  return (!stateful && peer.rfind("group:", 0) != 0) || save(peer, author, ts, s);
}

bool Conversations::apply_action(const ReceivedContent& c, const Message& base, bool journal_it) {
  const auto& x = c.extras;
  const std::string& peer = base.conversation;
  const std::string& author = base.from;
  const auto journal = [&](Event& e) {
    if (!journal_it) return true;
    e.message.conversation = peer;
    if (peer.rfind("group:", 0) == 0) e.message.group = peer.substr(6);
    e.user = author;
    return journal_.record(e).has_value();
  };
  if (x.expire_timer_update) {
    // A group's timer changes with its state only (docs/groups.md), never by a message.
    if (peer.rfind("group:", 0) == 0) return true;
    const std::uint32_t v = x.expire_timer;
    const std::array<std::uint8_t, 4> bytes{
        static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
        static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
    if (!account_.store->save_value(std::string(kTimerValuePrefix) + peer, bytes)) return false;
    Event e;
    e.kind = Event::Kind::disappearing_timer;
    e.expire_timer = v;
    e.message.from = author;
    e.message.timestamp = c.timestamp;
    e.message.outgoing = base.outgoing;
    return journal(e);
  }
  if (x.reaction_target) {
    const MessageRef& t = *x.reaction_target;
    auto found = account_.store->find_message(peer, t.author, t.timestamp);
    if (!found) return false;
    if (!found->has_value()) return true;  // not a message we have: nothing to react to
    MessageState s;
    if (!load(peer, t.author, t.timestamp, s)) return false;
    auto* list = s.mutable_reactions();
    for (int i = 0; i < list->size(); ++i) {
      if (list->Get(i).user() == author) {
        if (list->Get(i).timestamp() > c.timestamp) return true;  // a newer one is applied
        list->DeleteSubrange(i, 1);
        break;
      }
    }
    if (!x.emoji.empty()) {
      auto* r = s.add_reactions();
      r->set_user(author);
      r->set_emoji(x.emoji);
      r->set_timestamp(c.timestamp);
    }
    wipe((*found)->body);
    if (!save(peer, t.author, t.timestamp, s)) return false;
    Event e;
    e.kind = Event::Kind::reaction;
    e.targets = {t};
    e.emoji = x.emoji;
    e.message.from = author;
    e.message.timestamp = c.timestamp;
    e.message.outgoing = base.outgoing;
    return journal(e);
  }
  // Edits and deletes: of the author's own message, in time.
  const bool is_edit = x.edit_target.has_value();
  const std::uint64_t target = is_edit ? *x.edit_target : *x.delete_target;
  auto found = account_.store->find_message(peer, author, target);
  if (!found) return false;
  if (!found->has_value()) return true;  // not a message of this author we have
  Message shown = to_message(**found);
  wipe((*found)->body);
  MessageState s;
  if (!load(peer, author, target, s)) return false;
  if (s.deleted()) return true;
  const std::uint64_t window = ms_of(is_edit ? kEditWindow : kDeleteWindow);
  if (!in_time(target, c.timestamp, base.server_timestamp, window)) {
    // Refused: too late. The history keeps the message as it was.
    Event e;
    e.kind = Event::Kind::decrypt_failed;
    e.message = base;
    e.message.id.clear();
    e.message.timestamp = c.timestamp;
    e.detail = std::string(is_edit ? "an edit" : "a delete") +
               " that came too late (after the 24 hours a message can be changed); ignored";
    return journal(e);
  }
  if (is_edit && s.edited_at() >= c.timestamp) return true;  // a newer edit is applied
  // The text that was there goes from everything holding it.
  if (!purge(peer, author, target, true)) return false;
  if (is_edit) {
    if (!account_.store->replace_message_body(peer, author, target, c.body)) return false;
    s.set_edited(true);
    s.set_edited_at(c.timestamp);
    s.clear_sent_copies();
    if (author == account_.username) s.add_sent_copies(c.timestamp);
  } else {
    if (!account_.store->replace_message_body(peer, author, target, std::string())) return false;
    s.set_deleted(true);
    s.set_edited(false);
    s.clear_quote_text();
    s.clear_mentions();
  }
  if (!save(peer, author, target, s)) return false;
  if (!update_quotes(peer, author, target, is_edit ? c.body : std::string(), !is_edit)) {
    return false;
  }
  Event e;
  e.kind = is_edit ? Event::Kind::edit : Event::Kind::remote_delete;
  e.targets = {MessageRef{author, target}};
  apply_state(s, shown);
  shown.body = is_edit ? c.body : std::string();
  e.message = std::move(shown);
  return journal(e);
}

bool Conversations::receive_receipt(const std::string& from, const ReceivedContent& c) {
  if (from == account_.username) return true;
  if (c.read && !read_receipts_locked()) return true;  // off: none shown (like Signal)
  const std::string& self = account_.username;
  const std::uint64_t now = account_.clock.now_ms();
  // One event per conversation: the 1:1 one with `from`, or a group's (a receipt for a group
  // message comes 1:1 from the member, who must be in the group).
  std::map<std::string, Event> events;
  for (auto ts : c.timestamps) {
    std::string peer = from;
    auto found = account_.store->find_message(from, self, ts);
    if (!found) return false;
    if (!found->has_value() && groups_ != nullptr) {
      found = account_.store->find_message_by_ref(self, ts);
      if (!found) return false;
      if (found->has_value()) {
        peer = (*found)->peer;
        if (peer.rfind("group:", 0) != 0 || !groups_->has_member_locked(peer.substr(6), from)) {
          wipe((*found)->body);
          continue;
        }
      }
    }
    if (!found->has_value()) continue;
    wipe((*found)->body);
    MessageState s;
    if (!load(peer, self, ts, s)) return false;
    MessageState::Receipt* r = nullptr;
    for (auto& existing : *s.mutable_receipts()) {
      if (existing.user() == from) r = &existing;
    }
    if (!r) {
      r = s.add_receipts();
      r->set_user(from);
    }
    if (r->delivered_at() == 0) r->set_delivered_at(now);
    if (c.read && r->read_at() == 0) r->set_read_at(now);
    if (!save(peer, self, ts, s)) return false;
    Event& e = events[peer];
    e.targets.push_back(MessageRef{self, ts});
  }
  for (auto& [peer, e] : events) {
    e.kind = Event::Kind::receipt;
    e.read = c.read;
    e.user = from;
    e.message.conversation = peer;
    if (peer.rfind("group:", 0) == 0) e.message.group = peer.substr(6);
    if (!journal_.record(e)) return false;
  }
  return true;
}

bool Conversations::receive_typing(const std::string& from, const ReceivedContent& c) {
  if (from == account_.username) return true;
  Event e;
  e.kind = Event::Kind::typing;
  e.typing = c.typing;
  e.user = from;
  e.message.conversation = from;
  e.message.from = from;
  return journal_.record(e).has_value();
}

bool Conversations::receive_read_sync(const ReceivedContent& c) {
  const std::uint64_t now = account_.clock.now_ms();
  for (const auto& ref : c.reads) {
    // In a 1:1 conversation, a message read is the other user's: the conversation is theirs.
    std::string peer = ref.author;
    auto found = account_.store->find_message(peer, ref.author, ref.timestamp);
    if (!found) return false;
    if (!found->has_value()) {
      // A group message: its conversation is the group's.
      found = account_.store->find_message_by_ref(ref.author, ref.timestamp);
      if (!found) return false;
      if (!found->has_value() || (*found)->peer.rfind("group:", 0) != 0) continue;
      peer = (*found)->peer;
    }
    wipe((*found)->body);
    MessageState s;
    if (!load(peer, ref.author, ref.timestamp, s)) return false;
    if (s.read_at() != 0) continue;
    s.set_read_at(now);
    if (s.expire_timer() != 0) s.set_expires_at(now + std::uint64_t{s.expire_timer()} * 1000);
    if (!save(peer, ref.author, ref.timestamp, s)) return false;
  }
  return true;
}

// --- disappearing ------------------------------------------------------------------------------

bool Conversations::purge_events(
    const std::set<std::tuple<std::string, std::string, std::uint64_t>>& gone) {
  auto entries = account_.store->events(0, 0);
  if (!entries) return false;
  for (const auto& entry : *entries) {
    if (entry.record.size() == 0) continue;
    auto e = decode_event(entry.record.view());
    if (!e) continue;
    bool holds = gone.contains({e->message.conversation, e->message.from, e->message.timestamp}) &&
                 !e->message.body.empty();
    if (e->kind == Event::Kind::edit) {
      for (const auto& t : e->targets) {
        holds = holds || gone.contains({e->message.conversation, t.author, t.timestamp});
      }
    }
    wipe(e->message.body);
    if (holds && !account_.store->remove_event(entry.seq)) return false;
  }
  return true;
}

bool Conversations::purge(const std::string& peer, const std::string& author, std::uint64_t ts,
                          bool keep_row) {
  if (author == account_.username) {
    // What we sent of it, kept for resends: to the peer and to our other devices.
    if (!account_.store->remove_sent(peer, ts) ||
        !account_.store->remove_sent(account_.username, ts)) {
      return false;
    }
    // And its edits' contents.
    MessageState s;
    if (!load(peer, author, ts, s)) return false;
    for (auto t : s.sent_copies()) {
      if (!account_.store->remove_sent(peer, t) ||
          !account_.store->remove_sent(account_.username, t)) {
        return false;
      }
    }
  }
  if (!purge_events({{peer, author, ts}})) return false;
  if (keep_row) return true;
  return account_.store->delete_message(peer, author, ts).has_value();
}

Result<std::size_t> Conversations::expire_due() {
  std::lock_guard crypto_lock(account_.crypto_mu);
  return expire_due_locked();
}

void Conversations::expire_due_if_free() {
  std::unique_lock crypto_lock(account_.crypto_mu, std::try_to_lock);
  if (crypto_lock.owns_lock()) (void)expire_due_locked();
}

Result<std::size_t> Conversations::expire_due_locked() {
  auto due = account_.store->expired_messages(account_.clock.now_ms());
  if (!due) return tl::unexpected(from_store(due.error()));
  if (due->empty()) return std::size_t{0};
  auto committed = account_.store->transaction([&] {
    for (const auto& row : *due) {
      if (!purge(row.peer, row.author, row.timestamp, false)) return false;
    }
    return true;
  });
  if (!committed || !*committed) {
    return tl::unexpected(from_store(store::ClientError::io));
  }
  return due->size();
}

void Conversations::wake() {
  std::lock_guard lock(expiry_mu_);
  woken_ = true;
  expiry_cv_.notify_all();
}

void Conversations::start() {
  std::lock_guard lock(expiry_mu_);
  if (expiry_thread_.joinable()) return;
  stopping_ = false;
  // The thread takes no process signal: an app handles those on threads of its own (a daemon
  // or chat that blocks SIGTERM before starting its threads may open the account first).
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  expiry_thread_ = std::thread([this] {
    for (;;) {
      (void)expire_due();
      auto next = account_.store->next_expiry();
      std::unique_lock guard(expiry_mu_);
      if (stopping_) return;
      const auto pending = next && *next != 0;
      // While a message counts down, look again at least once a second (the wall clock may
      // jump); otherwise until a timer starts.
      if (pending) {
        const std::uint64_t now = account_.clock.now_ms();
        const auto wait =
            std::chrono::milliseconds(std::min<std::uint64_t>(*next > now ? *next - now : 0, 1000));
        expiry_cv_.wait_for(guard, wait, [&] { return stopping_ || woken_; });
      } else {
        expiry_cv_.wait(guard, [&] { return stopping_ || woken_; });
      }
      woken_ = false;
      if (stopping_) return;
    }
  });
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

void Conversations::stop() {
  std::thread t;
  {
    std::lock_guard lock(expiry_mu_);
    stopping_ = true;
    expiry_cv_.notify_all();
    t = std::move(expiry_thread_);
  }
  if (t.joinable()) t.join();
}

}  // namespace sotto::client
