// A TransparencyStore in its own SQLite database file (WAL, synchronous=FULL): each append is one
// transaction, so a crash (kill -9, power loss) leaves every entry either whole or absent, and
// TransparencyLog::open rebuilds the same log from it. Tables are created if missing
// (docs/transparency.md, "Store"). A later server integration that must append in the account's
// own transaction moves these tables into the server's database as a numbered migration.
//
// Owns its connection. Thread-safe (one mutex around the connection).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <tl/expected.hpp>

#include "transparency/store.h"

struct sqlite3;

namespace sotto::transparency {

class SqliteTransparencyStore final : public TransparencyStore {
 public:
  // Opens or creates the database at path. Error::storage_failure if it cannot.
  [[nodiscard]] static tl::expected<std::unique_ptr<SqliteTransparencyStore>, Error> open(
      const std::string& path);
  ~SqliteTransparencyStore() override;
  SqliteTransparencyStore(const SqliteTransparencyStore&) = delete;
  SqliteTransparencyStore& operator=(const SqliteTransparencyStore&) = delete;

  [[nodiscard]] tl::expected<void, Error> append(const StoredEntry& e) override;
  // Error::storage_failure for a row of the wrong shape (a hash or opening not 32 bytes, a gap
  // in the entries, versions of an entry that does not exist).
  [[nodiscard]] tl::expected<void, Error> load(
      const std::function<void(const StoredEntry&)>& visit) const override;

 private:
  explicit SqliteTransparencyStore(sqlite3* db) : db_(db) {}
  mutable std::mutex mu_;
  sqlite3* db_;
};

}  // namespace sotto::transparency
