// The SQLite backend's schema and its migrations. The schema version lives in the database
// header (PRAGMA user_version), so versioning adds no table. Every table and column is described
// in docs/what-the-server-knows.md; a unit test checks the two against each other, so a migration
// that adds a column must add it to that document too.
#pragma once

#include <string>
#include <tl/expected.hpp>
#include <utility>
#include <vector>

#include "store/server/sqlite_db.h"

namespace sotto::store::sqlite {

inline constexpr int kSchemaVersion = 9;

// Brings the database up to kSchemaVersion in one transaction. The error text (for the log) says
// why: a failing statement, or a database written by a newer server.
[[nodiscard]] tl::expected<void, std::string> migrate(Connection& conn);

// (table, column) for every table except SQLite's own, in table then column order.
[[nodiscard]] tl::expected<std::vector<std::pair<std::string, std::string>>, std::string>
list_schema(Connection& conn);

}  // namespace sotto::store::sqlite
