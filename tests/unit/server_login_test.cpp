// Device login through the real request handlers and store: the one-round-trip proof over the
// connection's TLS channel binding (what clients use), and the challenge it replaces. Each value a
// proof may sign is good for one attempt on its own connection, and a proof made for one kind
// never passes as the other.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "crypto/base64.h"
#include "net/device_authorization.h"
#include "server/limits.h"
#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::authenticate;
using sotto::testing::authenticate_bound;
using sotto::testing::Client;

std::array<std::uint8_t, 32> binding_of(std::uint8_t seed) {
  std::array<std::uint8_t, 32> b{};
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(seed * 31 + i);
  return b;
}

class LoginTest : public sotto::testing::ServerHarness {
 protected:
  // Registers c's account (device 1) on c's connection, which stays logged out.
  void register_only(Client& c) {
    server_->on_open(c.conn, {});
    ASSERT_EQ(call(c, sotto::testing::register_request(c.party, c.auth)).status().code(), svc::OK);
  }

  // Whether the connection is logged in: a request that needs it is answered.
  bool logged_in(Client& c) {
    svc::Request r;
    r.mutable_key_count();
    return call(c, r).status().code() == svc::OK;
  }

  svc::Response login_bound(Client& c, const std::array<std::uint8_t, 32>& signed_binding,
                            std::string_view context = "sotto-auth-tls-v1") {
    return call(c, authenticate_bound(c.party.name, c.device_id, c.auth, signed_binding, context));
  }
};

TEST_F(LoginTest, ASignatureOverTheChannelBindingLogsInWithoutAChallenge) {
  Client alice("alice", 1, 1);
  register_only(alice);
  ASSERT_FALSE(logged_in(alice));
  alice.conn->set_channel_binding(binding_of(1));
  const auto before = metrics_.logins.load();
  const auto r = login_bound(alice, binding_of(1));
  EXPECT_EQ(r.status().code(), svc::OK) << r.status().message();
  EXPECT_TRUE(logged_in(alice));
  EXPECT_EQ(metrics_.logins.load(), before + 1);
}

TEST_F(LoginTest, TheChannelBindingIsGoodForOneAttemptAndTheChallengeStillWorks) {
  Client alice("alice", 1, 1);
  Client mallory("mallory", 2, 2);
  register_only(alice);
  alice.conn->set_channel_binding(binding_of(1));
  // A wrong key spends the binding...
  const auto failures = metrics_.login_failures.load();
  auto wrong = call(alice, authenticate_bound("alice", 1, mallory.auth, binding_of(1)));
  EXPECT_EQ(wrong.status().code(), svc::UNAUTHENTICATED);
  // ...so the right proof over it is refused afterwards, with a reason that says what to do.
  auto late = login_bound(alice, binding_of(1));
  EXPECT_EQ(late.status().code(), svc::UNAUTHENTICATED);
  EXPECT_NE(late.status().message().find("challenge"), std::string::npos);
  EXPECT_FALSE(logged_in(alice));
  EXPECT_EQ(metrics_.login_failures.load(), failures + 2);
  // The challenge path is still open on this connection.
  svc::Request ch;
  ch.mutable_challenge();
  const std::string nonce = call(alice, ch).challenge().nonce();
  ASSERT_EQ(nonce.size(), 32u);
  EXPECT_EQ(call(alice, authenticate("alice", 1, alice.auth, nonce)).status().code(), svc::OK);
  EXPECT_TRUE(logged_in(alice));
}

TEST_F(LoginTest, AProofForAnotherConnectionsBindingIsRefused) {
  Client alice("alice", 1, 1);
  register_only(alice);
  alice.conn->set_channel_binding(binding_of(1));
  // Signed for a binding this connection does not have (a proof relayed from elsewhere).
  EXPECT_EQ(login_bound(alice, binding_of(2)).status().code(), svc::UNAUTHENTICATED);
  EXPECT_FALSE(logged_in(alice));
}

