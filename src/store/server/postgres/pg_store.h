// The PostgreSQL backend of the server store (docs/operations.md, docs/architecture.md section 7):
// the same interfaces (store.h), tables and behaviour as the SQLite backend (sqlite_store.h), on a
// PostgreSQL server named by a libpq connection string or URI (`store = "postgresql://..."`).
// docs/what-the-server-knows.md describes every table and column; the attachment blobs themselves
// stay in files under the data directory (blob_store.h).
//
// Ownership and threads: PostgresServerStore owns one connection for its message writer and a
// pool of connections for everything else (pool_connections of them). Messages are written by
// one writer thread with group commit, as in the SQLite backend: the sends waiting when the
// writer becomes free share one transaction (each in its own savepoint), and each completion runs
// (on the writer thread) only after COMMIT has returned, so once PostgreSQL has made the batch
// durable. Other writes are short transactions of their own on a pooled connection; rows that two
// writers could race on are locked (the account for device ids and blocks, the prekey handed out
// with SKIP LOCKED). Every method is thread-safe. The destructor waits for pending enqueues to be
// durable, runs their completions, then joins the writer.
//
// Unlike the SQLite backend it keeps no cache of accounts or queue lengths across transactions:
// other processes may write the same database. A lost connection fails the operation in progress
// with io (logged); the next operation on that connection reconnects.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <tl/expected.hpp>
#include <utility>
#include <vector>

#include "store/server/blob_store.h"
#include "store/server/sqlite_store.h"
#include "store/server/store.h"

namespace sotto::store {

// The SQLite backend's options mean the same here (busy_timeout excepted: PostgreSQL waits for
// row locks), plus what only this backend has.
struct PostgresOptions : SqliteOptions {
  // Apply the migrations the database lacks (`sotto-server migrate`, and the tests). Without it
  // open() refuses a database whose schema is not exactly kSchemaVersion, saying why.
  bool migrate = false;
};

class PostgresServerStore final : public ServerStore {
 public:
  // Connects (conninfo: "postgresql://user@host/db" or "host=... dbname=..."), checks or migrates
  // the schema, and starts the writer. io when PostgreSQL cannot be reached, the schema is older
  // than this code (and migrate is false) or newer; the reason goes to options.log.
  [[nodiscard]] static tl::expected<std::unique_ptr<PostgresServerStore>, Error> open(
      const std::string& conninfo, PostgresOptions options = {});

  ~PostgresServerStore() override;
  PostgresServerStore(const PostgresServerStore&) = delete;
  PostgresServerStore& operator=(const PostgresServerStore&) = delete;

  AccountStore& accounts() override;
  KeyStore& keys() override;
  MessageStore& messages() override;
  TokenStore& tokens() override;
  BlockStore& blocks() override;
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> schema() override;
  // The key transparency log's rows (tables kt_entries, kt_versions), shared by every server of
  // a cluster: each account change takes the log's advisory lock first, takes in what the others
  // appended, and commits its entry with the change.
  KtStore* kt() override;

  // Message transactions committed so far (sends / commits is the group commit factor).
  [[nodiscard]] std::uint64_t commit_count() const;

 private:
  class Impl;
  explicit PostgresServerStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The `attachments` rows of a BlobStore (blob_store.h) in a PostgreSQL database whose schema is
// current (io otherwise, the reason logged); the blob files stay under the data directory. One
// connection under a mutex, as the SQLite rows have.
[[nodiscard]] tl::expected<std::unique_ptr<BlobRows>, Error> open_postgres_blob_rows(
    const std::string& conninfo, std::function<void(std::string_view)> log = {});

// Whether a configured store names PostgreSQL (a postgresql:// or postgres:// URI) rather than
// the default SQLite file under the data directory.
[[nodiscard]] bool is_postgres_store(const std::string& store);

// The version a PostgreSQL database's schema has (0: none yet) and this code's; the error text
// says why the database cannot be asked. For `sotto-server migrate` and its messages.
struct PostgresSchemaStatus {
  int database = 0;
  int code = 0;
};
[[nodiscard]] tl::expected<PostgresSchemaStatus, std::string> postgres_schema_status(
    const std::string& conninfo);
// Applies the missing migrations; the error text is for the operator.
[[nodiscard]] tl::expected<PostgresSchemaStatus, std::string> postgres_migrate(
    const std::string& conninfo);

}  // namespace sotto::store
