// A real sotto-server process, spoken to over TLS WebSocket frame by frame: what a hostile or
// broken client can do. Malformed frames, oversized messages and unauthenticated requests are
// refused with clear errors and change nothing stored; a device cannot read, acknowledge or delete
// another device's queue, log in as another device, or upload keys for another account. "Nothing
// stored changed" is checked on the server's own SQLite file, read beside the running server.
// And what operators and devices do over the wire: rotating the server's key while it runs
// (`sotto-server key`, SIGHUP), recovering an account, one copy of a device at a time, the
// queue-depth gauge across a restart, the data directory named by the config file, and what a
// start refuses (half a TLS pair, an unknown log level, a second server on the same data).
#include "util/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "net/device_authorization.h"
#include "net/server_key.h"
#include "net/tls.h"
#include "net/ws_client.h"
#include "util/server_harness.h"

#ifndef SOTTO_SERVER_BIN
#error "SOTTO_SERVER_BIN must name the sotto-server binary"
#endif

namespace sotto {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::CommandResult;
using sotto::testing::Party;
using sotto::testing::RawClient;
using sotto::testing::read_text;
using sotto::testing::ServerProcess;
using sotto::testing::str;

// A TLS identity of its own, in a directory removed afterwards.
struct TempDirForKey {
  TempDirForKey() {
    char tmpl[] = "/tmp/sotto-other-key-XXXXXX";
    dir = mkdtemp(tmpl);
    identity = net::load_or_create_identity(dir).value();
  }
  ~TempDirForKey() { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
  net::TlsIdentity identity;
};

struct Account {
  Party party;
  crypto::Ed25519KeyPair auth;
  Account(const std::string& name, std::uint64_t seed)
      : party(name, 1, seed), auth(crypto::Ed25519KeyPair::generate(party.rng)) {}
};

class ServerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(server_.port(), 0) << "sotto-server did not start";
    ASSERT_EQ(server_.fingerprint().size(), 64u);
  }

  // Registers (on a connection of its own) and returns a logged-in connection.
  std::unique_ptr<RawClient> join(Account& a) {
    auto c = std::make_unique<RawClient>(server_);
    EXPECT_EQ(c->call(sotto::testing::register_request(a.party, a.auth)).status().code(), svc::OK);
    login(*c, a.party.name, 1, a.auth, svc::OK);
    return c;
  }

  static void login(RawClient& c, const std::string& name, std::uint32_t device,
                    const crypto::Ed25519KeyPair& auth, svc::Code expected) {
    svc::Request ch;
    ch.mutable_challenge();
    const std::string nonce = c.call(ch).challenge().nonce();
    auto r = c.call(sotto::testing::authenticate(name, device, auth, nonce));
    EXPECT_EQ(r.status().code(), expected) << r.status().message();
  }

  static svc::Request send_to(const Account& to, const std::string& id, std::string content) {
    svc::Request r;
    auto* sr = r.mutable_send();
    sr->set_recipient(to.party.name);
    sr->set_client_message_id(id);
    sr->set_timestamp(1);
    auto* m = sr->add_messages();
    m->set_destination(to.party.name);
    m->set_device_id(1);
    m->set_registration_id(to.party.registration_id.value);
    m->set_type(1);
    m->set_content(std::move(content));
    return r;
  }

  ServerProcess server_;
};

