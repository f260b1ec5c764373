// The server's key transparency log wired to its SQLite store (server/kt.h): every account change
// appends the account's new value in the change's own transaction, the log survives a restart
// and a kill -9 in step with the accounts, a log that cannot write leaves the account unchanged,
// and the proofs lookups carry verify with the library's client side.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "server/kt.h"
#include "store/server/sqlite_store.h"
#include "transparency/proofs.h"

namespace sotto::server {
namespace {

namespace kt = transparency;
using store::AccountRecord;
using store::DeviceRecord;
using store::Error;
using store::SignedPreKeyRecord;
using store::SqliteServerStore;

Bytes filled(std::size_t n, std::uint8_t value) {
  return Bytes(n, value);
}

DeviceRecord device(std::uint32_t registration_id, std::uint8_t auth) {
  DeviceRecord d;
  d.registration_id = registration_id;
  d.auth_key = filled(32, auth);
  return d;
}

SignedPreKeyRecord spk() {
  return SignedPreKeyRecord{1, filled(33, 0x51), filled(64, 0x52)};
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/sotto-kt-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::uint64_t clock_ms() {
  return 1'700'000'000'000ull;
}

std::unique_ptr<KeyTransparency> open_kt(SqliteServerStore& store,
                                         std::size_t bulk_entry_changes = kBulkEntryChanges) {
  crypto::Secret<32> vrf_secret{ByteView(filled(32, 0x11))};
  crypto::Secret<32> seed{ByteView(filled(32, 0x22))};
  auto opened = KeyTransparency::open_with_keys(
      kt::VrfKeyPair::from_secret(vrf_secret), crypto::Ed25519KeyPair::from_seed(seed), *store.kt(),
      crypto::system_rng(), clock_ms, bulk_entry_changes);
  EXPECT_TRUE(opened) << (opened ? "" : opened.error());
  return opened ? std::move(*opened) : nullptr;
}

std::unique_ptr<SqliteServerStore> open_store(const std::filesystem::path& dir) {
  store::SqliteOptions options;
  options.log = [](std::string_view) {};
  auto opened = SqliteServerStore::open(dir / "sotto.db", options);
  EXPECT_TRUE(opened);
  return opened ? std::move(*opened) : nullptr;
}

// What a client does with a lookup's proof: the head's signature, then the search proof.
std::optional<kt::LabelVersion> verified(const KeyTransparency& log, const std::string& name) {
  auto p = log.search(name, 0);
  EXPECT_TRUE(p);
  if (!p) return std::nullopt;
  auto head = kt::decode_signed_tree_head(p->tree_head);
  auto proof = kt::decode_search_proof(p->proof);
  EXPECT_TRUE(head && proof);
  if (!head || !proof) return std::nullopt;
  EXPECT_TRUE(kt::verify_tree_head(*head, log.public_keys().signing_key));
  auto found = kt::verify_search(log.public_keys(), head->head, name, *proof);
  EXPECT_TRUE(found);
  if (!found || !*found) return std::nullopt;
  return **found;
}

// The log's latest value of an account is exactly what the store holds for it.
void expect_logged(SqliteServerStore& store, const KeyTransparency& log, const std::string& name,
                   std::uint32_t version) {
  auto account = store.accounts().find_account(name);
  ASSERT_TRUE(account);
  auto v = verified(log, name);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->version, version);
  EXPECT_EQ(v->value, *KeyTransparency::value_of(*account));
}

TEST(ServerKt, EveryAccountChangeIsLoggedWithIt) {
  TempDir dir;
  auto store = open_store(dir.path());
  ASSERT_NE(store, nullptr);
  auto log = open_kt(*store);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->log().head().head.size, 1u);

  auto bob = store->accounts().create_account("bob", filled(33, 0x05), device(7, 0xB1), spk(), {},
                                              filled(32, 0x77));
  ASSERT_TRUE(bob);
  EXPECT_EQ(log->log().head().head.size, 2u);
  expect_logged(*store, *log, "bob", 1);

  auto second = store->accounts().add_device(*bob, device(8, 0xB2), spk(), {});
  ASSERT_TRUE(second);
  EXPECT_EQ(log->log().head().head.size, 3u);
  expect_logged(*store, *log, "bob", 2);
  {
    auto v = verified(*log, "bob");
    ASSERT_TRUE(v);
    ASSERT_EQ(v->value.devices.size(), 2u);
    EXPECT_EQ(v->value.devices[1].device_id, *second);
  }

  ASSERT_TRUE(store->accounts().remove_device(*bob, *second));
  expect_logged(*store, *log, "bob", 3);

