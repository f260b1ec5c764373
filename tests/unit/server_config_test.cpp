// Server configuration parsing, usernames, rate limits and metrics rendering.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "server/config.h"
#include "server/metrics.h"
#include "server/rate_limiter.h"
#include "server/server.h"

namespace sotto::server {
namespace {

TEST(Endpoint, ParsesAndRejects) {
  auto e = parse_endpoint("0.0.0.0:8443");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "0.0.0.0");
  EXPECT_EQ(e->port, 8443);
  EXPECT_EQ(parse_endpoint(":9000")->host, "127.0.0.1");
  for (const char* bad : {"", "host", "host:", "host:65536", "host:12ab", ":-1"}) {
    EXPECT_FALSE(parse_endpoint(bad)) << bad;
  }
}

TEST(Config, DefaultsWorkWithoutAFile) {
  ServerConfig c;
  EXPECT_EQ(c.listen.port, 7443);
  EXPECT_EQ(c.http.host, "127.0.0.1");
  EXPECT_FALSE(c.invite_only);
  EXPECT_EQ(c.message_ttl_days, 30u);
}

TEST(Config, TomlOverridesDefaults) {
  auto c = apply_toml_text(ServerConfig{}, R"(
listen = "0.0.0.0:9443"
http = "127.0.0.1:9480"
invite_only = true
max_queue_per_device = 500
message_ttl_days = 7
log_level = "warn"
data = "/srv/sotto"
tls_next_key = "/srv/sotto/next.pem"
)");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->listen.host, "0.0.0.0");
  EXPECT_EQ(c->listen.port, 9443);
  EXPECT_EQ(c->http.port, 9480);
  EXPECT_TRUE(c->invite_only);
  EXPECT_EQ(c->max_queue_per_device, 500u);
  EXPECT_EQ(c->message_ttl_days, 7u);
  EXPECT_EQ(c->log_level, "warn");
  EXPECT_EQ(c->data_dir, "/srv/sotto");
  EXPECT_EQ(c->tls_next_key, "/srv/sotto/next.pem");
}

// `store` (docs/operations.md): SQLite by default, or a PostgreSQL URI; anything else stops the
// server at start with a message naming the key.
TEST(Config, StoreIsSqliteOrAPostgresUri) {
  EXPECT_EQ(ServerConfig{}.store, "");
  for (const char* good : {"sqlite", "postgresql://sotto@db.example:5432/sotto",
                           "postgres://sotto@%2Fvar%2Frun%2Fpostgresql/sotto"}) {
    auto c = apply_toml_text(ServerConfig{}, std::string("store = \"") + good + "\"\n");
    ASSERT_TRUE(c) << good << ": " << c.error();
    EXPECT_EQ(c->store, good);
    EXPECT_TRUE(check_config(*c)) << good;
  }
  for (const char* bad : {"mysql://x/y", "/var/lib/sotto/sotto.db", "postgresql:/x", "SQLITE"}) {
    auto c = apply_toml_text(ServerConfig{}, std::string("store = \"") + bad + "\"\n");
    ASSERT_FALSE(c) << bad;
    EXPECT_NE(c.error().find("'store'"), std::string::npos) << c.error();
  }
  ServerConfig flag;
  flag.store = "redis://x";  // as --store would set it
  ASSERT_FALSE(check_config(flag));
  EXPECT_NE(check_config(flag).error().find("PostgreSQL URI"), std::string::npos);
  EXPECT_FALSE(apply_toml_text(ServerConfig{}, "store = 5\n"));
}

// The per-account limits, queue shares and storage budget (docs/abuse.md): defaults, and each
// key overrides its own.
TEST(Config, AbuseLimitsHaveDefaultsAndKeys) {
  const ServerConfig d;
  EXPECT_EQ(d.sends_per_minute, 1200u);
  EXPECT_EQ(d.send_bytes_per_minute, 64ull << 20);
  EXPECT_EQ(d.acks_per_minute, 120000u);
  EXPECT_EQ(d.device_lists_per_minute, 60u);
  EXPECT_EQ(d.link_tokens_per_hour, 20u);
  EXPECT_EQ(d.provisioning_per_minute, 30u);
  EXPECT_EQ(d.max_queue_bytes_per_device, 1ull << 30);
  EXPECT_EQ(d.max_queue_per_sender, 2500u);
  EXPECT_EQ(d.max_queue_bytes_per_sender, 256ull << 20);
  EXPECT_EQ(d.max_stored_bytes, 32ull << 30);
  EXPECT_EQ(d.min_free_disk_bytes, 1ull << 30);
  // A sotto-load backlog of 500 MB in 256 KB messages from 16 senders fits every default share.
  EXPECT_GE(d.max_queue_bytes_per_device, 500ull << 20);
  EXPECT_GE(d.max_queue_bytes_per_sender, (500ull << 20) / 16);

  auto c = apply_toml_text(ServerConfig{}, R"(
sends_per_minute = 10
send_bytes_per_minute = 2097152
acks_per_minute = 1000
device_lists_per_minute = 6
link_tokens_per_hour = 3
provisioning_per_minute = 4
max_queue_bytes_per_device = 10485760
max_queue_per_sender = 7
max_queue_bytes_per_sender = 1048576
max_stored_bytes = 5368709120
min_free_disk_bytes = 0
)");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->sends_per_minute, 10u);
  EXPECT_EQ(c->send_bytes_per_minute, 2097152u);
  EXPECT_EQ(c->acks_per_minute, 1000u);
  EXPECT_EQ(c->device_lists_per_minute, 6u);
  EXPECT_EQ(c->link_tokens_per_hour, 3u);
  EXPECT_EQ(c->provisioning_per_minute, 4u);
  EXPECT_EQ(c->max_queue_bytes_per_device, 10485760u);
  EXPECT_EQ(c->max_queue_per_sender, 7u);
  EXPECT_EQ(c->max_queue_bytes_per_sender, 1048576u);
  EXPECT_EQ(c->max_stored_bytes, 5368709120u);
  EXPECT_EQ(c->min_free_disk_bytes, 0u);

  for (const char* bad :
       {"sends_per_minute = 0", "send_bytes_per_minute = 1000", "acks_per_minute = 5",
        "device_lists_per_minute = 0", "link_tokens_per_hour = 0", "provisioning_per_minute = -1",
        "max_queue_bytes_per_device = 1", "max_queue_per_sender = 0",
        "max_queue_bytes_per_sender = 10", "max_stored_bytes = 0", "min_free_disk_bytes = -5"}) {
    auto r = apply_toml_text(ServerConfig{}, bad);
    ASSERT_FALSE(r) << bad;
    const std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(r.error().find("'" + key + "'"), std::string::npos) << r.error();
  }
}

TEST(Config, ErrorsNameTheKey) {
  struct Case {
    const char* text;
    const char* expect;
  };
  for (const Case& t :
       {Case{"lisen = \"x:1\"", "unknown config key 'lisen'"},
        Case{"max_queue_per_device = 0", "'max_queue_per_device'"},
        Case{"max_queue_per_device = \"many\"", "'max_queue_per_device'"},
        Case{"invite_only = 1", "'invite_only'"}, Case{"listen = \"nohost\"", "'listen'"},
        Case{"log_level = \"loud\"", "'log_level'"}, Case{"tls_next_key = 7", "'tls_next_key'"},
        Case{"data = false", "'data'"}, Case{"message_ttl_days = 1000", "'message_ttl_days'"},
        Case{"listen = [", "config syntax error"},
        // found by fuzz/server_config_fuzz: toml++ misbehaves on this byte pair
        Case{"\xc2\xa4", "config must be ASCII"},
        Case{"# caf\xc3\xa9\nlisten = \":1\"", "line 1"}}) {
    auto c = apply_toml_text(ServerConfig{}, t.text);
    ASSERT_FALSE(c) << t.text;
    EXPECT_NE(c.error().find(t.expect), std::string::npos) << c.error();
  }
  auto missing = apply_toml_file(ServerConfig{}, "/nonexistent/sotto.toml");
  ASSERT_FALSE(missing);
}

TEST(Config, PreKeyHandoutRate) {
  // The default lets a device be contacted by 30 new accounts in one hour with a one-time prekey
  // each, well above a person's contact starts, and keeps most of a 100-key upload in any hour.
  EXPECT_EQ(ServerConfig{}.pre_keys_per_device_per_hour, 30u);
  auto c = apply_toml_text(ServerConfig{}, "pre_keys_per_device_per_hour = 5");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->pre_keys_per_device_per_hour, 5u);
  for (const char* bad :
       {"pre_keys_per_device_per_hour = 0", "pre_keys_per_device_per_hour = -3",
        "pre_keys_per_device_per_hour = 1000001", "pre_keys_per_device_per_hour = \"lots\""}) {
    auto r = apply_toml_text(ServerConfig{}, bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().find("'pre_keys_per_device_per_hour'"), std::string::npos) << r.error();
  }
}

