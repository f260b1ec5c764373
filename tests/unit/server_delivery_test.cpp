// Delivery through the real request handlers and the real SQLite store: envelopes pushed to an
// online recipient before their commit, the write they are spared when acknowledged first, the
// order kept when one of them has to wait for its commit, and retries answered once.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Client;
using sotto::testing::str;

class DeliveryTest : public sotto::testing::ServerHarness {
 protected:
  // Long enough that nothing below races the writer: a send stays uncommitted until flush().
  std::chrono::microseconds commit_delay() const override { return std::chrono::seconds(3); }

  svc::Request send_request(const Client& to, const std::string& client_message_id,
                            const std::string& content, std::vector<std::uint32_t> devices = {1}) {
    svc::Request r;
    auto* sr = r.mutable_send();
    sr->set_recipient(to.party.name);
    sr->set_client_message_id(client_message_id);
    sr->set_timestamp(1234);
    for (std::uint32_t d : devices) {
      auto* m = sr->add_messages();
      m->set_destination(to.party.name);
      m->set_device_id(d);
      m->set_registration_id(to.party.registration_id.value);
      m->set_type(1);
      m->set_content(content);
    }
    return r;
  }

  // Frames a client has received so far, split.
  struct Received {
    std::vector<svc::Response> responses;
    std::vector<svc::Envelope> envelopes;
  };
  static Received received(Client& c) {
    Received out;
    for (auto& f : c.conn->take()) {
      if (f.has_response()) out.responses.push_back(f.response());
      if (f.has_push() && f.push().has_envelope()) out.envelopes.push_back(f.push().envelope());
    }
    return out;
  }

  // Logs in without flushing the store (call() would commit pending sends).
  void login_without_commit(Client& c) {
    server_->on_open(c.conn, {});
    svc::Request ch;
    ch.mutable_challenge();
    submit(c, ch);
    auto got = received(c);
    ASSERT_EQ(got.responses.size(), 1u);
    const std::string nonce = got.responses[0].challenge().nonce();
    svc::Request r = sotto::testing::authenticate(c.party.name, c.device_id, c.auth, nonce);
    submit(c, r);
    got = received(c);
    ASSERT_FALSE(got.responses.empty());
    ASSERT_EQ(got.responses[0].status().code(), svc::OK);
  }

  std::size_t stored_for(const Client& c) {
    auto account = store_->accounts().find_account(c.party.name);
    return store_->messages().count(account->id, c.device_id).value_or(999);
  }
};

TEST_F(DeliveryTest, AnOnlineRecipientGetsTheEnvelopeBeforeTheCommitAndAnEarlyAckSparesTheWrite) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  (void)received(bob);

  const std::uint64_t send_id =
      submit(alice, send_request(bob, std::string(16, 'a'), "ciphertext-1"));
  // Pushed at once; the sender is not answered before the send is durable.
  auto got = received(bob);
  ASSERT_EQ(got.envelopes.size(), 1u);
  EXPECT_EQ(got.envelopes[0].content(), "ciphertext-1");
  EXPECT_TRUE(received(alice).responses.empty());

  svc::Request ack;
  ack.mutable_ack()->add_envelope_ids(got.envelopes[0].id());
  const std::uint64_t ack_id = submit(bob, ack);
  // The envelope was still waiting for the writer: the acknowledgement takes it out of the send
  // and is answered at once.
  got = received(bob);
  ASSERT_EQ(got.responses.size(), 1u);
  EXPECT_EQ(got.responses[0].id(), ack_id);
  EXPECT_EQ(got.responses[0].status().code(), svc::OK);

  store_->messages().flush();
  auto sender = received(alice);
  ASSERT_EQ(sender.responses.size(), 1u);
  EXPECT_EQ(sender.responses[0].id(), send_id);
  EXPECT_EQ(sender.responses[0].status().code(), svc::OK);
  EXPECT_EQ(stored_for(bob), 0u) << "an envelope acknowledged before its commit is never written";
  EXPECT_TRUE(received(bob).envelopes.empty()) << "and never pushed twice";
}

