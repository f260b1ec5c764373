// The real transport (transport.h): a TLS 1.3 WebSocket from net::WsClient, the server's key
// checked against the pins before anything is sent.
#include <algorithm>
#include <mutex>

#include "client/transport.h"
#include "client/util.h"
#include "net/ws_client.h"

namespace sotto::client {

namespace {

constexpr std::size_t kMaxFrameBytes = 4 << 20;
constexpr std::chrono::seconds kConnectTimeout{10};

class TlsTransport final : public Transport {
 public:
  explicit TlsTransport(std::unique_ptr<net::WsClient> ws) : ws_(std::move(ws)) {}
  ~TlsTransport() override { ws_.reset(); }  // joins the I/O thread

  bool send(Bytes frame) override { return ws_->send(std::move(frame)); }
  void close() override { ws_->close(); }
  bool is_open() const override { return ws_->is_open(); }
  std::optional<ChannelBinding> channel_binding() const override { return ws_->channel_binding(); }
  std::string server_pin() const override { return ws_->observed_fingerprint(); }
  Bytes server_public_key() const override { return ws_->peer_public_key(); }

 private:
  std::unique_ptr<net::WsClient> ws_;
};

class TlsConnector final : public Connector {
 public:
  Result<std::unique_ptr<Transport>> open(const Endpoint& endpoint,
                                          TransportHandlers handlers) override {
    std::shared_ptr<net::TlsSessionSlot> slot = session_for(endpoint);
    // The handlers are shared by the attempts below; only the one that succeeds is handed out.
    auto shared = std::make_shared<TransportHandlers>(std::move(handlers));
    std::string pin = endpoint.pins.empty() ? std::string() : endpoint.pins.front();
    for (int attempt = 0; attempt < 2; ++attempt) {
      net::ClientOptions options;
      options.host = endpoint.host;
      options.port = endpoint.port;
      options.fingerprint = pin;
      options.session = slot;
      options.max_frame_bytes = kMaxFrameBytes;
      options.connect_timeout = kConnectTimeout;
      if (shared->authorize) options.authorization = shared->authorize;
      auto ws = std::make_unique<net::WsClient>(
          options, [shared](ByteView frame) { shared->on_frame(frame); },
          [shared](const std::string& reason) { shared->on_close(reason); });
      auto connected = ws->connect();
      if (connected) return std::unique_ptr<Transport>(new TlsTransport(std::move(ws)));
      if (connected.error() != net::ClientError::fingerprint_mismatch) {
        return tl::unexpected(network_error(endpoint, connected.error()));
      }
      // The key seen is not the first pin: it may be another one (the operator's announced next
      // key, or the key behind a certificate an older client pinned). Connect again pinned to it.
      const std::string seen = ws->observed_fingerprint();
      const bool other_pin =
          std::find(endpoint.pins.begin() + 1, endpoint.pins.end(), seen) != endpoint.pins.end();
      if (attempt == 0 && other_pin) {
        pin = seen;
        continue;
      }
      return tl::unexpected(
          make_error(ErrorCode::fingerprint_mismatch,
                     "the server's key has fingerprint " + seen + ", not the pinned " + pin +
                         "; refusing to connect: this can be an interception attempt"));
    }
    return tl::unexpected(make_error(ErrorCode::network, "cannot connect"));
  }

 private:
  static Error network_error(const Endpoint& endpoint, net::ClientError e) {
    std::string why;
    switch (e) {
      case net::ClientError::resolve_failed:
        why = "the host name does not resolve";
        break;
      case net::ClientError::connect_failed:
        why = "connection refused or unreachable";
        break;
      case net::ClientError::tls_failed:
        why = "the TLS handshake failed";
        break;
      case net::ClientError::timeout:
        why = "timed out";
        break;
      default:
        why = std::string(net::to_string(e));
        break;
    }
    return make_error(ErrorCode::network, "cannot connect to " + endpoint.host + ":" +
                                              std::to_string(endpoint.port) + ": " + why);
  }

  // One TLS session per server address: a session of another server would only be refused.
  std::shared_ptr<net::TlsSessionSlot> session_for(const Endpoint& endpoint) {
    std::lock_guard lock(mu_);
    const std::string key = endpoint.host + ":" + std::to_string(endpoint.port);
    if (key != slot_key_ || !slot_) {
      slot_ = std::make_shared<net::TlsSessionSlot>();
      slot_key_ = key;
    }
    return slot_;
  }

  std::mutex mu_;
  std::string slot_key_;
  std::shared_ptr<net::TlsSessionSlot> slot_;
};

}  // namespace

std::unique_ptr<Connector> make_tls_connector() {
  return std::make_unique<TlsConnector>();
}

}  // namespace sotto::client
