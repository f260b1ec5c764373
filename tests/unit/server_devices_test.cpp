// Devices and keys through the real request handlers and store: device names, the primary
// device, DevicesChanged pushes, identity keys without a prekey, prekey replacement, sends to
// some devices only, the queue-depth gauge across a restart, and the server's next-key
// announcement after a login.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "net/device_authorization.h"
#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Client;
using sotto::testing::str;

class DevicesTest : public sotto::testing::ServerHarness {
 protected:
  // Registrations and links share a per-address limit; these tests make many from one address.
  ServerConfig config() const override {
    ServerConfig c;
    c.registrations_per_minute = 100000;
    return c;
  }

  // Another device of the account that Client(name, seed, ...) registered: the same party (the
  // identity key), an auth key of its own.
  std::unique_ptr<Client> another_device(const Client& c, std::uint64_t seed,
                                         std::uint64_t conn_id) {
    auto d = std::make_unique<Client>(c.party.name, seed, conn_id);
    d->auth = crypto::Ed25519KeyPair::generate(rng_);
    return d;
  }

  // The pushes a client has been sent since last asked, responses dropped.
  static std::vector<svc::Push> pushes_to(Client& c) {
    std::vector<svc::Push> out;
    for (auto& f : c.conn->take()) {
      if (f.has_push()) out.push_back(f.push());
    }
    return out;
  }
  static int devices_changed(const std::vector<svc::Push>& pushes) {
    int n = 0;
    for (const auto& p : pushes) n += p.has_devices_changed();
    return n;
  }

  svc::ListDevicesResponse list(Client& c, const std::string& username = {}) {
    svc::Request r;
    r.mutable_list_devices()->set_username(username);
    auto response = call(c, r);
    EXPECT_EQ(response.status().code(), svc::OK) << response.status().message();
    return response.list_devices();
  }

  svc::Request send_request(const std::string& to, const std::string& client_message_id,
                            const std::vector<std::pair<std::uint32_t, std::uint32_t>>& devices,
                            bool subset, std::uint32_t type = 1) {
    svc::Request r;
    auto* sr = r.mutable_send();
    sr->set_recipient(to);
    sr->set_client_message_id(client_message_id);
    sr->set_device_subset(subset);
    for (const auto& [device, registration] : devices) {
      auto* m = sr->add_messages();
      m->set_destination(to);
      m->set_device_id(device);
      m->set_registration_id(registration);
      m->set_type(type);
      m->set_content("ciphertext");
    }
    return r;
  }
};

// --- device names -------------------------------------------------------------------------------

TEST_F(DevicesTest, DeviceNamesAreKeptAndListedToTheAccountsOwnDevicesOnly) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  server_->on_open(alice.conn, {});
  auto reg = sotto::testing::register_request(alice.party, alice.auth);
  reg.mutable_register_()->mutable_device()->set_name(std::string(256, '\x81'));
  ASSERT_EQ(call(alice, reg).status().code(), svc::OK);
  login(alice);
  join(bob);
  auto laptop = another_device(alice, 1, 3);
  ASSERT_EQ(link(alice, *laptop, "encrypted laptop"), 2u);

  const auto own = list(alice);
  ASSERT_EQ(own.devices_size(), 2);
  EXPECT_EQ(own.devices(0).name(), std::string(256, '\x81'));
  EXPECT_EQ(own.devices(1).name(), "encrypted laptop");
  EXPECT_EQ(list(alice, "alice").devices(1).name(), "encrypted laptop");  // named explicitly
  // Other users see the devices but not their names (which only the account can decrypt).
  const auto seen = list(bob, "alice");
  ASSERT_EQ(seen.devices_size(), 2);
  EXPECT_TRUE(seen.devices(0).name().empty());
  EXPECT_TRUE(seen.devices(1).name().empty());
}