  ASSERT_TRUE(store->accounts().recover_account(*bob, filled(32, 0x77), filled(33, 0x06),
                                                device(9, 0xB3), spk(), {}, filled(32, 0x78)));
  expect_logged(*store, *log, "bob", 4);
  EXPECT_EQ(log->log().head().head.size, 5u);
  // A change refused by the store (a taken username) logs nothing.
  EXPECT_EQ(
      store->accounts().create_account("bob", filled(33, 0x05), device(1, 1), spk(), {}).error(),
      Error::conflict);
  EXPECT_EQ(log->log().head().head.size, 5u);
  // An unknown name is proven absent.
  auto absent = log->search("nobody", 0);
  ASSERT_TRUE(absent);
  auto head = kt::decode_signed_tree_head(absent->tree_head);
  auto proof = kt::decode_search_proof(absent->proof);
  ASSERT_TRUE(head && proof);
  auto found = kt::verify_search(log->public_keys(), head->head, "nobody", *proof);
  ASSERT_TRUE(found);
  EXPECT_FALSE(*found);
}

class FailingLog final : public store::AccountLog {
 public:
  tl::expected<void, Error> account_changed(const AccountRecord&, const Commit&,
                                            const ReadFrom&) override {
    ++calls;
    return tl::unexpected(Error::io);
  }
  int calls = 0;
};

TEST(ServerKt, ALogThatCannotWriteLeavesTheAccountUnchanged) {
  TempDir dir;
  auto store = open_store(dir.path());
  ASSERT_NE(store, nullptr);
  auto alice =
      store->accounts().create_account("alice", filled(33, 0x05), device(7, 0xA1), spk(), {});
  ASSERT_TRUE(alice);
  FailingLog failing;
  store->kt()->set_account_log(&failing);
  EXPECT_EQ(store->accounts()
                .create_account("carol", filled(33, 0x05), device(7, 0xC1), spk(), {})
                .error(),
            Error::io);
  EXPECT_EQ(store->accounts().find_account("carol").error(), Error::not_found);
  EXPECT_EQ(store->accounts().add_device(*alice, device(8, 0xA2), spk(), {}).error(), Error::io);
  EXPECT_EQ(store->accounts().find_account(*alice)->devices.size(), 1u);
  EXPECT_EQ(failing.calls, 2);
  store->kt()->set_account_log(nullptr);
}

TEST(ServerKt, AServerWithAccountsLogsThemAtItsFirstStartAndReopensTheSameLog) {
  TempDir dir;
  kt::SignedTreeHead first;
  {
    auto store = open_store(dir.path());
    ASSERT_NE(store, nullptr);
    for (const char* name : {"ann", "ben", "cat"}) {
      ASSERT_TRUE(
          store->accounts().create_account(name, filled(33, 0x05), device(7, 0xA1), spk(), {}));
    }
    auto log = open_kt(*store);
    ASSERT_NE(log, nullptr);
    EXPECT_EQ(log->log().head().head.size, 2u);  // entry 0, then all three at once
    for (const char* name : {"ann", "ben", "cat"}) expect_logged(*store, *log, name, 1);
    first = log->log().head();
  }
  auto store = open_store(dir.path());
  ASSERT_NE(store, nullptr);
  auto log = open_kt(*store);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->log().head().head, first.head);
  // A client that saw the first head follows the log on with a consistency proof.
  kt::TreeHeadTracker tracker(log->public_keys());
  ASSERT_TRUE(tracker.advance(first, {}));
  ASSERT_TRUE(
      store->accounts().create_account("dan", filled(33, 0x05), device(7, 0xD1), spk(), {}));
  auto p = log->search("dan", first.head.size);
  ASSERT_TRUE(p);
  auto head = kt::decode_signed_tree_head(p->tree_head);
  auto consistency = kt::decode_consistency_proof(p->consistency);
  ASSERT_TRUE(head && consistency);
  EXPECT_TRUE(tracker.advance(*head, *consistency));
  // A size beyond the log gets the head alone, which that client's tracker refuses.
  auto beyond = log->search("dan", 1000);
  ASSERT_TRUE(beyond);
  EXPECT_TRUE(beyond->consistency.empty());
}

// Replays every audit record of the log in an Auditor, as sotto-audit does.
std::unique_ptr<kt::Auditor> replay(const KeyTransparency& log) {
  auto auditor = std::make_unique<kt::Auditor>(log.public_keys());
  for (;;) {
    auto a = log.audit(auditor->size(), kMaxAuditRecordsPerAnswer);
    EXPECT_TRUE(a);
    if (!a || a->records.empty()) break;  // replayed it all
    for (const Bytes& r : a->records) {
      auto record = kt::decode_audit_record(r);
      EXPECT_TRUE(record);
      if (!record) return nullptr;
      EXPECT_TRUE(auditor->apply(*record));
    }
  }
  return auditor;
}

