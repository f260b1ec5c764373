// The multi-recipient send (service.proto MultiSendRequest) through the real request handlers and
// the real SQLite store: one upload fanned out to every listed device exactly once, online ones
// at once and offline ones when they connect; the shared content stored once; retries answered
// as the original; device-list mismatches and unknown users refused with nothing stored; blocks
// applied silently; per-device contents; and the request's shape checked before any lookup.
#include <gtest/gtest.h>

#include <array>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "client/multi_send.h"
#include "server/limits.h"
#include "server/multi_send.h"
#include "service.pb.h"
#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Client;

// One account with two devices, both logged in on their own connections.
struct Member {
  std::unique_ptr<Client> first;
  std::unique_ptr<Client> second;
};

class MultiSendTest : public sotto::testing::ServerHarness {
 protected:
  ServerConfig config() const override {
    ServerConfig c;
    c.registrations_per_minute = 100000;
    return c;
  }

  // Registers `name` with two devices (1 and 2), both logged in.
  Member member(const std::string& name, std::uint64_t seed) {
    Member m;
    m.first = std::make_unique<Client>(name, seed, next_conn_++);
    join(*m.first);
    m.second = std::make_unique<Client>(name, seed, next_conn_++);
    m.second->auth = crypto::Ed25519KeyPair::generate(rng_);
    EXPECT_EQ(link(*m.first, *m.second), 2u);
    login(*m.second);
    (void)m.first->conn->take();
    (void)m.second->conn->take();
    return m;
  }

  // A multi-send of `shared` to every device of each member, through the client library's
  // request builder (client/multi_send.h).
  static client::MultiSendMessage message(const std::string& id,
                                          const std::vector<const Member*>& to,
                                          const std::string& shared) {
    client::MultiSendMessage m;
    std::copy(id.begin(), id.end(), m.message_id.begin());
    m.timestamp = 4242;
    m.shared_content.assign(shared.begin(), shared.end());
    for (const Member* member : to) {
      client::MultiSendRecipient r;
      r.username = member->first->party.name;
      for (std::uint32_t d : {1u, 2u})
        r.devices.push_back({d, member->first->party.registration_id.value, std::nullopt, {}});
      m.recipients.push_back(std::move(r));
    }
    return m;
  }
  svc::Response multi(Client& from, const client::MultiSendMessage& m) {
    return call(from, client::multi_send_request(m));
  }

  // The envelopes pushed to `c` since last asked; acknowledged at once when `ack`.
  std::vector<svc::Envelope> envelopes(Client& c, bool ack = true) {
    std::vector<svc::Envelope> out;
    for (auto& f : c.conn->take()) {
      if (f.has_push() && f.push().has_envelope()) out.push_back(f.push().envelope());
    }
    if (ack && !out.empty()) {
      svc::Request r;
      for (const auto& e : out) r.mutable_ack()->add_envelope_ids(e.id());
      EXPECT_EQ(call(c, r).status().code(), svc::OK);
    }
    return out;
  }

  // Connects `c` again and logs in; returns (and acknowledges) what the server pushed it from its
  // queue.
  std::vector<svc::Envelope> reconnect(Client& c) {
    c.conn = std::make_shared<sotto::testing::LoopbackConnection>(next_conn_++);
    server_->on_open(c.conn, {});
    pushes_.clear();
    login(c);
    std::vector<svc::Envelope> out;
    for (const auto& p : std::exchange(pushes_, {})) {
      if (p.has_envelope()) out.push_back(p.envelope());
    }
    for (const auto& e : envelopes(c, false)) out.push_back(e);
    if (!out.empty()) {
      svc::Request r;
      for (const auto& e : out) r.mutable_ack()->add_envelope_ids(e.id());
      EXPECT_EQ(call(c, r).status().code(), svc::OK);
    }
    return out;
  }

  std::size_t stored_for(const Client& c) {
    auto account = store_->accounts().find_account(c.party.name);
    return store_->messages().count(account->id, c.device_id).value_or(999);
  }
  std::size_t stored_for(const Member& m) { return stored_for(*m.first) + stored_for(*m.second); }

