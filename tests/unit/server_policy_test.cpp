// Per-account limits in the request handlers (issue 16; the process-level tests are in
// tests/e2e/server_limits_test.cpp): what they spare the store.
#include <gtest/gtest.h>

#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Client;
using sotto::testing::str;

class PolicyTest : public sotto::testing::ServerHarness {
 protected:
  static svc::Request send_to(const Client& to, char id, const std::string& content) {
    svc::Request r;
    auto* sr = r.mutable_send();
    sr->set_recipient(to.party.name);
    sr->set_client_message_id(std::string(16, id));
    sr->set_timestamp(1234);
    auto* m = sr->add_messages();
    m->set_destination(to.party.name);
    m->set_device_id(1);
    m->set_registration_id(to.party.registration_id.value);
    m->set_type(1);
    m->set_content(content);
    return r;
  }
  std::size_t stored_for(const Client& c) {
    auto account = store_->accounts().find_account(c.party.name);
    return store_->messages().count(account->id, c.device_id).value_or(999);
  }
};

// An acknowledgement of ids the connection was never given (random ids, another device's) is
// answered without any store write: a flood of them cannot hold the shared writer. The id that
// was pushed is deleted as before.
TEST_F(PolicyTest, AcknowledgingIdsNeverPushedToTheConnectionWritesNothing) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  ASSERT_EQ(call(alice, send_to(bob, 'a', "for bob")).status().code(), svc::OK);
  std::string pushed;
  for (const auto& f : bob.conn->take()) {
    if (f.has_push() && f.push().has_envelope()) pushed = f.push().envelope().id();
  }
  ASSERT_FALSE(pushed.empty());
  ASSERT_EQ(stored_for(bob), 1u);

  const std::uint64_t commits = store_->commit_count();
  svc::Request flood;
  for (int i = 0; i < 4096; ++i) {
    std::array<std::uint8_t, 16> id{};
    rng_.fill(id);
    flood.mutable_ack()->add_envelope_ids(str(id));
  }
  EXPECT_EQ(call(bob, flood).status().code(), svc::OK);
  // Alice cannot delete bob's envelope by its id either (nor does she cost a write trying).
  svc::Request steal;
  steal.mutable_ack()->add_envelope_ids(pushed);
  EXPECT_EQ(call(alice, steal).status().code(), svc::OK);
  EXPECT_EQ(store_->commit_count(), commits);
  EXPECT_EQ(stored_for(bob), 1u);

  EXPECT_EQ(call(bob, steal).status().code(), svc::OK);
  EXPECT_GT(store_->commit_count(), commits);
  EXPECT_EQ(stored_for(bob), 0u);
  EXPECT_EQ(metrics_.stored_bytes.load(), 0);
}

// The acknowledgement bucket counts ids, not requests, and its refusal says when to retry.
TEST_F(PolicyTest, TheAcknowledgementBucketCountsIdsAndTellsWhenToRetry) {
  ServerConfig c = config();
  c.acks_per_minute = 600;  // 10 ids a second, 120 at once
  server_ = make_server(metrics_, c);
  Client bob("bob", 2, 2);
  join(bob);
  svc::Request ack;
  for (int i = 0; i < 100; ++i) ack.mutable_ack()->add_envelope_ids(std::string(16, 'x'));
  EXPECT_EQ(call(bob, ack).status().code(), svc::OK);
  const auto refused = call(bob, ack);
  EXPECT_EQ(refused.status().code(), svc::RATE_LIMITED);
  EXPECT_GE(refused.status().retry_after_ms(), 7000u);  // 80 ids missing at 10 a second
  EXPECT_LE(refused.status().retry_after_ms(), 8000u);
  EXPECT_EQ(metrics_.rate_limited.load(), 1u);
}

