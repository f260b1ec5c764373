// The relay server's request handling (docs/architecture.md sections 4-5): registration, device
// authentication, keys, store-and-forward of ciphertext, device lists and linking, account
// recovery, and the announcement of the server's next TLS key. It sits on top
// of the transport (net::WsServer calls it per connection) and the storage interfaces
// (store::ServerStore). It never sees a plaintext or a private key: message contents are opaque.
// Thread-safe: connection callbacks arrive on several I/O threads, send completions on the
// store's writer thread.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "crypto/rng.h"
#include "net/ws_server.h"
#include "server/attachments.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/rate_limiter.h"
#include "store/server/store.h"

namespace sotto::wire::service {
class Request;
class Response;
class Push;
}  // namespace sotto::wire::service

namespace sotto::server {

// Lower-cases and checks a username: 3-32 characters from [a-z0-9._-], starting with a letter or
// digit. Returns nullopt when invalid.
std::optional<std::string> normalize_username(std::string_view name);

// The server's next TLS key, announced to every device after its login while the operator
// rotates the key (service.proto ServerKeyAnnouncement; net/server_key.h makes the signature).
struct NextServerKey {
  Bytes public_key;  // DER SubjectPublicKeyInfo
  Bytes signature;   // by the current key
};

class Server final : public net::ConnectionHandler {
 public:
  using NowMs = std::function<std::uint64_t()>;
  Server(const ServerConfig& config, store::ServerStore& store, Metrics& metrics, crypto::Rng& rng,
         NowMs now_ms);
  ~Server() override;

  void on_open(const net::ConnectionPtr& c, std::string_view authorization) override;
  void on_frame(const net::ConnectionPtr& c, ByteView frame) override;
  void on_close(const net::ConnectionPtr& c) override;
  // The connection has room again for pushes: the drain goes on (delivery is paced by bytes).
  void on_writable(const net::ConnectionPtr& c) override;

  // Periodic housekeeping: expires old envelopes and dedup keys.
  void maintenance();
  // Creates `count` invite codes valid for `days`; returns them. A registration accepts a code in
  // any case, with or without its dashes.
  std::vector<std::string> create_invites(std::size_t count, std::uint64_t days);
  // From now on, every login is followed by this announcement (none: no more announcements).
  // Devices already logged in are not told: they hear it at their next login.
  void announce_next_key(std::optional<NextServerKey> next);

 private:
  struct Session;
  using SessionPtr = std::shared_ptr<Session>;
  using Respond = std::function<void(wire::service::Response&&)>;

  SessionPtr session_of(const net::ConnectionPtr& c);
  void handle(const SessionPtr& s, wire::service::Request& request);
  void login_in_upgrade(const SessionPtr& s, std::string_view authorization);
  void after_login(const SessionPtr& s);
  void reply(const SessionPtr& s, wire::service::Response&& response);
  void push(const SessionPtr& s, wire::service::Push&& push);