// Admission keys (docs/abuse.md): defaults, overrides, ranges, and the pre-login ceiling that a
// 0 means.
TEST(Config, AdmissionKeys) {
  const ServerConfig d;
  EXPECT_EQ(d.max_connections_per_address, 1000u);
  EXPECT_EQ(d.max_prelogin_connections, 0u);
  EXPECT_EQ(d.max_prelogin_per_address, 64u);
  EXPECT_EQ(d.login_deadline_seconds, 15u);
  EXPECT_EQ(d.prelogin_max_frame_bytes, 32u * 1024);
  EXPECT_EQ(d.prelogin_idle_timeout_seconds, 10u);
  EXPECT_EQ(d.logins_per_account_per_minute, 60u);
  EXPECT_EQ(prelogin_ceiling(d), 15000u);  // a quarter of max_connections
  auto c = apply_toml_text(ServerConfig{}, R"(
max_connections = 20
max_connections_per_address = 8
max_prelogin_per_address = 4
login_deadline_seconds = 3
prelogin_max_frame_bytes = 20000
prelogin_idle_timeout_seconds = 2
logins_per_account_per_minute = 5
)");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->max_connections_per_address, 8u);
  EXPECT_EQ(c->max_prelogin_per_address, 4u);
  EXPECT_EQ(c->login_deadline_seconds, 3u);
  EXPECT_EQ(c->prelogin_max_frame_bytes, 20000u);
  EXPECT_EQ(c->prelogin_idle_timeout_seconds, 2u);
  EXPECT_EQ(c->logins_per_account_per_minute, 5u);
  EXPECT_EQ(prelogin_ceiling(*c), 5u);
  c = apply_toml_text(*c, "max_prelogin_connections = 7");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(prelogin_ceiling(*c), 7u);
  c = apply_toml_text(*c, "max_prelogin_connections = 70");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(prelogin_ceiling(*c), 20u);  // never above max_connections
  c = apply_toml_text(*c, "max_connections = 3\nmax_prelogin_connections = 0");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(prelogin_ceiling(*c), 1u);  // at least one

  for (const char* bad : {"max_connections_per_address = 0", "max_prelogin_per_address = 0",
                          "login_deadline_seconds = 0", "login_deadline_seconds = 601",
                          "prelogin_max_frame_bytes = 1000", "prelogin_idle_timeout_seconds = 1",
                          "max_prelogin_connections = -1", "logins_per_account_per_minute = 0"}) {
    auto r = apply_toml_text(ServerConfig{}, bad);
    ASSERT_FALSE(r) << bad;
    const std::string key(bad, std::string_view(bad).find(' '));
    EXPECT_NE(r.error().find("'" + key + "'"), std::string::npos) << r.error();
  }
  // A pre-login limit above the logged-in one would be no limit.
  auto over =
      apply_toml_text(ServerConfig{}, "max_frame_bytes = 65536\nprelogin_max_frame_bytes = 65537");
  ASSERT_FALSE(over);
  EXPECT_NE(over.error().find("'prelogin_max_frame_bytes'"), std::string::npos) << over.error();
}