TEST_F(LoginTest, ProofsDoNotPassForTheOtherKind) {
  Client alice("alice", 1, 1);
  register_only(alice);
  // The binding signed under the challenge's context.
  alice.conn->set_channel_binding(binding_of(1));
  EXPECT_EQ(login_bound(alice, binding_of(1), "sotto-auth-v1").status().code(),
            svc::UNAUTHENTICATED);
  // A challenge's nonce signed under the binding's context, sent as a challenge proof.
  svc::Request ch;
  ch.mutable_challenge();
  const std::string nonce = call(alice, ch).challenge().nonce();
  std::array<std::uint8_t, 32> as_binding{};
  std::copy(nonce.begin(), nonce.end(), as_binding.begin());
  auto r = authenticate_bound("alice", 1, alice.auth, as_binding);
  r.mutable_authenticate()->set_channel_binding(false);
  EXPECT_EQ(call(alice, r).status().code(), svc::UNAUTHENTICATED);
  EXPECT_FALSE(logged_in(alice));
}

TEST_F(LoginTest, AConnectionWithoutABindingIsToldToAskForAChallenge) {
  Client alice("alice", 1, 1);
  register_only(alice);  // the loopback connection has no binding unless a test sets one
  auto r = login_bound(alice, binding_of(1));
  EXPECT_EQ(r.status().code(), svc::UNAUTHENTICATED);
  EXPECT_NE(r.status().message().find("challenge"), std::string::npos);
  EXPECT_FALSE(logged_in(alice));
}

// --- the proof in the upgrade request's Authorization header ------------------------------------

class UpgradeLoginTest : public LoginTest {
 protected:
  static std::string header_for(const svc::Request& bound) {
    return net::device_authorization(as_bytes(bound.authenticate().SerializeAsString()));
  }

  // Opens c's connection with `authorization` and returns what it was sent first.
  svc::Frame open_with(Client& c, const std::string& authorization) {
    server_->on_open(c.conn, authorization);
    store_->messages().flush();
    auto frames = c.conn->take();
    if (frames.empty()) {
      ADD_FAILURE() << "nothing sent";
      return {};
    }
    for (auto& f : frames) {
      if (f.has_push()) pushes_.push_back(f.push());
    }
    return frames.front();
  }

  // Registers the account of Client(name, seed, ...) (same keys) on a connection of its own,
  // then closes that one.
  void register_elsewhere(const std::string& name, std::uint64_t seed) {
    Client reg(name, seed, 1000 + seed);
    server_->on_open(reg.conn, {});
    ASSERT_EQ(call(reg, sotto::testing::register_request(reg.party, reg.auth)).status().code(),
              svc::OK);
    server_->on_close(reg.conn);
  }
};

TEST_F(UpgradeLoginTest, AProofInTheUpgradeRequestLogsInAndItsResultComesFirst) {
  Client alice("alice", 1, 1);
  register_elsewhere("alice", 1);
  alice.conn->set_channel_binding(binding_of(1));
  const auto first =
      open_with(alice, header_for(authenticate_bound("alice", 1, alice.auth, binding_of(1))));
  ASSERT_TRUE(first.has_push() && first.push().has_login_result());
  EXPECT_EQ(first.push().login_result().status().code(), svc::OK)
      << first.push().login_result().status().message();
  EXPECT_TRUE(logged_in(alice));
  // The binding is spent: a second proof over it in a request is refused.
  EXPECT_EQ(login_bound(alice, binding_of(1)).status().code(), svc::BAD_REQUEST);
}

TEST_F(UpgradeLoginTest, AWrongProofLeavesTheConnectionOpenLoggedOutAndTheBindingSpent) {
  Client alice("alice", 1, 1);
  Client mallory("mallory", 2, 2);
  register_elsewhere("alice", 1);
  alice.conn->set_channel_binding(binding_of(1));
  const auto failures = metrics_.login_failures.load();
  const auto first =
      open_with(alice, header_for(authenticate_bound("alice", 1, mallory.auth, binding_of(1))));
  ASSERT_TRUE(first.has_push() && first.push().has_login_result());
  EXPECT_EQ(first.push().login_result().status().code(), svc::UNAUTHENTICATED);
  EXPECT_EQ(metrics_.login_failures.load(), failures + 1);
  EXPECT_FALSE(logged_in(alice));
  EXPECT_EQ(login_bound(alice, binding_of(1)).status().code(), svc::UNAUTHENTICATED);
  // The challenge still works on this connection.
  svc::Request ch;
  ch.mutable_challenge();
  const std::string nonce = call(alice, ch).challenge().nonce();
  EXPECT_EQ(call(alice, authenticate("alice", 1, alice.auth, nonce)).status().code(), svc::OK);
}

