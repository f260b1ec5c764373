// The real server in the test's process: server::Server's request handlers over a real SQLite
// store in a temporary directory, reached by the client engine through an in-process Connector
// (src/client/transport.h) instead of TLS and WebSocket. Frames cross between the two as bytes,
// each side's callbacks on threads of their own as with real sockets: one thread runs every
// server callback in order (as one I/O thread would), and each connection delivers to its client
// on a thread of its own. So the engine's flows (retries, repairs, exactly-once, identity
// changes, session repair) are tested against the handlers that run in production.
//
// Tests can also make the network fail (refuse new connections, drop the open ones) and change
// the key the server presents (its pin). Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/environment.h"
#include "client/transport.h"
#include "crypto/rng.h"
#include "net/tls.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/server.h"
#include "store/server/sqlite_store.h"

namespace sotto::testing {

// Runs posted tasks one at a time, in order, on its own thread.
class SerialExecutor {
 public:
  SerialExecutor();
  ~SerialExecutor();  // runs what was posted, then joins
  SerialExecutor(const SerialExecutor&) = delete;
  SerialExecutor& operator=(const SerialExecutor&) = delete;
  void post(std::function<void()> task);
  // Waits until every task posted before the call has run.
  void drain();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::uint64_t posted_ = 0;
  std::uint64_t done_ = 0;
  std::thread thread_;
};

class InProcessServer {
 public:
  // A server whose clock is `now_ms` (shared with the clients' clocks, so expiry agrees).
  InProcessServer(const std::filesystem::path& dir, std::shared_ptr<const client::WallClock> clock,
                  server::ServerConfig config = {});
  ~InProcessServer();
  InProcessServer(const InProcessServer&) = delete;
  InProcessServer& operator=(const InProcessServer&) = delete;

  // Connections to this server; one per client environment is fine.
  [[nodiscard]] std::shared_ptr<client::Connector> connector();
  // The key pin the server presents (and the public key behind it, empty unless a real TLS
  // identity was set).
  [[nodiscard]] std::string pin() const;
  void set_pin(std::string pin);
  // Presents a real TLS identity's key (to test key announcements, which the key signs).
  void set_identity(const net::TlsIdentity& identity);
  // While unreachable, opening a connection fails as a refused TCP connection would.
  void set_reachable(bool reachable);
  // Closes every open connection as a network failure would.
  void drop_connections();
  // Waits until the server has handled everything sent to it so far, and its store has written.
  void settle();
  // Keeps a key transparency log of every account change and answers lookups with its proofs
  // (server/kt.h), as the server binary does on SQLite. Before the first connection.
  void enable_key_transparency();

  [[nodiscard]] server::Server& server() { return *server_; }
  [[nodiscard]] store::SqliteServerStore& store() { return *store_; }
  [[nodiscard]] server::Metrics& metrics() { return metrics_; }

 private:
  friend class InProcessConnector;

  std::shared_ptr<const client::WallClock> clock_;
  std::filesystem::path dir_;
  crypto::DeterministicRng seed_rng_{4242};
  client::LockedRng rng_{seed_rng_};
  server::Metrics metrics_;
  std::unique_ptr<store::SqliteServerStore> store_;
  std::unique_ptr<server::KeyTransparency> kt_;  // outlives server_, outlived by store_
  std::unique_ptr<server::Server> server_;
  SerialExecutor io_;  // every server callback

  mutable std::mutex mu_;
  std::string pin_;
  Bytes public_key_;
  bool reachable_ = true;
  std::uint64_t next_id_ = 1;
  std::vector<std::weak_ptr<net::Connection>> connections_;
  std::shared_ptr<client::Connector> connector_;
};

}  // namespace sotto::testing
