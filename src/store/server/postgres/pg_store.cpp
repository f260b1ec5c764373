#include "store/server/postgres/pg_store.h"

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
#include <optional>
#include <pqxx/pqxx>
#include <thread>
#include <unordered_map>

#include "crypto/hash.h"
#include "store/server/postgres/pg_schema.h"
#include "store/server/write_queue.h"

namespace sotto::store {
namespace {

// Sizes of what the server stores (service.proto), as in the SQLite backend.
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

// PostgreSQL's BIGINT is signed: unsigned values above INT64_MAX are stored as INT64_MAX (no real
// time or id gets there), as the SQLite backend does.
std::int64_t i64(std::uint64_t v) {
  return v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
             ? std::numeric_limits<std::int64_t>::max()
             : static_cast<std::int64_t>(v);
}

pqxx::binarystring bin(ByteView v) {
  return pqxx::binarystring(v.data(), v.size());
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return b > std::numeric_limits<std::uint64_t>::max() - a
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

crypto::Sha256Digest digest(ByteView secret) {
  return crypto::sha256({secret});
}

// As sqlite_store.cpp: the big-endian value of the key's first six bytes.
std::int64_t dedup_time(ByteView key) {
  std::int64_t t = 0;
  for (std::size_t i = 0; i < 6 && i < key.size(); ++i) t = (t << 8) | key[i];
  return t;
}

// The first line of an exception's text: libpq's DETAIL lines may quote values (a username in a
// unique violation), which never go to the log.
std::string first_line(const std::exception& e) {
  std::string what = e.what();
  if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
  return what;
}

// A damaged row (a value of the wrong size or range): reported as io, never a crash.
struct CorruptRow : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Typed, checked reads of result fields.
std::int64_t get_i64(const pqxx::field& f) {
  if (f.is_null()) throw CorruptRow(std::string("column ") + f.name() + ": null");
  return f.as<std::int64_t>();
}
std::uint64_t get_u64(const pqxx::field& f) {
  const std::int64_t v = get_i64(f);
  if (v < 0) throw CorruptRow(std::string("column ") + f.name() + ": negative");
  return static_cast<std::uint64_t>(v);
}
std::uint32_t get_u32(const pqxx::field& f) {
  const std::uint64_t v = get_u64(f);
  if (v > std::numeric_limits<std::uint32_t>::max())
    throw CorruptRow(std::string("column ") + f.name() + ": out of range");
  return static_cast<std::uint32_t>(v);
}
std::string get_text(const pqxx::field& f) {
  if (f.is_null()) throw CorruptRow(std::string("column ") + f.name() + ": null");
  return f.as<std::string>();
}
Bytes get_blob(const pqxx::field& f) {
  if (f.is_null()) throw CorruptRow(std::string("column ") + f.name() + ": null");
  const pqxx::binarystring b(f);
  return Bytes(b.data(), b.data() + b.size());
}
Bytes get_blob(const pqxx::field& f, std::size_t size) {
  Bytes b = get_blob(f);
  if (b.size() != size) {
    throw CorruptRow(std::string("column ") + f.name() + ": " + std::to_string(b.size()) +
                     " bytes, expected " + std::to_string(size));
  }
  return b;
}

// The statements every connection prepares (lazily: on first use, and again after a reconnect).
struct Prepared {
  const char* name;
  const char* sql;
};
// The transparency log's write lock (a transaction-level advisory lock): the servers of a cluster
// append to the one log in turn. Taken before any row lock of the change it logs, always, so that
// two changes never wait on each other.
constexpr std::string_view kLockLog =
    "SELECT pg_advisory_xact_lock(7310302564420611444)";  // "sotto_kt"

constexpr Prepared kStatements[] = {
    {"insert_account",
     "INSERT INTO accounts (username, identity_key, created_day, recovery_key) "
     "VALUES ($1, $2, $3, $4) RETURNING id"},
    {"account_by_name",
     "SELECT id, username, identity_key, recovery_key FROM accounts WHERE username = $1"},
    {"account_by_id",
     "SELECT id, username, identity_key, recovery_key FROM accounts WHERE id = $1"},
    {"devices_of",
     "SELECT device_id, registration_id, auth_key, created_day, name FROM devices "
     "WHERE account_id = $1 ORDER BY device_id"},
    {"lock_account", "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE"},
    {"lock_device", "SELECT 1 FROM devices WHERE account_id = $1 AND device_id = $2 FOR UPDATE"},
    {"insert_device",
     "INSERT INTO devices (account_id, device_id, registration_id, auth_key, created_day, name) "
     "VALUES ($1, $2, $3, $4, $5, $6)"},
    {"put_signed_pre_key",
     "INSERT INTO signed_pre_keys (account_id, device_id, key_id, public_key, signature) "
     "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, device_id) DO UPDATE SET "
     "key_id = excluded.key_id, public_key = excluded.public_key, signature = excluded.signature"},
    // A re-uploaded id gets a new seq: it counts as the newest key (SQLite: INSERT OR REPLACE).
    {"put_pre_key",
     "INSERT INTO pre_keys (account_id, device_id, key_id, public_key) VALUES ($1, $2, $3, $4) "
     "ON CONFLICT (account_id, device_id, key_id) DO UPDATE SET public_key = excluded.public_key, "
     "seq = DEFAULT"},
    {"trim_pre_keys",
     "DELETE FROM pre_keys WHERE seq IN (SELECT seq FROM pre_keys "
     "WHERE account_id = $1 AND device_id = $2 ORDER BY seq DESC OFFSET $3)"},
    {"delete_pre_keys", "DELETE FROM pre_keys WHERE account_id = $1 AND device_id = $2"},
    {"signed_pre_key",
     "SELECT key_id, public_key, signature FROM signed_pre_keys "
     "WHERE account_id = $1 AND device_id = $2"},
    // SKIP LOCKED: two fetchers at once each get a key of their own, and neither waits to find
    // the other's gone.
    {"take_pre_key",
     "DELETE FROM pre_keys WHERE seq = (SELECT seq FROM pre_keys "
     "WHERE account_id = $1 AND device_id = $2 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
     "RETURNING key_id, public_key"},
    {"count_pre_keys", "SELECT count(*) FROM pre_keys WHERE account_id = $1 AND device_id = $2"},
    {"pre_key_ids",
     "SELECT key_id FROM pre_keys WHERE account_id = $1 AND device_id = $2 ORDER BY key_id"},
    {"count_queued_device",
     "SELECT count(*), coalesce(sum(octet_length(content)), 0) FROM messages "
     "WHERE account_id = $1 AND device_id = $2"},
    {"count_queued_account",
     "SELECT count(*), coalesce(sum(octet_length(content)), 0) FROM messages "
     "WHERE account_id = $1"},
    {"delete_device", "DELETE FROM devices WHERE account_id = $1 AND device_id = $2"},
    {"delete_devices", "DELETE FROM devices WHERE account_id = $1"},
    {"delete_link_tokens_of", "DELETE FROM link_tokens WHERE account_id = $1"},
    {"recover_account",
     "UPDATE accounts SET identity_key = $2, recovery_key = $3 WHERE id = $1 AND recovery_key = "
     "$4"},
    {"account_exists", "SELECT 1 FROM accounts WHERE id = $1"},
    {"insert_kt_entry",
     "INSERT INTO kt_entries (idx, timestamp_ms, prefix_root) VALUES ($1, $2, $3)"},
    {"insert_kt_version",
     "INSERT INTO kt_versions (entry, seq, label_index, version, commitment, opening, value) "
     "VALUES ($1, $2, $3, $4, $5, $6, $7)"},
    {"kt_entries_from",
     "SELECT idx, timestamp_ms, prefix_root FROM kt_entries WHERE idx >= $1 ORDER BY idx"},
    {"kt_versions_from",
     "SELECT entry, label_index, version, commitment, opening, value FROM kt_versions "
     "WHERE entry >= $1 ORDER BY entry, seq"},
    {"all_account_ids", "SELECT id FROM accounts ORDER BY id"},
    {"put_kt_cosignature",
     "INSERT INTO kt_cosignatures (auditor_key, tree_head, time_ms, signature) "
     "VALUES ($1, $2, $3, $4) ON CONFLICT (auditor_key) DO UPDATE SET "
     "tree_head = excluded.tree_head, time_ms = excluded.time_ms, signature = excluded.signature"},
    {"kt_cosignatures",
     "SELECT auditor_key, tree_head, time_ms, signature FROM kt_cosignatures ORDER BY auditor_key"},
    {"sweep_bodies", "DELETE FROM shared_bodies WHERE refs <= 0 RETURNING octet_length(content)"},
    {"block_state",
     "SELECT (SELECT count(*) FROM blocks WHERE account_id = $1), "
     "EXISTS (SELECT 1 FROM blocks WHERE account_id = $1 AND blocked_id = $2)"},
    {"insert_block", "INSERT INTO blocks (account_id, blocked_id) VALUES ($1, $2)"},
    {"delete_block", "DELETE FROM blocks WHERE account_id = $1 AND blocked_id = $2"},
    {"is_blocked", "SELECT 1 FROM blocks WHERE account_id = $1 AND blocked_id = $2"},
    {"blocked",
     "SELECT a.username FROM blocks b JOIN accounts a ON a.id = b.blocked_id "
     "WHERE b.account_id = $1 ORDER BY a.username"},
    {"was_sent", "SELECT expires_at FROM send_dedup WHERE id_time = $1 AND key_hash = $2"},
    {"load_after",
     "SELECT seq FROM messages WHERE envelope_id = $1 AND account_id = $2 AND device_id = $3"},
    {"load",
     "SELECT m.envelope_id, m.source, m.source_device, m.type, "
     "CASE WHEN m.body_id = 0 THEN m.content ELSE b.content END, m.client_timestamp, "
     "m.server_timestamp, m.expires_at, m.body_id <> 0 FROM messages m "
     "LEFT JOIN shared_bodies b ON m.body_id <> 0 AND b.id = m.body_id "
     "WHERE m.account_id = $1 AND m.device_id = $2 AND m.seq > $3 AND m.expires_at > $4 "
     "ORDER BY m.seq LIMIT $5"},
    {"count",
     "SELECT count(*) FROM messages WHERE account_id = $1 AND device_id = $2 AND expires_at > $3"},
    {"count_all", "SELECT count(*) FROM messages"},
    {"stored_bytes",
     "SELECT (SELECT coalesce(sum(octet_length(content)), 0) FROM messages) + "
     "(SELECT coalesce(sum(octet_length(content)), 0) FROM shared_bodies)"},
    {"expire_messages",
     "DELETE FROM messages WHERE seq IN "
     "(SELECT seq FROM messages WHERE expires_at <= $1 LIMIT $2) RETURNING octet_length(content)"},
    {"expire_dedup",
     "DELETE FROM send_dedup WHERE (id_time, key_hash) IN "
     "(SELECT id_time, key_hash FROM send_dedup WHERE expires_at <= $1 LIMIT $2)"},
    {"expire_invites",
     "DELETE FROM invites WHERE code_hash IN "
     "(SELECT code_hash FROM invites WHERE expires_at <= $1 LIMIT $2)"},
    {"expire_link_tokens",
     "DELETE FROM link_tokens WHERE token_hash IN "
     "(SELECT token_hash FROM link_tokens WHERE expires_at <= $1 LIMIT $2)"},
    {"insert_invite", "INSERT INTO invites (code_hash, expires_at) VALUES ($1, $2)"},
    {"use_invite", "DELETE FROM invites WHERE code_hash = $1 RETURNING expires_at"},
    {"insert_link_token",
     "INSERT INTO link_tokens (token_hash, account_id, expires_at) VALUES ($1, $2, $3)"},
    {"use_link_token",
     "DELETE FROM link_tokens WHERE token_hash = $1 RETURNING account_id, expires_at"},
    // The message writer's.
    {"dedup",
     "INSERT INTO send_dedup (id_time, key_hash, expires_at) VALUES ($1, $2, $3) "
     "ON CONFLICT (id_time, key_hash) DO UPDATE SET expires_at = excluded.expires_at "
     "WHERE send_dedup.expires_at <= $4"},
    {"queue_usage",
     "SELECT m.source, count(*), "
     "coalesce(sum(octet_length(m.content) + coalesce(octet_length(b.content), 0)), 0) "
     "FROM messages m LEFT JOIN shared_bodies b ON m.body_id <> 0 AND b.id = m.body_id "
     "WHERE m.account_id = $1 AND m.device_id = $2 GROUP BY m.source"},
    {"insert_body", "INSERT INTO shared_bodies (content, refs) VALUES ($1, $2) RETURNING id"},
    {"insert_message",
     "INSERT INTO messages (envelope_id, account_id, device_id, source, source_device, type, "
     "content, client_timestamp, server_timestamp, expires_at, body_id) "
     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"},
    {"remove_message",
     "DELETE FROM messages WHERE envelope_id = $1 AND account_id = $2 AND device_id = $3 "
     "RETURNING octet_length(content), body_id"},
};

std::unique_ptr<pqxx::connection> connect(const std::string& conninfo) {
  auto conn = std::make_unique<pqxx::connection>(conninfo);
  for (const auto& s : kStatements) conn->prepare(s.name, s.sql);
  return conn;
}

}  // namespace

class PostgresServerStore::Impl final : public AccountStore,
                                        public KeyStore,
                                        public MessageStore,
                                        public TokenStore,
                                        public BlockStore,
                                        public KtStore {
 public:
  Impl(PostgresOptions options, std::unique_ptr<pqxx::connection> writer_conn,
       std::vector<std::unique_ptr<pqxx::connection>> pool)
      : options_(std::move(options)), writer_conn_(std::move(writer_conn)) {
    if (!options_.now_ms) options_.now_ms = system_now_ms;
    if (!options_.log) options_.log = log_to_stderr;
    if (options_.group_commit_max_batch == 0) options_.group_commit_max_batch = 1;
    for (auto& c : pool) free_.push_back(std::move(c));
    try {
      pqxx::read_transaction tx(*writer_conn_);
      stored_bytes_.store(get_u64(tx.exec_prepared("stored_bytes")[0][0]));
    } catch (const std::exception& e) {
      options_.log("postgresql: cannot sum the stored message bytes (" + first_line(e) +
                   "); counting from 0");
    }
    writes_.start();
  }

  ~Impl() override {
    writes_.stop();  // the writer drains the queue before it returns
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
    return with_conn<AccountId>("create_account", [&](pqxx::connection& c) -> Expect<AccountId> {
      pqxx::work tx(c);
      AccountLog* log = lock_log(tx);
      const pqxx::result r = tx.exec_prepared("insert_account", username, bin(identity_key),
                                              i64(today()), bin(recovery_key));
      const AccountId id = get_i64(r[0][0]);
      insert_device(tx, id, 1, first_device, signed_pre_key, pre_keys);
      if (auto ok = commit_change(tx, log, id); !ok) return tl::unexpected(ok.error());
      return id;
    });
  }

  tl::expected<AccountRecord, Error> find_account(const std::string& username) override {
    return with_conn<AccountRecord>("find_account", [&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);  // REPEATABLE READ: the account and its devices together
      auto found = read_account(tx, tx.exec_prepared("account_by_name", username));
      tx.commit();
      return found;
    });
  }

  tl::expected<AccountRecord, Error> find_account(AccountId id) override {
    return with_conn<AccountRecord>("find_account", [&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      auto found = read_account(tx, tx.exec_prepared("account_by_id", id));
      tx.commit();
      return found;
    });
  }

  tl::expected<DeviceId, Error> add_device(
      AccountId account, const DeviceRecord& device, const SignedPreKeyRecord& signed_pre_key,
      const std::vector<OneTimePreKeyRecord>& pre_keys) override {
    if (auto ok = check_device_keys(device, signed_pre_key, pre_keys); !ok)
      return tl::unexpected(ok.error());
    return with_conn<DeviceId>("add_device", [&](pqxx::connection& c) -> Expect<DeviceId> {
      pqxx::work tx(c);
      AccountLog* log = lock_log(tx);
      // The account's row lock: two devices added at once get different ids.
      if (tx.exec_prepared("lock_account", account).empty())
        return tl::unexpected(Error::not_found);
      // The lowest id not in use (as Signal's server does).
      DeviceId next = 1;
      for (const auto& row : tx.exec_prepared("devices_of", account)) {
        const DeviceId used = get_u32(row[0]);
        if (used == next) {
          if (next == std::numeric_limits<DeviceId>::max()) return tl::unexpected(Error::conflict);
          ++next;
        } else if (used > next) {
          break;
        }
      }
      insert_device(tx, account, next, device, signed_pre_key, pre_keys);
      if (auto ok = commit_change(tx, log, account); !ok) return tl::unexpected(ok.error());
      return next;
    });
  }

  tl::expected<std::size_t, Error> remove_device(AccountId account, DeviceId device) override {
    std::uint64_t released = 0;
    auto removed =
        with_conn<std::size_t>("remove_device", [&](pqxx::connection& c) -> Expect<std::size_t> {
          pqxx::work tx(c);
          AccountLog* log = lock_log(tx);
          const pqxx::result q =
              tx.exec_prepared("count_queued_device", account, std::int64_t{device});
          const std::size_t queued = get_u64(q[0][0]);
          const std::uint64_t bytes = get_u64(q[0][1]);
          // ON DELETE CASCADE removes the device's keys and queue in the same statement.
          if (tx.exec_prepared("delete_device", account, std::int64_t{device}).affected_rows() == 0)
            return tl::unexpected(Error::not_found);
          const std::uint64_t bodies = sweep_bodies(tx);
          if (auto ok = commit_change(tx, log, account); !ok) return tl::unexpected(ok.error());
          released = bytes + bodies;
          return queued;
        });
    if (removed) release_stored_bytes(released);
    return removed;
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
    std::uint64_t released = 0;
    auto recovered =
        with_conn<std::size_t>("recover_account", [&](pqxx::connection& c) -> Expect<std::size_t> {
          pqxx::work tx(c);
          AccountLog* log = lock_log(tx);
          // Compare and swap: only the recovery key that was verified may be replaced.
          if (tx.exec_prepared("recover_account", account, bin(identity_key), bin(recovery_key),
                               bin(expected_recovery_key))
                  .affected_rows() == 0) {
            const bool exists = !tx.exec_prepared("account_exists", account).empty();
            return tl::unexpected(exists ? Error::conflict : Error::not_found);
          }
          const pqxx::result q = tx.exec_prepared("count_queued_account", account);
          const std::size_t queued = get_u64(q[0][0]);
          const std::uint64_t bytes = get_u64(q[0][1]);
          tx.exec_prepared("delete_devices", account);
          tx.exec_prepared("delete_link_tokens_of", account);
          const std::uint64_t bodies = sweep_bodies(tx);
          insert_device(tx, account, 1, first_device, signed_pre_key, pre_keys);
          if (auto ok = commit_change(tx, log, account); !ok) return tl::unexpected(ok.error());
          released = bytes + bodies;
          return queued;
        });
    if (recovered) release_stored_bytes(released);
    return recovered;
  }

  // --- KeyStore -----------------------------------------------------------------------------

  tl::expected<void, Error> set_signed_pre_key(AccountId account, DeviceId device,
                                               const SignedPreKeyRecord& key) override {
    if (auto ok = check_signed_pre_key(key); !ok) return ok;
    return with_conn<void>("set_signed_pre_key", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::work tx(c);
      put_signed_pre_key(tx, account, device, key);
      tx.commit();
      return {};
    });
  }

