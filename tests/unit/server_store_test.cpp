// The server store test suite (STYLE.md: one store test suite run against every backend). The
// typed suite ServerStoreTest talks to the interfaces of store.h only; a backend joins it by
// adding a factory class to `Backends` below (a fresh, empty database per test, reopened on
// request). The tests at the end are SQLite-only: they damage the file, kill a writer process, or
// check pragmas.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "store/server/sqlite_store.h"
#include "store/server/store.h"

#ifdef SOTTO_TEST_POSTGRES
#include <pqxx/pqxx>

#include "store/server/blob_store.h"
#include "store/server/postgres/pg_schema.h"
#include "store/server/postgres/pg_store.h"
#include "util/postgres_server.h"
#endif

namespace sotto::store {

// gtest finds this through the argument's namespace (ADL), so failures print "queue_full".
[[maybe_unused]] static void PrintTo(Error e, std::ostream* os) {
  switch (e) {
    case Error::not_found:
      *os << "not_found";
      return;
    case Error::conflict:
      *os << "conflict";
      return;
    case Error::queue_full:
      *os << "queue_full";
      return;
    case Error::queue_share_full:
      *os << "queue_share_full";
      return;
    case Error::invalid_token:
      *os << "invalid_token";
      return;
    case Error::io:
      *os << "io";
      return;
  }
  *os << "Error(" << static_cast<int>(e) << ")";
}

namespace {

constexpr std::uint64_t kStartMs = 1'700'000'000'000;  // 2023-11-14
constexpr std::uint64_t kMsPerDay = 24ull * 60 * 60 * 1000;
constexpr std::uint64_t kDaySeconds = 24ull * 60 * 60;

// What a test may ask of any backend's factory.
struct TestConfig {
  std::uint32_t max_queue_per_device = 10000;
  std::uint64_t max_queue_bytes_per_device = 0;
  std::uint32_t max_queue_per_sender = 0;
  std::uint64_t max_queue_bytes_per_sender = 0;
  std::uint32_t max_pre_keys_per_device = 1000;
  std::function<std::uint64_t()> now_ms;
  std::function<void(std::string_view)> log;
  // How long the message writer may wait for more work before a commit (group commit); tests of
  // what happens before a commit set it long.
  std::chrono::milliseconds commit_delay{2};
};

// A fresh directory under the system temp directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sotto-store-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

SqliteOptions sqlite_options(const TestConfig& config) {
  SqliteOptions o;
  o.max_queue_per_device = config.max_queue_per_device;
  o.max_queue_bytes_per_device = config.max_queue_bytes_per_device;
  o.max_queue_per_sender = config.max_queue_per_sender;
  o.max_queue_bytes_per_sender = config.max_queue_bytes_per_sender;
  o.max_pre_keys_per_device = config.max_pre_keys_per_device;
  o.now_ms = config.now_ms;
  o.log = config.log;
  o.group_commit_max_delay = config.commit_delay;
  return o;
}

// The SQLite backend: one database file in a temporary directory per test.
class SqliteBackend {
 public:
  static constexpr const char* kName = "Sqlite";
  static constexpr bool kLeavesOutFullDevices = true;

  std::unique_ptr<ServerStore> open(const TestConfig& config) {
    auto store = SqliteServerStore::open(file(), sqlite_options(config));
    if (!store) return nullptr;
    return std::move(*store);
  }
  // Message commits so far, for backends that count them.
  static std::optional<std::uint64_t> commit_count(ServerStore& store) {
    return static_cast<SqliteServerStore&>(store).commit_count();
  }
  [[nodiscard]] std::filesystem::path file() const { return dir_.path() / "server.db"; }

 private:
  TempDir dir_;
};

#ifdef SOTTO_TEST_POSTGRES
// The PostgreSQL backend (the `cluster` label): one private server for the whole test program,
// started by the first test that needs it and stopped when the program ends, and a fresh schema
// (search_path) per test, so that every test starts from an empty database without an initdb.
class PostgresEnvironment : public ::testing::Environment {
 public:
  static testing::PostgresServer& server() {
    if (!server_) server_ = std::make_unique<testing::PostgresServer>(SOTTO_PG_BIN_DIR);
    return *server_;
  }
  // A new, empty schema; the connection string that works in it.
  static std::string fresh_schema() {
    static int next = 0;
    const std::string name = "t" + std::to_string(++next);
    pqxx::connection conn(server().conninfo());
    pqxx::nontransaction tx(conn);
    tx.exec("DROP SCHEMA IF EXISTS " + name + " CASCADE");
    tx.exec("CREATE SCHEMA " + name);
    return server().conninfo() + " options='-c search_path=" + name + "'";
  }
  void TearDown() override { server_.reset(); }

 private:
  static inline std::unique_ptr<testing::PostgresServer> server_;
};
[[maybe_unused]] ::testing::Environment* const kPostgresEnvironment =
    ::testing::AddGlobalTestEnvironment(new PostgresEnvironment);

PostgresOptions postgres_options(const TestConfig& config) {
  PostgresOptions o;
  static_cast<SqliteOptions&>(o) = sqlite_options(config);
  o.migrate = true;
  return o;
}

class PostgresBackend {
 public:
  static constexpr const char* kName = "Postgres";
  // enqueue_partial() is the interface's default here: all or nothing (docs/operations.md).
  static constexpr bool kLeavesOutFullDevices = false;

  std::unique_ptr<ServerStore> open(const TestConfig& config) {
    if (conninfo_.empty()) conninfo_ = PostgresEnvironment::fresh_schema();
    auto store = PostgresServerStore::open(conninfo_, postgres_options(config));
    if (!store) return nullptr;
    return std::move(*store);
  }
  static std::optional<std::uint64_t> commit_count(ServerStore& store) {
    return static_cast<PostgresServerStore&>(store).commit_count();
  }

 private:
  std::string conninfo_;
};

using Backends = ::testing::Types<SqliteBackend, PostgresBackend>;
#else
using Backends = ::testing::Types<SqliteBackend>;
#endif

struct BackendNames {
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};

Bytes filled(std::size_t n, std::uint8_t value) {
  return Bytes(n, value);
}

DeviceRecord device_record(std::uint32_t registration_id, std::uint8_t auth) {
  DeviceRecord d;
  d.registration_id = registration_id;
  d.auth_key = filled(32, auth);
  d.created_day = 12345;  // ignored: the store takes the day from its own clock
  return d;
}

SignedPreKeyRecord signed_pre_key(std::uint32_t id, std::uint8_t fill = 0x51) {
  return SignedPreKeyRecord{id, filled(33, fill), filled(64, static_cast<std::uint8_t>(fill + 1))};
}

OneTimePreKeyRecord pre_key(std::uint32_t id, std::uint8_t fill = 0) {
  return OneTimePreKeyRecord{id, filled(33, fill == 0 ? static_cast<std::uint8_t>(id) : fill)};
}

std::vector<OneTimePreKeyRecord> pre_keys(std::uint32_t first, std::uint32_t n) {
  std::vector<OneTimePreKeyRecord> keys;
  for (std::uint32_t i = 0; i < n; ++i) keys.push_back(pre_key(first + i));
  return keys;
}

template <class Backend>
class ServerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { open({}); }
  void TearDown() override { store_.reset(); }

  void open(TestConfig config) {
    store_.reset();
    config.now_ms = [this] { return now_ms_.load(); };
    config_ = config;
    store_ = backend_.open(config_);
    ASSERT_NE(store_, nullptr);
  }
  void reopen() { open(config_); }

  AccountStore& accounts() { return store_->accounts(); }
  KeyStore& keys() { return store_->keys(); }
  MessageStore& messages() { return store_->messages(); }
  TokenStore& tokens() { return store_->tokens(); }
  BlockStore& blocks() { return store_->blocks(); }

  std::uint64_t now_seconds() const { return now_ms_.load() / 1000; }
  void advance_seconds(std::uint64_t s) { now_ms_ += s * 1000; }

  AccountId make_account(const std::string& name, std::uint32_t n_pre_keys = 0) {
    auto id = accounts().create_account(name, filled(33, 0x05), device_record(100, 0xA1),
                                        signed_pre_key(1), pre_keys(1, n_pre_keys));
    EXPECT_TRUE(id.has_value());
    return id.value_or(0);
  }

  DeviceId add_device(AccountId account) {
    auto id = accounts().add_device(account, device_record(200, 0xB2), signed_pre_key(7), {});
    EXPECT_TRUE(id.has_value());
    return id.value_or(0);
  }

  // A new envelope with a fresh id.
  QueuedEnvelope envelope(AccountId account, DeviceId device) {
    QueuedEnvelope e;
    const std::uint64_t n = ++next_envelope_;
    for (std::size_t i = 0; i < 8; ++i) e.id[i] = static_cast<std::uint8_t>(n >> (8 * i));
    e.id[15] = 0xEE;
    e.account = account;
    e.device = device;
    e.source = "sender";
    e.source_device = 3;
    e.type = 1;
    e.content = filled(40 + n % 7, static_cast<std::uint8_t>(n));
    e.client_timestamp = kStartMs - 5;
    return e;
  }

  // Enqueues and waits for the completion.
  tl::expected<void, Error> send(std::vector<QueuedEnvelope> envelopes,
                                 std::optional<Bytes> dedup_key = std::nullopt) {
    return send_async(std::move(envelopes), std::move(dedup_key)).get();
  }
  std::future<tl::expected<void, Error>> send_async(std::vector<QueuedEnvelope> envelopes,
                                                    std::optional<Bytes> dedup_key = std::nullopt) {
    auto promise = std::make_shared<std::promise<tl::expected<void, Error>>>();
    auto future = promise->get_future();
    messages().enqueue(std::move(envelopes), std::move(dedup_key),
                       [promise](tl::expected<void, Error> r) { promise->set_value(r); });
    return future;
  }

  std::vector<EnvelopeId> loaded_ids(AccountId account, DeviceId device, std::size_t limit = 100000,
                                     std::optional<EnvelopeId> after = std::nullopt) {
    auto loaded = messages().load(account, device, limit, after);
    EXPECT_TRUE(loaded.has_value());
    std::vector<EnvelopeId> ids;
    if (loaded) {
      for (const auto& e : *loaded) ids.push_back(e.id);
    }
    return ids;
  }

  std::size_t count(AccountId account, DeviceId device) {
    auto n = messages().count(account, device);
    EXPECT_TRUE(n.has_value());
    return n.value_or(0);
  }

  Backend backend_;
  TestConfig config_;
  std::atomic<std::uint64_t> now_ms_{kStartMs};
  std::uint64_t next_envelope_ = 0;
  std::unique_ptr<ServerStore> store_;
};

TYPED_TEST_SUITE(ServerStoreTest, Backends, BackendNames);

// --- accounts and devices -----------------------------------------------------------------------

TYPED_TEST(ServerStoreTest, CreatesAndFindsAccounts) {
  auto id = this->accounts().create_account("alice", filled(33, 0x05), device_record(7, 0xA1),
                                            signed_pre_key(1), pre_keys(1, 2));
  ASSERT_TRUE(id.has_value());

  for (auto found : {this->accounts().find_account("alice"), this->accounts().find_account(*id)}) {
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->id, *id);
    EXPECT_EQ(found->username, "alice");
    EXPECT_EQ(found->identity_key, filled(33, 0x05));
    ASSERT_EQ(found->devices.size(), 1u);
    EXPECT_EQ(found->devices[0].id, 1u);
    EXPECT_EQ(found->devices[0].registration_id, 7u);
    EXPECT_EQ(found->devices[0].auth_key, filled(32, 0xA1));
    EXPECT_EQ(found->devices[0].created_day, kStartMs / kMsPerDay);  // the store's clock, in days
    EXPECT_TRUE(found->devices[0].name.empty());
    EXPECT_TRUE(found->recovery_key.empty());  // none given: the account cannot be recovered
  }
  EXPECT_EQ(this->keys().count_pre_keys(*id, 1).value(), 2u);
  EXPECT_EQ(this->keys().signed_pre_key(*id, 1).value().id, 1u);

  EXPECT_EQ(this->accounts().find_account("bob").error(), Error::not_found);
  EXPECT_EQ(this->accounts().find_account(*id + 1000).error(), Error::not_found);
  // The caller normalises names; the store compares them exactly.
  EXPECT_EQ(this->accounts().find_account("ALICE").error(), Error::not_found);

  auto again = this->accounts().create_account("alice", filled(33, 0x06), device_record(8, 0xA2),
                                               signed_pre_key(1), {});
  EXPECT_EQ(again.error(), Error::conflict);
  EXPECT_EQ(this->accounts().find_account("alice").value().identity_key, filled(33, 0x05));

  auto bob = this->accounts().create_account("bob", filled(33, 0x07), device_record(9, 0xA3),
                                             signed_pre_key(1), {});
  ASSERT_TRUE(bob.has_value());
  EXPECT_NE(*bob, *id);
}