TEST(ServerKt, TheFirstStartSplitsTheExistingAccountsIntoEntriesOfBoundedSize) {
  TempDir dir;
  kt::SignedTreeHead first;
  const std::vector<std::string> names = {"ann", "ben", "cat", "dan", "eve"};
  {
    auto store = open_store(dir.path());
    ASSERT_NE(store, nullptr);
    for (const auto& name : names) {
      ASSERT_TRUE(
          store->accounts().create_account(name, filled(33, 0x05), device(7, 0xA1), spk(), {}));
    }
    auto log = open_kt(*store, 2);
    ASSERT_NE(log, nullptr);
    // Entry 0, then 2 + 2 + 1 accounts.
    EXPECT_EQ(log->log().head().head.size, 4u);
    for (const auto& name : names) expect_logged(*store, *log, name, 1);
    for (std::uint64_t i = 1; i < 4; ++i) {
      auto record = log->log().audit_record(i);
      ASSERT_TRUE(record);
      EXPECT_EQ(record->changes.size(), i == 3 ? 1u : 2u);
    }
    auto auditor = replay(*log);
    ASSERT_NE(auditor, nullptr);
    EXPECT_EQ(auditor->size(), 4u);
    EXPECT_TRUE(auditor->check(log->log().head()));
    first = log->log().head();
  }
  // Written together: the reopened log is the same, and logs nothing more.
  auto store = open_store(dir.path());
  ASSERT_NE(store, nullptr);
  auto log = open_kt(*store, 2);
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->log().head(), first);
}

TEST(ServerKt, AuditAnswersArePagedAndReplayToTheSignedHead) {
  TempDir dir;
  auto store = open_store(dir.path());
  ASSERT_NE(store, nullptr);
  auto log = open_kt(*store);
  ASSERT_NE(log, nullptr);
  for (const char* name : {"ann", "ben", "cat"}) {
    ASSERT_TRUE(
        store->accounts().create_account(name, filled(33, 0x05), device(7, 0xA1), spk(), {}));
  }
  auto all = log->audit(0, 100);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->records.size(), 4u);
  EXPECT_EQ(all->tree_head, kt::encode_signed_tree_head(log->log().head()));
  // count and bytes bound an answer, which still holds one record at least.
  auto two = log->audit(1, 2);
  ASSERT_TRUE(two);
  ASSERT_EQ(two->records.size(), 2u);
  EXPECT_EQ(two->records[0], all->records[1]);
  auto tight = log->audit(1, 100, 1);
  ASSERT_TRUE(tight);
  EXPECT_EQ(tight->records.size(), 1u);
  // From the end of the log on: the head alone.
  auto end = log->audit(4, 100);
  ASSERT_TRUE(end);
  EXPECT_TRUE(end->records.empty());
  EXPECT_EQ(end->tree_head, all->tree_head);
  EXPECT_TRUE(log->audit(1000, 100)->records.empty());
  auto auditor = replay(*log);
  ASSERT_NE(auditor, nullptr);
  EXPECT_TRUE(auditor->check(log->log().head()));
}

kt::Cosignature cosign(const kt::Auditor& auditor, const kt::SignedTreeHead& head,
                       const crypto::Ed25519KeyPair& key, std::uint64_t time_ms) {
  EXPECT_TRUE(auditor.check(head));
  kt::Cosignature c;
  c.auditor_key = key.public_key();
  c.head = head;
  c.time_ms = time_ms;
  c.signature = kt::cosign_tree_head_at(head.head, time_ms, key);
  return c;
}

// Checks a served co-signature the way a client does: the auditor's signature, the log's
// signature of the co-signed head, and its consistency with the answer's head.
void expect_served(const KeyTransparency::Proof& p, const KeyTransparency& log,
                   const kt::Cosignature& c) {
  ASSERT_EQ(p.cosignatures.size(), 1u);
  const auto& served = p.cosignatures[0];
  EXPECT_EQ(served.cosignature, c);
  EXPECT_TRUE(kt::verify_cosignature_at(c.head.head, c.time_ms, c.auditor_key, c.signature));
  EXPECT_TRUE(kt::verify_tree_head(c.head, log.public_keys().signing_key));
  auto head = kt::decode_signed_tree_head(p.tree_head);
  ASSERT_TRUE(head);
  if (c.head.head.size == head->head.size) {
    EXPECT_TRUE(served.consistency.empty());
    EXPECT_EQ(c.head.head, head->head);
    return;
  }
  auto proof = kt::decode_consistency_proof(served.consistency);
  ASSERT_TRUE(proof);
  EXPECT_TRUE(kt::verify_consistency_proof(c.head.head, head->head, *proof));
}

