#include "client/history.h"

#include <algorithm>

#include "client/contacts.h"
#include "client/content_codec.h"
#include "client/errors.h"
#include "client/message_state.h"
#include "client/outbox.h"

namespace sotto::client {

namespace content = sotto::wire::content;

namespace {

// Whether `m` has a disappearing-message timer (conversations.h).
bool disappears(store::ClientStore& store, const store::StoredMessage& m) {
  auto record = store.load_message_state(m.peer, m.sender, m.timestamp);
  if (!record || !record->has_value()) return false;
  auto state = decode_state((*record)->view());
  return state && state->expire_timer() != 0;
}

}  // namespace

void History::set_serve_progress(Progress progress) {
  std::lock_guard lock(mu_);
  serve_progress_ = std::move(progress);
}

void History::set_import_progress(Progress progress) {
  std::lock_guard lock(mu_);
  import_progress_ = std::move(progress);
}

void History::on_request(std::uint32_t device, bool wanted) {
  // The contacts always go (so the new device knows the keys the user accepted, and holds a
  // contact's later key as this device would), the messages when asked for. A failed transfer
  // leaves the new device without them; it says so when its wait ends.
  (void)serve(device, wanted);
  std::lock_guard lock(mu_);
  answered_.push_back(device);
}

bool History::answered(std::uint32_t device) const {
  std::lock_guard lock(mu_);
  return std::find(answered_.begin(), answered_.end(), device) != answered_.end();
}

bool History::complete() const {
  std::lock_guard lock(mu_);
  return complete_;
}

Result<std::size_t> History::serve(std::uint32_t device, bool with_messages) {
  auto total = with_messages ? account_.store->message_count()
                             : tl::expected<std::size_t, store::ClientError>(0);
  if (!total) return tl::unexpected(from_store(total.error()));
  Progress progress;
  {
    std::lock_guard lock(mu_);
    progress = serve_progress_;
  }
  auto contacts = account_.store->contacts();
  if (!contacts) return tl::unexpected(from_store(contacts.error()));
  std::uint32_t sequence = 0;
  std::size_t sent = 0;
  content::Content chunk;
  for (const auto& c : *contacts) {
    if (c.identity_key) fill_record(c, *chunk.mutable_sync()->mutable_history()->add_contacts());
  }
  if (group_source_) {
    // The groups this device knows, with the first chunk (docs/groups.md).
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto logs = group_source_();
    if (!logs) return tl::unexpected(logs.error());
    for (auto& log : *logs) *chunk.mutable_sync()->mutable_history()->add_groups() = std::move(log);
  }
  std::size_t bytes = 0;
  Result<void> failed;
  const auto flush = [&](bool last) -> bool {
    auto* h = chunk.mutable_sync()->mutable_history();
    h->set_sequence(sequence++);
    h->set_last(last);
    h->set_total(*total);
    std::string plain = encode_padded(chunk, account_.kt);
    const std::size_t count = static_cast<std::size_t>(h->messages_size());
    for (auto& m : *h->mutable_messages()) {
      crypto::secure_wipe(m.mutable_body()->data(), m.body().size());
      crypto::secure_wipe(m.mutable_state()->data(), m.state().size());
    }
    chunk.Clear();
    bytes = 0;
    failed = outbox_.send_to_devices(account_.username, {device}, plain, outbox_.next_timestamp());
    crypto::secure_wipe(plain.data(), plain.size());
    if (!failed) return false;
    sent += count;
    if (progress) progress(sent, *total);
    return true;
  };
  if (!with_messages) {
    if (!flush(true)) return tl::unexpected(failed.error());
    return std::size_t{0};
  }
  auto walked = account_.store->for_each_message([&](const store::StoredMessage& m) {
    // Disappearing messages stay where they are counting down: a history record carries no
    // timer, so the new device would keep them for good.
    if (disappears(*account_.store, m)) return true;
    auto* record = chunk.mutable_sync()->mutable_history()->add_messages();
    fill_record(m, *record);
    // Its reactions, edited and deleted marks and receipts (message_state.h).
    auto state = account_.store->load_message_state(m.peer, m.sender, m.timestamp);
    if (state && state->has_value()) record->set_state(bytes_string((*state)->view()));
    bytes += m.body.size() + m.peer.size() + m.envelope_id.size() + record->state().size() + 32;
    if (bytes >= kHistoryChunkBytes ||
        chunk.sync().history().messages_size() >= static_cast<int>(kHistoryChunkMessages)) {
      return flush(false);
    }
    return true;
  });
  if (!walked) return tl::unexpected(from_store(walked.error()));
  if (!failed) return tl::unexpected(failed.error());
  if (!flush(true)) return tl::unexpected(failed.error());
  return sent;
}

Result<void> History::import(const std::vector<store::StoredMessage>& messages,
                             const std::vector<store::Contact>& contacts, bool last,
                             std::uint64_t total) {
  for (const auto& c : contacts) {
    if (c.username == account_.username) continue;
    if (auto merged = merge_contact(*account_.store, c); !merged) return merged;
  }
  for (const auto& m : messages) {
    if (auto added = account_.store->add_message(m); !added) {
      return tl::unexpected(from_store(added.error()));
    }
  }
  Progress progress;
  std::uint64_t imported = 0;
  {
    std::lock_guard lock(mu_);
    imported_ += messages.size();
    imported = imported_;
    if (last) complete_ = true;
    progress = import_progress_;
  }
  if (progress) progress(imported, total);
  return {};
}

}  // namespace sotto::client
