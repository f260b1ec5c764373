#include "client/journal.h"

#include "client/attachment_history.h"
#include "client/message_state.h"
#include "journal.pb.h"

namespace sotto::client {

namespace {

constexpr std::uint32_t kMaxKind = static_cast<std::uint32_t>(Event::Kind::security_alert);
constexpr int kMaxTargets = 4096;
constexpr int kMaxDevicesListed = 1024;

}  // namespace

Bytes encode_event(const Event& e) {
  wire::journal::JournalEvent j;
  j.set_kind(static_cast<std::uint32_t>(e.kind));
  j.set_message_id(e.message.id);
  j.set_from(e.message.from);
  j.set_device(e.message.device);
  j.set_timestamp(e.message.timestamp);
  j.set_server_timestamp(e.message.server_timestamp);
  j.set_body(e.message.body);
  j.set_conversation(e.message.conversation);
  j.set_outgoing(e.message.outgoing);
  for (const auto& a : e.message.attachments) j.add_attachments(a.pointer);
  j.set_detail(e.detail);
  j.set_user(e.user);
  j.set_accepted(e.accepted);
  j.set_changed_at(e.changed_at);
  j.set_held(e.held);
  for (auto d : e.added) j.add_added(d);
  for (auto d : e.removed) j.add_removed(d);
  j.set_group(e.message.group);
  for (const auto& t : e.targets) {
    auto* r = j.add_targets();
    r->set_author(t.author);
    r->set_timestamp(t.timestamp);
  }
  j.set_emoji(e.emoji);
  j.set_alert(e.alert);
  j.set_read(e.read);
  j.set_typing(e.typing);
  j.set_expire_timer(e.expire_timer);
  j.set_mentions_me(e.message.mentions_me);
  if (has_state(e.message)) fill_state(e.message, *j.mutable_state());
  Bytes out(j.ByteSizeLong());
  j.SerializeWithCachedSizesToArray(out.data());
  // The serialized form held the body: wipe the message's copy before it is freed.
  crypto::secure_wipe(j.mutable_body()->data(), j.body().size());
  for (auto& a : *j.mutable_attachments()) crypto::secure_wipe(a.data(), a.size());
  return out;
}

std::optional<Event> decode_event(ByteView record) {
  wire::journal::JournalEvent j;
  if (!j.ParseFromArray(record.data(), static_cast<int>(record.size()))) return std::nullopt;
  if (j.kind() > kMaxKind || j.added_size() > kMaxDevicesListed ||
      j.removed_size() > kMaxDevicesListed || j.targets_size() > kMaxTargets) {
    return std::nullopt;
  }
  Event e;
  e.kind = static_cast<Event::Kind>(j.kind());
  e.message.id = j.message_id();
  e.message.from = j.from();
  e.message.device = j.device();
  e.message.timestamp = j.timestamp();
  e.message.server_timestamp = j.server_timestamp();
  e.message.body = j.body();
  e.message.conversation = j.conversation();
  e.message.outgoing = j.outgoing();
  for (const auto& a : j.attachments()) e.message.attachments.push_back(public_attachment(a));
  e.detail = j.detail();
  e.user = j.user();
  e.accepted = j.accepted();
  e.changed_at = j.changed_at();
  e.held = static_cast<std::size_t>(j.held());
  e.added.assign(j.added().begin(), j.added().end());
  e.removed.assign(j.removed().begin(), j.removed().end());
  e.message.group = j.group();
  for (const auto& t : j.targets()) e.targets.push_back(MessageRef{t.author(), t.timestamp()});
  e.emoji = j.emoji();
  e.alert = j.alert();
  e.read = j.read();
  e.typing = j.typing();
  e.expire_timer = j.expire_timer();
  if (j.has_state()) apply_state(j.state(), e.message);
  e.message.mentions_me = j.mentions_me();
  crypto::secure_wipe(j.mutable_body()->data(), j.body().size());
  for (auto& a : *j.mutable_attachments()) crypto::secure_wipe(a.data(), a.size());
  return e;
}

tl::expected<std::uint64_t, store::ClientError> Journal::record(Event& e) {
  Bytes bytes = encode_event(e);
  auto seq = store_.append_event(bytes);
  crypto::secure_wipe(bytes.data(), bytes.size());
  if (!seq) return tl::unexpected(seq.error());
  e.cursor = *seq;
  return *seq;
}

tl::expected<std::vector<Event>, store::ClientError> Journal::after(std::uint64_t after,
                                                                    std::size_t limit) {
  auto entries = store_.events(after, limit);
  if (!entries) return tl::unexpected(entries.error());
  std::vector<Event> out;
  out.reserve(entries->size());
  for (const auto& entry : *entries) {
    std::optional<Event> e =
        entry.record.size() > 0 ? decode_event(entry.record.view()) : std::nullopt;
    if (!e) {
      e = Event{};
      e->kind = Event::Kind::decrypt_failed;
      e->detail = "an event recorded in the local store is damaged and cannot be shown";
    }
    e->cursor = entry.seq;
    out.push_back(std::move(*e));
  }
  return out;
}

tl::expected<void, store::ClientError> Journal::acknowledge(std::uint64_t cursor) {
  return store_.remove_events(cursor);
}

}  // namespace sotto::client
