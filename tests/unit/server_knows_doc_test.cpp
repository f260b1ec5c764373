// docs/what-the-server-knows.md is the answer to "what does the server store?": every table and
// column of the live schema must be documented there, and the document must list nothing the
// schema lacks, so the two cannot drift.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "store/server/sqlite_store.h"

namespace sotto::store {
namespace {

// Rows whose contents begin "(PostgreSQL only)" go to `postgres_only` instead (when given).
std::set<std::pair<std::string, std::string>> documented(
    const std::string& text,
    std::set<std::pair<std::string, std::string>>* postgres_only = nullptr) {
  std::set<std::pair<std::string, std::string>> out;
  // Headings are exactly "### table `name`" (no std::regex: GCC 12 warns inside it at -O1).
  const std::string prefix = "### table `";
  std::istringstream in(text);
  std::string line, table;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0 && line.size() > prefix.size() + 1 && line.back() == '`') {
      table = line.substr(prefix.size(), line.size() - prefix.size() - 1);
      continue;
    }
    if (line.rfind("#", 0) == 0) {
      table.clear();
      continue;
    }
    if (table.empty() || line.rfind("|", 0) != 0) continue;
    const auto end = line.find('|', 1);
    std::string cell = line.substr(1, end == std::string::npos ? std::string::npos : end - 1);
    cell.erase(0, cell.find_first_not_of(" `"));
    cell.erase(cell.find_last_not_of(" `") + 1);
    if (cell.empty() || cell == "column" || cell.find("---") == 0) continue;
    const bool pg_only = end != std::string::npos && line.find("| (PostgreSQL only)", end) == end;
    if (pg_only && postgres_only != nullptr) {
      postgres_only->emplace(table, cell);
    } else if (!pg_only) {
      out.emplace(table, cell);
    }
  }
  return out;
}

TEST(WhatTheServerKnows, DocumentMatchesTheLiveSchema) {
  std::ifstream in(std::string(SOTTO_SOURCE_DIR) + "/docs/what-the-server-knows.md");
  ASSERT_TRUE(in) << "docs/what-the-server-knows.md is missing";
  std::stringstream text;
  text << in.rdbuf();
  std::set<std::pair<std::string, std::string>> postgres_only;
  const auto doc = documented(text.str(), &postgres_only);
  ASSERT_GT(doc.size(), 10u) << "the document's table format changed; see this test's parser";
  // The PostgreSQL backend's schema is SQLite's plus exactly these (checked against its live
  // schema by PostgresMigrationTest.HasTheSqliteTablesAndColumnsPlusItsOwnTwo).
  EXPECT_EQ(postgres_only, (std::set<std::pair<std::string, std::string>>{
                               {"pre_keys", "seq"}, {"schema_version", "version"}}));

  char tmpl[] = "/tmp/sotto-schema-XXXXXX";
  const std::filesystem::path dir = mkdtemp(tmpl);
  std::set<std::pair<std::string, std::string>> live;
  {
    auto store = SqliteServerStore::open(dir / "schema.db");
    ASSERT_TRUE(store);
    for (const auto& tc : (*store)->schema()) live.insert(tc);
  }
  std::filesystem::remove_all(dir);

  for (const auto& [table, column] : live) {
    EXPECT_TRUE(doc.contains({table, column}))
        << table << "." << column << " is stored but not in docs/what-the-server-knows.md";
  }
  for (const auto& [table, column] : doc) {
    EXPECT_TRUE(live.contains({table, column}))
        << table << "." << column << " is documented but not in the schema";
  }
}

}  // namespace
}  // namespace sotto::store
