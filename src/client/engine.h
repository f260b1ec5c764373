// The client engine (DESIGN.md section 2, src/client): one account on one device. It owns the
// account's store (protocol state, contacts, history), the connection to the server with
// reconnection and backoff, and the flows of a messenger: registration and linking, sending to
// every device of a recipient and of our own account (repairing stale device lists), receiving
// with exactly-once processing, prekey replenishment and rotation, and safety numbers.
//
// Threads: the transport's I/O thread only queues pushes; envelopes are processed by whoever
// consumes the queue (receive() on the caller's thread, or the listener thread after start()).
// Operations on sessions (encrypt, decrypt, bundle processing) are serialised by one mutex, so a
// send on one thread and a receive on another never race on a ratchet. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "client/connection.h"
#include "client/util.h"
#include "content.pb.h"
#include "protocol/bundle.h"
#include "protocol/session.h"
#include "sotto/client.h"
#include "store/client/client_store.h"

namespace sotto::client {

// Limits of the engine, with the reason for each.
inline constexpr std::size_t kPreKeyBatch = 100;      // one-time prekeys per upload
inline constexpr std::uint32_t kPreKeyLowWater = 10;  // replenish below this (as the server)
inline constexpr std::uint64_t kSignedPreKeyMaxAgeSeconds = 7 * 24 * 3600;  // rotate weekly
inline constexpr int kMaxStaleRetries = 3;               // device-list repairs per send
inline constexpr std::size_t kMaxBodyBytes = 64 * 1024;  // a text message, before padding
inline constexpr std::chrono::milliseconds kBackoffInitial{250};
inline constexpr std::chrono::milliseconds kBackoffCap{30000};
inline constexpr std::chrono::seconds kAddDeviceWait{30};  // waiting for a linked device to appear

class Engine {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Engine>> register_account(
      const Options& options, const std::string& username, const sotto::Server& server,
      const std::string& invite_code);
  [[nodiscard]] static Result<std::unique_ptr<Engine>> open(const Options& options,
                                                            const std::string& username);
  [[nodiscard]] static Result<std::unique_ptr<Engine>> link(
      const Options& options, const sotto::Server& server,
      const std::function<void(const LinkPrompt&)>& show, std::chrono::seconds timeout);

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  [[nodiscard]] std::string username() const;
  [[nodiscard]] std::uint32_t device_id() const;
  [[nodiscard]] sotto::Server server() const;
  [[nodiscard]] std::string trust_policy() const;

  [[nodiscard]] Result<void> connect();
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body);
  [[nodiscard]] Result<std::size_t> receive(std::chrono::milliseconds timeout,
                                            const EventHandler& handler);
  [[nodiscard]] Result<void> start(EventHandler handler);
  void stop();

  [[nodiscard]] Result<std::vector<Device>> devices();
  [[nodiscard]] Result<void> remove_device(std::uint32_t id);
  [[nodiscard]] Result<std::uint32_t> add_device(const std::string& code);
  [[nodiscard]] Result<std::vector<Contact>> contacts();
  [[nodiscard]] Result<SafetyNumber> safety_number(const std::string& user);
  [[nodiscard]] Result<SafetyNumber> trust(const std::string& user);
  [[nodiscard]] Result<std::vector<Message>> history(const std::string& user, std::size_t limit);

 private:
  using ConnectionPtr = std::shared_ptr<Connection>;
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;  // none: no limit

  struct Connected {
    ConnectionPtr connection;
    std::uint64_t generation = 0;
  };

  struct Inbound {
    std::uint64_t generation = 0;
    bool closed = false;  // else a push
    svc::Push push;
    std::string reason;
  };

  Engine(Options options, std::unique_ptr<store::ClientStore> store, AccountLock lock);