  tl::expected<SignedPreKeyRecord, Error> signed_pre_key(AccountId account,
                                                         DeviceId device) override {
    return with_conn<SignedPreKeyRecord>(
        "signed_pre_key", [&](pqxx::connection& c) -> Expect<SignedPreKeyRecord> {
          pqxx::nontransaction tx(c);
          const pqxx::result r = tx.exec_prepared("signed_pre_key", account, std::int64_t{device});
          if (r.empty()) return tl::unexpected(Error::not_found);
          SignedPreKeyRecord key;
          key.id = get_u32(r[0][0]);
          key.public_key = get_blob(r[0][1], kPublicKeySize);
          key.signature = get_blob(r[0][2], kSignatureSize);
          return key;
        });
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
    return with_conn<std::optional<OneTimePreKeyRecord>>(
        "take_pre_key", [&](pqxx::connection& c) -> Expect<std::optional<OneTimePreKeyRecord>> {
          pqxx::work tx(c);
          const pqxx::result r = tx.exec_prepared("take_pre_key", account, std::int64_t{device});
          tx.commit();
          if (r.empty()) return std::optional<OneTimePreKeyRecord>();
          // A damaged key is gone now, which is as well: the next fetch gets a good one.
          OneTimePreKeyRecord k;
          k.id = get_u32(r[0][0]);
          k.public_key = get_blob(r[0][1], kPublicKeySize);
          return std::optional<OneTimePreKeyRecord>(std::move(k));
        });
  }

