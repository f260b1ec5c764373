// Account recovery through the real request handlers and store (service.proto RecoverRequest):
// whoever holds the recovery code takes the account back on a new machine, the old devices are
// out at once, and a refusal never tells whether the account exists.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Client;
using sotto::testing::str;

class RecoveryTest : public sotto::testing::ServerHarness {
 protected:
  ServerConfig config() const override {
    ServerConfig c;
    c.registrations_per_minute = 100000;  // the per-address limit has a test of its own
    return c;
  }

  // Registers c's account with `recovery` as its recovery key, and logs c in.
  void join_recoverable(Client& c, const crypto::Ed25519KeyPair& recovery) {
    server_->on_open(c.conn, {});
    auto r = sotto::testing::register_request(c.party, c.auth);
    r.mutable_register_()->set_recovery_key(str(recovery.public_key()));
    ASSERT_EQ(call(c, r).status().code(), svc::OK);
    login(c);
  }

  std::string challenge(Client& c) {
    svc::Request ch;
    ch.mutable_challenge();
    return call(c, ch).challenge().nonce();
  }

  // `newcomer` (a new identity under the account's name) takes the account back, signing with
  // `recovery` over `nonce`; `next` becomes the recovery key.
  static svc::Request recover_request(Client& newcomer, const crypto::Ed25519KeyPair& recovery,
                                      const std::string& nonce, const std::string& next) {
    svc::Request r;
    auto* rr = r.mutable_recover();
    rr->set_username(newcomer.party.name);
    rr->set_identity_key(str(newcomer.party.identity.public_key.serialize()));
    *rr->mutable_device() = sotto::testing::make_new_device(newcomer.party, newcomer.auth);
    rr->set_recovery_key(next);
    sign(r, recovery, nonce);
    return r;
  }

  // (Re)signs a recover request: "sotto-recover-v1" || nonce || username || identity_key ||
  // device.auth_key || recovery_key.
  static void sign(svc::Request& r, const crypto::Ed25519KeyPair& recovery,
                   const std::string& nonce) {
    const auto& rr = r.recover();
    std::string m = "sotto-recover-v1" + nonce + rr.username() + rr.identity_key() +
                    rr.device().auth_key() + rr.recovery_key();
    r.mutable_recover()->set_signature(str(recovery.sign(as_bytes(m))));
  }

  bool logged_in(Client& c) {
    svc::Request r;
    r.mutable_key_count();
    return call(c, r).status().code() == svc::OK;
  }

  crypto::Ed25519KeyPair recovery_ = crypto::Ed25519KeyPair::generate(rng_);
  crypto::Ed25519KeyPair next_recovery_ = crypto::Ed25519KeyPair::generate(rng_);
};

TEST_F(RecoveryTest, TheCodeHolderTakesTheAccountBackAndTheOldDevicesAreOut) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join_recoverable(alice, recovery_);
  join(bob);
  Client laptop("alice", 1, 3);
  laptop.auth = crypto::Ed25519KeyPair::generate(rng_);
  link(alice, laptop);
  login(laptop);
  // Something waits for the laptop (offline) and alice's device 1.
  server_->on_close(laptop.conn);
  svc::Request send;
  auto* sr = send.mutable_send();
  sr->set_recipient("alice");
  sr->set_client_message_id(std::string(16, 's'));
  for (std::uint32_t d : {1u, 2u}) {
    auto* m = sr->add_messages();
    m->set_destination("alice");
    m->set_device_id(d);
    m->set_registration_id(alice.party.registration_id.value);
    m->set_type(1);
    m->set_content("for the old devices");
  }
  ASSERT_EQ(call(bob, send).status().code(), svc::OK);
  const auto depth = metrics_.queue_depth.load();

  Client fresh("alice", 50, 4);  // the new machine: a new identity key, a new auth key
  server_->on_open(fresh.conn, {});
  const auto r = call(
      fresh, recover_request(fresh, recovery_, challenge(fresh), str(next_recovery_.public_key())));
  ASSERT_EQ(r.status().code(), svc::OK) << r.status().message();
  EXPECT_EQ(r.recover().device_id(), 1u);

  // The old device still online is logged out and told why.
  EXPECT_EQ(alice.conn->closed().value_or(""), "account recovered on another device");
  EXPECT_FALSE(logged_in(alice));
  EXPECT_LT(metrics_.queue_depth.load(), depth);
  EXPECT_EQ(metrics_.queue_depth.load(),
            static_cast<std::int64_t>(store_->messages().count_all().value()));

  // The account is the new holder's: one device, the new identity key, nothing queued.
  const auto account = store_->accounts().find_account("alice").value();
  EXPECT_EQ(str(account.identity_key), str(fresh.party.identity.public_key.serialize()));
  EXPECT_EQ(account.recovery_key,
            Bytes(next_recovery_.public_key().begin(), next_recovery_.public_key().end()));
  ASSERT_EQ(account.devices.size(), 1u);
  EXPECT_EQ(account.devices[0].registration_id, fresh.party.registration_id.value);
  EXPECT_EQ(store_->messages().count(account.id, 1).value(), 0u);
  svc::Request who;
  who.mutable_identity_key()->set_username("alice");
  EXPECT_EQ(call(bob, who).identity_key().identity_key(),
            str(fresh.party.identity.public_key.serialize()));

  // The new device logs in as device 1; the old ones cannot.
  login(fresh);
  Client old_again("alice", 1, 5);
  server_->on_open(old_again.conn, {});
  const std::string nonce = challenge(old_again);
  EXPECT_EQ(
      call(old_again, sotto::testing::authenticate("alice", 1, alice.auth, nonce)).status().code(),
      svc::UNAUTHENTICATED);

  // The old code is spent; the next one works.
  Client again("alice", 51, 6);
  server_->on_open(again.conn, {});
  EXPECT_EQ(call(again, recover_request(again, recovery_, challenge(again), {})).status().code(),
            svc::FORBIDDEN);
  EXPECT_EQ(
      call(again, recover_request(again, next_recovery_, challenge(again), {})).status().code(),
      svc::OK);
  EXPECT_EQ(fresh.conn->closed().value_or(""), "account recovered on another device");
  EXPECT_TRUE(store_->accounts().find_account("alice").value().recovery_key.empty());
}

