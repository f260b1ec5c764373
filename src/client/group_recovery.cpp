// Groups: Sender Key recovery (docs/groups.md, section 5). A device that gets a group message
// under a key it was never given (the distribution was lost, or the device came later) asks the
// sending device in the 1:1 session; the sender gives a member's device its current chain and,
// when it still has it, the message again under that chain. Each request is made and answered
// once, and a device asks and is answered at most kRecoveryPerMinute times a minute, so neither
// side can be made to send without bound.
#include <algorithm>

#include "client/attachment_history.h"
#include "client/content_codec.h"
#include "client/errors.h"
#include "client/group_codec.h"
#include "client/groups.h"
#include "client/util.h"
#include "protocol/sender_keys.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

constexpr std::size_t kRecoveryPerMinute = 20;
constexpr std::uint64_t kMinuteMs = 60'000;
constexpr std::size_t kRecoveryRemembered = 4096;
constexpr std::size_t kHistoryScanned = 2000;  // our recent group messages looked at to resend

std::string device_prefix(const std::string& user, std::uint32_t device) {
  return user + " " + std::to_string(device) + " ";
}

// Whether one more request of `prefix`'s device fits its budget; records it when it does.
// `entries`: request -> when (ms).
bool within_budget(std::map<std::string, std::uint64_t>& entries, const std::string& prefix,
                   const std::string& request, std::uint64_t now) {
  if (entries.contains(request)) return false;  // once per request
  std::size_t recent = 0;
  for (auto it = entries.lower_bound(prefix); it != entries.end() && it->first.starts_with(prefix);
       ++it) {
    if (it->second + kMinuteMs > now) ++recent;
  }
  if (recent >= kRecoveryPerMinute) return false;
  if (entries.size() >= kRecoveryRemembered) {
    // Forget the oldest request (a repeat of it is then answered again, within the budget).
    auto oldest =
        std::min_element(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return a.second < b.second; });
    entries.erase(oldest);
  }
  entries.emplace(request, now);
  return true;
}

}  // namespace

std::function<void()> Groups::ask_for_sender_key(const std::string& user, std::uint32_t device,
                                                 std::uint32_t key_id, std::uint64_t timestamp) {
  if (user == account_.username && device == account_.device_id) return {};
  const std::string prefix = device_prefix(user, device);
  {
    std::lock_guard lock(recovery_mu_);
    if (!within_budget(asked_, prefix,
                       prefix + std::to_string(key_id) + " " + std::to_string(timestamp),
                       account_.clock.now_ms())) {
      return {};
    }
  }
  return [this, user, device, key_id, timestamp] {
    content::Content c;
    auto* d = c.mutable_data();
    const std::uint64_t now = outbox_.next_timestamp();
    d->set_timestamp(now);
    d->mutable_sender_key_request()->set_key_id(key_id);
    d->mutable_sender_key_request()->set_timestamp(timestamp);
    // Best effort: a request that is lost leaves the message unread, as before.
    (void)outbox_.send_to_devices(user, {device}, encode_padded(c, account_.kt), now);
  };
}

Groups::ContentResult Groups::on_sender_key_request(const content::SenderKeyRequest& request,
                                                    const std::string& user, std::uint32_t device) {
  ContentResult r;
  r.handled = true;
  const std::string prefix = device_prefix(user, device);
  {
    std::lock_guard lock(recovery_mu_);
    if (!within_budget(
            answered_, prefix,
            prefix + std::to_string(request.key_id()) + " " + std::to_string(request.timestamp()),
            account_.clock.now_ms())) {
      return r;
    }
  }
  r.followup = [this, user, device, key_id = request.key_id(), timestamp = request.timestamp()] {
    answer_sender_key_request(user, device, key_id, timestamp);
  };
  return r;
}