  // --- connection -------------------------------------------------------------------------
  [[nodiscard]] Result<Connected> connect_once();
  // The authenticated connection, connecting (with backoff between attempts) until `deadline`.
  // Fails at once on a pin mismatch or a refused device, and when the listener is stopping.
  // `on_retry` (optional) hears about each failed attempt and the delay before the next.
  using RetryHandler = std::function<void(const Error&, std::chrono::milliseconds)>;
  [[nodiscard]] Result<Connected> ensure_connected(Deadline deadline,
                                                   const RetryHandler& on_retry = nullptr);
  // The open connection, or nullptr (never connects).
  [[nodiscard]] ConnectionPtr current_connection();
  [[nodiscard]] std::uint64_t current_generation();
  [[nodiscard]] Result<svc::Response> call_ok(const ConnectionPtr& c, svc::Request request);
  [[nodiscard]] std::optional<Inbound> next_inbound(Deadline deadline);

  // --- keys ---------------------------------------------------------------------------------
  // Replenishes one-time prekeys when the server holds fewer than kPreKeyLowWater and rotates
  // the signed prekey when it is older than kSignedPreKeyMaxAgeSeconds.
  [[nodiscard]] Result<void> maintain_keys(const ConnectionPtr& c);
  // After a one-shot send: maintenance when the server said KeysLow or the signed prekey is due.
  void maintain_keys_if_due(const ConnectionPtr& c);

  // --- sessions -----------------------------------------------------------------------------
  [[nodiscard]] Result<std::vector<protocol::PreKeyBundle>> fetch_bundles(
      const ConnectionPtr& c, const std::string& user, const std::vector<std::uint32_t>& devices);
  // REQUIRES: crypto_mu_ held.
  [[nodiscard]] Result<void> process_bundles(const std::string& user,
                                             const std::vector<protocol::PreKeyBundle>& bundles);
  [[nodiscard]] Result<void> repair_devices(const ConnectionPtr& c,
                                            const svc::SendResponse& response);
  // Encrypts `plaintext` for every device we hold a session with (fetching bundles for a user
  // we have none with). REQUIRES: crypto_mu_ held.
  [[nodiscard]] Result<void> encrypt_for_user(const ConnectionPtr& c, const std::string& user,
                                              ByteView plaintext, bool fetch_if_none,
                                              svc::SendRequest& out);

  // --- receiving ----------------------------------------------------------------------------
  // Processes one envelope exactly once; returns the events to report.
  std::vector<Event> handle_envelope(const svc::Envelope& envelope);
  void acknowledge(const std::string& envelope_id);
  // Handles one inbound item; true when it was the QueueDrained of the current connection.
  bool dispatch(const Inbound& in, const EventHandler& handler, std::size_t& count);
  void listen_loop();

  [[nodiscard]] protocol::SessionStores stores();
  [[nodiscard]] Result<SafetyNumber> fingerprint_with(const std::string& user,
                                                      const protocol::PublicKey& their_key);

  Options options_;
  std::unique_ptr<store::ClientStore> store_;
  AccountLock lock_;
  // Copies of the account settings that never change once the device is registered, so that
  // threads never read store_->settings() while prekey maintenance replaces it (only code
  // holding crypto_mu_ reads or writes the settings).
  const std::string username_;
  const std::uint32_t device_id_;
  const sotto::Server server_;
  // The server's TLS session, so that the reconnections after a network change or a server
  // restart (a full handshake then) do not pay for a full handshake each time.
  const std::shared_ptr<net::TlsSessionSlot> tls_session_ = std::make_shared<net::TlsSessionSlot>();
  const protocol::PublicKey identity_public_;
  const crypto::Ed25519KeyPair auth_key_;
  const std::string trust_policy_;
  SystemClock clock_;
  crypto::Rng& rng_;

  std::mutex conn_mu_;  // guards the connection fields below
  std::condition_variable conn_cv_;
  ConnectionPtr conn_;
  std::uint64_t conn_generation_ = 0;  // of conn_
  std::uint64_t generation_ = 0;       // last one handed out
  bool connecting_ = false;
  bool listener_running_ = false;
  Backoff backoff_{kBackoffInitial, kBackoffCap};

  std::mutex inbound_mu_;  // guards inbound_
  std::condition_variable inbound_cv_;
  std::deque<Inbound> inbound_;

  std::mutex crypto_mu_;  // serialises session and key operations

  std::mutex listener_mu_;  // guards listener_ and handler_
  std::thread listener_;
  EventHandler handler_;
  std::atomic<bool> stopping_{false};
};

}  // namespace sotto::client
