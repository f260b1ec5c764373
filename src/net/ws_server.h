// The server side of the transport: TLS 1.3 WebSocket (Boost.Beast over Asio, OpenSSL), binary
// frames only, each one a serialized service Frame. The server owns an io_context run by a few
// threads; each connection's callbacks run on that connection's strand, one at a time.
// Connection::send is thread-safe and may be called from any thread (e.g. the store's commit
// thread). Back-pressure by bytes (docs/abuse.md): a handler pushes while Connection::writable()
// says so (the connection's unsent bytes under outbound_low_water and every connection's together
// under max_buffered_bytes) and is told by on_writable() when it may go on; requests are not read
// while a connection's unsent bytes are above twice the low-water mark or the server is over its
// budget. Slow readers: a connection with unsent bytes and no write completed for
// slow_reader_timeout is closed, and so is one whose unsent bytes would exceed max_outbound_bytes
// (a backstop: paced pushes and paused reads stay well under it). "Unsent bytes" count each
// queued frame's size plus a small fixed overhead (OutboundQueue::cost), so a flood of tiny
// answers counts for the memory it holds. Idle connections are pinged and closed when they stay
// silent past idle_timeout. Admission: per-address caps, a ceiling on connections not logged in
// yet, and for those a login deadline, a small frame limit and a short idle timeout
// (ServerOptions, Connection::promote).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "crypto/bytes.h"
#include "net/tls.h"

namespace sotto::net {

struct ServerOptions {
  std::string address = "127.0.0.1";
  std::uint16_t port = 7443;  // 0 picks a free port (tests)
  std::size_t max_frame_bytes = 1 << 20;
  std::size_t max_outbound_bytes = 8 << 20;
  // Pushes pause at this many unsent bytes (Connection::writable), reading requests above
  // twice as many. Keep it well under max_outbound_bytes (the server's config: a quarter).
  std::size_t outbound_low_water = 1 << 20;
  // The unsent bytes of every connection together above which pushes and reads pause everywhere.
  std::size_t max_buffered_bytes = std::size_t{256} << 20;
  // A connection whose write has not completed for this long is closed ("slow reader"); 0: never.
  std::chrono::seconds slow_reader_timeout{60};
  std::chrono::seconds idle_timeout{120};
  std::chrono::seconds ping_interval{30};
  std::chrono::seconds handshake_timeout{10};
  std::size_t max_connections = 60000;
  int threads = 2;

  // Admission. A connection is "pre-login" from its accept until the handler promotes it
  // (Connection::promote, once it logged in). 0 turns each of these off.
  // Connections from one address (IPv4 address or IPv6 /64, net/address_key.h), of any kind.
  std::size_t max_connections_per_address = 0;
  // Pre-login connections, server-wide: at this ceiling a new connection displaces the oldest
  // pre-login one, so that they never hold every slot and a flood of them cannot keep a real
  // client (who logs in within its upgrade request) out.
  std::size_t max_prelogin_connections = 0;
  // Pre-login connections from one address; beyond it new ones from there are refused.
  std::size_t max_prelogin_per_address = 0;
  // Until promoted: the message limit (0: max_frame_bytes) and the idle timeout (0: idle_timeout),
  // and the time from the WebSocket open within which the handler must promote the connection or
  // extend its deadline (Connection::extend_login_deadline), else it is closed (0: no deadline).
  std::size_t prelogin_max_frame_bytes = 0;
  std::chrono::seconds prelogin_idle_timeout{0};
  std::chrono::seconds login_deadline{0};
  // Hand each connection's TLS records from OpenSSL to the server's own record layer after the
  // handshake (net/handover/record_handover.h: about 13 KB less per open connection). Used only
  // when the OpenSSL version is one it was tested with and the start-up self-check passes;
  // otherwise, or when false, OpenSSL keeps the records for the connection's life.
  bool tls_record_handover = true;
};

// Whether a WsServer hands its connections' records over, and why (for the operator's log).
struct RecordHandoverState {
  bool in_use = false;
  std::string reason;
};

class Connection {
 public:
  virtual ~Connection() = default;
  // Queues one binary frame. Returns false when the connection is closed or over its
  // outbound limit (it is then being closed).
  virtual bool send(Bytes frame) = 0;
  // Closes with a WebSocket close frame carrying `reason` (no user data in it).
  virtual void close(const std::string& reason) = 0;
  virtual std::uint64_t id() const = 0;
  virtual const std::string& remote_address() const = 0;  // IP only, for rate limits
  virtual std::size_t outbound_bytes() const = 0;
  // Whether the handler should push more now: the connection's unsent bytes are under the
  // low-water mark and the server's buffered bytes under its budget. When false, the handler's
  // on_writable(c) follows once both hold again (perhaps also when nothing waits any more: a
  // spurious call must be harmless). Any thread.
  virtual bool writable() = 0;
  // The connection's TLS channel binding (RFC 9266 tls-exporter, 32 bytes), handed out once: the
  // server's copy is wiped by this call, whatever the caller then makes of it. False when there
  // is none (already taken). Call it from this connection's own callbacks only.
  virtual bool take_channel_binding(std::array<std::uint8_t, 32>& out) = 0;
  // The peer logged in: from now on the connection has the full frame limit and idle timeout, no
  // login deadline, and no longer counts as pre-login (ServerOptions). Thread-safe; idempotent.
  virtual void promote() = 0;
  // The peer made progress before logging in (registered, opened a provisioning address): it now
  // has `time` from now to log in, instead of what was left. Nothing when the connection is
  // promoted or has no deadline. Thread-safe.
  virtual void extend_login_deadline(std::chrono::seconds time) = 0;
};

using ConnectionPtr = std::shared_ptr<Connection>;

class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // The WebSocket is open. `authorization`: the upgrade request's Authorization header (a login
  // proof), empty when it had none.
  virtual void on_open(const ConnectionPtr& c, std::string_view authorization) = 0;
  // One complete binary message, at most max_frame_bytes (larger ones close the connection).
  virtual void on_frame(const ConnectionPtr& c, ByteView frame) = 0;
  virtual void on_close(const ConnectionPtr& c) = 0;
  // The connection is writable() again after it said it was not. On the connection's strand.
  virtual void on_writable(const ConnectionPtr& c) { (void)c; }
};

class WsServer {
 public:
  WsServer(const TlsIdentity& identity, ServerOptions options, ConnectionHandler& handler);
  ~WsServer();
  WsServer(const WsServer&) = delete;
  WsServer& operator=(const WsServer&) = delete;

  // Binds, listens and starts the I/O threads. Throws std::runtime_error if it cannot bind.
  void start();
  // Graceful: stops accepting, closes every connection with "server shutting down", waits for
  // writes queued before the call to flush (at most `grace`), then joins the threads.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  // New connections present this identity from now on; open ones keep theirs (and sessions
  // resumed from the old identity's tickets are not resumed any more: they get a full handshake
  // with the new certificate). Thread-safe. Throws std::runtime_error when the identity is
  // unusable, and then nothing changed.
  void set_identity(const TlsIdentity& identity);
  std::uint16_t port() const;
  // Decided when the server is made (the self-check runs then) and fixed for its life.
  const RecordHandoverState& record_handover() const;
  std::size_t connection_count() const;
  // The unsent bytes of every connection together (the /metrics gauge).
  std::size_t buffered_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sotto::net
