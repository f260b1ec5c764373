// The client's key transparency check (client/kt.h) against a real log from the library: an
// honest proof gives the logged account, and every tampering is refused with the right kind of
// security alert: a changed proof, a head not signed by the pinned key, no proof at all, a bundle
// for a device or identity key the log does not hold, a forked log, a version rolled back; and
// tree heads gossiped in messages: one of the same log passes, one of another view is a
// split_view.
#include <gtest/gtest.h>

#include <filesystem>

#include "client/kt.h"
#include "client/stored_values.h"
#include "client/util.h"
#include "crypto/rng.h"
#include "transparency/log.h"

namespace sotto::client {
namespace {

namespace fs = std::filesystem;
namespace kt = transparency;

constexpr std::uint64_t kNow = 1'700'000'000'000ull;

kt::AccountValue value(std::uint8_t identity, std::vector<std::uint32_t> devices) {
  kt::AccountValue v;
  v.identity_key.fill(identity);
  v.identity_key[0] = 0x05;
  for (auto id : devices) {
    kt::DeviceEntry d;
    d.device_id = id;
    d.registration_id = 100 + id;
    d.auth_key.fill(static_cast<std::uint8_t>(id));
    v.devices.push_back(d);
  }
  return v;
}

// A server's log, with its keys.
struct Log {
  // `key`: the byte the log's secret keys are made of (another byte: another log's keys).
  explicit Log(std::uint8_t seed, std::uint8_t key = 0x22) : rng(seed) {
    crypto::Secret<32> vrf_secret{ByteView(Bytes(32, static_cast<std::uint8_t>(key - 0x11)))};
    crypto::Secret<32> signing{ByteView(Bytes(32, key))};
    log = std::make_unique<kt::TransparencyLog>(store, kt::VrfKeyPair::from_secret(vrf_secret),
                                                crypto::Ed25519KeyPair::from_seed(signing), rng);
    EXPECT_TRUE(log->open(kNow));
  }
  void put(const std::string& user, const kt::AccountValue& v) {
    const kt::TransparencyLog::Update u{user, v};
    EXPECT_TRUE(log->append(std::span(&u, 1), kNow));
  }
  // What a lookup answer carries, from the size a client names.
  svc::KtProof proof(const std::string& user, std::uint64_t known) {
    svc::KtProof p;
    const auto head = log->head();
    const Bytes h = kt::encode_signed_tree_head(head);
    p.set_tree_head(std::string(h.begin(), h.end()));
    if (known != 0 && known < head.head.size) {
      const Bytes c = kt::encode_consistency_proof(*log->consistency(known, head.head.size));
      p.set_consistency(std::string(c.begin(), c.end()));
    }
    const Bytes s = kt::encode_search_proof(*log->search(user));
    p.set_search(std::string(s.begin(), s.end()));
    return p;
  }
  crypto::DeterministicRng rng;
  kt::MemoryTransparencyStore store;
  std::unique_ptr<kt::TransparencyLog> log;
};

class ClientKtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sotto-client-kt-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store::AccountSettings s;
    s.username = "alice";
    s.device_id = 1;
    s.server_host = "h";
    s.server_port = 1;
    s.auth_key = crypto::Ed25519KeyPair::generate(rng_);
    s.identity = protocol::KeyPair::generate(rng_);
    s.registration_id = protocol::RegistrationId(7);
    s.trust_policy = "on-first-use";
    store_ = std::move(*store::ClientStore::create(dir_, s, std::nullopt));
    // The log's keys, pinned as at the first lookup (so no connection is needed).
    const auto keys = server_.log->public_keys();
    Bytes both(keys.signing_key.begin(), keys.signing_key.end());
    both.insert(both.end(), keys.vrf_key.begin(), keys.vrf_key.end());
    ASSERT_TRUE(store_->save_value(kKtKeysValue, both));
    client_ = std::make_unique<KtClient>(*store_);
  }
  void TearDown() override {
    client_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  Result<std::optional<kt::AccountValue>> check(const std::string& user, const svc::KtProof& p) {
    return client_->verify(nullptr, std::chrono::seconds(1), user, &p);
  }
  static std::string alert_kind(const Error& e) {
    auto a = security_alert_of(e);
    return a ? a->kind : "not an alert: " + e.message;
  }

  fs::path dir_;
  crypto::DeterministicRng rng_{9};
  std::unique_ptr<store::ClientStore> store_;
  Log server_{1};
  std::unique_ptr<KtClient> client_;
};

TEST_F(ClientKtTest, AnHonestProofGivesTheLoggedAccount) {
  server_.put("bob", value(0x42, {1, 2}));
  auto v = check("bob", server_.proof("bob", client_->known_size()));
  ASSERT_TRUE(v) << v.error().message;
  ASSERT_TRUE(*v);
  EXPECT_EQ(**v, value(0x42, {1, 2}));
  EXPECT_EQ(client_->known_size(), server_.log->head().head.size);
  // The head and bob's version outlive the process.
  KtClient again(*store_);
  EXPECT_EQ(again.known_size(), server_.log->head().head.size);
  auto versions = store_->load_value(kKtVersionsValue);
  ASSERT_TRUE(versions && *versions);
  EXPECT_EQ(decode_versions((**versions).view()),
            (std::map<std::string, std::uint32_t>{{"bob", 1}}));
  // The verified devices are remembered (a message starting a session is checked against them).
  const auto key = value(0x42, {}).identity_key;
  EXPECT_TRUE(client_->logged_device("bob", 2, 102, key));
  EXPECT_FALSE(client_->logged_device("bob", 2, 999, key));  // another registration id
  EXPECT_FALSE(client_->logged_device("bob", 3, 103, key));  // a device not logged
  EXPECT_FALSE(client_->logged_device("bob", 2, 102, value(0x43, {}).identity_key));
  EXPECT_FALSE(client_->logged_device("carol", 1, 101, key));
  // A later version, with a consistency proof from the head seen.
  server_.put("bob", value(0x42, {1, 2, 3}));
  v = check("bob", server_.proof("bob", client_->known_size()));
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ((*v)->devices.size(), 3u);
}

TEST_F(ClientKtTest, BundlesOutsideTheLogAreRefused) {
  server_.put("bob", value(0x42, {1}));
  auto v = check("bob", server_.proof("bob", 0));
  ASSERT_TRUE(v && *v);
  google::protobuf::RepeatedPtrField<wire::PreKeyBundle> bundles;
  auto* b = bundles.Add();
  b->set_device_id(1);
  b->set_registration_id(101);
  b->set_identity_key(std::string(reinterpret_cast<const char*>((*v)->identity_key.data()), 33));
  EXPECT_TRUE(KtClient::check_bundles("bob", **v, bundles));
  // A ghost device.
  auto* ghost = bundles.Add();
  *ghost = *b;
  ghost->set_device_id(7);
  auto refused = KtClient::check_bundles("bob", **v, bundles);
  ASSERT_FALSE(refused);
  EXPECT_EQ(alert_kind(refused.error()), "unlogged_key");
  EXPECT_NE(refused.error().message.find("device 7"), std::string::npos);
  // A substituted identity key.
  bundles.RemoveLast();
  std::string other(33, '\x07');
  other[0] = 0x05;
  b->set_identity_key(other);
  refused = KtClient::check_bundles("bob", **v, bundles);
  ASSERT_FALSE(refused);
  EXPECT_EQ(alert_kind(refused.error()), "unlogged_key");
  // A re-installed device (same id, another registration id) not logged.
  b->set_identity_key(std::string(reinterpret_cast<const char*>((*v)->identity_key.data()), 33));
  b->set_registration_id(999);
  EXPECT_FALSE(KtClient::check_bundles("bob", **v, bundles));
  // A device list that hides a logged device, or adds one.
  google::protobuf::RepeatedPtrField<svc::DeviceInfo> listed;
  EXPECT_EQ(alert_kind(KtClient::check_devices("bob", **v, listed).error()), "log_inconsistent");
  auto* d = listed.Add();
  d->set_id(1);
  d->set_registration_id(101);
  EXPECT_TRUE(KtClient::check_devices("bob", **v, listed));
  auto* extra = listed.Add();
  extra->set_id(2);
  extra->set_registration_id(5);
  EXPECT_EQ(alert_kind(KtClient::check_devices("bob", **v, listed).error()), "unlogged_key");
}

TEST_F(ClientKtTest, TamperedProofsAreRefused) {
  server_.put("bob", value(0x42, {1}));
  server_.put("carol", value(0x43, {1}));
  const svc::KtProof good = server_.proof("bob", 0);
  // Every single changed byte of the search proof is refused.
  for (std::size_t i = 0; i < good.search().size(); i += 7) {
    svc::KtProof bad = good;
    std::string s = bad.search();
    s[i] = static_cast<char>(s[i] ^ 0x01);
    bad.set_search(s);
    auto r = check("bob", bad);
    ASSERT_FALSE(r) << "byte " << i;
    EXPECT_EQ(alert_kind(r.error()), "unlogged_key") << "byte " << i;
  }
  // carol's proof for bob.
  auto r = check("bob", server_.proof("carol", 0));
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "unlogged_key");
  // A head signed by another key.
  {
    svc::KtProof bad = good;
    std::string h = bad.tree_head();
    h[100] = static_cast<char>(h[100] ^ 0x01);
    bad.set_tree_head(h);
    r = check("bob", bad);
    ASSERT_FALSE(r);
    EXPECT_EQ(alert_kind(r.error()), "unlogged_key");
  }
  // No proof at all, and an account the log proves absent.
  r = client_->verify(nullptr, std::chrono::seconds(1), "bob", nullptr);
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "unlogged_key");
  r = check("dave", server_.proof("dave", 0));
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "unlogged_key");
  // The honest proof still passes after all that.
  EXPECT_TRUE(check("bob", good));
}

