// The multi-recipient send (service.proto MultiSendRequest) against a real sotto-server process,
// over TLS WebSocket: one upload to 10 recipients with 2 devices each reaches every device exactly
// once, the online ones at once and the offline ones when they connect, across a kill -9 right
// after the sender's answer (an answered send is durable); a retry is stored once; a device-list
// mismatch and an unknown user are refused with nothing stored; a recipient who blocked the sender
// silently gets nothing. "Nothing stored" is read from the server's own SQLite file.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "util/server_harness.h"
#include "util/server_process.h"

#ifndef SOTTO_SERVER_BIN
#error "SOTTO_SERVER_BIN must name the sotto-server binary"
#endif

namespace sotto {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Party;
using sotto::testing::RawClient;
using sotto::testing::read_text;
using sotto::testing::ServerProcess;

// One account with two devices (1 and 2): the same party, an auth key per device.
struct Member {
  Party party;
  crypto::Ed25519KeyPair auth1;
  crypto::Ed25519KeyPair auth2;
  Member(const std::string& name, std::uint64_t seed)
      : party(name, 1, seed),
        auth1(crypto::Ed25519KeyPair::generate(party.rng)),
        auth2(crypto::Ed25519KeyPair::generate(party.rng)) {}
  const crypto::Ed25519KeyPair& auth(std::uint32_t device) const {
    return device == 1 ? auth1 : auth2;
  }
};

class MultiSendProcessTest : public ::testing::Test {
 protected:
  MultiSendProcessTest() : server_(false) {}

  void SetUp() override { start(); }

  void start() {
    const auto config = server_.root() / "multi.toml";
    std::ofstream(config) << "registrations_per_minute = 10000\n";
    ASSERT_TRUE(server_.start(std::vector<std::string>{"--data", server_.dir().string(), "--listen",
                                                       "127.0.0.1:0", "--http", "127.0.0.1:0",
                                                       "--config", config.string()}))
        << read_text(server_.log_path());
  }

  static void login(RawClient& c, const Member& m, std::uint32_t device) {
    svc::Request ch;
    ch.mutable_challenge();
    const std::string nonce = c.call(ch).challenge().nonce();
    auto r = c.call(sotto::testing::authenticate(m.party.name, device, m.auth(device), nonce));
    ASSERT_EQ(r.status().code(), svc::OK) << r.status().message();
  }

  // Registers the member with device 1 and links device 2; returns both logged in.
  std::pair<std::unique_ptr<RawClient>, std::unique_ptr<RawClient>> join(Member& m) {
    auto first = std::make_unique<RawClient>(server_);
    EXPECT_EQ(first->call(sotto::testing::register_request(m.party, m.auth1)).status().code(),
              svc::OK);
    login(*first, m, 1);
    svc::Request token;
    token.mutable_link_token();
    const std::string t = first->call(token).link_token().token();
    auto second = std::make_unique<RawClient>(server_);
    svc::Request link;
    link.mutable_link_device()->set_username(m.party.name);
    link.mutable_link_device()->set_token(t);
    *link.mutable_link_device()->mutable_device() =
        sotto::testing::make_new_device(m.party, m.auth2);
    const auto linked = second->call(link);
    EXPECT_EQ(linked.status().code(), svc::OK) << linked.status().message();
    EXPECT_EQ(linked.link_device().device_id(), 2u);
    login(*second, m, 2);
    return {std::move(first), std::move(second)};
  }

  static svc::Request multi_send(const std::string& id, const std::vector<const Member*>& to,
                                 const std::string& shared) {
    svc::Request r;
    auto* m = r.mutable_multi_send();
    m->set_client_message_id(id);
    m->set_timestamp(777);
    m->set_shared_type(4);
    m->set_shared_content(shared);
    for (const Member* member : to) {
      auto* rec = m->add_recipients();
      rec->set_username(member->party.name);
      for (std::uint32_t d : {1u, 2u}) {
        auto* dev = rec->add_devices();
        dev->set_device_id(d);
        dev->set_registration_id(member->party.registration_id.value);
      }
    }
    return r;
  }

  // What the server pushed `c` once its queue was drained (QueueDrained), acknowledged.
  static std::vector<svc::Envelope> drained(RawClient& c) {
    EXPECT_TRUE(c.wait_push([](const svc::Push& p) { return p.has_queue_drained(); }).has_value());
    auto got = c.envelopes(0);
    if (!got.empty()) {
      svc::Request ack;
      for (const auto& e : got) ack.mutable_ack()->add_envelope_ids(e.id());
      EXPECT_EQ(c.call(ack).status().code(), svc::OK);
    }
    return got;
  }