  std::uint64_t next_conn_ = 1;
};

TEST_F(MultiSendTest, OneUploadReachesEveryDeviceOnceOnlineAtOnceOfflineWhenItConnects) {
  Member alice = member("alice", 1);
  std::vector<Member> group;
  std::vector<const Member*> to;
  for (int i = 0; i < 10; ++i) group.push_back(member("member" + std::to_string(i), 10 + i));
  for (const auto& m : group) to.push_back(&m);
  // Half the group is offline: both devices of members 5-9 close their connections.
  for (int i = 5; i < 10; ++i) {
    server_->on_close(group[i].first->conn);
    server_->on_close(group[i].second->conn);
  }
  const std::uint64_t bytes_before = store_->messages().stored_bytes();

  auto m = message(std::string(16, 'g'), to, "sender-key-ciphertext");
  m.recipients.push_back({"alice", {{2, alice.first->party.registration_id.value, {}, {}}}, false});
  const auto response = multi(*alice.first, m);
  ASSERT_EQ(response.status().code(), svc::OK) << response.status().message();
  EXPECT_GT(response.multi_send().server_timestamp(), 0u);
  // Stored once for the ten offline devices (the online ones have not acknowledged yet).
  EXPECT_EQ(store_->messages().stored_bytes(), bytes_before + 21);

  // The online devices have it already, and alice's other device its sync copy.
  for (int i = 0; i < 5; ++i) {
    for (Client* c : {group[i].first.get(), group[i].second.get()}) {
      const auto got = envelopes(*c);
      ASSERT_EQ(got.size(), 1u) << c->party.name << " device " << c->device_id;
      EXPECT_EQ(got[0].content(), "sender-key-ciphertext");
      EXPECT_EQ(got[0].type(), 4u);
      EXPECT_EQ(got[0].source(), "alice");
      EXPECT_EQ(got[0].source_device(), 1u);
      EXPECT_EQ(got[0].client_timestamp(), 4242u);
    }
    EXPECT_EQ(stored_for(group[i]), 0u);
  }
  ASSERT_EQ(envelopes(*alice.second).size(), 1u);
  EXPECT_TRUE(envelopes(*alice.first).empty()) << "not to the sending device itself";

  // The offline ones get it when they connect, once each.
  std::set<std::string> ids;
  for (int i = 5; i < 10; ++i) {
    for (Client* c : {group[i].first.get(), group[i].second.get()}) {
      EXPECT_EQ(stored_for(*c), 1u);
      const auto got = reconnect(*c);
      ASSERT_EQ(got.size(), 1u);
      EXPECT_EQ(got[0].content(), "sender-key-ciphertext");
      EXPECT_TRUE(ids.insert(got[0].id()).second) << "each device has an envelope of its own";
      EXPECT_EQ(stored_for(*c), 0u);
    }
  }
  // Every copy delivered: the shared body is gone with the last one.
  EXPECT_EQ(store_->messages().stored_bytes(), bytes_before);
  for (const auto& member : group) {
    EXPECT_TRUE(envelopes(*member.first).empty());
    EXPECT_TRUE(envelopes(*member.second).empty());
  }
}

