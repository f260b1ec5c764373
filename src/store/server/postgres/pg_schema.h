// The PostgreSQL backend's schema and its migrations (docs/operations.md): the same tables and
// columns as the SQLite backend (docs/what-the-server-knows.md), plus what PostgreSQL needs that
// SQLite keeps implicitly: the schema version in the table `schema_version` (SQLite: the file
// header) and the upload order of one-time prekeys in `pre_keys.seq` (SQLite: the rowid).
// Internal to the backend; the schema lives in the connection's current schema (search_path), so
// one database can hold several Sotto schemas (the tests use one per test).
//
// Thread-safety: every function uses only the connection it is given.
#pragma once

#include <pqxx/pqxx>
#include <string>
#include <tl/expected.hpp>
#include <utility>
#include <vector>

namespace sotto::store::postgres {

// Versions match the SQLite backend's (sqlite_schema.h): a migration that adds a table there adds
// it here under the same number.
inline constexpr int kSchemaVersion = 8;

// The version the database's current schema has: 0 when no Sotto table is there yet.
[[nodiscard]] tl::expected<int, std::string> schema_version(pqxx::connection& conn);

// Brings the schema up to kSchemaVersion, in one transaction under an advisory lock (two nodes
// migrating at once: the second waits, then finds nothing to do). The error text (for the
// operator) says why: a failing statement, or a schema written by a newer server.
[[nodiscard]] tl::expected<void, std::string> migrate(pqxx::connection& conn);

// (table, column) for every table of the current schema, in table then column order.
[[nodiscard]] tl::expected<std::vector<std::pair<std::string, std::string>>, std::string>
list_schema(pqxx::connection& conn);

}  // namespace sotto::store::postgres