TYPED_TEST(ServerStoreTest, RefusesKeysOfTheWrongSizeAndStoresNothing) {
  auto bad_identity = this->accounts().create_account(
      "alice", filled(32, 0x05), device_record(7, 0xA1), signed_pre_key(1), {});
  EXPECT_EQ(bad_identity.error(), Error::io);
  EXPECT_EQ(this->accounts().find_account("alice").error(), Error::not_found);

  const AccountId alice = this->make_account("alice");
  EXPECT_EQ(this->keys().add_pre_keys(alice, 1, {OneTimePreKeyRecord{9, filled(32, 1)}}).error(),
            Error::io);
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 0u);
  SignedPreKeyRecord short_signature = signed_pre_key(2);
  short_signature.signature.pop_back();
  EXPECT_EQ(this->keys().set_signed_pre_key(alice, 1, short_signature).error(), Error::io);
  EXPECT_EQ(this->keys().signed_pre_key(alice, 1).value().id, 1u);
}

TYPED_TEST(ServerStoreTest, AddsDevicesWithTheNextFreeId) {
  const AccountId alice = this->make_account("alice");
  EXPECT_EQ(this->add_device(alice), 2u);
  this->advance_seconds(3 * kDaySeconds);
  EXPECT_EQ(this->add_device(alice), 3u);
  ASSERT_TRUE(this->accounts().remove_device(alice, 2).has_value());
  EXPECT_EQ(this->add_device(alice), 2u);  // the lowest free id
  EXPECT_EQ(this->add_device(alice), 4u);

  auto found = this->accounts().find_account(alice);
  ASSERT_TRUE(found.has_value());
  std::vector<DeviceId> ids;
  for (const auto& d : found->devices) ids.push_back(d.id);
  EXPECT_EQ(ids, (std::vector<DeviceId>{1, 2, 3, 4}));
  EXPECT_EQ(found->devices[2].created_day, kStartMs / kMsPerDay + 3);
  EXPECT_EQ(found->devices[2].registration_id, 200u);
  EXPECT_EQ(this->keys().signed_pre_key(alice, 3).value().id, 7u);

  EXPECT_EQ(
      this->accounts().add_device(alice + 1000, device_record(1, 1), signed_pre_key(1), {}).error(),
      Error::not_found);
}

TYPED_TEST(ServerStoreTest, RemovingADeviceRemovesItsKeysAndQueue) {
  const AccountId alice = this->make_account("alice", 2);
  const DeviceId second = this->add_device(alice);
  ASSERT_TRUE(this->keys().add_pre_keys(alice, second, pre_keys(10, 3)).has_value());
  ASSERT_TRUE(this->send({this->envelope(alice, second), this->envelope(alice, 1)}).has_value());
  ASSERT_TRUE(this->send({this->envelope(alice, second)}).has_value());
  ASSERT_EQ(this->count(alice, second), 2u);

  EXPECT_EQ(this->accounts().remove_device(alice, second).value(), 2u);  // envelopes removed
  EXPECT_EQ(this->keys().signed_pre_key(alice, second).error(), Error::not_found);
  EXPECT_EQ(this->keys().count_pre_keys(alice, second).value(), 0u);
  EXPECT_FALSE(this->keys().take_pre_key(alice, second).value().has_value());
  EXPECT_EQ(this->count(alice, second), 0u);
  EXPECT_TRUE(this->loaded_ids(alice, second).empty());
  EXPECT_EQ(this->accounts().find_account(alice).value().devices.size(), 1u);

  // The other device keeps everything.
  EXPECT_EQ(this->count(alice, 1), 1u);
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 2u);
  EXPECT_TRUE(this->keys().signed_pre_key(alice, 1).has_value());

  EXPECT_EQ(this->accounts().remove_device(alice, second).error(), Error::not_found);
  // A send that includes the removed device is refused as a whole.
  EXPECT_EQ(this->send({this->envelope(alice, 1), this->envelope(alice, second)}).error(),
            Error::not_found);
  EXPECT_EQ(this->count(alice, 1), 1u);
  EXPECT_EQ(this->keys().add_pre_keys(alice, second, pre_keys(20, 1)).error(), Error::not_found);
}

TYPED_TEST(ServerStoreTest, KeepsDeviceNamesAndRecoveryKeys) {
  DeviceRecord first = device_record(7, 0xA1);
  first.name = filled(kMaxDeviceNameSize, 0x4E);
  auto alice = this->accounts().create_account("alice", filled(33, 0x05), first, signed_pre_key(1),
                                               {}, filled(kRecoveryKeySize, 0x3C));
  ASSERT_TRUE(alice.has_value());
  DeviceRecord second = device_record(8, 0xA2);
  second.name = filled(17, 0x4F);
  ASSERT_EQ(this->accounts().add_device(*alice, second, signed_pre_key(2), {}).value(), 2u);

  for (auto found :
       {this->accounts().find_account("alice"), this->accounts().find_account(*alice)}) {
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->recovery_key, filled(kRecoveryKeySize, 0x3C));
    ASSERT_EQ(found->devices.size(), 2u);
    EXPECT_EQ(found->devices[0].name, filled(kMaxDeviceNameSize, 0x4E));
    EXPECT_EQ(found->devices[1].name, filled(17, 0x4F));
  }

  // Above the limits: refused, nothing stored.
  DeviceRecord long_name = device_record(9, 0xA3);
  long_name.name = filled(kMaxDeviceNameSize + 1, 0x4E);
  EXPECT_EQ(this->accounts().add_device(*alice, long_name, signed_pre_key(3), {}).error(),
            Error::io);
  EXPECT_EQ(this->accounts()
                .create_account("bob", filled(33, 0x05), long_name, signed_pre_key(1), {})
                .error(),
            Error::io);
  EXPECT_EQ(this->accounts()
                .create_account("bob", filled(33, 0x05), device_record(9, 0xA3), signed_pre_key(1),
                                {}, filled(kRecoveryKeySize - 1, 0x3C))
                .error(),
            Error::io);
  EXPECT_EQ(this->accounts().find_account("bob").error(), Error::not_found);
  EXPECT_EQ(this->accounts().find_account(*alice).value().devices.size(), 2u);
}

TYPED_TEST(ServerStoreTest, RecoveringAnAccountReplacesItsKeysAndDevicesInOneGo) {
  const Bytes old_recovery = filled(kRecoveryKeySize, 0x3C);
  const Bytes new_recovery = filled(kRecoveryKeySize, 0x3D);
  const AccountId alice = this->accounts()
                              .create_account("alice", filled(33, 0x05), device_record(7, 0xA1),
                                              signed_pre_key(1), pre_keys(1, 4), old_recovery)
                              .value();
  const AccountId bob = this->make_account("bob", 2);
  const DeviceId second = this->add_device(alice);
  ASSERT_TRUE(this->keys().add_pre_keys(alice, second, pre_keys(10, 3)).has_value());
  ASSERT_TRUE(this->send({this->envelope(alice, 1), this->envelope(alice, second)}).has_value());
  ASSERT_TRUE(this->send({this->envelope(alice, 1), this->envelope(bob, 1)}).has_value());
  const Bytes token = filled(32, 0x1A);
  ASSERT_TRUE(this->tokens().create_link_token(token, alice, this->now_seconds() + 600));
  ASSERT_EQ(this->accounts().find_account("alice").value().devices.size(), 2u);  // cached, maybe

  DeviceRecord fresh = device_record(99, 0xC1);
  fresh.name = filled(20, 0x4E);
  // A recovery key that is not the account's (another recovery won): nothing changes.
  EXPECT_EQ(this->accounts()
                .recover_account(alice, new_recovery, filled(33, 0x06), fresh, signed_pre_key(5),
                                 pre_keys(50, 2), new_recovery)
                .error(),
            Error::conflict);
  EXPECT_EQ(this->accounts().find_account(alice).value().identity_key, filled(33, 0x05));
  EXPECT_EQ(this->count(alice, second), 1u);
  EXPECT_EQ(this->accounts()
                .recover_account(alice + 1000, old_recovery, filled(33, 0x06), fresh,
                                 signed_pre_key(5), {}, new_recovery)
                .error(),
            Error::not_found);
  // Keys of the wrong size: refused before anything is written.
  EXPECT_EQ(this->accounts()
                .recover_account(alice, old_recovery, filled(32, 0x06), fresh, signed_pre_key(5),
                                 {}, new_recovery)
                .error(),
            Error::io);
  EXPECT_EQ(this->accounts().find_account(alice).value().devices.size(), 2u);

  auto removed = this->accounts().recover_account(alice, old_recovery, filled(33, 0x06), fresh,
                                                  signed_pre_key(5), pre_keys(50, 2), new_recovery);
  ASSERT_TRUE(removed.has_value());
  EXPECT_EQ(*removed, 3u);  // the old devices' queued envelopes

  for (auto found :
       {this->accounts().find_account("alice"), this->accounts().find_account(alice)}) {
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->id, alice);
    EXPECT_EQ(found->identity_key, filled(33, 0x06));
    EXPECT_EQ(found->recovery_key, new_recovery);
    ASSERT_EQ(found->devices.size(), 1u);
    EXPECT_EQ(found->devices[0].id, 1u);
    EXPECT_EQ(found->devices[0].registration_id, 99u);
    EXPECT_EQ(found->devices[0].auth_key, filled(32, 0xC1));
    EXPECT_EQ(found->devices[0].name, filled(20, 0x4E));
  }
  EXPECT_EQ(this->keys().signed_pre_key(alice, 1).value().id, 5u);
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 2u);
  EXPECT_EQ(this->keys().take_pre_key(alice, 1).value().value().id, 50u);
  EXPECT_EQ(this->keys().signed_pre_key(alice, second).error(), Error::not_found);
  EXPECT_EQ(this->keys().count_pre_keys(alice, second).value(), 0u);
  EXPECT_EQ(this->count(alice, 1), 0u);
  EXPECT_EQ(this->count(alice, second), 0u);
  EXPECT_EQ(this->tokens().use_link_token(token, this->now_seconds()).error(),
            Error::invalid_token);
  // The old code is spent; the new one works.
  EXPECT_EQ(this->accounts()
                .recover_account(alice, old_recovery, filled(33, 0x07), fresh, signed_pre_key(6),
                                 {}, new_recovery)
                .error(),
            Error::conflict);

  // Bob keeps everything; the recovered account's queues take envelopes again.
  EXPECT_EQ(this->count(bob, 1), 1u);
  EXPECT_EQ(this->keys().count_pre_keys(bob, 1).value(), 2u);
  ASSERT_TRUE(this->send({this->envelope(alice, 1)}).has_value());
  EXPECT_EQ(this->count(alice, 1), 1u);
  EXPECT_EQ(this->add_device(alice), 2u);
}

// --- keys ---------------------------------------------------------------------------------------

TYPED_TEST(ServerStoreTest, ReplacesTheSignedPreKey) {
  const AccountId alice = this->make_account("alice");
  ASSERT_TRUE(this->keys().set_signed_pre_key(alice, 1, signed_pre_key(2, 0x70)).has_value());
  auto key = this->keys().signed_pre_key(alice, 1);
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->id, 2u);
  EXPECT_EQ(key->public_key, filled(33, 0x70));
  EXPECT_EQ(key->signature, filled(64, 0x71));
  EXPECT_EQ(this->keys().set_signed_pre_key(alice, 9, signed_pre_key(3)).error(), Error::not_found);
  EXPECT_EQ(this->keys().signed_pre_key(alice, 9).error(), Error::not_found);
}

TYPED_TEST(ServerStoreTest, AddsCountsAndTakesPreKeysOnce) {
  const AccountId alice = this->make_account("alice");
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(1, 3)).has_value());
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 3u);
  // An id already present is replaced (and counts as newly uploaded).
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, {pre_key(2, 0x99), pre_key(4)}).has_value());
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 4u);

  std::vector<std::uint32_t> taken;
  for (int i = 0; i < 4; ++i) {
    auto key = this->keys().take_pre_key(alice, 1);
    ASSERT_TRUE(key.has_value());
    ASSERT_TRUE(key->has_value());
    taken.push_back((*key)->id);
    if ((*key)->id == 2) {
      EXPECT_EQ((*key)->public_key, filled(33, 0x99));
    }
  }
  EXPECT_EQ(taken, (std::vector<std::uint32_t>{1, 3, 2, 4}));  // oldest upload first
  auto none = this->keys().take_pre_key(alice, 1);
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 0u);
  EXPECT_EQ(this->keys().add_pre_keys(alice, 5, pre_keys(1, 1)).error(), Error::not_found);
}

TYPED_TEST(ServerStoreTest, ListsTheIdsOfTheKeysStillHeld) {
  const AccountId alice = this->make_account("alice");
  EXPECT_TRUE(this->keys().pre_key_ids(alice, 1).value().empty());
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(5, 3)).has_value());
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(1, 2)).has_value());
  EXPECT_EQ(this->keys().pre_key_ids(alice, 1).value(),
            (std::vector<std::uint32_t>{1, 2, 5, 6, 7}));  // ascending, whatever the upload order
  ASSERT_TRUE(this->keys().take_pre_key(alice, 1).value().has_value());  // 5, the oldest upload
  EXPECT_EQ(this->keys().pre_key_ids(alice, 1).value(), (std::vector<std::uint32_t>{1, 2, 6, 7}));
  EXPECT_TRUE(this->keys().pre_key_ids(alice, 2).value().empty());  // another device: none
}