TEST_F(ClientKtTest, AForkedLogAndARolledBackVersionAreInconsistent) {
  server_.put("bob", value(0x42, {1}));
  ASSERT_TRUE(check("bob", server_.proof("bob", 0)));
  // Another log under the same keys, one that never had this entry: a fork.
  Log fork(2);
  fork.put("bob", value(0x42, {1, 9}));
  fork.put("carol", value(0x43, {1}));
  auto r = check("bob", fork.proof("bob", client_->known_size()));
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "log_inconsistent");
  // A head smaller than the one seen (a log that lost entries).
  Log shorter(3);
  r = check("bob", shorter.proof("bob", 0));
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "log_inconsistent");
  // A version lower than one this device saw before.
  ASSERT_TRUE(store_->save_value(kKtVersionsValue, encode_versions({{"bob", 5}})));
  KtClient remembering(*store_);
  r = remembering.verify(nullptr, std::chrono::seconds(1), "bob",
                         &*std::make_unique<svc::KtProof>(server_.proof("bob", 0)));
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "log_inconsistent");
}

// What the server answers to a gossip check (server/keys.cpp, on_kt_consistency), from a log.
Result<svc::Response> consistency_answer(const kt::TransparencyLog& log, const svc::Request& r,
                                         int* asked) {
  ++*asked;
  svc::Response out;
  const auto& q = r.kt_consistency();
  if (q.old_size() == 0 || q.old_size() > q.new_size() || q.new_size() > log.head().head.size) {
    out.mutable_status()->set_code(svc::BAD_REQUEST);
    return out;
  }
  const auto str = [](const Bytes& b) { return std::string(b.begin(), b.end()); };
  out.mutable_status()->set_code(svc::OK);
  auto* m = out.mutable_kt_consistency();
  m->set_old_head(str(kt::encode_signed_tree_head(*log.head_at(q.old_size()))));
  m->set_new_head(str(kt::encode_signed_tree_head(*log.head_at(q.new_size()))));
  m->set_consistency(
      str(kt::encode_consistency_proof(*log.consistency(q.old_size(), q.new_size()))));
  return out;
}