TEST(ServerKt, KeepsTheNewestCoSignatureOfConfiguredAuditorsAndServesItWithLookups) {
  TempDir dir;
  const auto auditor_key =
      crypto::Ed25519KeyPair::from_seed(crypto::Secret<32>{ByteView(filled(32, 0x33))});
  const auto stranger =
      crypto::Ed25519KeyPair::from_seed(crypto::Secret<32>{ByteView(filled(32, 0x44))});
  kt::Cosignature kept;
  {
    auto store = open_store(dir.path());
    ASSERT_NE(store, nullptr);
    auto log = open_kt(*store);
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(
        store->accounts().create_account("ann", filled(33, 0x05), device(7, 0xA1), spk(), {}));
    auto auditor = replay(*log);
    ASSERT_NE(auditor, nullptr);
    const auto head = log->log().head();
    using R = KeyTransparency::CosignRefusal;
    // No auditor configured yet: refused.
    EXPECT_EQ(log->add_cosignature(cosign(*auditor, head, auditor_key, 1000)).error(),
              R::unknown_auditor);
    ASSERT_TRUE(log->set_auditors({auditor_key.public_key()}));
    EXPECT_EQ(log->add_cosignature(cosign(*auditor, head, stranger, 1000)).error(),
              R::unknown_auditor);
    // A head the log did not sign at that size, a signature that does not verify, a time far
    // ahead of the server's clock.
    kt::Cosignature bad = cosign(*auditor, head, auditor_key, 1000);
    bad.head.head.root[0] ^= 1;
    EXPECT_EQ(log->add_cosignature(bad).error(), R::bad_head);
    bad = cosign(*auditor, head, auditor_key, 1000);
    bad.time_ms = 1001;
    EXPECT_EQ(log->add_cosignature(bad).error(), R::bad_signature);
    EXPECT_EQ(log->add_cosignature(
                     cosign(*auditor, head, auditor_key, clock_ms() + kMaxCosignatureAheadMs + 1))
                  .error(),
              R::too_new);
    auto none = log->search("ann", 0);
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->cosignatures.empty());

    kept = cosign(*auditor, head, auditor_key, 2000);
    ASSERT_TRUE(log->add_cosignature(kept));
    // An older one changes nothing.
    ASSERT_TRUE(log->add_cosignature(cosign(*auditor, head, auditor_key, 1500)));
    auto p = log->search("ann", 0);
    ASSERT_TRUE(p);
    expect_served(*p, *log, kept);
    // The log moves on: the co-signature comes with a consistency proof to the new head, in
    // lookups and in monitoring answers.
    ASSERT_TRUE(
        store->accounts().create_account("ben", filled(33, 0x05), device(7, 0xB1), spk(), {}));
    p = log->search("ann", 0);
    ASSERT_TRUE(p);
    expect_served(*p, *log, kept);
    auto m = log->monitor("ben", 0);
    ASSERT_TRUE(m);
    expect_served(*m, *log, kept);
  }
  // Kept durably.
  {
    auto store = open_store(dir.path());
    ASSERT_NE(store, nullptr);
    auto log = open_kt(*store);
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->set_auditors({auditor_key.public_key()}));
    auto p = log->search("ann", 0);
    ASSERT_TRUE(p);
    expect_served(*p, *log, kept);
    // An auditor the operator no longer configures is not served.
    ASSERT_TRUE(log->set_auditors({stranger.public_key()}));
    p = log->search("ann", 0);
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->cosignatures.empty());
  }
  // A log that lost the entries the co-signature covers no longer serves it.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir.path() / "sotto.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "DELETE FROM kt_versions WHERE entry >= 1; "
                           "DELETE FROM kt_entries WHERE idx >= 1;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    auto store = open_store(dir.path());
    ASSERT_NE(store, nullptr);
    auto log = open_kt(*store);  // logs both accounts again, in one entry: another history
    ASSERT_NE(log, nullptr);
    EXPECT_EQ(log->log().head().head.size, 2u);
    ASSERT_TRUE(log->set_auditors({auditor_key.public_key()}));
    auto p = log->search("ann", 0);
    ASSERT_TRUE(p);
    EXPECT_TRUE(p->cosignatures.empty());
    // And an auditor that replayed the old log sees the rewrite: entry 1 is not what it was.
    auto all = log->audit(1, 10);
    ASSERT_TRUE(all);
    ASSERT_FALSE(all->records.empty());
  }
}

