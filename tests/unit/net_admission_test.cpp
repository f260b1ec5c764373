// The WebSocket server's admission of connections that have not logged in (ServerOptions, and
// Connection::promote / extend_login_deadline, which the handler calls): the login deadline, the
// pre-login frame limit, the pre-login ceiling that displaces the oldest, the per-address caps.
// Real TLS over loopback; the handler here promotes a connection when it sends "login" and
// extends its deadline when it sends "progress".
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/tls.h"
#include "net/ws_client.h"
#include "net/ws_server.h"
#include "net_test_support.h"

namespace sotto::net {
namespace {

using namespace std::chrono_literals;

class PromotingHandler : public ConnectionHandler {
 public:
  void on_open(const ConnectionPtr&, std::string_view) override {}
  void on_frame(const ConnectionPtr& c, ByteView frame) override {
    const std::string text(frame.begin(), frame.end());
    if (text == "login") c->promote();
    if (text == "progress") c->extend_login_deadline(3s);
    c->send(Bytes(frame.begin(), frame.end()));  // echoed
  }
  void on_close(const ConnectionPtr&) override {}
};

// A client that records echoes and its close reason.
class Peer {
 public:
  Peer(const ClientOptions& base, const std::string& source = {}) {
    ClientOptions o = base;
    o.source_address = source;
    client_ = std::make_unique<WsClient>(
        o,
        [this](ByteView f) {
          std::lock_guard lock(mu_);
          echoes_.emplace_back(f.begin(), f.end());
          cv_.notify_all();
        },
        [this](const std::string& reason) {
          std::lock_guard lock(mu_);
          closed_ = reason;
          cv_.notify_all();
        });
    connected_ = client_->connect().has_value();
  }
  bool connected() const { return connected_; }
  // Sends `text` and waits for its echo; false when the connection closed instead.
  bool echo(const std::string& text) {
    if (!client_->send(Bytes(text.begin(), text.end()))) return false;
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 20s, [&] {
      for (const auto& e : echoes_) {
        if (e == text) return true;
      }
      return closed_.has_value();
    }) && !closed_.has_value();
  }
  std::optional<std::string> wait_closed(std::chrono::seconds limit) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return closed_.has_value(); });
    return closed_;
  }
  bool open() {
    std::lock_guard lock(mu_);
    return !closed_.has_value();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> echoes_;
  std::optional<std::string> closed_;
  bool connected_ = false;
  std::unique_ptr<WsClient> client_;  // last: destroyed first
};

class NetAdmissionTest : public ::testing::Test {
 protected:
  void start(ServerOptions o) {
    identity_ = load_or_create_identity(dir_.path()).value();
    o.port = 0;
    server_ = std::make_unique<WsServer>(identity_, o, handler_);
    server_->start();
    client_.port = server_->port();
    client_.fingerprint = identity_.key_fingerprint;
  }
  void TearDown() override {
    if (server_) server_->stop(0ms);
  }

  test_support::TempDir dir_;
  TlsIdentity identity_;
  PromotingHandler handler_;
  std::unique_ptr<WsServer> server_;
  ClientOptions client_;
};

TEST_F(NetAdmissionTest, TheLoginDeadlineClosesWhatDidNotLogInAndPingsDoNotExtendIt) {
  ServerOptions o;
  o.login_deadline = 2s;
  o.idle_timeout = 30s;
  o.ping_interval = 1s;  // the client answers every ping; that is not progress
  start(o);
  Peer idle(client_), promoted(client_), progressing(client_);
  ASSERT_TRUE(idle.connected() && promoted.connected() && progressing.connected());
  ASSERT_TRUE(promoted.echo("login"));
  ASSERT_TRUE(progressing.echo("progress"));  // 3 s from now instead
  const auto reason = idle.wait_closed(20s);
  ASSERT_TRUE(reason.has_value());
  EXPECT_NE(reason->find("login deadline"), std::string::npos) << *reason;
  EXPECT_TRUE(progressing.wait_closed(20s).has_value());
  // Promoted before its deadline: untouched by it.
  EXPECT_TRUE(promoted.open());
  EXPECT_TRUE(promoted.echo("still here"));
}

TEST_F(NetAdmissionTest, ThePreLoginFrameLimitRisesOnPromotion) {
  ServerOptions o;
  o.max_frame_bytes = 1 << 20;
  o.prelogin_max_frame_bytes = 16 * 1024;
  start(o);
  const std::string big(20 * 1024, 'x');
  Peer before(client_);
  ASSERT_TRUE(before.connected());
  EXPECT_TRUE(before.echo(std::string(16 * 1024, 'y')));  // at the limit: passes
  EXPECT_FALSE(before.echo(big));
  EXPECT_TRUE(before.wait_closed(10s).has_value());

  Peer after(client_);
  ASSERT_TRUE(after.connected());
  ASSERT_TRUE(after.echo("login"));
  EXPECT_TRUE(after.echo(big));
}

TEST_F(NetAdmissionTest, AtThePreLoginCeilingANewConnectionDisplacesTheOldest) {
  ServerOptions o;
  o.max_prelogin_connections = 2;
  start(o);
  Peer logged_in(client_);
  ASSERT_TRUE(logged_in.echo("login"));  // does not count
  Peer first(client_), second(client_);
  ASSERT_TRUE(first.connected() && second.connected());
  Peer third(client_);
  ASSERT_TRUE(third.connected());
  const auto reason = first.wait_closed(10s);
  ASSERT_TRUE(reason.has_value());
  EXPECT_NE(reason->find("server busy"), std::string::npos) << *reason;
  EXPECT_TRUE(second.echo("a"));
  EXPECT_TRUE(third.echo("b"));
  EXPECT_TRUE(logged_in.echo("c"));
}

TEST_F(NetAdmissionTest, CapsCountPerSourceAddress) {
  ServerOptions o;
  o.max_prelogin_per_address = 1;
  o.max_connections_per_address = 2;
  start(o);
  Peer a1(client_, "127.0.0.2");
  ASSERT_TRUE(a1.connected());
  Peer a2(client_, "127.0.0.2");
  EXPECT_FALSE(a2.connected());  // a second pre-login connection from there
  Peer b1(client_, "127.0.0.3");
  EXPECT_TRUE(b1.connected());
  ASSERT_TRUE(a1.echo("login"));
  Peer a3(client_, "127.0.0.2");  // the pre-login slot is free again
  ASSERT_TRUE(a3.connected());
  ASSERT_TRUE(a3.echo("login"));
  Peer a4(client_, "127.0.0.2");  // two connections from there already
  EXPECT_FALSE(a4.connected());
}

}  // namespace
}  // namespace sotto::net