Bytes encoded(const kt::SignedTreeHead& h) {
  return kt::encode_signed_tree_head(h);
}

TEST_F(ClientKtTest, GossipedHeadsOfTheSameLogPassAndANewerOneIsTaken) {
  EXPECT_TRUE(client_->gossip_head().empty());  // nothing verified yet: nothing to send
  server_.put("bob", value(0x42, {1}));
  server_.put("carol", value(0x43, {1}));
  ASSERT_TRUE(check("bob", server_.proof("bob", 0)));
  const std::uint64_t size = client_->known_size();
  EXPECT_EQ(client_->gossip_head(), encoded(server_.log->head()));
  int asked = 0;
  const KtClient::Ask ask = [&](svc::Request r) {
    return consistency_answer(*server_.log, r, &asked);
  };
  // The same head, and an older one of the same log.
  auto alerts = client_->check_gossip(ask, "bob", encoded(server_.log->head()));
  ASSERT_TRUE(alerts) << alerts.error().message;
  EXPECT_TRUE(alerts->empty());
  EXPECT_EQ(asked, 0);
  alerts = client_->check_gossip(ask, "bob", encoded(*server_.log->head_at(size - 1)));
  ASSERT_TRUE(alerts) << alerts.error().message;
  EXPECT_TRUE(alerts->empty());
  EXPECT_EQ(asked, 1);
  // Checked once: the next message with that head costs nothing.
  ASSERT_TRUE(client_->check_gossip(ask, "bob", encoded(*server_.log->head_at(size - 1))));
  EXPECT_EQ(asked, 1);
  // A newer head, proven to extend ours, becomes ours (and is the one this device sends).
  server_.put("dave", value(0x44, {1}));
  alerts = client_->check_gossip(ask, "carol", encoded(server_.log->head()));
  ASSERT_TRUE(alerts) << alerts.error().message;
  EXPECT_TRUE(alerts->empty());
  EXPECT_EQ(client_->known_size(), size + 1);
  EXPECT_EQ(client_->gossip_head(), encoded(server_.log->head()));
  KtClient again(*store_);
  EXPECT_EQ(again.gossip_head(), encoded(server_.log->head()));
}