TEST_F(MultiSendTest, ARetryWithTheSameIdIsStoredOnceAndAnsweredTheSame) {
  Member alice = member("alice", 1), bob = member("bob", 2), carol = member("carol", 3);
  server_->on_close(carol.first->conn);
  server_->on_close(carol.second->conn);
  const auto m = message(std::string(16, 'r'), {&bob, &carol}, "once");
  ASSERT_EQ(multi(*alice.first, m).status().code(), svc::OK);
  ASSERT_EQ(multi(*alice.first, m).status().code(), svc::OK);
  EXPECT_EQ(envelopes(*bob.first).size(), 1u);
  EXPECT_EQ(envelopes(*bob.second).size(), 1u);
  EXPECT_EQ(stored_for(carol), 2u);
  // Even once a recipient's device list has changed, the retry is answered as the original.
  auto third = std::make_unique<Client>("bob", 2, next_conn_++);
  third->auth = crypto::Ed25519KeyPair::generate(rng_);
  ASSERT_EQ(link(*bob.first, *third), 3u);
  const auto again = multi(*alice.first, m);
  EXPECT_EQ(again.status().code(), svc::OK);
  EXPECT_EQ(again.multi_send().mismatch_size(), 0);
  EXPECT_EQ(stored_for(carol), 2u);
  EXPECT_EQ(stored_for(*third), 0u);
  // The same id from another account is another send.
  ASSERT_EQ(multi(*bob.first, message(std::string(16, 'r'), {&carol}, "bob's")).status().code(),
            svc::OK);
  EXPECT_EQ(stored_for(carol), 4u);
}

TEST_F(MultiSendTest, AMismatchAnywhereRefusesTheWholeSendAndStoresNothing) {
  Member alice = member("alice", 1), bob = member("bob", 2), carol = member("carol", 3),
         dave = member("dave", 4);
  server_->on_close(dave.first->conn);
  server_->on_close(dave.second->conn);
  auto m = message(std::string(16, 'm'), {&bob, &carol, &dave}, "nope");
  m.recipients[0].devices.pop_back();                 // bob: device 2 missing
  m.recipients[1].devices.push_back({7, 1, {}, {}});  // carol: device 7 does not exist
  m.recipients[2].devices[0].registration_id += 1;    // dave: device 1 re-installed
  const auto response = multi(*alice.first, m);
  ASSERT_EQ(response.status().code(), svc::STALE_DEVICES);
  auto outcome = client::multi_send_outcome(response);
  ASSERT_TRUE(outcome.has_value());
  ASSERT_EQ(outcome->status, client::MultiSendOutcome::Status::stale_devices);
  ASSERT_EQ(outcome->mismatches.size(), 3u);
  EXPECT_EQ(outcome->mismatches[0].username, "bob");
  EXPECT_EQ(outcome->mismatches[0].missing, (std::vector<std::uint32_t>{2}));
  EXPECT_EQ(outcome->mismatches[1].username, "carol");
  EXPECT_EQ(outcome->mismatches[1].extra, (std::vector<std::uint32_t>{7}));
  EXPECT_EQ(outcome->mismatches[2].username, "dave");
  EXPECT_EQ(outcome->mismatches[2].stale, (std::vector<std::uint32_t>{1}));
  EXPECT_TRUE(envelopes(*bob.first).empty());
  EXPECT_TRUE(envelopes(*carol.first).empty());
  EXPECT_EQ(stored_for(dave), 0u);
  EXPECT_EQ(store_->messages().stored_bytes(), 0u);

  // Only the recipients concerned are reported; a subset leaves out devices on purpose.
  auto fixed = message(std::string(16, 'n'), {&bob, &carol}, "fine");
  fixed.recipients[0].devices.pop_back();
  fixed.recipients[0].device_subset = true;
  fixed.recipients[1].devices[1].registration_id = 99;
  const auto one = multi(*alice.first, fixed);
  ASSERT_EQ(one.status().code(), svc::STALE_DEVICES);
  ASSERT_EQ(one.multi_send().mismatch_size(), 1);
  EXPECT_EQ(one.multi_send().mismatch(0).username(), "carol");
  fixed.recipients[1].devices[1].registration_id = carol.first->party.registration_id.value;
  ASSERT_EQ(multi(*alice.first, fixed).status().code(), svc::OK);
  EXPECT_EQ(envelopes(*bob.first).size(), 1u);
  EXPECT_TRUE(envelopes(*bob.second).empty());
  EXPECT_EQ(envelopes(*carol.second).size(), 1u);
}

