#include "client/content_codec.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>

#include "backup.pb.h"
#include "client/attachment_format.h"
#include "client/emoji.h"
#include "client/text.h"
#include "client/util.h"
#include "content.pb.h"
#include "crypto/secret.h"
#include "sotto/client.h"
#include "transparency/proofs.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

constexpr std::size_t kSerializedPublicKeySize = 33;

ReceivedContent unreadable(std::string why) {
  ReceivedContent r;
  r.kind = ReceivedContent::Kind::unreadable;
  r.why = std::move(why);
  return r;
}

// Reads what a DataMessage carries beyond its body into `x`; false (with `why`) when it is not
// well formed. The body is `body` (already moved out).
bool read_extras(const content::DataMessage& d, const std::string& body, MessageExtras& x,
                 std::string& why) {
  x.group = d.has_group();
  int kinds = 0;
  if (d.has_quote()) {
    auto author = normalize_username(d.quote().author());
    if (!author || d.quote().timestamp() == 0 || d.quote().text().size() > kMaxQuoteTextBytes) {
      why = "a reply whose quote is malformed";
      return false;
    }
    x.quote = MessageRef{*author, d.quote().timestamp()};
    x.quote_text = d.quote().text();
  }
  if (d.mentions_size() > kMaxMentions) {
    why = "a message with too many mentions";
    return false;
  }
  for (const auto& m : d.mentions()) {
    auto user = normalize_username(m.user());
    const std::uint64_t end = std::uint64_t{m.start()} + m.length();
    if (!user || m.length() == 0 || end > body.size()) {
      why = "a message whose mention is malformed";
      return false;
    }
    x.mentions.push_back(Mention{*user, m.start(), m.length()});
  }
  if (d.has_reaction()) {
    ++kinds;
    const auto& r = d.reaction();
    auto author = normalize_username(r.target_author());
    const bool emoji_ok = r.remove() ? true : why_not_one_emoji(r.emoji()).empty();
    if (!author || r.target_timestamp() == 0 || !emoji_ok) {
      why = "a reaction that is malformed";
      return false;
    }
    x.reaction_target = MessageRef{*author, r.target_timestamp()};
    if (!r.remove()) x.emoji = r.emoji();
  }
  if (d.has_delete_()) {
    ++kinds;
    if (d.delete_().target_timestamp() == 0) {
      why = "a delete that names no message";
      return false;
    }
    x.delete_target = d.delete_().target_timestamp();
  }
  if (d.expire_timer() > kMaxExpireTimer) {
    why = "a disappearing-message timer out of range";
    return false;
  }
  x.expire_timer = d.expire_timer();
  x.expire_timer_update = d.expire_timer_update();
  if (x.expire_timer_update) ++kinds;
  if (kinds > 1 || (kinds == 1 && !body.empty())) {
    why = "a message that is several things at once";
    return false;
  }
  if (d.timestamp() == 0 || d.timestamp() > static_cast<std::uint64_t>(INT64_MAX)) {
    why = "a message without a valid timestamp";
    return false;
  }
  return true;
}

// Reads `d` (moving its body out) into `r`: a message, or the reason it is unreadable.
// The attachments of a data message that can be fetched, serialized; the others are dropped.
std::vector<std::string> read_attachments(content::DataMessage& data) {
  std::vector<std::string> out;
  for (auto& p : *data.mutable_attachments()) {
    drop_bad_thumbnail(p);
    if (out.size() < kMaxAttachmentsPerMessage && check_pointer(p).empty()) {
      out.push_back(p.SerializeAsString());
    }
    wipe(*p.mutable_key());
  }
  return out;
}

bool take_data(content::DataMessage& d, ReceivedContent& r) {
  r.body = std::move(*d.mutable_body());
  r.timestamp = d.timestamp();
  r.attachments = read_attachments(d);
  if (!read_extras(d, r.body, r.extras, r.why)) {
    // Nothing of an unreadable message's text is kept, nor the mentions, quote or targets read
    // before the field that failed (they would point into a text that is gone).
    wipe(r.body);
    r.extras = MessageExtras{};
    r.kind = ReceivedContent::Kind::unreadable;
    return false;
  }
  return true;
}

// An EditMessage: its data is the new text; its own timestamp is the edit's.
bool take_edit(content::EditMessage& e, ReceivedContent& r) {
  if (!e.has_data() || e.target_timestamp() == 0) {
    r.kind = ReceivedContent::Kind::unreadable;
    r.why = "an edit that names no message";
    return false;
  }
  if (!take_data(*e.mutable_data(), r)) return false;
  if (r.body.empty() || r.extras.reaction_target || r.extras.delete_target ||
      r.extras.expire_timer_update || e.target_timestamp() >= r.timestamp) {
    wipe(r.body);
    r.extras = MessageExtras{};
    r.kind = ReceivedContent::Kind::unreadable;
    r.why = "an edit that is malformed";
    return false;
  }
  r.extras.edit_target = e.target_timestamp();
  return true;
}

}  // namespace

