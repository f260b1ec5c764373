// Auditing through the server's real request handlers (server/keys.cpp, service.proto fields 62
// and 63) over the real SQLite store: audit answers to a connection that never logs in, paged,
// from the end of the log the head alone; co-signatures refused for an unconfigured auditor, a
// malformed request, a head the log did not sign and a bad signature, kept otherwise and handed
// out with every lookup and monitoring answer; the shared per-address rate limit.
// sotto-audit's answer check and records file (apps/sotto-audit/audit_core.h), with malformed
// and torn input.
#include <cctype>

#include "audit_core.h"
#include "crypto/encoding.h"
#include "server/kt.h"
#include "server/limits.h"
#include "util/server_harness.h"

namespace sotto::testing {
namespace {

namespace kt = transparency;

crypto::Ed25519KeyPair key_of(std::uint8_t b) {
  return crypto::Ed25519KeyPair::from_seed(crypto::Secret<32>{ByteView(Bytes(32, b))});
}

ByteView as_view(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string str_of(ByteView b) {
  return std::string(b.begin(), b.end());
}

class ServerAuditTest : public ServerHarness {
 protected:
  server::ServerConfig config() const override {
    server::ServerConfig c;
    c.registrations_per_minute = 1000;
    c.kt_auditors = {auditor_.public_key()};
    return c;
  }
  void SetUp() override {
    ServerHarness::SetUp();
    auto opened = server::KeyTransparency::open_with_keys(
        kt::VrfKeyPair::from_secret(crypto::Secret<32>{ByteView(Bytes(32, 0x11))}), key_of(0x22),
        *store_->kt(), rng_, [] { return kNowMs; });
    ASSERT_TRUE(opened) << opened.error();
    kt_ = std::move(*opened);
    ASSERT_TRUE(kt_->set_auditors(config().kt_auditors));
    server_->set_key_transparency(kt_.get());
  }
  void TearDown() override {
    server_.reset();
    kt_.reset();
    ServerHarness::TearDown();
  }

  svc::Response audit(Client& c, std::uint64_t start, std::uint32_t count) {
    svc::Request r;
    r.mutable_kt_audit()->set_start(start);
    r.mutable_kt_audit()->set_count(count);
    return call(c, r);
  }
  svc::Request cosign_request(const kt::SignedTreeHead& head, const crypto::Ed25519KeyPair& key,
                              std::uint64_t time_ms) {
    svc::Request r;
    auto* c = r.mutable_kt_cosign();
    c->set_auditor_key(str_of(key.public_key()));
    c->set_tree_head(str_of(kt::encode_signed_tree_head(head)));
    c->set_signature(str_of(kt::cosign_tree_head_at(head.head, time_ms, key)));
    c->set_time_ms(time_ms);
    return r;
  }
  // What sotto-audit does: replays every record the server answers.
  kt::SignedTreeHead replay(Client& c, kt::Auditor& auditor) {
    std::vector<Bytes> accepted;
    for (;;) {
      const auto a = audit(c, auditor.size(), 2);
      EXPECT_EQ(a.status().code(), svc::OK) << a.status().message();
      auto head = audit::apply_answer(auditor, kt_->public_keys(), a.kt_audit(), accepted);
      EXPECT_TRUE(head) << head.error().message;
      if (!head || auditor.size() >= head->head.size) return head.value_or(kt::SignedTreeHead{});
    }
  }

  crypto::Ed25519KeyPair auditor_ = key_of(0x33);
  std::unique_ptr<server::KeyTransparency> kt_;
};

TEST_F(ServerAuditTest, AnAuditorReplaysTheLogAndItsCoSignatureReachesLookups) {
  Client alice("alice", 1, 1), bob("bob", 2, 2), auditor("auditor", 3, 3);
  join(alice);
  join(bob);
  server_->on_open(auditor.conn, {});  // never logs in
  kt::Auditor replayed(kt_->public_keys());
  const auto head = replay(auditor, replayed);
  EXPECT_EQ(head, kt_->log().head());
  EXPECT_EQ(replayed.size(), 3u);
  ASSERT_TRUE(audit::check_head(replayed, head));
  // From the end of the log: the head alone.
  const auto end = audit(auditor, 3, 10);
  EXPECT_EQ(end.kt_audit().records_size(), 0);
  EXPECT_EQ(end.kt_audit().tree_head(), str_of(kt::encode_signed_tree_head(head)));
  // count 0 is refused; a count above the maximum is cut to it.
  EXPECT_EQ(audit(auditor, 0, 0).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(audit(auditor, 0, 1u << 30).kt_audit().records_size(), 3);

  // Co-signatures: refused from an auditor the operator did not configure, malformed, over a
  // head the log did not sign, with a signature over something else; then kept.
  EXPECT_EQ(call(auditor, cosign_request(head, key_of(0x44), kNowMs)).status().code(),
            svc::FORBIDDEN);
  svc::Request malformed = cosign_request(head, auditor_, kNowMs);
  malformed.mutable_kt_cosign()->set_tree_head("short");
  EXPECT_EQ(call(auditor, malformed).status().code(), svc::BAD_REQUEST);
  malformed = cosign_request(head, auditor_, kNowMs);
  malformed.mutable_kt_cosign()->set_auditor_key("");
  EXPECT_EQ(call(auditor, malformed).status().code(), svc::BAD_REQUEST);
  kt::SignedTreeHead other = head;
  other.head.timestamp_ms += 1;
  EXPECT_EQ(call(auditor, cosign_request(other, auditor_, kNowMs)).status().code(),
            svc::BAD_REQUEST);
  svc::Request forged = cosign_request(head, auditor_, kNowMs);
  forged.mutable_kt_cosign()->set_time_ms(kNowMs + 1);
  EXPECT_EQ(call(auditor, forged).status().code(), svc::BAD_REQUEST);
  EXPECT_TRUE(store_->kt()->cosignatures()->empty());
  ASSERT_EQ(call(auditor, cosign_request(head, auditor_, kNowMs)).status().code(), svc::OK);
  EXPECT_EQ(store_->kt()->cosignatures()->size(), 1u);

  // The log moves on (a third account); alice's lookup of bob carries the co-signature with a
  // consistency proof from the co-signed head.
  Client carol("carol", 4, 4);
  join(carol);
  svc::Request fetch;
  fetch.mutable_fetch_bundles()->set_username("bob");
  const auto bundles = call(alice, fetch);
  ASSERT_EQ(bundles.status().code(), svc::OK) << bundles.status().message();
  ASSERT_EQ(bundles.fetch_bundles().kt().cosignatures_size(), 1);
  const auto& c = bundles.fetch_bundles().kt().cosignatures(0);
  EXPECT_EQ(c.auditor_key(), str_of(auditor_.public_key()));
  EXPECT_EQ(c.time_ms(), kNowMs);
  auto answer_head = kt::decode_signed_tree_head(as_view(bundles.fetch_bundles().kt().tree_head()));
  auto proof = kt::decode_consistency_proof(as_view(c.consistency()));
  ASSERT_TRUE(answer_head && proof);
  EXPECT_EQ(answer_head->head.size, 4u);
  EXPECT_TRUE(kt::verify_consistency_proof(head.head, answer_head->head, *proof));
  // And so does the monitoring answer.
  svc::Request monitor;
  monitor.mutable_kt_monitor();
  const auto m = call(alice, monitor);
  ASSERT_EQ(m.status().code(), svc::OK);
  EXPECT_EQ(m.kt_monitor().cosignatures_size(), 1);
}

TEST_F(ServerAuditTest, AuditRequestsAreRateLimitedPerAddress) {
  Client auditor("auditor", 3, 3);
  server_->on_open(auditor.conn, {});
  int limited = 0;
  for (std::uint32_t i = 0; i < server::kKtAuditsBurst + 5; ++i) {
    if (audit(auditor, 0, 1).status().code() == svc::RATE_LIMITED) ++limited;
  }
  EXPECT_GE(limited, 5);
}

TEST_F(ServerAuditTest, TheAuditorRefusesMalformedAnswersAndNamesMisbehaviour) {
  Client alice("alice", 1, 1), auditor("auditor", 3, 3);
  join(alice);
  server_->on_open(auditor.conn, {});
  const auto good = audit(auditor, 0, 10).kt_audit();
  ASSERT_EQ(good.records_size(), 2);
  std::vector<Bytes> accepted;
  {
    kt::Auditor a(kt_->public_keys());
    auto bad = good;
    bad.set_tree_head("x");
    auto r = audit::apply_answer(a, kt_->public_keys(), bad, accepted);
    ASSERT_FALSE(r);
    EXPECT_FALSE(r.error().misbehaved);
    // A record cut short.
    bad = good;
    bad.set_records(1, bad.records(1).substr(0, 10));
    r = audit::apply_answer(a, kt_->public_keys(), bad, accepted);
    ASSERT_FALSE(r);
    EXPECT_FALSE(r.error().misbehaved);
    EXPECT_NE(r.error().message.find("entry 1 is malformed"), std::string::npos);
  }
  {
    // Entry 1 left out (a dropped entry): entry 2's record is offered as entry 1.
    Client bob("bob", 2, 2);
    join(bob);
    const auto three = audit(auditor, 0, 10).kt_audit();
    ASSERT_EQ(three.records_size(), 3);
    auto dropped = three;
    dropped.mutable_records()->DeleteSubrange(1, 1);
    kt::Auditor a(kt_->public_keys());
    accepted.clear();
    auto r = audit::apply_answer(a, kt_->public_keys(), dropped, accepted);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().misbehaved);
    EXPECT_NE(r.error().message.find("entry 1 does not extend"), std::string::npos);
    // A head of another size than the replay gives: the replay is not that log.
    kt::Auditor full(kt_->public_keys());
    accepted.clear();
    ASSERT_TRUE(audit::apply_answer(full, kt_->public_keys(), three, accepted));
    // A shrunk log: a smaller head than replayed.
    auto shrunk = three;
    shrunk.clear_records();
    shrunk.set_tree_head(str_of(kt::encode_signed_tree_head(*kt_->log().head_at(2))));
    r = audit::apply_answer(full, kt_->public_keys(), shrunk, accepted);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().misbehaved);
    EXPECT_NE(r.error().message.find("the log shrank"), std::string::npos);
    // An unsigned head whose root is not the replay's.
    auto head = *kt::decode_signed_tree_head(as_view(three.tree_head()));
    head.head.root[0] ^= 1;
    auto checked = audit::check_head(full, head);
    ASSERT_FALSE(checked);
    EXPECT_FALSE(checked.error().misbehaved);  // not the log's signature: not its word
  }
}

TEST(AuditRecordsFile, TornAndDamagedTailsAreCutOff) {
  const Bytes a(100, 0xAA), b(7, 0xBB);
  Bytes file = audit::frame_record(a);
  const std::size_t first = file.size();
  const Bytes fb = audit::frame_record(b);
  file.insert(file.end(), fb.begin(), fb.end());
  auto all = audit::parse_records_file(file);
  EXPECT_EQ(all.records, (std::vector<Bytes>{a, b}));
  EXPECT_EQ(all.valid_bytes, file.size());
  // A write a crash cut short, at every length.
  for (std::size_t n = first; n < file.size(); ++n) {
    auto torn = audit::parse_records_file(ByteView(file).first(n));
    EXPECT_EQ(torn.records, std::vector<Bytes>{a});
    EXPECT_EQ(torn.valid_bytes, first);
  }
  // A damaged byte in the second record: only the first is kept.
  Bytes damaged = file;
  damaged[first + 5] ^= 1;
  auto kept = audit::parse_records_file(damaged);
  EXPECT_EQ(kept.records, std::vector<Bytes>{a});
  EXPECT_EQ(kept.valid_bytes, first);
  // A length no file holds.
  EXPECT_TRUE(audit::parse_records_file(Bytes{0xFF, 0xFF, 0xFF, 0xFF, 1}).records.empty());
}

// --pin as the user types it (sotto-audit main.cpp): either case, colons and spaces between the
// digits, as `sotto server trust` takes it; stored and compared lowercase.
TEST(AuditArguments, PinsAreNormalisedAndMalformedOnesRefused) {
  const std::string lower(64, 'a');
  EXPECT_EQ(audit::normalize_pin(lower), lower);
  EXPECT_EQ(audit::normalize_pin(std::string(64, 'A')), lower);
  std::string spaced;
  for (std::size_t i = 0; i < 32; ++i) spaced += (i ? ":" : "") + std::string("Aa");
  EXPECT_EQ(audit::normalize_pin(spaced), lower);
  EXPECT_EQ(audit::normalize_pin("  " + lower + "\n"), lower);  // a file's trailing newline
  EXPECT_EQ(audit::normalize_pin("0123456789ABCDEF" + std::string(48, '0')),
            "0123456789abcdef" + std::string(48, '0'));
  for (const std::string& bad :
       {std::string(), std::string("xyz"), std::string(63, 'a'), std::string(65, 'a'),
        std::string(62, 'a') + "gg", std::string(63, 'a') + "-", std::string(64, 'a') + "x"}) {
    EXPECT_FALSE(audit::normalize_pin(bad)) << bad;
  }
}

// --log-keys as `sotto-server kt-keys` prints them, the whole line pasted included.
TEST(AuditArguments, LogKeysParseAsPrintedAndMalformedOnesAreRefused) {
  kt::LogPublicKeys keys;
  for (std::size_t i = 0; i < 32; ++i) {
    keys.signing_key[i] = static_cast<std::uint8_t>(i);
    keys.vrf_key[i] = static_cast<std::uint8_t>(0xF0 + i / 2);
  }
  const std::string text = audit::log_keys_text(keys);
  EXPECT_EQ(text.size(), 129u);
  EXPECT_EQ(text, crypto::to_hex(keys.signing_key) + ":" + crypto::to_hex(keys.vrf_key));
  std::string upper = text;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const std::string& good :
       {text, upper, "kt keys: " + text, "  kt keys:" + text + "  \n", " " + text + " "}) {
    const auto parsed = audit::parse_log_keys(good);
    ASSERT_TRUE(parsed) << good;
    EXPECT_EQ(parsed->signing_key, keys.signing_key);
    EXPECT_EQ(parsed->vrf_key, keys.vrf_key);
  }
  const std::string s = crypto::to_hex(keys.signing_key), v = crypto::to_hex(keys.vrf_key);
  for (const std::string& bad :
       {std::string(), std::string("abc"), s, s + ":", ":" + v, s + v, s + ":" + v + ":",
        s + " : " + v, s.substr(2) + ":" + v, s + ":" + v + "00", "kt keys " + text,
        "keys: " + text, "kt keys: kt keys: " + text, s + ":" + v.substr(0, 62) + "zz"}) {
    EXPECT_FALSE(audit::parse_log_keys(bad)) << bad;
  }
}

}  // namespace
}  // namespace sotto::testing