TEST_F(MultiSendTest, UnknownUsersAreNamedAndNothingIsStored) {
  Member alice = member("alice", 1), bob = member("bob", 2);
  auto m = message(std::string(16, 'u'), {&bob}, "hello");
  m.recipients.push_back({"nobody", {{1, 1, {}, {}}}, false});
  m.recipients.push_back({"Ghost", {{1, 1, {}, {}}}, false});
  const auto response = multi(*alice.first, m);
  ASSERT_EQ(response.status().code(), svc::NOT_FOUND);
  auto outcome = client::multi_send_outcome(response);
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->status, client::MultiSendOutcome::Status::unknown_users);
  EXPECT_EQ(outcome->unknown_users, (std::vector<std::string>{"nobody", "Ghost"}));
  EXPECT_TRUE(envelopes(*bob.first).empty());
  EXPECT_EQ(stored_for(bob), 0u);
}

TEST_F(MultiSendTest, ARecipientWhoBlockedTheSenderSilentlyGetsNothing) {
  Member alice = member("alice", 1), bob = member("bob", 2), carol = member("carol", 3);
  svc::Request block;
  block.mutable_block()->set_username("alice");
  ASSERT_EQ(call(*carol.first, block).status().code(), svc::OK);
  server_->on_close(carol.second->conn);
  const auto response = multi(*alice.first, message(std::string(16, 'b'), {&bob, &carol}, "hi"));
  ASSERT_EQ(response.status().code(), svc::OK) << "the sender is not told";
  EXPECT_EQ(envelopes(*bob.first).size(), 1u);
  EXPECT_EQ(envelopes(*bob.second).size(), 1u);
  EXPECT_TRUE(envelopes(*carol.first).empty());
  EXPECT_EQ(stored_for(carol), 0u);
  // Only carol blocked: a send to her alone stores nothing at all, and is answered OK.
  const auto alone = multi(*alice.first, message(std::string(16, 'c'), {&carol}, "hi"));
  EXPECT_EQ(alone.status().code(), svc::OK);
  EXPECT_EQ(stored_for(carol), 0u);
  EXPECT_EQ(store_->messages().stored_bytes(), 0u);
}

TEST_F(MultiSendTest, ADeviceWithContentOfItsOwnGetsThatInstead) {
  Member alice = member("alice", 1), bob = member("bob", 2), carol = member("carol", 3);
  server_->on_close(carol.first->conn);
  server_->on_close(carol.second->conn);
  auto m = message(std::string(16, 'o'), {&bob, &carol}, "shared");
  m.recipients[0].devices[1].type = 3;
  m.recipients[0].devices[1].content = {'d', 'i', 's', 't'};  // a Sender Key distribution
  m.recipients[1].devices[0].type = 2;
  m.recipients[1].devices[0].content = {'o', 'w', 'n'};
  ASSERT_EQ(multi(*alice.first, m).status().code(), svc::OK);
  // The shared body once (6) and the two own contents (4 and 3): nothing acknowledged yet.
  EXPECT_EQ(store_->messages().stored_bytes(), 13u);
  const auto b1 = envelopes(*bob.first);
  const auto b2 = envelopes(*bob.second);
  ASSERT_EQ(b1.size(), 1u);
  ASSERT_EQ(b2.size(), 1u);
  EXPECT_EQ(b1[0].content(), "shared");
  EXPECT_EQ(b1[0].type(), 4u);
  EXPECT_EQ(b2[0].content(), "dist");
  EXPECT_EQ(b2[0].type(), 3u);
  std::map<std::uint32_t, svc::Envelope> carols;
  for (Client* c : {carol.first.get(), carol.second.get()}) {
    const auto got = reconnect(*c);
    ASSERT_EQ(got.size(), 1u);
    carols[c->device_id] = got[0];
  }
  EXPECT_EQ(carols[1].content(), "own");
  EXPECT_EQ(carols[1].type(), 2u);
  EXPECT_EQ(carols[2].content(), "shared");
  EXPECT_EQ(store_->messages().stored_bytes(), 0u);
}

