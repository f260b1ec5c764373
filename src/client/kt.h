// Key transparency on the client (docs/transparency.md): every prekey bundle and device list of
// another account must come with a proof that its identity key and devices are in the server's
// log, at a tree head consistent with the last one this device verified. Keeps in the store the
// log's pinned public keys (kKtKeysValue: carried in the link for a linked device, else pinned at
// the first lookup after the server is pinned, trust on first use as for the server's key), the
// newest verified head (kKtHeadValue) and the newest version seen of each contact
// (kKtVersionsValue: a lower one later is a rollback).
//
// A failure is an Error with code security_alert (see security_alert_error) and nothing is
// encrypted to the keys it concerns. Thread-safe: one mutex, taken around each check (inside
// any crypto_mu; the store's own mutex is innermost).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/connection.h"
#include "sotto/client.h"
#include "store/client/client_store.h"
#include "transparency/audit.h"
#include "transparency/proofs.h"

namespace sotto::client {

using ConnectionPtr = std::shared_ptr<Connection>;  // as in server_link.h

inline constexpr std::string_view kKtKeysValue = "kt.keys";
inline constexpr std::string_view kKtHeadValue = "kt.head";
inline constexpr std::string_view kKtVersionsValue = "kt.versions";
// Monitoring our own account: the identity key and devices this device accepts (an encoded
// AccountValue: its baseline at the first check, then every change it made or expected), how
// many of the account's versions it has checked (u32, big-endian), and a link this device
// started whose new device has not appeared yet (present or absent).
inline constexpr std::string_view kKtOwnValue = "kt.own";
inline constexpr std::string_view kKtOwnCheckedValue = "kt.own_checked";
inline constexpr std::string_view kKtLinkingValue = "kt.linking";
// Devices another device of the account told this one it added (an encoded AccountValue: only
// its devices count), accepted when they appear, each once.
inline constexpr std::string_view kKtExpectedValue = "kt.expected";

// What another device of the account says it changed (content.proto OwnDeviceChange, checked).
struct OwnDeviceChange {
  bool link_started = false;    // the first new device after it is the account's own
  std::uint32_t device_id = 0;  // 0: none named
  std::uint32_t registration_id = 0;
  std::optional<std::array<std::uint8_t, 32>> auth_key;
  bool removed = false;
};

// Records `change` for this device's monitoring (kKtLinkingValue, kKtExpectedValue). Writes the
// store only (takes no KtClient lock), so it may run inside a store transaction.
[[nodiscard]] bool record_own_device_change(store::ClientStore& store,
                                            const OwnDeviceChange& change);

// Pins the log's keys (signing key || VRF key, 64 bytes) and, when it is signed by them, the
// tree head `head` (may be empty) that the device which linked this one sent in its provisioning
// message. Before the new device's first lookup: it then trusts its own account, not the server.
[[nodiscard]] Result<void> pin_log_from_link(store::ClientStore& store, ByteView keys,
                                             ByteView head);
// A required auditor (docs/transparency.md, "Auditing"): its Ed25519 key (32 bytes) and the
// oldest co-signature accepted (u64 milliseconds, big-endian). Absent: none required.
inline constexpr std::string_view kKtRequireAuditorValue = "kt.require_auditor";

struct AuditorRequirement {
  crypto::Ed25519PublicKey key{};
  std::uint64_t max_age_ms = 0;
  friend bool operator==(const AuditorRequirement&, const AuditorRequirement&) = default;
};

// An Error of code security_alert whose message security_alert_of() reads back.
[[nodiscard]] Error security_alert_error(std::string_view kind, const std::string& user,
                                         const std::string& detail);

class KtClient {
 public:
  explicit KtClient(store::ClientStore& store) : store_(store) {}

  // With a requirement, every lookup and monitoring answer must carry a co-signature by that
  // auditor of a head the answer's head extends, made no longer than max_age_ms ago; otherwise
  // it is refused as unlogged_key. nullopt removes the requirement.
  [[nodiscard]] Result<void> set_required_auditor(const std::optional<AuditorRequirement>& r);
  [[nodiscard]] Result<std::optional<AuditorRequirement>> required_auditor();
  // The wall clock co-signatures' age is measured with (milliseconds since the epoch); tests
  // set their own.
  void set_clock(std::function<std::uint64_t()> now_ms);

  // Why the co-signatures an answer at `head` carries do not meet `required` (nullopt: they do):
  // a valid one is by the required key, of a head the log signed, consistent with `head`, and
  // no older than required.max_age_ms at now_ms.
  [[nodiscard]] static std::optional<std::string> cosignature_problem(
      const AuditorRequirement& required, const transparency::LogPublicKeys& log_keys,
      const transparency::SignedTreeHead& head,
      const google::protobuf::RepeatedPtrField<svc::KtCosignature>& cosignatures,
      std::uint64_t now_ms);

  // The pinned log keys and the newest verified head (nullopt: nothing pinned).
  struct Pinned {
    transparency::LogPublicKeys keys;
    std::optional<transparency::SignedTreeHead> head;
  };
  [[nodiscard]] Result<std::optional<Pinned>> pinned();

