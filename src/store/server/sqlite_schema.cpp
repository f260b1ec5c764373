#include "store/server/sqlite_schema.h"

#include <array>
#include <string>

namespace sotto::store::sqlite {
namespace {

// kMigrations[i] takes the schema from version i to version i + 1. Never edit a released entry;
// append a new one. Tables are STRICT (a column holds only its declared type) and carry no CHECK
// on sizes: sizes are checked when rows are read back, so that a damaged row is an error and not
// a crash, whatever put it there.
constexpr std::array<const char*, kSchemaVersion> kMigrations = {
    // 0 -> 1
    R"sql(
CREATE TABLE accounts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL UNIQUE,
  identity_key BLOB NOT NULL,
  created_day INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
  account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  device_id INTEGER NOT NULL,
  registration_id INTEGER NOT NULL,
  auth_key BLOB NOT NULL,
  created_day INTEGER NOT NULL,
  PRIMARY KEY (account_id, device_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE signed_pre_keys (
  account_id INTEGER NOT NULL,
  device_id INTEGER NOT NULL,
  key_id INTEGER NOT NULL,
  public_key BLOB NOT NULL,
  signature BLOB NOT NULL,
  PRIMARY KEY (account_id, device_id),
  FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- A rowid table: the hidden rowid orders keys by upload, so the oldest is handed out first and
-- dropped first when a device is over its limit.
CREATE TABLE pre_keys (
  account_id INTEGER NOT NULL,
  device_id INTEGER NOT NULL,
  key_id INTEGER NOT NULL,
  public_key BLOB NOT NULL,
  UNIQUE (account_id, device_id, key_id),
  FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;

-- AUTOINCREMENT: seq is never reused, even after the newest rows are deleted, so a device's
-- queue order (and paging by `after`) is the order of arrival.
CREATE TABLE messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  envelope_id BLOB NOT NULL UNIQUE,
  account_id INTEGER NOT NULL,
  device_id INTEGER NOT NULL,
  source TEXT NOT NULL,
  source_device INTEGER NOT NULL,
  type INTEGER NOT NULL,
  content BLOB NOT NULL,
  client_timestamp INTEGER NOT NULL,
  server_timestamp INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  FOREIGN KEY (account_id, device_id) REFERENCES devices (account_id, device_id) ON DELETE CASCADE
) STRICT;
-- (account_id, device_id, rowid = seq): one device's queue in order, and its count, from the index.
CREATE INDEX messages_by_device ON messages (account_id, device_id);
CREATE INDEX messages_by_expiry ON messages (expires_at);

CREATE TABLE send_dedup (
  key_hash BLOB PRIMARY KEY,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX send_dedup_by_expiry ON send_dedup (expires_at);

CREATE TABLE invites (
  code_hash BLOB PRIMARY KEY,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE link_tokens (
  token_hash BLOB PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
)sql",
    // 1 -> 2
    R"sql(

-- send_dedup ordered by the time at the head of the client's message id: keyed by the hash alone,
-- every send dirtied a random page of the table (and the WAL and the checkpoint wrote it out),
-- which bounded a busy server's sends per second. Entries of version 1 cannot be placed by time;
-- they are dropped, so a send retried across this upgrade may be stored twice (the recipient's
-- client drops the copy: same message, new envelope).
DROP TABLE send_dedup;
CREATE TABLE send_dedup (
  id_time INTEGER NOT NULL,
  key_hash BLOB NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (id_time, key_hash)
) STRICT, WITHOUT ROWID;
CREATE INDEX send_dedup_by_expiry ON send_dedup (expires_at);

)sql",
    // 2 -> 3
    R"sql(

-- A device's name (ciphertext the server cannot read) and an account's recovery key. Rows of
-- version 2 get empty values: their devices have no name and their accounts no recovery key.
ALTER TABLE devices ADD COLUMN name BLOB NOT NULL DEFAULT x'';
ALTER TABLE accounts ADD COLUMN recovery_key BLOB NOT NULL DEFAULT x'';

)sql",
    // 3 -> 4
    R"sql(

-- Accounts an account has blocked: messages from blocked_id to any device of account_id are not
-- stored. Nothing else (no time, no count of dropped messages) is kept.
CREATE TABLE blocks (
  account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  blocked_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  PRIMARY KEY (account_id, blocked_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX blocks_by_blocked ON blocks (blocked_id);

)sql",
    // 4 -> 5
    R"sql(

-- Bodies shared by several envelopes (a multi-recipient send, service.proto MultiSendRequest):
-- stored once however many devices receive them. `refs` counts the envelopes that point at the
-- body; the trigger below counts every deletion of one (acknowledgement, expiry, a device's
-- removal with its queue), and the store deletes a body, charging its bytes back, once none is
-- left (the partial index finds those at no cost).
CREATE TABLE shared_bodies (
  id INTEGER PRIMARY KEY,
  content BLOB NOT NULL,
  refs INTEGER NOT NULL
) STRICT;
CREATE INDEX shared_bodies_unreferenced ON shared_bodies (refs) WHERE refs <= 0;

-- 0: the envelope's own `content`; otherwise its content is empty and its body is that row.
-- Rows of version 4 get 0.
ALTER TABLE messages ADD COLUMN body_id INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER messages_release_body AFTER DELETE ON messages WHEN old.body_id != 0
BEGIN
  UPDATE shared_bodies SET refs = refs - 1 WHERE id = old.body_id;
END;

)sql",
    // 5 -> 6: attachments
    R"sql(

-- Attachment blobs (docs/attachments.md): ciphertext the server cannot read, in one file per blob
-- under the data directory (blobs/<hex id>). A row is the upload's reservation: its uploader (for
-- the quota), the size announced, whether every byte arrived, and when it is deleted. The bytes
-- received so far are the file's length; nothing records who downloads a blob.
CREATE TABLE IF NOT EXISTS attachments (
  id BLOB PRIMARY KEY,
  account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  size INTEGER NOT NULL,
  complete INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attachments_by_account ON attachments (account_id);
CREATE INDEX IF NOT EXISTS attachments_by_expiry ON attachments (expires_at);

)sql",
    // 6 -> 7
    R"sql(
-- The devices a multi-recipient send left out because their queue was full (docs/delivery.md,
-- "A full queue in a group send"), so that a retry of the send is answered with them as the
-- original was. Empty for every other send; rows of version 6 get empty.
ALTER TABLE send_dedup ADD COLUMN refused BLOB NOT NULL DEFAULT x'';
)sql",
    // 7 -> 8
    R"sql(
-- The key transparency log (docs/transparency.md, "Store"): each entry, and the label versions it
-- added. Written in the transaction of the account change it logs, so that neither goes without
-- the other.
CREATE TABLE kt_entries (
  idx INTEGER PRIMARY KEY,
  timestamp_ms INTEGER NOT NULL,
  prefix_root BLOB NOT NULL
) STRICT;
CREATE TABLE kt_versions (
  entry INTEGER NOT NULL REFERENCES kt_entries (idx),
  seq INTEGER NOT NULL,
  label_index BLOB NOT NULL,
  version INTEGER NOT NULL,
  commitment BLOB NOT NULL,
  opening BLOB NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY (entry, seq)
) STRICT, WITHOUT ROWID;
)sql",
    // 8 -> 9
    R"sql(
-- The newest co-signature of the key transparency log by each auditor the operator configured
-- (docs/transparency.md, "Auditing"): the signed tree head it co-signed, when, and its signature.
CREATE TABLE kt_cosignatures (
  auditor_key BLOB PRIMARY KEY,
  tree_head BLOB NOT NULL,
  time_ms INTEGER NOT NULL,
  signature BLOB NOT NULL
) STRICT, WITHOUT ROWID;
)sql",
};