TEST_F(RecoveryTest, RefusalsLookTheSameWhetherOrNotTheAccountExists) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join_recoverable(alice, recovery_);
  join(bob);  // no recovery key
  const auto refusal = [&](const std::string& name, const crypto::Ed25519KeyPair& key) {
    Client c(name, 60, 10);
    server_->on_open(c.conn, {});
    auto response = call(c, recover_request(c, key, challenge(c), {}));
    server_->on_close(c.conn);
    return response.status();
  };
  const auto wrong_key = refusal("alice", next_recovery_);
  const auto unknown = refusal("nobody", recovery_);
  const auto unrecoverable = refusal("bob", recovery_);
  for (const auto& status : {wrong_key, unknown, unrecoverable}) {
    EXPECT_EQ(status.code(), svc::FORBIDDEN);
    EXPECT_EQ(status.message(), "recovery refused");
  }
  EXPECT_EQ(str(store_->accounts().find_account("alice").value().identity_key),
            str(alice.party.identity.public_key.serialize()));
  EXPECT_TRUE(logged_in(alice));
  EXPECT_FALSE(alice.conn->closed());
}

TEST_F(RecoveryTest, EachAttemptNeedsAFreshChallengeOfItsOwnConnection) {
  Client alice("alice", 1, 1);
  join_recoverable(alice, recovery_);
  Client c("alice", 50, 2);
  server_->on_open(c.conn, {});

  // No challenge asked on this connection.
  auto r = call(c, recover_request(c, recovery_, std::string(32, 'n'), {}));
  EXPECT_EQ(r.status().code(), svc::BAD_REQUEST);
  EXPECT_NE(r.status().message().find("challenge"), std::string::npos);

  // A challenge is good for one attempt, even a failed one.
  const std::string nonce = challenge(c);
  auto good = recover_request(c, recovery_, nonce, {});
  auto broken = good;
  broken.mutable_recover()->set_signature(std::string(64, 'x'));
  EXPECT_EQ(call(c, broken).status().code(), svc::FORBIDDEN);
  EXPECT_EQ(call(c, good).status().code(), svc::BAD_REQUEST);

  // One from another connection does not count here.
  Client other("alice", 52, 3);
  server_->on_open(other.conn, {});
  EXPECT_EQ(call(c, recover_request(c, recovery_, challenge(other), {})).status().code(),
            svc::BAD_REQUEST);

  // Nor does an expired one (the lifetime of login challenges: 60 s).
  const std::string old = challenge(c);
  server_now_ms_ += 61'000;
  EXPECT_EQ(call(c, recover_request(c, recovery_, old, {})).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(store_->accounts().find_account("alice").value().devices[0].auth_key,
            Bytes(alice.auth.public_key().begin(), alice.auth.public_key().end()));

  // A login challenge's signature (another context) does not pass as a recovery's either.
  const std::string n2 = challenge(c);
  auto cross = recover_request(c, recovery_, n2, {});
  const std::string as_login = "sotto-auth-v1" + n2;
  cross.mutable_recover()->set_signature(str(recovery_.sign(as_bytes(as_login))));
  EXPECT_EQ(call(c, cross).status().code(), svc::FORBIDDEN);
  EXPECT_EQ(call(c, recover_request(c, recovery_, challenge(c), {})).status().code(), svc::OK);
}

TEST_F(RecoveryTest, MalformedRecoveryRequestsAreRefusedAndChangeNothing) {
  Client alice("alice", 1, 1);
  join_recoverable(alice, recovery_);
  Client c("alice", 50, 2);
  Client stranger("alice", 70, 3);  // signs its device with an identity key it does not send
  server_->on_open(c.conn, {});
  std::vector<std::function<void(svc::Request&)>> breakages = {
      [](svc::Request& r) { r.mutable_recover()->set_username("no spaces"); },
      [](svc::Request& r) { r.mutable_recover()->set_username(""); },
      [](svc::Request& r) { r.mutable_recover()->set_identity_key("short"); },
      [](svc::Request& r) { r.mutable_recover()->set_identity_key(std::string(33, '\x06')); },
      [](svc::Request& r) { r.mutable_recover()->set_recovery_key(std::string(31, 'k')); },
      [](svc::Request& r) { r.mutable_recover()->set_recovery_key(std::string(33, 'k')); },
      [](svc::Request& r) { r.mutable_recover()->set_signature(std::string(63, 's')); },
      [](svc::Request& r) { r.mutable_recover()->set_signature(""); },
      [](svc::Request& r) { r.mutable_recover()->mutable_device()->set_auth_key("short"); },
      [](svc::Request& r) { r.mutable_recover()->mutable_device()->set_registration_id(0); },
      [](svc::Request& r) {
        r.mutable_recover()->mutable_device()->set_name(std::string(257, 'n'));
      },
      [](svc::Request& r) {
        r.mutable_recover()->mutable_device()->mutable_keys()->clear_signed_pre_key();
      },
      [&](svc::Request& r) {  // the device signed by another identity key than the one sent
        *r.mutable_recover()->mutable_device() =
            sotto::testing::make_new_device(stranger.party, c.auth);
      },
      [&](svc::Request& r) {  // the device signed by the account's old identity key
        *r.mutable_recover()->mutable_device() =
            sotto::testing::make_new_device(alice.party, c.auth);
      },
      [](svc::Request& r) { r.mutable_recover()->clear_device(); },
  };
  for (std::size_t i = 0; i < breakages.size(); ++i) {
    const std::string nonce = challenge(c);
    auto r = recover_request(c, recovery_, nonce, {});
    breakages[i](r);
    sign(r, recovery_, nonce);  // a valid signature over the broken request...
    breakages[i](r);            // ...unless the signature is what is broken
    const auto got = call(c, r);
    EXPECT_EQ(got.status().code(), svc::BAD_REQUEST) << "breakage " << i;
    EXPECT_FALSE(got.status().message().empty()) << "breakage " << i;
  }
  const auto account = store_->accounts().find_account("alice").value();
  EXPECT_EQ(str(account.identity_key), str(alice.party.identity.public_key.serialize()));
  EXPECT_EQ(account.devices.size(), 1u);
  EXPECT_TRUE(logged_in(alice));
}

TEST_F(RecoveryTest, AttemptsAreLimitedPerAccountWhateverTheirOutcome) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join_recoverable(alice, recovery_);
  join_recoverable(bob, recovery_);
  Client c("alice", 50, 3);
  server_->on_open(c.conn, {});
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(call(c, recover_request(c, next_recovery_, challenge(c), {})).status().code(),
              svc::FORBIDDEN);
  }
  // The sixth, right this time, waits: the code cannot be guessed faster than that.
  const auto limited = call(c, recover_request(c, recovery_, challenge(c), {}));
  EXPECT_EQ(limited.status().code(), svc::RATE_LIMITED);
  EXPECT_EQ(str(store_->accounts().find_account("alice").value().identity_key),
            str(alice.party.identity.public_key.serialize()));
  // Another account is not held up, and names without an account are limited alike.
  Client b("bob", 51, 4);
  server_->on_open(b.conn, {});
  EXPECT_EQ(call(b, recover_request(b, recovery_, challenge(b), {})).status().code(), svc::OK);
  Client n("nobody", 52, 5);
  server_->on_open(n.conn, {});
  svc::Code last = svc::OK;
  for (int i = 0; i < 6; ++i) {
    last = call(n, recover_request(n, recovery_, challenge(n), {})).status().code();
  }
  EXPECT_EQ(last, svc::RATE_LIMITED);
}

TEST_F(RecoveryTest, AttemptsShareThePerAddressLimitOfRegistrations) {
  ServerConfig strict;
  strict.registrations_per_minute = 6;  // a burst of 5
  server_ = make_server(metrics_, strict);
  Client alice("alice", 1, 1);
  join_recoverable(alice, recovery_);  // one registration
  svc::Code last = svc::OK;
  int refused = 0;
  for (int i = 0; i < 5; ++i) {
    Client c("carol" + std::to_string(i), 50, 10 + i);
    server_->on_open(c.conn, {});
    const auto got = call(c, recover_request(c, recovery_, challenge(c), {}));
    last = got.status().code();
    refused += last == svc::FORBIDDEN;
  }
  EXPECT_EQ(refused, 4);
  EXPECT_EQ(last, svc::RATE_LIMITED);
}

}  // namespace
}  // namespace sotto::server
