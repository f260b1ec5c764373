// The SQLite backend of the server store (docs/architecture.md section 7): one database file in WAL
// mode under the server's data directory. docs/what-the-server-knows.md describes every table and
// column it creates.
//
// Ownership and threads: SqliteServerStore owns one write connection and a small pool of read
// connections (WAL: readers never wait for the writer). Every write goes through the write
// connection under one mutex, so writers in this process queue on the mutex rather than on
// SQLite's busy handler. Messages are written by one writer thread with group commit: the sends
// waiting when the writer becomes free share one transaction and one fsync, and each completion
// runs (on the writer thread) only after that transaction is durable. Every method is
// thread-safe. The destructor waits for pending enqueues to be durable, runs their completions,
// then joins the writer. REQUIRES: a completion never calls flush() (it would wait for itself).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <utility>
#include <vector>

#include "store/server/store.h"

namespace sotto::store {

struct SqliteOptions {
  // A send is refused (queue_full) when it would take any recipient device's stored envelopes
  // (expired ones included until expire() runs) above this.
  std::uint32_t max_queue_per_device = 10000;
  // ...or its ciphertext bytes above this (0: no limit).
  std::uint64_t max_queue_bytes_per_device = 0;
  // A send is refused (queue_share_full) when it would take what its sender (by source username,
  // for envelopes whose source_account is another account) holds of a recipient device's queue
  // above either (0: no limit). One sender then cannot fill a device's queue for everyone else.
  std::uint32_t max_queue_per_sender = 0;
  std::uint64_t max_queue_bytes_per_sender = 0;
  // add_pre_keys keeps the newest this many one-time prekeys per device and drops older ones.
  std::uint32_t max_pre_keys_per_device = 1000;
  // An envelope's expires_at is capped at (now + this); 0 in QueuedEnvelope means exactly that.
  std::uint64_t message_ttl_seconds = 30ull * 24 * 60 * 60;
  // How long a send's dedup key turns a retry into a no-op.
  std::uint64_t dedup_ttl_seconds = 24ull * 60 * 60;
  // Group commit: at most this many sends per transaction...
  std::size_t group_commit_max_batch = 512;
  // ...and the writer waits at most this long for more sends to arrive once it has one (0: commit
  // whatever is queued at once; sends arriving during an fsync are batched either way).
  std::chrono::microseconds group_commit_max_delay = std::chrono::milliseconds(2);
  // Read connections (the write connection comes in addition).
  std::size_t pool_connections = 4;
  // How long a connection waits for another process's write lock before failing with io.
  std::chrono::milliseconds busy_timeout = std::chrono::seconds(5);
  // Wall clock in milliseconds since the epoch; empty means the system clock. Used for
  // server_timestamp, expires_at, created_day and for hiding expired envelopes from load().
  // Called from any thread.
  std::function<std::uint64_t()> now_ms;
  // Receives one line per database failure or corrupt row (never user data or keys); empty means
  // standard error. Called from any thread.
  std::function<void(std::string_view)> log;
};

class SqliteServerStore final : public ServerStore {
 public:
  // Opens (creating when missing) the database and migrates its schema to the current version.
  // io when the file cannot be opened, is not a database, or has a newer schema than this code.
  //
  // Behaviour beyond store.h, all of it checked by the store test suite (which any other
  // backend must pass too): created_day comes from the store's clock (DeviceRecord::created_day is
  // ignored); server_timestamp 0 means "now"; a duplicate envelope id fails its send with conflict
  // and a recipient device that does not exist with not_found; load() skips expired envelopes and
  // returns not_found when `after` is not (any more) in the device's queue; take_pre_key hands out
  // the oldest key first. Keys of the wrong size are refused with io and never stored.
  [[nodiscard]] static tl::expected<std::unique_ptr<SqliteServerStore>, Error> open(
      const std::filesystem::path& file, SqliteOptions options = {});

  ~SqliteServerStore() override;
  SqliteServerStore(const SqliteServerStore&) = delete;
  SqliteServerStore& operator=(const SqliteServerStore&) = delete;

  AccountStore& accounts() override;
  KeyStore& keys() override;
  MessageStore& messages() override;
  TokenStore& tokens() override;
  BlockStore& blocks() override;
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> schema() override;
  // The transparency log's tables (kt_entries, kt_versions) in this same database, so that an
  // account change and its log entry share one transaction.
  KtStore* kt() override;

  // Message transactions committed so far (for tests and metrics: sends / commits is the group
  // commit factor).
  [[nodiscard]] std::uint64_t commit_count() const;

 private:
  class Impl;
  explicit SqliteServerStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sotto::store
