#include "client/util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "protocol/proto_codec.h"

namespace sotto::client {

void wipe(std::string& s) {
  if (!s.empty()) crypto::secure_wipe(s.data(), s.size());
  s.clear();
}

std::size_t padding_length(std::size_t unpadded) {
  // The padding field costs 1 (tag) + varint(len) + len bytes; find the smallest len that lands
  // on a block boundary.
  std::size_t target = (unpadded + 2 + kPaddingBlock - 1) / kPaddingBlock * kPaddingBlock;
  for (;;) {
    const std::size_t room = target - unpadded;  // >= 2
    // len + 1 + varint(len) == room; varint(len) is 1..3 for sizes that occur here.
    for (std::size_t v = 1; v <= 3; ++v) {
      if (room < 1 + v) continue;
      const std::size_t len = room - 1 - v;
      if (protocol::detail::varint_size(len) == v) return len;
    }
    target += kPaddingBlock;
  }
}

std::chrono::milliseconds Backoff::next(crypto::Rng& rng) {
  const unsigned shift = std::min(attempt_, 20u);
  ++attempt_;
  const auto full = std::min<std::int64_t>(cap_.count(), initial_.count() << shift);
  const std::int64_t half = full / 2;
  const std::int64_t jitter =
      half > 0 ? static_cast<std::int64_t>(rng.next_u32() % static_cast<std::uint32_t>(half + 1))
               : 0;
  return std::chrono::milliseconds(half + jitter);
}

AccountLock::~AccountLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

AccountLock& AccountLock::operator=(AccountLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    other.fd_ = -1;
  }
  return *this;
}

void AccountLock::remove_file() {
  if (fd_ < 0) return;
  std::error_code ec;
  std::filesystem::remove(path_, ec);  // while still holding the lock
  ::close(fd_);
  fd_ = -1;
}

Result<AccountLock> AccountLock::acquire(const std::filesystem::path& dir,
                                         const std::string& username,
                                         std::chrono::milliseconds wait) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  const auto path = dir / (username + ".lock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return tl::unexpected(
        make_error(ErrorCode::store, "cannot open the account lock file in the data directory"));
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return AccountLock(fd, path);
    if (errno != EWOULDBLOCK && errno != EINTR) {
      ::close(fd);
      return tl::unexpected(make_error(ErrorCode::store, "cannot lock the account"));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::close(fd);
      return tl::unexpected(make_error(
          ErrorCode::account_busy,
          "the account is in use by another process on this machine (a chat or a daemon?)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void remove_store_files(const std::filesystem::path& dir, const std::string& username) {
  std::error_code ec;
  const auto db = dir / (username + ".db");
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    std::filesystem::remove(db.string() + suffix, ec);
  }
  std::filesystem::remove(dir / (username + ".key"), ec);
}

}  // namespace sotto::client