TEST_F(UpgradeLoginTest, MalformedHeadersAreRefusedClearlyAndChangeNothing) {
  Client alice("alice", 1, 1);
  register_elsewhere("alice", 1);
  const auto good = authenticate_bound("alice", 1, alice.auth, binding_of(1));
  const std::string token =
      crypto::base64url_encode(as_bytes(good.authenticate().SerializeAsString()));
  auto no_binding_flag = good;
  no_binding_flag.mutable_authenticate()->set_channel_binding(false);
  const std::vector<std::string> bad = {
      "Bearer " + token,                                   // another scheme
      "SottoDevice",                                       // no proof
      "SottoDevice  " + token,                             // two spaces
      "sottodevice " + token,                              // the scheme's spelling
      "SottoDevice " + token + "=",                        // padding
      "SottoDevice " + token + " ",                        // trailing space
      "SottoDevice " + token.substr(0, token.size() - 1),  // truncated
      "SottoDevice " + std::string(400, 'A'),              // longer than any proof
      "SottoDevice " +
          crypto::base64url_encode(as_bytes(std::string("\xff\xff\xff"))),  // not protobuf
      "SottoDevice " + header_for(no_binding_flag).substr(12),              // a challenge proof
  };
  std::uint64_t id = 10;
  for (const auto& header : bad) {
    Client c("alice", 1, ++id);
    c.conn->set_channel_binding(binding_of(1));
    const auto first = open_with(c, header);
    ASSERT_TRUE(first.has_push() && first.push().has_login_result()) << header;
    const auto& status = first.push().login_result().status();
    EXPECT_EQ(status.code(), svc::BAD_REQUEST) << header;
    EXPECT_NE(status.message().find("Authorization"), std::string::npos) << header;
    EXPECT_FALSE(logged_in(c)) << header;
    // Spent like any attempt's binding.
    EXPECT_EQ(login_bound(c, binding_of(1)).status().code(), svc::UNAUTHENTICATED) << header;
    server_->on_close(c.conn);
  }
}

// --- one copy of a device's data at a time (AuthenticateRequest.instance) ------------------------

class InstanceTest : public UpgradeLoginTest {
 protected:
  static std::string instance(char c) { return std::string(16, c); }

  // A challenge login on a new connection of alice's device 1, from the copy `copy`.
  svc::Response login_from(std::unique_ptr<Client>& c, std::uint64_t conn_id,
                           const std::string& copy) {
    c = std::make_unique<Client>("alice", 1, conn_id);
    server_->on_open(c->conn, {});
    svc::Request ch;
    ch.mutable_challenge();
    const std::string nonce = call(*c, ch).challenge().nonce();
    auto r = authenticate("alice", 1, c->auth, nonce);
    r.mutable_authenticate()->set_instance(copy);
    return call(*c, r);
  }
};

TEST_F(InstanceTest, ASecondCopyOfADeviceIsRefusedWhileTheFirstIsOnline) {
  register_elsewhere("alice", 1);
  std::unique_ptr<Client> first, second, same, unnamed, other;
  ASSERT_EQ(login_from(first, 1, instance('A')).status().code(), svc::OK);

  const auto failures = metrics_.login_failures.load();
  const auto refused = login_from(second, 2, instance('B'));
  EXPECT_EQ(refused.status().code(), svc::DEVICE_IN_USE);
  EXPECT_EQ(refused.status().message(), "this device is connected from another copy of its data");
  EXPECT_EQ(metrics_.login_failures.load(), failures + 1);
  EXPECT_FALSE(logged_in(*second));
  EXPECT_TRUE(logged_in(*first));  // the copy online keeps its connection
  EXPECT_FALSE(first->conn->closed());

  // The same copy reconnecting replaces its older connection, as before.
  ASSERT_EQ(login_from(same, 3, instance('A')).status().code(), svc::OK);
  EXPECT_EQ(first->conn->closed().value_or(""), "replaced by a newer connection of this device");
  // A login that names no copy is not checked, and one online without a copy checks nobody.
  ASSERT_EQ(login_from(unnamed, 4, "").status().code(), svc::OK);
  EXPECT_TRUE(same->conn->closed().has_value());
  ASSERT_EQ(login_from(other, 5, instance('B')).status().code(), svc::OK);
  EXPECT_TRUE(unnamed->conn->closed().has_value());
  // Once the copy online has gone, another copy may log in.
  server_->on_close(other->conn);
  std::unique_ptr<Client> back;
  EXPECT_EQ(login_from(back, 6, instance('A')).status().code(), svc::OK);
}