  void on_register(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_challenge(const SessionPtr& s, wire::service::Response& out);
  void on_authenticate(const SessionPtr& s, wire::service::Request& r,
                       wire::service::Response& out);
  void on_upload_keys(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_key_count(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_fetch_bundles(const SessionPtr& s, wire::service::Request& r,
                        wire::service::Response& out);
  // Replies asynchronously once the envelopes are durable.
  void on_send(const SessionPtr& s, wire::service::Request& r);
  // Replies asynchronously once the deletion is durable.
  void on_ack(const SessionPtr& s, wire::service::Request& r);
  void on_list_devices(const SessionPtr& s, wire::service::Request& r,
                       wire::service::Response& out);
  void on_remove_device(const SessionPtr& s, wire::service::Request& r,
                        wire::service::Response& out);
  void on_provisioning_open(const SessionPtr& s, wire::service::Response& out);
  void on_provisioning_send(const SessionPtr& s, wire::service::Request& r,
                            wire::service::Response& out);
  void on_link_token(const SessionPtr& s, wire::service::Response& out);
  void on_link_device(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_recover(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_identity_key(const SessionPtr& s, wire::service::Request& r,
                       wire::service::Response& out);
  void on_block(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_list_blocks(const SessionPtr& s, wire::service::Response& out);

  // The envelopes of one send on their way out: which have been pushed, and which are counted
  // in awaiting_commit_.
  struct Delivery {
    std::vector<store::QueuedEnvelope> envelopes;
    std::mutex mu;  // guards the members below
    std::vector<bool> pushed;
    std::vector<std::uint64_t> pushed_to;  // the connection each was pushed on
    std::vector<bool> counted;
    bool committed = false;  // deliver_after_commit has begun
  };

  SessionPtr online_session(store::AccountId account, store::DeviceId device);
  void drain(const SessionPtr& s);
  void deliver_before_commit(Delivery& delivery);
  void deliver_after_commit(Delivery& delivery, bool stored);
  void notify_keys_low(store::AccountId account, store::DeviceId device);
  // Pushes DevicesChanged to every online device of the account except `changed` (the device
  // added or removed).
  void notify_devices_changed(store::AccountId account, store::DeviceId changed);
  // Logs the session out at once (its next request is refused) and, when `close`, closes its
  // connection with `reason`.
  void sign_out(const SessionPtr& s, const std::string& reason, bool close);
  // The time (6 bytes, milliseconds, big-endian) then 10 random bytes: unguessable, and in order
  // of arrival, so that the store's index on envelope ids grows at its end (like the dedup rows).
  store::EnvelopeId next_envelope_id(std::uint64_t now_ms);

  ServerConfig config_;
  store::ServerStore& store_;
  Metrics& metrics_;
  crypto::Rng& rng_;
  NowMs now_ms_;
  RateLimiter registrations_;
  RateLimiter logins_;          // per address key (net/address_key.h), before the proof
  RateLimiter account_logins_;  // per account, after the proof
  RateLimiter bundle_fetches_;
  // One-time prekeys handed out per target "account/device" to other accounts.
  RateLimiter pre_key_handouts_;
  RateLimiter block_changes_;  // per account
  RateLimiter recoveries_;     // per username
  // Per account (docs/abuse.md): sends and their bytes, acknowledged ids, other accounts' device
  // lists, link tokens; provisioning per source address (open) and per account (send).
  RateLimiter sends_;
  RateLimiter send_bytes_;
  RateLimiter acks_;
  RateLimiter device_lists_;
  RateLimiter link_tokens_;
  RateLimiter provisioning_rate_;

  // The storage budget: bytes of sends on their way to the store (not yet in stored_bytes()),
  // and the data directory's free space, read at most once a second.
  std::atomic<std::uint64_t> reserved_bytes_{0};
  std::atomic<std::int64_t> disk_checked_ms_{-1};  // steady clock; -1: never
  std::atomic<std::uint64_t> disk_free_bytes_{UINT64_MAX};
  std::atomic<std::int64_t> storage_warned_ms_{-1};  // steady clock of the last warning
  // Reserves `bytes` of the budget for a send on its way to the store; when they do not fit,
  // returns why (and nothing stays reserved).
  std::string reserve_storage(std::uint64_t bytes);
  // Why sends cannot be stored with `reserved` bytes (this one's included) on their way (empty:
  // they can).
  std::string storage_refusal(std::uint64_t reserved);
  void update_stored_bytes_gauge();

  AttachmentService attachments_;                        // docs/attachments.md
  std::mutex next_key_mutex_;                            // guards next_key_ and told_next_key_
  std::shared_ptr<const wire::service::Push> next_key_;  // the announcement; null: none
  // The devices next_key_ was pushed to (memory only, never logged): the operator sees how many
  // on /metrics before `key activate` (devices that were never told must re-pin by hand).
  std::set<std::pair<store::AccountId, store::DeviceId>> told_next_key_;

  std::mutex mutex_;                                                      // guards the maps below
  std::unordered_map<std::uint64_t, SessionPtr> sessions_;                // by connection id
  std::unordered_map<std::string, std::weak_ptr<Session>> online_;        // "account/device"
  std::unordered_map<std::string, std::weak_ptr<Session>> provisioning_;  // by address bytes
  // Per "account/device": envelopes accepted but not pushed before their commit. While any is
  // waiting, newer envelopes for that device are not pushed ahead of it.
  std::unordered_map<std::string, std::size_t> awaiting_commit_;

  // Random bytes for envelope ids, drawn from rng_ a block at a time (one system call per id
  // showed in profiles); guarded by id_mutex_.
  std::mutex id_mutex_;
  std::array<std::uint8_t, 4096> id_pool_{};
  std::size_t id_pool_used_ = sizeof(id_pool_);
};

}  // namespace sotto::server