TEST_F(DevicesTest, ANameAboveTheLimitIsRefusedAndNothingIsStored) {
  Client alice("alice", 1, 1);
  server_->on_open(alice.conn, {});
  auto reg = sotto::testing::register_request(alice.party, alice.auth);
  reg.mutable_register_()->mutable_device()->set_name(std::string(257, 'n'));
  const auto refused = call(alice, reg);
  EXPECT_EQ(refused.status().code(), svc::BAD_REQUEST);
  EXPECT_NE(refused.status().message().find("name"), std::string::npos);
  EXPECT_EQ(store_->accounts().find_account("alice").error(), store::Error::not_found);

  ASSERT_EQ(call(alice, sotto::testing::register_request(alice.party, alice.auth)).status().code(),
            svc::OK);
  login(alice);
  svc::Request token;
  token.mutable_link_token();
  auto laptop = another_device(alice, 1, 3);
  server_->on_open(laptop->conn, {});
  svc::Request r;
  r.mutable_link_device()->set_username("alice");
  r.mutable_link_device()->set_token(call(alice, token).link_token().token());
  *r.mutable_link_device()->mutable_device() = new_device(*laptop);
  r.mutable_link_device()->mutable_device()->set_name(std::string(257, 'n'));
  EXPECT_EQ(call(*laptop, r).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(store_->accounts().find_account("alice").value().devices.size(), 1u);
}

// --- removing devices, and who hears of changes -------------------------------------------------

TEST_F(DevicesTest, ALinkedDeviceCannotRemoveThePrimaryDevice) {
  Client alice("alice", 1, 1);
  join(alice);
  auto laptop = another_device(alice, 1, 2);
  link(alice, *laptop);
  login(*laptop);

  svc::Request remove_primary;
  remove_primary.mutable_remove_device()->set_device_id(1);
  const auto refused = call(*laptop, remove_primary);
  EXPECT_EQ(refused.status().code(), svc::FORBIDDEN);
  EXPECT_EQ(refused.status().message(),
            "a linked device cannot remove the account's primary device");
  EXPECT_EQ(list(alice).devices_size(), 2);
  EXPECT_FALSE(alice.conn->closed());

  // The primary device removes the linked one: logged out at once, then closed with a reason.
  svc::Request remove_laptop;
  remove_laptop.mutable_remove_device()->set_device_id(2);
  EXPECT_EQ(call(alice, remove_laptop).status().code(), svc::OK);
  EXPECT_EQ(laptop->conn->closed().value_or(""), "device removed from the account");
  svc::Request count;
  count.mutable_key_count();
  EXPECT_EQ(call(*laptop, count).status().code(), svc::UNAUTHENTICATED);
  EXPECT_EQ(list(alice).devices_size(), 1);
}

TEST_F(DevicesTest, TheAccountsOtherOnlineDevicesHearOfAddedAndRemovedDevices) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  auto laptop = another_device(alice, 1, 3);
  ASSERT_EQ(link(alice, *laptop), 2u);
  login(*laptop);
  (void)pushes_to(alice);
  pushes_.clear();

  // A third device joins: both online devices hear of it; bob's account does not.
  auto tablet = another_device(alice, 1, 4);
  svc::Request token;
  token.mutable_link_token();
  const std::string t = call(*laptop, token).link_token().token();
  EXPECT_EQ(devices_changed(pushes_), 0);  // asking for a token changes nothing yet
  server_->on_open(tablet->conn, {});
  svc::Request r;
  r.mutable_link_device()->set_username("alice");
  r.mutable_link_device()->set_token(t);
  *r.mutable_link_device()->mutable_device() = new_device(*tablet);
  ASSERT_EQ(call(*tablet, r).link_device().device_id(), 3u);
  EXPECT_EQ(devices_changed(pushes_to(alice)), 1);
  EXPECT_EQ(devices_changed(pushes_to(*laptop)), 1);
  EXPECT_EQ(devices_changed(pushes_to(bob)), 0);
  EXPECT_EQ(devices_changed(pushes_to(*tablet)), 0);
  tablet->device_id = 3;
  login(*tablet);

  // The tablet is removed by the laptop: every online device but the removed one hears of it.
  svc::Request remove;
  remove.mutable_remove_device()->set_device_id(3);
  pushes_.clear();
  ASSERT_EQ(call(*laptop, remove).status().code(), svc::OK);
  EXPECT_EQ(devices_changed(pushes_), 1);  // the laptop's own, collected by call()
  EXPECT_EQ(devices_changed(pushes_to(alice)), 1);
  EXPECT_EQ(devices_changed(pushes_to(*tablet)), 0);
  EXPECT_EQ(devices_changed(pushes_to(bob)), 0);
}

