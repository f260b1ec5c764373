#include "client/content_codec.h"

#include "backup.pb.h"
#include "client/attachment_format.h"
#include "client/util.h"
#include "content.pb.h"
#include "crypto/secret.h"
#include "sotto/client.h"

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

}  // namespace

ReceivedContent::~ReceivedContent() {
  wipe(body);
  for (auto& m : history) wipe(m.body);
  for (auto& a : attachments) wipe(a);
}

namespace {

// The attachments of a data message that can be fetched, serialized; the others are dropped.
std::vector<std::string> read_attachments(content::DataMessage& data) {
  std::vector<std::string> out;
  for (auto& p : *data.mutable_attachments()) {
    if (out.size() < kMaxAttachmentsPerMessage && check_pointer(p).empty()) {
      out.push_back(p.SerializeAsString());
    }
    wipe(*p.mutable_key());
  }
  return out;
}

}  // namespace

ReceivedContent read_content(ByteView plaintext, bool from_own_account) {
  if (plaintext.size() > kMaxContentBytes) return unreadable("a message too large to read");
  content::Content c;
  if (!c.ParseFromArray(plaintext.data(), static_cast<int>(plaintext.size()))) {
    return unreadable("a message whose content cannot be read (it is malformed or not valid text)");
  }
  ReceivedContent r;
  if (c.has_data()) {
    r.kind = ReceivedContent::Kind::message;
    r.body = std::move(*c.mutable_data()->mutable_body());
    r.timestamp = c.data().timestamp();
    r.attachments = read_attachments(*c.mutable_data());
    return r;
  }
  if (!c.has_sync()) return r;  // a receipt, or something of a later version
  if (!from_own_account) return unreadable("a sync message from another account (ignored)");
  auto* sync = c.mutable_sync();
  if (sync->has_sent()) {
    auto destination = normalize_username(sync->sent().destination());
    if (!destination) {
      wipe(*sync->mutable_sent()->mutable_message()->mutable_body());
      return unreadable("a sync message without a valid destination");
    }
    r.kind = ReceivedContent::Kind::sent_copy;
    r.body = std::move(*sync->mutable_sent()->mutable_message()->mutable_body());
    r.timestamp = sync->sent().timestamp();
    r.attachments = read_attachments(*sync->mutable_sent()->mutable_message());
    r.destination = std::move(*destination);
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
      if (auto row = take_history_row(m)) r.history.push_back(std::move(*row));
      wipe(*m.mutable_body());
    }
    for (const auto& record : chunk->contacts()) {
      if (auto contact = contact_of(record)) r.contacts.push_back(std::move(*contact));
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
