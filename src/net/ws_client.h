// The client side of the transport: one TLS 1.3 WebSocket to the server, with the server's key
// pinned by the SHA-256 of its DER SubjectPublicKeyInfo (hex), so that a renewed certificate for
// the same key still matches; a pin made before (the SHA-256 of the whole certificate) matches
// too. Runs its own I/O thread. Frames received are
// handed to on_frame from that thread; send() is thread-safe. Not reconnecting by itself: the
// client engine (src/client) owns reconnection with backoff.
//
// Callbacks (on_frame, on_close, async_connect's handler) run one at a time while the
// connection holds a lock that destroying the client, or connecting it again, takes: neither
// returns while a callback of that client runs on another thread, and none runs afterwards. So a
// callback must not wait for a thread that may be destroying its own client. It may destroy its
// own client; destroying another one waits for that client's running callback, if any (two
// callbacks destroying each other's clients would wait forever).
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tl/expected.hpp>

#include "crypto/bytes.h"

namespace sotto::net {

enum class ClientError {
  resolve_failed,
  connect_failed,
  tls_failed,
  fingerprint_mismatch,
  closed,
  timeout
};

struct ClientOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7443;
  // The pin: the server key's fingerprint (SHA-256 of its SubjectPublicKeyInfo), or the legacy
  // certificate fingerprint (SHA-256 of the certificate), hex, ':' separators and upper case
  // allowed. Empty means trust on first use: the connection succeeds and observed_fingerprint()
  // tells the caller what to pin.
  std::string fingerprint;
  std::size_t max_frame_bytes = 1 << 20;
  std::chrono::seconds connect_timeout{10};
  std::string source_address;  // optional local IP to bind (load tool: several 127.0.0.x)
  // Where the server's TLS session is kept for resumption (see TlsSessionSlot); none: every
  // connection is a full handshake.
  std::shared_ptr<class TlsSessionSlot> session;
  // Logs in within the upgrade request: called once the TLS handshake is done (and the pin
  // checked) with the connection's channel binding; what it returns goes in the Authorization
  // header. The server answers with a LoginResult push before anything else. Unset: no header.
  std::function<std::string(const std::array<std::uint8_t, 32>& channel_binding)> authorization;
};

// The TLS session a server issued on an earlier connection, kept so that the next connection
// resumes it: TLS 1.3 resumption with a fresh X25519 exchange (psk_dhe_ke, so forward secrecy is
// kept), in which the server neither sends nor signs its certificate again and the client does
// not parse or verify it. The pin still holds: a session is stored only from a connection whose
// certificate matched the fingerprint, and a resumed connection is checked against the
// certificate that session carries. A server that restarted no longer knows the session; the
// handshake is then a full one. Share one slot per server and account (a session links the
// connections that use it); thread-safe.
class TlsSessionSlot {
 public:
  TlsSessionSlot();
  ~TlsSessionSlot();
  TlsSessionSlot(const TlsSessionSlot&) = delete;
  TlsSessionSlot& operator=(const TlsSessionSlot&) = delete;
  bool holds_session() const;
  void clear();

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Shared I/O threads for many clients in one process (the load tool holds thousands of
// connections on a couple of threads). A client created without a pool gets its own thread.
class IoPool {
 public:
  explicit IoPool(int threads);
  ~IoPool();
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

class WsClient {
 public:
  using FrameHandler = std::function<void(ByteView frame)>;
  using CloseHandler = std::function<void(const std::string& reason)>;
  using ConnectHandler = std::function<void(tl::expected<void, ClientError>)>;

  WsClient(ClientOptions options, FrameHandler on_frame, CloseHandler on_close,
           std::shared_ptr<IoPool> pool = nullptr);
  ~WsClient();
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  // Blocks until connected (TLS + WebSocket handshakes done and the fingerprint checked).
  [[nodiscard]] tl::expected<void, ClientError> connect();
  // The same without blocking: `done` runs once, on the I/O thread, when the attempt succeeded
  // or failed (observed_fingerprint() is set before it runs). Frames may arrive only after it.
  // Lets one thread open thousands of connections (the load tool). REQUIRES: no earlier
  // connection on this client (a replaced connection would have to be waited for).
  void async_connect(ConnectHandler done);
  // The server key's fingerprint seen on the connection: SHA-256 of its DER SubjectPublicKeyInfo
  // (hex; set once connect has run, also when the pin did not match).
  const std::string& observed_fingerprint() const;
  // The SHA-256 of the server's certificate (hex), which older clients pinned: lets a client
  // find its legacy pin and replace it by observed_fingerprint().
  const std::string& observed_certificate_fingerprint() const;
  // The server key's DER SubjectPublicKeyInfo (verifies the server's signed announcement of its
  // next key, net/server_key.h).
  const Bytes& peer_public_key() const;
  // Whether the connection resumed a session from options.session (after connect succeeded).
  bool resumed() const;
  // The connection's TLS channel binding (RFC 9266 tls-exporter, 32 bytes; after connect
  // succeeded): what a device signs to log in without asking for a challenge.
  std::optional<std::array<std::uint8_t, 32>> channel_binding() const;
  bool send(Bytes frame);
  void close();
  bool is_open() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string_view to_string(ClientError e);

}  // namespace sotto::net
