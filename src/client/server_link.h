// The engine's connection to the server: connects and logs in on demand (with backoff between
// attempts), keeps the one open connection, and queues what the server pushes for whoever
// consumes it (receive() on the caller's thread, or the listener thread). It also keeps the
// server's pin up to date: a connection to the announced next key, or to a key behind a
// certificate pinned by an older version, re-pins it; a ServerKeyAnnouncement is checked with the
// key of the connection it came on and remembered.
//
// Thread-safe. Lock order: mu_ before the Account's crypto_mu (account.h).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "client/account.h"
#include "client/connection.h"

namespace sotto::client {

inline constexpr std::chrono::milliseconds kBackoffInitial{250};
inline constexpr std::chrono::milliseconds kBackoffCap{30000};
// Names under which ServerLink keeps state in the store (ClientStore::save_value).
inline constexpr std::string_view kNextPinValue = "server.next_pin";
inline constexpr std::string_view kInstanceSaltValue = "instance.salt";

using ConnectionPtr = std::shared_ptr<Connection>;
using Deadline = std::optional<std::chrono::steady_clock::time_point>;  // none: no limit

// One item the server sent: a push, or the end of a connection.
struct Inbound {
  std::uint64_t generation = 0;  // of the connection it came on
  bool closed = false;           // else a push
  svc::Push push;
  std::string reason;
};

class ServerLink {
 public:
  struct Connected {
    ConnectionPtr connection;
    std::uint64_t generation = 0;
  };
  // Hears about a re-pinned server key (to journal it).
  using PinChanged = std::function<void(const std::string& detail)>;

  ServerLink(Account& account, PinChanged on_pin_changed);
  ~ServerLink();

  // The authenticated connection, connecting (with backoff between attempts) until `deadline`.
  // Fails at once on a pin mismatch, a refused device or a device in use elsewhere, and when
  // the listener is stopping. `on_retry` (optional) hears about each failed attempt and the
  // delay before the next.
  using RetryHandler = std::function<void(const Error&, std::chrono::milliseconds)>;
  [[nodiscard]] Result<Connected> ensure_connected(Deadline deadline,
                                                   const RetryHandler& on_retry = nullptr);
  // The open connection, or nullptr (never connects).
  [[nodiscard]] ConnectionPtr current();
  [[nodiscard]] std::uint64_t generation();
  // Whether the server has pushed the open connection's stored queue (its QueueDrained was
  // dispatched), so what it pushes from now on is live.
  [[nodiscard]] bool drained();
  void mark_drained(std::uint64_t generation);
  // A call whose answer must be OK (its status otherwise becomes the error).
  [[nodiscard]] Result<svc::Response> call_ok(const ConnectionPtr& c, svc::Request request);

  // The next pushed item, waiting until `deadline`; nullopt on timeout or when stopping.
  [[nodiscard]] std::optional<Inbound> next_inbound(Deadline deadline);
  // Queues an empty item, so that a consumer waiting in next_inbound() wakes up.
  void wake();
  // Removes every queued KeysLow push; true when there was one.
  [[nodiscard]] bool take_keys_low();

  // The listener's life: while it runs, stop() makes every wait above return.
  void listener_started();
  void stop();
  void listener_stopped();
  [[nodiscard]] bool stopping() const { return stopping_.load(); }
  void close();

  // The 16 bytes that identify this copy of the device's data to the server
  // (AuthenticateRequest.instance).
  [[nodiscard]] static Result<Bytes> instance_of(Account& account);

 private:
  [[nodiscard]] Result<Connected> connect_once();
  void on_push(std::uint64_t generation, svc::Push&& push);
  void on_announcement(const Connection& c, const svc::ServerKeyAnnouncement& announcement);
  void after_login(const Connection& c);

  Account& account_;
  PinChanged on_pin_changed_;
  Bytes instance_;

  std::mutex mu_;  // guards the connection fields below
  std::condition_variable cv_;
  ConnectionPtr conn_;
  std::uint64_t conn_generation_ = 0;  // of conn_
  std::uint64_t generation_ = 0;       // last one handed out
  std::uint64_t drained_generation_ = 0;
  bool connecting_ = false;
  bool listener_running_ = false;
  Backoff backoff_{kBackoffInitial, kBackoffCap};
  std::atomic<bool> stopping_{false};

  std::mutex inbound_mu_;  // guards inbound_
  std::condition_variable inbound_cv_;
  std::deque<Inbound> inbound_;
};

}  // namespace sotto::client