TEST_F(ClientKtTest, AHeadFromAnotherViewOfTheLogIsASplitView) {
  server_.put("bob", value(0x42, {1}));
  ASSERT_TRUE(check("bob", server_.proof("bob", 0)));
  int asked = 0;
  const KtClient::Ask ask = [&](svc::Request r) {
    return consistency_answer(*server_.log, r, &asked);
  };
  // Another log under the same keys: bob was shown it.
  Log fork(2);
  fork.put("bob", value(0x42, {1, 9}));
  ASSERT_EQ(fork.log->head().head.size, server_.log->head().head.size);
  // Same size, another head: caught without asking.
  auto alerts = client_->check_gossip(ask, "bob", encoded(fork.log->head()));
  ASSERT_TRUE(alerts) << alerts.error().message;
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ((*alerts)[0].kind, Event::Kind::security_alert);
  EXPECT_EQ((*alerts)[0].alert, "split_view");
  EXPECT_EQ((*alerts)[0].user, "bob");
  EXPECT_NE((*alerts)[0].detail.find("different users different logs"), std::string::npos);
  EXPECT_EQ(asked, 0);
  // Reported once per sender and head.
  alerts = client_->check_gossip(ask, "bob", encoded(fork.log->head()));
  ASSERT_TRUE(alerts);
  EXPECT_TRUE(alerts->empty());
  // A larger head of the fork: the server this device talks to never signed that size.
  fork.put("erin", value(0x45, {1}));
  alerts = client_->check_gossip(ask, "carol", encoded(fork.log->head()));
  ASSERT_TRUE(alerts) << alerts.error().message;
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ((*alerts)[0].alert, "split_view");
  EXPECT_EQ(asked, 1);
  // Our view did not move to the fork's.
  EXPECT_EQ(client_->known_size(), server_.log->head().head.size);
  // Our log grows past the fork; the fork's head then is an older one that ours does not extend.
  server_.put("frank", value(0x46, {1}));
  server_.put("gina", value(0x47, {1}));
  ASSERT_TRUE(check("bob", server_.proof("bob", client_->known_size())));
  alerts = client_->check_gossip(ask, "dave", encoded(fork.log->head()));
  ASSERT_TRUE(alerts) << alerts.error().message;
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ((*alerts)[0].alert, "split_view");
  // A server that answers with a proof that does not hold is caught as well.
  const KtClient::Ask lying = [&](svc::Request r) {
    auto out = consistency_answer(*server_.log, r, &asked);
    std::string p = out->kt_consistency().consistency();
    if (!p.empty()) p[p.size() - 1] = static_cast<char>(p[p.size() - 1] ^ 0x01);
    out->mutable_kt_consistency()->set_consistency(p);
    return out;
  };
  alerts = client_->check_gossip(lying, "erin", encoded(*server_.log->head_at(2)));
  ASSERT_TRUE(alerts) << alerts.error().message;
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ((*alerts)[0].alert, "split_view");
}