TEST_F(DeliveryTest, AnEnvelopeAcknowledgedAfterItsCommitIsDeletedOnceDurable) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  (void)received(bob);

  ASSERT_EQ(call(alice, send_request(bob, std::string(16, 'b'), "ciphertext-2")).status().code(),
            svc::OK);
  auto got = received(bob);
  ASSERT_EQ(got.envelopes.size(), 1u);
  EXPECT_EQ(stored_for(bob), 1u);

  svc::Request ack;
  ack.mutable_ack()->add_envelope_ids(got.envelopes[0].id());
  const std::uint64_t ack_id = submit(bob, ack);
  EXPECT_TRUE(received(bob).responses.empty()) << "answered only once the deletion is durable";
  store_->messages().flush();
  got = received(bob);
  ASSERT_EQ(got.responses.size(), 1u);
  EXPECT_EQ(got.responses[0].id(), ack_id);
  EXPECT_EQ(stored_for(bob), 0u);
}

TEST_F(DeliveryTest, AnEnvelopeWaitingForItsCommitIsNotOvertakenByALaterOne) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  server_->on_close(bob.conn);  // bob goes offline

  submit(alice, send_request(bob, std::string(16, '1'), "first"));
  // Bob comes back while "first" is not yet written: his drain finds nothing and he is caught up.
  bob.conn = std::make_shared<sotto::testing::LoopbackConnection>(3);
  login_without_commit(bob);
  submit(alice, send_request(bob, std::string(16, '2'), "second"));
  EXPECT_TRUE(received(bob).envelopes.empty()) << "'second' must wait behind 'first'";

  store_->messages().flush();
  auto got = received(bob);
  ASSERT_EQ(got.envelopes.size(), 2u);
  EXPECT_EQ(got.envelopes[0].content(), "first");
  EXPECT_EQ(got.envelopes[1].content(), "second");

  // With nothing waiting any more, the next envelope goes out before its commit again.
  submit(alice, send_request(bob, std::string(16, '3'), "third"));
  got = received(bob);
  ASSERT_EQ(got.envelopes.size(), 1u);
  EXPECT_EQ(got.envelopes[0].content(), "third");
  store_->messages().flush();
}

TEST_F(DeliveryTest, AnEnvelopePushedOnAConnectionThatClosedBeforeItsCommitReachesTheNextOne) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  (void)received(bob);

  submit(alice, send_request(bob, std::string(16, 'c'), "lost in transit"));
  ASSERT_EQ(received(bob).envelopes.size(), 1u);  // pushed, never acknowledged...
  server_->on_close(bob.conn);                    // ...the connection drops
  bob.conn = std::make_shared<sotto::testing::LoopbackConnection>(9);
  login_without_commit(bob);  // drains before the commit: nothing there yet
  EXPECT_TRUE(received(bob).envelopes.empty());

  store_->messages().flush();
  auto got = received(bob);
  ASSERT_EQ(got.envelopes.size(), 1u) << "the committed envelope must reach the new connection";
  EXPECT_EQ(got.envelopes[0].content(), "lost in transit");
}

