// Thin RAII over the SQLite C API, internal to the server store's SQLite backend: a Connection
// caches its prepared statements; a Statement borrowed from that cache resets itself when it goes
// out of scope; a Row reads a result row and checks every column's type, range and size, so that
// a damaged database yields an error and never a crash; a Pool lends connections to one thread at
// a time. Only this backend's .cpp files include this header (SQLite is a private dependency).
//
// Thread-safety: a Connection and its Statements belong to one thread at a time (the pool's lease
// or the writer thread); the Pool itself is thread-safe.
#pragma once

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <unordered_map>
#include <utility>
#include <vector>

#include "crypto/bytes.h"

namespace sotto::store::sqlite {

// A prepared statement borrowed from its connection's cache. Binding indices start at 1, columns
// at 0, as in SQLite.
class Statement {
 public:
  explicit Statement(sqlite3_stmt* stmt) noexcept : stmt_(stmt) {}
  ~Statement();
  Statement(Statement&& other) noexcept : stmt_(other.stmt_), bind_rc_(other.bind_rc_) {
    other.stmt_ = nullptr;
  }
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, std::int64_t value);
  // Unsigned values above INT64_MAX are stored as INT64_MAX (no real time or id gets there).
  Statement& bind_u64(int index, std::uint64_t value);
  Statement& bind(int index, ByteView value);  // always a BLOB, also when empty
  Statement& bind(int index, std::string_view value);

  // SQLITE_ROW, SQLITE_DONE, or an (extended) error code (also that of a failed bind).
  [[nodiscard]] int step();
  [[nodiscard]] sqlite3_stmt* get() const noexcept { return stmt_; }

 private:
  void bind_error(int rc) noexcept;

  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

// Typed, checked access to the current row of a statement. The first bad column is remembered
// (problem()) and every getter returns a harmless default after it, so callers read the whole
// row and check ok() once.
class Row {
 public:
  explicit Row(const Statement& stmt) noexcept : stmt_(stmt.get()) {}

  std::int64_t i64(int column);
  std::uint64_t u64(int column);  // INTEGER >= 0
  std::uint32_t u32(int column);  // INTEGER in [0, 2^32)
  std::string text(int column);
  Bytes blob(int column);                          // a BLOB of any size
  Bytes blob(int column, std::size_t exact_size);  // a BLOB of exactly that size
  template <std::size_t N>
  std::array<std::uint8_t, N> fixed(int column) {
    std::array<std::uint8_t, N> out{};
    const Bytes b = blob(column, N);
    if (b.size() == N) std::copy(b.begin(), b.end(), out.begin());
    return out;
  }

  [[nodiscard]] bool ok() const noexcept { return problem_.empty(); }
  // "column <name>: <what is wrong>"; names and sizes only, never the stored value.
  [[nodiscard]] const std::string& problem() const noexcept { return problem_; }

 private:
  bool expect_type(int column, int type, const char* type_name);
  void fail(int column, const std::string& what);

  sqlite3_stmt* stmt_;
  std::string problem_;
};

class Connection {
 public:
  // Opens (creating) the file with extended result codes, WAL, synchronous=FULL, foreign keys,
  // secure_delete and a busy timeout. The error text is for the log: it names no user data.
  [[nodiscard]] static tl::expected<std::unique_ptr<Connection>, std::string> open(
      const std::filesystem::path& file, std::chrono::milliseconds busy_timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs statements that return no rows (pragmas, BEGIN, COMMIT, DDL); the SQLite result code.
  [[nodiscard]] int exec(const char* sql);
  // A cached prepared statement. REQUIRES: `sql` has static storage duration (the cache is keyed
  // by its address).
  [[nodiscard]] tl::expected<Statement, int> prepare(const char* sql);
  [[nodiscard]] std::int64_t changes() const;
  [[nodiscard]] std::string errmsg() const;
  [[nodiscard]] sqlite3* handle() const noexcept { return db_; }

 private:
  explicit Connection(sqlite3* db) noexcept : db_(db) {}
  sqlite3* db_;
  std::unordered_map<const char*, sqlite3_stmt*> cache_;
};

// A transaction that rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(Connection& conn) noexcept : conn_(conn) {}
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // BEGIN IMMEDIATE takes the write lock up front, so a transaction never has to upgrade a read
  // lock (which fails at once in WAL mode instead of waiting for the busy timeout).
  [[nodiscard]] int begin_immediate();
  [[nodiscard]] int begin_read();
  [[nodiscard]] int commit();

 private:
  Connection& conn_;
  bool open_ = false;
};

class Pool {
 public:
  explicit Pool(std::vector<std::unique_ptr<Connection>> connections);

  class Lease {
   public:
    Lease(Pool& pool, std::unique_ptr<Connection> conn) noexcept
        : pool_(pool), conn_(std::move(conn)) {}
    ~Lease() { pool_.release(std::move(conn_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Connection& operator*() const noexcept { return *conn_; }
    Connection* operator->() const noexcept { return conn_.get(); }

   private:
    Pool& pool_;
    std::unique_ptr<Connection> conn_;
  };

  // Blocks until a connection is free.
  [[nodiscard]] Lease acquire();

 private:
  void release(std::unique_ptr<Connection> conn);

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> free_;
};

}  // namespace sotto::store::sqlite