TEST_F(ClientKtTest, GossipThatIsNotTheLogsIsIgnored) {
  server_.put("bob", value(0x42, {1}));
  ASSERT_TRUE(check("bob", server_.proof("bob", 0)));
  int asked = 0;
  const KtClient::Ask ask = [&](svc::Request r) {
    return consistency_answer(*server_.log, r, &asked);
  };
  // A sender can put anything in its message: bytes that are no head, or a head not signed by
  // the log, say nothing about the log.
  Bytes forged = encoded(server_.log->head());
  forged[60] ^= 0x01;
  for (const Bytes& junk : {Bytes{}, Bytes(111, 0), Bytes(112, 0xff), forged}) {
    auto alerts = client_->check_gossip(ask, "mallory", junk);
    ASSERT_TRUE(alerts) << alerts.error().message;
    EXPECT_TRUE(alerts->empty());
  }
  EXPECT_EQ(asked, 0);
  // A request that fails is an error, not an alert; the next message checks again.
  const KtClient::Ask down = [](svc::Request) -> Result<svc::Response> {
    return tl::unexpected(make_error(ErrorCode::network, "down"));
  };
  server_.put("carol", value(0x43, {1}));
  EXPECT_FALSE(client_->check_gossip(down, "carol", encoded(server_.log->head())));
  auto alerts = client_->check_gossip(ask, "carol", encoded(server_.log->head()));
  ASSERT_TRUE(alerts);
  EXPECT_TRUE(alerts->empty());
  EXPECT_EQ(asked, 1);
}