TEST_F(InstanceTest, AnInstanceOfAnotherSizeIsRefusedAndSpendsTheAttempt) {
  register_elsewhere("alice", 1);
  for (const std::string& bad : {std::string(15, 'x'), std::string(17, 'x'), std::string(1, 'x')}) {
    std::unique_ptr<Client> c;
    const auto r = login_from(c, 10 + bad.size(), bad);
    EXPECT_EQ(r.status().code(), svc::BAD_REQUEST) << bad.size();
    EXPECT_NE(r.status().message().find("instance"), std::string::npos);
    EXPECT_FALSE(logged_in(*c));
    // The challenge is spent: this connection has nothing left to sign.
    svc::Request again;
    again.mutable_authenticate()->set_username("alice");
    EXPECT_EQ(call(*c, again).status().code(), svc::UNAUTHENTICATED);
  }
}

TEST_F(InstanceTest, TheUpgradeLoginChecksTheCopyAlike) {
  register_elsewhere("alice", 1);
  std::unique_ptr<Client> first;
  ASSERT_EQ(login_from(first, 1, instance('A')).status().code(), svc::OK);
  const auto proof_from = [&](Client& c, const std::string& copy) {
    c.conn->set_channel_binding(binding_of(static_cast<std::uint8_t>(c.conn->id())));
    auto proof =
        authenticate_bound("alice", 1, c.auth, binding_of(static_cast<std::uint8_t>(c.conn->id())));
    proof.mutable_authenticate()->set_instance(copy);
    return header_for(proof);
  };
  Client second("alice", 1, 2);
  auto first_frame = open_with(second, proof_from(second, instance('B')));
  ASSERT_TRUE(first_frame.has_push() && first_frame.push().has_login_result());
  EXPECT_EQ(first_frame.push().login_result().status().code(), svc::DEVICE_IN_USE);
  EXPECT_FALSE(logged_in(second));
  EXPECT_TRUE(logged_in(*first));

  Client bad_size("alice", 1, 3);
  first_frame = open_with(bad_size, proof_from(bad_size, "short"));
  EXPECT_EQ(first_frame.push().login_result().status().code(), svc::BAD_REQUEST);

  Client same("alice", 1, 4);
  first_frame = open_with(same, proof_from(same, instance('A')));
  EXPECT_EQ(first_frame.push().login_result().status().code(), svc::OK);
  EXPECT_TRUE(logged_in(same));
  EXPECT_TRUE(first->conn->closed().has_value());
}

TEST_F(UpgradeLoginTest, NoHeaderMeansNoLoginResult) {
  Client alice("alice", 1, 1);
  server_->on_open(alice.conn, {});
  EXPECT_TRUE(alice.conn->take().empty());
}

// Admission (net::Connection::promote and extend_login_deadline): the transport keeps a
// connection to the pre-login limits until the server says it logged in; registering and opening
// a provisioning address give it more time to log in. A refused login changes nothing.
TEST_F(LoginTest, TheTransportHearsOfLoginsAndOfProgressBeforeThem) {
  Client alice("alice", 1, 1);
  register_only(alice);
  EXPECT_FALSE(alice.conn->promoted());
  EXPECT_EQ(alice.conn->deadline_extensions(),
            std::vector<std::chrono::seconds>{std::chrono::seconds(15)});

  Client mallory("mallory", 2, 2);
  svc::Request ch;
  ch.mutable_challenge();
  std::string nonce = call(alice, ch).challenge().nonce();
  EXPECT_EQ(call(alice, authenticate("alice", 1, mallory.auth, nonce)).status().code(),
            svc::UNAUTHENTICATED);
  EXPECT_FALSE(alice.conn->promoted());
  nonce = call(alice, ch).challenge().nonce();
  EXPECT_EQ(call(alice, authenticate("alice", 1, alice.auth, nonce)).status().code(), svc::OK);
  EXPECT_TRUE(alice.conn->promoted());

  // A new device waiting at a provisioning address waits for a person: as long as a link token
  // lives.
  Client newcomer("alice", 1, 3);
  server_->on_open(newcomer.conn, {});
  svc::Request open;
  open.mutable_provisioning_open();
  EXPECT_EQ(call(newcomer, open).status().code(), svc::OK);
  EXPECT_EQ(newcomer.conn->deadline_extensions(),
            std::vector<std::chrono::seconds>{std::chrono::seconds(kLinkTokenLifetimeSeconds)});
  EXPECT_FALSE(newcomer.conn->promoted());
}