// The record handover is on unless the operator turns it off (the server still checks it at
// start); anything but a boolean is refused.
TEST(Config, TlsRecordHandoverDefaultsOnAndTakesABoolean) {
  EXPECT_TRUE(ServerConfig{}.tls_record_handover);
  auto off = apply_toml_text(ServerConfig{}, "tls_record_handover = false\n");
  ASSERT_TRUE(off) << off.error();
  EXPECT_FALSE(off->tls_record_handover);
  auto on = apply_toml_text(ServerConfig{}, "tls_record_handover = true\n");
  ASSERT_TRUE(on) << on.error();
  EXPECT_TRUE(on->tls_record_handover);
  for (const char* bad : {"tls_record_handover = 0", "tls_record_handover = \"off\""}) {
    auto c = apply_toml_text(ServerConfig{}, bad);
    ASSERT_FALSE(c) << bad;
    EXPECT_NE(c.error().find("'tls_record_handover' must be true or false"), std::string::npos)
        << c.error();
  }
  Metrics m;
  m.tls_record_handover = 1;
  EXPECT_NE(m.render().find("sotto_tls_record_handover 1\n"), std::string::npos);
}

// Delivery pacing (issue 16): the outbound limit, the low-water mark, the server-wide budget and
// the slow-reader rule, with defaults, ranges, and what only the merged configuration can tell.
TEST(Config, BackPressureKeysHaveDefaultsRangesAndAreCheckedTogether) {
  const ServerConfig d;
  EXPECT_EQ(d.max_outbound_bytes, 8u << 20);
  EXPECT_EQ(d.outbound_low_water_bytes, 1u << 20);
  EXPECT_EQ(d.max_buffered_bytes, std::size_t{256} << 20);
  EXPECT_EQ(d.slow_reader_seconds, 60u);
  EXPECT_TRUE(check_config(d)) << "the defaults must pass";

  auto c = apply_toml_text(ServerConfig{}, R"(
max_outbound_bytes = 16777216
outbound_low_water_bytes = 2097152
max_buffered_bytes = 1073741824
slow_reader_seconds = 30
)");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->max_outbound_bytes, 16u << 20);
  EXPECT_EQ(c->outbound_low_water_bytes, 2u << 20);
  EXPECT_EQ(c->max_buffered_bytes, std::size_t{1} << 30);
  EXPECT_EQ(c->slow_reader_seconds, 30u);
  EXPECT_TRUE(check_config(*c));

  for (const char* bad :
       {"max_outbound_bytes = 1000", "outbound_low_water_bytes = 0", "max_buffered_bytes = -1",
        "slow_reader_seconds = 0", "slow_reader_seconds = 100000"}) {
    auto r = apply_toml_text(ServerConfig{}, bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().find(std::string(bad).substr(0, std::string(bad).find(' '))),
              std::string::npos)
        << r.error();
  }

  // A message limit above half the outbound limit could lock a device's inbox: refused, naming
  // both keys.
  ServerConfig big;
  big.max_message_bytes = 5u << 20;
  auto refused = check_config(big);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("'max_message_bytes' (5242880) is more than half of "
                                 "'max_outbound_bytes' (8388608)"),
            std::string::npos)
      << refused.error();
  // Half is not enough either when pushes from every thread at once would not fit: the mark plus
  // (2 + io_threads) messages must (1 MiB + 4 x 5 MiB here).
  big.max_outbound_bytes = 10u << 20;
  refused = check_config(big);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("(2 + 'io_threads') x 'max_message_bytes' (22020096)"),
            std::string::npos)
      << refused.error();
  big.max_outbound_bytes = 21u << 20;
  EXPECT_TRUE(check_config(big)) << check_config(big).error();
  big.io_threads = 3;
  EXPECT_FALSE(check_config(big));

  ServerConfig marks;
  marks.outbound_low_water_bytes = 3u << 20;
  ASSERT_FALSE(check_config(marks));
  EXPECT_NE(check_config(marks).error().find("'outbound_low_water_bytes'"), std::string::npos);
  ServerConfig budget;
  budget.max_buffered_bytes = 4u << 20;
  ASSERT_FALSE(check_config(budget));
  EXPECT_NE(check_config(budget).error().find("'max_buffered_bytes'"), std::string::npos);
}