// A new device pins the log its account sent in the link (pin_log_from_link), before any lookup:
// a server that then shows a log under other keys, or a fork of the head the link carried, is
// refused.
TEST_F(ClientKtTest, TheLogALinkCarriesIsPinnedBeforeAnyLookup) {
  server_.put("bob", value(0x42, {1}));
  const auto keys = server_.log->public_keys();
  Bytes both(keys.signing_key.begin(), keys.signing_key.end());
  both.insert(both.end(), keys.vrf_key.begin(), keys.vrf_key.end());
  const Bytes head = kt::encode_signed_tree_head(server_.log->head());
  ASSERT_TRUE(store_->remove_value(kKtKeysValue));
  ASSERT_TRUE(pin_log_from_link(*store_, both, head));
  KtClient fresh(*store_);
  EXPECT_EQ(fresh.known_size(), server_.log->head().head.size);
  const auto [carried_keys, carried_head] = fresh.pinned_for_link();
  EXPECT_EQ(carried_keys, both);
  EXPECT_EQ(carried_head, head);

  Log other(4, 0x33);  // another log's keys
  other.put("bob", value(0x42, {1}));
  auto r = fresh.verify(nullptr, std::chrono::seconds(1), "bob",
                        &*std::make_unique<svc::KtProof>(other.proof("bob", 0)));
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "unlogged_key");  // not signed by the pinned key
  Log fork(2);                                       // the same keys, another history
  fork.put("carol", value(0x43, {1}));
  fork.put("bob", value(0x42, {1, 9}));
  r = fresh.verify(nullptr, std::chrono::seconds(1), "bob",
                   &*std::make_unique<svc::KtProof>(fork.proof("bob", fresh.known_size())));
  ASSERT_FALSE(r);
  EXPECT_EQ(alert_kind(r.error()), "log_inconsistent");
  // The honest log passes.
  server_.put("bob", value(0x42, {1, 2}));
  EXPECT_TRUE(
      fresh.verify(nullptr, std::chrono::seconds(1), "bob",
                   &*std::make_unique<svc::KtProof>(server_.proof("bob", fresh.known_size()))));
}

TEST_F(ClientKtTest, ALinkWithMalformedOrMismatchedLogValuesPinsNoneOfThem) {
  ASSERT_TRUE(store_->remove_value(kKtKeysValue));
  auto r = pin_log_from_link(*store_, Bytes(63, 1), {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::protocol);
  auto pinned = store_->load_value(kKtKeysValue);
  ASSERT_TRUE(pinned);
  EXPECT_FALSE(*pinned);
  // Nothing carried (a linking device that pinned no log): nothing pinned, no error.
  EXPECT_TRUE(pin_log_from_link(*store_, {}, {}));
  // A head not signed by the carried keys: the keys are pinned, the head is not.
  Log other(4, 0x33);
  const auto keys = server_.log->public_keys();
  Bytes both(keys.signing_key.begin(), keys.signing_key.end());
  both.insert(both.end(), keys.vrf_key.begin(), keys.vrf_key.end());
  EXPECT_TRUE(pin_log_from_link(*store_, both, kt::encode_signed_tree_head(other.log->head())));
  auto head = store_->load_value(kKtHeadValue);
  ASSERT_TRUE(head);
  EXPECT_FALSE(*head);
  KtClient fresh(*store_);
  EXPECT_EQ(fresh.known_size(), 0u);
  EXPECT_EQ(fresh.pinned_for_link().first, both);
}

// What the account's other devices say of their links and removals (record_own_device_change):
// a link expected, devices named (a later name of the same id replaces the earlier), a removal
// forgetting the name.
TEST_F(ClientKtTest, OwnDeviceChangesAreRecordedForMonitoring) {
  OwnDeviceChange started;
  started.link_started = true;
  ASSERT_TRUE(record_own_device_change(*store_, started));
  auto linking = store_->load_value(kKtLinkingValue);
  ASSERT_TRUE(linking);
  EXPECT_TRUE(*linking);
  const auto expected = [&] {
    auto v = store_->load_value(kKtExpectedValue);
    EXPECT_TRUE(v && *v);
    auto decoded = kt::decode_account_value((**v).view());
    EXPECT_TRUE(decoded);
    std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
    for (const auto& d : decoded->devices) out.emplace_back(d.device_id, d.registration_id);
    return out;
  };
  OwnDeviceChange named;
  named.device_id = 5;
  named.registration_id = 55;
  named.auth_key = std::array<std::uint8_t, 32>{};
  (*named.auth_key)[0] = 9;
  ASSERT_TRUE(record_own_device_change(*store_, named));
  named.device_id = 3;
  named.registration_id = 33;
  ASSERT_TRUE(record_own_device_change(*store_, named));
  named.registration_id = 34;
  ASSERT_TRUE(record_own_device_change(*store_, named));
  EXPECT_EQ(expected(), (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{3, 34}, {5, 55}}));
  OwnDeviceChange removed;
  removed.device_id = 5;
  removed.removed = true;
  ASSERT_TRUE(record_own_device_change(*store_, removed));
  EXPECT_EQ(expected(), (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{3, 34}}));
  // A damaged list is replaced, not a reason to stop.
  ASSERT_TRUE(store_->save_value(kKtExpectedValue, Bytes{1, 2, 3}));
  ASSERT_TRUE(record_own_device_change(*store_, named));
  EXPECT_EQ(expected(), (std::vector<std::pair<std::uint32_t, std::uint32_t>>{{3, 34}}));
}