  tl::expected<std::uint32_t, Error> count_pre_keys(AccountId account, DeviceId device) override {
    return with_conn<std::uint32_t>("count_pre_keys", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return Expect<std::uint32_t>(
          get_u32(tx.exec_prepared("count_pre_keys", account, std::int64_t{device})[0][0]));
    });
  }

  tl::expected<std::vector<std::uint32_t>, Error> pre_key_ids(AccountId account,
                                                              DeviceId device) override {
    return with_conn<std::vector<std::uint32_t>>("pre_key_ids", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      std::vector<std::uint32_t> ids;
      for (const auto& row : tx.exec_prepared("pre_key_ids", account, std::int64_t{device}))
        ids.push_back(get_u32(row[0]));
      return Expect<std::vector<std::uint32_t>>(std::move(ids));
    });
  }

  // --- BlockStore ---------------------------------------------------------------------------

  tl::expected<void, Error> block(AccountId account, AccountId blocked) override {
    return with_conn<void>("block", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::work tx(c);
      // The blocking account's row lock: its count stays under the limit with blocks at once.
      if (tx.exec_prepared("lock_account", account).empty())
        return tl::unexpected(Error::not_found);
      const pqxx::result r = tx.exec_prepared("block_state", account, blocked);
      const std::uint64_t count = get_u64(r[0][0]);
      if (r[0][1].as<bool>()) return {};
      if (count >= kMaxBlocksPerAccount) return tl::unexpected(Error::conflict);
      tx.exec_prepared("insert_block", account, blocked);
      tx.commit();
      return {};
    });
  }

  tl::expected<bool, Error> unblock(AccountId account, AccountId blocked) override {
    return with_conn<bool>("unblock", [&](pqxx::connection& c) {
      pqxx::work tx(c);
      const bool removed = tx.exec_prepared("delete_block", account, blocked).affected_rows() > 0;
      tx.commit();
      return Expect<bool>(removed);
    });
  }

  tl::expected<bool, Error> is_blocked(AccountId account, AccountId sender) override {
    return with_conn<bool>("is_blocked", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return Expect<bool>(!tx.exec_prepared("is_blocked", account, sender).empty());
    });
  }

  tl::expected<std::vector<std::string>, Error> blocked(AccountId account) override {
    return with_conn<std::vector<std::string>>("blocked", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      std::vector<std::string> out;
      for (const auto& row : tx.exec_prepared("blocked", account)) out.push_back(get_text(row[0]));
      return Expect<std::vector<std::string>>(std::move(out));
    });
  }

  // --- MessageStore -------------------------------------------------------------------------

  void enqueue(std::vector<QueuedEnvelope> envelopes, std::optional<Bytes> dedup_key,
               Completion done) override {
    writes_.enqueue(std::move(envelopes), std::move(dedup_key), std::move(done));
  }

  void remove_async(AccountId account, DeviceId device, std::vector<EnvelopeId> ids,
                    RemoveCompletion done, std::vector<Removing> /*known*/) override {
    // `known` spares the SQLite backend a lookup; here the DELETE returns what it removed.
    writes_.remove_async(account, device, std::move(ids), std::move(done), {});
  }

  tl::expected<bool, Error> was_sent(ByteView dedup_key) override {
    if (writes_.holds(dedup_key)) return true;
    const auto hash = digest(dedup_key);
    return with_conn<bool>("was_sent", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      const pqxx::result r =
          tx.exec_prepared("was_sent", dedup_time(dedup_key), bin(ByteView(hash)));
      if (r.empty()) return Expect<bool>(false);
      return Expect<bool>(get_u64(r[0][0]) > now_seconds());
    });
  }

  tl::expected<std::vector<QueuedEnvelope>, Error> load(AccountId account, DeviceId device,
                                                        std::size_t limit,
                                                        std::optional<EnvelopeId> after,
                                                        std::size_t max_bytes) override {
    if (limit == 0) return std::vector<QueuedEnvelope>{};
    return with_conn<std::vector<QueuedEnvelope>>(
        "load", [&](pqxx::connection& c) -> Expect<std::vector<QueuedEnvelope>> {
          pqxx::read_transaction tx(c);
          std::int64_t after_seq = 0;
          if (after) {
            const pqxx::result r = tx.exec_prepared("load_after", bin(ByteView(*after)), account,
                                                    std::int64_t{device});
            // Acknowledged (or expired) meanwhile: the caller starts again from the head.
            if (r.empty()) return tl::unexpected(Error::not_found);
            after_seq = get_i64(r[0][0]);
          }
          const pqxx::result r =
              tx.exec_prepared("load", account, std::int64_t{device}, after_seq, i64(now_seconds()),
                               i64(static_cast<std::uint64_t>(limit)));
          std::vector<QueuedEnvelope> out;
          std::size_t bytes = 0;
          for (const auto& row : r) {
            QueuedEnvelope e;
            const Bytes id = get_blob(row[0], kEnvelopeIdSize);
            std::copy(id.begin(), id.end(), e.id.begin());
            e.account = account;
            e.device = device;
            e.source = get_text(row[1]);
            e.source_device = get_u32(row[2]);
            e.type = get_u32(row[3]);
            e.content = get_blob(row[4]);
            e.client_timestamp = get_u64(row[5]);
            e.server_timestamp = get_u64(row[6]);
            e.expires_at = get_u64(row[7]);
            e.shared = row[8].as<bool>();
            bytes += e.content.size();
            out.push_back(std::move(e));
            if (bytes >= max_bytes) break;
          }
          tx.commit();
          return out;
        });
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
    return with_conn<std::size_t>("count", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return Expect<std::size_t>(get_u64(
          tx.exec_prepared("count", account, std::int64_t{device}, i64(now_seconds()))[0][0]));
    });
  }

  tl::expected<std::size_t, Error> count_all() override {
    return with_conn<std::size_t>("count_all", [&](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return Expect<std::size_t>(get_u64(tx.exec_prepared("count_all")[0][0]));
    });
  }

  std::uint64_t stored_bytes() override { return stored_bytes_.load(std::memory_order_relaxed); }

  tl::expected<std::size_t, Error> expire(std::uint64_t now_s) override {
    // In batches, each its own short transaction, as in the SQLite backend.
    static constexpr std::int64_t kBatch = 512;
    static constexpr const char* kSweeps[] = {"expire_messages", "expire_dedup", "expire_invites",
                                              "expire_link_tokens"};
    std::size_t removed_messages = 0;
    for (const char* sweep : kSweeps) {
      const bool messages = std::strcmp(sweep, "expire_messages") == 0;
      for (;;) {
        std::uint64_t released = 0;
        auto removed = with_conn<std::size_t>("expire", [&](pqxx::connection& c) {
          pqxx::work tx(c);
          const pqxx::result r = tx.exec_prepared(sweep, i64(now_s), kBatch);
          const auto n = static_cast<std::size_t>(r.affected_rows());
          if (messages && n > 0) {
            for (const auto& row : r) released += get_u64(row[0]);
            // The trigger has counted the shared bodies' references: those none holds go.
            released += sweep_bodies(tx);
          }
          tx.commit();
          return Expect<std::size_t>(n);
        });
        if (!removed) return removed;
        if (messages) {
          removed_messages += *removed;
          release_stored_bytes(released);
        }
        if (*removed < static_cast<std::size_t>(kBatch)) break;
      }
    }
    return removed_messages;
  }

  void flush() override { writes_.flush(); }

  // --- TokenStore ---------------------------------------------------------------------------

  tl::expected<void, Error> create_invite(const std::string& code,
                                          std::uint64_t expires_at) override {
    const auto hash = digest(as_bytes(code));
    return with_conn<void>("create_invite", [&](pqxx::connection& c) {
      pqxx::work tx(c);
      tx.exec_prepared("insert_invite", bin(ByteView(hash)), i64(expires_at));
      tx.commit();
      return Expect<void>();
    });
  }

  tl::expected<void, Error> use_invite(const std::string& code, std::uint64_t now) override {
    const auto hash = digest(as_bytes(code));
    return with_conn<void>("use_invite", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::work tx(c);
      // Single use by deletion: one statement, so two registrations cannot both use one code.
      const pqxx::result r = tx.exec_prepared("use_invite", bin(ByteView(hash)));
      tx.commit();
      if (r.empty() || get_u64(r[0][0]) <= now) return tl::unexpected(Error::invalid_token);
      return {};
    });
  }

  tl::expected<void, Error> create_link_token(ByteView token, AccountId account,
                                              std::uint64_t expires_at) override {
    const auto hash = digest(token);
    return with_conn<void>("create_link_token", [&](pqxx::connection& c) {
      pqxx::work tx(c);
      tx.exec_prepared("insert_link_token", bin(ByteView(hash)), account, i64(expires_at));
      tx.commit();
      return Expect<void>();
    });
  }

  tl::expected<AccountId, Error> use_link_token(ByteView token, std::uint64_t now) override {
    const auto hash = digest(token);
    return with_conn<AccountId>("use_link_token", [&](pqxx::connection& c) -> Expect<AccountId> {
      pqxx::work tx(c);
      const pqxx::result r = tx.exec_prepared("use_link_token", bin(ByteView(hash)));
      tx.commit();
      if (r.empty()) return tl::unexpected(Error::invalid_token);
      const AccountId account = get_i64(r[0][0]);
      if (get_u64(r[0][1]) <= now) return tl::unexpected(Error::invalid_token);
      return account;
    });
  }

  // --- KtStore ------------------------------------------------------------------------------

  // Entry 0, and the accounts of a database that had none logged: under the log's lock, so that
  // two servers starting at once cannot both write entry 1 (the second gets conflict, reads the
  // log again and finds it done).
  tl::expected<void, Error> append(const KtEntryRow& entry) override {
    return with_conn<void>("kt append", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::work tx(c);
      tx.exec(std::string(kLockLog));
      insert_kt_entry(tx, entry);
      tx.commit();
      return {};
    });
  }

  tl::expected<void, Error> append_all(const std::vector<KtEntryRow>& entries) override {
    return with_conn<void>("kt append", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::work tx(c);
      tx.exec(std::string(kLockLog));
      for (const KtEntryRow& entry : entries) insert_kt_entry(tx, entry);
      tx.commit();
      return {};
    });
  }

  tl::expected<void, Error> load(const std::function<void(const KtEntryRow&)>& visit) override {
    return load_from(0, visit);
  }

  tl::expected<void, Error> save_cosignature(const KtCosignatureRow& row) override {
    return with_conn<void>("kt cosignature", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::work tx(c);
      tx.exec_prepared("put_kt_cosignature", bin(row.auditor_key), bin(row.tree_head),
                       i64(row.time_ms), bin(row.signature));
      tx.commit();
      return {};
    });
  }

  tl::expected<std::vector<KtCosignatureRow>, Error> cosignatures() override {
    return with_conn<std::vector<KtCosignatureRow>>(
        "kt cosignatures", [&](pqxx::connection& c) -> Expect<std::vector<KtCosignatureRow>> {
          pqxx::read_transaction tx(c);
          std::vector<KtCosignatureRow> out;
          for (const auto& row : tx.exec_prepared("kt_cosignatures")) {
            KtCosignatureRow r;
            r.auditor_key = get_blob(row[0], 32);
            r.tree_head = get_blob(row[1]);
            r.time_ms = get_u64(row[2]);
            r.signature = get_blob(row[3], 64);
            out.push_back(std::move(r));
          }
          tx.commit();
          return out;
        });
  }

  tl::expected<void, Error> load_from(
      std::uint64_t first, const std::function<void(const KtEntryRow&)>& visit) override {
    return with_conn<void>("kt load", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::read_transaction tx(c);  // REPEATABLE READ: entries and versions of one moment
      auto ok = read_kt_entries(tx, first, visit);
      tx.commit();
      return ok;
    });
  }

  bool shared() const override { return true; }

  void set_account_log(AccountLog* log) override {
    // A change in progress read the old value once, at its start (lock_log), and uses that.
    account_log_.store(log, std::memory_order_release);
  }

  tl::expected<std::vector<AccountRecord>, Error> all_accounts() override {
    return with_conn<std::vector<AccountRecord>>(
        "all_accounts", [&](pqxx::connection& c) -> Expect<std::vector<AccountRecord>> {
          pqxx::read_transaction tx(c);
          std::vector<AccountRecord> out;
          for (const auto& row : tx.exec_prepared("all_account_ids")) {
            auto a = read_account(tx, tx.exec_prepared("account_by_id", get_i64(row[0])));
            if (!a) return tl::unexpected(a.error());
            out.push_back(std::move(*a));
          }
          tx.commit();
          return out;
        });
  }

  // --- ServerStore helpers ------------------------------------------------------------------

  std::vector<std::pair<std::string, std::string>> schema() {
    auto lease = acquire();
    auto listed = postgres::list_schema(*lease.conn);
    if (!listed) {
      options_.log("postgresql: " + listed.error());
      return {};
    }
    return std::move(*listed);
  }

  std::uint64_t commit_count() const { return commits_.load(std::memory_order_relaxed); }

 private:
  template <class T>
  using Expect = tl::expected<T, Error>;

  // --- the connection pool ------------------------------------------------------------------

  struct Lease {
    Impl* impl;
    std::unique_ptr<pqxx::connection> conn;
    Lease(Impl* i, std::unique_ptr<pqxx::connection> c) : impl(i), conn(std::move(c)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      std::lock_guard lock(impl->pool_mu_);
      impl->free_.push_back(std::move(conn));
      impl->pool_cv_.notify_one();
    }
  };
  Lease acquire() {
    std::unique_lock lock(pool_mu_);
    pool_cv_.wait(lock, [&] { return !free_.empty(); });
    auto conn = std::move(free_.back());
    free_.pop_back();
    return Lease(this, std::move(conn));
  }

  // Runs `body` on a pooled connection; database failures become errors: a unique violation is
  // conflict, a missing parent row not_found, anything else io (logged without values).
  template <class T, class F>
  Expect<T> with_conn(std::string_view op, F&& body) {
    try {
      auto lease = acquire();
      return guarded<T>(op, [&] { return body(*lease.conn); });
    } catch (const std::exception& e) {
      return tl::unexpected(failed(op, e));
    }
  }

  template <class T, class F>
  Expect<T> guarded(std::string_view op, F&& body) {
    try {
      return body();
    } catch (const pqxx::unique_violation&) {
      return tl::unexpected(Error::conflict);
    } catch (const pqxx::foreign_key_violation&) {
      return tl::unexpected(Error::not_found);
    } catch (const CorruptRow& e) {
      options_.log("postgresql: " + std::string(op) + ": corrupt row: " + e.what());
      return tl::unexpected(Error::io);
    } catch (const std::exception& e) {
      return tl::unexpected(failed(op, e));
    }
  }

  Error failed(std::string_view op, const std::exception& e) {
    std::string line = "postgresql: ";
    line += op;
    line += ": ";
    if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e); sql && !sql->sqlstate().empty())
      line += "SQLSTATE " + sql->sqlstate() + ": ";
    line += first_line(e);
    options_.log(line);
    return Error::io;
  }

  // --- checks -------------------------------------------------------------------------------

  Expect<void> check_size(const char* what, ByteView value, std::size_t size) {
    if (value.size() == size) return {};
    options_.log("refusing to store " + std::string(what) + " of " + std::to_string(value.size()) +
                 " bytes, expected " + std::to_string(size));
    return tl::unexpected(Error::io);
  }
  Expect<void> check_signed_pre_key(const SignedPreKeyRecord& key) {
    if (auto ok = check_size("signed_pre_keys.public_key", key.public_key, kPublicKeySize); !ok)
      return ok;
    return check_size("signed_pre_keys.signature", key.signature, kSignatureSize);
  }
  Expect<void> check_recovery_key(ByteView key) {
    if (key.empty()) return {};
    return check_size("accounts.recovery_key", key, kRecoveryKeySize);
  }
  Expect<void> check_device_keys(const DeviceRecord& device,
                                 const SignedPreKeyRecord& signed_pre_key,
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

  std::uint64_t now_seconds() const { return options_.now_ms() / 1000; }
  std::uint64_t today() const { return options_.now_ms() / kMsPerDay; }

  // --- pieces of writes, inside the caller's transaction (they throw on failure) -------------

  void insert_device(pqxx::transaction_base& tx, AccountId account, DeviceId id,
                     const DeviceRecord& device, const SignedPreKeyRecord& signed_pre_key,
                     const std::vector<OneTimePreKeyRecord>& pre_keys) {
    tx.exec_prepared("insert_device", account, std::int64_t{id},
                     std::int64_t{device.registration_id}, bin(device.auth_key), i64(today()),
                     bin(device.name));
    put_signed_pre_key(tx, account, id, signed_pre_key);
    put_pre_keys(tx, account, id, pre_keys);
  }

  void put_signed_pre_key(pqxx::transaction_base& tx, AccountId account, DeviceId device,
                          const SignedPreKeyRecord& key) {
    tx.exec_prepared("put_signed_pre_key", account, std::int64_t{device}, std::int64_t{key.id},
                     bin(key.public_key), bin(key.signature));
  }

  void put_pre_keys(pqxx::transaction_base& tx, AccountId account, DeviceId device,
                    const std::vector<OneTimePreKeyRecord>& keys) {
    if (keys.empty()) return;
    for (const auto& key : keys) {
      tx.exec_prepared("put_pre_key", account, std::int64_t{device}, std::int64_t{key.id},
                       bin(key.public_key));
    }
    // Over the limit: keep the newest, drop the oldest.
    tx.exec_prepared("trim_pre_keys", account, std::int64_t{device},
                     std::int64_t{options_.max_pre_keys_per_device});
  }

  Expect<void> store_pre_keys(AccountId account, DeviceId device,
                              const std::vector<OneTimePreKeyRecord>& keys, bool replace) {
    for (const auto& key : keys) {
      if (auto ok = check_size("pre_keys.public_key", key.public_key, kPublicKeySize); !ok)
        return ok;
    }
    return with_conn<void>("pre_keys", [&](pqxx::connection& c) -> Expect<void> {
      pqxx::work tx(c);
      // The device's row lock: uploads to one device at once trim in turn.
      if (tx.exec_prepared("lock_device", account, std::int64_t{device}).empty())
        return tl::unexpected(Error::not_found);
      if (replace) tx.exec_prepared("delete_pre_keys", account, std::int64_t{device});
      put_pre_keys(tx, account, device, keys);
      tx.commit();
      return {};
    });
  }

  // --- the transparency log's part of an account change -------------------------------------

  // The log this change goes through (none: not logged). With one, its write lock comes first.
  AccountLog* lock_log(pqxx::transaction_base& tx) {
    AccountLog* log = account_log_.load(std::memory_order_acquire);
    if (log != nullptr) tx.exec(std::string(kLockLog));
    return log;
  }

  // Commits an account change, and with it the log's entry for it: both, or neither.
  Expect<void> commit_change(pqxx::work& tx, AccountLog* log, AccountId account) {
    if (log == nullptr) {
      tx.commit();
      return {};
    }
    auto after = read_account(tx, tx.exec_prepared("account_by_id", account));
    if (!after) return tl::unexpected(after.error());
    bool committed = false;
    const AccountLog::ReadFrom read_from = [&](std::uint64_t first,
                                               const AccountLog::Visit& visit) {
      return guarded<void>("kt catch up", [&] { return read_kt_entries(tx, first, visit); });
    };
    auto logged = log->account_changed(
        *after,
        [&](const KtEntryRow& row) -> Expect<void> {
          if (committed) return tl::unexpected(Error::io);
          return guarded<void>("kt entry", [&]() -> Expect<void> {
            insert_kt_entry(tx, row);
            tx.commit();
            committed = true;
            return {};
          });
        },
        read_from);
    if (committed) return {};  // durable with its entry, whatever the log said after
    if (logged) options_.log("postgresql: the transparency log did not write its entry");
    return tl::unexpected(Error::io);
  }

  void insert_kt_entry(pqxx::transaction_base& tx, const KtEntryRow& e) {
    tx.exec_prepared("insert_kt_entry", i64(e.index), i64(e.timestamp_ms), bin(e.prefix_root));
    std::int64_t seq = 0;
    for (const auto& v : e.versions) {
      tx.exec_prepared("insert_kt_version", i64(e.index), seq++, bin(v.label_index),
                       std::int64_t{v.version}, bin(v.commitment), bin(v.opening), bin(v.value));
    }
  }

  // Entries from `first` on, each with its versions, both read in log order and merged.
  Expect<void> read_kt_entries(pqxx::transaction_base& tx, std::uint64_t first,
                               const std::function<void(const KtEntryRow&)>& visit) {
    const pqxx::result entries = tx.exec_prepared("kt_entries_from", i64(first));
    const pqxx::result versions = tx.exec_prepared("kt_versions_from", i64(first));
    std::size_t v = 0;
    std::uint64_t expected = first;
    for (const auto& row : entries) {
      KtEntryRow e;
      e.index = get_u64(row[0]);
      e.timestamp_ms = get_u64(row[1]);
      e.prefix_root = get_blob(row[2], 32);
      if (e.index != expected++) throw CorruptRow("kt_entries: a gap in idx");
      for (; v < versions.size(); ++v) {
        const std::uint64_t of = get_u64(versions[v][0]);
        if (of < e.index) throw CorruptRow("kt_versions: an entry that is not");
        if (of > e.index) break;
        KtVersionRow r;
        r.label_index = get_blob(versions[v][1], 32);
        r.version = get_u32(versions[v][2]);
        r.commitment = get_blob(versions[v][3], 32);
        r.opening = get_blob(versions[v][4], 32);
        r.value = get_blob(versions[v][5]);
        e.versions.push_back(std::move(r));
      }
      visit(e);
    }
    if (v < versions.size()) throw CorruptRow("kt_versions: an entry that is not");
    return {};
  }

  // Deletes the shared bodies no envelope points at any more; returns their bytes.
  std::uint64_t sweep_bodies(pqxx::transaction_base& tx) {
    std::uint64_t bytes = 0;
    for (const auto& row : tx.exec_prepared("sweep_bodies")) bytes += get_u64(row[0]);
    return bytes;
  }

  void release_stored_bytes(std::uint64_t bytes) {
    std::uint64_t now = stored_bytes_.load(std::memory_order_relaxed);
    while (!stored_bytes_.compare_exchange_weak(now, now - std::min(now, bytes),
                                                std::memory_order_relaxed)) {
    }
  }

  Expect<AccountRecord> read_account(pqxx::transaction_base& tx, const pqxx::result& r) {
    if (r.empty()) return tl::unexpected(Error::not_found);
    AccountRecord account;
    account.id = get_i64(r[0][0]);
    account.username = get_text(r[0][1]);
    account.identity_key = get_blob(r[0][2], kIdentityKeySize);
    account.recovery_key = get_blob(r[0][3]);
    if (!account.recovery_key.empty() && account.recovery_key.size() != kRecoveryKeySize) {
      throw CorruptRow("column recovery_key: " + std::to_string(account.recovery_key.size()) +
                       " bytes, expected 0 or 32");
    }
    for (const auto& row : tx.exec_prepared("devices_of", account.id)) {
      DeviceRecord d;
      d.id = get_u32(row[0]);
      d.registration_id = get_u32(row[1]);
      d.auth_key = get_blob(row[2], kAuthKeySize);
      d.created_day = get_u64(row[3]);
      d.name = get_blob(row[4]);
      if (d.name.size() > kMaxDeviceNameSize) {
        throw CorruptRow("column name: " + std::to_string(d.name.size()) + " bytes, above " +
                         std::to_string(kMaxDeviceNameSize));
      }
      account.devices.push_back(std::move(d));
    }
    return account;
  }

  // --- the message writer (group commit, write_queue.h) ---------------------------------------

  using PendingOp = PendingWrite;
  using DeviceKey = std::pair<AccountId, DeviceId>;
  using OpResult = WriteResult;

  // One transaction for the whole batch, each operation in its own savepoint, so that a send
  // refused for its own reasons leaves the others alone. Nothing is reported before COMMIT has
  // returned (with synchronous_commit on, PostgreSQL's default: once the WAL is flushed).
  std::vector<OpResult> commit_batch(const std::vector<std::unique_ptr<PendingOp>>& batch) {
    std::vector<OpResult> results(batch.size(), OpResult{0});
    usage_.clear();
    bodies_released_ = false;
    auto all = [&](Error e) { return std::vector<OpResult>(batch.size(), tl::unexpected(e)); };
    try {
      const std::uint64_t now_ms = options_.now_ms();
      pqxx::work tx(*writer_conn_);
      std::int64_t batch_bytes = 0;
      for (std::size_t i = 0; i < batch.size(); ++i) {
        const PendingOp& op = *batch[i];
        op_bytes_ = 0;
        op_touched_.clear();
        // Savepoints by hand rather than pqxx::subtransaction: the writer decides when one is
        // rolled back, and a lost connection fails the whole batch.
        tx.exec("SAVEPOINT op");
        OpResult r = guarded<std::size_t>("enqueue", [&]() -> OpResult {
          if (op.removal) return store_removal(tx, op);
          auto stored = store_send(tx, op, now_ms);
          if (!stored) return tl::unexpected(stored.error());
          return std::size_t{0};
        });
        if (r) {
          tx.exec("RELEASE SAVEPOINT op");
          batch_bytes += op_bytes_;
        } else {
          if (!writer_conn_->is_open()) return all(Error::io);
          tx.exec("ROLLBACK TO SAVEPOINT op");
          tx.exec("RELEASE SAVEPOINT op");
          for (const auto& key : op_touched_) usage_.erase(key);
        }
        results[i] = r;
      }
      if (bodies_released_) batch_bytes -= static_cast<std::int64_t>(sweep_bodies(tx));
      tx.commit();
      commits_.fetch_add(1, std::memory_order_relaxed);
      if (batch_bytes >= 0) {
        stored_bytes_.fetch_add(static_cast<std::uint64_t>(batch_bytes), std::memory_order_relaxed);
      } else {
        release_stored_bytes(static_cast<std::uint64_t>(-batch_bytes));
      }
      return results;
    } catch (const std::exception& e) {
      // The transaction rolled back (or its outcome is unknown: in_doubt_error); either way no
      // send in it is acknowledged. A retried send is deduplicated.
      failed("enqueue: batch", e);
      return all(Error::io);
    }
  }

  OpResult store_removal(pqxx::transaction_base& tx, const PendingOp& op) {
    std::size_t removed = 0;
    usage_.erase({op.account, op.device});  // counted again when a send needs it
    for (const EnvelopeId& id : op.ids) {
      // The account and device conditions keep one device from deleting another's queue.
      const pqxx::result r = tx.exec_prepared("remove_message", bin(ByteView(id)), op.account,
                                              std::int64_t{op.device});
      if (r.empty()) continue;  // not there (acknowledged twice, or another's)
      ++removed;
      op_bytes_ -= static_cast<std::int64_t>(get_u64(r[0][0]));
      if (get_i64(r[0][1]) != 0) bodies_released_ = true;
    }
    return removed;
  }

  QueueUsage& queue_usage(pqxx::transaction_base& tx, const DeviceKey& key) {
    if (auto it = usage_.find(key); it != usage_.end()) return it->second;
    QueueUsage usage;
    for (const auto& row : tx.exec_prepared("queue_usage", key.first, std::int64_t{key.second}))
      usage.add(get_text(row[0]), get_u64(row[1]), get_u64(row[2]));
    return usage_[key] = std::move(usage);
  }

  Expect<void> store_send(pqxx::transaction_base& tx, const PendingOp& send, std::uint64_t now_ms) {
    const std::uint64_t now_s = now_ms / 1000;
    if (send.dedup_key) {
      const auto hash = digest(*send.dedup_key);
      const pqxx::result r =
          tx.exec_prepared("dedup", dedup_time(*send.dedup_key), bin(ByteView(hash)),
                           i64(saturating_add(now_s, options_.dedup_ttl_seconds)), i64(now_s));
      if (r.affected_rows() == 0) return {};  // a retry of a send already stored
    }

    struct Adding {
      std::uint64_t count = 0;
      std::uint64_t bytes = 0;
      bool shared = false;
      std::string source;
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
    for (const auto& [key, adding] : per_device) {
      const QueueUsage& u = queue_usage(tx, key);
      if (share_limited && adding.shared) {
        const auto held = u.of(adding.source);
        if ((options_.max_queue_per_sender > 0 &&
             held.first + adding.count > options_.max_queue_per_sender) ||
            (options_.max_queue_bytes_per_sender > 0 &&
             held.second + adding.bytes > options_.max_queue_bytes_per_sender))
          return tl::unexpected(Error::queue_share_full);
      }
      if (u.count + adding.count > options_.max_queue_per_device ||
          (options_.max_queue_bytes_per_device > 0 &&
           u.bytes + adding.bytes > options_.max_queue_bytes_per_device))
        return tl::unexpected(Error::queue_full);
    }

    std::int64_t own_bytes = 0;
    std::map<const Bytes*, std::pair<std::int64_t, std::int64_t>> bodies;  // -> (refs, row id)
    for (std::size_t i = 0; i < send.envelopes.size(); ++i) {
      if (send.cancelled[i]) continue;
      const QueuedEnvelope& e = send.envelopes[i];
      if (e.body) {
        bodies[e.body.get()].first += 1;
      } else {
        own_bytes += static_cast<std::int64_t>(e.content.size());
      }
    }
    for (auto& [body, refs_and_id] : bodies) {
      const pqxx::result r =
          tx.exec_prepared("insert_body", bin(ByteView(*body)), refs_and_id.first);
      refs_and_id.second = get_i64(r[0][0]);
      own_bytes += static_cast<std::int64_t>(body->size());
    }

    const std::uint64_t max_expiry = saturating_add(now_s, options_.message_ttl_seconds);
    for (std::size_t i = 0; i < send.envelopes.size(); ++i) {
      if (send.cancelled[i]) continue;  // acknowledged already: never written
      const QueuedEnvelope& e = send.envelopes[i];
      const std::uint64_t expires_at =
          e.expires_at == 0 ? max_expiry : std::min(e.expires_at, max_expiry);
      tx.exec_prepared("insert_message", bin(ByteView(e.id)), e.account, std::int64_t{e.device},
                       e.source, std::int64_t{e.source_device}, std::int64_t{e.type},
                       bin(ByteView(e.content)), i64(e.client_timestamp),
                       i64(e.server_timestamp == 0 ? now_ms : e.server_timestamp), i64(expires_at),
                       e.body ? bodies[e.body.get()].second : std::int64_t{0});
    }
    for (const auto& [key, adding] : per_device) {
      op_touched_.push_back(key);
      usage_[key].add(adding.source, adding.count, adding.bytes);
    }
    op_bytes_ += own_bytes;
    return {};
  }

  PostgresOptions options_;
  std::unique_ptr<pqxx::connection> writer_conn_;  // the writer thread's alone

  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<pqxx::connection>> free_;  // guarded by pool_mu_

  // The writer thread's state for the batch in progress: queue usage counted so far (one query
  // per device per batch; not kept across batches, as other processes may write), the devices
  // the operation in progress changed, the stored bytes it adds, and whether a removal released
  // a shared body.
  std::map<DeviceKey, QueueUsage> usage_;
  std::vector<DeviceKey> op_touched_;
  std::int64_t op_bytes_ = 0;
  bool bodies_released_ = false;
  std::atomic<std::uint64_t> stored_bytes_{0};

  std::atomic<std::uint64_t> commits_{0};
  std::atomic<AccountLog*> account_log_{nullptr};
  // Last: its writer starts once everything above exists, and stops before any of it goes.
  WriteQueue writes_{
      WriteQueue::Options{options_.group_commit_max_batch, options_.group_commit_max_delay,
                          [this](std::string_view m) { options_.log(m); }},
      [this](const PendingBatch& batch) { return commit_batch(batch); }};
};

// --- PostgresServerStore ----------------------------------------------------------------------

tl::expected<std::unique_ptr<PostgresServerStore>, Error> PostgresServerStore::open(
    const std::string& conninfo, PostgresOptions options) {
  auto log = options.log ? options.log : std::function<void(std::string_view)>(log_to_stderr);
  try {
    auto writer = connect(conninfo);
    if (options.migrate) {
      if (auto migrated = postgres::migrate(*writer); !migrated) {
        log("postgresql: " + migrated.error());
        return tl::unexpected(Error::io);
      }
    } else {
      auto version = postgres::schema_version(*writer);
      if (!version) {
        log("postgresql: " + version.error());
        return tl::unexpected(Error::io);
      }
      if (*version != postgres::kSchemaVersion) {
        log("postgresql: the database has schema version " + std::to_string(*version) +
            (*version > postgres::kSchemaVersion
                 ? ", newer than this server's " + std::to_string(postgres::kSchemaVersion) +
                       ": run a server of that version, or restore a backup taken before it"
                 : ", this server needs " + std::to_string(postgres::kSchemaVersion) +
                       ": run `sotto-server migrate` (with the same config) first"));
        return tl::unexpected(Error::io);
      }
    }
    std::vector<std::unique_ptr<pqxx::connection>> pool;
    const std::size_t n = options.pool_connections == 0 ? 1 : options.pool_connections;
    for (std::size_t i = 0; i < n; ++i) pool.push_back(connect(conninfo));
    auto impl = std::make_unique<Impl>(std::move(options), std::move(writer), std::move(pool));
    return std::unique_ptr<PostgresServerStore>(new PostgresServerStore(std::move(impl)));
  } catch (const std::exception& e) {
    log("postgresql: cannot connect: " + first_line(e));
    return tl::unexpected(Error::io);
  }
}

PostgresServerStore::PostgresServerStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PostgresServerStore::~PostgresServerStore() = default;

AccountStore& PostgresServerStore::accounts() {
  return *impl_;
}
KeyStore& PostgresServerStore::keys() {
  return *impl_;
}
MessageStore& PostgresServerStore::messages() {
  return *impl_;
}
TokenStore& PostgresServerStore::tokens() {
  return *impl_;
}
BlockStore& PostgresServerStore::blocks() {
  return *impl_;
}
std::vector<std::pair<std::string, std::string>> PostgresServerStore::schema() {
  return impl_->schema();
}
std::uint64_t PostgresServerStore::commit_count() const {
  return impl_->commit_count();
}
KtStore* PostgresServerStore::kt() {
  return impl_.get();
}

namespace {

class PostgresBlobRows final : public BlobRows {
 public:
  PostgresBlobRows(std::unique_ptr<pqxx::connection> conn,
                   std::function<void(std::string_view)> log)
      : conn_(std::move(conn)), log_(std::move(log)) {}

  tl::expected<void, Error> insert(const BlobId& id, AccountId account, std::uint64_t size,
                                   std::uint64_t expires_at) override {
    return run<void>("attachments: insert", [&](pqxx::work& tx) {
      tx.exec_params(
          "INSERT INTO attachments (id, account_id, size, complete, expires_at) "
          "VALUES ($1, $2, $3, 0, $4)",
          bin(ByteView(id)), account, i64(size), i64(expires_at));
      return tl::expected<void, Error>();
    });
  }

  tl::expected<BlobRecord, Error> find(const BlobId& id) override {
    return run<BlobRecord>(
        "attachments: find", [&](pqxx::work& tx) -> tl::expected<BlobRecord, Error> {
          const pqxx::result r = tx.exec_params(
              "SELECT account_id, size, complete, expires_at FROM attachments WHERE id = $1",
              bin(ByteView(id)));
          if (r.empty()) return tl::unexpected(Error::not_found);
          BlobRecord rec;
          rec.id = id;
          rec.account = get_i64(r[0][0]);
          rec.size = get_u64(r[0][1]);
          rec.complete = get_i64(r[0][2]) != 0;
          rec.expires_at = get_u64(r[0][3]);
          return rec;
        });
  }

  tl::expected<void, Error> complete(const BlobId& id, std::uint64_t expires_at) override {
    return run<void>("attachments: complete", [&](pqxx::work& tx) {
      tx.exec_params("UPDATE attachments SET complete = 1, expires_at = $2 WHERE id = $1",
                     bin(ByteView(id)), i64(expires_at));
      return tl::expected<void, Error>();
    });
  }

  tl::expected<std::uint64_t, Error> account_bytes(AccountId account) override {
    return run<std::uint64_t>("attachments: account_bytes", [&](pqxx::work& tx) {
      return tl::expected<std::uint64_t, Error>(get_u64(tx.exec_params(
          "SELECT coalesce(sum(size), 0)::bigint FROM attachments WHERE account_id = $1",
          account)[0][0]));
    });
  }

  tl::expected<std::pair<std::vector<BlobId>, std::vector<BlobId>>, Error> expire(
      std::uint64_t now_seconds) override {
    using Ids = std::pair<std::vector<BlobId>, std::vector<BlobId>>;
    auto to_id = [](const pqxx::field& f, std::vector<BlobId>& out) {
      const Bytes b = get_blob(f);
      if (b.size() != kBlobIdSize) return;  // a damaged row: its file is swept as an orphan
      BlobId id{};
      std::copy(b.begin(), b.end(), id.begin());
      out.push_back(id);
    };
    return run<Ids>("attachments: expire", [&](pqxx::work& tx) {
      Ids ids;
      for (const auto& row : tx.exec_params(
               "DELETE FROM attachments WHERE expires_at <= $1 RETURNING id", i64(now_seconds)))
        to_id(row[0], ids.first);
      for (const auto& row : tx.exec("SELECT id FROM attachments")) to_id(row[0], ids.second);
      return tl::expected<Ids, Error>(std::move(ids));
    });
  }

 private:
  template <class T, class F>
  tl::expected<T, Error> run(std::string_view op, F&& body) {
    std::lock_guard lock(mu_);
    try {
      pqxx::work tx(*conn_);
      auto out = body(tx);
      tx.commit();
      return out;
    } catch (const pqxx::unique_violation&) {
      return tl::unexpected(Error::conflict);
    } catch (const pqxx::foreign_key_violation&) {
      return tl::unexpected(Error::not_found);
    } catch (const std::exception& e) {
      log_("postgresql: " + std::string(op) + ": " + first_line(e));
      return tl::unexpected(Error::io);
    }
  }

  std::mutex mu_;
  std::unique_ptr<pqxx::connection> conn_;  // guarded by mu_
  std::function<void(std::string_view)> log_;
};

}  // namespace

tl::expected<std::unique_ptr<BlobRows>, Error> open_postgres_blob_rows(
    const std::string& conninfo, std::function<void(std::string_view)> log) {
  if (!log) log = log_to_stderr;
  try {
    auto conn = std::make_unique<pqxx::connection>(conninfo);
    auto version = postgres::schema_version(*conn);
    if (!version || *version != postgres::kSchemaVersion) {
      log("postgresql: attachments: " +
          (version ? "schema version " + std::to_string(*version) + ", not " +
                         std::to_string(postgres::kSchemaVersion)
                   : version.error()));
      return tl::unexpected(Error::io);
    }
    return std::unique_ptr<BlobRows>(new PostgresBlobRows(std::move(conn), std::move(log)));
  } catch (const std::exception& e) {
    log("postgresql: attachments: cannot connect: " + first_line(e));
    return tl::unexpected(Error::io);
  }
}

bool is_postgres_store(const std::string& store) {
  return store.rfind("postgresql://", 0) == 0 || store.rfind("postgres://", 0) == 0;
}

tl::expected<PostgresSchemaStatus, std::string> postgres_schema_status(
    const std::string& conninfo) {
  try {
    pqxx::connection conn(conninfo);
    auto v = postgres::schema_version(conn);
    if (!v) return tl::unexpected(v.error());
    return PostgresSchemaStatus{*v, postgres::kSchemaVersion};
  } catch (const std::exception& e) {
    return tl::unexpected("cannot connect to PostgreSQL: " + first_line(e));
  }
}

tl::expected<PostgresSchemaStatus, std::string> postgres_migrate(const std::string& conninfo) {
  try {
    pqxx::connection conn(conninfo);
    if (auto migrated = postgres::migrate(conn); !migrated) return tl::unexpected(migrated.error());
    auto v = postgres::schema_version(conn);
    if (!v) return tl::unexpected(v.error());
    return PostgresSchemaStatus{*v, postgres::kSchemaVersion};
  } catch (const std::exception& e) {
    return tl::unexpected("cannot connect to PostgreSQL: " + first_line(e));
  }
}

}  // namespace sotto::store
