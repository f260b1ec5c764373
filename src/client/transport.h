// The seam under the client engine: how it reaches the server. A Transport is one open
// connection, a pipe of binary frames (service.proto Frames); a Connector opens them. The engine
// knows nothing of TLS or WebSocket: make_tls_connector() gives the real one (net::WsClient over
// TLS 1.3), and the tests give one that hands each frame to the real server's request handlers in
// the same process (tests/util/in_process_server.h), so every flow of the engine can be tested
// without sockets.
//
// Ownership: the engine owns its Connector and each Transport it opened. Thread-safety: a
// Connector's open() may be called from any thread; a Transport's send() and close() too. The
// handlers run on the transport's own thread, one at a time and in order, never after close()
// has returned; they must not block for long and must not destroy their own transport.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/bytes.h"
#include "sotto/client.h"

namespace sotto::client {

using ChannelBinding = std::array<std::uint8_t, 32>;

class Transport {
 public:
  virtual ~Transport() = default;
  // Queues one frame for the server; false once the connection has closed.
  virtual bool send(Bytes frame) = 0;
  // Closes the connection; the close handler runs (once) if it has not already.
  virtual void close() = 0;
  [[nodiscard]] virtual bool is_open() const = 0;
  // The connection's channel binding (RFC 9266 tls-exporter), which a device signs to log in in
  // the upgrade request; none: the device logs in with a challenge.
  [[nodiscard]] virtual std::optional<ChannelBinding> channel_binding() const = 0;
  // The server's key on this connection: its pin (SHA-256 of the DER SubjectPublicKeyInfo, 64
  // hex digits) and the DER SubjectPublicKeyInfo itself (to check a key announcement).
  [[nodiscard]] virtual std::string server_pin() const = 0;
  [[nodiscard]] virtual Bytes server_public_key() const = 0;
};

struct TransportHandlers {
  std::function<void(ByteView frame)> on_frame;
  std::function<void(const std::string& reason)> on_close;
  // Optional: the login proof to put in the upgrade request, from the connection's channel
  // binding (the server answers with a LoginResult push before anything else).
  std::function<std::string(const ChannelBinding&)> authorize;
};

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  // The server keys accepted (pins as Transport::server_pin, or a certificate fingerprint that an
  // older client pinned). Empty: any key (trust on first use; the caller pins what it saw).
  std::vector<std::string> pins;
};

class Connector {
 public:
  virtual ~Connector() = default;
  // Opens a connection. Fails with fingerprint_mismatch (the message names the key seen and the
  // one expected) when the server's key is none of the pins, network otherwise.
  [[nodiscard]] virtual Result<std::unique_ptr<Transport>> open(const Endpoint& endpoint,
                                                                TransportHandlers handlers) = 0;
};

// TLS 1.3 WebSocket connections (net::WsClient). The connector keeps the server's TLS session, so
// that reconnecting resumes it instead of paying for a full handshake; use one per account.
[[nodiscard]] std::unique_ptr<Connector> make_tls_connector();

}  // namespace sotto::client