// Users behind one NAT share the per-address login bucket, so it is generous; logins are limited
// per account too, counting only proofs that verified (a stranger's failures never lock an
// account out).
TEST_F(LoginTest, LoginsAreLimitedPerAccountOnceTheProofHolds) {
  Client alice("alice", 1, 1);
  register_only(alice);
  Client stranger("alice", 9, 2);
  server_->on_open(stranger.conn, {});
  svc::Request ch;
  ch.mutable_challenge();
  for (int i = 0; i < 40; ++i) {
    const std::string nonce = call(stranger, ch).challenge().nonce();
    EXPECT_EQ(call(stranger, authenticate("alice", 1, stranger.auth, nonce)).status().code(),
              svc::UNAUTHENTICATED);
  }
  std::uint64_t id = 100;
  const auto attempt = [&] {
    alice.conn = std::make_shared<sotto::testing::LoopbackConnection>(++id);
    server_->on_open(alice.conn, {});
    const std::string nonce = call(alice, ch).challenge().nonce();
    return call(alice, authenticate("alice", 1, alice.auth, nonce)).status();
  };
  ASSERT_EQ(ServerConfig{}.logins_per_account_per_minute, 60u);  // a burst of 30
  for (std::uint32_t i = 0; i < kMinLoginsPerAccountBurst; ++i) {
    const auto status = attempt();
    ASSERT_EQ(status.code(), svc::OK) << i << ": " << status.message();
  }
  const auto refused = attempt();
  EXPECT_EQ(refused.code(), svc::RATE_LIMITED);
  EXPECT_NE(refused.message().find("this account"), std::string::npos) << refused.message();
  EXPECT_FALSE(alice.conn->promoted());
  // Another account from the same address still logs in.
  Client bob("bob", 3, 500);
  register_only(bob);
  const std::string nonce = call(bob, ch).challenge().nonce();
  EXPECT_EQ(call(bob, authenticate("bob", 1, bob.auth, nonce)).status().code(), svc::OK);
}

// Per-address buckets count an IPv6 /64 as one address (net/address_key.h): another address of
// the same /64 shares the bucket, the next /64 has its own.
class AddressBucketTest : public LoginTest {
 protected:
  ServerConfig config() const override {
    ServerConfig c;
    c.registrations_per_minute = 1;  // a burst of 5
    return c;
  }
};

TEST_F(AddressBucketTest, RegistrationsAreCountedPerIpv6Slash64) {
  std::vector<std::unique_ptr<Client>> clients;
  const auto register_from = [&](const std::string& address) {
    const auto n = clients.size();
    clients.push_back(std::make_unique<Client>("user" + std::to_string(n), 10 + n, 10 + n));
    Client& c = *clients.back();
    c.conn->set_remote_address(address);
    server_->on_open(c.conn, {});
    return call(c, sotto::testing::register_request(c.party, c.auth)).status().code();
  };
  for (int i = 1; i <= 5; ++i) {
    EXPECT_EQ(register_from("2001:db8:1:2::" + std::to_string(i)), svc::OK) << i;
  }
  EXPECT_EQ(register_from("2001:db8:1:2:ffff:ffff:ffff:9"), svc::RATE_LIMITED);
  EXPECT_EQ(register_from("2001:db8:1:3::1"), svc::OK);
  // An IPv4 peer seen through a dual-stack socket is that IPv4 address.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(register_from("192.0.2.1"), svc::OK) << i;
  EXPECT_EQ(register_from("::ffff:192.0.2.1"), svc::RATE_LIMITED);
}

}  // namespace
}  // namespace sotto::server