TEST_F(ServerProcessTest, MalformedFramesAreRefusedClearlyAndChangeNothing) {
  Account alice("alice", 1);
  auto a = join(alice);
  const auto before = server_.row_counts();

  RawClient c(server_);
  c.send_raw(Bytes{0xFF, 0xFF, 0xFF, 0x01, 0x02});  // not a protobuf Frame
  auto r = c.response(0);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), svc::BAD_REQUEST);
  EXPECT_NE(r->status().message().find("malformed"), std::string::npos) << r->status().message();

  svc::Frame wrong;  // a Response where a Request belongs
  wrong.mutable_response()->set_id(7);
  Bytes b(wrong.ByteSizeLong());
  wrong.SerializeWithCachedSizesToArray(b.data());
  c.send_raw(b);
  r = c.response(0);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), svc::BAD_REQUEST);

  // Registration with broken fields: each refused as a bad request, no account made.
  Account eve("eve", 5);
  auto bad_name = sotto::testing::register_request(eve.party, eve.auth);
  bad_name.mutable_register_()->set_username("no spaces allowed");
  EXPECT_EQ(c.call(bad_name).status().code(), svc::BAD_REQUEST);
  auto bad_key = sotto::testing::register_request(eve.party, eve.auth);
  bad_key.mutable_register_()->set_identity_key("short");
  EXPECT_EQ(c.call(bad_key).status().code(), svc::BAD_REQUEST);
  auto unsigned_device = sotto::testing::register_request(eve.party, eve.auth);
  unsigned_device.mutable_register_()->mutable_device()->set_identity_signature(
      std::string(64, 'x'));
  EXPECT_EQ(c.call(unsigned_device).status().code(), svc::BAD_REQUEST);
  auto taken = sotto::testing::register_request(alice.party, alice.auth);
  EXPECT_EQ(c.call(taken).status().code(), svc::CONFLICT);

  // An authenticated client's broken requests: a short client message id, an empty send.
  auto short_id = send_to(alice, "short", "x");
  EXPECT_EQ(a->call(short_id).status().code(), svc::BAD_REQUEST);
  svc::Request empty;
  empty.mutable_send()->set_recipient("alice");
  empty.mutable_send()->set_client_message_id(std::string(16, 'e'));
  EXPECT_EQ(a->call(empty).status().code(), svc::BAD_REQUEST);
  svc::Request bad_ack;
  bad_ack.mutable_ack()->add_envelope_ids("not-sixteen");
  EXPECT_EQ(a->call(bad_ack).status().code(), svc::BAD_REQUEST);

  EXPECT_EQ(server_.row_counts(), before);
}

TEST_F(ServerProcessTest, OversizedMessagesAndFramesAreRefused) {
  Account alice("alice", 1), bob("bob", 2);
  auto a = join(alice);
  auto b = join(bob);
  const auto before = server_.row_counts();

  // Above max_message_bytes (256 KiB by default) but within the frame limit: TOO_LARGE.
  auto big = a->call(send_to(bob, std::string(16, 'b'), std::string(300 * 1024, 'x')));
  EXPECT_EQ(big.status().code(), svc::TOO_LARGE);
  EXPECT_FALSE(big.status().message().empty());
  EXPECT_EQ(server_.row_counts(), before);

  // Above the frame limit (2 MiB by default): the connection is closed, with a reason.
  RawClient c(server_);
  c.send_raw(Bytes((2 << 20) + 1, 0x00));
  const auto reason = c.wait_closed();
  ASSERT_TRUE(reason.has_value()) << "an oversized frame must close the connection";
  EXPECT_EQ(server_.row_counts(), before);
}

TEST_F(ServerProcessTest, UnauthenticatedRequestsAreRefused) {
  Account alice("alice", 1), bob("bob", 2);
  auto a = join(alice);
  const auto before = server_.row_counts();

  RawClient c(server_);
  std::vector<svc::Request> requests;
  requests.push_back(send_to(alice, std::string(16, 'u'), "hello"));
  requests.emplace_back().mutable_ack()->add_envelope_ids(std::string(16, 'i'));
  requests.emplace_back().mutable_upload_keys()->mutable_keys();
  requests.emplace_back().mutable_fetch_bundles()->set_username("alice");
  requests.emplace_back().mutable_list_devices();
  requests.emplace_back().mutable_remove_device()->set_device_id(1);
  requests.emplace_back().mutable_key_count();
  requests.emplace_back().mutable_link_token();
  for (auto& r : requests) {
    auto got = c.call(r);
    EXPECT_EQ(got.status().code(), svc::UNAUTHENTICATED) << r.body_case();
    EXPECT_FALSE(got.status().message().empty());
  }
  // Authentication without a challenge, with a wrong key, or a reused nonce: refused.
  auto no_challenge =
      c.call(sotto::testing::authenticate("alice", 1, alice.auth, std::string(32, 'n')));
  EXPECT_EQ(no_challenge.status().code(), svc::UNAUTHENTICATED);
  login(c, "alice", 1, bob.auth, svc::UNAUTHENTICATED);
  EXPECT_EQ(c.call(requests[0]).status().code(), svc::UNAUTHENTICATED);
  EXPECT_EQ(server_.row_counts(), before);
}