  // The size of the newest verified tree head (0: none), for a lookup's kt_known_size.
  [[nodiscard]] std::uint64_t known_size();

  // Checks a lookup answer for `user` (`proof` null when it carried none) and returns what the
  // log proves of the account; nullopt when this server keeps no log and none was ever pinned.
  // security_alert errors: unlogged_key (no proof, a proof that does not verify, an account the
  // log says is absent), log_inconsistent (a head not consistent with ours, a version lower
  // than one seen). Asks `c` for the log's keys the first time.
  [[nodiscard]] Result<std::optional<transparency::AccountValue>> verify(
      const ConnectionPtr& c, std::chrono::milliseconds timeout, const std::string& user,
      const svc::KtProof* proof);

  // Monitoring (on connect, at least daily, on DevicesChanged): checks every version of our own
  // account the log holds since the last check, and returns the alerts: unknown_device for a
  // device or identity key this device neither is, nor had at its first check, nor added (a link
  // it started), nor was told of by another device of the account (record_own_device_change),
  // naming the device and the log entry it appeared in; log_inconsistent for a log or history
  // that does not verify. Nothing when the server keeps no log.
  //
  // With `hold_unknown`, the check stops before the first version with a device it would report
  // and says so (`held`), leaving that version unchecked: the caller handles what the server
  // has already sent (a sibling's OwnDeviceChange may be among it) and checks again without.
  struct OwnCheck {
    std::vector<Event> alerts;
    bool held = false;
  };
  [[nodiscard]] Result<OwnCheck> monitor_own(const ConnectionPtr& c,
                                             std::chrono::milliseconds timeout,
                                             const std::string& username, std::uint32_t self_device,
                                             ByteView self_auth_key, bool hold_unknown = false);

  // The pinned log keys (signing || VRF, 64 bytes) and the newest verified head (encoded), for a
  // link's provisioning message; empty when none is pinned.
  [[nodiscard]] std::pair<Bytes, Bytes> pinned_for_link();

  // Gossip (docs/transparency.md): the newest tree head this device verified, encoded (empty
  // when it has none), for the kt_tree_head of every message it sends. Never waits for a check
  // in progress.
  [[nodiscard]] Bytes gossip_head();

  // Checks a tree head that `sender` put in a message against ours: one of the same size must be
  // the same head; otherwise the server must show that the older extends to the newer (a newer
  // one, so proven, becomes ours). Returns a split_view alert (once per sender and head) when it
  // cannot; nothing for a head that is malformed or not signed by the pinned log key (a sender's
  // doing, not the log's), for a head already checked, and when no log is pinned. An error
  // when the server could not be asked (the next message with that head checks it again).
  using Ask = std::function<Result<svc::Response>(svc::Request)>;  // one request to the server
  [[nodiscard]] Result<std::vector<Event>> check_gossip(const Ask& ask, const std::string& sender,
                                                        ByteView head);

  // Whether a lookup this process verified showed `user`'s device (id, registration id) in the
  // log with this identity key (33 bytes). verify() remembers each account value it returns.
  [[nodiscard]] bool logged_device(const std::string& user, std::uint32_t device,
                                   std::uint32_t registration_id, ByteView identity_key);

  // Every bundle's identity key and device (id, registration id) must be in `value`.
  [[nodiscard]] static Result<void> check_bundles(
      const std::string& user, const transparency::AccountValue& value,
      const google::protobuf::RepeatedPtrField<sotto::wire::PreKeyBundle>& bundles);
  // The listed devices must be exactly the proven ones.
  [[nodiscard]] static Result<void> check_devices(
      const std::string& user, const transparency::AccountValue& value,
      const google::protobuf::RepeatedPtrField<svc::DeviceInfo>& devices);

 private:
  Result<bool> ensure_keys_locked(const ConnectionPtr& c, std::chrono::milliseconds timeout);
  Result<void> load_locked();
  // Saves the tracker's current head (after it advanced) and makes it the one gossiped.
  Result<void> save_head_locked();
  // The requirement's refusal detail for an answer at `head`, or nullopt.
  std::optional<std::string> unmet_requirement_locked(
      const transparency::SignedTreeHead& head,
      const google::protobuf::RepeatedPtrField<svc::KtCosignature>& cosignatures);

  std::mutex mu_;
  store::ClientStore& store_;
  bool loaded_ = false;
  bool server_has_no_log_ = false;  // this process asked and the server keeps none
  std::optional<transparency::TreeHeadTracker> tracker_;
  std::map<std::string, std::uint32_t> versions_;
  std::map<std::string, transparency::AccountValue> values_;  // verified lookups, latest each
  // Gossiped heads (encoded TreeHead) shown consistent with ours, and (sender, head) pairs
  // reported; both bounded.
  std::set<Bytes> consistent_;
  std::set<std::pair<std::string, Bytes>> reported_;

  std::mutex gossip_mu_;         // after mu_ when both are taken
  std::optional<Bytes> gossip_;  // the encoded head to send; nullopt: not read from the store yet
  std::optional<AuditorRequirement> required_;
  std::uint64_t unmet_reported_size_ = 0;  // monitoring's last unmet requirement, by head size
  std::function<std::uint64_t()> now_ms_;
};

}  // namespace sotto::client