// --- blocks -------------------------------------------------------------------------------------

TYPED_TEST(ServerStoreTest, BlocksArePerAccountAndIdempotent) {
  const AccountId alice = this->make_account("alice");
  const AccountId mallory = this->make_account("mallory");
  const AccountId bob = this->make_account("bob");
  EXPECT_FALSE(this->blocks().is_blocked(alice, mallory).value());
  ASSERT_TRUE(this->blocks().block(alice, mallory).has_value());
  ASSERT_TRUE(this->blocks().block(alice, mallory).has_value());  // twice: no error, one row
  ASSERT_TRUE(this->blocks().block(alice, bob).has_value());
  EXPECT_TRUE(this->blocks().is_blocked(alice, mallory).value());
  EXPECT_FALSE(this->blocks().is_blocked(mallory, alice).value());  // one way only
  EXPECT_EQ(this->blocks().blocked(alice).value(), (std::vector<std::string>{"bob", "mallory"}));
  EXPECT_TRUE(this->blocks().blocked(bob).value().empty());
  EXPECT_EQ(this->blocks().block(alice, 999).error(), Error::not_found);

  EXPECT_TRUE(this->blocks().unblock(alice, mallory).value());
  EXPECT_FALSE(this->blocks().unblock(alice, mallory).value());  // no longer there
  EXPECT_FALSE(this->blocks().is_blocked(alice, mallory).value());
  EXPECT_EQ(this->blocks().blocked(alice).value(), (std::vector<std::string>{"bob"}));
  this->reopen();
  EXPECT_TRUE(this->blocks().is_blocked(alice, bob).value());  // durable
}

TYPED_TEST(ServerStoreTest, KeepsTheNewestPreKeysUpToTheLimit) {
  TestConfig config;
  config.max_pre_keys_per_device = 5;
  this->open(config);
  const AccountId alice = this->make_account("alice");
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(1, 8)).has_value());
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 5u);
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(9, 1)).has_value());
  std::vector<std::uint32_t> taken;
  while (true) {
    auto key = this->keys().take_pre_key(alice, 1);
    ASSERT_TRUE(key.has_value());
    if (!key->has_value()) break;
    taken.push_back((*key)->id);
  }
  EXPECT_EQ(taken, (std::vector<std::uint32_t>{5, 6, 7, 8, 9}));
}

TYPED_TEST(ServerStoreTest, ReplacingPreKeysDropsEveryOlderOne) {
  const AccountId alice = this->make_account("alice", 5);
  const AccountId bob = this->make_account("bob", 3);
  ASSERT_TRUE(this->keys().replace_pre_keys(alice, 1, {pre_key(3, 0x77), pre_key(40)}));
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 2u);
  auto first = this->keys().take_pre_key(alice, 1).value();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->id, 3u);
  EXPECT_EQ(first->public_key, filled(33, 0x77));  // the uploaded key, not the old one of id 3
  EXPECT_EQ(this->keys().take_pre_key(alice, 1).value().value().id, 40u);
  EXPECT_FALSE(this->keys().take_pre_key(alice, 1).value().has_value());

  // None uploaded: none left. Other devices keep theirs.
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(60, 2)));
  ASSERT_TRUE(this->keys().replace_pre_keys(alice, 1, {}));
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 0u);
  EXPECT_EQ(this->keys().count_pre_keys(bob, 1).value(), 3u);

  // A refused upload leaves the stored keys as they were.
  ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(70, 2)));
  EXPECT_EQ(this->keys()
                .replace_pre_keys(alice, 1, {pre_key(80), OneTimePreKeyRecord{81, filled(32, 1)}})
                .error(),
            Error::io);
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 2u);
  EXPECT_EQ(this->keys().replace_pre_keys(alice, 9, pre_keys(1, 1)).error(), Error::not_found);

  // The per-device limit holds for a replacement too.
  TestConfig config;
  config.max_pre_keys_per_device = 3;
  this->open(config);
  ASSERT_TRUE(this->keys().replace_pre_keys(alice, 1, pre_keys(100, 5)));
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 3u);
  EXPECT_EQ(this->keys().take_pre_key(alice, 1).value().value().id, 102u);
}

TYPED_TEST(ServerStoreTest, ConcurrentTakesNeverHandOutAKeyTwice) {
  constexpr std::uint32_t kKeys = 400;
  constexpr int kThreads = 8;
  const AccountId alice = this->make_account("alice");
  for (std::uint32_t first = 1; first <= kKeys; first += 100) {
    ASSERT_TRUE(this->keys().add_pre_keys(alice, 1, pre_keys(first, 100)).has_value());
  }
  ASSERT_EQ(this->keys().count_pre_keys(alice, 1).value(), kKeys);

  std::mutex mu;
  std::vector<std::uint32_t> taken;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<std::uint32_t> mine;
      for (;;) {
        auto key = this->keys().take_pre_key(alice, 1);
        if (!key) {
          ++errors;
          break;
        }
        if (!key->has_value()) break;
        mine.push_back((*key)->id);
      }
      std::lock_guard lock(mu);
      taken.insert(taken.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(taken.size(), kKeys);
  EXPECT_EQ(std::set<std::uint32_t>(taken.begin(), taken.end()).size(), kKeys);
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 0u);
}

// --- messages -----------------------------------------------------------------------------------

TYPED_TEST(ServerStoreTest, LoadsOldestFirstAndPagesAfterAnId) {
  const AccountId alice = this->make_account("alice");
  std::vector<QueuedEnvelope> sent;
  for (int i = 0; i < 5; ++i) {
    QueuedEnvelope e = this->envelope(alice, 1);
    if (i == 0) e.server_timestamp = kStartMs + 77;  // kept when given
    sent.push_back(e);
    ASSERT_TRUE(this->send({e}).has_value());
  }

  auto all = this->messages().load(alice, 1, 10);
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    const QueuedEnvelope& got = (*all)[i];
    EXPECT_EQ(got.id, sent[i].id);
    EXPECT_EQ(got.account, alice);
    EXPECT_EQ(got.device, 1u);
    EXPECT_EQ(got.source, "sender");
    EXPECT_EQ(got.source_device, 3u);
    EXPECT_EQ(got.type, 1u);
    EXPECT_EQ(got.content, sent[i].content);
    EXPECT_EQ(got.client_timestamp, kStartMs - 5);
    EXPECT_EQ(got.server_timestamp, i == 0 ? kStartMs + 77 : kStartMs);  // 0 means "now"
    EXPECT_EQ(got.expires_at, kStartMs / 1000 + 30 * kDaySeconds);       // 0 means the TTL
  }

  EXPECT_EQ(this->loaded_ids(alice, 1, 2), (std::vector<EnvelopeId>{sent[0].id, sent[1].id}));
  EXPECT_EQ(this->loaded_ids(alice, 1, 2, sent[1].id),
            (std::vector<EnvelopeId>{sent[2].id, sent[3].id}));
  EXPECT_EQ(this->loaded_ids(alice, 1, 2, sent[3].id), (std::vector<EnvelopeId>{sent[4].id}));
  EXPECT_TRUE(this->loaded_ids(alice, 1, 2, sent[4].id).empty());
  EXPECT_TRUE(this->loaded_ids(alice, 1, 0).empty());

  // `after` must be in this device's queue.
  EnvelopeId unknown{};
  unknown.fill(0x42);
  EXPECT_EQ(this->messages().load(alice, 1, 10, unknown).error(), Error::not_found);
  const DeviceId second = this->add_device(alice);
  EXPECT_EQ(this->messages().load(alice, second, 10, sent[0].id).error(), Error::not_found);
  ASSERT_EQ(this->messages().remove(alice, 1, {sent[1].id}).value(), 1u);
  EXPECT_EQ(this->messages().load(alice, 1, 10, sent[1].id).error(), Error::not_found);
}

// A drain reads by bytes as well as by count (delivery paced by bytes, issue 16): a read stops
// at the envelope that brings its content to max_bytes, and always returns at least one.
TYPED_TEST(ServerStoreTest, LoadStopsAtTheEnvelopeThatReachesMaxBytes) {
  const AccountId alice = this->make_account("alice");
  std::vector<QueuedEnvelope> sent;
  for (int i = 0; i < 6; ++i) {
    QueuedEnvelope e = this->envelope(alice, 1);
    e.content = filled(1000, static_cast<std::uint8_t>(i));
    sent.push_back(e);
    ASSERT_TRUE(this->send({e}).has_value());
  }
  const auto ids = [](const tl::expected<std::vector<QueuedEnvelope>, Error>& r) {
    std::vector<EnvelopeId> out;
    for (const auto& e : r.value()) out.push_back(e.id);
    return out;
  };
  EXPECT_EQ(ids(this->messages().load(alice, 1, 10, std::nullopt, 2500)),
            (std::vector<EnvelopeId>{sent[0].id, sent[1].id, sent[2].id}));
  EXPECT_EQ(ids(this->messages().load(alice, 1, 10, std::nullopt, 2000)),
            (std::vector<EnvelopeId>{sent[0].id, sent[1].id}));
  EXPECT_EQ(ids(this->messages().load(alice, 1, 10, sent[1].id, 1)),
            (std::vector<EnvelopeId>{sent[2].id}));  // one, however large
  EXPECT_EQ(ids(this->messages().load(alice, 1, 2, sent[1].id, 100000)),
            (std::vector<EnvelopeId>{sent[2].id, sent[3].id}));  // the count still applies
  EXPECT_EQ(ids(this->messages().load(alice, 1, 10, sent[3].id, 100000)),
            (std::vector<EnvelopeId>{sent[4].id, sent[5].id}));
  // The read that stopped early leaves the queue as it was.
  EXPECT_EQ(this->loaded_ids(alice, 1).size(), 6u);
}

TYPED_TEST(ServerStoreTest, RemoveOnlyDeletesTheDevicesOwnEnvelopes) {
  const AccountId alice = this->make_account("alice");
  const DeviceId second = this->add_device(alice);
  const AccountId bob = this->make_account("bob");
  const QueuedEnvelope a1 = this->envelope(alice, 1);
  const QueuedEnvelope a1b = this->envelope(alice, 1);
  const QueuedEnvelope a2 = this->envelope(alice, second);
  const QueuedEnvelope b1 = this->envelope(bob, 1);
  ASSERT_TRUE(this->send({a1, a1b, a2, b1}).has_value());

  EXPECT_EQ(this->messages().remove(alice, second, {a1.id, a1b.id, b1.id}).value(), 0u);
  EXPECT_EQ(this->messages().remove(bob, 1, {a1.id, a2.id}).value(), 0u);
  EXPECT_EQ(this->count(alice, 1), 2u);
  EXPECT_EQ(this->count(alice, second), 1u);
  EXPECT_EQ(this->count(bob, 1), 1u);

  EnvelopeId unknown{};
  EXPECT_EQ(this->messages().remove(alice, 1, {a1.id, unknown, a1b.id, a1.id}).value(), 2u);
  EXPECT_EQ(this->count(alice, 1), 0u);
  EXPECT_EQ(this->count(alice, second), 1u);
  EXPECT_EQ(this->messages().remove(bob, 1, {b1.id}).value(), 1u);
  EXPECT_EQ(this->messages().remove(bob, 1, {}).value(), 0u);
}

TYPED_TEST(ServerStoreTest, AnEnvelopeAcknowledgedBeforeItsCommitIsNeverWritten) {
  TestConfig slow;
  slow.commit_delay = std::chrono::milliseconds(400);
  this->open(slow);
  const AccountId alice = this->make_account("alice");
  const DeviceId second = this->add_device(alice);
  const QueuedEnvelope e1 = this->envelope(alice, 1);
  const QueuedEnvelope e2 = this->envelope(alice, second);
  const QueuedEnvelope e3 = this->envelope(alice, 1);
  auto sent = this->send_async({e1, e2, e3}, filled(24, 0xA7));

  // Another device's acknowledgement cancels nothing; the owner's cancels at once, before the
  // writer has even begun (it lingers for the delay above).
  std::promise<tl::expected<std::size_t, Error>> wrong;
  this->messages().remove_async(alice, second, {e1.id},
                                [&](tl::expected<std::size_t, Error> r) { wrong.set_value(r); });
  std::optional<tl::expected<std::size_t, Error>> right;
  this->messages().remove_async(alice, 1, {e1.id},
                                [&](tl::expected<std::size_t, Error> r) { right = r; });
  ASSERT_TRUE(right.has_value()) << "a cancellation completes on the caller's thread";
  EXPECT_EQ(right->value(), 1u);
  EXPECT_TRUE(this->messages().was_sent(filled(24, 0xA7)).value()) << "accepted, not yet written";

  ASSERT_TRUE(sent.get().has_value());
  EXPECT_EQ(wrong.get_future().get().value(), 0u);
  EXPECT_EQ(this->loaded_ids(alice, 1), (std::vector<EnvelopeId>{e3.id}));
  EXPECT_EQ(this->loaded_ids(alice, second), (std::vector<EnvelopeId>{e2.id}));
  // Acknowledged after the commit: deleted from the file, ordered after the insert.
  EXPECT_EQ(this->messages().remove(alice, 1, {e3.id, e1.id}).value(), 1u);
  EXPECT_EQ(this->count(alice, 1), 0u);
  // The send's dedup key was written even though one envelope never was.
  EXPECT_TRUE(this->messages().was_sent(filled(24, 0xA7)).value());
}

