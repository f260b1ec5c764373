// The server's attachment blob store (docs/attachments.md): ciphertext in one file per blob under
// DATA_DIR/blobs, written as it arrives (never a whole blob in memory) and fsynced when the last
// byte is in, with one row per blob in the server database's `attachments` table (uploader,
// announced size, complete or not, expiry; docs/what-the-server-knows.md). The bytes received so
// far are the file's length, so an append costs no database write.
//
// Ownership: a BlobStore owns its own SQLite connection to the server database (the schema is
// migrated by SqliteServerStore::open, which must have run first) and the files under blobs/.
// Thread-safe: rows go through one mutex-guarded connection; appends to one blob are serialised
// by a per-blob lock stripe, so two connections writing the same blob cannot interleave.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <tl/expected.hpp>
#include <utility>
#include <vector>

#include "crypto/bytes.h"
#include "store/server/store.h"

namespace sotto::store {

inline constexpr std::size_t kBlobIdSize = 16;
using BlobId = std::array<std::uint8_t, kBlobIdSize>;

struct BlobRecord {
  BlobId id{};
  AccountId account = 0;
  std::uint64_t size = 0;      // announced at creation: the blob is complete at this length
  std::uint64_t received = 0;  // the file's length now
  bool complete = false;
  std::uint64_t expires_at = 0;  // seconds since the epoch
};

// Where a BlobStore keeps its rows (the `attachments` table) when they are not in
// DATA_DIR/sotto.db: the PostgreSQL store's database (postgres/pg_store.h). The blob files stay
// under DATA_DIR/blobs either way. Thread-safe.
class BlobRows {
 public:
  virtual ~BlobRows() = default;
  // conflict when the id exists; not_found when the account does not.
  [[nodiscard]] virtual tl::expected<void, Error> insert(const BlobId& id, AccountId account,
                                                         std::uint64_t size,
                                                         std::uint64_t expires_at) = 0;
  // The row (`received` left 0); not_found when there is none.
  [[nodiscard]] virtual tl::expected<BlobRecord, Error> find(const BlobId& id) = 0;
  [[nodiscard]] virtual tl::expected<void, Error> complete(const BlobId& id,
                                                           std::uint64_t expires_at) = 0;
  [[nodiscard]] virtual tl::expected<std::uint64_t, Error> account_bytes(AccountId account) = 0;
  // Deletes the rows whose expiry is at or before `now_seconds`: their ids, then every id left.
  [[nodiscard]] virtual tl::expected<std::pair<std::vector<BlobId>, std::vector<BlobId>>, Error>
  expire(std::uint64_t now_seconds) = 0;
};

class BlobStore {
 public:
  // Opens DATA_DIR/sotto.db (already migrated) and creates DATA_DIR/blobs when missing.
  [[nodiscard]] static tl::expected<std::unique_ptr<BlobStore>, Error> open(
      const std::filesystem::path& data_dir);
  // The same with the rows in `rows` instead of DATA_DIR/sotto.db.
  [[nodiscard]] static tl::expected<std::unique_ptr<BlobStore>, Error> open(
      const std::filesystem::path& data_dir, std::unique_ptr<BlobRows> rows);
  ~BlobStore();
  BlobStore(const BlobStore&) = delete;
  BlobStore& operator=(const BlobStore&) = delete;

  // Reserves a blob: its row and an empty file. conflict when the id exists.
  [[nodiscard]] tl::expected<void, Error> create(const BlobId& id, AccountId account,
                                                 std::uint64_t size, std::uint64_t expires_at);
  // The blob's row and the bytes received (not_found when there is none).
  [[nodiscard]] tl::expected<BlobRecord, Error> find(const BlobId& id);
  // Appends `data` at `offset`. conflict (and nothing written) when `offset` is not the length
  // received so far or the blob is complete; the record after the write otherwise. The write
  // that reaches the announced size fsyncs the file, then marks the row complete with
  // `complete_expires_at`, unless `commit_now` is false: then the record says received == size
  // and not complete, and the caller must call commit() (off the thread that took the write:
  // the fsync of a large blob can take a second).
  [[nodiscard]] tl::expected<BlobRecord, Error> append(const BlobId& id, std::uint64_t offset,
                                                       ByteView data,
                                                       std::uint64_t complete_expires_at,
                                                       bool commit_now = true);
  // Makes a blob whose bytes are all in durable and marks it complete with `expires_at`: fsyncs
  // the file and the directory, then updates the row. Nothing to do when it is complete already;
  // conflict when bytes are missing.
  [[nodiscard]] tl::expected<BlobRecord, Error> commit(const BlobId& id, std::uint64_t expires_at);
  // Up to `max` bytes of a complete blob from `offset` (fewer at its end).
  [[nodiscard]] tl::expected<Bytes, Error> read(const BlobId& id, std::uint64_t offset,
                                                std::size_t max);
  // Exactly `n` bytes of the blob's file from `offset` into `out` (resized to n), for a caller
  // that has checked the blob's record (find()) itself: no database read. io when the file has
  // fewer bytes, not_found when it is gone.
  [[nodiscard]] tl::expected<void, Error> read_file(const BlobId& id, std::uint64_t offset,
                                                    std::size_t n, std::string& out);
  // Bytes reserved by the account's blobs (complete or not).
  [[nodiscard]] tl::expected<std::uint64_t, Error> account_bytes(AccountId account);
  // Deletes blobs whose expiry is at or before `now_seconds`, and files without a row (an
  // account deleted, a crash between a file and its row). Returns how many blobs went.
  [[nodiscard]] tl::expected<std::size_t, Error> expire(std::uint64_t now_seconds);
  // Every blob's bytes on disk together (for the operator and tests).
  [[nodiscard]] std::uint64_t bytes_on_disk() const;

  [[nodiscard]] const std::filesystem::path& directory() const { return dir_; }

 private:
  class Db;
  BlobStore(std::filesystem::path dir, std::unique_ptr<Db> db);
  std::filesystem::path file_of(const BlobId& id) const;
  std::mutex& lock_of(const BlobId& id);
  // fsync of the file (open as `fd`) and the directory, then the row marked complete.
  tl::expected<void, Error> mark_complete(const BlobId& id, int fd, std::uint64_t expires_at);

  std::filesystem::path dir_;
  std::unique_ptr<Db> db_;          // the SQLite rows, or
  std::unique_ptr<BlobRows> rows_;  // the rows elsewhere
  std::array<std::mutex, 64> stripes_;
};

}  // namespace sotto::store
