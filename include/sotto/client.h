// The public client API of Sotto: one account on one device, backed by an encrypted local store
// and one TLS WebSocket to the server. Apps (the `sotto` CLI, bots) use only this header; the
// engine behind it lives in src/client and is not part of the API.
//
// Ownership: a Client owns its store, its connection and, after start(), one listener thread.
// Exactly one Client (in one process) may hold an account at a time: opening takes an exclusive
// lock on the account and fails with account_busy after Options::lock_wait.
//
// Thread-safety: every method may be called from any thread. Event handlers run on the listener
// thread (after start()) or on the caller's thread (receive()); a handler must not call receive()
// or stop() itself, and should return quickly.
//
// Errors: every fallible call returns Result<T>. Error::message is one line meant for a human;
// it never carries key material or message text.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tl/expected.hpp>

namespace sotto {

namespace client {
class Engine;
}  // namespace client

enum class ErrorCode {
  invalid_argument,      // a malformed username, code, option value or message
  no_account,            // no account with that name in the data directory
  ambiguous_account,     // several accounts and none was chosen
  account_exists,        // registering or linking an account the data directory already has
  account_busy,          // another sotto process is using the account
  wrong_passphrase,      // the passphrase (or key file) does not open the store
  store,                 // the local store failed (I/O, damage)
  network,               // the server cannot be reached (after retries)
  fingerprint_mismatch,  // the server's certificate is not the pinned one
  server,                // the server refused the request (message says why)
  unauthenticated,       // the server does not accept this device (removed from the account?)
  not_found,             // no such user or device
  untrusted_identity,    // a contact's identity key changed and is not trusted yet
  protocol,              // encryption-level failure (bad bundle, undecryptable provisioning)
  timeout,               // the operation did not finish in time
};

std::string_view to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::server;
  std::string message;
};

template <typename T>
using Result = tl::expected<T, Error>;

// The trust policy for contacts' identity keys (--trust-new-identities).
inline constexpr const char* kTrustOnFirstUse = "on-first-use";  // first key trusted, changes not
inline constexpr const char* kTrustAlways = "always";            // changes accepted and reported
inline constexpr const char* kTrustNever = "never";              // only keys verified with trust()

struct Options {
  std::filesystem::path data_dir;
  // Store passphrase; none means the store's random key file.
  std::optional<std::string> passphrase;
  // When set, replaces the account's stored trust policy.
  std::optional<std::string> trust_policy;
  std::chrono::milliseconds request_timeout{15000};
  // How long opening waits for another process to release the account.
  std::chrono::milliseconds lock_wait{10000};
  // How long send() keeps retrying (reconnecting, repairing device lists) before giving up.
  std::chrono::milliseconds send_timeout{30000};
};

struct Server {
  std::string host;
  std::uint16_t port = 0;
  // SHA-256 of the server certificate (hex). Empty: trust on first use, then pinned.
  std::string fingerprint;
};

// One message of a conversation, as shown to the user.
struct Message {
  std::string id;                 // envelope id (hex), or a local id for what we sent
  std::string from;               // the author (our own username for sync copies)
  std::uint32_t device = 0;       // the author's device
  std::uint64_t timestamp = 0;    // the author's clock, milliseconds since the epoch
  std::uint64_t server_timestamp = 0;
  std::string body;
  std::string conversation;       // the other user of the conversation
  bool outgoing = false;          // written by us (a sync copy from our other device, or history)
};

struct Event {
  enum class Kind {
    message,           // `message` is set
    decrypt_failed,    // message.from/device/id say whose; `detail` says why
    identity_changed,  // message.from's safety number changed (the policy accepted the key)
    connected,
    disconnected,      // `detail` says why; the listener reconnects with backoff
    fatal,             // the listener stopped: `error` says why (removed device, pin mismatch)
  };
  Kind kind = Kind::message;
  Message message;
  std::string detail;
  // decrypt_failed only: the sender's identity key is not trusted (safety number changed).
  bool untrusted_identity = false;
  std::optional<Error> error;
};
using EventHandler = std::function<void(const Event&)>;

