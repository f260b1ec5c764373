// One simulated client of the load tool: an account with one device (keys made as src/client
// makes them) and, while connected, one TLS WebSocket on the tool's shared I/O pool. Requests
// carry ids of the peer's choosing and their responses are routed back to a callback; pushes go
// to the peer's push handler. Message contents are opaque bytes: the tool measures the server,
// which never reads ciphertext, so it does no Signal encryption.
//
// Threading: callbacks run on the peer's connection strand (one at a time). call() and send are
// thread-safe. A Peer must be destroyed off the I/O pool's threads (WsClient waits for the
// connection to end there).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "crypto/ed25519.h"
#include "crypto/rng.h"
#include "net/ws_client.h"
#include "protocol/keys.h"
#include "service.pb.h"

namespace sotto::load {

namespace svc = sotto::wire::service;

// An account and its single device, as RegisterRequest describes them.
struct Account {
  std::string username;
  protocol::IdentityKeyPair identity;
  crypto::Ed25519KeyPair auth_key;
  protocol::SignedPreKeyRecord signed_pre_key;
  std::vector<protocol::PreKeyRecord> pre_keys;
  std::uint32_t registration_id = 0;
  std::uint32_t device_id = 0;  // given by the server on registration
  // The TLS session of this account's last connection (logins phase, when resuming).
  std::shared_ptr<net::TlsSessionSlot> tls_session = std::make_shared<net::TlsSessionSlot>();
};

// Fresh keys for `username`: identity, device auth key, signed prekey and `pre_keys` one-time
// prekeys (what src/client/engine.cpp generates for a new device).
Account make_account(std::string username, std::size_t pre_keys, crypto::Rng& rng);

// RegisterRequest for `account`, with the identity key's signature binding the device auth key
// to the account ("sotto-device-v1" || username || auth_key), as the server checks it.
svc::Request register_request(const Account& account, crypto::Rng& rng);

class Peer {
 public:
  using ResponseFn = std::function<void(const svc::Response&)>;
  using PushFn = std::function<void(const svc::Push&)>;
  using DoneFn = std::function<void(bool ok, const std::string& error)>;

  Peer(std::shared_ptr<net::IoPool> pool, net::ClientOptions options);
  ~Peer();
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  // REQUIRES: called before connect().
  void on_push(PushFn fn) { on_push_ = std::move(fn); }

  // `options` whose upgrade request carries `account`'s login proof (over the connection's TLS
  // channel binding), as the client library logs in; login() then waits for the server's answer.
  // REQUIRES: `account` outlives the peer.
  static net::ClientOptions logging_in(net::ClientOptions options, const Account& account);

  // Connects (TLS with the pinned fingerprint, then the WebSocket handshake). Once only.
  void connect(DoneFn done);
  // Logs in with the account's device key: waits for the answer to the proof in the upgrade
  // request (logging_in), or else sends the proof over the connection's TLS channel binding in
  // a request (a challenge first only when there is none).
  void login(const Account& account, DoneFn done);
  // Sends `request` with a fresh id; `fn` gets the response (or nothing if the connection ends).
  bool call(svc::Request&& request, ResponseFn fn);
  // Closes the connection. From the peer's own callbacks it only starts the close; elsewhere it
  // waits for the close handshake (bounded by the connect timeout).
  void close();
  bool is_open() const { return client_.is_open(); }
  bool resumed() const { return client_.resumed(); }
  bool closed_by_peer() const { return closed_.load(); }
  const std::string& close_reason() const { return close_reason_; }

 private:
  void handle_frame(ByteView frame);
  void authenticate(const Account& account, std::string_view context, ByteView nonce,
                    bool channel_binding, DoneFn done);
  static void finish_login(const std::optional<svc::Status>& result, const DoneFn& done);

  PushFn on_push_;
  std::mutex mu_;
  std::uint64_t next_id_ = 1;                              // guarded by mu_
  std::unordered_map<std::uint64_t, ResponseFn> pending_;  // guarded by mu_
  const bool login_in_upgrade_;
  DoneFn login_done_;                        // guarded by mu_: login() waiting for the result
  std::optional<svc::Status> login_result_;  // guarded by mu_
  std::atomic<bool> closed_{false};
  std::string close_reason_;  // written before closed_ is set
  // Last: destroyed first, so that no callback runs once the members above are gone.
  net::WsClient client_;
};

// Serializes a request into a frame.
Bytes encode_request(svc::Request& request);

}  // namespace sotto::load