// --- identity keys ------------------------------------------------------------------------------

TEST_F(DevicesTest, AnIdentityKeyIsServedWithoutTakingAPreKey) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  const auto before =
      store_->keys().count_pre_keys(store_->accounts().find_account("alice").value().id, 1);
  svc::Request r;
  r.mutable_identity_key()->set_username("ALICE");  // normalised as everywhere
  const auto got = call(bob, r);
  ASSERT_EQ(got.status().code(), svc::OK) << got.status().message();
  EXPECT_EQ(got.identity_key().identity_key(), str(alice.party.identity.public_key.serialize()));
  EXPECT_EQ(store_->keys().count_pre_keys(store_->accounts().find_account("alice").value().id, 1),
            before);

  for (const std::string& name :
       std::vector<std::string>{"nobody", "", "no spaces", std::string(40, 'a')}) {
    svc::Request missing;
    missing.mutable_identity_key()->set_username(name);
    const auto m = call(bob, missing);
    EXPECT_EQ(m.status().code(), svc::NOT_FOUND) << name;
    EXPECT_FALSE(m.has_identity_key()) << name;
  }

  Client stranger("carol", 3, 3);
  server_->on_open(stranger.conn, {});
  EXPECT_EQ(call(stranger, r).status().code(), svc::UNAUTHENTICATED);
}

TEST_F(DevicesTest, IdentityKeyRequestsShareTheBundleFetchLimit) {
  ServerConfig c = config();
  c.bundle_fetches_per_minute = 40;  // a burst of 10
  server_ = make_server(metrics_, c);
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  svc::Request r;
  r.mutable_identity_key()->set_username("alice");
  int ok = 0;
  svc::Code last = svc::OK;
  for (int i = 0; i < 12; ++i) {
    last = call(bob, r).status().code();
    ok += last == svc::OK;
  }
  EXPECT_EQ(ok, 10);
  EXPECT_EQ(last, svc::RATE_LIMITED);
  svc::Request fetch;
  fetch.mutable_fetch_bundles()->set_username("alice");
  EXPECT_EQ(call(bob, fetch).status().code(), svc::RATE_LIMITED);
}

// --- prekeys ------------------------------------------------------------------------------------

TEST_F(DevicesTest, AnUploadMayReplaceEveryOneTimePreKey) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  svc::Request count;
  count.mutable_key_count();
  ASSERT_EQ(call(alice, count).key_count().count(), 5u);

  const auto upload = [&](std::vector<std::uint32_t> ids, bool replace) {
    svc::Request r;
    r.mutable_upload_keys()->set_replace_pre_keys(replace);
    for (std::uint32_t id : ids) {
      auto* k = r.mutable_upload_keys()->mutable_keys()->add_pre_keys();
      k->set_id(id);
      k->set_public_key(str(alice.party.identity.public_key.serialize()));
    }
    return call(alice, r).status().code();
  };
  ASSERT_EQ(upload({100, 101}, false), svc::OK);  // appended, as before
  EXPECT_EQ(call(alice, count).key_count().count(), 7u);
  ASSERT_EQ(upload({200, 201}, true), svc::OK);
  EXPECT_EQ(call(alice, count).key_count().count(), 2u);

  std::set<std::uint32_t> handed_out;
  for (int i = 0; i < 2; ++i) {
    svc::Request fetch;
    fetch.mutable_fetch_bundles()->set_username("alice");
    const auto bundles = call(bob, fetch).fetch_bundles();
    ASSERT_EQ(bundles.bundles_size(), 1);
    handed_out.insert(bundles.bundles(0).pre_key_id());
  }
  EXPECT_EQ(handed_out, (std::set<std::uint32_t>{200, 201}));

  // Nothing uploaded with the flag: none left. A refused upload replaces nothing.
  ASSERT_EQ(upload({300}, false), svc::OK);
  svc::Request bad;
  bad.mutable_upload_keys()->set_replace_pre_keys(true);
  auto* k = bad.mutable_upload_keys()->mutable_keys()->add_pre_keys();
  k->set_id(5);
  k->set_public_key("short");
  EXPECT_EQ(call(alice, bad).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(call(alice, count).key_count().count(), 1u);
  ASSERT_EQ(upload({}, true), svc::OK);
  EXPECT_EQ(call(alice, count).key_count().count(), 0u);
}

