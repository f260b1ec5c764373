#include "transparency/sqlite_store.h"

#include <sqlite3.h>

#include <cstring>

namespace sotto::transparency {

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS kt_entries (
  idx          INTEGER PRIMARY KEY,
  timestamp_ms INTEGER NOT NULL,
  prefix_root  BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kt_versions (
  entry        INTEGER NOT NULL REFERENCES kt_entries(idx),
  seq          INTEGER NOT NULL,
  label_index  BLOB NOT NULL,
  version      INTEGER NOT NULL,
  commitment   BLOB NOT NULL,
  opening      BLOB NOT NULL,
  value        BLOB NOT NULL,
  PRIMARY KEY (entry, seq)
);
)sql";

// One prepared statement, finalized on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK) st_ = nullptr;
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  explicit operator bool() const { return st_ != nullptr; }
  sqlite3_stmt* get() const { return st_; }
  bool bind(int i, std::int64_t v) { return sqlite3_bind_int64(st_, i, v) == SQLITE_OK; }
  bool bind(int i, ByteView b) {
    // An empty value still binds a zero-length blob, not NULL.
    static const std::uint8_t kEmpty = 0;
    return sqlite3_bind_blob(st_, i, b.empty() ? &kEmpty : b.data(), static_cast<int>(b.size()),
                             SQLITE_TRANSIENT) == SQLITE_OK;
  }

 private:
  sqlite3_stmt* st_ = nullptr;
};

ByteView column_blob(sqlite3_stmt* st, int i) {
  const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(st, i));
  const int n = sqlite3_column_bytes(st, i);
  if (p == nullptr || n <= 0) return {};
  return {p, static_cast<std::size_t>(n)};
}

template <std::size_t N>
bool column_fixed(sqlite3_stmt* st, int i, std::array<std::uint8_t, N>& out) {
  const ByteView b = column_blob(st, i);
  if (b.size() != N) return false;
  std::memcpy(out.data(), b.data(), N);
  return true;
}

bool exec(sqlite3* db, const char* sql) {
  return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
}

}  // namespace

tl::expected<std::unique_ptr<SqliteTransparencyStore>, Error> SqliteTransparencyStore::open(
    const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return tl::unexpected(Error::storage_failure);
  }
  std::unique_ptr<SqliteTransparencyStore> store(new SqliteTransparencyStore(db));
  if (!exec(db, "PRAGMA journal_mode=WAL") || !exec(db, "PRAGMA synchronous=FULL") ||
      !exec(db, "PRAGMA foreign_keys=ON") || !exec(db, kSchema))
    return tl::unexpected(Error::storage_failure);
  return store;
}

SqliteTransparencyStore::~SqliteTransparencyStore() {
  sqlite3_close(db_);
}

tl::expected<void, Error> SqliteTransparencyStore::append(const StoredEntry& e) {
  std::lock_guard lock(mu_);
  if (!exec(db_, "BEGIN IMMEDIATE")) return tl::unexpected(Error::storage_failure);
  auto fail = [&](Error err) {
    exec(db_, "ROLLBACK");
    return tl::unexpected(err);
  };
  {
    Stmt count(db_, "SELECT COUNT(*) FROM kt_entries");
    if (!count || sqlite3_step(count.get()) != SQLITE_ROW) return fail(Error::storage_failure);
    if (static_cast<std::uint64_t>(sqlite3_column_int64(count.get(), 0)) != e.index)
      return fail(Error::invalid_argument);
  }
  {
    Stmt ins(db_, "INSERT INTO kt_entries (idx, timestamp_ms, prefix_root) VALUES (?, ?, ?)");
    if (!ins || !ins.bind(1, static_cast<std::int64_t>(e.index)) ||
        !ins.bind(2, static_cast<std::int64_t>(e.entry.timestamp_ms)) ||
        !ins.bind(3, e.entry.prefix_root) || sqlite3_step(ins.get()) != SQLITE_DONE)
      return fail(Error::storage_failure);
  }
  Stmt ins(db_,
           "INSERT INTO kt_versions (entry, seq, label_index, version, commitment, opening, value)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)");
  if (!ins) return fail(Error::storage_failure);
  for (std::size_t i = 0; i < e.versions.size(); ++i) {
    const StoredVersion& v = e.versions[i];
    sqlite3_reset(ins.get());
    if (!ins.bind(1, static_cast<std::int64_t>(e.index)) ||
        !ins.bind(2, static_cast<std::int64_t>(i)) || !ins.bind(3, v.index) ||
        !ins.bind(4, static_cast<std::int64_t>(v.link.version)) ||
        !ins.bind(5, v.link.commitment) || !ins.bind(6, v.opening) || !ins.bind(7, v.value) ||
        sqlite3_step(ins.get()) != SQLITE_DONE)
      return fail(Error::storage_failure);
  }
  if (!exec(db_, "COMMIT")) return fail(Error::storage_failure);
  return {};
}

tl::expected<void, Error> SqliteTransparencyStore::load(
    const std::function<void(const StoredEntry&)>& visit) const {
  std::lock_guard lock(mu_);
  Stmt entries(db_, "SELECT idx, timestamp_ms, prefix_root FROM kt_entries ORDER BY idx");
  Stmt versions(db_,
                "SELECT entry, label_index, version, commitment, opening, value FROM kt_versions"
                " ORDER BY entry, seq");
  if (!entries || !versions) return tl::unexpected(Error::storage_failure);
  int vrc = sqlite3_step(versions.get());
  std::uint64_t expected = 0;
  int rc;
  while ((rc = sqlite3_step(entries.get())) == SQLITE_ROW) {
    StoredEntry e;
    e.index = static_cast<std::uint64_t>(sqlite3_column_int64(entries.get(), 0));
    e.entry.timestamp_ms = static_cast<std::uint64_t>(sqlite3_column_int64(entries.get(), 1));
    if (e.index != expected++ || !column_fixed(entries.get(), 2, e.entry.prefix_root))
      return tl::unexpected(Error::storage_failure);
    while (vrc == SQLITE_ROW &&
           static_cast<std::uint64_t>(sqlite3_column_int64(versions.get(), 0)) == e.index) {
      StoredVersion v;
      v.link.entry = e.index;
      v.link.version = static_cast<std::uint32_t>(sqlite3_column_int64(versions.get(), 2));
      if (!column_fixed(versions.get(), 1, v.index) ||
          !column_fixed(versions.get(), 3, v.link.commitment) ||
          !column_fixed(versions.get(), 4, v.opening))
        return tl::unexpected(Error::storage_failure);
      const ByteView value = column_blob(versions.get(), 5);
      v.value.assign(value.begin(), value.end());
      e.versions.push_back(std::move(v));
      vrc = sqlite3_step(versions.get());
    }
    // A version row for an entry before this one was skipped: the rows do not line up.
    if (vrc == SQLITE_ROW &&
        static_cast<std::uint64_t>(sqlite3_column_int64(versions.get(), 0)) < e.index)
      return tl::unexpected(Error::storage_failure);
    visit(e);
  }
  if (rc != SQLITE_DONE || (vrc != SQLITE_DONE && vrc != SQLITE_ROW))
    return tl::unexpected(Error::storage_failure);
  if (vrc == SQLITE_ROW) return tl::unexpected(Error::storage_failure);  // versions past the end
  return {};
}

}  // namespace sotto::transparency
