#include "client/message_state.h"

#include "client/util.h"

namespace sotto::client {

bool has_state(const Message& m) {
  return m.quote || !m.mentions.empty() || !m.reactions.empty() || m.edited || m.deleted ||
         m.expire_timer != 0 || m.expires_at != 0 || m.read_at != 0 || !m.receipts.empty();
}

void fill_state(const Message& m, MessageState& s) {
  s.clear_quote();
  s.clear_quote_text();
  s.clear_quote_deleted();
  if (m.quote) {
    s.mutable_quote()->set_author(m.quote->author);
    s.mutable_quote()->set_timestamp(m.quote->timestamp);
    s.set_quote_text(m.quote_text);
    s.set_quote_deleted(m.quote_deleted);
  }
  s.clear_mentions();
  for (const auto& x : m.mentions) {
    auto* o = s.add_mentions();
    o->set_user(x.user);
    o->set_start(x.start);
    o->set_length(x.length);
  }
  s.clear_reactions();
  for (const auto& r : m.reactions) {
    auto* o = s.add_reactions();
    o->set_user(r.user);
    o->set_emoji(r.emoji);
    o->set_timestamp(r.timestamp);
  }
  s.set_edited(m.edited);
  s.set_edited_at(m.edited_at);
  s.set_deleted(m.deleted);
  s.set_expire_timer(m.expire_timer);
  s.set_expires_at(m.expires_at);
  s.set_read_at(m.read_at);
  s.clear_receipts();
  for (const auto& r : m.receipts) {
    auto* o = s.add_receipts();
    o->set_user(r.user);
    o->set_delivered_at(r.delivered_at);
    o->set_read_at(r.read_at);
  }
}

void apply_state(const MessageState& s, Message& m) {
  m.quote.reset();
  m.quote_text.clear();
  m.quote_deleted = false;
  if (s.has_quote()) {
    m.quote = MessageRef{s.quote().author(), s.quote().timestamp()};
    m.quote_text = s.quote_text();
    m.quote_deleted = s.quote_deleted();
  }
  m.mentions.clear();
  for (const auto& x : s.mentions()) m.mentions.push_back(Mention{x.user(), x.start(), x.length()});
  m.reactions.clear();
  for (const auto& r : s.reactions()) {
    m.reactions.push_back(Reaction{r.user(), r.emoji(), r.timestamp()});
  }
  m.edited = s.edited();
  m.edited_at = s.edited_at();
  m.deleted = s.deleted();
  m.expire_timer = s.expire_timer();
  m.expires_at = s.expires_at();
  m.read_at = s.read_at();
  m.receipts.clear();
  for (const auto& r : s.receipts()) {
    m.receipts.push_back(Receipt{r.user(), r.delivered_at(), r.read_at()});
  }
}

crypto::SecretBuffer encode_state(const MessageState& s) {
  crypto::SecretBuffer out(s.ByteSizeLong());
  out.resize(out.capacity());
  s.SerializeWithCachedSizesToArray(out.data());
  return out;
}

std::optional<MessageState> decode_state(ByteView record) {
  MessageState s;
  if (!s.ParseFromArray(record.data(), static_cast<int>(record.size()))) return std::nullopt;
  return s;
}

}  // namespace sotto::client