TYPED_TEST(ServerStoreTest, RemovalsShareTheGroupCommitInOrder) {
  const AccountId alice = this->make_account("alice");
  std::vector<QueuedEnvelope> envelopes;
  std::vector<std::future<tl::expected<void, Error>>> sends;
  for (int i = 0; i < 50; ++i) {
    envelopes.push_back(this->envelope(alice, 1));
    sends.push_back(this->send_async({envelopes.back()}));
  }
  // Each removal follows its send in the writer's queue, whether or not the send was written yet.
  std::vector<std::future<tl::expected<std::size_t, Error>>> removals;
  for (int i = 0; i < 50; i += 2) {
    auto done = std::make_shared<std::promise<tl::expected<std::size_t, Error>>>();
    removals.push_back(done->get_future());
    this->messages().remove_async(
        alice, 1, {envelopes[static_cast<std::size_t>(i)].id},
        [done](tl::expected<std::size_t, Error> r) { done->set_value(r); });
  }
  for (auto& f : sends) ASSERT_TRUE(f.get().has_value());
  for (auto& f : removals) EXPECT_EQ(f.get().value(), 1u);
  EXPECT_EQ(this->count(alice, 1), 25u);
}

TYPED_TEST(ServerStoreTest, WasSentRemembersAcceptedSendsForTheDedupWindow) {
  const AccountId alice = this->make_account("alice");
  const Bytes key = filled(24, 0xD3);
  EXPECT_FALSE(this->messages().was_sent(key).value());
  ASSERT_TRUE(this->send({this->envelope(alice, 1)}, key).has_value());
  EXPECT_TRUE(this->messages().was_sent(key).value());
  EXPECT_FALSE(this->messages().was_sent(filled(24, 0xD4)).value());
  this->advance_seconds(kDaySeconds + 1);
  EXPECT_FALSE(this->messages().was_sent(key).value());
}

TYPED_TEST(ServerStoreTest, APartialSendLeavesOutFullDevicesAndRemembersThemForARetry) {
  if (!TypeParam::kLeavesOutFullDevices) {
    GTEST_SKIP() << "this store keeps the default all-or-nothing enqueue_partial()";
  }
  TestConfig config;
  config.max_queue_per_device = 1;
  this->open(config);
  const AccountId alice = this->make_account("alice");
  const AccountId bob = this->make_account("bob");
  const DeviceId bob2 = this->add_device(bob);
  ASSERT_TRUE(this->send({this->envelope(bob, 1)}).has_value());  // bob's device 1 is now full

  const auto partial = [&](std::vector<QueuedEnvelope> envelopes, const Bytes& key) {
    auto promise =
        std::make_shared<std::promise<tl::expected<std::vector<MessageStore::Refusal>, Error>>>();
    auto future = promise->get_future();
    this->messages().enqueue_partial(std::move(envelopes), key,
                                     [promise](auto r) { promise->set_value(std::move(r)); });
    return future.get();
  };
  const Bytes key = filled(24, 0xE1);
  auto left_out =
      partial({this->envelope(alice, 1), this->envelope(bob, 1), this->envelope(bob, bob2)}, key);
  ASSERT_TRUE(left_out.has_value());
  ASSERT_EQ(left_out->size(), 1u);
  EXPECT_EQ((*left_out)[0], (MessageStore::Refusal{bob, 1, Error::queue_full}));
  EXPECT_EQ(this->count(alice, 1), 1u);
  EXPECT_EQ(this->count(bob, 1), 1u) << "nothing more for the full device";
  EXPECT_EQ(this->count(bob, bob2), 1u);

  // The dedup key remembers the devices left out; a retry stores nothing.
  auto sent = this->messages().sent(key);
  ASSERT_TRUE(sent.has_value());
  ASSERT_TRUE(sent->has_value());
  EXPECT_EQ(**sent, *left_out);
  left_out = partial({this->envelope(alice, 1), this->envelope(bob, bob2)}, key);
  ASSERT_TRUE(left_out.has_value());
  EXPECT_TRUE(left_out->empty());
  EXPECT_EQ(this->count(alice, 1), 1u);
  EXPECT_EQ(this->count(bob, bob2), 1u);
  // A send that left nothing out, and one never made.
  const AccountId carol = this->make_account("carol");
  const Bytes other = filled(24, 0xE2);
  ASSERT_TRUE(partial({this->envelope(carol, 1)}, other).has_value());
  EXPECT_TRUE(this->messages().sent(other).value().value().empty());
  EXPECT_FALSE(this->messages().sent(filled(24, 0xE3)).value().has_value());
  // enqueue() keeps its all-or-nothing rule.
  const AccountId dave = this->make_account("dave");
  EXPECT_EQ(this->send({this->envelope(dave, 1), this->envelope(bob, 1)}).error(),
            Error::queue_full);
  EXPECT_EQ(this->count(dave, 1), 0u);
}

TYPED_TEST(ServerStoreTest, FoundAccountsFollowDeviceChanges) {
  const AccountId alice = this->make_account("alice");
  // Read twice (a backend may cache), then change the devices: every read sees the change.
  ASSERT_EQ(this->accounts().find_account("alice").value().devices.size(), 1u);
  ASSERT_EQ(this->accounts().find_account(alice).value().devices.size(), 1u);
  const DeviceId second = this->add_device(alice);
  EXPECT_EQ(this->accounts().find_account("alice").value().devices.size(), 2u);
  EXPECT_EQ(this->accounts().find_account(alice).value().devices.size(), 2u);
  ASSERT_TRUE(this->accounts().remove_device(alice, 1).has_value());
  const auto after = this->accounts().find_account("alice").value();
  ASSERT_EQ(after.devices.size(), 1u);
  EXPECT_EQ(after.devices[0].id, second);
  EXPECT_EQ(this->accounts().find_account(alice).value().devices.size(), 1u);
  EXPECT_FALSE(this->accounts().find_account("nobody").has_value());
}

TYPED_TEST(ServerStoreTest, DeduplicatesRetriedSends) {
  const AccountId alice = this->make_account("alice");
  const Bytes key = filled(24, 0xD1);
  const QueuedEnvelope first = this->envelope(alice, 1);
  ASSERT_TRUE(this->send({first}, key).has_value());
  // A retry carries new envelope ids (the server makes them per request): still stored once.
  ASSERT_TRUE(this->send({this->envelope(alice, 1)}, key).has_value());
  EXPECT_EQ(this->loaded_ids(alice, 1), (std::vector<EnvelopeId>{first.id}));

  // Both halves of a duplicate pair in one batch.
  const Bytes other = filled(24, 0xD2);
  auto a = this->send_async({this->envelope(alice, 1)}, other);
  auto b = this->send_async({this->envelope(alice, 1)}, other);
  EXPECT_TRUE(a.get().has_value());
  EXPECT_TRUE(b.get().has_value());
  EXPECT_EQ(this->count(alice, 1), 2u);

  // Keys are kept for a day: after that the same key stores again.
  this->advance_seconds(kDaySeconds + 1);
  ASSERT_TRUE(this->messages().expire(this->now_seconds()).has_value());
  ASSERT_TRUE(this->send({this->envelope(alice, 1)}, key).has_value());
  EXPECT_EQ(this->count(alice, 1), 3u);
}

TYPED_TEST(ServerStoreTest, RefusesASendThatWouldOverfillAQueue) {
  TestConfig config;
  config.max_queue_per_device = 3;
  this->open(config);
  const AccountId alice = this->make_account("alice");
  const DeviceId second = this->add_device(alice);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(this->send({this->envelope(alice, 1)}).has_value());

  const Bytes key = filled(16, 0x0F);
  const QueuedEnvelope to_second = this->envelope(alice, second);
  EXPECT_EQ(this->send({this->envelope(alice, 1), to_second}, key).error(), Error::queue_full);
  EXPECT_EQ(this->count(alice, 1), 3u);
  EXPECT_EQ(this->count(alice, second), 0u);  // nothing of the refused send is stored

  // The refused send left no dedup key behind: once there is room, its retry is stored.
  const auto head = this->loaded_ids(alice, 1, 1);
  ASSERT_EQ(this->messages().remove(alice, 1, head).value(), 1u);
  EXPECT_TRUE(this->send({this->envelope(alice, 1), to_second}, key).has_value());
  EXPECT_EQ(this->count(alice, 1), 3u);
  EXPECT_EQ(this->count(alice, second), 1u);

  // Several envelopes of one send for one device count together.
  EXPECT_EQ(this->send({this->envelope(alice, second), this->envelope(alice, second),
                        this->envelope(alice, second)})
                .error(),
            Error::queue_full);
  EXPECT_TRUE(
      this->send({this->envelope(alice, second), this->envelope(alice, second)}).has_value());
  EXPECT_EQ(this->count(alice, second), 3u);
}

TYPED_TEST(ServerStoreTest, TheQueueLimitFollowsRemovalsExpiryAndRemovedDevices) {
  TestConfig config;
  config.max_queue_per_device = 4;
  this->open(config);
  const AccountId alice = this->make_account("alice");
  const DeviceId second = this->add_device(alice);
  std::vector<QueuedEnvelope> sent;
  for (int i = 0; i < 4; ++i) {
    sent.push_back(this->envelope(alice, 1));
    ASSERT_TRUE(this->send({sent.back()}).has_value());
  }
  EXPECT_EQ(this->send({this->envelope(alice, 1)}).error(), Error::queue_full);
  // Two acknowledged: room for exactly two more.
  ASSERT_EQ(this->messages().remove(alice, 1, {sent[0].id, sent[1].id}).value(), 2u);
  EXPECT_TRUE(this->send({this->envelope(alice, 1), this->envelope(alice, 1)}).has_value());
  EXPECT_EQ(this->send({this->envelope(alice, 1)}).error(), Error::queue_full);
  // A refused send in the middle of a batch does not disturb the count of the others.
  auto a = this->send_async({this->envelope(alice, second)});
  auto b = this->send_async({this->envelope(alice, 1)});
  auto c = this->send_async({this->envelope(alice, second)});
  EXPECT_TRUE(a.get().has_value());
  EXPECT_EQ(b.get().error(), Error::queue_full);
  EXPECT_TRUE(c.get().has_value());
  EXPECT_EQ(this->count(alice, second), 2u);
  // Everything expires: the queue is empty again.
  this->advance_seconds(31 * kDaySeconds);
  ASSERT_TRUE(this->messages().expire(this->now_seconds()).has_value());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(this->send({this->envelope(alice, 1)}).has_value());
  EXPECT_EQ(this->send({this->envelope(alice, 1)}).error(), Error::queue_full);
  // A removed device's queue goes with it; a device added later under the same id starts empty.
  ASSERT_TRUE(this->accounts().remove_device(alice, second).has_value());
  const DeviceId again = this->add_device(alice);
  ASSERT_EQ(again, second);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(this->send({this->envelope(alice, again)}).has_value());
  EXPECT_EQ(this->send({this->envelope(alice, again)}).error(), Error::queue_full);
}