void Groups::answer_sender_key_request(const std::string& user, std::uint32_t device,
                                       std::uint32_t key_id, std::uint64_t timestamp) {
  std::lock_guard lock(mu_);
  const std::string& self = account_.username;
  std::string hex;
  std::string distribution;
  std::string ciphertext;
  std::uint32_t registration = 0;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    // The group whose chain of ours has that key id, with the asking account as a member (a
    // device of a non-member learns nothing, not even that such a group exists).
    auto ids = account_.store->load_value("groups");
    if (!ids || !ids->has_value()) return;
    const ByteView list = (*ids)->view();
    content::GroupState state;
    for (std::size_t i = 0; i + kGroupIdBytes <= list.size() && hex.empty(); i += kGroupIdBytes) {
      const std::string candidate = to_hex(list.subspan(i, kGroupIdBytes));
      auto s = load(candidate);
      if (!s || !s->has_value() || find_member(**s, self) == nullptr ||
          find_member(**s, user) == nullptr) {
        continue;
      }
      auto record = account_.store->load_sender_key(
          {candidate, protocol::Address{self, protocol::DeviceId(account_.device_id)}});
      if (!record || !record->has_value()) continue;
      if ((*record)->find(protocol::SenderKeyId(key_id)) == nullptr) continue;
      hex = candidate;
      state = std::move(**s);
    }
    if (hex.empty()) return;
    const protocol::SenderKeyName own{
        hex, protocol::Address{self, protocol::DeviceId(account_.device_id)}};
    auto skdm = protocol::create_sender_key_distribution(own, *account_.store, account_.rng);
    if (!skdm) return;
    content::Content dist;
    dist.set_sender_key_distribution(bytes_string(*skdm));
    dist.set_sender_key_group_id(state.id());
    distribution = encode_padded(dist, account_.kt);

    // The message, as we sent it, under the chain the device now gets.
    if (timestamp != 0) {
      auto rows = account_.store->messages("group:" + hex, kHistoryScanned);
      if (rows) {
        for (auto& row : *rows) {
          if (row.sender != self || row.sender_device != account_.device_id ||
              row.timestamp != timestamp || !row.outgoing ||
              row.envelope_id.starts_with(store::kNoticePrefix)) {
            continue;
          }
          content::Content c;
          auto* d = c.mutable_data();
          d->set_body(row.body);
          d->set_timestamp(timestamp);
          d->mutable_group()->set_id(state.id());
          d->mutable_group()->set_revision(state.revision());
          for (const auto& a : load_message_attachments(*account_.store, row.envelope_id)) {
            if (!d->add_attachments()->ParseFromString(a.pointer))
              d->mutable_attachments()->RemoveLast();
          }
          std::string plaintext = encode_padded(c, account_.kt);
          for (auto& a : *d->mutable_attachments()) wipe(*a.mutable_key());
          wipe(*d->mutable_body());
          auto ct =
              protocol::group_encrypt(own, as_bytes(plaintext), *account_.store, account_.rng);
          wipe(plaintext);
          if (ct) ciphertext = bytes_string(*ct);
          break;
        }
        for (auto& row : *rows) wipe(row.body);
      }
      auto session = account_.store->load_session({user, protocol::DeviceId(device)});
      if (session && session->has_value() && (*session)->has_current()) {
        registration = (*session)->current().remote_registration_id.value;
      }
    }
  }
  if (!outbox_.send_to_devices(user, {device}, distribution, outbox_.next_timestamp())) return;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto shared = shared_with(hex);
    if (shared) {
      const std::string key = user + " " + std::to_string(device);
      if (std::find(shared->begin(), shared->end(), key) == shared->end()) {
        shared->push_back(key);
        (void)save_shared_with(hex, *shared);
      }
    }
  }
  if (ciphertext.empty() || registration == 0) return;
  auto connected =
      link_.ensure_connected(std::chrono::steady_clock::now() + account_.options.request_timeout);
  if (!connected) return;
  std::vector<SharedRecipient> to{SharedRecipient{user, {{device, registration}}}};
  (void)send_shared(connected->connection, to, ciphertext, timestamp,
                    new_message_id(account_.clock.now_ms(), account_.rng));
}

}  // namespace sotto::client