// docs/configuration.md is the operator's list of keys: every key the parser accepts is in one of
// its tables (as `key` in the first column), and it lists no key the parser would refuse.
TEST(Config, KtAuditorsAreAListOfEd25519Keys) {
  EXPECT_TRUE(ServerConfig{}.kt_auditors.empty());
  const std::string a(64, 'a'), b(64, 'B');
  auto c = apply_toml_text(ServerConfig{},
                           "kt_auditors = [\"" + a + "\", \"" + b + "\", \"" + a + "\"]\n");
  ASSERT_TRUE(c) << c.error();
  ASSERT_EQ(c->kt_auditors.size(), 2u);  // the same key twice counts once
  EXPECT_EQ(c->kt_auditors[0][0], 0xaa);
  EXPECT_EQ(c->kt_auditors[1][31], 0xbb);
  for (const std::string& bad :
       {"kt_auditors = \"" + a + "\"", "kt_auditors = [\"" + a.substr(2) + "\"]",
        "kt_auditors = [\"" + std::string(64, 'g') + "\"]", std::string("kt_auditors = [1]")}) {
    auto r = apply_toml_text(ServerConfig{}, bad + "\n");
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().find("'kt_auditors'"), std::string::npos) << r.error();
  }
  // The entry that is wrong is named.
  auto r = apply_toml_text(ServerConfig{}, "kt_auditors = [\"" + a + "\", \"nope\"]\n");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("entry 2"), std::string::npos) << r.error();
}