// One sender (by source username, another account's) holds at most its share of a device's
// queue, counted in envelopes and in bytes; the device's bytes are capped too; and the stored
// bytes follow every write, removal, expiry and removed device.
TYPED_TEST(ServerStoreTest, SendersShareOfAQueueAndTheQueuesBytesAreCapped) {
  TestConfig config;
  config.max_queue_per_device = 100;
  config.max_queue_bytes_per_device = 1000;
  config.max_queue_per_sender = 3;
  config.max_queue_bytes_per_sender = 400;
  this->open(config);
  const AccountId alice = this->make_account("alice");
  const AccountId mallory = this->make_account("mallory");
  const AccountId carol = this->make_account("carol");
  const auto from = [&](AccountId sender, const std::string& name, std::size_t bytes) {
    QueuedEnvelope e = this->envelope(alice, 1);
    e.source = name;
    e.source_account = sender;
    e.content = filled(bytes, 0x5A);
    return e;
  };
  const std::uint64_t before = this->messages().stored_bytes();
  std::vector<QueuedEnvelope> sent;
  for (int i = 0; i < 3; ++i) {
    sent.push_back(from(mallory, "mallory", 10));
    ASSERT_TRUE(this->send({sent.back()}).has_value());
  }
  EXPECT_EQ(this->send({from(mallory, "mallory", 10)}).error(), Error::queue_share_full);
  EXPECT_TRUE(this->send({from(carol, "carol", 10)}).has_value());
  // By bytes: 390 of carol's 400.
  EXPECT_TRUE(this->send({from(carol, "carol", 380)}).has_value());
  EXPECT_EQ(this->send({from(carol, "carol", 20)}).error(), Error::queue_share_full);
  // The account's own devices are not capped by the share: alice's sync copies.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(this->send({from(alice, "alice", 10)}).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), before + 30 + 390 + 50);
  // The device's bytes: 470 stored, 1000 at most.
  EXPECT_EQ(this->send({from(alice, "alice", 600)}).error(), Error::queue_full);
  EXPECT_TRUE(this->send({from(alice, "alice", 530)}).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), before + 1000);

  // Acknowledged: mallory has room again, and the bytes are released.
  ASSERT_EQ(this->messages().remove(alice, 1, {sent[0].id}).value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), before + 990);
  const QueuedEnvelope again = from(mallory, "mallory", 10);
  ASSERT_TRUE(this->send({again}).has_value());
  EXPECT_EQ(this->send({from(mallory, "mallory", 10)}).error(), Error::queue_share_full);
  // Acknowledged with its sender and size known (the server's path): counted alike, with no
  // lookup; an id that is not there counts nothing.
  std::promise<tl::expected<std::size_t, Error>> hinted;
  this->messages().remove_async(alice, 1, {again.id, this->envelope(alice, 1).id},
                                [&](tl::expected<std::size_t, Error> r) { hinted.set_value(r); },
                                {{"mallory", 10}, {"mallory", 10}});
  EXPECT_EQ(hinted.get_future().get().value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), before + 990);
  ASSERT_TRUE(this->send({from(mallory, "mallory", 10)}).has_value());
  EXPECT_EQ(this->send({from(mallory, "mallory", 10)}).error(), Error::queue_share_full);
  // Counted again from the table after a restart of the store.
  this->reopen();
  EXPECT_EQ(this->messages().stored_bytes(), before + 1000);
  EXPECT_EQ(this->send({from(mallory, "mallory", 10)}).error(), Error::queue_share_full);
  // Expiry and a removed device release theirs.
  const DeviceId second = this->add_device(alice);
  QueuedEnvelope to_second = from(mallory, "mallory", 25);
  to_second.device = second;
  ASSERT_TRUE(this->send({to_second}).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), before + 1025);
  ASSERT_TRUE(this->accounts().remove_device(alice, second).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), before + 1000);
  this->advance_seconds(31 * kDaySeconds);
  ASSERT_TRUE(this->messages().expire(this->now_seconds()).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), 0u);
}

// --- shared bodies (multi-recipient sends) ------------------------------------------------------

// A body shared by several envelopes of one send is stored once: the server's stored bytes count
// it once, each device's queue and the sender's share of it count it in full, and it goes (its
// bytes given back) when the last envelope holding it is acknowledged.
TYPED_TEST(ServerStoreTest, ASharedBodyIsStoredOnceAndGoesWithItsLastEnvelope) {
  const AccountId alice = this->make_account("alice");
  const DeviceId alice2 = this->add_device(alice);
  const AccountId bob = this->make_account("bob");
  const AccountId carol = this->make_account("carol");
  const auto body = std::make_shared<const Bytes>(filled(300, 0x3C));
  const auto shared = [&](AccountId account, DeviceId device) {
    QueuedEnvelope e = this->envelope(account, device);
    e.content.clear();
    e.body = body;
    e.type = 4;
    e.source_account = carol;
    return e;
  };
  const QueuedEnvelope to_a1 = shared(alice, 1);
  const QueuedEnvelope to_a2 = shared(alice, alice2);
  const QueuedEnvelope to_b1 = shared(bob, 1);
  QueuedEnvelope own = this->envelope(bob, 1);  // a device with content of its own
  own.source_account = carol;
  const std::uint64_t before = this->messages().stored_bytes();
  ASSERT_TRUE(this->send({to_a1, to_a2, to_b1, own}, filled(24, 0x51)).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), before + 300 + own.content.size());

  // Every device gets the body as its content; the own one is its own.
  for (const auto& [account, device] :
       std::vector<std::pair<AccountId, DeviceId>>{{alice, 1}, {alice, alice2}}) {
    auto loaded = this->messages().load(account, device, 10).value();
    ASSERT_EQ(loaded.size(), 1u);
    EXPECT_EQ(loaded[0].content, *body);
    EXPECT_TRUE(loaded[0].shared);
    EXPECT_EQ(loaded[0].type, 4u);
  }
  auto bobs = this->messages().load(bob, 1, 10).value();
  ASSERT_EQ(bobs.size(), 2u);
  EXPECT_EQ(bobs[0].id, to_b1.id);
  EXPECT_EQ(bobs[0].content, *body);
  EXPECT_EQ(bobs[1].content, own.content);
  EXPECT_FALSE(bobs[1].shared);

  // Acknowledged one by one, the server's way (sender and size known) and the other: the body
  // stays while any envelope holds it.
  std::promise<tl::expected<std::size_t, Error>> hinted;
  this->messages().remove_async(alice, 1, {to_a1.id},
                                [&](tl::expected<std::size_t, Error> r) { hinted.set_value(r); },
                                {{"sender", 300, true}});
  ASSERT_EQ(hinted.get_future().get().value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), before + 300 + own.content.size());
  ASSERT_EQ(this->messages().remove(alice, alice2, {to_a2.id}).value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), before + 300 + own.content.size());
  EXPECT_EQ(this->messages().load(bob, 1, 1).value().at(0).content, *body);
  ASSERT_EQ(this->messages().remove(bob, 1, {to_b1.id}).value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), before + own.content.size());
  ASSERT_EQ(this->messages().remove(bob, 1, {own.id}).value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), before);

  // A retry of the send (same dedup key, new envelope ids) stores nothing.
  ASSERT_TRUE(this->send({shared(alice, 1), shared(bob, 1)}, filled(24, 0x51)).has_value());
  EXPECT_EQ(this->count(alice, 1), 0u);
  EXPECT_EQ(this->messages().stored_bytes(), before);
}

// Each envelope of a shared body counts the body in full in its device's queue and in its
// sender's share of that queue, however many devices share the body.
TYPED_TEST(ServerStoreTest, ASharedBodyCountsInFullInEveryQueueAndShare) {
  TestConfig config;
  config.max_queue_per_device = 100;
  config.max_queue_bytes_per_device = 1000;
  config.max_queue_bytes_per_sender = 500;
  this->open(config);
  const AccountId alice = this->make_account("alice");
  const AccountId bob = this->make_account("bob");
  const AccountId carol = this->make_account("carol");
  const auto shared_send = [&](std::size_t bytes) {
    auto body = std::make_shared<const Bytes>(filled(bytes, 0x77));
    std::vector<QueuedEnvelope> envelopes;
    for (AccountId to : {alice, bob}) {
      QueuedEnvelope e = this->envelope(to, 1);
      e.content.clear();
      e.body = body;
      e.source = "carol";
      e.source_account = carol;
      envelopes.push_back(std::move(e));
    }
    return envelopes;
  };
  ASSERT_TRUE(this->send(shared_send(200)).has_value());
  ASSERT_TRUE(this->send(shared_send(200)).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), 400u);
  // carol holds 400 of her 500 in each of the two queues (not 200: the body is shared).
  EXPECT_EQ(this->send(shared_send(150)).error(), Error::queue_share_full);
  EXPECT_TRUE(this->send(shared_send(100)).has_value());
  EXPECT_EQ(this->count(alice, 1), 3u);
  EXPECT_EQ(this->count(bob, 1), 3u);
  // After a restart the queues are counted again from the table, joined with the bodies.
  this->reopen();
  EXPECT_EQ(this->messages().stored_bytes(), 500u);
  EXPECT_EQ(this->send(shared_send(1)).error(), Error::queue_share_full);
}

// The body goes when its envelopes go by a device's removal or by expiry.
TYPED_TEST(ServerStoreTest, ASharedBodyGoesWithRemovedDevicesAndExpiry) {
  const AccountId alice = this->make_account("alice");
  const DeviceId alice2 = this->add_device(alice);
  const AccountId bob = this->make_account("bob");
  const auto shared_send = [&](std::vector<std::pair<AccountId, DeviceId>> to) {
    auto body = std::make_shared<const Bytes>(filled(64, 0x42));
    std::vector<QueuedEnvelope> envelopes;
    for (const auto& [account, device] : to) {
      QueuedEnvelope e = this->envelope(account, device);
      e.content.clear();
      e.body = body;
      envelopes.push_back(std::move(e));
    }
    return envelopes;
  };
  // A removed device, then the other queue by expiry.
  ASSERT_TRUE(this->send(shared_send({{alice, alice2}, {bob, 1}})).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), 64u);
  ASSERT_EQ(this->accounts().remove_device(alice, alice2).value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), 64u);
  EXPECT_EQ(this->messages().load(bob, 1, 1).value().at(0).content, filled(64, 0x42));
  this->advance_seconds(31 * kDaySeconds);
  EXPECT_EQ(this->messages().expire(this->now_seconds()).value(), 1u);
  EXPECT_EQ(this->messages().stored_bytes(), 0u);

  // Expiry of both at once.
  ASSERT_TRUE(this->send(shared_send({{alice, 1}, {bob, 1}})).has_value());
  EXPECT_EQ(this->messages().stored_bytes(), 64u);
  this->advance_seconds(31 * kDaySeconds);
  EXPECT_EQ(this->messages().expire(this->now_seconds()).value(), 2u);
  EXPECT_EQ(this->messages().stored_bytes(), 0u);
  this->reopen();
  EXPECT_EQ(this->messages().stored_bytes(), 0u) << "nothing left behind in the file";
}

TYPED_TEST(ServerStoreTest, ASharedBodyAcknowledgedEverywhereBeforeItsCommitIsNeverWritten) {
  TestConfig slow;
  slow.commit_delay = std::chrono::milliseconds(400);
  this->open(slow);
  const AccountId alice = this->make_account("alice");
  const AccountId bob = this->make_account("bob");
  auto body = std::make_shared<const Bytes>(filled(80, 0x24));
  std::vector<QueuedEnvelope> envelopes;
  for (AccountId to : {alice, bob}) {
    QueuedEnvelope e = this->envelope(to, 1);
    e.content.clear();
    e.body = body;
    envelopes.push_back(std::move(e));
  }
  const EnvelopeId to_alice = envelopes[0].id;
  const EnvelopeId to_bob = envelopes[1].id;
  auto sent = this->send_async(std::move(envelopes), filled(24, 0x66));
  // Both acknowledged while the writer lingers: cancelled on the caller's thread.
  for (const auto& [account, id] :
       std::vector<std::pair<AccountId, EnvelopeId>>{{alice, to_alice}, {bob, to_bob}}) {
    std::optional<tl::expected<std::size_t, Error>> removed;
    this->messages().remove_async(account, 1, {id},
                                  [&](tl::expected<std::size_t, Error> r) { removed = r; });
    ASSERT_TRUE(removed.has_value());
    EXPECT_EQ(removed->value(), 1u);
  }
  ASSERT_TRUE(sent.get().has_value());
  EXPECT_EQ(this->messages().stored_bytes(), 0u);
  EXPECT_EQ(this->count(alice, 1), 0u);
  this->reopen();
  EXPECT_EQ(this->messages().stored_bytes(), 0u) << "no body row was written";
  EXPECT_TRUE(this->messages().was_sent(filled(24, 0x66)).value());
}

TYPED_TEST(ServerStoreTest, OneRefusedSendDoesNotFailTheOthersInItsBatch) {
  const AccountId alice = this->make_account("alice");
  const QueuedEnvelope good1 = this->envelope(alice, 1);
  const QueuedEnvelope good2 = this->envelope(alice, 1);
  auto f1 = this->send_async({good1});
  auto f2 = this->send_async({this->envelope(alice, 1), this->envelope(alice, 9)});  // no device 9
  auto f3 = this->send_async({this->envelope(alice, 1), good1});                     // duplicate id
  auto f4 = this->send_async({good2});
  EXPECT_TRUE(f1.get().has_value());
  EXPECT_EQ(f2.get().error(), Error::not_found);
  EXPECT_EQ(f3.get().error(), Error::conflict);
  EXPECT_TRUE(f4.get().has_value());
  EXPECT_EQ(this->loaded_ids(alice, 1), (std::vector<EnvelopeId>{good1.id, good2.id}));
}

