// One connection to the server, with request/response correlation on top of a Transport
// (transport.h): call() sends a Request with a fresh id and blocks until the Response with that
// id arrives, the connection closes, or the timeout passes. Pushes are handed to the push handler
// on the transport's thread, in order; the handler must not block for long (the engine queues
// them). The close handler runs once, when the connection ends for any reason.
// Not reconnecting by itself (ServerLink does). Thread-safe: call() from any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tl/expected.hpp>

#include "client/transport.h"
#include "service.pb.h"
#include "sotto/client.h"

namespace sotto::client {

namespace svc = sotto::wire::service;

class Connection {
 public:
  using PushHandler = std::function<void(svc::Push&&)>;
  using CloseHandler = std::function<void(const std::string& reason)>;
  // Makes the upgrade request's login proof from the connection's channel binding.
  using Authorize = std::function<std::string(const ChannelBinding& binding)>;

  // Connects through `connector` (the server's key checked against endpoint.pins). With
  // `authorize`, the upgrade request carries a login proof; await_login() then tells how the
  // server took it.
  [[nodiscard]] static Result<std::unique_ptr<Connection>> open(Connector& connector,
                                                                const Endpoint& endpoint,
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
  // call() in two halves, so that several requests can be in flight on one connection
  // (attachments pipeline their chunks): start() sends and returns the request's id, wait() takes
  // its Response. Every started id must be waited for (or the connection closed).
  [[nodiscard]] Result<std::uint64_t> start(svc::Request request);
  [[nodiscard]] Result<svc::Response> wait(std::uint64_t id, std::chrono::milliseconds timeout);
  // The server's key pin seen on this connection (Transport::server_pin) and its public key.
  [[nodiscard]] const std::string& server_pin() const { return server_pin_; }
  [[nodiscard]] Bytes server_public_key() const;
  // The channel binding a device signs to log in (Transport::channel_binding).
  [[nodiscard]] std::optional<ChannelBinding> channel_binding() const;
  [[nodiscard]] bool is_open() const;
  void close();

  struct State;

 private:
  Connection() = default;
  std::shared_ptr<State> state_;
  std::unique_ptr<Transport> transport_;
  std::string server_pin_;
};

// The error for a Response whose status is not OK (the server's text, never user data).
[[nodiscard]] Error status_error(const svc::Response& response);

}  // namespace sotto::client