TEST_F(ServerProcessTest, ADeviceLogsInBySigningItsConnectionsTlsChannelBinding) {
  Account alice("alice", 1);
  {
    RawClient r(server_);
    ASSERT_EQ(r.call(sotto::testing::register_request(alice.party, alice.auth)).status().code(),
              svc::OK);
  }
  // Both ends export the same value (RFC 9266), so one signature logs in: no challenge asked.
  RawClient c(server_);
  const auto binding = c.channel_binding();
  const auto proof = sotto::testing::authenticate_bound("alice", 1, alice.auth, binding);
  auto r = c.call(proof);
  EXPECT_EQ(r.status().code(), svc::OK) << r.status().message();
  svc::Request key_count;
  key_count.mutable_key_count();
  EXPECT_EQ(c.call(key_count).status().code(), svc::OK);

  // Every connection has its own binding: the same proof on another connection is refused, and
  // so is a proof over another connection's binding.
  RawClient other(server_);
  EXPECT_NE(other.channel_binding(), binding);
  EXPECT_EQ(other.call(proof).status().code(), svc::UNAUTHENTICATED);
  RawClient third(server_);
  auto relayed = third.call(
      sotto::testing::authenticate_bound("alice", 1, alice.auth, other.channel_binding()));
  EXPECT_EQ(relayed.status().code(), svc::UNAUTHENTICATED);
  EXPECT_EQ(third.call(key_count).status().code(), svc::UNAUTHENTICATED);
}

TEST_F(ServerProcessTest, TheUpgradeRequestCarriesTheLoginAndTheResultIsTheFirstPush) {
  Account alice("alice", 1), mallory("mallory", 3);
  {
    RawClient r(server_);
    ASSERT_EQ(r.call(sotto::testing::register_request(alice.party, alice.auth)).status().code(),
              svc::OK);
  }
  const auto header = [](const Account& a) {
    return [&a](const std::array<std::uint8_t, 32>& binding) {
      const auto proof = sotto::testing::authenticate_bound(a.party.name, 1, a.auth, binding);
      return net::device_authorization(as_bytes(proof.authenticate().SerializeAsString()));
    };
  };
  svc::Request key_count;
  key_count.mutable_key_count();
  {
    // Logged in when the WebSocket opens: three round trips from TCP to a usable connection.
    RawClient c(server_, 4 << 20, header(alice));
    const auto first = c.first_push();
    ASSERT_TRUE(first && first->has_login_result());
    EXPECT_EQ(first->login_result().status().code(), svc::OK)
        << first->login_result().status().message();
    EXPECT_EQ(c.call(key_count).status().code(), svc::OK);
  }
  {
    // Someone else's key under alice's name: refused, the connection stays and is logged out.
    RawClient c(server_, 4 << 20, [&](const std::array<std::uint8_t, 32>& binding) {
      const auto proof = sotto::testing::authenticate_bound("alice", 1, mallory.auth, binding);
      return net::device_authorization(as_bytes(proof.authenticate().SerializeAsString()));
    });
    const auto first = c.first_push();
    ASSERT_TRUE(first && first->has_login_result());
    EXPECT_EQ(first->login_result().status().code(), svc::UNAUTHENTICATED);
    EXPECT_EQ(c.call(key_count).status().code(), svc::UNAUTHENTICATED);
  }
  {
    // A header the server cannot read: refused with a reason.
    RawClient c(server_, 4 << 20,
                [](const std::array<std::uint8_t, 32>&) { return std::string("SottoDevice %%"); });
    const auto first = c.first_push();
    ASSERT_TRUE(first && first->has_login_result());
    EXPECT_EQ(first->login_result().status().code(), svc::BAD_REQUEST);
    EXPECT_FALSE(first->login_result().status().message().empty());
  }
  {
    // An upgrade request larger than the server reads (4 KB) is not answered with a WebSocket.
    net::ClientOptions o;
    o.port = server_.port();
    o.fingerprint = server_.fingerprint();
    o.authorization = [](const std::array<std::uint8_t, 32>&) {
      return "SottoDevice " + std::string(5000, 'A');
    };
    net::WsClient big(
        o, [](ByteView) {}, [](const std::string&) {});
    EXPECT_FALSE(big.connect().has_value());
  }
  // The server still serves.
  RawClient after(server_, 4 << 20, header(alice));
  const auto first = after.first_push();
  ASSERT_TRUE(first && first->has_login_result());
  EXPECT_EQ(first->login_result().status().code(), svc::OK);
}