// A long stored queue reaches a device that acknowledges each envelope on its own (as the client
// library does): every envelope once, in order, refilled a page at a time, then queue_drained.
TEST_F(DeliveryTest, ALongQueueDrainsInOrderToADeviceAcknowledgingEachEnvelope) {
  constexpr int kMessages = 1300;  // more than two pages beyond the in-flight limit
  ServerConfig limits = config();
  limits.sends_per_minute = 1'000'000;  // one sender fills the queue faster than a person can
  server_ = make_server(metrics_, limits);
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  server_->on_close(bob.conn);
  for (int i = 0; i < kMessages; ++i) {
    char cmid[17];
    std::snprintf(cmid, sizeof cmid, "%016d", i);
    submit(alice, send_request(bob, cmid, "m" + std::to_string(i)));
  }
  store_->messages().flush();
  ASSERT_EQ(stored_for(bob), static_cast<std::size_t>(kMessages));

  bob.conn = std::make_shared<sotto::testing::LoopbackConnection>(4);
  server_->on_open(bob.conn, {});
  svc::Request challenge;
  challenge.mutable_challenge();
  submit(bob, challenge);
  auto frames = bob.conn->take();
  ASSERT_EQ(frames.size(), 1u);
  const std::string nonce = frames[0].response().challenge().nonce();
  submit(bob, sotto::testing::authenticate(bob.party.name, bob.device_id, bob.auth, nonce));
  std::vector<std::string> contents;
  bool drained = false;
  for (int round = 0; round < 100 && !drained; ++round) {
    std::vector<svc::Envelope> pushed;
    for (auto& f : bob.conn->take()) {
      if (f.has_push() && f.push().has_envelope()) pushed.push_back(f.push().envelope());
      if (f.has_push() && f.push().has_queue_drained()) drained = true;
    }
    for (const auto& e : pushed) {
      contents.push_back(e.content());
      svc::Request ack;
      ack.mutable_ack()->add_envelope_ids(e.id());
      submit(bob, ack);
    }
    store_->messages().flush();
  }
  EXPECT_TRUE(drained);
  ASSERT_EQ(contents.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(contents[i], "m" + std::to_string(i));
  EXPECT_EQ(stored_for(bob), 0u);
}

// Delivery paced by the connection (net::Connection::writable): the drain stops when it says no,
// a live send meanwhile waits behind the backlog, and on_writable goes on where it stopped; every
// envelope once and in order, and acknowledged ones never again after a second login.
TEST_F(DeliveryTest, ADrainPacedByItsConnectionGoesOnFromOnWritableInOrderAndOnce) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  server_->on_close(bob.conn);
  const auto send = [&](int i) {
    char cmid[17];
    std::snprintf(cmid, sizeof cmid, "%016d", i);
    submit(alice, send_request(bob, cmid, "m" + std::to_string(i)));
    store_->messages().flush();
  };
  for (int i = 0; i < 10; ++i) send(i);

  bool drained = false;
  const auto take = [&] {
    std::vector<svc::Envelope> got;
    for (auto& f : bob.conn->take()) {
      if (f.has_push() && f.push().has_envelope()) got.push_back(f.push().envelope());
      if (f.has_push() && f.push().has_queue_drained()) drained = true;
    }
    return got;
  };
  const auto contents = [](const std::vector<svc::Envelope>& envelopes) {
    std::vector<std::string> out;
    for (const auto& e : envelopes) out.push_back(e.content());
    return out;
  };
  using Strings = std::vector<std::string>;
  // Logs bob in on a new connection that has room for `room` frames from the login's answer on.
  const auto login_with_room = [&](std::uint64_t conn_id, int room) {
    bob.conn = std::make_shared<sotto::testing::LoopbackConnection>(conn_id);
    server_->on_open(bob.conn, {});
    svc::Request challenge;
    challenge.mutable_challenge();
    submit(bob, challenge);
    const auto frames = bob.conn->take();
    ASSERT_EQ(frames.size(), 1u);
    bob.conn->set_room(room);
    submit(bob, sotto::testing::authenticate(bob.party.name, bob.device_id, bob.auth,
                                             frames[0].response().challenge().nonce()));
  };

  login_with_room(5, 3);  // the answer, then two envelopes
  auto first = take();
  EXPECT_EQ(contents(first), (Strings{"m0", "m1"}));
  EXPECT_FALSE(drained);
  // No room: a live send waits, and so does a drain woken anyway.
  send(10);
  server_->on_writable(bob.conn);
  EXPECT_TRUE(take().empty());
  bob.conn->set_room(2);
  server_->on_writable(bob.conn);
  auto second = take();
  EXPECT_EQ(contents(second), (Strings{"m2", "m3"}));

  // Bob acknowledges those four, his connection drops, and he logs in again.
  svc::Request ack;
  for (const auto* got : {&first, &second})
    for (const auto& e : *got) ack.mutable_ack()->add_envelope_ids(e.id());
  submit(bob, ack);
  store_->messages().flush();
  server_->on_close(bob.conn);
  login_with_room(6, 3);
  Strings rest = contents(take());
  EXPECT_EQ(rest, (Strings{"m4", "m5"}));
  for (int round = 0; round < 10 && !drained; ++round) {
    if (round == 1) send(11);  // live, while the backlog is still going out
    bob.conn->set_room(2);
    server_->on_writable(bob.conn);
    const auto got = take();
    EXPECT_LE(got.size(), 2u);
    for (const auto& c : contents(got)) rest.push_back(c);
  }
  EXPECT_TRUE(drained);
  EXPECT_EQ(rest, (Strings{"m4", "m5", "m6", "m7", "m8", "m9", "m10", "m11"}));
  EXPECT_EQ(stored_for(bob), 8u);
}

