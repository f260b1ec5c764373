#include "store/server/sqlite_db.h"

#include <limits>
#include <string>

namespace sotto::store::sqlite {

// --- Statement ------------------------------------------------------------------------------

Statement::~Statement() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

Statement& Statement::bind(int index, std::int64_t value) {
  bind_error(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Statement& Statement::bind_u64(int index, std::uint64_t value) {
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  return bind(index, static_cast<std::int64_t>(value > kMax ? kMax : value));
}

Statement& Statement::bind(int index, ByteView value) {
  // A zero-length blob bound from a null pointer would be stored as NULL, not as a BLOB.
  if (value.empty()) {
    bind_error(sqlite3_bind_zeroblob(stmt_, index, 0));
  } else {
    bind_error(sqlite3_bind_blob64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT));
  }
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  bind_error(sqlite3_bind_text64(stmt_, index, value.empty() ? "" : value.data(), value.size(),
                                 SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

void Statement::bind_error(int rc) noexcept {
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

int Statement::step() {
  if (bind_rc_ != SQLITE_OK) return bind_rc_;
  return sqlite3_step(stmt_);
}

// --- Row ------------------------------------------------------------------------------------

void Row::fail(int column, const std::string& what) {
  if (!problem_.empty()) return;
  const char* name = sqlite3_column_name(stmt_, column);
  problem_ = std::string("column ") + (name != nullptr ? name : "?") + ": " + what;
}

bool Row::expect_type(int column, int type, const char* type_name) {
  if (!problem_.empty()) return false;
  if (sqlite3_column_type(stmt_, column) != type) {
    fail(column, std::string("not ") + type_name);
    return false;
  }
  return true;
}

std::int64_t Row::i64(int column) {
  if (!expect_type(column, SQLITE_INTEGER, "an INTEGER")) return 0;
  return sqlite3_column_int64(stmt_, column);
}

std::uint64_t Row::u64(int column) {
  const std::int64_t v = i64(column);
  if (v < 0) {
    fail(column, "negative");
    return 0;
  }
  return static_cast<std::uint64_t>(v);
}

std::uint32_t Row::u32(int column) {
  const std::int64_t v = i64(column);
  if (v < 0 || v > static_cast<std::int64_t>(std::numeric_limits<std::uint32_t>::max())) {
    fail(column, "out of range for 32 bits");
    return 0;
  }
  return static_cast<std::uint32_t>(v);
}

std::string Row::text(int column) {
  if (!expect_type(column, SQLITE_TEXT, "TEXT")) return {};
  const auto* p = sqlite3_column_text(stmt_, column);
  const int n = sqlite3_column_bytes(stmt_, column);
  if (p == nullptr || n < 0) {
    if (n != 0) fail(column, "unreadable");
    return {};
  }
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

Bytes Row::blob(int column) {
  if (!expect_type(column, SQLITE_BLOB, "a BLOB")) return {};
  const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, column));
  const int n = sqlite3_column_bytes(stmt_, column);
  if (n == 0) return {};
  if (p == nullptr || n < 0) {
    fail(column, "unreadable");
    return {};
  }
  return Bytes(p, p + n);
}

Bytes Row::blob(int column, std::size_t exact_size) {
  Bytes b = blob(column);
  if (ok() && b.size() != exact_size) {
    fail(column, std::to_string(b.size()) + " bytes, expected " + std::to_string(exact_size));
    return {};
  }
  return b;
}

// --- Connection -----------------------------------------------------------------------------

tl::expected<std::unique_ptr<Connection>, std::string> Connection::open(
    const std::filesystem::path& file, std::chrono::milliseconds busy_timeout) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = std::string("open: ") + sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return tl::unexpected(std::move(why));
  }
  std::unique_ptr<Connection> conn(new Connection(db));
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(busy_timeout.count()));
  // No writable_schema or other footguns on the server's own connections.
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);

  // journal_mode=WAL also proves the file is a database (SQLITE_NOTADB otherwise).
  auto mode = conn->prepare("PRAGMA journal_mode=WAL");
  if (!mode) return tl::unexpected("journal_mode: " + conn->errmsg());
  {
    Statement st = std::move(*mode);
    const int step = st.step();
    if (step != SQLITE_ROW) return tl::unexpected("journal_mode: " + conn->errmsg());
    const auto* got = sqlite3_column_text(st.get(), 0);
    if (got == nullptr || std::string_view(reinterpret_cast<const char*>(got)) != "wal") {
      return tl::unexpected(std::string("journal_mode: WAL refused"));
    }
  }
  // synchronous=FULL: every commit fsyncs the WAL, so an acknowledged message survives a crash
  // or power loss; group commit is what keeps this affordable. secure_delete: a delivered or
  // expired message, a handed-out prekey, a used token is overwritten with zeros in the database
  // file, not left in free pages (docs/what-the-server-knows.md).
  for (const char* pragma :
       {"PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON", "PRAGMA secure_delete=ON"}) {
    if (conn->exec(pragma) != SQLITE_OK)
      return tl::unexpected(std::string(pragma) + ": " + conn->errmsg());
  }
  return conn;
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

int Connection::exec(const char* sql) {
  return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
}

tl::expected<Statement, int> Connection::prepare(const char* sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return tl::unexpected(rc);
    }
    it = cache_.emplace(sql, stmt).first;
  }
  return Statement(it->second);
}

std::int64_t Connection::changes() const {
  return sqlite3_changes64(db_);
}

std::string Connection::errmsg() const {
  return sqlite3_errmsg(db_);
}

// --- Transaction ----------------------------------------------------------------------------

Transaction::~Transaction() {
  if (open_) (void)conn_.exec("ROLLBACK");
}

int Transaction::begin_immediate() {
  const int rc = conn_.exec("BEGIN IMMEDIATE");
  open_ = rc == SQLITE_OK;
  return rc;
}

int Transaction::begin_read() {
  const int rc = conn_.exec("BEGIN DEFERRED");
  open_ = rc == SQLITE_OK;
  return rc;
}

int Transaction::commit() {
  const int rc = conn_.exec("COMMIT");
  if (rc == SQLITE_OK) open_ = false;
  return rc;
}

// --- Pool -----------------------------------------------------------------------------------

Pool::Pool(std::vector<std::unique_ptr<Connection>> connections) : free_(std::move(connections)) {}

Pool::Lease Pool::acquire() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !free_.empty(); });
  std::unique_ptr<Connection> conn = std::move(free_.back());
  free_.pop_back();
  return Lease(*this, std::move(conn));
}

void Pool::release(std::unique_ptr<Connection> conn) {
  {
    std::lock_guard lock(mu_);
    free_.push_back(std::move(conn));
  }
  cv_.notify_one();
}

}  // namespace sotto::store::sqlite