TEST_F(ServerProcessTest, ADeviceCannotTouchAnotherDevicesQueueOrKeys) {
  Account alice("alice", 1), bob("bob", 2), mallory("mallory", 3);
  auto a = join(alice);
  auto m = join(mallory);
  {
    auto b = join(bob);  // registers, then goes offline
  }
  ASSERT_EQ(a->call(send_to(bob, std::string(16, 'q'), "for bob only")).status().code(), svc::OK);
  const auto before = server_.row_counts();
  ASSERT_EQ(before.at("messages"), 1);

  // Mallory cannot log in as bob's device with her own key...
  RawClient impostor(server_);
  login(impostor, "bob", 1, mallory.auth, svc::UNAUTHENTICATED);
  svc::Request drain_attempt;
  drain_attempt.mutable_key_count();
  EXPECT_EQ(impostor.call(drain_attempt).status().code(), svc::UNAUTHENTICATED);

  // ...nor acknowledge (delete) bob's envelope even if she learned its id: bob reads it later.
  // Her connection receives nothing of bob's either.
  EXPECT_TRUE(m->envelopes(0).empty());
  RawClient bob_again(server_);
  login(bob_again, "bob", 1, bob.auth, svc::OK);
  auto got = bob_again.envelopes(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].content(), "for bob only");
  svc::Request steal;
  steal.mutable_ack()->add_envelope_ids(got[0].id());
  EXPECT_EQ(m->call(steal).status().code(), svc::OK);  // nothing of hers to delete: a no-op
  EXPECT_EQ(server_.row_counts().at("messages"), 1) << "mallory's ack deleted bob's envelope";

  // Uploads land on the uploader's own device: bob's prekeys are untouched.
  svc::Request count;
  count.mutable_key_count();
  const auto bob_keys = bob_again.call(count).key_count().count();
  svc::Request upload;
  auto* pk = upload.mutable_upload_keys()->mutable_keys()->add_pre_keys();
  pk->set_id(900);
  pk->set_public_key(str(mallory.party.identity.public_key.serialize()));
  EXPECT_EQ(m->call(upload).status().code(), svc::OK);
  EXPECT_EQ(bob_again.call(count).key_count().count(), bob_keys);
  EXPECT_EQ(m->call(count).key_count().count(), 6u);

  svc::Request list;
  list.mutable_list_devices()->set_username("bob");
  EXPECT_EQ(a->call(list).list_devices().devices_size(), 1);

  // Bob's own acknowledgement deletes it.
  svc::Request ack;
  ack.mutable_ack()->add_envelope_ids(got[0].id());
  EXPECT_EQ(bob_again.call(ack).status().code(), svc::OK);
  EXPECT_EQ(server_.row_counts().at("messages"), 0);
}