// Accounts committed so far, read beside the writer (WAL: readers do not wait).
int committed_accounts(const std::filesystem::path& dir) {
  sqlite3* db = nullptr;
  int n = 0;
  if (sqlite3_open_v2((dir / "sotto.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM accounts", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

// kill -9 in the middle of registrations: after a restart every account is in the log with the
// value the store holds, and the log has one entry per registration that committed, no more.
TEST(ServerKt, KillNineNeverSplitsAnAccountChangeFromItsLogEntry) {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    ASSERT_NE(store, nullptr);
    ASSERT_NE(open_kt(*store), nullptr);
  }
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = open_store(dir.path());
    auto log = store ? open_kt(*store) : nullptr;
    if (!log) _exit(2);
    for (int i = 0;; ++i) {
      auto id = store->accounts().create_account("user" + std::to_string(i), filled(33, 0x05),
                                                 device(7, 0xA1), spk(), {});
      if (!id) _exit(3);
      if (!store->accounts().add_device(*id, device(8, 0xA2), spk(), {})) _exit(4);
    }
  }
  // Wait until the child has made a good number of changes, then kill it mid-stream.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline && committed_accounts(dir.path()) < 40) {
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, WNOHANG), 0) << "the writer exited early";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);

  auto store = open_store(dir.path());
  ASSERT_NE(store, nullptr);
  auto log = open_kt(*store);
  ASSERT_NE(log, nullptr);
  auto accounts = store->kt()->all_accounts();
  ASSERT_TRUE(accounts);
  ASSERT_GT(accounts->size(), 2u);
  std::uint64_t changes = 0;
  for (const auto& a : *accounts) {
    changes += a.devices.size();  // a registration, and a link when it has two devices
    auto v = verified(*log, a.username);
    ASSERT_TRUE(v) << a.username;
    EXPECT_EQ(v->version, a.devices.size()) << a.username;
    EXPECT_EQ(v->value, *KeyTransparency::value_of(a)) << a.username;
  }
  EXPECT_EQ(log->log().head().head.size, 1 + changes);
}

// What the log adds to a registration (printed, never asserted: the test machine is shared). Each
// registration is one fsync'd transaction either way; with the log it also computes the name's VRF
// proof and writes the entry's two rows.
TEST(ServerKt, PrintsWhatTheLogAddsToARegistration) {
  constexpr int kAccounts = 200;
  using Clock = std::chrono::steady_clock;
  const auto us = [](Clock::duration d) {
    return std::chrono::duration<double, std::micro>(d).count() / kAccounts;
  };
  // Returns the time per registration in the store's transaction, and per VRF proof computed
  // before it (as the server does, outside the write lock).
  const auto run = [&](bool logged) {
    TempDir dir;
    auto store = open_store(dir.path());
    std::unique_ptr<KeyTransparency> log = logged ? open_kt(*store) : nullptr;
    Clock::duration in_store{}, vrf{};
    for (int i = 0; i < kAccounts; ++i) {
      const std::string name = "user" + std::to_string(i);
      const auto t0 = Clock::now();
      if (log) log->log().warm(name);
      const auto t1 = Clock::now();
      EXPECT_TRUE(
          store->accounts().create_account(name, filled(33, 0x05), device(7, 0xA1), spk(), {}));
      in_store += Clock::now() - t1;
      vrf += t1 - t0;
    }
    return std::pair(us(in_store), us(vrf));
  };
  const auto [without, unused] = run(false);
  const auto [with, vrf] = run(true);
  std::printf(
      "registration in the store: %.0f us without the log, %.0f us with it (%+.0f us); the "
      "name's VRF proof before it: %.0f us\n",
      without, with, with - without, vrf);
  (void)unused;
}

TEST(ServerKt, KeysTextRoundTrips) {
  TempDir dir;
  auto store = open_store(dir.path());
  ASSERT_NE(store, nullptr);
  auto log = open_kt(*store);
  ASSERT_NE(log, nullptr);
  const std::string text = kt_keys_text(log->public_keys());
  EXPECT_EQ(text.size(), 129u);
  auto back = parse_kt_keys(text);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->signing_key, log->public_keys().signing_key);
  EXPECT_EQ(back->vrf_key, log->public_keys().vrf_key);
  EXPECT_FALSE(parse_kt_keys("00:11"));
  EXPECT_FALSE(parse_kt_keys(text.substr(1)));
}

}  // namespace
}  // namespace sotto::server
