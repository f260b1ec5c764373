#include "store/server/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>
#include <system_error>
#include <vector>

#include "store/server/sqlite_db.h"

namespace sotto::store {

namespace {

constexpr char kHex[] = "0123456789abcdef";
// How much of the end of a blob being written stays in the page cache (see append()).
constexpr std::uint64_t kCacheBehind = 8u << 20;

std::string hex(const BlobId& id) {
  std::string out;
  out.reserve(id.size() * 2);
  for (std::uint8_t b : id) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// A file descriptor closed on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

bool write_all(int fd, ByteView data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

void fsync_dir(const std::filesystem::path& dir) {
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.fd >= 0) (void)::fsync(d.fd);
}

}  // namespace

class BlobStore::Db {
 public:
  explicit Db(std::unique_ptr<sqlite::Connection> conn) : conn_(std::move(conn)) {}
  std::mutex mu;
  sqlite::Connection& conn() { return *conn_; }

 private:
  std::unique_ptr<sqlite::Connection> conn_;
};

BlobStore::BlobStore(std::filesystem::path dir, std::unique_ptr<Db> db)
    : dir_(std::move(dir)), db_(std::move(db)) {}

BlobStore::~BlobStore() = default;

tl::expected<std::unique_ptr<BlobStore>, Error> BlobStore::open(
    const std::filesystem::path& data_dir) {
  auto conn = sqlite::Connection::open(data_dir / "sotto.db", std::chrono::seconds(5));
  if (!conn) return tl::unexpected(Error::io);
  // The table comes from the store's migration; without it this is not a migrated database.
  {
    auto st = (*conn)->prepare("SELECT 1 FROM sqlite_schema WHERE name = 'attachments'");
    if (!st || st->step() != SQLITE_ROW) return tl::unexpected(Error::io);
  }
  std::error_code ec;
  const auto dir = data_dir / "blobs";
  std::filesystem::create_directories(dir, ec);
  if (ec) return tl::unexpected(Error::io);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  return std::unique_ptr<BlobStore>(new BlobStore(dir, std::make_unique<Db>(std::move(*conn))));
}

tl::expected<std::unique_ptr<BlobStore>, Error> BlobStore::open(
    const std::filesystem::path& data_dir, std::unique_ptr<BlobRows> rows) {
  if (!rows) return tl::unexpected(Error::io);
  std::error_code ec;
  const auto dir = data_dir / "blobs";
  std::filesystem::create_directories(dir, ec);
  if (ec) return tl::unexpected(Error::io);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  auto store = std::unique_ptr<BlobStore>(new BlobStore(dir, nullptr));
  store->rows_ = std::move(rows);
  return store;
}

std::filesystem::path BlobStore::file_of(const BlobId& id) const {
  return dir_ / hex(id);
}

std::mutex& BlobStore::lock_of(const BlobId& id) {
  return stripes_[id[0] % stripes_.size()];
}

tl::expected<void, Error> BlobStore::create(const BlobId& id, AccountId account, std::uint64_t size,
                                            std::uint64_t expires_at) {
  std::lock_guard blob_lock(lock_of(id));
  const auto file = file_of(id);
  {
    Fd f(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (f.fd < 0) return tl::unexpected(errno == EEXIST ? Error::conflict : Error::io);
  }
  if (rows_) {
    auto inserted = rows_->insert(id, account, size, expires_at);
    if (!inserted) {
      std::error_code ec;
      std::filesystem::remove(file, ec);
    }
    return inserted;
  }
  std::lock_guard lock(db_->mu);
  auto st = db_->conn().prepare(
      "INSERT INTO attachments (id, account_id, size, complete, expires_at) VALUES (?1, ?2, ?3, 0, "
      "?4)");
  if (!st) return tl::unexpected(Error::io);
  st->bind(1, ByteView(id)).bind(2, account).bind_u64(3, size).bind_u64(4, expires_at);
  const int rc = st->step();
  if (rc != SQLITE_DONE) {
    std::error_code ec;
    std::filesystem::remove(file, ec);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) return tl::unexpected(Error::conflict);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return tl::unexpected(Error::not_found);  // no account
    return tl::unexpected(Error::io);
  }
  return {};
}

tl::expected<BlobRecord, Error> BlobStore::find(const BlobId& id) {
  BlobRecord r;
  if (rows_) {
    auto found = rows_->find(id);
    if (!found) return found;
    r = *found;
  } else {
    std::lock_guard lock(db_->mu);
    auto st = db_->conn().prepare(
        "SELECT account_id, size, complete, expires_at FROM attachments WHERE id = ?1");
    if (!st) return tl::unexpected(Error::io);
    st->bind(1, ByteView(id));
    const int rc = st->step();
    if (rc == SQLITE_DONE) return tl::unexpected(Error::not_found);
    if (rc != SQLITE_ROW) return tl::unexpected(Error::io);
    sqlite::Row row(*st);
    r.id = id;
    r.account = row.i64(0);
    r.size = row.u64(1);
    r.complete = row.i64(2) != 0;
    r.expires_at = row.u64(3);
    if (!row.ok()) return tl::unexpected(Error::io);
  }
  struct stat sb {};
  if (::stat(file_of(id).c_str(), &sb) != 0) return tl::unexpected(Error::not_found);
  r.received = static_cast<std::uint64_t>(sb.st_size);
  return r;
}

tl::expected<BlobRecord, Error> BlobStore::append(const BlobId& id, std::uint64_t offset,
                                                  ByteView data, std::uint64_t complete_expires_at,
                                                  bool commit_now) {
  std::lock_guard blob_lock(lock_of(id));
  auto r = find(id);
  if (!r) return r;
  if (r->complete || offset != r->received || offset + data.size() > r->size) {
    return tl::unexpected(Error::conflict);
  }
  const auto file = file_of(id);
  Fd f(::open(file.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  if (f.fd < 0) return tl::unexpected(Error::io);
  if (!write_all(f.fd, data)) {
    // A short write leaves the file where it was, so a retry appends at the right place.
    (void)::ftruncate(f.fd, static_cast<off_t>(offset));
    return tl::unexpected(Error::io);
  }
  r->received = offset + data.size();
  // Start writing this chunk back now, without waiting for it: the fsync at the end then finds
  // little left to write, so disk and network work at the same time instead of one after the
  // other.
  (void)::sync_file_range(f.fd, static_cast<off_t>(offset), static_cast<off_t>(data.size()),
                          SYNC_FILE_RANGE_WRITE);
  // And drop from the page cache what was written a few chunks ago (its writeback has had time
  // to finish; pages still dirty or under writeback are skipped by the kernel, not waited for).
  // A blob is written once and read later, maybe: caching all of it only grows the cache, and
  // each new page an upload takes costs more than one it gives back and takes again.
  if (r->received > kCacheBehind) {
    (void)::posix_fadvise(f.fd, 0, static_cast<off_t>(r->received - kCacheBehind),
                          POSIX_FADV_DONTNEED);
  }
  if (r->received == r->size && commit_now) {
    if (auto done = mark_complete(id, f.fd, complete_expires_at); !done) {
      return tl::unexpected(done.error());
    }
    r->complete = true;
    r->expires_at = complete_expires_at;
  }
  return r;
}

tl::expected<void, Error> BlobStore::mark_complete(const BlobId& id, int fd,
                                                   std::uint64_t expires_at) {
  if (::fsync(fd) != 0) return tl::unexpected(Error::io);
  fsync_dir(dir_);
  if (rows_) return rows_->complete(id, expires_at);
  std::lock_guard lock(db_->mu);
  auto st =
      db_->conn().prepare("UPDATE attachments SET complete = 1, expires_at = ?2 WHERE id = ?1");
  if (!st) return tl::unexpected(Error::io);
  st->bind(1, ByteView(id)).bind_u64(2, expires_at);
  if (st->step() != SQLITE_DONE) return tl::unexpected(Error::io);
  return {};
}

tl::expected<BlobRecord, Error> BlobStore::commit(const BlobId& id, std::uint64_t expires_at) {
  std::lock_guard blob_lock(lock_of(id));
  auto r = find(id);
  if (!r || r->complete) return r;
  if (r->received != r->size) return tl::unexpected(Error::conflict);
  Fd f(::open(file_of(id).c_str(), O_WRONLY | O_CLOEXEC));
  if (f.fd < 0) return tl::unexpected(Error::io);
  if (auto done = mark_complete(id, f.fd, expires_at); !done) return tl::unexpected(done.error());
  r->complete = true;
  r->expires_at = expires_at;
  return r;
}

tl::expected<void, Error> BlobStore::read_file(const BlobId& id, std::uint64_t offset,
                                               std::size_t n, std::string& out) {
  Fd f(::open(file_of(id).c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) return tl::unexpected(Error::not_found);
  out.resize(n);
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got =
        ::pread(f.fd, out.data() + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return tl::unexpected(Error::io);
    done += static_cast<std::size_t>(got);
  }
  return {};
}

tl::expected<Bytes, Error> BlobStore::read(const BlobId& id, std::uint64_t offset,
                                           std::size_t max) {
  auto r = find(id);
  if (!r) return tl::unexpected(r.error());
  if (!r->complete) return tl::unexpected(Error::not_found);
  if (offset > r->size) return tl::unexpected(Error::conflict);
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(max, r->size - offset));
  Fd f(::open(file_of(id).c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) return tl::unexpected(Error::not_found);
  Bytes out(n);
  std::size_t done = 0;
  while (done < n) {
    const ssize_t got =
        ::pread(f.fd, out.data() + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return tl::unexpected(Error::io);
    done += static_cast<std::size_t>(got);
  }
  return out;
}

tl::expected<std::uint64_t, Error> BlobStore::account_bytes(AccountId account) {
  if (rows_) return rows_->account_bytes(account);
  std::lock_guard lock(db_->mu);
  auto st =
      db_->conn().prepare("SELECT COALESCE(SUM(size), 0) FROM attachments WHERE account_id = ?1");
  if (!st) return tl::unexpected(Error::io);
  st->bind(1, account);
  if (st->step() != SQLITE_ROW) return tl::unexpected(Error::io);
  sqlite::Row row(*st);
  const std::uint64_t total = row.u64(0);
  if (!row.ok()) return tl::unexpected(Error::io);
  return total;
}

tl::expected<std::size_t, Error> BlobStore::expire(std::uint64_t now_seconds) {
  std::vector<BlobId> gone;
  std::set<std::string> kept;
  if (rows_) {
    auto swept = rows_->expire(now_seconds);
    if (!swept) return tl::unexpected(swept.error());
    gone = std::move(swept->first);
    for (const auto& id : swept->second) kept.insert(hex(id));
  } else {
    std::lock_guard lock(db_->mu);
    auto st = db_->conn().prepare("SELECT id FROM attachments WHERE expires_at <= ?1");
    if (!st) return tl::unexpected(Error::io);
    st->bind_u64(1, now_seconds);
    int rc = SQLITE_OK;
    while ((rc = st->step()) == SQLITE_ROW) {
      sqlite::Row row(*st);
      auto id = row.fixed<kBlobIdSize>(0);
      if (row.ok()) gone.push_back(id);
    }
    if (rc != SQLITE_DONE) return tl::unexpected(Error::io);
    auto del = db_->conn().prepare("DELETE FROM attachments WHERE expires_at <= ?1");
    if (!del) return tl::unexpected(Error::io);
    del->bind_u64(1, now_seconds);
    if (del->step() != SQLITE_DONE) return tl::unexpected(Error::io);
    auto all = db_->conn().prepare("SELECT id FROM attachments");
    if (!all) return tl::unexpected(Error::io);
    while ((rc = all->step()) == SQLITE_ROW) {
      sqlite::Row row(*all);
      auto id = row.fixed<kBlobIdSize>(0);
      if (row.ok()) kept.insert(hex(id));
    }
    if (rc != SQLITE_DONE) return tl::unexpected(Error::io);
  }
  std::error_code ec;
  for (const auto& id : gone) {
    std::lock_guard blob_lock(lock_of(id));
    std::filesystem::remove(file_of(id), ec);
  }
  // Files without a row: their blob's account was deleted (the row went with it), or the server
  // stopped between creating a file and its row. A file created since the listing above has its
  // row already (create() makes the row before it returns and holds the blob's lock meanwhile),
  // except during that window, so only files older than a minute are removed.
  const auto cutoff = std::filesystem::file_time_type::clock::now() - std::chrono::minutes(1);
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (kept.count(name) != 0) continue;
    std::error_code tec;
    const auto when = entry.last_write_time(tec);
    if (tec || when > cutoff) continue;
    std::filesystem::remove(entry.path(), tec);
  }
  return gone.size();
}

std::uint64_t BlobStore::bytes_on_disk() const {
  std::uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    std::error_code fec;
    const auto n = entry.file_size(fec);
    if (!fec) total += n;
  }
  return total;
}

}  // namespace sotto::store