TYPED_TEST(ServerStoreTest, ExpiresEnvelopes) {
  const AccountId alice = this->make_account("alice");
  const QueuedEnvelope long_lived = this->envelope(alice, 1);
  QueuedEnvelope short_lived = this->envelope(alice, 1);
  short_lived.expires_at = this->now_seconds() + 60;
  QueuedEnvelope too_long = this->envelope(alice, 1);
  too_long.expires_at = this->now_seconds() + 365 * kDaySeconds;  // capped at the TTL
  ASSERT_TRUE(this->send({long_lived, short_lived, too_long}).has_value());
  EXPECT_EQ(this->count(alice, 1), 3u);

  this->advance_seconds(61);
  // Expired envelopes are never delivered, even before the sweep.
  EXPECT_EQ(this->loaded_ids(alice, 1), (std::vector<EnvelopeId>{long_lived.id, too_long.id}));
  EXPECT_EQ(this->count(alice, 1), 2u);
  EXPECT_EQ(this->messages().expire(this->now_seconds()).value(), 1u);

  this->advance_seconds(30 * kDaySeconds);
  EXPECT_TRUE(this->loaded_ids(alice, 1).empty());
  EXPECT_EQ(this->messages().expire(this->now_seconds()).value(), 2u);
  EXPECT_EQ(this->messages().expire(this->now_seconds()).value(), 0u);
  EXPECT_EQ(this->count(alice, 1), 0u);

  // A backlog larger than any internal batch is swept completely.
  std::vector<QueuedEnvelope> backlog;
  for (int i = 0; i < 1100; ++i) {
    backlog.push_back(this->envelope(alice, 1));
    backlog.back().expires_at = this->now_seconds() + 10;
  }
  ASSERT_TRUE(this->send(backlog).has_value());
  this->advance_seconds(10);
  EXPECT_EQ(this->messages().expire(this->now_seconds()).value(), 1100u);
  EXPECT_EQ(this->count(alice, 1), 0u);
}

TYPED_TEST(ServerStoreTest, CountsEveryStoredEnvelope) {
  EXPECT_EQ(this->messages().count_all().value(), 0u);
  const AccountId alice = this->make_account("alice");
  const AccountId bob = this->make_account("bob");
  const DeviceId second = this->add_device(bob);
  QueuedEnvelope short_lived = this->envelope(alice, 1);
  short_lived.expires_at = this->now_seconds() + 60;
  ASSERT_TRUE(this->send({this->envelope(alice, 1), short_lived, this->envelope(bob, 1)}));
  ASSERT_TRUE(this->send({this->envelope(bob, second), this->envelope(bob, second)}));
  EXPECT_EQ(this->messages().count_all().value(), 5u);

  // Expired and not yet swept: still stored, still counted.
  this->advance_seconds(61);
  EXPECT_EQ(this->messages().count_all().value(), 5u);
  EXPECT_EQ(this->messages().expire(this->now_seconds()).value(), 1u);
  EXPECT_EQ(this->messages().count_all().value(), 4u);
  EXPECT_EQ(this->accounts().remove_device(bob, second).value(), 2u);
  EXPECT_EQ(this->messages().count_all().value(), 2u);
  const auto first = this->loaded_ids(alice, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(this->messages().remove(alice, 1, first).value(), 1u);
  EXPECT_EQ(this->messages().count_all().value(), 1u);
  this->reopen();
  EXPECT_EQ(this->messages().count_all().value(), 1u);
}

TYPED_TEST(ServerStoreTest, GroupCommitsConcurrentSends) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  const AccountId alice = this->make_account("alice");
  std::vector<std::vector<QueuedEnvelope>> planned(kThreads);
  for (auto& list : planned) {
    for (int i = 0; i < kPerThread; ++i) list.push_back(this->envelope(alice, 1));
  }
  const auto commits_before = TypeParam::commit_count(*this->store_);

  // Each thread waits for its send to be durable before the next, as a client connection
  // awaiting its acknowledgement does: batching comes from concurrency alone.
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (const auto& e : planned[static_cast<std::size_t>(t)]) {
        std::promise<tl::expected<void, Error>> done;
        auto result = done.get_future();
        this->messages().enqueue({e}, std::nullopt,
                                 [&done](tl::expected<void, Error> r) { done.set_value(r); });
        (result.get() ? ok : failed) += 1;
      }
    });
  }
  for (auto& t : threads) t.join();
  this->messages().flush();
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  EXPECT_EQ(failed.load(), 0);

  const auto loaded = this->loaded_ids(alice, 1);
  ASSERT_EQ(loaded.size(), static_cast<std::size_t>(kThreads * kPerThread));
  // Each thread's sends are stored in the order it made them.
  std::map<EnvelopeId, std::size_t> position;
  for (std::size_t i = 0; i < loaded.size(); ++i) position[loaded[i]] = i;
  for (const auto& list : planned) {
    for (std::size_t i = 1; i < list.size(); ++i)
      EXPECT_LT(position[list[i - 1].id], position[list[i].id]);
  }

  if (commits_before) {
    const std::uint64_t commits = *TypeParam::commit_count(*this->store_) - *commits_before;
    std::cout << "[ group commit ] " << kThreads * kPerThread << " sends, " << commits
              << " commits\n";
    this->RecordProperty("sends", kThreads * kPerThread);
    this->RecordProperty("commits", static_cast<int>(commits));
    EXPECT_LT(commits, static_cast<std::uint64_t>(kThreads * kPerThread));
    EXPECT_GT(commits, 0u);
  }

  // Fire-and-forget from many threads: the queue fills while the writer syncs.
  std::atomic<int> async_ok{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        QueuedEnvelope e;
        // Ids distinct from the envelope() counter's (byte 14 is never set there).
        e.id[0] = static_cast<std::uint8_t>(i);
        e.id[1] = static_cast<std::uint8_t>(i >> 8);
        e.id[2] = static_cast<std::uint8_t>(t);
        e.id[14] = 0x77;
        e.account = alice;
        e.device = 1;
        e.content = filled(10, 1);
        this->messages().enqueue({e}, std::nullopt, [&](tl::expected<void, Error> r) {
          if (r) ++async_ok;
        });
      }
    });
  }
  for (auto& p : producers) p.join();
  this->messages().flush();
  EXPECT_EQ(async_ok.load(), kThreads * kPerThread);
  EXPECT_EQ(this->count(alice, 1), static_cast<std::size_t>(2 * kThreads * kPerThread));
  if (commits_before) {
    std::cout << "[ group commit ] fire-and-forget: " << kThreads * kPerThread << " more sends, "
              << *TypeParam::commit_count(*this->store_) - *commits_before << " commits in all\n";
  }
}

TYPED_TEST(ServerStoreTest, KeepsEverythingAcrossReopen) {
  const AccountId alice = this->make_account("alice", 3);
  std::vector<EnvelopeId> ids;
  for (int i = 0; i < 3; ++i) {
    const QueuedEnvelope e = this->envelope(alice, 1);
    ids.push_back(e.id);
    ASSERT_TRUE(this->send({e}).has_value());
  }
  // Not waited for: closing the store must still make it durable and run its completion.
  std::atomic<bool> completed{false};
  const QueuedEnvelope last = this->envelope(alice, 1);
  ids.push_back(last.id);
  this->messages().enqueue({last}, std::nullopt,
                           [&](tl::expected<void, Error> r) { completed = r.has_value(); });
  this->store_.reset();
  EXPECT_TRUE(completed.load());

  this->reopen();
  EXPECT_EQ(this->loaded_ids(alice, 1), ids);
  EXPECT_EQ(this->accounts().find_account("alice").value().id, alice);
  EXPECT_EQ(this->keys().count_pre_keys(alice, 1).value(), 3u);
  // Sequence numbers continue after a reopen: new envelopes still go to the back.
  const QueuedEnvelope after = this->envelope(alice, 1);
  ASSERT_TRUE(this->send({after}).has_value());
  EXPECT_EQ(this->loaded_ids(alice, 1).back(), after.id);
}

// --- tokens -------------------------------------------------------------------------------------

TYPED_TEST(ServerStoreTest, InvitesAreSingleUseAndExpire) {
  const std::uint64_t now = this->now_seconds();
  ASSERT_TRUE(this->tokens().create_invite("invite-1", now + 100).has_value());
  EXPECT_EQ(this->tokens().create_invite("invite-1", now + 100).error(), Error::conflict);
  EXPECT_TRUE(this->tokens().use_invite("invite-1", now).has_value());
  EXPECT_EQ(this->tokens().use_invite("invite-1", now).error(), Error::invalid_token);
  EXPECT_EQ(this->tokens().use_invite("never-made", now).error(), Error::invalid_token);

  ASSERT_TRUE(this->tokens().create_invite("invite-2", now + 10).has_value());
  EXPECT_EQ(this->tokens().use_invite("invite-2", now + 10).error(), Error::invalid_token);
  ASSERT_TRUE(this->tokens().create_invite("invite-3", now + 10).has_value());
  ASSERT_TRUE(this->messages().expire(now + 11).has_value());  // sweeps expired tokens too
  EXPECT_EQ(this->tokens().use_invite("invite-3", now).error(), Error::invalid_token);
  ASSERT_TRUE(this->tokens().create_invite("invite-4", now + 10).has_value());
  EXPECT_TRUE(this->tokens().use_invite("invite-4", now + 9).has_value());
}

TYPED_TEST(ServerStoreTest, LinkTokensAreSingleUseExpireAndNameTheAccount) {
  const AccountId alice = this->make_account("alice");
  const AccountId bob = this->make_account("bob");
  const std::uint64_t now = this->now_seconds();
  const Bytes token_a = filled(32, 0x1A);
  const Bytes token_b = filled(32, 0x1B);
  ASSERT_TRUE(this->tokens().create_link_token(token_a, alice, now + 600).has_value());
  ASSERT_TRUE(this->tokens().create_link_token(token_b, bob, now + 600).has_value());
  EXPECT_EQ(this->tokens().create_link_token(token_a, bob, now + 600).error(), Error::conflict);
  EXPECT_EQ(this->tokens().create_link_token(filled(32, 0x1C), bob + 1000, now + 600).error(),
            Error::not_found);

  EXPECT_EQ(this->tokens().use_link_token(token_b, now).value(), bob);
  EXPECT_EQ(this->tokens().use_link_token(token_a, now).value(), alice);
  EXPECT_EQ(this->tokens().use_link_token(token_a, now).error(), Error::invalid_token);
  EXPECT_EQ(this->tokens().use_link_token(filled(32, 0x00), now).error(), Error::invalid_token);

  const Bytes expiring = filled(32, 0x2A);
  ASSERT_TRUE(this->tokens().create_link_token(expiring, alice, now + 600).has_value());
  EXPECT_EQ(this->tokens().use_link_token(expiring, now + 600).error(), Error::invalid_token);
  EXPECT_EQ(this->tokens().use_link_token(expiring, now).error(),
            Error::invalid_token);  // used up anyway
}

// --- schema -------------------------------------------------------------------------------------

TYPED_TEST(ServerStoreTest, ListsItsSchema) {
  const auto schema = this->store_->schema();
  ASSERT_FALSE(schema.empty());
  std::set<std::string> tables;
  std::set<std::pair<std::string, std::string>> unique(schema.begin(), schema.end());
  EXPECT_EQ(unique.size(), schema.size());
  for (const auto& [table, column] : schema) {
    EXPECT_NE(table.rfind("sqlite_", 0), 0u) << table;
    EXPECT_FALSE(column.empty());
    tables.insert(table);
  }
  tables.erase("schema_version");  // PostgreSQL's record of it (SQLite: the file header)
  // The key transparency log (every backend has one).
  EXPECT_EQ(
      tables.erase("kt_entries") + tables.erase("kt_versions") + tables.erase("kt_cosignatures"),
      this->store_->kt() != nullptr ? 3u : 0u);
  EXPECT_EQ(tables, (std::set<std::string>{"accounts", "attachments", "blocks", "devices",
                                           "invites", "link_tokens", "messages", "pre_keys",
                                           "send_dedup", "shared_bodies", "signed_pre_keys"}));
  for (const auto& expected :
       std::vector<std::pair<std::string, std::string>>{{"accounts", "username"},
                                                        {"accounts", "recovery_key"},
                                                        {"devices", "auth_key"},
                                                        {"devices", "name"},
                                                        {"messages", "envelope_id"},
                                                        {"messages", "content"},
                                                        {"link_tokens", "token_hash"},
                                                        {"send_dedup", "expires_at"}}) {
    EXPECT_TRUE(unique.count(expected)) << expected.first << "." << expected.second;
  }
}

// --- SQLite only --------------------------------------------------------------------------------

// Takes a file of the current schema back to version 4 (before shared bodies, and before the
// dedup rows' list of devices left out, version 7, the transparency log, version 8, and the
// auditors' co-signatures, version 9), for the tests of older versions' migrations.
constexpr const char* kUndoVersion5 =
    "DROP TABLE kt_cosignatures;"
    "DROP TABLE kt_versions;"
    "DROP TABLE kt_entries;"
    "ALTER TABLE send_dedup DROP COLUMN refused;"
    "DROP TRIGGER messages_release_body;"
    "DROP TABLE shared_bodies;"
    "ALTER TABLE messages DROP COLUMN body_id;";