// The bucket counts only ids the connection was never given: once a flood has emptied it, the
// acknowledgement of an envelope that was pushed still deletes it (refused, it would stay in
// flight on this connection for good, holding one of the device's delivery slots).
TEST_F(PolicyTest, AnEmptiedAcknowledgementBucketStillTakesThePushedIds) {
  ServerConfig c = config();
  c.acks_per_minute = 600;  // 10 ids a second, 120 at once
  server_ = make_server(metrics_, c);
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  svc::Request junk;
  for (int i = 0; i < 120; ++i) junk.mutable_ack()->add_envelope_ids(std::string(16, 'x'));
  ASSERT_EQ(call(bob, junk).status().code(), svc::OK);
  ASSERT_EQ(call(bob, junk).status().code(), svc::RATE_LIMITED);

  ASSERT_EQ(call(alice, send_to(bob, 'a', "for bob")).status().code(), svc::OK);
  std::string pushed;
  for (const auto& f : bob.conn->take()) {
    if (f.has_push() && f.push().has_envelope()) pushed = f.push().envelope().id();
  }
  ASSERT_FALSE(pushed.empty());
  svc::Request ack;
  ack.mutable_ack()->add_envelope_ids(pushed);
  ack.mutable_ack()->add_envelope_ids(std::string(16, 'y'));  // with one it was never given
  EXPECT_EQ(call(bob, ack).status().code(), svc::OK);
  EXPECT_EQ(stored_for(bob), 0u);
}

// Over the storage budget a send is refused with UNAVAILABLE and a hint; the account's own
// buckets are not what refused it.
TEST_F(PolicyTest, ASendOverTheStorageBudgetIsUnavailableAndStoresNothing) {
  ServerConfig c = config();
  c.max_stored_bytes = 100;
  server_ = make_server(metrics_, c);
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  ASSERT_EQ(call(alice, send_to(bob, 'a', std::string(60, 'x'))).status().code(), svc::OK);
  EXPECT_EQ(metrics_.stored_bytes.load(), 60);
  // A retry of the stored send (its answer lost) is still answered as stored, not refused.
  EXPECT_EQ(call(alice, send_to(bob, 'a', std::string(60, 'x'))).status().code(), svc::OK);
  const auto refused = call(alice, send_to(bob, 'b', std::string(60, 'y')));
  EXPECT_EQ(refused.status().code(), svc::UNAVAILABLE);
  EXPECT_NE(refused.status().message().find("storage is full"), std::string::npos);
  EXPECT_GT(refused.status().retry_after_ms(), 0u);
  EXPECT_EQ(call(alice, send_to(bob, 'c', std::string(40, 'z'))).status().code(), svc::OK);
  EXPECT_EQ(stored_for(bob), 2u);
  EXPECT_EQ(metrics_.storage_refusals.load(), 1u);
}

// Link tokens (a database row each) and provisioning addresses and messages have buckets of
// their own: per account, and per source address before login.
TEST_F(PolicyTest, LinkTokensAndProvisioningAreRateLimited) {
  ServerConfig c = config();
  c.link_tokens_per_hour = 20;     // 5 at once
  c.provisioning_per_minute = 30;  // 10 at once
  server_ = make_server(metrics_, c);
  Client alice("alice", 1, 1);
  join(alice);
  svc::Request token;
  token.mutable_link_token();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(call(alice, token).status().code(), svc::OK) << i;
  const auto refused = call(alice, token);
  EXPECT_EQ(refused.status().code(), svc::RATE_LIMITED);
  EXPECT_GT(refused.status().retry_after_ms(), 60'000u);  // 3 minutes a token

  Client newcomer("newcomer", 3, 3);
  server_->on_open(newcomer.conn, {});
  svc::Request open;
  open.mutable_provisioning_open();
  std::string address;
  for (int i = 0; i < 10; ++i) {
    const auto r = call(newcomer, open);
    ASSERT_EQ(r.status().code(), svc::OK) << i;
    address = r.provisioning_open().address();
  }
  EXPECT_EQ(call(newcomer, open).status().code(), svc::RATE_LIMITED);
  svc::Request send;
  send.mutable_provisioning_send()->set_address(address);
  send.mutable_provisioning_send()->set_ciphertext("sealed");
  for (int i = 0; i < 10; ++i) EXPECT_EQ(call(alice, send).status().code(), svc::OK) << i;
  EXPECT_EQ(call(alice, send).status().code(), svc::RATE_LIMITED);
}

}  // namespace
}  // namespace sotto::server
