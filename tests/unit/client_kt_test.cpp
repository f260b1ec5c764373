// The client's key transparency check (client/kt.h) against a real log from the library: an
// honest proof gives the logged account, and every tampering is refused with the right kind of
// security alert: a changed proof, a head not signed by the pinned key, no proof at all, a bundle
// for a device or identity key the log does not hold, a forked log, a version rolled back.
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
  explicit Log(std::uint8_t seed) : rng(seed) {
    crypto::Secret<32> vrf_secret{ByteView(Bytes(32, 0x11))};
    crypto::Secret<32> signing{ByteView(Bytes(32, 0x22))};
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