class SqliteStoreTest : public ::testing::Test {
 protected:
  std::filesystem::path file() const { return dir_.path() / "server.db"; }

  std::unique_ptr<SqliteServerStore> open() {
    SqliteOptions options;
    options.now_ms = [] { return kStartMs; };
    options.log = [this](std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_.emplace_back(line);
    };
    auto store = SqliteServerStore::open(file(), options);
    EXPECT_TRUE(store.has_value());
    return store ? std::move(*store) : nullptr;
  }

  // Runs SQL on the file directly, as a damaged disk or a careless operator would.
  void raw(const std::string& sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(file().c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  }

  std::string raw_text(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(file().c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      const auto* text = sqlite3_column_text(st, 0);
      out = text ? reinterpret_cast<const char*>(text) : "";
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
  }

  bool logged(const std::string& needle) {
    std::lock_guard lock(log_mu_);
    return std::any_of(log_.begin(), log_.end(), [&](const std::string& line) {
      return line.find(needle) != std::string::npos;
    });
  }

  static tl::expected<void, Error> send(MessageStore& messages, const QueuedEnvelope& e) {
    std::promise<tl::expected<void, Error>> done;
    messages.enqueue({e}, std::nullopt, [&](tl::expected<void, Error> r) { done.set_value(r); });
    return done.get_future().get();
  }

  static QueuedEnvelope envelope(AccountId account, std::uint32_t n) {
    QueuedEnvelope e;
    for (std::size_t i = 0; i < 4; ++i) e.id[i] = static_cast<std::uint8_t>(n >> (8 * i));
    e.account = account;
    e.device = 1;
    e.content = filled(20, 0xC0);
    return e;
  }

  TempDir dir_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

TEST_F(SqliteStoreTest, CorruptRowsAreIoErrorsNotCrashes) {
  AccountId alice = 0;
  {
    auto store = open();
    ASSERT_NE(store, nullptr);
    alice = store->accounts()
                .create_account("alice", filled(33, 5), device_record(1, 1), signed_pre_key(1),
                                pre_keys(1, 1))
                .value();
    ASSERT_TRUE(send(store->messages(), envelope(alice, 1)).has_value());
  }
  raw("UPDATE messages SET envelope_id = x'0102';"
      "UPDATE devices SET auth_key = x'00';"
      "UPDATE pre_keys SET public_key = x'';"
      "UPDATE signed_pre_keys SET signature = zeroblob(65);");

  auto store = open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->messages().load(alice, 1, 10).error(), Error::io);
  EXPECT_TRUE(logged("corrupt row in messages: column envelope_id: 2 bytes, expected 16"));
  EXPECT_EQ(store->accounts().find_account("alice").error(), Error::io);
  EXPECT_TRUE(logged("corrupt row in devices: column auth_key: 1 bytes, expected 32"));
  EXPECT_EQ(store->keys().take_pre_key(alice, 1).error(), Error::io);
  EXPECT_EQ(store->keys().signed_pre_key(alice, 1).error(), Error::io);
  EXPECT_EQ(store->messages().count(alice, 1).value(), 1u);  // what needs no bad column still works

  raw("UPDATE devices SET auth_key = zeroblob(32), registration_id = -1;");
  EXPECT_EQ(store->accounts().find_account(alice).error(), Error::io);
  EXPECT_TRUE(logged("corrupt row in devices: column registration_id"));
  raw("UPDATE devices SET registration_id = 1; UPDATE accounts SET identity_key = zeroblob(34);");
  EXPECT_EQ(store->accounts().find_account(alice).error(), Error::io);
  raw("UPDATE accounts SET identity_key = zeroblob(33), recovery_key = zeroblob(31);");
  EXPECT_EQ(store->accounts().find_account(alice).error(), Error::io);
  EXPECT_TRUE(logged("corrupt row in accounts: column recovery_key: 31 bytes"));
  raw("UPDATE accounts SET recovery_key = zeroblob(32); UPDATE devices SET name = zeroblob(257);");
  EXPECT_EQ(store->accounts().find_account(alice).error(), Error::io);
  EXPECT_TRUE(logged("corrupt row in devices: column name: 257 bytes"));
  raw("UPDATE devices SET name = x'';");
  EXPECT_TRUE(store->accounts().find_account(alice).has_value());
}

TEST_F(SqliteStoreTest, AcknowledgedSendsSurviveKillDashNine) {
  AccountId alice = 0;
  {
    auto store = open();
    ASSERT_NE(store, nullptr);
    alice = store->accounts()
                .create_account("alice", filled(33, 5), device_record(1, 1), signed_pre_key(1), {})
                .value();
  }
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child sends as fast as it can and reports each acknowledgement down the pipe.
    close(fds[0]);
    SqliteOptions options;
    options.log = [](std::string_view) {};
    auto store = SqliteServerStore::open(file(), options);
    if (!store) _exit(2);
    const int out = fds[1];
    for (std::uint32_t n = 1;; ++n) {
      (*store)->messages().enqueue(
          {envelope(alice, n)}, std::nullopt, [out, n](tl::expected<void, Error> r) {
            if (r && write(out, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) _exit(3);
          });
      if (n % 64 == 0) usleep(1000);
    }
  }
  close(fds[1]);
  std::set<std::uint32_t> acknowledged;
  std::uint32_t n = 0;
  while (acknowledged.size() < 300 &&
         read(fds[0], &n, sizeof n) == static_cast<ssize_t>(sizeof n)) {
    acknowledged.insert(n);
  }
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  while (read(fds[0], &n, sizeof n) == static_cast<ssize_t>(sizeof n)) acknowledged.insert(n);
  close(fds[0]);
  ASSERT_GE(acknowledged.size(), 300u);

  auto store = open();
  ASSERT_NE(store, nullptr);
  auto loaded = store->messages().load(alice, 1, 1'000'000);
  ASSERT_TRUE(loaded.has_value());
  std::set<std::uint32_t> stored;
  for (const auto& e : *loaded) {
    stored.insert(static_cast<std::uint32_t>(e.id[0]) | static_cast<std::uint32_t>(e.id[1]) << 8 |
                  static_cast<std::uint32_t>(e.id[2]) << 16 |
                  static_cast<std::uint32_t>(e.id[3]) << 24);
  }
  for (const std::uint32_t a : acknowledged)
    EXPECT_TRUE(stored.count(a)) << "acknowledged send " << a << " lost";
  std::cout << "[ kill -9 ] " << acknowledged.size() << " acknowledged, " << stored.size()
            << " stored\n";
}

TEST_F(SqliteStoreTest, DeliveredMessagesLeaveNoCopyInTheFile) {
  auto marked = [](const std::string& tag) {
    std::string text;
    while (text.size() < 200) text += tag;
    return Bytes(text.begin(), text.end());
  };
  const Bytes delivered = marked("delivered-ciphertext-");
  const Bytes waiting = marked("waiting-ciphertext-");
  {
    auto store = open();
    ASSERT_NE(store, nullptr);
    const AccountId alice =
        store->accounts()
            .create_account("alice", filled(33, 5), device_record(1, 1), signed_pre_key(1), {})
            .value();
    QueuedEnvelope gone = envelope(alice, 1);
    gone.content = delivered;
    QueuedEnvelope kept = envelope(alice, 2);
    kept.content = waiting;
    ASSERT_TRUE(send(store->messages(), gone).has_value());
    ASSERT_TRUE(send(store->messages(), kept).has_value());
    ASSERT_EQ(store->messages().remove(alice, 1, {gone.id}).value(), 1u);
  }
  // Closing checkpoints the WAL into the database file and deletes it.
  EXPECT_FALSE(std::filesystem::exists(file().string() + "-wal"));
  std::ifstream in(file(), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(bytes.find(std::string(waiting.begin(), waiting.end())),
            std::string::npos);  // the probe works
  EXPECT_EQ(bytes.find("delivered-ciphertext-"), std::string::npos);
}

TEST_F(SqliteStoreTest, UsesWalAndMigratesOnce) {
  { ASSERT_NE(open(), nullptr); }
  EXPECT_EQ(raw_text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw_text("PRAGMA user_version"), "9");
  { ASSERT_NE(open(), nullptr); }  // a second open finds the schema current
  EXPECT_EQ(raw_text("PRAGMA user_version"), "9");
}

TEST_F(SqliteStoreTest, MigratesAVersion1DedupTableToTimeOrder) {
  { ASSERT_NE(open(), nullptr); }
  // Put the file back to version 1's send_dedup, with one entry, as a server of then left it (and
  // without the columns of version 3).
  raw(std::string(kUndoVersion5) +
      "DROP TABLE blocks;"
      "ALTER TABLE devices DROP COLUMN name;"
      "ALTER TABLE accounts DROP COLUMN recovery_key;"
      "DROP TABLE send_dedup;"
      "CREATE TABLE send_dedup (key_hash BLOB PRIMARY KEY, expires_at INTEGER NOT NULL) STRICT, "
      "WITHOUT ROWID;"
      "CREATE INDEX send_dedup_by_expiry ON send_dedup (expires_at);"
      "INSERT INTO send_dedup VALUES (zeroblob(32), 1);"
      "PRAGMA user_version = 1;");
  auto store = open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(raw_text("PRAGMA user_version"), "9");
  EXPECT_EQ(raw_text("SELECT group_concat(name) FROM pragma_table_info('send_dedup')"),
            "id_time,key_hash,expires_at,refused");
  EXPECT_EQ(raw_text("SELECT count(*) FROM send_dedup"), "0");
  // The new table keeps a key under the time at its head (6 bytes, big-endian milliseconds).
  Bytes key = filled(24, 0x5A);
  const std::uint64_t ms = 0x0190'1234'5678;
  for (std::size_t i = 0; i < 6; ++i) key[i] = static_cast<std::uint8_t>(ms >> (8 * (5 - i)));
  std::promise<tl::expected<void, Error>> sent;
  store->messages().enqueue({}, key, [&](tl::expected<void, Error> r) { sent.set_value(r); });
  ASSERT_TRUE(sent.get_future().get().has_value());
  EXPECT_TRUE(store->messages().was_sent(key).value());
  EXPECT_EQ(raw_text("SELECT id_time FROM send_dedup"), std::to_string(ms));
}

TEST_F(SqliteStoreTest, MigratesAVersion2DatabaseToDeviceNamesAndRecoveryKeys) {
  AccountId alice = 0;
  {
    auto store = open();
    ASSERT_NE(store, nullptr);
    alice = store->accounts()
                .create_account("alice", filled(33, 5), device_record(7, 1), signed_pre_key(1),
                                pre_keys(1, 2))
                .value();
    ASSERT_TRUE(send(store->messages(), envelope(alice, 1)).has_value());
  }
  // The file as a server of version 2 left it: the same tables without the two columns.
  raw(std::string(kUndoVersion5) +
      "DROP TABLE blocks;"
      "ALTER TABLE devices DROP COLUMN name;"
      "ALTER TABLE accounts DROP COLUMN recovery_key;"
      "PRAGMA user_version = 2;");
  ASSERT_EQ(raw_text("SELECT group_concat(name) FROM pragma_table_info('devices')"),
            "account_id,device_id,registration_id,auth_key,created_day");

  auto store = open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(raw_text("PRAGMA user_version"), "9");
  EXPECT_EQ(raw_text("SELECT group_concat(name) FROM pragma_table_info('devices')"),
            "account_id,device_id,registration_id,auth_key,created_day,name");
  EXPECT_EQ(raw_text("SELECT group_concat(name) FROM pragma_table_info('accounts')"),
            "id,username,identity_key,created_day,recovery_key");
  // What was there is kept: no name, no recovery key.
  auto found = store->accounts().find_account("alice");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->id, alice);
  EXPECT_TRUE(found->recovery_key.empty());
  ASSERT_EQ(found->devices.size(), 1u);
  EXPECT_EQ(found->devices[0].registration_id, 7u);
  EXPECT_TRUE(found->devices[0].name.empty());
  EXPECT_EQ(store->keys().count_pre_keys(alice, 1).value(), 2u);
  EXPECT_EQ(store->messages().count(alice, 1).value(), 1u);
  // And the new columns take values.
  DeviceRecord named = device_record(8, 2);
  named.name = filled(30, 0x4E);
  ASSERT_EQ(store->accounts().add_device(alice, named, signed_pre_key(2), {}).value(), 2u);
  EXPECT_EQ(store->accounts().find_account(alice).value().devices[1].name, filled(30, 0x4E));
}

TEST_F(SqliteStoreTest, MigratesAVersion3DatabaseToBlocks) {
  AccountId alice = 0;
  {
    auto store = open();
    ASSERT_NE(store, nullptr);
    alice = store->accounts()
                .create_account("alice", filled(33, 5), device_record(7, 1), signed_pre_key(1),
                                pre_keys(1, 2))
                .value();
  }
  raw(std::string(kUndoVersion5) + "DROP TABLE blocks; PRAGMA user_version = 3;");
  auto store = open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(raw_text("PRAGMA user_version"), "9");
  EXPECT_EQ(raw_text("SELECT group_concat(name) FROM pragma_table_info('blocks')"),
            "account_id,blocked_id");
  EXPECT_EQ(store->keys().count_pre_keys(alice, 1).value(), 2u);
  const AccountId bob =
      store->accounts()
          .create_account("bob", filled(33, 6), device_record(8, 1), signed_pre_key(1), {})
          .value();
  ASSERT_TRUE(store->blocks().block(alice, bob).has_value());
  EXPECT_TRUE(store->blocks().is_blocked(alice, bob).value());
}

TEST_F(SqliteStoreTest, MigratesAVersion4DatabaseToSharedBodies) {
  AccountId alice = 0;
  {
    auto store = open();
    ASSERT_NE(store, nullptr);
    alice = store->accounts()
                .create_account("alice", filled(33, 5), device_record(7, 1), signed_pre_key(1), {})
                .value();
    ASSERT_TRUE(send(store->messages(), envelope(alice, 1)).has_value());
  }
  raw(std::string(kUndoVersion5) + "PRAGMA user_version = 4;");
  auto store = open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(raw_text("PRAGMA user_version"), "9");
  EXPECT_EQ(raw_text("SELECT group_concat(name) FROM pragma_table_info('shared_bodies')"),
            "id,content,refs");
  EXPECT_EQ(raw_text("SELECT body_id FROM messages"), "0");
  // The envelope of version 4 is still there, with its own content, and counted.
  EXPECT_EQ(store->messages().stored_bytes(), 20u);
  auto loaded = store->messages().load(alice, 1, 10).value();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].content, filled(20, 0xC0));
  EXPECT_FALSE(loaded[0].shared);
}

