// Minimal RAII over the SQLite C API for the client store (internal to src/store/client; SQLite
// is a private dependency of sotto_store_client). A Connection owns one database handle and a
// cache of prepared statements; a Statement borrowed from the cache resets and clears its
// bindings when it goes out of scope. Column readers check the stored type and range and return
// nullopt on a mismatch, so that a damaged database turns into an error and never a crash.
//
// Only ciphertext and non-secret values are ever bound: SQLite copies bound values into its own
// memory, which this code cannot wipe.
//
// Thread-safety: none; the client store serialises all use of a Connection behind its mutex.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "crypto/bytes.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sotto::store::detail {

class Statement {
 public:
  Statement() = default;
  explicit Statement(sqlite3_stmt* stmt) noexcept : stmt_(stmt) {}
  ~Statement();
  Statement(Statement&& other) noexcept : stmt_(other.stmt_) { other.stmt_ = nullptr; }
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Binding indices start at 1, as in SQLite. Each returns false when SQLite refuses the value.
  [[nodiscard]] bool bind_int(int index, std::int64_t value);
  [[nodiscard]] bool bind_blob(int index, ByteView value);  // a BLOB, also when empty
  [[nodiscard]] bool bind_text(int index, std::string_view value);
  [[nodiscard]] bool bind_null(int index);

  enum class StepResult { row, done, error };
  [[nodiscard]] StepResult step();

  // Columns start at 0. nullopt when the column holds another type or is out of range.
  [[nodiscard]] std::optional<std::int64_t> column_int(int column) const;
  [[nodiscard]] std::optional<std::uint32_t> column_u32(int column) const;
  [[nodiscard]] std::optional<std::uint64_t> column_u64(int column) const;  // INTEGER >= 0
  [[nodiscard]] std::optional<Bytes> column_blob(int column) const;
  [[nodiscard]] std::optional<std::string> column_text(int column) const;

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

class Connection {
 public:
  // Opens an existing database file read-write, or read-only (never creates one; never follows a
  // symlink). nullptr when SQLite cannot open it.
  [[nodiscard]] static std::unique_ptr<Connection> open(const std::filesystem::path& path,
                                                        bool read_only = false);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one or more statements that return no rows of interest. False on any error.
  [[nodiscard]] bool exec(const std::string& sql);
  // A cached prepared statement, or nullopt when the SQL does not compile (e.g. a missing
  // table in a damaged file).
  [[nodiscard]] std::optional<Statement> prepare(const std::string& sql);

  [[nodiscard]] std::int64_t last_insert_rowid() const;
  [[nodiscard]] int changes() const;
  [[nodiscard]] bool in_transaction() const;
  // Whether the last failure is a transient or environmental one (busy, locked, I/O, full disk,
  // out of memory, permissions) rather than a damaged or foreign database file.
  [[nodiscard]] bool last_error_is_environmental() const;

 private:
  explicit Connection(sqlite3* db) noexcept : db_(db) {}
  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

}  // namespace sotto::store::detail