TEST_F(MultiSendTest, AMalformedRequestIsRefusedBeforeAnyLookup) {
  Member alice = member("alice", 1), bob = member("bob", 2);
  const auto code = [&](const client::MultiSendMessage& m) {
    svc::Request r = client::multi_send_request(m);
    return call(*alice.first, r).status().code();
  };
  auto good = message(std::string(16, 'x'), {&bob}, "x");
  {
    svc::Request r = client::multi_send_request(good);
    r.mutable_multi_send()->set_client_message_id("short");
    EXPECT_EQ(call(*alice.first, r).status().code(), svc::BAD_REQUEST);
  }
  auto empty = good;
  empty.recipients.clear();
  EXPECT_EQ(code(empty), svc::BAD_REQUEST);
  auto twice = good;
  twice.recipients.push_back(twice.recipients[0]);
  twice.recipients[1].username = "BOB";  // the same user in another case
  EXPECT_EQ(code(twice), svc::BAD_REQUEST);
  auto device_twice = good;
  device_twice.recipients[0].devices.push_back(device_twice.recipients[0].devices[0]);
  EXPECT_EQ(code(device_twice), svc::BAD_REQUEST);
  auto no_devices = good;
  no_devices.recipients[0].devices.clear();
  EXPECT_EQ(code(no_devices), svc::BAD_REQUEST);
  auto wrong_type = good;
  wrong_type.shared_type = 2;
  EXPECT_EQ(code(wrong_type), svc::BAD_REQUEST);
  auto no_shared = good;
  no_shared.shared_content.clear();
  EXPECT_EQ(code(no_shared), svc::BAD_REQUEST);
  auto too_large = good;
  too_large.shared_content.assign(ServerConfig{}.max_message_bytes + 1, 'z');
  EXPECT_EQ(code(too_large), svc::TOO_LARGE);
  auto bad_name = good;
  bad_name.recipients[0].username = "no spaces";
  EXPECT_EQ(code(bad_name), svc::BAD_REQUEST);
  auto too_many = good;
  for (std::size_t i = 0; i < kMaxMultiSendRecipients; ++i)
    too_many.recipients.push_back({"user" + std::to_string(i), {{1, 1, {}, {}}}, false});
  EXPECT_EQ(code(too_many), svc::BAD_REQUEST);
  EXPECT_TRUE(envelopes(*bob.first).empty());
  EXPECT_EQ(stored_for(bob), 0u);
  // And the well-formed one goes through.
  EXPECT_EQ(code(good), svc::OK);
  EXPECT_EQ(envelopes(*bob.first).size(), 1u);
}

TEST(MultiSendCostTest, OneSendTokenPer64EnvelopesAndEveryDevicesBytes) {
  svc::MultiSendRequest req;
  req.set_shared_content("xyz");
  auto* bob = req.add_recipients();
  bob->set_username("bob");
  bob->add_devices()->set_device_id(1);
  const MultiSendCost one = multi_send_cost(req);
  EXPECT_EQ(one.send_tokens, 1u);
  EXPECT_EQ(one.bytes, 3u);
  for (int i = 0; i < 1000; ++i) {
    auto* r = req.add_recipients();
    r->set_username("user" + std::to_string(i));
    r->add_devices()->set_device_id(1);
    auto* own = r->add_devices();
    own->set_device_id(2);
    own->set_content("12345");  // its own content counts instead of the shared one
  }
  const MultiSendCost big = multi_send_cost(req);
  EXPECT_EQ(big.send_tokens, (2001u + 63) / 64);
  EXPECT_EQ(big.bytes, 3u + 1000 * (3 + 5));
}

// The bucket refills one token a minute here, far slower than the test runs.
class MultiSendRateTest : public MultiSendTest {
 protected:
  ServerConfig config() const override {
    ServerConfig c = MultiSendTest::config();
    c.sends_per_minute = 1;  // a burst of 10
    return c;
  }
};