// A recovery takes the old devices' queues, and with them the last references to a shared body.
TEST_F(SqliteStoreTest, ARecoveryReleasesTheSharedBodiesOfTheOldQueues) {
  auto store = open();
  ASSERT_NE(store, nullptr);
  const Bytes recovery = filled(32, 0x11);
  const AccountId alice = store->accounts()
                              .create_account("alice", filled(33, 5), device_record(7, 1),
                                              signed_pre_key(1), {}, recovery)
                              .value();
  auto body = std::make_shared<const Bytes>(filled(50, 0x99));
  QueuedEnvelope e = envelope(alice, 1);
  e.content.clear();
  e.body = body;
  ASSERT_TRUE(send(store->messages(), e).has_value());
  EXPECT_EQ(store->messages().stored_bytes(), 50u);
  ASSERT_EQ(store->accounts()
                .recover_account(alice, recovery, filled(33, 6), device_record(9, 2),
                                 signed_pre_key(2), {}, filled(32, 0x12))
                .value(),
            1u);
  EXPECT_EQ(store->messages().stored_bytes(), 0u);
  EXPECT_EQ(raw_text("SELECT count(*) FROM shared_bodies"), "0");
}

TEST_F(SqliteStoreTest, RefusesADatabaseFromANewerServer) {
  { ASSERT_NE(open(), nullptr); }
  raw("PRAGMA user_version = 99;");
  SqliteOptions options;
  options.log = [this](std::string_view line) { log_.emplace_back(line); };
  auto store = SqliteServerStore::open(file(), options);
  ASSERT_FALSE(store.has_value());
  EXPECT_EQ(store.error(), Error::io);
  EXPECT_TRUE(logged("newer than this server"));
}

TEST_F(SqliteStoreTest, RefusesAFileThatIsNotADatabase) {
  {
    std::ofstream out(file(), std::ios::binary);
    out << std::string(4096, 'x');
  }
  SqliteOptions options;
  options.log = [this](std::string_view line) { log_.emplace_back(line); };
  auto store = SqliteServerStore::open(file(), options);
  ASSERT_FALSE(store.has_value());
  EXPECT_EQ(store.error(), Error::io);
  EXPECT_FALSE(log_.empty());
}

#ifdef SOTTO_TEST_POSTGRES
// --- PostgreSQL only: migrations, and the schema beside SQLite's -------------------------------

class PostgresMigrationTest : public ::testing::Test {
 protected:
  PostgresOptions options(bool migrate) {
    PostgresOptions o;
    o.now_ms = [] { return kStartMs; };
    o.migrate = migrate;
    o.log = [this](std::string_view line) {
      std::lock_guard lock(mu_);
      log_ += std::string(line) + "\n";
    };
    return o;
  }
  tl::expected<std::unique_ptr<PostgresServerStore>, Error> open(bool migrate) {
    return PostgresServerStore::open(conninfo_, options(migrate));
  }
  void exec(const std::string& sql) {
    pqxx::connection conn(conninfo_);
    pqxx::nontransaction tx(conn);
    tx.exec(sql);
  }
  std::string log() {
    std::lock_guard lock(mu_);
    return log_;
  }

  std::string conninfo_ = PostgresEnvironment::fresh_schema();
  std::mutex mu_;
  std::string log_;
};

TEST_F(PostgresMigrationTest, AnEmptyDatabaseIsRefusedUntilMigrated) {
  auto refused = open(false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), Error::io);
  EXPECT_NE(log().find("schema version 0"), std::string::npos) << log();
  EXPECT_NE(log().find("sotto-server migrate"), std::string::npos) << log();

  auto before = postgres_schema_status(conninfo_);
  ASSERT_TRUE(before) << before.error();
  EXPECT_EQ(before->database, 0);
  EXPECT_EQ(before->code, postgres::kSchemaVersion);

  auto migrated = postgres_migrate(conninfo_);
  ASSERT_TRUE(migrated) << migrated.error();
  EXPECT_EQ(migrated->database, migrated->code);
  auto store = open(false);
  ASSERT_TRUE(store) << log();
  EXPECT_FALSE((*store)->schema().empty());
}

TEST_F(PostgresMigrationTest, MigratingAgainChangesNothing) {
  ASSERT_TRUE(postgres_migrate(conninfo_));
  AccountId alice = 0;
  {
    auto store = open(false);
    ASSERT_TRUE(store) << log();
    auto id = (*store)->accounts().create_account("alice", filled(33, 5), device_record(7, 0xA1),
                                                  signed_pre_key(1), pre_keys(1, 2));
    ASSERT_TRUE(id);
    alice = *id;
  }
  auto again = postgres_migrate(conninfo_);
  ASSERT_TRUE(again) << again.error();
  EXPECT_EQ(again->database, again->code);
  {
    auto store = open(true);  // a node started with migrate finds nothing to do either
    ASSERT_TRUE(store) << log();
  }
  auto store = open(false);
  ASSERT_TRUE(store) << log();
  auto found = (*store)->accounts().find_account("alice");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->id, alice);
  EXPECT_EQ(*(*store)->keys().count_pre_keys(alice, 1), 2u);
  pqxx::connection conn(conninfo_);
  pqxx::nontransaction tx(conn);
  EXPECT_EQ(tx.exec("SELECT count(*) FROM schema_version")[0][0].as<int>(), 1);
}

TEST_F(PostgresMigrationTest, ConcurrentMigrationsTakeTurns) {
  std::vector<std::thread> nodes;
  std::atomic<int> ok{0};
  for (int i = 0; i < 3; ++i) {
    nodes.emplace_back([&] {
      if (postgres_migrate(conninfo_)) ++ok;
    });
  }
  for (auto& t : nodes) t.join();
  EXPECT_EQ(ok.load(), 3);
  auto status = postgres_schema_status(conninfo_);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->database, status->code);
}

TEST_F(PostgresMigrationTest, RefusesASchemaFromANewerServer) {
  ASSERT_TRUE(postgres_migrate(conninfo_));
  const int newer = postgres::kSchemaVersion + 1;
  exec("UPDATE schema_version SET version = " + std::to_string(newer));
  auto refused = open(false);
  ASSERT_FALSE(refused);
  EXPECT_NE(log().find("schema version " + std::to_string(newer) + ", newer than this server's " +
                       std::to_string(postgres::kSchemaVersion)),
            std::string::npos)
      << log();
  EXPECT_FALSE(open(true));  // migrate does not touch it either
  auto migrated = postgres_migrate(conninfo_);
  ASSERT_FALSE(migrated);
  EXPECT_NE(migrated.error().find("newer"), std::string::npos) << migrated.error();
  pqxx::connection conn(conninfo_);
  pqxx::nontransaction tx(conn);
  EXPECT_EQ(tx.exec("SELECT version FROM schema_version")[0][0].as<int>(), newer);
}

TEST_F(PostgresMigrationTest, HasTheSqliteTablesAndColumnsPlusItsOwnTwo) {
  TempDir dir;
  std::set<std::pair<std::string, std::string>> sqlite;
  {
    auto store = SqliteServerStore::open(dir.path() / "server.db");
    ASSERT_TRUE(store);
    for (const auto& tc : (*store)->schema()) sqlite.insert(tc);
  }
  auto store = open(true);
  ASSERT_TRUE(store) << log();
  std::set<std::pair<std::string, std::string>> postgres;
  for (const auto& tc : (*store)->schema()) postgres.insert(tc);
  auto expected = sqlite;
  expected.emplace("schema_version", "version");
  expected.emplace("pre_keys", "seq");
  EXPECT_EQ(postgres, expected);
}

TEST_F(PostgresMigrationTest, AttachmentRowsLiveInPostgresAndTheirFilesOnDisk) {
  auto store = open(true);
  ASSERT_TRUE(store) << log();
  auto alice = (*store)->accounts().create_account("alice", filled(33, 5), device_record(7, 0xA1),
                                                   signed_pre_key(1), {});
  ASSERT_TRUE(alice);
  TempDir dir;
  auto rows = open_postgres_blob_rows(conninfo_, options(false).log);
  ASSERT_TRUE(rows) << log();
  auto blobs = BlobStore::open(dir.path(), std::move(*rows));
  ASSERT_TRUE(blobs);
  BlobStore& b = **blobs;
  BlobId id{};
  id[0] = 0xB1;
  ASSERT_TRUE(b.create(id, *alice, 6, 1000));
  EXPECT_EQ(b.create(id, *alice, 6, 1000).error(), Error::conflict);
  BlobId orphan{};
  orphan[0] = 0xB2;
  EXPECT_EQ(b.create(orphan, *alice + 100, 6, 1000).error(), Error::not_found);  // no account
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "blobs" / "b2000000000000000000000000000000"));
  EXPECT_EQ(*b.account_bytes(*alice), 6u);
  ASSERT_TRUE(b.append(id, 0, filled(3, 1), 5000));
  EXPECT_EQ(b.read(id, 0, 10).error(), Error::not_found);  // not complete yet
  auto done = b.append(id, 3, filled(3, 2), 5000);
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->complete);
  auto found = b.find(id);
  ASSERT_TRUE(found);
  EXPECT_TRUE(found->complete);
  EXPECT_EQ(found->expires_at, 5000u);
  EXPECT_EQ(found->received, 6u);
  EXPECT_EQ(*b.read(id, 0, 10), (Bytes{1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(*b.expire(4999), 0u);
  EXPECT_EQ(*b.expire(5000), 1u);
  EXPECT_EQ(b.find(id).error(), Error::not_found);
  EXPECT_EQ(*b.account_bytes(*alice), 0u);
}

TEST_F(PostgresMigrationTest, SendsFailWhilePostgresIsDownAndWorkAfter) {
  auto store = open(true);
  ASSERT_TRUE(store) << log();
  auto& s = **store;
  auto alice = s.accounts().create_account("alice", filled(33, 5), device_record(7, 0xA1),
                                           signed_pre_key(1), {});
  ASSERT_TRUE(alice);
  auto send = [&](std::uint8_t n) {
    QueuedEnvelope e;
    e.id[0] = n;
    e.account = *alice;
    e.device = 1;
    e.source = "bob";
    e.content = filled(10, n);
    std::promise<tl::expected<void, Error>> done;
    auto result = done.get_future();
    s.messages().enqueue({e}, std::nullopt, [&done](auto r) { done.set_value(r); });
    return result.get();
  };
  ASSERT_TRUE(send(1));
  PostgresEnvironment::server().stop();
  auto failed = send(2);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error(), Error::io);
  EXPECT_FALSE(s.accounts().find_account("alice"));
  PostgresEnvironment::server().restart();
  // The first use of each broken connection fails; the next reconnects.
  bool sent = false;
  for (int attempt = 0; attempt < 3 && !sent; ++attempt) sent = send(3).has_value();
  EXPECT_TRUE(sent) << log();
  bool found = false;
  for (int attempt = 0; attempt < 8 && !found; ++attempt)
    found = s.accounts().find_account("alice").has_value();
  EXPECT_TRUE(found) << log();
  auto loaded = s.messages().load(*alice, 1, 10);
  ASSERT_TRUE(loaded);
  ASSERT_EQ(loaded->size(), 2u);  // the send that failed was not stored
  EXPECT_EQ((*loaded)[0].id[0], 1);
  EXPECT_EQ((*loaded)[1].id[0], 3);
}
#endif

}  // namespace
}  // namespace sotto::store