TEST(ClientKtValues, AnAlertErrorSaysItsKindUserAndDetail) {
  const Error e = security_alert_error("unlogged_key", "bob", "device 7: not logged: really");
  EXPECT_EQ(e.code, ErrorCode::security_alert);
  auto a = security_alert_of(e);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->kind, "unlogged_key");
  EXPECT_EQ(a->user, "bob");
  EXPECT_EQ(a->detail, "device 7: not logged: really");
  EXPECT_FALSE(security_alert_of(make_error(ErrorCode::server, "security alert (x) for y: z")));
  EXPECT_FALSE(security_alert_of(make_error(ErrorCode::security_alert, "garbled")));
}

TEST(ClientKtValues, VersionsSurviveTheirEncodingAndBadLinesAreDropped) {
  const std::map<std::string, std::uint32_t> v{{"alice", 3}, {"bob", 4294967295u}};
  EXPECT_EQ(decode_versions(encode_versions(v)), v);
  const std::string text = "alice 3\nBAD 1\ncarol x\ndan 4294967296\nerin 7";
  EXPECT_EQ(decode_versions(as_bytes(text)), (std::map<std::string, std::uint32_t>{{"alice", 3}}));
}

}  // namespace
}  // namespace sotto::client

namespace sotto::client {
namespace {

// An auditor's co-signature as a lookup answer carries it: of the log's head of `size`, made at
// `time_ms`, with a consistency proof to the log's current head.
void add_cosignature(svc::KtProof& p, const kt::TransparencyLog& log,
                     const crypto::Ed25519KeyPair& auditor, std::uint64_t size,
                     std::uint64_t time_ms) {
  const auto cosigned = *log.head_at(size);
  const auto current = log.head().head.size;
  auto* c = p.add_cosignatures();
  const Bytes h = kt::encode_signed_tree_head(cosigned);
  const auto sig = kt::cosign_tree_head_at(cosigned.head, time_ms, auditor);
  c->set_auditor_key(std::string(auditor.public_key().begin(), auditor.public_key().end()));
  c->set_tree_head(std::string(h.begin(), h.end()));
  c->set_time_ms(time_ms);
  c->set_signature(std::string(sig.begin(), sig.end()));
  if (size < current) {
    const Bytes proof = kt::encode_consistency_proof(*log.consistency(size, current));
    c->set_consistency(std::string(proof.begin(), proof.end()));
  }
}

crypto::Ed25519KeyPair auditor_key(std::uint8_t b) {
  return crypto::Ed25519KeyPair::from_seed(crypto::Secret<32>{ByteView(Bytes(32, b))});
}

class ClientKtAuditorTest : public ClientKtTest {
 protected:
  void SetUp() override {
    ClientKtTest::SetUp();
    server_.put("bob", value(0x42, {1}));
    cosigned_size_ = server_.log->head().head.size;
    server_.put("carl", value(0x43, {1}));
    ASSERT_TRUE(client_->set_required_auditor(AuditorRequirement{auditor_.public_key(), kHour}));
    client_->set_clock([this] { return now_; });
  }
  // The refusal's detail, or "accepted".
  std::string outcome(const svc::KtProof& p) {
    auto v = check("bob", p);
    if (v) return "accepted";
    EXPECT_EQ(alert_kind(v.error()), "unlogged_key");
    return v.error().message;
  }

