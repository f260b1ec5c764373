// Sending: a text message to every device of a user and of our own account; contents to some
// devices only (a resend, a history transfer); and the two halves of session repair.
//
// Session repair (Signal's decryption-error and resend): a device that cannot decrypt a message
// asks the sending device to send it again (request_resend: a plaintext DecryptionError, envelope
// type 8, the only content sent outside a session, carrying nothing secret). The sender keeps what
// it sent for kResendLogMs, sealed in its store; on a request it archives the session the failed
// message was sent with (when the request names that session's ratchet key), builds a new one
// from a fresh bundle and sends the same content again, with the same timestamp, so the recipient
// shows it once.
//
// A send is retried (reconnecting, repairing the device list) until Options::send_timeout, with
// the same message id each time, so the server stores it once. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "client/account.h"
#include "client/content_codec.h"
#include "client/keys.h"
#include "client/server_link.h"
#include "client/sessions.h"
#include "content.pb.h"

namespace sotto::client {

inline constexpr int kMaxStaleRetries = 3;               // device-list repairs per send
inline constexpr std::size_t kMaxBodyBytes = 64 * 1024;  // a text message, before padding
inline constexpr std::uint64_t kResendLogMs = 24ull * 3600 * 1000;
inline constexpr std::uint32_t kMaxResends = 3;            // per message and recipient
inline constexpr std::uint32_t kPlaintextContentType = 8;  // service.proto, Envelope.type

// Serializes a Content padded to a multiple of kPaddingBlock bytes, with the newest key
// transparency tree head this device verified (gossip, docs/transparency.md) when it has one.
[[nodiscard]] std::string encode_padded(wire::content::Content& c, KtClient& kt);
// The same without a tree head (tests and benchmarks that forge or time contents).
[[nodiscard]] std::string encode_padded(wire::content::Content& c);
// A UUIDv7-like message id: the time in milliseconds (6 bytes, big-endian), then random bytes
// (the server keeps its dedup entries in that order).
[[nodiscard]] std::array<std::uint8_t, 16> new_message_id(std::uint64_t now_ms, crypto::Rng& rng);

class Outbox {
 public:
  Outbox(Account& account, ServerLink& link, Sessions& sessions, KeyMaintenance& keys)
      : account_(account), link_(link), sessions_(sessions), keys_(keys) {}

  // `attachments`: serialized content.proto AttachmentPointers (the body may then be empty).
  [[nodiscard]] Result<SendResult> send_text(const std::string& to, const std::string& body,
                                             const std::vector<std::string>& attachments = {});

  // Sends `to_user` (when set) to every device of `to`, and `to_own` (when set) to our other
  // devices, as one message at `timestamp` (next_timestamp()); kept for resends like a text.
  // `timeout`: instead of Options::send_timeout.
  [[nodiscard]] Result<SendResult> send_contents(
      const std::string& to, std::uint64_t timestamp, wire::content::Content* to_user,
      wire::content::Content* to_own, std::optional<std::chrono::milliseconds> timeout = {});

  // Sends `content` (a serialized, padded Content) to `devices` of `user` only; a device without
  // a session gets one from a fresh bundle.
  [[nodiscard]] Result<void> send_to_devices(const std::string& user,
                                             const std::vector<std::uint32_t>& devices,
                                             const std::string& content, std::uint64_t timestamp);

  // Sends `content` (a serialized, padded Content) to every device of `user` (our own username:
  // our other devices, nothing to do when there is none) with `timestamp`; a group change.
  // Another user's devices are the ones we hold sessions with (all of them, fetched, when none).
  [[nodiscard]] Result<SendResult> send_content(const std::string& user, const std::string& content,
                                                std::uint64_t timestamp);

  // Sends `content` (a serialized, padded Content) to every other device of our account, trying
  // for at most `timeout` (nothing to do when there is none).
  [[nodiscard]] Result<void> send_to_own_devices(const std::string& content,
                                                 std::chrono::milliseconds timeout);

  // The clock's time, or one millisecond after the last message's: a device gives each message a
  // timestamp of its own, which is how a message is told apart when it is sent again.
  [[nodiscard]] std::uint64_t next_timestamp();

  // Asks `user`'s `device` to send again the message it sent at `timestamp`.
  [[nodiscard]] Result<void> request_resend(const std::string& user, std::uint32_t device,
                                            std::uint64_t timestamp, ByteView ratchet_key);
  // `user`'s `device` could not decrypt what we sent at `request.timestamp`: send it again.
  // Nothing to do (not an error) when the content is no longer kept or was sent again enough.
  [[nodiscard]] Result<void> resend(const std::string& user, std::uint32_t device,
                                    const ResendRequest& request);

 private:
  struct Part {
    std::string user;
    std::string plaintext;  // serialized padded Content; wiped when the Part goes
    bool fetch_if_none = false;
    std::optional<std::vector<std::uint32_t>> devices;  // some devices only
  };
  struct Outgoing {
    std::string recipient;
    std::vector<Part> parts;
    bool subset = false;
    std::uint64_t timestamp = 0;
    std::array<std::uint8_t, 16> message_id{};
    std::optional<std::chrono::milliseconds> timeout;  // none: Options::send_timeout
    ~Outgoing();                                       // wipes the parts' plaintexts
  };

  [[nodiscard]] Result<SendResult> deliver(Outgoing& out);
  // REQUIRES: crypto_mu held.
  [[nodiscard]] Result<void> encrypt_part(const ConnectionPtr& c, Part& part,
                                          svc::SendRequest& request);
  [[nodiscard]] Result<protocol::CiphertextMessage> encrypt_for(const ConnectionPtr& c,
                                                                const protocol::Address& address,
                                                                ByteView plaintext);
  [[nodiscard]] Result<void> repair(const ConnectionPtr& c, const svc::SendResponse& response);

  Account& account_;
  ServerLink& link_;
  Sessions& sessions_;
  KeyMaintenance& keys_;
  std::atomic<std::uint64_t> last_timestamp_{0};
};

}  // namespace sotto::client