// --- the server's key, rotated while it runs ----------------------------------------------------

// The login proof in the upgrade request, for device 1 of `a`, from the copy `instance`.
std::function<std::string(const std::array<std::uint8_t, 32>&)> login_header(
    const Account& a, std::string instance = {}) {
  return [&a, instance](const std::array<std::uint8_t, 32>& binding) {
    auto proof = sotto::testing::authenticate_bound(a.party.name, 1, a.auth, binding);
    proof.mutable_authenticate()->set_instance(instance);
    return net::device_authorization(as_bytes(proof.authenticate().SerializeAsString()));
  };
}

TEST_F(ServerProcessTest, ARotatedKeyIsAnnouncedSignedAndThenPresentedWithoutDroppingAnyone) {
  Account alice("alice", 1), bob("bob", 2);
  join(alice);
  auto before = join(bob);  // connected and logged in throughout
  const std::string current = server_.fingerprint();
  const std::string data = server_.dir().string();

  // The operator makes the next key while the server runs; SIGHUP makes the server announce it.
  const auto rotated = ServerProcess::run({"key", "rotate", "--data", data});
  ASSERT_EQ(rotated.status, 0) << rotated.err;
  ASSERT_EQ(rotated.out.rfind("next fingerprint: ", 0), 0u) << rotated.out;
  const std::string next = rotated.out.substr(18, 64);
  server_.signal(SIGHUP);
  ASSERT_TRUE(server_.wait_log("event=reload result=ok fingerprint=" + current + " next=" + next));
  const auto shown = ServerProcess::run({"key", "show", "--data", data});
  EXPECT_EQ(shown.out, "fingerprint: " + current + "\nnext fingerprint: " + next + "\n");

  {
    // A device logging in now is told, right after its login result, and the announcement
    // verifies with the key of this very connection.
    RawClient c(server_, 4 << 20, login_header(alice));
    const auto pushes_seen = [&] { return c.pushes(); };
    ASSERT_TRUE(c.wait_push([](const svc::Push& p) { return p.has_server_key(); }));
    const auto pushes = pushes_seen();
    ASSERT_GE(pushes.size(), 2u);
    ASSERT_TRUE(pushes[0].has_login_result());
    ASSERT_TRUE(pushes[1].has_server_key());
    const auto& announced = pushes[1].server_key();
    EXPECT_EQ(net::key_fingerprint(as_bytes(announced.next_public_key())), next);
    EXPECT_EQ(c.ws().observed_fingerprint(), current);
    EXPECT_TRUE(net::verify_next_key(c.ws().peer_public_key(),
                                     as_bytes(announced.next_public_key()),
                                     as_bytes(announced.signature())));
    // Not by any other key.
    TempDirForKey other;
    EXPECT_FALSE(net::verify_next_key(other.identity.public_key,
                                      as_bytes(announced.next_public_key()),
                                      as_bytes(announced.signature())));
  }

  // Activation: the next key becomes the current one; after SIGHUP new connections present it.
  const auto activated = ServerProcess::run({"key", "activate", "--data", data});
  ASSERT_EQ(activated.status, 0) << activated.err;
  EXPECT_EQ(activated.out, "fingerprint: " + next + "\n");
  server_.signal(SIGHUP);
  ASSERT_TRUE(server_.wait_log("event=reload result=ok fingerprint=" + next + " next=none"));
  {
    net::ClientOptions o;
    o.port = server_.port();
    o.fingerprint = current;  // a client that never heard of the next key
    net::WsClient stale(
        o, [](ByteView) {}, [](const std::string&) {});
    auto r = stale.connect();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), net::ClientError::fingerprint_mismatch);
    EXPECT_EQ(stale.observed_fingerprint(), next);
  }
  RawClient after(server_, 4 << 20, login_header(alice), next);
  const auto first = after.first_push();
  ASSERT_TRUE(first && first->has_login_result());
  EXPECT_EQ(first->login_result().status().code(), svc::OK);
  svc::Request count;
  count.mutable_key_count();
  EXPECT_EQ(after.call(count).status().code(), svc::OK);
  for (const auto& p : after.pushes()) EXPECT_FALSE(p.has_server_key());

  // Two reloads later, the connection made before the rotation is still there, logged in.
  EXPECT_TRUE(server_.alive());
  EXPECT_TRUE(before->is_open());
  EXPECT_EQ(before->call(count).status().code(), svc::OK);
  EXPECT_EQ(before->ws().observed_fingerprint(), current);
}