  static constexpr std::uint64_t kHour = 3600 * 1000;
  crypto::Ed25519KeyPair auditor_ = auditor_key(0x51);
  std::uint64_t cosigned_size_ = 0;
  std::uint64_t now_ = kNow + 1000;
};

TEST_F(ClientKtAuditorTest, AFreshConsistentCoSignatureIsRequired) {
  // None at all: refused, and the head is not taken.
  svc::KtProof p = server_.proof("bob", 0);
  EXPECT_NE(outcome(p).find("carries no co-signature by the required auditor"), std::string::npos);
  EXPECT_EQ(client_->known_size(), 0u);
  // Another auditor's does not count.
  svc::KtProof other = p;
  add_cosignature(other, *server_.log, auditor_key(0x52), cosigned_size_, kNow);
  EXPECT_NE(outcome(other).find("no co-signature"), std::string::npos);
  // Too old.
  svc::KtProof old = p;
  add_cosignature(old, *server_.log, auditor_, cosigned_size_, now_ - kHour - 1);
  EXPECT_NE(outcome(old).find("s old"), std::string::npos);
  // A signature over another time.
  svc::KtProof forged = p;
  add_cosignature(forged, *server_.log, auditor_, cosigned_size_, kNow);
  forged.mutable_cosignatures(0)->set_time_ms(now_);
  EXPECT_NE(outcome(forged).find("does not verify"), std::string::npos);
  // A consistency proof that does not lead to the answer's head.
  svc::KtProof inconsistent = p;
  add_cosignature(inconsistent, *server_.log, auditor_, cosigned_size_, kNow);
  inconsistent.mutable_cosignatures(0)->set_consistency(std::string(33, '\1'));
  EXPECT_NE(outcome(inconsistent).find("not consistent"), std::string::npos);
  // A co-signed head beyond the answer's.
  svc::KtProof same = p;
  add_cosignature(same, *server_.log, auditor_, server_.log->head().head.size, kNow);
  server_.put("dora", value(0x44, {1}));
  svc::KtProof beyond = p;
  add_cosignature(beyond, *server_.log, auditor_, server_.log->head().head.size, kNow);
  EXPECT_NE(outcome(beyond).find("not consistent"), std::string::npos);
  // One of the answer's own head (no consistency proof needed): accepted.
  EXPECT_EQ(outcome(same), "accepted");

  // A fresh one, exactly at the limit, with a proof to the newest head: accepted.
  svc::KtProof good = server_.proof("bob", client_->known_size());
  add_cosignature(good, *server_.log, auditor_, cosigned_size_, now_ - kHour);
  EXPECT_EQ(outcome(good), "accepted");
  // Off: none needed.
  ASSERT_TRUE(client_->set_required_auditor(std::nullopt));
  EXPECT_EQ(outcome(server_.proof("bob", client_->known_size())), "accepted");
}

TEST_F(ClientKtAuditorTest, TheRequirementIsKeptInTheStore) {
  KtClient again(*store_);
  auto r = again.required_auditor();
  ASSERT_TRUE(r);
  ASSERT_TRUE(*r);
  EXPECT_EQ(**r, (AuditorRequirement{auditor_.public_key(), kHour}));
  // A damaged value requires what cannot be met, never nothing.
  ASSERT_TRUE(store_->save_value(kKtRequireAuditorValue, Bytes(5, 1)));
  KtClient damaged(*store_);
  r = damaged.required_auditor();
  ASSERT_TRUE(r && *r);
  svc::KtProof p = server_.proof("bob", 0);
  add_cosignature(p, *server_.log, auditor_, cosigned_size_, kNow);
  EXPECT_FALSE(damaged.verify(nullptr, std::chrono::seconds(1), "bob", &p));
}

}  // namespace
}  // namespace sotto::client