struct SendResult {
  std::uint64_t timestamp = 0;   // the message's timestamp (our clock, ms)
  std::size_t devices = 0;       // device copies the server accepted
};

struct Device {
  std::uint32_t id = 0;
  std::uint32_t registration_id = 0;
  std::uint64_t created_day = 0;  // days since the epoch
  bool current = false;           // this device
};

struct Contact {
  std::string username;
  bool verified = false;
  std::uint64_t identity_changed_at = 0;  // ms since the epoch; 0 when unchanged
  std::string identity_key_hex;           // public identity key, for display
};

struct SafetyNumber {
  std::string digits;                   // 60 digits
  std::vector<std::uint8_t> scannable;  // bytes for the QR code
};

// What a new device shows while it waits to be linked.
struct LinkPrompt {
  std::string code;     // 80 base32 characters in groups of 4, to be typed exactly
  std::string qr_text;  // the text to encode as a QR code
};

class Client {
 public:
  // Creates the account on the server and its local store. The username is normalised to lower
  // case.
  [[nodiscard]] static Result<std::unique_ptr<Client>> register_account(
      const Options& options, const std::string& username, const Server& server,
      const std::string& invite_code = {});
  // Opens an existing account; an empty username picks the only account of the data directory.
  [[nodiscard]] static Result<std::unique_ptr<Client>> open(const Options& options,
                                                            const std::string& username = {});
  // Links this machine as a new device of an existing account: shows `prompt` through `show`,
  // waits (at most `timeout`) for an existing device to send the account (add_device), and
  // registers the device.
  [[nodiscard]] static Result<std::unique_ptr<Client>> link(
      const Options& options, const Server& server,
      const std::function<void(const LinkPrompt&)>& show, std::chrono::seconds timeout);
  // Accounts with a store in the data directory.
  [[nodiscard]] static std::vector<std::string> accounts(const std::filesystem::path& data_dir);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  [[nodiscard]] std::string username() const;
  [[nodiscard]] std::uint32_t device_id() const;
  [[nodiscard]] Server server() const;
  [[nodiscard]] std::string trust_policy() const;

  // Connects and authenticates (other calls do it on demand).
  [[nodiscard]] Result<void> connect();

  // Encrypts `body` for every device of `to` and our other devices and sends it; returns once
  // the server has stored it durably. Retries with the same message id, so a message is stored
  // once however often it is retried.
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body);

  // Fetches what the server holds for this device: each message is decrypted, stored, handed to
  // `handler` once and acknowledged. Returns the number of events once the queue is drained.
  [[nodiscard]] Result<std::size_t> receive(std::chrono::milliseconds timeout,
                                            const EventHandler& handler);

  // Runs a listener thread that receives live (reconnecting with backoff) until stop().
  [[nodiscard]] Result<void> start(EventHandler handler);
  void stop();

  [[nodiscard]] Result<std::vector<Device>> devices();
  [[nodiscard]] Result<void> remove_device(std::uint32_t id);
  // Sends the account to the new device that shows `code`; returns the new device's id once it
  // has registered (0 when it did not within a short wait).
  [[nodiscard]] Result<std::uint32_t> add_device(const std::string& code);

  [[nodiscard]] Result<std::vector<Contact>> contacts();
  [[nodiscard]] Result<SafetyNumber> safety_number(const std::string& user);
  // Accepts and marks verified `user`'s current identity key (as the server has it), replacing
  // sessions built with an earlier key. Returns the (new) safety number.
  [[nodiscard]] Result<SafetyNumber> trust(const std::string& user);
  // The newest `limit` messages with `user`, oldest first (all when limit is 0).
  [[nodiscard]] Result<std::vector<Message>> history(const std::string& user, std::size_t limit);

 private:
  explicit Client(std::unique_ptr<client::Engine> engine);
  std::unique_ptr<client::Engine> engine_;
};

// Lower-cases and checks a username as the server does: 3-32 characters of a-z, 0-9, '.', '_',
// '-', starting with a letter or digit.
[[nodiscard]] std::optional<std::string> normalize_username(std::string_view name);

}  // namespace sotto