TEST(Config, EveryKeyIsDocumentedAndNoOtherIs) {
  std::ifstream in(std::string(SOTTO_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md";
  std::set<std::string> documented;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    const std::string cell = line.substr(2, line.find('|', 2) - 2);
    for (std::size_t at = cell.find('`'); at != std::string::npos;) {
      const std::size_t end = cell.find('`', at + 1);
      if (end == std::string::npos) break;
      documented.insert(cell.substr(at + 1, end - at - 1));
      at = cell.find('`', end + 1);
    }
  }
  for (const auto& key : config_keys()) EXPECT_TRUE(documented.contains(key)) << key;
  for (const auto& key : documented) EXPECT_TRUE(config_keys().contains(key)) << key;
}

TEST(Username, NormalisesAndValidates) {
  EXPECT_EQ(normalize_username("Alice"), "alice");
  EXPECT_EQ(normalize_username("bob_2.x-y"), "bob_2.x-y");
  EXPECT_EQ(normalize_username(std::string(32, 'a')), std::string(32, 'a'));
  for (const std::string& bad : std::vector<std::string>{"ab", std::string(33, 'a'), "a b",
                                                         "_alice", "al!ce", "ålice", ""}) {
    EXPECT_FALSE(normalize_username(bad)) << bad;
  }
}

TEST(RateLimiter, RefillsOverTime) {
  RateLimiter limiter(60, 3);  // one per second, burst 3
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(limiter.allow("a", t0));
  EXPECT_TRUE(limiter.allow("a", t0));
  EXPECT_TRUE(limiter.allow("a", t0));
  EXPECT_FALSE(limiter.allow("a", t0));
  EXPECT_TRUE(limiter.allow("b", t0)) << "buckets are per key";
  EXPECT_TRUE(limiter.allow("a", t0 + std::chrono::milliseconds(1100)));
  EXPECT_FALSE(limiter.allow("a", t0 + std::chrono::milliseconds(1200)));
}

// Weighted takes (bytes, ids) and the retry hint: how long until the bucket holds the cost.
TEST(RateLimiter, WeightedTakesTellWhenToRetry) {
  RateLimiter bytes(RateLimiter::Rate{1000.0, 4000.0});  // 1000 a second, burst 4000
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(bytes.take("a", 3000, t0), 0u);
  const std::uint32_t wait = bytes.take("a", 3000, t0);  // 1000 left: 2 s more
  EXPECT_EQ(wait, 2000u);
  EXPECT_NE(bytes.take("a", 3000, t0 + std::chrono::milliseconds(1500)), 0u);
  EXPECT_EQ(bytes.take("a", 3000, t0 + std::chrono::milliseconds(2000)), 0u);
  // More than the burst costs the whole burst: a full bucket lets it through.
  EXPECT_EQ(bytes.take("b", 1e9, t0), 0u);
  EXPECT_EQ(bytes.take("b", 1, t0), 1u);
  RateLimiter lists(60, 2);
  EXPECT_EQ(lists.take("x", 1, t0), 0u);
  EXPECT_EQ(lists.take("x", 1, t0), 0u);
  EXPECT_EQ(lists.take("x", 1, t0), 1000u);
}

TEST(Metrics, RendersPrometheusText) {
  Metrics m;
  m.connections = 3;
  m.messages_in = 10;
  m.commit_latency.observe(0.0015);
  m.commit_latency.observe(0.3);
  const std::string text = m.render();
  EXPECT_NE(text.find("sotto_connections 3\n"), std::string::npos);
  EXPECT_NE(text.find("sotto_messages_in_total 10\n"), std::string::npos);
  EXPECT_NE(text.find("sotto_commit_latency_seconds_bucket{le=\"0.002\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("sotto_commit_latency_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("sotto_commit_latency_seconds_count 2\n"), std::string::npos);
  for (const char* name :
       {"sotto_stored_bytes 0\n", "sotto_disk_free_bytes -1\n", "sotto_rate_limited_total 0\n",
        "sotto_storage_refusals_total 0\n", "sotto_queue_share_refusals_total 0\n"}) {
    EXPECT_NE(text.find(name), std::string::npos) << name;
  }
  m.buffered_bytes = 4096;
  EXPECT_NE(m.render().find("# TYPE sotto_buffered_bytes gauge\nsotto_buffered_bytes 4096\n"),
            std::string::npos);
}

}  // namespace
}  // namespace sotto::server