TEST_F(MultiSendRateTest, AGroupSendPaysPerEnvelopeBeforeAnythingIsLookedUp) {
  Member alice = member("alice", 1), bob = member("bob", 2);
  client::MultiSendMessage big = message(std::string(16, 'q'), {&bob}, "x");
  for (int i = 0; i < 1000; ++i)
    big.recipients.push_back({"user" + std::to_string(i), {{1, 1, {}, {}}, {2, 1, {}, {}}}, false});
  // 32 tokens, more than the burst: a full bucket lets it through (and is emptied); it is then
  // refused for its unknown users.
  EXPECT_EQ(multi(*alice.first, big).status().code(), svc::NOT_FOUND);
  big.message_id[0] = 1;
  const auto limited = multi(*alice.first, big);
  EXPECT_EQ(limited.status().code(), svc::RATE_LIMITED);
  EXPECT_GT(limited.status().retry_after_ms(), 0u);
  // The bucket is the one 1:1 sends use: a small group send waits too.
  EXPECT_EQ(multi(*alice.first, message(std::string(16, 's'), {&bob}, "x")).status().code(),
            svc::RATE_LIMITED);
  EXPECT_EQ(stored_for(bob), 0u);
}

TEST_F(MultiSendTest, ARetrySentBeforeTheAnswerIsAnsweredWithTheOriginalAndPushedOnce) {
  Member alice = member("alice", 1), bob = member("bob", 2);
  const auto m = message(std::string(16, 'p'), {&bob}, "pipelined");
  // The retry follows the original without waiting for its answer (a client that reconnected):
  // whether it finds the send under way or already stored, it is not pushed again.
  const std::uint64_t first = submit(*alice.first, client::multi_send_request(m));
  const std::uint64_t second = submit(*alice.first, client::multi_send_request(m));
  store_->messages().flush();
  std::set<std::uint64_t> answered;
  for (auto& f : alice.first->conn->take()) {
    if (!f.has_response()) continue;
    EXPECT_EQ(f.response().status().code(), svc::OK);
    answered.insert(f.response().id());
  }
  EXPECT_EQ(answered, (std::set<std::uint64_t>{first, second}));
  EXPECT_EQ(envelopes(*bob.first).size(), 1u);
  EXPECT_EQ(envelopes(*bob.second).size(), 1u);
}

// Queues of two envelopes per device: a full one is easy to make.
class MultiSendFullQueueTest : public MultiSendTest {
 protected:
  void store_options(store::SqliteOptions& options) const override {
    options.max_queue_per_device = 2;
  }
};

