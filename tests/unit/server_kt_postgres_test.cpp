// The key transparency log on the PostgreSQL store (the `cluster` label): several servers on one
// database keep one log. Each account change takes the log's advisory lock, takes in what the
// other servers appended, and commits its entry with the change; each lookup takes in what the
// others appended before it answers. A private PostgreSQL server is started by the test.
#include <gtest/gtest.h>

#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "server/kt.h"
#include "store/server/postgres/pg_store.h"
#include "transparency/proofs.h"
#include "util/postgres_server.h"

namespace sotto::server {
namespace {

namespace kt = transparency;
using store::AccountLog;
using store::AccountRecord;
using store::DeviceRecord;
using store::Error;
using store::PostgresServerStore;
using store::SignedPreKeyRecord;

std::uint64_t clock_ms() {
  return 1'700'000'000'000ull;
}

DeviceRecord device(std::uint32_t registration_id, std::uint8_t auth) {
  DeviceRecord d;
  d.registration_id = registration_id;
  d.auth_key = Bytes(32, auth);
  return d;
}

SignedPreKeyRecord spk() {
  return SignedPreKeyRecord{1, Bytes(33, 0x51), Bytes(64, 0x52)};
}

class FailingLog final : public AccountLog {
 public:
  tl::expected<void, Error> account_changed(const AccountRecord&, const Commit&,
                                            const ReadFrom&) override {
    return tl::unexpected(Error::io);
  }
};

class ServerKtPostgres : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new testing::PostgresServer(SOTTO_PG_BIN_DIR); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    // A database of its own per test.
    static int next = 0;
    const std::string name = "kt" + std::to_string(++next);
    {
      pqxx::connection conn(server_->conninfo());
      pqxx::nontransaction tx(conn);
      tx.exec("CREATE DATABASE " + name);
    }
    conninfo_ = server_->conninfo();
    const auto at = conninfo_.find("dbname=");
    ASSERT_NE(at, std::string::npos) << conninfo_;
    const auto end = conninfo_.find(' ', at);
    conninfo_.replace(at, end == std::string::npos ? std::string::npos : end - at,
                      "dbname=" + name);
  }

  // One server's store.
  std::unique_ptr<PostgresServerStore> open_store() {
    store::PostgresOptions o;
    o.migrate = true;
    o.pool_connections = 4;
    o.log = [](std::string_view) {};
    auto opened = PostgresServerStore::open(conninfo_, o);
    EXPECT_TRUE(opened);
    return opened ? std::move(*opened) : nullptr;
  }
  // One server's log, with the cluster's keys.
  static std::unique_ptr<KeyTransparency> open_kt(PostgresServerStore& store) {
    crypto::Secret<32> vrf_secret{ByteView(Bytes(32, 0x11))};
    crypto::Secret<32> seed{ByteView(Bytes(32, 0x22))};
    auto opened = KeyTransparency::open_with_keys(kt::VrfKeyPair::from_secret(vrf_secret),
                                                  crypto::Ed25519KeyPair::from_seed(seed),
                                                  *store.kt(), crypto::system_rng(), clock_ms);
    EXPECT_TRUE(opened) << (opened ? "" : opened.error());
    return opened ? std::move(*opened) : nullptr;
  }

  static inline testing::PostgresServer* server_ = nullptr;
  std::string conninfo_;
};

// What a client checks: the head's signature and the search proof; the account's latest version.
std::optional<kt::LabelVersion> verified(const KeyTransparency& log, const std::string& name,
                                         kt::SignedTreeHead* head_out = nullptr) {
  auto p = log.search(name, 0);
  EXPECT_TRUE(p);
  if (!p) return std::nullopt;
  auto head = kt::decode_signed_tree_head(p->tree_head);
  auto proof = kt::decode_search_proof(p->proof);
  EXPECT_TRUE(head && proof);
  if (!head || !proof) return std::nullopt;
  EXPECT_TRUE(kt::verify_tree_head(*head, log.public_keys().signing_key));
  if (head_out != nullptr) *head_out = *head;
  auto found = kt::verify_search(log.public_keys(), head->head, name, *proof);
  EXPECT_TRUE(found);
  if (!found || !*found) return std::nullopt;
  return **found;
}

