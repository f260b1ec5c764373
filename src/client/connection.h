// One connection to the server, with request/response correlation on top of net::WsClient:
// call() sends a Request with a fresh id and blocks until the Response with that id arrives, the
// connection closes, or the timeout passes. Pushes are handed to the push handler on the
// transport's I/O thread, in order; the handler must not block for long (the engine queues
// them). The close handler runs once, when the connection ends for any reason.
// Not reconnecting by itself (the engine does). Thread-safe: call() from any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tl/expected.hpp>

#include "net/ws_client.h"
#include "service.pb.h"
#include "sotto/client.h"

namespace sotto::net {
class WsClient;
}  // namespace sotto::net

namespace sotto::client {

namespace svc = sotto::wire::service;

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string fingerprint;  // empty: trust on first use
  // Keeps the server's TLS session so that a reconnection resumes it (net/ws_client.h); null:
  // every connection is a full handshake.
  std::shared_ptr<net::TlsSessionSlot> session;
};

class Connection {
 public:
  using PushHandler = std::function<void(svc::Push&&)>;
  using CloseHandler = std::function<void(const std::string& reason)>;
  // Makes the upgrade request's login proof from the connection's TLS channel binding
  // (net::ClientOptions::authorization).
  using Authorize = std::function<std::string(const std::array<std::uint8_t, 32>& binding)>;

  // Connects (TLS + WebSocket, fingerprint checked). Fails with fingerprint_mismatch when the
  // certificate is not the pinned one, network otherwise. With `authorize`, the upgrade request
  // carries a login proof; await_login() then tells how the server took it.
  [[nodiscard]] static Result<std::unique_ptr<Connection>> open(const Endpoint& endpoint,
                                                                PushHandler on_push,
                                                                CloseHandler on_close,
                                                                Authorize authorize = nullptr);
  // The server's answer to the login proof in the upgrade request (the LoginResult push, which
  // comes before any other): nothing when logged in, its refusal otherwise, or network/timeout.
  [[nodiscard]] Result<void> await_login(std::chrono::milliseconds timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The Response for `request` (whatever its status), or network/timeout.
  [[nodiscard]] Result<svc::Response> call(svc::Request request, std::chrono::milliseconds timeout);
  // The certificate fingerprint seen on this connection (hex).
  [[nodiscard]] const std::string& fingerprint() const { return fingerprint_; }
  // The TLS channel binding a device signs to log in (net::WsClient::channel_binding).
  [[nodiscard]] std::optional<std::array<std::uint8_t, 32>> channel_binding() const;
  [[nodiscard]] bool is_open() const;
  void close();

  struct State;

 private:
  Connection() = default;
  std::shared_ptr<State> state_;
  std::unique_ptr<net::WsClient> ws_;
  std::string fingerprint_;
};

// The error for a Response whose status is not OK (the server's text, never user data).
[[nodiscard]] Error status_error(const svc::Response& response);

}  // namespace sotto::client