std::string failed(const char* what, const Connection& conn) {
  return std::string(what) + ": " + conn.errmsg();
}

}  // namespace

tl::expected<void, std::string> migrate(Connection& conn) {
  Transaction txn(conn);
  if (txn.begin_immediate() != SQLITE_OK) return tl::unexpected(failed("migrate: begin", conn));

  int version = 0;
  {
    auto st = conn.prepare("PRAGMA user_version");
    if (!st || st->step() != SQLITE_ROW)
      return tl::unexpected(failed("migrate: user_version", conn));
    version = sqlite3_column_int(st->get(), 0);
  }
  if (version > kSchemaVersion) {
    return tl::unexpected("migrate: the database has schema version " + std::to_string(version) +
                          ", newer than this server's " + std::to_string(kSchemaVersion));
  }
  if (version < 0) return tl::unexpected(std::string("migrate: negative schema version"));
  if (version == kSchemaVersion) return {};

  for (int v = version; v < kSchemaVersion; ++v) {
    if (conn.exec(kMigrations[static_cast<std::size_t>(v)]) != SQLITE_OK) {
      return tl::unexpected(failed(("migrate to version " + std::to_string(v + 1)).c_str(), conn));
    }
  }
  // PRAGMA takes no bound parameters; the value is our own constant.
  const std::string set_version = "PRAGMA user_version = " + std::to_string(kSchemaVersion);
  if (conn.exec(set_version.c_str()) != SQLITE_OK)
    return tl::unexpected(failed("migrate: set version", conn));
  if (txn.commit() != SQLITE_OK) return tl::unexpected(failed("migrate: commit", conn));
  return {};
}

tl::expected<std::vector<std::pair<std::string, std::string>>, std::string> list_schema(
    Connection& conn) {
  Transaction txn(conn);
  if (txn.begin_read() != SQLITE_OK) return tl::unexpected(failed("schema: begin", conn));

  std::vector<std::string> tables;
  {
    auto st = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE "
        "'\\' "
        "ORDER BY name");
    if (!st) return tl::unexpected(failed("schema: tables", conn));
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      std::string name = row.text(0);
      if (!row.ok()) return tl::unexpected("schema: " + row.problem());
      tables.push_back(std::move(name));
    }
    if (rc != SQLITE_DONE) return tl::unexpected(failed("schema: tables", conn));
  }

  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& table : tables) {
    auto st = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid");
    if (!st) return tl::unexpected(failed("schema: columns", conn));
    st->bind(1, std::string_view(table));
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      Row row(*st);
      std::string column = row.text(0);
      if (!row.ok()) return tl::unexpected("schema: " + row.problem());
      out.emplace_back(table, std::move(column));
    }
    if (rc != SQLITE_DONE) return tl::unexpected(failed("schema: columns", conn));
  }
  if (txn.commit() != SQLITE_OK) return tl::unexpected(failed("schema: commit", conn));
  return out;
}

}  // namespace sotto::store::sqlite