TEST_F(ServerKtPostgres, TwoServersOnOneDatabaseKeepOneLog) {
  auto store_a = open_store();
  auto store_b = open_store();
  ASSERT_TRUE(store_a && store_b);
  auto a = open_kt(*store_a);
  auto b = open_kt(*store_b);
  ASSERT_TRUE(a && b);

  // Registered through A, looked up through B: B takes in A's entry first.
  auto alice =
      store_a->accounts().create_account("alice", Bytes(33, 0x05), device(7, 0xA1), spk(), {});
  ASSERT_TRUE(alice);
  auto v = verified(*b, "alice");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->version, 1u);
  EXPECT_EQ(b->log().head(), a->log().head());

  // Changes through both, each following on from the other's entries.
  ASSERT_TRUE(
      store_b->accounts().create_account("bob", Bytes(33, 0x05), device(8, 0xB1), spk(), {}));
  ASSERT_TRUE(store_b->accounts().add_device(*alice, device(9, 0xA2), spk(), {}));
  ASSERT_TRUE(
      store_a->accounts().create_account("carol", Bytes(33, 0x05), device(10, 0xC1), spk(), {}));
  v = verified(*a, "alice");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->version, 2u);
  EXPECT_EQ(v->value.devices.size(), 2u);

  // Both at once, from several threads each.
  constexpr int kPerThread = 12;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto& store = t % 2 == 0 ? *store_a : *store_b;
      for (int i = 0; i < kPerThread; ++i) {
        const std::string name = "user" + std::to_string(t) + "x" + std::to_string(i);
        EXPECT_TRUE(store.accounts().create_account(
            name, Bytes(33, 0x05), device(100 + i, static_cast<std::uint8_t>(t)), spk(), {}));
      }
    });
  }
  for (auto& t : threads) t.join();

  // One log: entry 0, then one per change, every account at its latest value through either
  // server, and both servers at the same head.
  const std::uint64_t changes = 4 + 4 * kPerThread;  // alice, bob, alice's device, carol
  for (auto* log : {a.get(), b.get()}) {
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string name = "user" + std::to_string(t) + "x" + std::to_string(i);
        auto found = verified(*log, name);
        ASSERT_TRUE(found) << name;
        EXPECT_EQ(found->version, 1u);
        auto account = store_a->accounts().find_account(name);
        ASSERT_TRUE(account);
        EXPECT_EQ(found->value, *KeyTransparency::value_of(*account));
      }
    }
    EXPECT_EQ(log->log().head().head.size, 1 + changes);
  }
  EXPECT_EQ(a->log().head(), b->log().head());
  // A third server opens the stored log and finds every entry's root where it should be.
  auto store_c = open_store();
  ASSERT_TRUE(store_c);
  auto c = open_kt(*store_c);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->log().head(), a->log().head());
  // And the heads A signed along the way are consistent with the last.
  kt::SignedTreeHead head;
  ASSERT_TRUE(verified(*c, "bob", &head));
  auto proof = c->log().consistency(3, head.head.size);
  ASSERT_TRUE(proof);
  EXPECT_TRUE(kt::verify_consistency_proof(c->log().head_at(3)->head, head.head, *proof));
}

TEST_F(ServerKtPostgres, ALogThatCannotWriteLeavesTheAccountUnchanged) {
  auto store = open_store();
  ASSERT_TRUE(store);
  FailingLog failing;
  store->kt()->set_account_log(&failing);
  EXPECT_EQ(store->accounts()
                .create_account("alice", Bytes(33, 0x05), device(7, 0xA1), spk(), {})
                .error(),
            Error::io);
  EXPECT_EQ(store->accounts().find_account("alice").error(), Error::not_found);
  store->kt()->set_account_log(nullptr);
  auto alice =
      store->accounts().create_account("alice", Bytes(33, 0x05), device(7, 0xA1), spk(), {});
  ASSERT_TRUE(alice);
  store->kt()->set_account_log(&failing);
  EXPECT_EQ(store->accounts().add_device(*alice, device(8, 0xA2), spk(), {}).error(), Error::io);
  EXPECT_EQ(store->accounts().remove_device(*alice, 1).error(), Error::io);
  auto after = store->accounts().find_account("alice");
  ASSERT_TRUE(after);
  ASSERT_EQ(after->devices.size(), 1u);
  EXPECT_EQ(after->devices[0].id, 1u);
  store->kt()->set_account_log(nullptr);
}

TEST_F(ServerKtPostgres, ServersStartingTogetherLogTheExistingAccountsOnce) {
  {
    auto store = open_store();
    ASSERT_TRUE(store);
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(store->accounts().create_account("old" + std::to_string(i), Bytes(33, 0x05),
                                                   device(i + 1, 0x01), spk(), {}));
    }
  }
  constexpr int kServers = 3;
  std::vector<std::unique_ptr<PostgresServerStore>> stores;
  for (int i = 0; i < kServers; ++i) stores.push_back(open_store());
  std::vector<std::unique_ptr<KeyTransparency>> logs(kServers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kServers; ++i) {
    threads.emplace_back([&, i] { logs[i] = open_kt(*stores[i]); });
  }
  for (auto& t : threads) t.join();
  for (auto& log : logs) ASSERT_TRUE(log);
  for (auto& log : logs) {
    ASSERT_TRUE(log->refresh());
    // Entry 0 and one entry with every account, written by whichever server came first.
    EXPECT_EQ(log->log().head().head.size, 2u);
    EXPECT_EQ(log->log().head(), logs[0]->log().head());
  }
  for (int i = 0; i < 20; ++i) {
    auto v = verified(*logs[i % kServers], "old" + std::to_string(i));
    ASSERT_TRUE(v);
    EXPECT_EQ(v->version, 1u);
  }
}

}  // namespace
}  // namespace sotto::server