TEST_F(ServerProcessTest, AReloadThatFailsKeepsTheIdentityAndSighupNeverStopsTheServer) {
  const std::string current = server_.fingerprint();
  RawClient open_before(server_);
  // A damaged certificate file: the reload is refused and logged, the old identity stays.
  {
    std::FILE* f = std::fopen((server_.dir() / "tls" / "cert.pem").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("not a certificate\n", f);
    std::fclose(f);
  }
  server_.signal(SIGHUP);
  ASSERT_TRUE(server_.wait_log("event=reload result=error"));
  for (int n = 2; n <= 4; ++n) {  // one at a time: pending signals of one kind merge
    server_.signal(SIGHUP);
    ASSERT_TRUE(server_.wait_log("event=reload result=error", n));
  }
  EXPECT_TRUE(server_.alive());
  RawClient after(server_);  // pinned to the old key: still presented
  EXPECT_EQ(after.ws().observed_fingerprint(), current);
  EXPECT_TRUE(open_before.is_open());
  svc::Request ch;
  ch.mutable_challenge();
  EXPECT_EQ(open_before.call(ch).status().code(), svc::OK);
}

// --- accounts and devices over the wire -----------------------------------------------------

TEST_F(ServerProcessTest, ARecoveryOverTheWireClosesTheOldDevicesConnections) {
  Account alice("alice", 1);
  crypto::DeterministicRng rng(77);
  const auto recovery = crypto::Ed25519KeyPair::generate(rng);
  {
    RawClient r(server_);
    auto reg = sotto::testing::register_request(alice.party, alice.auth);
    reg.mutable_register_()->set_recovery_key(str(recovery.public_key()));
    ASSERT_EQ(r.call(reg).status().code(), svc::OK);
  }
  RawClient old_device(server_, 4 << 20, login_header(alice));
  ASSERT_EQ(old_device.first_push()->login_result().status().code(), svc::OK);

  Account fresh("alice", 50);  // the new machine: new identity key, new auth key
  RawClient c(server_);
  svc::Request ch;
  ch.mutable_challenge();
  const std::string nonce = c.call(ch).challenge().nonce();
  svc::Request r;
  auto* rr = r.mutable_recover();
  rr->set_username("alice");
  rr->set_identity_key(str(fresh.party.identity.public_key.serialize()));
  *rr->mutable_device() = sotto::testing::make_new_device(fresh.party, fresh.auth);
  const std::string message = "sotto-recover-v1" + nonce + "alice" + rr->identity_key() +
                              rr->device().auth_key() + rr->recovery_key();
  rr->set_signature(str(recovery.sign(as_bytes(message))));
  auto wrong = r;
  wrong.mutable_recover()->set_signature(std::string(64, 'x'));
  const auto refused = c.call(wrong);
  EXPECT_EQ(refused.status().code(), svc::FORBIDDEN);
  EXPECT_EQ(refused.status().message(), "recovery refused");
  EXPECT_EQ(c.call(r).status().code(), svc::BAD_REQUEST);  // that challenge is spent

  const std::string nonce2 = c.call(ch).challenge().nonce();
  const std::string message2 = "sotto-recover-v1" + nonce2 + "alice" + rr->identity_key() +
                               rr->device().auth_key() + rr->recovery_key();
  r.mutable_recover()->set_signature(str(recovery.sign(as_bytes(message2))));
  const auto recovered = c.call(r);
  ASSERT_EQ(recovered.status().code(), svc::OK) << recovered.status().message();
  EXPECT_EQ(recovered.recover().device_id(), 1u);
  EXPECT_EQ(old_device.wait_closed().value_or(""), "account recovered on another device");
  login(c, "alice", 1, fresh.auth, svc::OK);
  RawClient thief(server_);
  login(thief, "alice", 1, alice.auth, svc::UNAUTHENTICATED);
  EXPECT_EQ(server_.row_counts().at("devices"), 1);
}

TEST_F(ServerProcessTest, ASecondCopyOfADeviceIsRefusedWhileTheFirstIsOnline) {
  Account alice("alice", 1);
  {
    RawClient r(server_);
    ASSERT_EQ(r.call(sotto::testing::register_request(alice.party, alice.auth)).status().code(),
              svc::OK);
  }
  RawClient first(server_, 4 << 20, login_header(alice, std::string(16, 'A')));
  ASSERT_EQ(first.first_push()->login_result().status().code(), svc::OK);
  RawClient copy(server_, 4 << 20, login_header(alice, std::string(16, 'B')));
  const auto refused = copy.first_push();
  ASSERT_TRUE(refused && refused->has_login_result());
  EXPECT_EQ(refused->login_result().status().code(), svc::DEVICE_IN_USE);
  EXPECT_EQ(refused->login_result().status().message(),
            "this device is connected from another copy of its data");
  svc::Request count;
  count.mutable_key_count();
  EXPECT_EQ(first.call(count).status().code(), svc::OK);
  EXPECT_EQ(copy.call(count).status().code(), svc::UNAUTHENTICATED);
  // The same copy again replaces the older connection, as before.
  RawClient again(server_, 4 << 20, login_header(alice, std::string(16, 'A')));
  ASSERT_EQ(again.first_push()->login_result().status().code(), svc::OK);
  EXPECT_EQ(first.wait_closed().value_or(""), "replaced by a newer connection of this device");
}

// --- operators ------------------------------------------------------------------------------

TEST_F(ServerProcessTest, TheQueueDepthGaugeStartsFromTheStoreAfterARestart) {
  Account alice("alice", 1), bob("bob", 2);
  auto a = join(alice);
  { auto b = join(bob); }
  ASSERT_EQ(a->call(send_to(bob, std::string(16, '1'), "one")).status().code(), svc::OK);
  ASSERT_EQ(a->call(send_to(bob, std::string(16, '2'), "two")).status().code(), svc::OK);
  EXPECT_EQ(server_.metric("sotto_queue_depth"), 2);
  a.reset();

  ASSERT_EQ(server_.stop(), 0);
  ASSERT_TRUE(server_.start());
  EXPECT_EQ(server_.metric("sotto_queue_depth"), 2);  // it started at 0 before
  RawClient b(server_);
  login(b, "bob", 1, bob.auth, svc::OK);
  const auto got = b.envelopes(2);
  ASSERT_EQ(got.size(), 2u);
  svc::Request ack;
  for (const auto& e : got) ack.mutable_ack()->add_envelope_ids(e.id());
  ASSERT_EQ(b.call(ack).status().code(), svc::OK);
  EXPECT_EQ(server_.metric("sotto_queue_depth"), 0);
  EXPECT_EQ(server_.row_counts().at("messages"), 0);
}

TEST(ServerProcessStart, TheDataDirectoryMayComeFromTheConfigFile) {
  ServerProcess server(false);
  const auto config = server.root() / "sotto.toml";
  {
    std::FILE* f = std::fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f, "data = \"%s\"\n", server.dir().c_str());
    std::fclose(f);
  }
  ASSERT_TRUE(server.start(std::vector<std::string>{"--config", config.string(), "--listen",
                                                    "127.0.0.1:0", "--http", "127.0.0.1:0"}));
  EXPECT_EQ(server.fingerprint().size(), 64u);
  EXPECT_TRUE(std::filesystem::exists(server.dir() / "sotto.db"));
  EXPECT_TRUE(std::filesystem::exists(server.dir() / "tls" / "key.pem"));
  const auto shown = ServerProcess::run({"key", "show", "--config", config.string()});
  EXPECT_EQ(shown.out, "fingerprint: " + server.fingerprint() + "\nnext fingerprint: none\n");
  ASSERT_EQ(server.stop(), 0);

  // --data still wins over the file.
  const auto elsewhere = server.root() / "elsewhere";
  ASSERT_TRUE(server.start(std::vector<std::string>{"--config", config.string(), "--data",
                                                    elsewhere.string(), "--listen", "127.0.0.1:0",
                                                    "--http", "127.0.0.1:0"}));
  EXPECT_TRUE(std::filesystem::exists(elsewhere / "sotto.db"));
  ASSERT_EQ(server.stop(), 0);

  // Neither: a clear error.
  const auto neither = ServerProcess::run({"--listen", "127.0.0.1:0"});
  EXPECT_EQ(neither.status, 1);
  EXPECT_NE(neither.err.find("no data directory: give --data DIR, or `data` in the --config file"),
            std::string::npos)
      << neither.err;
}