MessageExtras::~MessageExtras() {
  wipe(quote_text);
}

ReceivedContent::~ReceivedContent() {
  wipe(body);
  for (auto& m : history) wipe(m.body);
  for (auto& a : attachments) wipe(a);
  for (auto& s : history_states) wipe(s);
}

Bytes gossip_head_of(ByteView plaintext) {
  if (plaintext.size() > kMaxContentBytes) return {};
  namespace pb = google::protobuf;
  pb::io::CodedInputStream in(plaintext.data(), static_cast<int>(plaintext.size()));
  constexpr std::uint32_t kTag = content::Content::kKtTreeHeadFieldNumber << 3 |
                                 pb::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
  Bytes found;
  for (;;) {
    const std::uint32_t tag = in.ReadTag();
    if (tag == 0) break;  // the end, or bytes that are not a message
    if (tag != kTag) {
      if (!pb::internal::WireFormatLite::SkipField(&in, tag)) return {};
      continue;
    }
    std::uint32_t length = 0;
    if (!in.ReadVarint32(&length) || length != transparency::kSignedTreeHeadSize) return {};
    found.resize(length);
    if (!in.ReadRaw(found.data(), static_cast<int>(length))) return {};
  }
  if (in.CurrentPosition() != static_cast<int>(plaintext.size())) return {};
  return found;
}

ReceivedContent read_content(ByteView plaintext, bool from_own_account) {
  if (plaintext.size() > kMaxContentBytes) return unreadable("a message too large to read");
  content::Content c;
  if (!c.ParseFromArray(plaintext.data(), static_cast<int>(plaintext.size()))) {
    return unreadable("a message whose content cannot be read (it is malformed or not valid text)");
  }
  ReceivedContent r;
  if (c.has_data()) {
    r.kind = ReceivedContent::Kind::message;
    (void)take_data(*c.mutable_data(), r);
    return r;
  }
  if (c.has_edit()) {
    r.kind = ReceivedContent::Kind::message;
    (void)take_edit(*c.mutable_edit(), r);
    return r;
  }
  if (c.has_receipt()) {
    if (c.receipt().timestamps_size() > kMaxReceiptTimestamps) {
      return unreadable("a receipt naming too many messages");
    }
    r.kind = ReceivedContent::Kind::receipt;
    r.read = c.receipt().type() == content::ReceiptMessage::READ;
    for (auto t : c.receipt().timestamps()) {
      if (t != 0 && t <= static_cast<std::uint64_t>(INT64_MAX)) r.timestamps.push_back(t);
    }
    return r;
  }
  if (c.has_typing()) {
    if (!c.typing().group_id().empty()) return r;  // typing in a group: the groups' to show
    r.kind = ReceivedContent::Kind::typing;
    r.typing = c.typing().action() == content::TypingMessage::STARTED;
    return r;
  }
  if (!c.has_sync()) return r;  // something of a later version
  if (!from_own_account) return unreadable("a sync message from another account (ignored)");
  auto* sync = c.mutable_sync();
  if (sync->has_sent()) {
    auto destination = normalize_username(sync->sent().destination());
    if (!destination) {
      wipe(*sync->mutable_sent()->mutable_message()->mutable_body());
      return unreadable("a sync message without a valid destination");
    }
    r.kind = ReceivedContent::Kind::sent_copy;
    r.destination = std::move(*destination);
    auto* sent = sync->mutable_sent();
    if (sent->has_edit()) {
      (void)take_edit(*sent->mutable_edit(), r);
    } else if (take_data(*sent->mutable_message(), r)) {
      if (sent->timestamp() != r.timestamp) {
        wipe(r.body);
        r.kind = ReceivedContent::Kind::unreadable;
        r.why = "a sync message whose timestamps disagree";
      }
    }
    return r;
  }
  if (sync->has_settings()) {
    r.kind = ReceivedContent::Kind::settings_sync;
    r.read_receipts = !sync->settings().read_receipts_off();
    return r;
  }
  if (sync->read_size() > 0) {
    if (sync->read_size() > kMaxReadSyncs)
      return unreadable("a read sync naming too many messages");
    for (const auto& read : sync->read()) {
      auto author = normalize_username(read.author());
      if (!author || read.timestamp() == 0) return unreadable("a read sync that is malformed");
      r.reads.push_back(MessageRef{*author, read.timestamp()});
    }
    r.kind = ReceivedContent::Kind::read_sync;
    return r;
  }
  if (sync->has_history_request()) {
    r.kind = ReceivedContent::Kind::history_request;
    r.wants_history = sync->history_request().history();
    return r;
  }
  if (sync->has_history()) {
    r.kind = ReceivedContent::Kind::history_chunk;
    auto* chunk = sync->mutable_history();
    r.last = chunk->last();
    r.total = chunk->total();
    for (auto& m : *chunk->mutable_messages()) {
      if (auto row = take_history_row(m)) {
        r.history.push_back(std::move(*row));
        r.history_states.push_back(std::move(*m.mutable_state()));
      }
      wipe(*m.mutable_body());
      wipe(*m.mutable_state());
    }
    for (auto& g : *chunk->mutable_groups()) r.groups.push_back(std::move(g));
    for (const auto& record : chunk->contacts()) {
      if (auto contact = contact_of(record)) r.contacts.push_back(std::move(*contact));
    }
    return r;
  }
  if (sync->has_device_change()) {
    const auto& d = sync->device_change();
    if ((d.device_id() == 0 &&
         (d.removed() || !d.auth_key().empty() || d.registration_id() != 0 || !d.link_started())) ||
        (d.removed() && d.link_started()) || (!d.auth_key().empty() && d.auth_key().size() != 32)) {
      return unreadable("a device change that is malformed");
    }
    r.kind = ReceivedContent::Kind::device_change;
    r.device_change.link_started = d.link_started();
    r.device_change.device_id = d.device_id();
    r.device_change.registration_id = d.registration_id();
    r.device_change.removed = d.removed();
    if (!d.auth_key().empty()) {
      std::array<std::uint8_t, 32> key{};
      std::copy(d.auth_key().begin(), d.auth_key().end(), key.begin());
      r.device_change.auth_key = key;
    }
    return r;
  }
  if (sync->has_trust()) {
    auto user = normalize_username(sync->trust().user());
    auto key = protocol::PublicKey::decode(as_bytes(sync->trust().identity_key()));
    if (!user || !key) return unreadable("a trust update without a valid user or key");
    r.kind = ReceivedContent::Kind::trust_update;
    r.user = std::move(*user);
    r.identity_key = *key;
    r.verified = sync->trust().verified();
    return r;
  }
  return r;
}

