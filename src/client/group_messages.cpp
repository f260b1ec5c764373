// The everyday message types in groups (docs/groups.md, "Replies, reactions, edits..."): the
// Groups side (reading what a member's Sender Key message holds and handing it to the
// Conversations) and the Conversations side that only groups need (the group's timer, read
// receipts to each author, quotes kept in step with edits and deletes).
//
// What a group message does is what a 1:1 message does (conversations.h), with three
// differences: it is sent once under the sender's Sender Key to every member device and our other
// devices (Groups::send_content), so our other devices apply the message itself rather than a
// sync copy; delivery and read receipts go 1:1 to the author's devices; and the timer is the
// group's (GroupState.expire_timer), changed by an admin's group change only.
#include <algorithm>
#include <map>
#include <set>

#include "client/attachment_history.h"
#include "client/content_codec.h"
#include "client/conversations.h"
#include "client/errors.h"
#include "client/group_codec.h"
#include "client/groups.h"
#include "client/text.h"
#include "client/util.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

constexpr std::string_view kGroupPrefix = "group:";

bool is_group(const std::string& peer) {
  return peer.rfind(kGroupPrefix, 0) == 0;
}

// A prefix of `text` of at most `max` bytes that does not cut a UTF-8 sequence.
std::string excerpt(const std::string& text, std::size_t max) {
  if (text.size() <= max) return text;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return text.substr(0, n);
}

}  // namespace

// --- Groups -----------------------------------------------------------------------------------

Result<content::GroupState> Groups::state(const std::string& id) {
  auto hex = resolve(id);  // the whole id, or its first digits
  if (!hex) return tl::unexpected(hex.error());
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto s = load(*hex);
  if (!s) return tl::unexpected(s.error());
  if (!s->has_value()) return tl::unexpected(make_error(ErrorCode::not_found, "no such group"));
  return std::move(**s);
}

bool Groups::has_member_locked(const std::string& hex, const std::string& user) {
  auto s = load(hex);
  return s && s->has_value() && find_member(**s, user) != nullptr;
}

bool Groups::receive_content(ByteView plaintext, const std::string& hex, const std::string& source,
                             std::uint32_t device, const std::string& id, const Message& base,
                             std::vector<std::pair<std::string, std::uint64_t>>& receipts) {
  const std::string peer = std::string(kGroupPrefix) + hex;
  const bool own = source == account_.username;
  {
    // Typing: shown, never kept (and ours from another device is nothing to show).
    content::Content c;
    if (c.ParseFromArray(plaintext.data(), static_cast<int>(plaintext.size())) && c.has_typing()) {
      if (own) return true;
      Event e;
      e.kind = Event::Kind::typing;
      e.typing = c.typing().action() == content::TypingMessage::STARTED;
      e.user = source;
      e.message.from = source;
      e.message.device = device;
      e.message.conversation = peer;
      e.message.group = hex;
      return journal_.record(e).has_value();
    }
    if (c.has_data()) wipe(*c.mutable_data()->mutable_body());
    if (c.has_edit()) wipe(*c.mutable_edit()->mutable_data()->mutable_body());
  }
  ReceivedContent rc = read_content(plaintext, false);
  Message m = base;
  m.conversation = peer;
  m.group = hex;
  m.outgoing = own;
  if (rc.kind == ReceivedContent::Kind::unreadable) {
    Event e;
    e.kind = Event::Kind::decrypt_failed;
    e.message = m;
    e.detail = rc.why;
    store::StoredMessage row{
        std::string(store::kNoticePrefix) + id, peer, source, device, base.timestamp,
        "[not shown: " + rc.why + "]",          false};
    return account_.store->add_message(row).has_value() && journal_.record(e).has_value();
  }
  if (rc.kind != ReceivedContent::Kind::message || conversations_ == nullptr) return true;
  const auto& x = rc.extras;
  const bool action = x.reaction_target || x.delete_target || x.edit_target;
  if (x.expire_timer_update) return true;  // a group's timer is its state's (group changes)
  if (!action && ((rc.body.empty() && rc.attachments.empty()) || rc.body.size() > kMaxBodyBytes ||
                  !valid_utf8(rc.body))) {
    return true;  // nothing this version shows
  }
  for (const auto& a : rc.attachments) m.attachments.push_back(public_attachment(a));
  const auto show = [&](Message shown) -> bool {
    store::StoredMessage row{
        id,         shown.conversation, shown.from, shown.device, shown.timestamp,
        shown.body, shown.outgoing};
    const bool added =
        account_.store->add_message(row).has_value() &&
        (rc.attachments.empty() || save_message_attachments(*account_.store, id, rc.attachments));
    wipe(row.body);
    if (!added) return false;
    Event e;
    e.kind = Event::Kind::message;
    e.message = std::move(shown);
    const bool recorded = journal_.record(e).has_value();
    wipe(e.message.body);
    return recorded;
  };
  return conversations_->receive(rc, std::move(m), show, receipts);
}

// --- Conversations ----------------------------------------------------------------------------