// --- sends --------------------------------------------------------------------------------------

TEST_F(DevicesTest, ASendToSomeDevicesOnlyReportsNoneMissingButStillExtraAndStaleOnes) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  auto laptop = another_device(alice, 1, 3);
  link(alice, *laptop);
  auto bob_laptop = another_device(bob, 2, 4);
  link(bob, *bob_laptop);
  const std::uint32_t reg = alice.party.registration_id.value;

  // To alice's device 1 alone, leaving out her laptop and bob's own laptop.
  auto full = call(bob, send_request("alice", std::string(16, '1'), {{1, reg}}, false));
  ASSERT_EQ(full.status().code(), svc::STALE_DEVICES);
  ASSERT_EQ(full.send().mismatch_size(), 2);
  EXPECT_EQ(full.send().mismatch(0).missing_size(), 1);
  const auto subset = call(bob, send_request("alice", std::string(16, '2'), {{1, reg}}, true));
  EXPECT_EQ(subset.status().code(), svc::OK) << subset.status().message();
  EXPECT_EQ(subset.send().mismatch_size(), 0);
  EXPECT_EQ(store_->messages().count(store_->accounts().find_account("alice")->id, 1).value(), 1u);

  // Extra and stale devices are reported all the same.
  auto extra = call(bob, send_request("alice", std::string(16, '3'), {{1, reg}, {9, reg}}, true));
  ASSERT_EQ(extra.status().code(), svc::STALE_DEVICES);
  ASSERT_EQ(extra.send().mismatch_size(), 1);
  EXPECT_EQ(extra.send().mismatch(0).extra_size(), 1);
  EXPECT_EQ(extra.send().mismatch(0).missing_size(), 0);
  auto stale = call(bob, send_request("alice", std::string(16, '4'), {{2, reg + 1}}, true));
  ASSERT_EQ(stale.status().code(), svc::STALE_DEVICES);
  EXPECT_EQ(stale.send().mismatch(0).stale_size(), 1);
  EXPECT_EQ(stale.send().mismatch(0).missing_size(), 0);

  // A retry of the accepted subset send is stored once.
  EXPECT_EQ(
      call(bob, send_request("alice", std::string(16, '2'), {{1, reg}}, true)).status().code(),
      svc::OK);
  EXPECT_EQ(store_->messages().count(store_->accounts().find_account("alice")->id, 1).value(), 1u);
}

TEST_F(DevicesTest, PlaintextContentOfType8IsRelayedLikeAnyEnvelope) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  (void)pushes_to(alice);
  const std::uint32_t reg = alice.party.registration_id.value;
  ASSERT_EQ(
      call(bob, send_request("alice", std::string(16, 'p'), {{1, reg}}, false, 8)).status().code(),
      svc::OK);
  std::vector<svc::Envelope> got;
  for (const auto& p : pushes_to(alice)) {
    if (p.has_envelope()) got.push_back(p.envelope());
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].type(), 8u);
  EXPECT_EQ(got[0].source(), "bob");
}

// --- metrics ------------------------------------------------------------------------------------

