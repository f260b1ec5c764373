#include "store/server/sqlite_store.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "crypto/hash.h"
#include "store/server/sqlite_db.h"
#include "store/server/sqlite_schema.h"
#include "store/server/write_queue.h"

namespace sotto::store {
namespace {

using sqlite::Connection;
using sqlite::Row;
using sqlite::Statement;
using sqlite::Transaction;

// Sizes of what the server stores (service.proto): checked before a row is written and again
// when it is read back.
constexpr std::size_t kIdentityKeySize = 33;
constexpr std::size_t kAuthKeySize = 32;
constexpr std::size_t kPublicKeySize = 33;
constexpr std::size_t kSignatureSize = 64;
constexpr std::size_t kEnvelopeIdSize = std::tuple_size_v<EnvelopeId>;

constexpr std::uint64_t kMsPerDay = 24ull * 60 * 60 * 1000;

std::uint64_t system_now_ms() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now).count());
}

void log_to_stderr(std::string_view line) {
  std::fprintf(stderr, "sotto store: %.*s\n", static_cast<int>(line.size()), line.data());
}

bool is_unique_violation(int rc) {
  return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY;
}
bool is_missing_parent(int rc) {
  return rc == SQLITE_CONSTRAINT_FOREIGNKEY;
}

// Steps a statement that returns no rows (or whose rows are not wanted) to its end.
int run(Statement& st) {
  int rc = SQLITE_OK;
  while ((rc = st.step()) == SQLITE_ROW) {
  }
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

// Runs a statement from the connection's cache: the writer's per-operation savepoints are
// prepared once instead of parsed on every send. REQUIRES: `sql` has static storage duration.
int run_cached(Connection& conn, const char* sql) {
  auto st = conn.prepare(sql);
  if (!st) return st.error();
  return run(*st);
}

crypto::Sha256Digest digest(ByteView secret) {
  return crypto::sha256({secret});
}

// Where a dedup key's row goes: the big-endian value of its first six bytes, by convention the
// milliseconds of the client's message id (as in UUIDv7; see store.h), so that new rows land
// together at the end of the table instead of on a random page each.
std::int64_t dedup_time(ByteView key) {
  std::int64_t t = 0;
  for (std::size_t i = 0; i < 6 && i < key.size(); ++i) t = (t << 8) | key[i];
  return t;
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return b > std::numeric_limits<std::uint64_t>::max() - a
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

}  // namespace

class SqliteServerStore::Impl final : public AccountStore,
                                      public KeyStore,
                                      public MessageStore,
                                      public TokenStore,
                                      public BlockStore,
                                      public KtStore {
 public:
  Impl(SqliteOptions options, std::unique_ptr<Connection> write_conn,
       std::unique_ptr<Connection> checkpoint_conn,
       std::vector<std::unique_ptr<Connection>> read_pool)
      : options_(std::move(options)),
        write_conn_(std::move(write_conn)),
        checkpoint_conn_(std::move(checkpoint_conn)),
        pool_(std::move(read_pool)) {
    if (!options_.now_ms) options_.now_ms = system_now_ms;
    if (!options_.log) options_.log = log_to_stderr;
    if (options_.group_commit_max_batch == 0) options_.group_commit_max_batch = 1;
    // The storage budget's starting point: one pass over the messages and the shared bodies
    // (length() reads no content), before any thread writes.
    if (auto st = write_conn_->prepare(
            "SELECT (SELECT coalesce(sum(length(content)), 0) FROM messages) + "
            "(SELECT coalesce(sum(length(content)), 0) FROM shared_bodies)");
        st && st->step() == SQLITE_ROW) {
      Row row(*st);
      stored_bytes_.store(row.u64(0), std::memory_order_relaxed);
    } else {
      options_.log("sqlite: cannot sum the stored message bytes; counting from 0");
    }
    // Checkpoints (copying the WAL back into the database file, and that file's fsync) run on a
    // thread of their own, so that the writer spends its time on commits. SQLite would otherwise
    // run one inside whichever commit crosses wal_autocheckpoint pages.
    (void)write_conn_->exec("PRAGMA wal_autocheckpoint=0");
    sqlite3_wal_hook(write_conn_->handle(), &Impl::on_wal_commit, this);
    checkpointer_ = std::thread([this] { checkpoint_loop(); });
    writes_.start();
  }

  ~Impl() override {
    writes_.stop();  // the writer drains the queue before it returns
    {
      std::lock_guard lock(checkpoint_mu_);
      checkpoint_stop_ = true;
    }
    checkpoint_cv_.notify_all();
    checkpointer_.join();
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // --- AccountStore -------------------------------------------------------------------------

  tl::expected<AccountId, Error> create_account(const std::string& username, ByteView identity_key,
                                                const DeviceRecord& first_device,
                                                const SignedPreKeyRecord& signed_pre_key,
                                                const std::vector<OneTimePreKeyRecord>& pre_keys,
                                                ByteView recovery_key) override {
    if (auto ok = check_size("identity_key", identity_key, kIdentityKeySize); !ok)
      return tl::unexpected(ok.error());
    if (auto ok = check_recovery_key(recovery_key); !ok) return tl::unexpected(ok.error());
    if (auto ok = check_device_keys(first_device, signed_pre_key, pre_keys); !ok)
      return tl::unexpected(ok.error());

    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("create_account: begin", *conn, rc));
    AccountId id = 0;
    {
      auto st = conn->prepare(
          "INSERT INTO accounts (username, identity_key, created_day, recovery_key) "
          "VALUES (?1, ?2, ?3, ?4)");
      if (!st) return tl::unexpected(fail("create_account: prepare", *conn, st.error()));
      st->bind(1, std::string_view(username))
          .bind(2, identity_key)
          .bind_u64(3, today())
          .bind(4, recovery_key);
      const int rc = run(*st);
      if (is_unique_violation(rc)) return tl::unexpected(Error::conflict);
      if (rc != SQLITE_OK) return tl::unexpected(fail("create_account: insert", *conn, rc));
      id = sqlite3_last_insert_rowid(conn->handle());
    }
    if (auto ok = insert_device(*conn, id, 1, first_device, signed_pre_key, pre_keys); !ok) {
      return tl::unexpected(ok.error());
    }
    if (auto ok = commit_change(*conn, txn, id, "create_account: commit"); !ok)
      return tl::unexpected(ok.error());
    return id;
  }

  // Accounts are read on every send and login and change rarely (a device added or removed), so
  // they are served from a cache that every change to an account's devices invalidates. A read
  // that raced such a change is not cached (the generation tells).
  tl::expected<AccountRecord, Error> find_account(const std::string& username) override {
    const std::uint64_t generation = account_generation_.load(std::memory_order_acquire);
    {
      std::lock_guard lock(cache_mu_);
      if (auto it = by_name_.find(username); it != by_name_.end()) return *it->second;
    }
    auto found = [&]() -> tl::expected<AccountRecord, Error> {
      auto conn = pool_.acquire();
      Transaction txn(*conn);  // the account and its devices from one snapshot
      if (const int rc = txn.begin_read(); rc != SQLITE_OK)
        return tl::unexpected(fail("find_account: begin", *conn, rc));
      auto st = conn->prepare(
          "SELECT id, username, identity_key, recovery_key FROM accounts WHERE username = ?1");
      if (!st) return tl::unexpected(fail("find_account: prepare", *conn, st.error()));
      st->bind(1, std::string_view(username));
      return read_account(*conn, *st);
    }();
    if (found) remember(*found, generation);
    return found;
  }

  tl::expected<std::vector<std::shared_ptr<const AccountRecord>>, Error> find_accounts(
      const std::vector<std::string>& usernames) override {
    std::vector<std::shared_ptr<const AccountRecord>> out(usernames.size());
    std::vector<std::size_t> missed;
    {
      // One lock for all of them, and no copy: the cached records are immutable.
      std::lock_guard lock(cache_mu_);
      for (std::size_t i = 0; i < usernames.size(); ++i) {
        if (auto it = by_name_.find(usernames[i]); it != by_name_.end()) {
          out[i] = it->second;
        } else {
          missed.push_back(i);
        }
      }
    }
    for (std::size_t i : missed) {
      auto found = find_account(usernames[i]);
      if (!found && found.error() != Error::not_found) return tl::unexpected(found.error());
      if (found) out[i] = std::make_shared<const AccountRecord>(std::move(*found));
    }
    return out;
  }

  tl::expected<AccountRecord, Error> find_account(AccountId id) override {
    const std::uint64_t generation = account_generation_.load(std::memory_order_acquire);
    {
      std::lock_guard lock(cache_mu_);
      if (auto it = by_id_.find(id); it != by_id_.end()) return *it->second;
    }
    auto found = [&]() -> tl::expected<AccountRecord, Error> {
      auto conn = pool_.acquire();
      Transaction txn(*conn);
      if (const int rc = txn.begin_read(); rc != SQLITE_OK)
        return tl::unexpected(fail("find_account: begin", *conn, rc));
      auto st = conn->prepare(
          "SELECT id, username, identity_key, recovery_key FROM accounts WHERE id = ?1");
      if (!st) return tl::unexpected(fail("find_account: prepare", *conn, st.error()));
      st->bind(1, id);
      return read_account(*conn, *st);
    }();
    if (found) remember(*found, generation);
    return found;
  }

  tl::expected<DeviceId, Error> add_device(
      AccountId account, const DeviceRecord& device, const SignedPreKeyRecord& signed_pre_key,
      const std::vector<OneTimePreKeyRecord>& pre_keys) override {
    if (auto ok = check_device_keys(device, signed_pre_key, pre_keys); !ok)
      return tl::unexpected(ok.error());

    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("add_device: begin", *conn, rc));
    if (auto exists = account_exists(*conn, account); !exists) {
      return tl::unexpected(exists.error());
    } else if (!*exists) {
      return tl::unexpected(Error::not_found);
    }

    // The lowest id not in use (as Signal's server does); clients notice a reused id by its new
    // registration id.
    DeviceId next = 1;
    {
      auto st =
          conn->prepare("SELECT device_id FROM devices WHERE account_id = ?1 ORDER BY device_id");
      if (!st) return tl::unexpected(fail("add_device: prepare", *conn, st.error()));
      st->bind(1, account);
      int rc = SQLITE_OK;
      while ((rc = st->step()) == SQLITE_ROW) {
        Row row(*st);
        const DeviceId used = row.u32(0);
        if (!row.ok()) return tl::unexpected(corrupt("devices", row));
        if (used == next) {
          if (next == std::numeric_limits<DeviceId>::max()) return tl::unexpected(Error::conflict);
          ++next;
        } else if (used > next) {
          break;
        }
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return tl::unexpected(fail("add_device: ids", *conn, rc));
    }
    if (auto ok = insert_device(*conn, account, next, device, signed_pre_key, pre_keys); !ok) {
      return tl::unexpected(ok.error());
    }
    auto committed = commit_change(*conn, txn, account, "add_device: commit");
    forget(account);  // committed or not, the cached devices may be stale
    if (!committed) return tl::unexpected(committed.error());
    return next;
  }

  tl::expected<std::size_t, Error> remove_device(AccountId account, DeviceId device) override {
    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("remove_device: begin", *conn, rc));
    auto queued = count_queued(*conn, account, device);
    if (!queued) return tl::unexpected(queued.error());
    auto queued_bytes = sum_queued_bytes(*conn, account, device);
    if (!queued_bytes) return tl::unexpected(queued_bytes.error());
    // ON DELETE CASCADE removes the device's signed prekey, one-time prekeys and queue in the
    // same statement.
    auto st = conn->prepare("DELETE FROM devices WHERE account_id = ?1 AND device_id = ?2");
    if (!st) return tl::unexpected(fail("remove_device: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device});
    if (const int rc = run(*st); rc != SQLITE_OK)
      return tl::unexpected(fail("remove_device", *conn, rc));
    if (conn->changes() == 0) return tl::unexpected(Error::not_found);
    // Bodies the queue was the last to share go with it.
    auto bodies = sweep_bodies(*conn);
    if (!bodies) return tl::unexpected(bodies.error());
    auto committed = commit_change(*conn, txn, account, "remove_device: commit");
    queue_counts_.erase({account, device});  // its queue went with it (ON DELETE CASCADE)
    forget(account);
    if (!committed) return tl::unexpected(committed.error());
    release_stored_bytes(*queued_bytes + *bodies);
    return *queued;
  }

  tl::expected<std::size_t, Error> recover_account(
      AccountId account, ByteView expected_recovery_key, ByteView identity_key,
      const DeviceRecord& first_device, const SignedPreKeyRecord& signed_pre_key,
      const std::vector<OneTimePreKeyRecord>& pre_keys, ByteView recovery_key) override {
    if (auto ok = check_size("identity_key", identity_key, kIdentityKeySize); !ok)
      return tl::unexpected(ok.error());
    if (auto ok = check_recovery_key(recovery_key); !ok) return tl::unexpected(ok.error());
    if (auto ok = check_device_keys(first_device, signed_pre_key, pre_keys); !ok)
      return tl::unexpected(ok.error());

    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("recover_account: begin", *conn, rc));
    {
      // Compare and swap: only the recovery key that was verified may be replaced.
      auto st = conn->prepare(
          "UPDATE accounts SET identity_key = ?2, recovery_key = ?3 "
          "WHERE id = ?1 AND recovery_key = ?4");
      if (!st) return tl::unexpected(fail("recover_account: prepare", *conn, st.error()));
      st->bind(1, account)
          .bind(2, identity_key)
          .bind(3, recovery_key)
          .bind(4, expected_recovery_key);
      if (const int rc = run(*st); rc != SQLITE_OK)
        return tl::unexpected(fail("recover_account: update", *conn, rc));
      if (conn->changes() == 0) {
        auto exists = account_exists(*conn, account);
        if (!exists) return tl::unexpected(exists.error());
        return tl::unexpected(*exists ? Error::conflict : Error::not_found);
      }
    }
    std::size_t queued = 0;
    {
      auto st = conn->prepare("SELECT count(*) FROM messages WHERE account_id = ?1");
      if (!st) return tl::unexpected(fail("recover_account: prepare", *conn, st.error()));
      st->bind(1, account);
      if (const int rc = st->step(); rc != SQLITE_ROW)
        return tl::unexpected(fail("recover_account: count", *conn, rc));
      Row row(*st);
      queued = static_cast<std::size_t>(row.u64(0));
      if (!row.ok()) return tl::unexpected(corrupt("messages", row));
    }
    auto queued_bytes = sum_queued_bytes(*conn, account, std::nullopt);
    if (!queued_bytes) return tl::unexpected(queued_bytes.error());
    // Every device, and with it (ON DELETE CASCADE) its keys and its queue; and the link tokens
    // the old devices asked for, which would otherwise let them add a device again.
    static constexpr const char* kRemovals[] = {
        "DELETE FROM devices WHERE account_id = ?1",
        "DELETE FROM link_tokens WHERE account_id = ?1",
    };
    for (const char* sql : kRemovals) {
      auto st = conn->prepare(sql);
      if (!st) return tl::unexpected(fail("recover_account: prepare", *conn, st.error()));
      st->bind(1, account);
      if (const int rc = run(*st); rc != SQLITE_OK)
        return tl::unexpected(fail("recover_account: delete", *conn, rc));
    }
    auto bodies = sweep_bodies(*conn);
    if (!bodies) return tl::unexpected(bodies.error());
    if (auto ok = insert_device(*conn, account, 1, first_device, signed_pre_key, pre_keys); !ok) {
      return tl::unexpected(ok.error());
    }
    auto committed = commit_change(*conn, txn, account, "recover_account: commit");
    // The old devices' queue lengths are stale whatever the outcome.
    std::erase_if(queue_counts_, [&](const auto& entry) { return entry.first.first == account; });
    forget(account);
    if (!committed) return tl::unexpected(committed.error());
    release_stored_bytes(*queued_bytes + *bodies);
    return queued;
  }

  // --- KtStore ------------------------------------------------------------------------------

  tl::expected<void, Error> append(const KtEntryRow& entry) override {
    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("kt append: begin", *conn, rc));
    if (auto ok = insert_kt_entry(*conn, entry); !ok) return ok;
    if (const int rc = txn.commit(); rc != SQLITE_OK)
      return tl::unexpected(fail("kt append: commit", *conn, rc));
    return {};
  }

  tl::expected<void, Error> append_all(const std::vector<KtEntryRow>& entries) override {
    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("kt append: begin", *conn, rc));
    for (const KtEntryRow& entry : entries) {
      if (auto ok = insert_kt_entry(*conn, entry); !ok) return ok;
    }
    if (const int rc = txn.commit(); rc != SQLITE_OK)
      return tl::unexpected(fail("kt append: commit", *conn, rc));
    return {};
  }

  tl::expected<void, Error> load(const std::function<void(const KtEntryRow&)>& visit) override {
    return load_from(0, visit);
  }

  // Entries and versions are both read in log order and merged, so the log is never held twice.
  tl::expected<void, Error> load_from(
      std::uint64_t first, const std::function<void(const KtEntryRow&)>& visit) override {
    if (first > static_cast<std::uint64_t>(INT64_MAX)) return {};
    auto conn = pool_.acquire();
    Transaction txn(*conn);
    if (const int rc = txn.begin_read(); rc != SQLITE_OK)
      return tl::unexpected(fail("kt load: begin", *conn, rc));
    auto entries = conn->prepare(
        "SELECT idx, timestamp_ms, prefix_root FROM kt_entries WHERE idx >= ?1 ORDER BY idx");
    if (!entries) return tl::unexpected(fail("kt load: prepare", *conn, entries.error()));
    entries->bind(1, static_cast<std::int64_t>(first));
    auto versions = conn->prepare(
        "SELECT entry, label_index, version, commitment, opening, value FROM kt_versions "
        "WHERE entry >= ?1 ORDER BY entry, seq");
    if (!versions) return tl::unexpected(fail("kt load: prepare", *conn, versions.error()));
    versions->bind(1, static_cast<std::int64_t>(first));
    int vrc = versions->step();
    int erc = SQLITE_OK;
    std::uint64_t expected = first;
    while ((erc = entries->step()) == SQLITE_ROW) {
      KtEntryRow e;
      {
        Row row(*entries);
        e.index = row.u64(0);
        e.timestamp_ms = row.u64(1);
        e.prefix_root = row.blob(2, 32);
        if (!row.ok()) return tl::unexpected(corrupt("kt_entries", row));
      }
      if (e.index != expected++) return tl::unexpected(corrupt("kt_entries", "a gap in idx"));
      while (vrc == SQLITE_ROW) {
        Row row(*versions);
        const std::uint64_t of = row.u64(0);
        if (!row.ok()) return tl::unexpected(corrupt("kt_versions", row));
        if (of < e.index) return tl::unexpected(corrupt("kt_versions", "an entry that is not"));
        if (of > e.index) break;
        KtVersionRow v;
        v.label_index = row.blob(1, 32);
        v.version = row.u32(2);
        v.commitment = row.blob(3, 32);
        v.opening = row.blob(4, 32);
        v.value = row.blob(5);
        if (!row.ok()) return tl::unexpected(corrupt("kt_versions", row));
        e.versions.push_back(std::move(v));
        vrc = versions->step();
      }
      visit(e);
    }
    if (erc != SQLITE_DONE) return tl::unexpected(fail("kt load: entries", *conn, erc));
    if (vrc == SQLITE_ROW) return tl::unexpected(corrupt("kt_versions", "an entry that is not"));
    if (vrc != SQLITE_DONE) return tl::unexpected(fail("kt load: versions", *conn, vrc));
    return {};
  }

  tl::expected<void, Error> save_cosignature(const KtCosignatureRow& c) override {
    auto conn = writing();
    auto st = conn->prepare(
        "INSERT OR REPLACE INTO kt_cosignatures (auditor_key, tree_head, time_ms, signature) "
        "VALUES (?1, ?2, ?3, ?4)");
    if (!st) return tl::unexpected(fail("kt cosignature: prepare", *conn, st.error()));
    st->bind(1, ByteView(c.auditor_key))
        .bind(2, ByteView(c.tree_head))
        .bind_u64(3, c.time_ms)
        .bind(4, ByteView(c.signature));
    if (const int rc = run(*st); rc != SQLITE_OK)
      return tl::unexpected(fail("kt cosignature: insert", *conn, rc));
    return {};
  }

  tl::expected<std::vector<KtCosignatureRow>, Error> cosignatures() override {
    auto conn = pool_.acquire();
    auto st = conn->prepare(
        "SELECT auditor_key, tree_head, time_ms, signature FROM kt_cosignatures "
        "ORDER BY auditor_key");
    if (!st) return tl::unexpected(fail("kt cosignatures: prepare", *conn, st.error()));
    std::vector<KtCosignatureRow> out;
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      KtCosignatureRow c;
      c.auditor_key = row.blob(0, 32);
      c.tree_head = row.blob(1);
      c.time_ms = row.u64(2);
      c.signature = row.blob(3, 64);
      if (!row.ok()) return tl::unexpected(corrupt("kt_cosignatures", row));
      out.push_back(std::move(c));
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail("kt cosignatures", *conn, rc));
    return out;
  }

  void set_account_log(AccountLog* log) override {
    auto conn = writing();  // not while a change is being logged
    account_log_.store(log, std::memory_order_release);
  }

  tl::expected<std::vector<AccountRecord>, Error> all_accounts() override {
    std::vector<AccountId> ids;
    {
      auto conn = pool_.acquire();
      auto st = conn->prepare("SELECT id FROM accounts ORDER BY id");
      if (!st) return tl::unexpected(fail("all_accounts: prepare", *conn, st.error()));
      int rc = SQLITE_OK;
      while ((rc = st->step()) == SQLITE_ROW) {
        Row row(*st);
        ids.push_back(row.i64(0));
        if (!row.ok()) return tl::unexpected(corrupt("accounts", row));
      }
      if (rc != SQLITE_DONE) return tl::unexpected(fail("all_accounts", *conn, rc));
    }
    std::vector<AccountRecord> out;
    out.reserve(ids.size());
    for (AccountId id : ids) {
      auto found = find_account(id);
      if (!found && found.error() == Error::not_found) continue;  // removed since
      if (!found) return tl::unexpected(found.error());
      out.push_back(std::move(*found));
    }
    return out;
  }

  // --- KeyStore -----------------------------------------------------------------------------

  tl::expected<void, Error> set_signed_pre_key(AccountId account, DeviceId device,
                                               const SignedPreKeyRecord& key) override {
    if (auto ok = check_signed_pre_key(key); !ok) return ok;
    auto conn = writing();
    return put_signed_pre_key(*conn, account, device, key);
  }

  tl::expected<SignedPreKeyRecord, Error> signed_pre_key(AccountId account,
                                                         DeviceId device) override {
    auto conn = pool_.acquire();
    auto st = conn->prepare(
        "SELECT key_id, public_key, signature FROM signed_pre_keys "
        "WHERE account_id = ?1 AND device_id = ?2");
    if (!st) return tl::unexpected(fail("signed_pre_key: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device});
    const int rc = st->step();
    if (rc == SQLITE_DONE) return tl::unexpected(Error::not_found);
    if (rc != SQLITE_ROW) return tl::unexpected(fail("signed_pre_key", *conn, rc));
    Row row(*st);
    SignedPreKeyRecord key;
    key.id = row.u32(0);
    key.public_key = row.blob(1, kPublicKeySize);
    key.signature = row.blob(2, kSignatureSize);
    if (!row.ok()) return tl::unexpected(corrupt("signed_pre_keys", row));
    return key;
  }

  tl::expected<void, Error> add_pre_keys(AccountId account, DeviceId device,
                                         const std::vector<OneTimePreKeyRecord>& keys) override {
    return store_pre_keys(account, device, keys, false);
  }

  tl::expected<void, Error> replace_pre_keys(
      AccountId account, DeviceId device, const std::vector<OneTimePreKeyRecord>& keys) override {
    return store_pre_keys(account, device, keys, true);
  }

  tl::expected<std::optional<OneTimePreKeyRecord>, Error> take_pre_key(AccountId account,
                                                                       DeviceId device) override {
    auto conn = writing();
    // One statement, so one write transaction: two fetchers (on any connections, in any
    // processes) can never be handed the same key.
    auto st = conn->prepare(
        "DELETE FROM pre_keys WHERE rowid = (SELECT rowid FROM pre_keys "
        "WHERE account_id = ?1 AND device_id = ?2 ORDER BY rowid LIMIT 1) "
        "RETURNING key_id, public_key");
    if (!st) return tl::unexpected(fail("take_pre_key: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device});
    std::optional<OneTimePreKeyRecord> key;
    std::string problem;
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      OneTimePreKeyRecord k;
      k.id = row.u32(0);
      k.public_key = row.blob(1, kPublicKeySize);
      if (!row.ok()) {
        problem = row.problem();
      } else {
        key = std::move(k);
      }
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail("take_pre_key", *conn, rc));
    // A damaged key is gone now, which is as well: the next fetch gets a good one.
    if (!problem.empty()) return tl::unexpected(corrupt("pre_keys", problem));
    return key;
  }

  tl::expected<std::uint32_t, Error> count_pre_keys(AccountId account, DeviceId device) override {
    auto conn = pool_.acquire();
    auto st =
        conn->prepare("SELECT count(*) FROM pre_keys WHERE account_id = ?1 AND device_id = ?2");
    if (!st) return tl::unexpected(fail("count_pre_keys: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device});
    if (const int rc = st->step(); rc != SQLITE_ROW)
      return tl::unexpected(fail("count_pre_keys", *conn, rc));
    Row row(*st);
    const std::uint32_t n = row.u32(0);
    if (!row.ok()) return tl::unexpected(corrupt("pre_keys", row));
    return n;
  }

  tl::expected<std::vector<std::uint32_t>, Error> pre_key_ids(AccountId account,
                                                              DeviceId device) override {
    auto conn = pool_.acquire();
    auto st = conn->prepare(
        "SELECT key_id FROM pre_keys WHERE account_id = ?1 AND device_id = ?2 ORDER BY key_id");
    if (!st) return tl::unexpected(fail("pre_key_ids: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device});
    std::vector<std::uint32_t> ids;
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      const std::uint32_t id = row.u32(0);
      if (!row.ok()) return tl::unexpected(corrupt("pre_keys", row));
      ids.push_back(id);
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail("pre_key_ids", *conn, rc));
    return ids;
  }

  // --- BlockStore ---------------------------------------------------------------------------

  tl::expected<void, Error> block(AccountId account, AccountId blocked) override {
    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("block: begin", *conn, rc));
    {
      auto st = conn->prepare(
          "SELECT (SELECT count(*) FROM blocks WHERE account_id = ?1), "
          "EXISTS (SELECT 1 FROM blocks WHERE account_id = ?1 AND blocked_id = ?2)");
      if (!st) return tl::unexpected(fail("block: prepare", *conn, st.error()));
      st->bind(1, account).bind(2, blocked);
      if (const int rc = st->step(); rc != SQLITE_ROW)
        return tl::unexpected(fail("block: count", *conn, rc));
      Row row(*st);
      const std::uint64_t count = row.u64(0);
      const std::uint64_t exists = row.u64(1);
      if (!row.ok()) return tl::unexpected(corrupt("blocks", row));
      if (exists != 0) return {};
      if (count >= kMaxBlocksPerAccount) return tl::unexpected(Error::conflict);
    }
    auto st = conn->prepare("INSERT INTO blocks (account_id, blocked_id) VALUES (?1, ?2)");
    if (!st) return tl::unexpected(fail("block: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, blocked);
    const int rc = run(*st);
    if (is_missing_parent(rc)) return tl::unexpected(Error::not_found);
    if (rc != SQLITE_OK) return tl::unexpected(fail("block", *conn, rc));
    if (const int c = txn.commit(); c != SQLITE_OK)
      return tl::unexpected(fail("block: commit", *conn, c));
    block_rows_.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  tl::expected<bool, Error> unblock(AccountId account, AccountId blocked) override {
    auto conn = writing();
    auto st = conn->prepare("DELETE FROM blocks WHERE account_id = ?1 AND blocked_id = ?2");
    if (!st) return tl::unexpected(fail("unblock: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, blocked);
    if (const int rc = run(*st); rc != SQLITE_OK) return tl::unexpected(fail("unblock", *conn, rc));
    if (conn->changes() == 0) return false;
    block_rows_.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }

  tl::expected<bool, Error> is_blocked(AccountId account, AccountId sender) override {
    // Every send asks; while nobody blocks anybody (a new server, a load test), no read at all.
    if (block_rows_.load(std::memory_order_relaxed) == 0) return false;
    auto conn = pool_.acquire();
    auto st = conn->prepare("SELECT 1 FROM blocks WHERE account_id = ?1 AND blocked_id = ?2");
    if (!st) return tl::unexpected(fail("is_blocked: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, sender);
    const int rc = st->step();
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) return tl::unexpected(fail("is_blocked", *conn, rc));
    return false;
  }

  tl::expected<std::vector<std::string>, Error> blocked(AccountId account) override {
    auto conn = pool_.acquire();
    auto st = conn->prepare(
        "SELECT a.username FROM blocks b JOIN accounts a ON a.id = b.blocked_id "
        "WHERE b.account_id = ?1 ORDER BY a.username");
    if (!st) return tl::unexpected(fail("blocked: prepare", *conn, st.error()));
    st->bind(1, account);
    std::vector<std::string> out;
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      std::string name = row.text(0);
      if (!row.ok()) return tl::unexpected(corrupt("accounts", row));
      out.push_back(std::move(name));
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail("blocked", *conn, rc));
    return out;
  }

  // Counts the rows of `blocks` once, at open: from then on this process makes every change to
  // the table (the server holds the data directory's lock), so block() and unblock() keep the
  // count. Rows removed by ON DELETE CASCADE are not counted down, which only costs a lookup.
  bool count_blocks() {
    auto conn = pool_.acquire();
    auto st = conn->prepare("SELECT count(*) FROM blocks");
    if (!st || st->step() != SQLITE_ROW) {
      options_.log("sqlite: cannot count blocks");
      return false;
    }
    Row row(*st);
    const std::uint64_t n = row.u64(0);
    if (!row.ok()) return false;
    block_rows_.store(n, std::memory_order_relaxed);
    return true;
  }

  // --- MessageStore -------------------------------------------------------------------------

  void enqueue(std::vector<QueuedEnvelope> envelopes, std::optional<Bytes> dedup_key,
               Completion done) override {
    writes_.enqueue(std::move(envelopes), std::move(dedup_key), std::move(done));
  }

  void remove_async(AccountId account, DeviceId device, std::vector<EnvelopeId> ids,
                    RemoveCompletion done, std::vector<Removing> known) override {
    writes_.remove_async(account, device, std::move(ids), std::move(done), std::move(known));
  }

  void enqueue_partial(std::vector<QueuedEnvelope> envelopes, Bytes dedup_key,
                       PartialCompletion done) override {
    writes_.enqueue_partial(std::move(envelopes), std::move(dedup_key), std::move(done));
  }

  tl::expected<std::optional<std::vector<Refusal>>, Error> sent(ByteView dedup_key) override {
    // Committed sends only (store.h): no look at the writer's queue, whose lock every
    // acknowledgement and the writer take too.
    const auto hash = digest(dedup_key);
    auto conn = pool_.acquire();
    auto st = conn->prepare(
        "SELECT expires_at, refused FROM send_dedup WHERE id_time = ?1 AND key_hash = ?2");
    if (!st) return tl::unexpected(fail("sent: prepare", *conn, st.error()));
    st->bind(1, dedup_time(dedup_key)).bind(2, ByteView(hash));
    const int rc = st->step();
    if (rc == SQLITE_DONE) return std::nullopt;
    if (rc != SQLITE_ROW) return tl::unexpected(fail("sent", *conn, rc));
    Row row(*st);
    const std::uint64_t expires_at = row.u64(0);
    const Bytes refused = row.blob(1);
    if (!row.ok()) return tl::unexpected(corrupt("send_dedup", row));
    if (expires_at <= now_seconds()) return std::nullopt;
    auto list = decode_refusals(refused);
    if (!list) return tl::unexpected(corrupt("send_dedup", "refused: malformed"));
    return std::move(*list);
  }

  tl::expected<bool, Error> was_sent(ByteView dedup_key) override {
    const auto hash = digest(dedup_key);
    if (writes_.holds(dedup_key)) return true;
    auto conn = pool_.acquire();
    auto st =
        conn->prepare("SELECT expires_at FROM send_dedup WHERE id_time = ?1 AND key_hash = ?2");
    if (!st) return tl::unexpected(fail("was_sent: prepare", *conn, st.error()));
    st->bind(1, dedup_time(dedup_key)).bind(2, ByteView(hash));
    const int rc = st->step();
    if (rc == SQLITE_DONE) return false;
    if (rc != SQLITE_ROW) return tl::unexpected(fail("was_sent", *conn, rc));
    Row row(*st);
    const std::uint64_t expires_at = row.u64(0);
    if (!row.ok()) return tl::unexpected(corrupt("send_dedup", row));
    return expires_at > now_seconds();
  }

  tl::expected<std::vector<QueuedEnvelope>, Error> load(AccountId account, DeviceId device,
                                                        std::size_t limit,
                                                        std::optional<EnvelopeId> after,
                                                        std::size_t max_bytes) override {
    std::vector<QueuedEnvelope> out;
    if (limit == 0) return out;
    auto conn = pool_.acquire();
    Transaction txn(*conn);
    if (const int rc = txn.begin_read(); rc != SQLITE_OK)
      return tl::unexpected(fail("load: begin", *conn, rc));

    std::int64_t after_seq = 0;
    if (after) {
      auto st = conn->prepare(
          "SELECT seq FROM messages WHERE envelope_id = ?1 AND account_id = ?2 AND device_id = ?3");
      if (!st) return tl::unexpected(fail("load: prepare", *conn, st.error()));
      st->bind(1, ByteView(*after)).bind(2, account).bind(3, std::int64_t{device});
      const int rc = st->step();
      // Acknowledged (or expired) meanwhile: the caller starts again from the head of the queue.
      if (rc == SQLITE_DONE) return tl::unexpected(Error::not_found);
      if (rc != SQLITE_ROW) return tl::unexpected(fail("load: after", *conn, rc));
      Row row(*st);
      after_seq = row.i64(0);
      if (!row.ok()) return tl::unexpected(corrupt("messages", row));
    }

    // A shared body is read once per envelope that points at it: every device gets its own copy.
    auto st = conn->prepare(
        "SELECT m.envelope_id, m.source, m.source_device, m.type, "
        "CASE WHEN m.body_id = 0 THEN m.content ELSE b.content END, m.client_timestamp, "
        "m.server_timestamp, m.expires_at, m.body_id != 0 FROM messages m "
        "LEFT JOIN shared_bodies b ON m.body_id != 0 AND b.id = m.body_id "
        "WHERE m.account_id = ?1 AND m.device_id = ?2 AND m.seq > ?3 AND m.expires_at > ?4 "
        "ORDER BY m.seq LIMIT ?5");
    if (!st) return tl::unexpected(fail("load: prepare", *conn, st.error()));
    const std::uint64_t max_limit =
        static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    st->bind(1, account)
        .bind(2, std::int64_t{device})
        .bind(3, after_seq)
        .bind_u64(4, now_seconds())
        .bind_u64(5, std::min<std::uint64_t>(limit, max_limit));
    int rc = SQLITE_OK;
    std::size_t bytes = 0;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      QueuedEnvelope e;
      e.id = row.fixed<kEnvelopeIdSize>(0);
      e.account = account;
      e.device = device;
      e.source = row.text(1);
      e.source_device = row.u32(2);
      e.type = row.u32(3);
      e.content = row.blob(4);
      e.client_timestamp = row.u64(5);
      e.server_timestamp = row.u64(6);
      e.expires_at = row.u64(7);
      e.shared = row.i64(8) != 0;
      if (!row.ok()) return tl::unexpected(corrupt("messages", row));
      bytes += e.content.size();
      out.push_back(std::move(e));
      if (bytes >= max_bytes) break;  // rc stays SQLITE_ROW: more may follow
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return tl::unexpected(fail("load", *conn, rc));
    return out;
  }

  tl::expected<std::size_t, Error> remove(AccountId account, DeviceId device,
                                          const std::vector<EnvelopeId>& ids) override {
    if (ids.empty()) return std::size_t{0};
    std::promise<tl::expected<std::size_t, Error>> result;
    auto future = result.get_future();
    remove_async(account, device, ids,
                 [&result](tl::expected<std::size_t, Error> r) { result.set_value(std::move(r)); },
                 {});
    return future.get();
  }

  tl::expected<std::size_t, Error> count(AccountId account, DeviceId device) override {
    auto conn = pool_.acquire();
    auto st = conn->prepare(
        "SELECT count(*) FROM messages WHERE account_id = ?1 AND device_id = ?2 AND expires_at > "
        "?3");
    if (!st) return tl::unexpected(fail("count: prepare", *conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device}).bind_u64(3, now_seconds());
    if (const int rc = st->step(); rc != SQLITE_ROW)
      return tl::unexpected(fail("count", *conn, rc));
    Row row(*st);
    const std::uint64_t n = row.u64(0);
    if (!row.ok()) return tl::unexpected(corrupt("messages", row));
    return static_cast<std::size_t>(n);
  }

  tl::expected<std::size_t, Error> count_all() override {
    auto conn = pool_.acquire();
    auto st = conn->prepare("SELECT count(*) FROM messages");
    if (!st) return tl::unexpected(fail("count_all: prepare", *conn, st.error()));
    if (const int rc = st->step(); rc != SQLITE_ROW)
      return tl::unexpected(fail("count_all", *conn, rc));
    Row row(*st);
    const std::uint64_t n = row.u64(0);
    if (!row.ok()) return tl::unexpected(corrupt("messages", row));
    return static_cast<std::size_t>(n);
  }

  std::uint64_t stored_bytes() override { return stored_bytes_.load(std::memory_order_relaxed); }

  tl::expected<std::size_t, Error> expire(std::uint64_t now_seconds) override {
    // Tokens are swept here too: their expiry times are seconds since the epoch as well. Rows go
    // in batches, each its own short transaction, so that a large backlog never holds the write
    // lock (and with it every send) for long.
    static constexpr std::int64_t kBatch = 512;
    static constexpr const char* kSweeps[] = {
        "DELETE FROM messages WHERE seq IN "
        "(SELECT seq FROM messages WHERE expires_at <= ?1 LIMIT ?2) RETURNING length(content)",
        "DELETE FROM send_dedup WHERE (id_time, key_hash) IN "
        "(SELECT id_time, key_hash FROM send_dedup WHERE expires_at <= ?1 LIMIT ?2)",
        "DELETE FROM invites WHERE code_hash IN "
        "(SELECT code_hash FROM invites WHERE expires_at <= ?1 LIMIT ?2)",
        "DELETE FROM link_tokens WHERE token_hash IN "
        "(SELECT token_hash FROM link_tokens WHERE expires_at <= ?1 LIMIT ?2)",
    };
    std::size_t removed_messages = 0;
    for (const char* sql : kSweeps) {
      for (;;) {
        auto conn = writing();
        auto st = conn->prepare(sql);
        if (!st) return tl::unexpected(fail("expire: prepare", *conn, st.error()));
        st->bind_u64(1, now_seconds).bind(2, kBatch);
        std::uint64_t bytes = 0;
        int rc = SQLITE_OK;
        while ((rc = st->step()) == SQLITE_ROW) bytes += Row(*st).u64(0);
        if (rc != SQLITE_DONE) return tl::unexpected(fail("expire", *conn, rc));
        const auto removed = static_cast<std::size_t>(conn->changes());
        if (sql == kSweeps[0] && removed > 0) {
          removed_messages += removed;
          queue_counts_.clear();
          // The trigger has counted the shared bodies' references: those none holds any more go.
          auto bodies = sweep_bodies(*conn);
          if (!bodies) return tl::unexpected(bodies.error());
          release_stored_bytes(bytes + *bodies);
        }
        if (removed < static_cast<std::size_t>(kBatch)) break;
      }
    }
    return removed_messages;
  }

  void flush() override { writes_.flush(); }

  // --- TokenStore ---------------------------------------------------------------------------

  tl::expected<void, Error> create_invite(const std::string& code,
                                          std::uint64_t expires_at) override {
    auto conn = writing();
    // Only a hash: a copy of the database does not hand out working invites.
    const auto hash = digest(as_bytes(code));
    auto st = conn->prepare("INSERT INTO invites (code_hash, expires_at) VALUES (?1, ?2)");
    if (!st) return tl::unexpected(fail("create_invite: prepare", *conn, st.error()));
    st->bind(1, ByteView(hash)).bind_u64(2, expires_at);
    const int rc = run(*st);
    if (is_unique_violation(rc)) return tl::unexpected(Error::conflict);
    if (rc != SQLITE_OK) return tl::unexpected(fail("create_invite", *conn, rc));
    return {};
  }

  tl::expected<void, Error> use_invite(const std::string& code, std::uint64_t now) override {
    auto conn = writing();
    const auto hash = digest(as_bytes(code));
    // Single use by deletion: one statement, so two registrations cannot both use one code.
    auto st = conn->prepare("DELETE FROM invites WHERE code_hash = ?1 RETURNING expires_at");
    if (!st) return tl::unexpected(fail("use_invite: prepare", *conn, st.error()));
    st->bind(1, ByteView(hash));
    auto expires_at = take_returned_u64(*conn, *st, "invites");
    if (!expires_at) return tl::unexpected(expires_at.error());
    if (!*expires_at || **expires_at <= now) return tl::unexpected(Error::invalid_token);
    return {};
  }

  tl::expected<void, Error> create_link_token(ByteView token, AccountId account,
                                              std::uint64_t expires_at) override {
    auto conn = writing();
    // Only a hash: a copy of the database cannot be used to link a device to anyone's account.
    const auto hash = digest(token);
    auto st = conn->prepare(
        "INSERT INTO link_tokens (token_hash, account_id, expires_at) VALUES (?1, ?2, ?3)");
    if (!st) return tl::unexpected(fail("create_link_token: prepare", *conn, st.error()));
    st->bind(1, ByteView(hash)).bind(2, account).bind_u64(3, expires_at);
    const int rc = run(*st);
    if (is_unique_violation(rc)) return tl::unexpected(Error::conflict);
    if (is_missing_parent(rc)) return tl::unexpected(Error::not_found);
    if (rc != SQLITE_OK) return tl::unexpected(fail("create_link_token", *conn, rc));
    return {};
  }

  tl::expected<AccountId, Error> use_link_token(ByteView token, std::uint64_t now) override {
    auto conn = writing();
    const auto hash = digest(token);
    auto st = conn->prepare(
        "DELETE FROM link_tokens WHERE token_hash = ?1 RETURNING account_id, expires_at");
    if (!st) return tl::unexpected(fail("use_link_token: prepare", *conn, st.error()));
    st->bind(1, ByteView(hash));
    std::optional<std::pair<AccountId, std::uint64_t>> found;
    std::string problem;
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      const AccountId account = row.i64(0);
      const std::uint64_t expires_at = row.u64(1);
      if (row.ok()) {
        found.emplace(account, expires_at);
      } else {
        problem = row.problem();
      }
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail("use_link_token", *conn, rc));
    if (!problem.empty()) return tl::unexpected(corrupt("link_tokens", problem));
    if (!found || found->second <= now) return tl::unexpected(Error::invalid_token);
    return found->first;
  }

  // --- ServerStore helpers ------------------------------------------------------------------

  std::vector<std::pair<std::string, std::string>> schema() {
    auto conn = pool_.acquire();
    auto listed = sqlite::list_schema(*conn);
    if (!listed) {
      options_.log(listed.error());
      return {};
    }
    return std::move(*listed);
  }

  std::uint64_t commit_count() const { return commits_.load(std::memory_order_relaxed); }

 private:
  // The write connection, held under write_mu_ for as long as the lease lives.
  class WriteLease {
   public:
    WriteLease(std::mutex& mu, Connection& conn) : lock_(mu), conn_(conn) {}
    Connection& operator*() const noexcept { return conn_; }
    Connection* operator->() const noexcept { return &conn_; }

   private:
    std::lock_guard<std::mutex> lock_;
    Connection& conn_;
  };
  WriteLease writing() { return WriteLease(write_mu_, *write_conn_); }

  using PendingOp = PendingWrite;
  using Result = tl::expected<void, Error>;
  using DeviceKey = std::pair<AccountId, DeviceId>;
  using OpResult = WriteResult;

  // --- errors -------------------------------------------------------------------------------

  // Logs a database failure (operation and SQLite's message, which names tables and columns but
  // never values) and maps it to io.
  Error fail(std::string_view op, const Connection& conn, int rc) {
    std::string line = "sqlite: ";
    line += op;
    line += ": ";
    line += sqlite3_errstr(rc);
    const std::string msg = conn.errmsg();
    if (msg != sqlite3_errstr(rc)) line += " (" + msg + ")";
    options_.log(line);
    return Error::io;
  }

  Error corrupt(std::string_view table, const Row& row) { return corrupt(table, row.problem()); }
  Error corrupt(std::string_view table, const std::string& problem) {
    options_.log("corrupt row in " + std::string(table) + ": " + problem);
    return Error::io;
  }

  Result check_size(const char* what, ByteView value, std::size_t size) {
    if (value.size() == size) return {};
    options_.log("refusing to store " + std::string(what) + " of " + std::to_string(value.size()) +
                 " bytes, expected " + std::to_string(size));
    return tl::unexpected(Error::io);
  }

  Result check_signed_pre_key(const SignedPreKeyRecord& key) {
    if (auto ok = check_size("signed_pre_keys.public_key", key.public_key, kPublicKeySize); !ok)
      return ok;
    return check_size("signed_pre_keys.signature", key.signature, kSignatureSize);
  }

  Result check_recovery_key(ByteView key) {
    if (key.empty()) return {};
    return check_size("accounts.recovery_key", key, kRecoveryKeySize);
  }

  Result check_device_keys(const DeviceRecord& device, const SignedPreKeyRecord& signed_pre_key,
                           const std::vector<OneTimePreKeyRecord>& pre_keys) {
    if (auto ok = check_size("devices.auth_key", device.auth_key, kAuthKeySize); !ok) return ok;
    if (device.name.size() > kMaxDeviceNameSize) {
      options_.log("refusing to store devices.name of " + std::to_string(device.name.size()) +
                   " bytes, at most " + std::to_string(kMaxDeviceNameSize));
      return tl::unexpected(Error::io);
    }
    if (auto ok = check_signed_pre_key(signed_pre_key); !ok) return ok;
    for (const auto& key : pre_keys) {
      if (auto ok = check_size("pre_keys.public_key", key.public_key, kPublicKeySize); !ok)
        return ok;
    }
    return {};
  }

  // --- time ---------------------------------------------------------------------------------

  std::uint64_t now_seconds() const { return options_.now_ms() / 1000; }
  std::uint64_t today() const { return options_.now_ms() / kMsPerDay; }

  // --- shared pieces of account and key writes (inside the caller's transaction) -------------

  tl::expected<bool, Error> account_exists(Connection& conn, AccountId account) {
    auto st = conn.prepare("SELECT 1 FROM accounts WHERE id = ?1");
    if (!st) return tl::unexpected(fail("account_exists: prepare", conn, st.error()));
    st->bind(1, account);
    const int rc = st->step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return tl::unexpected(fail("account_exists", conn, rc));
    return rc == SQLITE_ROW;
  }

  tl::expected<bool, Error> device_exists(Connection& conn, AccountId account, DeviceId device) {
    auto st = conn.prepare("SELECT 1 FROM devices WHERE account_id = ?1 AND device_id = ?2");
    if (!st) return tl::unexpected(fail("device_exists: prepare", conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device});
    const int rc = st->step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return tl::unexpected(fail("device_exists", conn, rc));
    return rc == SQLITE_ROW;
  }

  Result insert_device(Connection& conn, AccountId account, DeviceId id, const DeviceRecord& device,
                       const SignedPreKeyRecord& signed_pre_key,
                       const std::vector<OneTimePreKeyRecord>& pre_keys) {
    {
      auto st = conn.prepare(
          "INSERT INTO devices (account_id, device_id, registration_id, auth_key, created_day, "
          "name) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
      if (!st) return tl::unexpected(fail("insert_device: prepare", conn, st.error()));
      st->bind(1, account)
          .bind(2, std::int64_t{id})
          .bind(3, std::int64_t{device.registration_id})
          .bind(4, ByteView(device.auth_key))
          .bind_u64(5, today())
          .bind(6, ByteView(device.name));
      const int rc = run(*st);
      if (is_unique_violation(rc)) return tl::unexpected(Error::conflict);
      if (is_missing_parent(rc)) return tl::unexpected(Error::not_found);
      if (rc != SQLITE_OK) return tl::unexpected(fail("insert_device", conn, rc));
    }
    if (auto ok = put_signed_pre_key(conn, account, id, signed_pre_key); !ok) return ok;
    return put_pre_keys(conn, account, id, pre_keys);
  }

  // add_pre_keys and replace_pre_keys: one transaction, and the device must exist.
  Result store_pre_keys(AccountId account, DeviceId device,
                        const std::vector<OneTimePreKeyRecord>& keys, bool replace) {
    for (const auto& key : keys) {
      if (auto ok = check_size("pre_keys.public_key", key.public_key, kPublicKeySize); !ok)
        return ok;
    }
    auto conn = writing();
    Transaction txn(*conn);
    if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
      return tl::unexpected(fail("pre_keys: begin", *conn, rc));
    if (auto exists = device_exists(*conn, account, device); !exists) {
      return tl::unexpected(exists.error());
    } else if (!*exists) {
      return tl::unexpected(Error::not_found);
    }
    if (replace) {
      auto st = conn->prepare("DELETE FROM pre_keys WHERE account_id = ?1 AND device_id = ?2");
      if (!st) return tl::unexpected(fail("replace_pre_keys: prepare", *conn, st.error()));
      st->bind(1, account).bind(2, std::int64_t{device});
      if (const int rc = run(*st); rc != SQLITE_OK)
        return tl::unexpected(fail("replace_pre_keys", *conn, rc));
    }
    if (auto ok = put_pre_keys(*conn, account, device, keys); !ok) return ok;
    if (const int rc = txn.commit(); rc != SQLITE_OK)
      return tl::unexpected(fail("pre_keys: commit", *conn, rc));
    return {};
  }

  // How many envelopes the device's queue holds (inside the caller's transaction).
  tl::expected<std::size_t, Error> count_queued(Connection& conn, AccountId account,
                                                DeviceId device) {
    auto st =
        conn.prepare("SELECT count(*) FROM messages WHERE account_id = ?1 AND device_id = ?2");
    if (!st) return tl::unexpected(fail("count_queued: prepare", conn, st.error()));
    st->bind(1, account).bind(2, std::int64_t{device});
    if (const int rc = st->step(); rc != SQLITE_ROW)
      return tl::unexpected(fail("count_queued", conn, rc));
    Row row(*st);
    const std::uint64_t n = row.u64(0);
    if (!row.ok()) return tl::unexpected(corrupt("messages", row));
    return static_cast<std::size_t>(n);
  }

  // The ciphertext bytes a device's queue holds (every device's of the account: nullopt), inside
  // the caller's transaction.
  tl::expected<std::uint64_t, Error> sum_queued_bytes(Connection& conn, AccountId account,
                                                      std::optional<DeviceId> device) {
    auto st = conn.prepare(
        device ? "SELECT coalesce(sum(length(content)), 0) FROM messages "
                 "WHERE account_id = ?1 AND device_id = ?2"
               : "SELECT coalesce(sum(length(content)), 0) FROM messages WHERE account_id = ?1");
    if (!st) return tl::unexpected(fail("sum_queued_bytes: prepare", conn, st.error()));
    st->bind(1, account);
    if (device) st->bind(2, std::int64_t{*device});
    if (const int rc = st->step(); rc != SQLITE_ROW)
      return tl::unexpected(fail("sum_queued_bytes", conn, rc));
    Row row(*st);
    const std::uint64_t n = row.u64(0);
    if (!row.ok()) return tl::unexpected(corrupt("messages", row));
    return n;
  }

  // Deletes the shared bodies no envelope points at any more (messages_release_body has counted
  // every deletion), inside the caller's transaction; returns their bytes. The partial index
  // shared_bodies_unreferenced makes this an empty index lookup when there are none.
  tl::expected<std::uint64_t, Error> sweep_bodies(Connection& conn) {
    auto st = conn.prepare("DELETE FROM shared_bodies WHERE refs <= 0 RETURNING length(content)");
    if (!st) return tl::unexpected(fail("sweep_bodies: prepare", conn, st.error()));
    std::uint64_t bytes = 0;
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      bytes += row.u64(0);
      if (!row.ok()) return tl::unexpected(corrupt("shared_bodies", row));
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail("sweep_bodies", conn, rc));
    return bytes;
  }

  void release_stored_bytes(std::uint64_t bytes) {
    std::uint64_t now = stored_bytes_.load(std::memory_order_relaxed);
    while (!stored_bytes_.compare_exchange_weak(now, now - std::min(now, bytes),
                                                std::memory_order_relaxed)) {
    }
  }

  Result put_signed_pre_key(Connection& conn, AccountId account, DeviceId device,
                            const SignedPreKeyRecord& key) {
    auto st = conn.prepare(
        "INSERT OR REPLACE INTO signed_pre_keys (account_id, device_id, key_id, public_key, "
        "signature) "
        "VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return tl::unexpected(fail("signed_pre_key: prepare", conn, st.error()));
    st->bind(1, account)
        .bind(2, std::int64_t{device})
        .bind(3, std::int64_t{key.id})
        .bind(4, ByteView(key.public_key))
        .bind(5, ByteView(key.signature));
    const int rc = run(*st);
    if (is_missing_parent(rc)) return tl::unexpected(Error::not_found);
    if (rc != SQLITE_OK) return tl::unexpected(fail("signed_pre_key", conn, rc));
    return {};
  }

  Result put_pre_keys(Connection& conn, AccountId account, DeviceId device,
                      const std::vector<OneTimePreKeyRecord>& keys) {
    if (keys.empty()) return {};
    for (const auto& key : keys) {
      // REPLACE gives a re-uploaded id a new rowid: it counts as the newest key.
      auto st = conn.prepare(
          "INSERT OR REPLACE INTO pre_keys (account_id, device_id, key_id, public_key) "
          "VALUES (?1, ?2, ?3, ?4)");
      if (!st) return tl::unexpected(fail("pre_keys: prepare", conn, st.error()));
      st->bind(1, account)
          .bind(2, std::int64_t{device})
          .bind(3, std::int64_t{key.id})
          .bind(4, ByteView(key.public_key));
      const int rc = run(*st);
      if (is_missing_parent(rc)) return tl::unexpected(Error::not_found);
      if (rc != SQLITE_OK) return tl::unexpected(fail("pre_keys", conn, rc));
    }
    // Over the limit: keep the newest, drop the oldest.
    auto st = conn.prepare(
        "DELETE FROM pre_keys WHERE rowid IN (SELECT rowid FROM pre_keys "
        "WHERE account_id = ?1 AND device_id = ?2 ORDER BY rowid DESC LIMIT -1 OFFSET ?3)");
    if (!st) return tl::unexpected(fail("pre_keys: prepare", conn, st.error()));
    st->bind(1, account)
        .bind(2, std::int64_t{device})
        .bind(3, std::int64_t{options_.max_pre_keys_per_device});
    if (const int rc = run(*st); rc != SQLITE_OK)
      return tl::unexpected(fail("pre_keys: trim", conn, rc));
    return {};
  }

  // Caches an account read at `generation` unless an account changed since.
  void remember(const AccountRecord& account, std::uint64_t generation) {
    auto record = std::make_shared<const AccountRecord>(account);
    std::lock_guard lock(cache_mu_);
    if (account_generation_.load(std::memory_order_acquire) != generation) return;
    if (by_id_.size() >= kAccountCacheEntries) {  // crude but bounded: start afresh
      by_id_.clear();
      by_name_.clear();
    }
    by_id_[record->id] = record;
    by_name_[record->username] = record;
  }

  // Drops an account from the cache; called with the write connection held, after the change.
  void forget(AccountId account) {
    std::lock_guard lock(cache_mu_);
    account_generation_.fetch_add(1, std::memory_order_acq_rel);
    if (auto it = by_id_.find(account); it != by_id_.end()) {
      by_name_.erase(it->second->username);
      by_id_.erase(it);
    }
  }

  tl::expected<void, Error> insert_kt_entry(Connection& conn, const KtEntryRow& e) {
    {
      auto st = conn.prepare(
          "INSERT INTO kt_entries (idx, timestamp_ms, prefix_root) VALUES (?1, ?2, ?3)");
      if (!st) return tl::unexpected(fail("kt entry: prepare", conn, st.error()));
      st->bind_u64(1, e.index).bind_u64(2, e.timestamp_ms).bind(3, ByteView(e.prefix_root));
      if (const int rc = run(*st); rc != SQLITE_OK)
        return tl::unexpected(fail("kt entry: insert", conn, rc));
    }
    std::int64_t seq = 0;
    for (const KtVersionRow& v : e.versions) {
      auto st = conn.prepare(
          "INSERT INTO kt_versions (entry, seq, label_index, version, commitment, opening, value) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
      if (!st) return tl::unexpected(fail("kt version: prepare", conn, st.error()));
      st->bind_u64(1, e.index)
          .bind(2, seq++)
          .bind(3, ByteView(v.label_index))
          .bind(4, std::int64_t{v.version})
          .bind(5, ByteView(v.commitment))
          .bind(6, ByteView(v.opening))
          .bind(7, ByteView(v.value));
      if (const int rc = run(*st); rc != SQLITE_OK)
        return tl::unexpected(fail("kt version: insert", conn, rc));
    }
    return {};
  }

  // Commits an account change, and with it (when a log is set, KtStore::set_account_log) the
  // transparency log's entry for it: both in this one transaction, or neither.
  tl::expected<void, Error> commit_change(Connection& conn, Transaction& txn, AccountId account,
                                          std::string_view what) {
    AccountLog* log = account_log_.load(std::memory_order_acquire);
    if (log == nullptr) {
      if (const int rc = txn.commit(); rc != SQLITE_OK) return tl::unexpected(fail(what, conn, rc));
      return {};
    }
    tl::expected<AccountRecord, Error> after = tl::unexpected(Error::not_found);
    {
      auto st = conn.prepare(
          "SELECT id, username, identity_key, recovery_key FROM accounts WHERE id = ?1");
      if (!st) return tl::unexpected(fail("account log: prepare", conn, st.error()));
      st->bind(1, account);
      after = read_account(conn, *st);
    }
    if (!after) return tl::unexpected(after.error());
    bool committed = false;
    // One server per SQLite database: nothing is ever appended behind this log's back.
    const AccountLog::ReadFrom nothing_new = [](std::uint64_t, const AccountLog::Visit&) {
      return tl::expected<void, Error>{};
    };
    auto logged = log->account_changed(
        *after,
        [&](const KtEntryRow& row) -> tl::expected<void, Error> {
          if (committed) return tl::unexpected(Error::io);
          if (auto ok = insert_kt_entry(conn, row); !ok) return ok;
          if (const int rc = txn.commit(); rc != SQLITE_OK)
            return tl::unexpected(fail(what, conn, rc));
          committed = true;
          return {};
        },
        nothing_new);
    if (committed) return {};  // durable with its entry, whatever the log said after
    if (logged) options_.log("sqlite: the transparency log did not write its entry");
    return tl::unexpected(Error::io);
  }

  // Reads the account row the statement selects and its devices.
  tl::expected<AccountRecord, Error> read_account(Connection& conn, Statement& st) {
    const int rc = st.step();
    if (rc == SQLITE_DONE) return tl::unexpected(Error::not_found);
    if (rc != SQLITE_ROW) return tl::unexpected(fail("find_account", conn, rc));
    AccountRecord account;
    {
      Row row(st);
      account.id = row.i64(0);
      account.username = row.text(1);
      account.identity_key = row.blob(2, kIdentityKeySize);
      account.recovery_key = row.blob(3);
      if (!row.ok()) return tl::unexpected(corrupt("accounts", row));
      if (!account.recovery_key.empty() && account.recovery_key.size() != kRecoveryKeySize) {
        return tl::unexpected(corrupt(
            "accounts", "column recovery_key: " + std::to_string(account.recovery_key.size()) +
                            " bytes, expected 0 or 32"));
      }
    }
    auto devices = conn.prepare(
        "SELECT device_id, registration_id, auth_key, created_day, name FROM devices "
        "WHERE account_id = ?1 ORDER BY device_id");
    if (!devices) return tl::unexpected(fail("find_account: prepare", conn, devices.error()));
    devices->bind(1, account.id);
    int drc = SQLITE_OK;
    while ((drc = devices->step()) == SQLITE_ROW) {
      Row row(*devices);
      DeviceRecord d;
      d.id = row.u32(0);
      d.registration_id = row.u32(1);
      d.auth_key = row.blob(2, kAuthKeySize);
      d.created_day = row.u64(3);
      d.name = row.blob(4);
      if (!row.ok()) return tl::unexpected(corrupt("devices", row));
      if (d.name.size() > kMaxDeviceNameSize) {
        return tl::unexpected(corrupt("devices", "column name: " + std::to_string(d.name.size()) +
                                                     " bytes, above " +
                                                     std::to_string(kMaxDeviceNameSize)));
      }
      account.devices.push_back(std::move(d));
    }
    if (drc != SQLITE_DONE) return tl::unexpected(fail("find_account: devices", conn, drc));
    return account;
  }

  // For DELETE ... RETURNING <one non-negative integer>: nullopt when no row was deleted.
  tl::expected<std::optional<std::uint64_t>, Error> take_returned_u64(Connection& conn,
                                                                      Statement& st,
                                                                      std::string_view table) {
    std::optional<std::uint64_t> value;
    std::string problem;
    int rc = SQLITE_OK;
    while ((rc = st.step()) == SQLITE_ROW) {
      Row row(st);
      const std::uint64_t v = row.u64(0);
      if (row.ok()) {
        value = v;
      } else {
        problem = row.problem();
      }
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail(table, conn, rc));
    if (!problem.empty()) return tl::unexpected(corrupt(table, problem));
    return value;
  }

  // --- checkpoints ---------------------------------------------------------------------------

  // SQLite calls this after every commit on the write connection, with the WAL's length in pages.
  static int on_wal_commit(void* self, sqlite3*, const char*, int pages) {
    auto* impl = static_cast<Impl*>(self);
    if (pages >= kCheckpointPages) {
      {
        std::lock_guard lock(impl->checkpoint_mu_);
        impl->checkpoint_wanted_ = true;
      }
      impl->checkpoint_cv_.notify_one();
    }
    return SQLITE_OK;
  }

  // PASSIVE checkpoints never wait for, nor block, the writer or a reader; frames a reader still
  // needs are left for the next one. The WAL starts over from its beginning at the first commit
  // after a checkpoint that copied everything.
  void checkpoint_loop() {
    std::unique_lock lock(checkpoint_mu_);
    for (;;) {
      checkpoint_cv_.wait(lock, [&] { return checkpoint_stop_ || checkpoint_wanted_; });
      if (checkpoint_stop_) return;
      checkpoint_wanted_ = false;
      lock.unlock();
      int wal_pages = 0;
      int copied = 0;
      const int rc = sqlite3_wal_checkpoint_v2(checkpoint_conn_->handle(), nullptr,
                                               SQLITE_CHECKPOINT_PASSIVE, &wal_pages, &copied);
      if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
        options_.log(std::string("sqlite: checkpoint: ") + sqlite3_errstr(rc));
      lock.lock();
    }
  }

  // --- the message writer (group commit, write_queue.h) ---------------------------------------

  // One transaction (one fsync) for the whole batch; each operation in its own savepoint, so that
  // a send refused for its own reasons (queue full, duplicate envelope, unknown device) leaves the
  // others in the batch alone. Nothing is reported before COMMIT has returned.
  std::vector<OpResult> commit_batch(const std::vector<std::unique_ptr<PendingOp>>& batch) {
    std::vector<OpResult> results(batch.size(), OpResult{0});
    auto lease = writing();
    auto all = [&](Error e) {
      queue_counts_.clear();  // the transaction is gone: what was counted in it may be wrong
      bodies_released_ = false;
      return std::vector<OpResult>(batch.size(), tl::unexpected(e));
    };
    Connection& conn = *lease;
    try {
      const std::uint64_t now_ms = options_.now_ms();
      Transaction txn(conn);
      if (const int rc = txn.begin_immediate(); rc != SQLITE_OK)
        return all(fail("enqueue: begin", conn, rc));
      std::int64_t batch_bytes = 0;  // stored bytes added (removed: negative) once committed
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (const int rc = run_cached(conn, "SAVEPOINT op"); rc != SQLITE_OK)
          return all(fail("enqueue: savepoint", conn, rc));
        op_touched_.clear();
        op_bytes_ = 0;
        PendingOp& op = *batch[i];
        if (op.removal) {
          results[i] = store_removal(conn, op);
        } else if (auto stored = store_send(conn, op, now_ms); !stored) {
          results[i] = tl::unexpected(stored.error());
        }
        if (results[i]) {
          if (const int rc = run_cached(conn, "RELEASE op"); rc != SQLITE_OK)
            return all(fail("enqueue: release", conn, rc));
          batch_bytes += op_bytes_;
          continue;
        }
        // SQLite ends the whole transaction on some errors (disk full, I/O): then nothing in this
        // batch can be trusted to commit.
        if (sqlite3_get_autocommit(conn.handle()) != 0) return all(Error::io);
        for (const auto& key : op_touched_) queue_counts_.erase(key);  // counted again when needed
        if (const int rc = run_cached(conn, "ROLLBACK TO op"); rc != SQLITE_OK)
          return all(fail("enqueue: rollback to", conn, rc));
        if (const int rc = run_cached(conn, "RELEASE op"); rc != SQLITE_OK)
          return all(fail("enqueue: release", conn, rc));
      }
      if (bodies_released_) {
        // Acknowledgements took the last references of some shared bodies.
        bodies_released_ = false;
        auto bodies = sweep_bodies(conn);
        if (!bodies) return all(bodies.error());
        batch_bytes -= static_cast<std::int64_t>(*bodies);
      }
      if (const int rc = txn.commit(); rc != SQLITE_OK)
        return all(fail("enqueue: commit", conn, rc));
      commits_.fetch_add(1, std::memory_order_relaxed);
      if (batch_bytes >= 0) {
        stored_bytes_.fetch_add(static_cast<std::uint64_t>(batch_bytes), std::memory_order_relaxed);
      } else {
        release_stored_bytes(static_cast<std::uint64_t>(-batch_bytes));
      }
      return results;
    } catch (const std::exception&) {
      // Transaction's destructor has rolled back. (Out of memory, or an OpenSSL failure hashing
      // a dedup key.)
      options_.log("enqueue: exception while storing a batch");
      return all(Error::io);
    }
  }

  OpResult store_removal(Connection& conn, const PendingOp& op) {
    std::size_t removed = 0;
    const DeviceKey key{op.account, op.device};
    auto usage = queue_counts_.find(key);
    if (usage != queue_counts_.end()) op_touched_.push_back(key);
    const bool known = op.known.size() == op.ids.size();
    for (std::size_t i = 0; i < op.ids.size(); ++i) {
      const EnvelopeId& id = op.ids[i];
      // The account and device conditions are what keep one device from deleting another's queue.
      if (known) {
        // The caller gave the row's sender and size: one DELETE, no lookup (the path of every
        // acknowledgement; a DELETE ... RETURNING cost a backlog's drain 40% of its rate).
        auto st = conn.prepare(
            "DELETE FROM messages WHERE envelope_id = ?1 AND account_id = ?2 AND device_id = ?3");
        if (!st) return tl::unexpected(fail("remove: prepare", conn, st.error()));
        st->bind(1, ByteView(id)).bind(2, op.account).bind(3, std::int64_t{op.device});
        if (const int rc = run(*st); rc != SQLITE_OK)
          return tl::unexpected(fail("remove", conn, rc));
        if (conn.changes() == 0) continue;
        ++removed;
        // A shared body's bytes are given back once, when its last envelope goes (sweep_bodies).
        if (op.known[i].shared) {
          bodies_released_ = true;
        } else {
          op_bytes_ -= static_cast<std::int64_t>(op.known[i].bytes);
        }
        if (usage != queue_counts_.end())
          usage->second.remove(op.known[i].source, 1, op.known[i].bytes);
        continue;
      }
      // Otherwise the row is found first, then deleted by its rowid.
      auto find = conn.prepare(
          "SELECT m.seq, m.source, length(m.content), m.body_id, coalesce(length(b.content), 0) "
          "FROM messages m LEFT JOIN shared_bodies b ON m.body_id != 0 AND b.id = m.body_id "
          "WHERE m.envelope_id = ?1 AND m.account_id = ?2 AND m.device_id = ?3");
      if (!find) return tl::unexpected(fail("remove: prepare", conn, find.error()));
      find->bind(1, ByteView(id)).bind(2, op.account).bind(3, std::int64_t{op.device});
      const int found = find->step();
      if (found == SQLITE_DONE) continue;  // not there (acknowledged twice, or another's)
      if (found != SQLITE_ROW) return tl::unexpected(fail("remove: find", conn, found));
      Row row(*find);
      const std::int64_t seq = row.i64(0);
      const std::string source = row.text(1);
      const std::uint64_t own_bytes = row.u64(2);
      const bool shared = row.i64(3) != 0;
      const std::uint64_t bytes = own_bytes + row.u64(4);
      if (!row.ok()) return tl::unexpected(corrupt("messages", row));
      auto st = conn.prepare("DELETE FROM messages WHERE seq = ?1");
      if (!st) return tl::unexpected(fail("remove: prepare", conn, st.error()));
      st->bind(1, seq);
      if (const int rc = run(*st); rc != SQLITE_OK) return tl::unexpected(fail("remove", conn, rc));
      if (conn.changes() == 0) continue;
      ++removed;
      op_bytes_ -= static_cast<std::int64_t>(own_bytes);
      if (shared) bodies_released_ = true;
      if (usage != queue_counts_.end()) usage->second.remove(source, 1, bytes);
    }
    return removed;
  }

  // How many envelopes a device's queue holds now (inside the writer's transaction). Counted from
  // the (account_id, device_id) index once, then kept up to date by every write: a count(*) per
  // send would make filling a queue quadratic. Expired rows count until swept. REQUIRES: the
  // write connection is held.
  tl::expected<QueueUsage*, Error> queue_usage(Connection& conn, const DeviceKey& key) {
    if (auto it = queue_counts_.find(key); it != queue_counts_.end()) return &it->second;
    // length() reads a blob's size from its row header, not the blob itself.
    // A shared body counts in full in every queue that holds an envelope of it.
    auto st = conn.prepare(
        "SELECT m.source, count(*), "
        "coalesce(sum(length(m.content) + coalesce(length(b.content), 0)), 0) FROM messages m "
        "LEFT JOIN shared_bodies b ON m.body_id != 0 AND b.id = m.body_id "
        "WHERE m.account_id = ?1 AND m.device_id = ?2 GROUP BY m.source");
    if (!st) return tl::unexpected(fail("enqueue: prepare", conn, st.error()));
    st->bind(1, key.first).bind(2, std::int64_t{key.second});
    QueueUsage usage;
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      const std::string source = row.text(0);
      const std::uint64_t count = row.u64(1);
      const std::uint64_t bytes = row.u64(2);
      if (!row.ok()) return tl::unexpected(corrupt("messages", row));
      usage.add(source, count, bytes);
    }
    if (rc != SQLITE_DONE) return tl::unexpected(fail("enqueue: count", conn, rc));
    if (queue_counts_.size() >= kQueueCountEntries) queue_counts_.clear();
    return &(queue_counts_[key] = std::move(usage));
  }

  Result store_send(Connection& conn, PendingOp& send, std::uint64_t now_ms) {
    const std::uint64_t now_s = now_ms / 1000;
    const bool partial = static_cast<bool>(send.sent_partial);
    send.refused.clear();

    // What this send adds to each device's queue, and to what its sender holds of the queue
    // (when the share applies: another account's device).
    struct Adding {
      std::uint64_t count = 0;
      std::uint64_t bytes = 0;
      bool shared = false;
      std::string source;
      bool refused = false;  // a partial send leaves this device out: its queue is full
    };
    std::map<DeviceKey, Adding> per_device;
    for (std::size_t i = 0; i < send.envelopes.size(); ++i) {
      if (send.cancelled[i]) continue;
      const QueuedEnvelope& e = send.envelopes[i];
      Adding& a = per_device[{e.account, e.device}];
      a.count += 1;
      a.bytes += e.payload().size();
      a.shared = e.source_account != 0 && e.source_account != e.account;
      a.source = e.source;
    }
    const bool share_limited =
        options_.max_queue_per_sender > 0 || options_.max_queue_bytes_per_sender > 0;
    for (auto& [key, adding] : per_device) {
      auto usage = queue_usage(conn, key);
      if (!usage) return tl::unexpected(usage.error());
      const QueueUsage& u = **usage;
      std::optional<Error> full;
      // The sender's share first: a sender past it is told so even when the queue is full too.
      if (share_limited && adding.shared) {
        const auto held = u.of(adding.source);
        if ((options_.max_queue_per_sender > 0 &&
             held.first + adding.count > options_.max_queue_per_sender) ||
            (options_.max_queue_bytes_per_sender > 0 &&
             held.second + adding.bytes > options_.max_queue_bytes_per_sender))
          full = Error::queue_share_full;
      }
      if (!full && (u.count + adding.count > options_.max_queue_per_device ||
                    (options_.max_queue_bytes_per_device > 0 &&
                     u.bytes + adding.bytes > options_.max_queue_bytes_per_device)))
        full = Error::queue_full;
      if (!full) continue;
      if (!partial) return tl::unexpected(*full);
      adding.refused = true;
      send.refused.push_back({key.first, key.second, *full});
    }
    const auto left_out = [&](const QueuedEnvelope& e) {
      if (send.refused.empty()) return false;
      auto it = per_device.find({e.account, e.device});
      return it != per_device.end() && it->second.refused;
    };

    if (send.dedup_key) {
      // Only a hash of (client message id, sender) is kept, for dedup_ttl_seconds, placed by the
      // time at the head of the id (dedup_time), with the devices a partial send left out (a
      // retry is answered with them).
      const auto hash = digest(*send.dedup_key);
      const Bytes refused = encode_refusals(send.refused);
      // One statement: a new key is inserted, an expired one renewed, and a live one left alone
      // (no change: this send is a retry of one already stored, so it is done).
      auto st = conn.prepare(
          "INSERT INTO send_dedup (id_time, key_hash, expires_at, refused) "
          "VALUES (?1, ?2, ?3, ?5) "
          "ON CONFLICT (id_time, key_hash) DO UPDATE SET expires_at = excluded.expires_at, "
          "refused = excluded.refused WHERE send_dedup.expires_at <= ?4");
      if (!st) return tl::unexpected(fail("enqueue: prepare", conn, st.error()));
      st->bind(1, dedup_time(*send.dedup_key))
          .bind(2, ByteView(hash))
          .bind_u64(3, saturating_add(now_s, options_.dedup_ttl_seconds))
          .bind_u64(4, now_s)
          .bind(5, ByteView(refused));
      if (const int rc = run(*st); rc != SQLITE_OK)
        return tl::unexpected(fail("enqueue: dedup", conn, rc));
      if (conn.changes() == 0) {
        send.refused.clear();
        return {};
      }
    }

    // Shared bodies: one row each, written only when an envelope that holds it is still to be
    // written, with as many references as such envelopes.
    std::int64_t own_bytes = 0;
    std::map<const Bytes*, std::pair<std::int64_t, std::int64_t>> bodies;  // -> (refs, row id)
    for (std::size_t i = 0; i < send.envelopes.size(); ++i) {
      if (send.cancelled[i]) continue;
      const QueuedEnvelope& e = send.envelopes[i];
      if (left_out(e)) continue;
      if (e.body) {
        bodies[e.body.get()].first += 1;
      } else {
        own_bytes += static_cast<std::int64_t>(e.content.size());
      }
    }
    for (auto& [body, refs_and_id] : bodies) {
      auto st = conn.prepare("INSERT INTO shared_bodies (content, refs) VALUES (?1, ?2)");
      if (!st) return tl::unexpected(fail("enqueue: prepare", conn, st.error()));
      st->bind(1, ByteView(*body)).bind(2, refs_and_id.first);
      if (const int rc = run(*st); rc != SQLITE_OK)
        return tl::unexpected(fail("enqueue: body", conn, rc));
      refs_and_id.second = sqlite3_last_insert_rowid(conn.handle());
      own_bytes += static_cast<std::int64_t>(body->size());
    }

    const std::uint64_t max_expiry = saturating_add(now_s, options_.message_ttl_seconds);
    for (std::size_t i = 0; i < send.envelopes.size(); ++i) {
      if (send.cancelled[i]) continue;  // acknowledged already: never written
      const QueuedEnvelope& e = send.envelopes[i];
      if (left_out(e)) continue;
      auto st = conn.prepare(
          "INSERT INTO messages (envelope_id, account_id, device_id, source, source_device, type, "
          "content, client_timestamp, server_timestamp, expires_at, body_id) "
          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
      if (!st) return tl::unexpected(fail("enqueue: prepare", conn, st.error()));
      const std::uint64_t expires_at =
          e.expires_at == 0 ? max_expiry : std::min(e.expires_at, max_expiry);
      st->bind(1, ByteView(e.id))
          .bind(2, e.account)
          .bind(3, std::int64_t{e.device})
          .bind(4, std::string_view(e.source))
          .bind(5, std::int64_t{e.source_device})
          .bind(6, std::int64_t{e.type})
          .bind(7, ByteView(e.content))
          .bind_u64(8, e.client_timestamp)
          .bind_u64(9, e.server_timestamp == 0 ? now_ms : e.server_timestamp)
          .bind_u64(10, expires_at)
          .bind(11, e.body ? bodies[e.body.get()].second : std::int64_t{0});
      const int rc = run(*st);
      if (is_unique_violation(rc)) return tl::unexpected(Error::conflict);
      if (is_missing_parent(rc)) return tl::unexpected(Error::not_found);
      if (rc != SQLITE_OK) return tl::unexpected(fail("enqueue: insert", conn, rc));
    }
    for (const auto& [key, adding] : per_device) {
      if (adding.refused) continue;
      op_touched_.push_back(key);
      queue_counts_[key].add(adding.source, adding.count, adding.bytes);
    }
    op_bytes_ += own_bytes;
    return {};
  }

  // send_dedup.refused: per device left out, the account id (8 bytes, little-endian), the device
  // id (4) and why (1: queue_full, 2: queue_share_full); empty when none.
  static Bytes encode_refusals(const std::vector<Refusal>& refused) {
    Bytes out;
    out.reserve(refused.size() * 13);
    for (const auto& r : refused) {
      for (int b = 0; b < 8; ++b)
        out.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(r.account) >> (8 * b)));
      for (int b = 0; b < 4; ++b) out.push_back(static_cast<std::uint8_t>(r.device >> (8 * b)));
      out.push_back(r.why == Error::queue_share_full ? 2 : 1);
    }
    return out;
  }
  static std::optional<std::vector<Refusal>> decode_refusals(ByteView bytes) {
    if (bytes.size() % 13 != 0) return std::nullopt;
    std::vector<Refusal> out;
    for (std::size_t at = 0; at < bytes.size(); at += 13) {
      std::uint64_t account = 0;
      std::uint32_t device = 0;
      for (int b = 0; b < 8; ++b) account |= std::uint64_t{bytes[at + b]} << (8 * b);
      for (int b = 0; b < 4; ++b) device |= std::uint32_t{bytes[at + 8 + b]} << (8 * b);
      const std::uint8_t why = bytes[at + 12];
      if (why != 1 && why != 2) return std::nullopt;
      out.push_back({static_cast<AccountId>(account), device,
                     why == 2 ? Error::queue_share_full : Error::queue_full});
    }
    return out;
  }

  SqliteOptions options_;
  // Every write, the writer thread's batches included, goes through this one connection under
  // write_mu_: in-process writers queue on the mutex instead of meeting SQLITE_BUSY and polling
  // the busy handler. Reads use the pool and, in WAL mode, never wait for a writer.
  std::mutex write_mu_;
  std::unique_ptr<Connection> write_conn_;
  // The checkpointer's own connection, used by its thread only (see checkpoint_loop).
  static constexpr int kCheckpointPages = 1000;  // SQLite's default wal_autocheckpoint
  std::unique_ptr<Connection> checkpoint_conn_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_wanted_ = false;  // guarded by checkpoint_mu_
  bool checkpoint_stop_ = false;    // guarded by checkpoint_mu_
  // Queue lengths known to the writer (see queue_length), and the keys the operation in progress
  // changed; both guarded by write_mu_.
  static constexpr std::size_t kQueueCountEntries = 200000;
  std::map<DeviceKey, QueueUsage> queue_counts_;
  std::vector<DeviceKey> op_touched_;
  std::int64_t op_bytes_ = 0;  // stored bytes the operation in progress adds (guarded likewise)
  // A removal in the batch in progress deleted an envelope of a shared body: sweep_bodies before
  // the commit (guarded likewise).
  bool bodies_released_ = false;
  // Ciphertext bytes stored (MessageStore::stored_bytes), changed after each commit.
  std::atomic<std::uint64_t> stored_bytes_{0};
  sqlite::Pool pool_;

  std::atomic<std::uint64_t> commits_{0};
  std::atomic<std::uint64_t> block_rows_{0};  // rows of `blocks` (see count_blocks)

  static constexpr std::size_t kAccountCacheEntries = 100000;
  std::atomic<AccountLog*> account_log_{nullptr};
  std::mutex cache_mu_;  // guards the two maps; the generation changes under it too
  std::atomic<std::uint64_t> account_generation_{0};
  std::unordered_map<AccountId, std::shared_ptr<const AccountRecord>> by_id_;
  std::unordered_map<std::string, std::shared_ptr<const AccountRecord>> by_name_;
  std::thread checkpointer_;
  // Last: its writer starts once everything above exists, and stops before any of it goes.
  WriteQueue writes_{
      WriteQueue::Options{options_.group_commit_max_batch, options_.group_commit_max_delay,
                          [this](std::string_view m) { options_.log(m); }},
      [this](const PendingBatch& batch) { return commit_batch(batch); }};
};

// --- SqliteServerStore ------------------------------------------------------------------------

tl::expected<std::unique_ptr<SqliteServerStore>, Error> SqliteServerStore::open(
    const std::filesystem::path& file, SqliteOptions options) {
  auto log = options.log ? options.log : std::function<void(std::string_view)>(log_to_stderr);
  auto open_one = [&]() -> tl::expected<std::unique_ptr<Connection>, Error> {
    auto conn = Connection::open(file, options.busy_timeout);
    if (!conn) {
      log("sqlite: " + conn.error());
      return tl::unexpected(Error::io);
    }
    return std::move(*conn);
  };

  auto write_conn = open_one();
  if (!write_conn) return tl::unexpected(write_conn.error());
  if (auto migrated = sqlite::migrate(**write_conn); !migrated) {
    log("sqlite: " + migrated.error());
    return tl::unexpected(Error::io);
  }
  // The writer's page cache holds the indexes a busy server touches on every commit (SQLite's
  // default, 2 MB, made it re-read them from the file); readers keep the default.
  if ((*write_conn)->exec("PRAGMA cache_size=-65536") != SQLITE_OK) {
    log("sqlite: cache_size refused");
    return tl::unexpected(Error::io);
  }
  auto checkpoint_conn = open_one();
  if (!checkpoint_conn) return tl::unexpected(checkpoint_conn.error());
  std::vector<std::unique_ptr<Connection>> pool;
  const std::size_t n = options.pool_connections == 0 ? 1 : options.pool_connections;
  for (std::size_t i = 0; i < n; ++i) {
    auto conn = open_one();
    if (!conn) return tl::unexpected(conn.error());
    pool.push_back(std::move(*conn));
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(*write_conn),
                                     std::move(*checkpoint_conn), std::move(pool));
  if (!impl->count_blocks()) return tl::unexpected(Error::io);
  return std::unique_ptr<SqliteServerStore>(new SqliteServerStore(std::move(impl)));
}

SqliteServerStore::SqliteServerStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteServerStore::~SqliteServerStore() = default;

AccountStore& SqliteServerStore::accounts() {
  return *impl_;
}
KeyStore& SqliteServerStore::keys() {
  return *impl_;
}
MessageStore& SqliteServerStore::messages() {
  return *impl_;
}
TokenStore& SqliteServerStore::tokens() {
  return *impl_;
}
BlockStore& SqliteServerStore::blocks() {
  return *impl_;
}
std::vector<std::pair<std::string, std::string>> SqliteServerStore::schema() {
  return impl_->schema();
}
KtStore* SqliteServerStore::kt() {
  return impl_.get();
}
std::uint64_t SqliteServerStore::commit_count() const {
  return impl_->commit_count();
}

}  // namespace sotto::store