TEST_F(MultiSendFullQueueTest, AFullDeviceIsLeftOutAndNamedWhileEveryoneElseGetsTheMessage) {
  Member alice = member("alice", 1), bob = member("bob", 2), carol = member("carol", 3);
  server_->on_close(carol.first->conn);
  server_->on_close(carol.second->conn);
  // Carol's first device is away and its queue full; her second drained its queue.
  for (char c : {'1', '2'}) {
    ASSERT_EQ(multi(*alice.first, message(std::string(16, c), {&carol}, "old")).status().code(),
              svc::OK);
  }
  ASSERT_EQ(reconnect(*carol.second).size(), 2u);
  ASSERT_EQ(stored_for(*carol.first), 2u);

  auto m = message(std::string(16, 'f'), {&bob, &carol}, "group message");
  // A client that does not ask for it (an older one, which would never send to the full device
  // again) gets the send refused as a whole, as before: nothing stored, nobody pushed.
  const auto whole = multi(*alice.first, m);
  EXPECT_EQ(whole.status().code(), svc::QUEUE_FULL);
  EXPECT_EQ(stored_for(*carol.second), 0u);
  EXPECT_EQ(stored_for(bob), 0u);
  (void)envelopes(*bob.first);  // (pushed before the commit that then failed: section 2's case)
  (void)envelopes(*bob.second);
  (void)envelopes(*carol.second);

  m.message_id.fill('F');
  m.leave_out_full = true;
  const auto response = multi(*alice.first, m);
  ASSERT_EQ(response.status().code(), svc::OK) << response.status().message();
  ASSERT_EQ(response.multi_send().queue_full_size(), 1);
  EXPECT_EQ(response.multi_send().queue_full(0).username(), "carol");
  ASSERT_EQ(response.multi_send().queue_full(0).device_ids_size(), 1);
  EXPECT_EQ(response.multi_send().queue_full(0).device_ids(0), 1u);
  // Everyone else has it, once: bob's two devices, carol's second.
  EXPECT_EQ(envelopes(*bob.first).size(), 1u);
  EXPECT_EQ(envelopes(*bob.second).size(), 1u);
  const auto carols = envelopes(*carol.second);
  ASSERT_EQ(carols.size(), 1u);
  EXPECT_EQ(carols[0].content(), "group message");
  EXPECT_EQ(stored_for(*carol.first), 2u) << "nothing stored for the full device";

  // A retry of the same send (its answer lost) is answered with the same list and pushes nothing.
  const auto retry = multi(*alice.first, m);
  ASSERT_EQ(retry.status().code(), svc::OK);
  ASSERT_EQ(retry.multi_send().queue_full_size(), 1);
  EXPECT_EQ(retry.multi_send().queue_full(0).username(), "carol");
  EXPECT_EQ(retry.multi_send().queue_full(0).device_ids_size(), 1);
  EXPECT_TRUE(envelopes(*bob.first).empty());
  EXPECT_TRUE(envelopes(*bob.second).empty());
  EXPECT_TRUE(envelopes(*carol.second).empty());
  EXPECT_EQ(stored_for(*carol.first), 2u);

  // The client reads the list and sends to that device alone, later, under a new id.
  auto outcome = client::multi_send_outcome(response);
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->status, client::MultiSendOutcome::Status::stored);
  ASSERT_EQ(outcome->queue_full.size(), 1u);
  std::array<std::uint8_t, 16> again_id{};
  again_id.fill('g');
  const auto again = client::resend_to_full(m, *outcome, again_id);
  ASSERT_EQ(again.recipients.size(), 1u);
  EXPECT_EQ(again.recipients[0].username, "carol");
  EXPECT_TRUE(again.recipients[0].device_subset);
  ASSERT_EQ(again.recipients[0].devices.size(), 1u);
  EXPECT_EQ(again.recipients[0].devices[0].device_id, 1u);
  // Still full: left out again, nothing stored, nobody else pushed.
  const auto still = multi(*alice.first, again);
  ASSERT_EQ(still.status().code(), svc::OK);
  EXPECT_EQ(still.multi_send().queue_full_size(), 1);
  // Once the device has drained its queue, the resend (under yet another id) reaches it, once.
  ASSERT_EQ(reconnect(*carol.first).size(), 2u);
  again_id.fill('h');
  const auto delivered = multi(*alice.first, client::resend_to_full(m, *outcome, again_id));
  ASSERT_EQ(delivered.status().code(), svc::OK);
  EXPECT_EQ(delivered.multi_send().queue_full_size(), 0);
  const auto got = envelopes(*carol.first);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].content(), "group message");
  EXPECT_EQ(got[0].client_timestamp(), 4242u) << "the same message: shown once";
  EXPECT_TRUE(envelopes(*carol.second).empty());
  EXPECT_TRUE(envelopes(*bob.first).empty());
}

TEST(MultiSendOutcomeTest, AnAnswerWithFullDevicesIsStoredAndListsThem) {
  svc::Response r;
  r.mutable_status()->set_code(svc::OK);
  auto* full = r.mutable_multi_send()->add_queue_full();
  full->set_username("dave");
  full->add_device_ids(3);
  full->set_sender_share(true);
  r.mutable_multi_send()->add_queue_full()->set_username("nobody");  // no devices: ignored
  const auto outcome = client::multi_send_outcome(r);
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->status, client::MultiSendOutcome::Status::stored);
  ASSERT_EQ(outcome->queue_full.size(), 1u);
  EXPECT_EQ(outcome->queue_full[0].username, "dave");
  EXPECT_EQ(outcome->queue_full[0].device_ids, std::vector<std::uint32_t>{3});
  EXPECT_TRUE(outcome->queue_full[0].sender_share);
}

}  // namespace
}  // namespace sotto::server
