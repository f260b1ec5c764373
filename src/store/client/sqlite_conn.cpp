#include "store/client/sqlite_conn.h"

#include <sqlite3.h>

#include <limits>

namespace sotto::store::detail {

Statement::~Statement() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

bool Statement::bind_int(int index, std::int64_t value) {
  return sqlite3_bind_int64(stmt_, index, value) == SQLITE_OK;
}

bool Statement::bind_blob(int index, ByteView value) {
  if (value.empty()) return sqlite3_bind_zeroblob(stmt_, index, 0) == SQLITE_OK;
  if (value.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return false;
  return sqlite3_bind_blob(stmt_, index, value.data(), static_cast<int>(value.size()),
                           SQLITE_TRANSIENT) == SQLITE_OK;
}

bool Statement::bind_text(int index, std::string_view value) {
  if (value.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return false;
  return sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                           SQLITE_TRANSIENT) == SQLITE_OK;
}

bool Statement::bind_null(int index) {
  return sqlite3_bind_null(stmt_, index) == SQLITE_OK;
}

Statement::StepResult Statement::step() {
  switch (sqlite3_step(stmt_)) {
    case SQLITE_ROW:
      return StepResult::row;
    case SQLITE_DONE:
      return StepResult::done;
    default:
      return StepResult::error;
  }
}

std::optional<std::int64_t> Statement::column_int(int column) const {
  if (column >= sqlite3_column_count(stmt_)) return std::nullopt;
  if (sqlite3_column_type(stmt_, column) != SQLITE_INTEGER) return std::nullopt;
  return static_cast<std::int64_t>(sqlite3_column_int64(stmt_, column));
}

std::optional<std::uint32_t> Statement::column_u32(int column) const {
  auto v = column_int(column);
  if (!v || *v < 0 || *v > static_cast<std::int64_t>(std::numeric_limits<std::uint32_t>::max())) {
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(*v);
}

std::optional<std::uint64_t> Statement::column_u64(int column) const {
  auto v = column_int(column);
  if (!v || *v < 0) return std::nullopt;
  return static_cast<std::uint64_t>(*v);
}

std::optional<Bytes> Statement::column_blob(int column) const {
  if (column >= sqlite3_column_count(stmt_)) return std::nullopt;
  if (sqlite3_column_type(stmt_, column) != SQLITE_BLOB) return std::nullopt;
  const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, column));
  const int n = sqlite3_column_bytes(stmt_, column);
  if (n < 0 || (p == nullptr && n != 0)) return std::nullopt;
  return Bytes(p, p + n);
}

std::optional<std::string> Statement::column_text(int column) const {
  if (column >= sqlite3_column_count(stmt_)) return std::nullopt;
  if (sqlite3_column_type(stmt_, column) != SQLITE_TEXT) return std::nullopt;
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  const int n = sqlite3_column_bytes(stmt_, column);
  if (n < 0 || (p == nullptr && n != 0)) return std::nullopt;
  return std::string(p, static_cast<std::size_t>(n));
}

std::unique_ptr<Connection> Connection::open(const std::filesystem::path& path, bool read_only) {
  sqlite3* db = nullptr;
  const int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
                    SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    sqlite3_close_v2(db);  // a handle is returned even on failure; closing nullptr is a no-op
    return nullptr;
  }
  sqlite3_extended_result_codes(db, 1);
  return std::unique_ptr<Connection>(new Connection(db));
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

bool Connection::exec(const std::string& sql) {
  return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
}

std::optional<Statement> Connection::prepare(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK ||
        stmt == nullptr) {
      sqlite3_finalize(stmt);
      return std::nullopt;
    }
    it = cache_.emplace(sql, stmt).first;
  }
  return Statement(it->second);
}

std::int64_t Connection::last_insert_rowid() const {
  return sqlite3_last_insert_rowid(db_);
}

int Connection::changes() const {
  return sqlite3_changes(db_);
}

bool Connection::in_transaction() const {
  return sqlite3_get_autocommit(db_) == 0;
}

bool Connection::last_error_is_environmental() const {
  switch (sqlite3_errcode(db_) & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_NOMEM:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_PROTOCOL:
    case SQLITE_INTERRUPT:
      return true;
    default:
      return false;
  }
}

}  // namespace sotto::store::detail