  ServerProcess server_;
};

TEST_F(MultiSendProcessTest, TenRecipientsTimesTwoDevicesGetItOnceAcrossAKillDashNine) {
  Member alice("alice", 1);
  auto [a1, a2] = join(alice);
  std::vector<std::unique_ptr<Member>> group;
  std::vector<const Member*> to;
  std::vector<std::unique_ptr<RawClient>> online;
  for (int i = 0; i < 10; ++i) {
    group.push_back(std::make_unique<Member>("member" + std::to_string(i), 10 + i));
    to.push_back(group.back().get());
    auto [d1, d2] = join(*group.back());
    if (i < 5) {  // members 0-4 stay online; 5-9 disconnect (offline)
      (void)drained(*d1);
      (void)drained(*d2);
      online.push_back(std::move(d1));
      online.push_back(std::move(d2));
    }
  }
  const auto before = server_.row_counts();

  // A mismatch anywhere (member 3 lists device 2 only; member 7 a device that does not exist):
  // refused, with one DeviceMismatch per recipient concerned, and nothing stored.
  auto stale = multi_send(std::string(16, 's'), to, "never");
  stale.mutable_multi_send()->mutable_recipients(3)->mutable_devices()->DeleteSubrange(0, 1);
  stale.mutable_multi_send()->mutable_recipients(7)->add_devices()->set_device_id(9);
  const auto refused = a1->call(stale);
  ASSERT_EQ(refused.status().code(), svc::STALE_DEVICES);
  ASSERT_EQ(refused.multi_send().mismatch_size(), 2);
  EXPECT_EQ(refused.multi_send().mismatch(0).username(), "member3");
  EXPECT_EQ(refused.multi_send().mismatch(0).missing(0), 1u);
  EXPECT_EQ(refused.multi_send().mismatch(1).username(), "member7");
  EXPECT_EQ(refused.multi_send().mismatch(1).extra(0), 9u);
  // An unknown user: named, and nothing stored.
  auto unknown = multi_send(std::string(16, 'u'), to, "never");
  auto* ghost = unknown.mutable_multi_send()->add_recipients();
  ghost->set_username("ghost");
  ghost->add_devices()->set_device_id(1);
  const auto not_found = a1->call(unknown);
  ASSERT_EQ(not_found.status().code(), svc::NOT_FOUND);
  ASSERT_EQ(not_found.multi_send().unknown_users_size(), 1);
  EXPECT_EQ(not_found.multi_send().unknown_users(0), "ghost");
  EXPECT_EQ(server_.row_counts(), before);

  // The real one, and its retry (the answer "lost"): stored once.
  const auto request = multi_send(std::string(16, 'g'), to, "group-ciphertext");
  ASSERT_EQ(a1->call(request).status().code(), svc::OK);
  ASSERT_EQ(a1->call(request).status().code(), svc::OK);
  for (auto& c : online) {
    const auto got = c->envelopes(1);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].content(), "group-ciphertext");
    EXPECT_EQ(got[0].type(), 4u);
    EXPECT_EQ(got[0].source(), "alice");
    svc::Request ack;
    ack.mutable_ack()->add_envelope_ids(got[0].id());
    // Answered once the deletion is durable.
    EXPECT_EQ(c->call(ack).status().code(), svc::OK);
    EXPECT_EQ(c->envelopes(0).size(), 1u) << "the retry pushed nothing more";
  }
  auto counts = server_.row_counts();
  EXPECT_EQ(counts["messages"], before.at("messages") + 10) << "the ten offline devices' copies";
  EXPECT_EQ(counts["shared_bodies"], 1) << "one body for all of them";

  // kill -9 right after every answer: nothing answered is lost.
  online.clear();
  a1.reset();
  a2.reset();
  server_.signal(SIGKILL);
  server_.stop();
  start();

  std::set<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    for (std::uint32_t device : {1u, 2u}) {
      RawClient c(server_);
      login(c, *group[static_cast<std::size_t>(i)], device);
      const auto got = drained(c);
      if (i < 5) {
        EXPECT_TRUE(got.empty()) << "member" << i << " acknowledged it before the kill";
        continue;
      }
      ASSERT_EQ(got.size(), 1u) << "member" << i << " device " << device;
      EXPECT_EQ(got[0].content(), "group-ciphertext");
      EXPECT_EQ(got[0].client_timestamp(), 777u);
      EXPECT_TRUE(ids.insert(got[0].id()).second);
    }
  }
  EXPECT_EQ(ids.size(), 10u);
  counts = server_.row_counts();
  EXPECT_EQ(counts["messages"], before.at("messages"));
  EXPECT_EQ(counts["shared_bodies"], 0) << "gone with its last envelope";
}

TEST_F(MultiSendProcessTest, ARecipientWhoBlockedTheSenderSilentlyGetsNothing) {
  Member alice("alice", 1), bob("bob", 2), carol("carol", 3);
  auto [a1, a2] = join(alice);
  auto [b1, b2] = join(bob);
  auto [c1, c2] = join(carol);
  for (RawClient* c : {b1.get(), b2.get(), c1.get(), c2.get()}) (void)drained(*c);
  svc::Request block;
  block.mutable_block()->set_username("alice");
  ASSERT_EQ(c1->call(block).status().code(), svc::OK);
  const auto before = server_.row_counts();
  c1.reset();
  c2.reset();  // carol offline: anything for her would be stored
  const auto r = a1->call(multi_send(std::string(16, 'b'), {&bob, &carol}, "hello"));
  ASSERT_EQ(r.status().code(), svc::OK) << "the sender is not told";
  EXPECT_EQ(b1->envelopes(1).size(), 1u);
  EXPECT_EQ(b2->envelopes(1).size(), 1u);
  RawClient again(server_);
  login(again, carol, 1);
  EXPECT_TRUE(drained(again).empty());
  // Only bob's two copies (not yet acknowledged) and one body.
  auto counts = server_.row_counts();
  EXPECT_EQ(counts["messages"], before.at("messages") + 2);
  EXPECT_EQ(counts["shared_bodies"], 1);
}

}  // namespace
}  // namespace sotto