void Conversations::mark_mentions(std::vector<Message>& messages, const std::string& self) {
  for (auto& m : messages) {
    m.mentions_me = false;
    if (m.outgoing || m.from == self) continue;
    for (const auto& x : m.mentions) m.mentions_me = m.mentions_me || x.user == self;
  }
}

Result<std::uint32_t> Conversations::timer_for(const std::string& peer) {
  if (is_group(peer)) {
    auto s = groups_->state(peer.substr(kGroupPrefix.size()));
    if (!s) return tl::unexpected(s.error());
    return s->expire_timer();
  }
  std::lock_guard crypto_lock(account_.crypto_mu);
  return timer_locked(peer);
}

bool Conversations::current_quote(const std::string& peer, Message& m) {
  auto quoted = account_.store->find_message(peer, m.quote->author, m.quote->timestamp);
  if (!quoted) return false;
  if (!quoted->has_value()) return true;  // not here (any more): the author's excerpt stands
  MessageState s;
  const bool loaded = load(peer, m.quote->author, m.quote->timestamp, s);
  if (loaded && s.deleted()) {
    wipe(m.quote_text);
    m.quote_text.clear();
    m.quote_deleted = true;
  } else if (loaded && s.edited()) {
    wipe(m.quote_text);
    m.quote_text = excerpt((*quoted)->body, kQuoteExcerptBytes);
  }
  wipe((*quoted)->body);
  return loaded;
}

bool Conversations::update_quotes(const std::string& peer, const std::string& author,
                                  std::uint64_t ts, const std::string& body, bool deleted) {
  auto rows = account_.store->message_states(peer);
  if (!rows) return false;
  for (const auto& row : *rows) {
    auto s = decode_state(row.record.view());
    if (!s || !s->has_quote() || s->quote().author() != author || s->quote().timestamp() != ts ||
        s->deleted()) {
      continue;
    }
    wipe(*s->mutable_quote_text());
    if (deleted) {
      s->clear_quote_text();
      s->set_quote_deleted(true);
    } else {
      s->set_quote_text(excerpt(body, kQuoteExcerptBytes));
    }
    const bool saved = save(peer, row.author, row.timestamp, *s);
    wipe(*s->mutable_quote_text());
    if (!saved) return false;
  }
  return true;
}

Result<std::size_t> Conversations::mark_read_in_group(
    const std::string& peer, const std::vector<std::uint64_t>& timestamps) {
  const std::string& self = account_.username;
  std::map<std::string, std::vector<std::uint64_t>> by_author;
  std::size_t marked = 0;
  bool receipts_on = true;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    receipts_on = read_receipts_locked();
    auto rows = account_.store->messages(peer, 0);
    if (!rows) return tl::unexpected(from_store(rows.error()));
    // Members' messages have a state row; the group's change notes in the same history do not.
    auto states = account_.store->message_states(peer);
    if (!states) return tl::unexpected(from_store(states.error()));
    std::set<std::pair<std::string, std::uint64_t>> messages;
    for (const auto& st : *states) messages.emplace(st.author, st.timestamp);
    const std::uint64_t now = account_.clock.now_ms();
    auto done = account_.store->transaction([&] {
      for (const auto& row : *rows) {
        if (row.outgoing || row.sender == self ||
            row.envelope_id.rfind(store::kNoticePrefix, 0) == 0 ||
            !messages.contains({row.sender, row.timestamp})) {
          continue;
        }
        if (!timestamps.empty() &&
            std::find(timestamps.begin(), timestamps.end(), row.timestamp) == timestamps.end()) {
          continue;
        }
        MessageState s;
        if (!load(peer, row.sender, row.timestamp, s)) return false;
        if (s.read_at() != 0) continue;
        s.set_read_at(now);
        if (s.expire_timer() != 0) s.set_expires_at(now + std::uint64_t{s.expire_timer()} * 1000);
        if (!save(peer, row.sender, row.timestamp, s)) return false;
        by_author[row.sender].push_back(row.timestamp);
        ++marked;
      }
      return true;
    });
    for (auto& row : *rows) wipe(row.body);
    if (!done || !*done) return tl::unexpected(from_store(store::ClientError::io));
  }
  if (marked == 0) return std::size_t{0};
  // Our other devices start the same timers (one note for all); each author hears 1:1, as in
  // Signal, unless read receipts are off.
  content::Content sync;
  for (const auto& [author, list] : by_author) {
    for (auto t : list) {
      auto* r = sync.mutable_sync()->add_read();
      r->set_author(author);
      r->set_timestamp(t);
    }
  }
  bool synced = false;
  for (const auto& [author, list] : by_author) {
    if (!receipts_on && synced) break;
    content::Content receipt;
    receipt.mutable_receipt()->set_type(content::ReceiptMessage::READ);
    for (auto t : list) receipt.mutable_receipt()->add_timestamps(t);
    auto sent = outbox_.send_contents(author, outbox_.next_timestamp(),
                                      receipts_on ? &receipt : nullptr, synced ? nullptr : &sync);
    // An author whose account is gone hears nothing; the others still do.
    if (!sent && sent.error().code != ErrorCode::not_found) return tl::unexpected(sent.error());
    synced = synced || sent.has_value();
  }
  return marked;
}

}  // namespace sotto::client