TEST_F(DeliveryTest, ARetryAfterTheDeviceListChangedIsAnsweredNotRefused) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  server_->on_close(bob.conn);  // offline: the envelope stays stored

  const std::string id(16, 'r');
  ASSERT_EQ(call(alice, send_request(bob, id, "original")).status().code(), svc::OK);
  EXPECT_EQ(stored_for(bob), 1u);

  // Bob adds a device; alice's retry of the same send (its answer was lost) is still the send
  // that was accepted: answered OK, not stored again, not refused as stale.
  auto account = store_->accounts().find_account("bob");
  store::DeviceRecord second;
  second.registration_id = 4242;
  second.auth_key = Bytes(32, 0x42);
  store::SignedPreKeyRecord spk{7, Bytes(33, 0x05), Bytes(64, 0x01)};
  ASSERT_TRUE(store_->accounts().add_device(account->id, second, spk, {}).has_value());

  auto retry = call(alice, send_request(bob, id, "original"));
  EXPECT_EQ(retry.status().code(), svc::OK);
  EXPECT_EQ(stored_for(bob), 1u);

  // A new send with the old list is refused, naming the missing device.
  auto fresh = call(alice, send_request(bob, std::string(16, 'n'), "new"));
  ASSERT_EQ(fresh.status().code(), svc::STALE_DEVICES);
  ASSERT_EQ(fresh.send().mismatch_size(), 1);
  ASSERT_EQ(fresh.send().mismatch(0).missing_size(), 1);
  EXPECT_EQ(fresh.send().mismatch(0).missing(0), 2u);
}

TEST_F(DeliveryTest, ARetryOfASendNotYetCommittedIsAnsweredWithItAndNeverPushedTwice) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  (void)received(bob);

  const std::string id(16, 'd');
  const std::uint64_t first = submit(alice, send_request(bob, id, "once"));
  ASSERT_EQ(received(bob).envelopes.size(), 1u);  // pushed before its commit
  // The client lost the connection (say) and sends again with the same id while the original
  // still waits for its commit.
  const std::uint64_t second = submit(alice, send_request(bob, id, "once"));
  EXPECT_TRUE(received(bob).envelopes.empty()) << "a retry is never pushed";
  EXPECT_TRUE(received(alice).responses.empty()) << "answered once the original is durable";

  store_->messages().flush();
  const auto answers = received(alice).responses;
  ASSERT_EQ(answers.size(), 2u);
  std::set<std::uint64_t> ids;
  for (const auto& a : answers) {
    EXPECT_EQ(a.status().code(), svc::OK);
    ids.insert(a.id());
  }
  EXPECT_EQ(ids, (std::set<std::uint64_t>{first, second}));
  EXPECT_EQ(stored_for(bob), 1u) << "stored once";
  EXPECT_TRUE(received(bob).envelopes.empty());
}

TEST_F(DeliveryTest, ARetryOfACommittedSendIsAnsweredWithoutPushingAgain) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  (void)received(bob);

  const std::string id(16, 'e');
  ASSERT_EQ(call(alice, send_request(bob, id, "once")).status().code(), svc::OK);
  ASSERT_EQ(received(bob).envelopes.size(), 1u);
  // Bob is online and has not acknowledged it yet; the answer to alice was lost.
  const auto retry = call(alice, send_request(bob, id, "once"));
  EXPECT_EQ(retry.status().code(), svc::OK);
  EXPECT_TRUE(received(bob).envelopes.empty()) << "a retry is never pushed";
  EXPECT_EQ(stored_for(bob), 1u);
}

TEST_F(DeliveryTest, AnotherDevicesAcknowledgementCancelsNothing) {
  Client alice("alice", 1, 1), bob("bob", 2, 2), mallory("mallory", 3, 3);
  join(alice);
  join(bob);
  join(mallory);
  (void)received(bob);

  submit(alice, send_request(bob, std::string(16, 'm'), "for bob only"));
  auto got = received(bob);
  ASSERT_EQ(got.envelopes.size(), 1u);
  svc::Request ack;
  ack.mutable_ack()->add_envelope_ids(got.envelopes[0].id());
  submit(mallory, ack);
  store_->messages().flush();
  EXPECT_EQ(stored_for(bob), 1u) << "mallory's acknowledgement of bob's envelope changed nothing";
}

}  // namespace
}  // namespace sotto::server