void fill_record(const store::StoredMessage& m, wire::backup::MessageRecord& r) {
  r.set_id(m.envelope_id);
  r.set_peer(m.peer);
  r.set_sender(m.sender);
  r.set_sender_device(m.sender_device);
  r.set_timestamp(m.timestamp);
  r.set_body(m.body);
  r.set_outgoing(m.outgoing);
}

std::optional<store::StoredMessage> take_history_row(wire::backup::MessageRecord& r) {
  auto peer = normalize_username(r.peer());
  if (!peer && r.peer().starts_with("group:")) {
    // A group's conversation: "group:" and the group id, 64 lower-case hex digits.
    const std::string id = r.peer().substr(6);
    if (id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string::npos) {
      peer = r.peer();
    }
  }
  auto sender = normalize_username(r.sender());
  if (!peer || !sender || r.id().empty() || r.id().size() > kMaxHistoryIdBytes ||
      r.timestamp() > static_cast<std::uint64_t>(INT64_MAX)) {
    return std::nullopt;
  }
  return store::StoredMessage{
      r.id(),      *peer, *sender, r.sender_device(), r.timestamp(), std::move(*r.mutable_body()),
      r.outgoing()};
}

void fill_record(const store::Contact& c, wire::backup::ContactRecord& r) {
  r.set_username(c.username);
  if (c.identity_key) r.set_identity_key(bytes_string(c.identity_key->serialize()));
  r.set_accepted(c.accepted);
  r.set_verified(c.verified);
  r.set_identity_changed_at(c.identity_changed_at);
}

std::optional<store::Contact> contact_of(const wire::backup::ContactRecord& r) {
  auto user = normalize_username(r.username());
  auto key = protocol::PublicKey::decode(as_bytes(r.identity_key()));
  if (!user || !key) return std::nullopt;
  return store::Contact{*user, *key, r.accepted(), r.verified(), r.identity_changed_at()};
}

std::optional<ResendRequest> read_plaintext_content(ByteView bytes) {
  if (bytes.size() > kMaxPlaintextContentBytes) return std::nullopt;
  content::PlaintextContent plain;
  if (!plain.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
      !plain.has_decryption_error()) {
    return std::nullopt;
  }
  const auto& e = plain.decryption_error();
  if (!e.ratchet_key().empty() && e.ratchet_key().size() != kSerializedPublicKeySize) {
    return std::nullopt;
  }
  return ResendRequest{e.timestamp(), Bytes(e.ratchet_key().begin(), e.ratchet_key().end())};
}

}  // namespace sotto::client