TEST(ServerProcessStart, HalfATlsPairAndAnUnknownLogLevelAreRefused) {
  ServerProcess server(false);
  const std::string data = server.dir().string();
  const auto refused = [&](std::vector<std::string> args, const std::string& expect) {
    args.insert(args.end(), {"--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"});
    const auto r = ServerProcess::run(args);
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_NE(r.err.find(expect), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << "it must not start";
  };
  refused({"--tls-cert", "/etc/ssl/cert.pem"}, "without its private key");
  refused({"--tls-key", "/etc/ssl/key.pem"}, "without its certificate");
  const std::string level_error =
      "'log_level' (--log-level) must be one of trace, debug, info, warn, error, off";
  refused({"--log-level", "loud"}, level_error);

  // The same from the config file; a flag may complete what the file gives.
  const auto config = server.root() / "sotto.toml";
  const auto write_config = [&](const std::string& text) {
    std::FILE* f = std::fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(text.c_str(), f);
    std::fclose(f);
  };
  write_config("tls_certificate = \"/etc/ssl/cert.pem\"\n");
  refused({"--config", config.string()}, "without its private key");
  write_config("log_level = \"loud\"\n");
  refused({"--config", config.string()}, level_error);
  write_config("tls_private_key = \"" + (server.root() / "missing-key.pem").string() + "\"\n");
  refused({"--config", config.string(), "--tls-cert", (server.root() / "missing.pem").string()},
          "cannot load the TLS certificate and key given");
}

TEST(ServerProcessStart, ASecondServerOnTheSameDataDirectoryIsRefused) {
  ServerProcess first;
  ASSERT_TRUE(first.alive());
  const auto second = ServerProcess::run(
      {"--data", first.dir().string(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"});
  EXPECT_EQ(second.status, 1);
  EXPECT_NE(second.err.find("another sotto-server"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find(first.dir().string()), std::string::npos) << second.err;
  EXPECT_TRUE(first.alive());
  // Operator commands still run beside the server.
  const auto invites = ServerProcess::run({"--data", first.dir().string(), "invite", "create"});
  EXPECT_EQ(invites.status, 0) << invites.err;
  // Once the first has stopped, the directory is free again.
  ASSERT_EQ(first.stop(), 0);
  ASSERT_TRUE(first.start());
}

}  // namespace
}  // namespace sotto