TEST_F(DevicesTest, TheQueueDepthGaugeStartsFromTheStoreAndFollowsAcksAndRemovals) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  auto laptop = another_device(bob, 2, 3);
  link(bob, *laptop);
  server_->on_close(bob.conn);
  const std::uint32_t reg = bob.party.registration_id.value;
  for (char c : std::string("abc")) {
    ASSERT_EQ(call(alice, send_request("bob", std::string(16, c), {{1, reg}, {2, reg}}, false))
                  .status()
                  .code(),
              svc::OK);
  }
  ASSERT_EQ(store_->messages().count_all().value(), 6u);

  // A restart: a new server over the same store, with metrics of its own.
  server_.reset();
  Metrics restarted;
  server_ = make_server(restarted);
  EXPECT_EQ(restarted.queue_depth.load(), 6);

  bob.conn = std::make_shared<sotto::testing::LoopbackConnection>(10);
  server_->on_open(bob.conn, {});
  pushes_.clear();
  login(bob);
  std::vector<std::string> ids;
  for (const auto& p : pushes_) {
    if (p.has_envelope()) ids.push_back(p.envelope().id());
  }
  ASSERT_EQ(ids.size(), 3u);
  svc::Request ack;
  ack.mutable_ack()->add_envelope_ids(ids[0]);
  ack.mutable_ack()->add_envelope_ids(ids[1]);
  ASSERT_EQ(call(bob, ack).status().code(), svc::OK);
  EXPECT_EQ(restarted.queue_depth.load(), 4);
  EXPECT_EQ(store_->messages().count_all().value(), 4u);

  // Removing the laptop takes its three envelopes with it.
  svc::Request remove;
  remove.mutable_remove_device()->set_device_id(2);
  ASSERT_EQ(call(bob, remove).status().code(), svc::OK);
  EXPECT_EQ(restarted.queue_depth.load(), 1);
  EXPECT_EQ(store_->messages().count_all().value(), 1u);
  server_.reset();  // before `restarted` goes
}

// --- the server's next key ----------------------------------------------------------------------

TEST_F(DevicesTest, WhileANextKeyIsAnnouncedEveryLoginIsFollowedByTheAnnouncement) {
  Client alice("alice", 1, 1);
  join(alice);
  for (const auto& p : pushes_) EXPECT_FALSE(p.has_server_key());

  server_->announce_next_key(NextServerKey{Bytes{0x30, 0x01}, Bytes{0xAA, 0xBB}});
  // The challenge login: the announcement comes after the response, before anything else.
  server_->on_close(alice.conn);
  alice.conn = std::make_shared<sotto::testing::LoopbackConnection>(2);
  server_->on_open(alice.conn, {});
  svc::Request ch;
  ch.mutable_challenge();
  const std::string nonce = call(alice, ch).challenge().nonce();
  submit(alice, sotto::testing::authenticate("alice", 1, alice.auth, nonce));
  store_->messages().flush();
  auto frames = alice.conn->take();
  ASSERT_GE(frames.size(), 2u);
  EXPECT_TRUE(frames[0].has_response());
  ASSERT_TRUE(frames[1].has_push() && frames[1].push().has_server_key());
  EXPECT_EQ(frames[1].push().server_key().next_public_key(), std::string("\x30\x01", 2));
  EXPECT_EQ(frames[1].push().server_key().signature(), "\xAA\xBB");

  // The upgrade login: after the login result.
  server_->on_close(alice.conn);
  alice.conn = std::make_shared<sotto::testing::LoopbackConnection>(3);
  std::array<std::uint8_t, 32> binding{};
  binding.fill(7);
  alice.conn->set_channel_binding(binding);
  const auto proof = sotto::testing::authenticate_bound("alice", 1, alice.auth, binding);
  server_->on_open(alice.conn,
                   net::device_authorization(as_bytes(proof.authenticate().SerializeAsString())));
  frames = alice.conn->take();
  ASSERT_GE(frames.size(), 2u);
  ASSERT_TRUE(frames[0].has_push() && frames[0].push().has_login_result());
  EXPECT_EQ(frames[0].push().login_result().status().code(), svc::OK);
  EXPECT_TRUE(frames[1].has_push() && frames[1].push().has_server_key());

  // A failed login is not followed by it, and once withdrawn it is sent no more.
  Client mallory("mallory", 3, 4);
  server_->on_open(mallory.conn, {});
  const std::string n2 = call(mallory, ch).challenge().nonce();
  pushes_.clear();
  EXPECT_EQ(
      call(mallory, sotto::testing::authenticate("alice", 1, mallory.auth, n2)).status().code(),
      svc::UNAUTHENTICATED);
  EXPECT_TRUE(pushes_.empty());
  server_->announce_next_key(std::nullopt);
  server_->on_close(alice.conn);
  alice.conn = std::make_shared<sotto::testing::LoopbackConnection>(5);
  server_->on_open(alice.conn, {});
  pushes_.clear();
  login(alice);
  for (const auto& p : pushes_) EXPECT_FALSE(p.has_server_key());
}

}  // namespace
}  // namespace sotto::server
