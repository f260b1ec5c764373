// Small helpers of the client engine: hex and base32 text forms, content padding, reconnect
// backoff and the per-account process lock. Internal to src/client.
// Thread-compatible unless noted.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "crypto/encoding.h"
#include "crypto/rng.h"
#include "protocol/clock.h"
#include "sotto/client.h"

namespace sotto::client {

// Hex and base32 text forms live in crypto/encoding.h, for every layer.
using crypto::base32_decode;
using crypto::base32_encode;
using crypto::from_hex;
using crypto::to_hex;

// The bytes as a std::string (protobuf's bytes fields).
[[nodiscard]] inline std::string bytes_string(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
// Wipes a std::string that held plaintext or a key, then empties it.
void wipe(std::string& s);

// Content padding (content.proto): the serialized Content grows to a multiple of kPaddingBlock.
inline constexpr std::size_t kPaddingBlock = 160;
// The padding field's length for a Content of `unpadded` bytes, so that the padded message
// (field tag + length varint + padding) is a multiple of kPaddingBlock.
[[nodiscard]] std::size_t padding_length(std::size_t unpadded);

// Exponential backoff with "equal jitter": the n-th delay is uniform in [d/2, d] where
// d = min(cap, initial * 2^n). Thread-compatible.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds cap)
      : initial_(initial), cap_(cap) {}
  [[nodiscard]] std::chrono::milliseconds next(crypto::Rng& rng);
  void reset() { attempt_ = 0; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds cap_;
  unsigned attempt_ = 0;
};

// An exclusive advisory lock (flock) on DIR/<username>.lock, held for the object's lifetime, so
// that two processes never drive one account's ratchets at once.
class AccountLock {
 public:
  AccountLock() = default;
  ~AccountLock();
  AccountLock(AccountLock&& other) noexcept : fd_(other.fd_), path_(std::move(other.path_)) {
    other.fd_ = -1;
  }
  AccountLock& operator=(AccountLock&& other) noexcept;
  AccountLock(const AccountLock&) = delete;
  AccountLock& operator=(const AccountLock&) = delete;

  // Waits up to `wait` for the lock.
  [[nodiscard]] static Result<AccountLock> acquire(const std::filesystem::path& dir,
                                                   const std::string& username,
                                                   std::chrono::milliseconds wait);
  // Removes the lock file and releases the lock (an account that was never created leaves no
  // file behind).
  void remove_file();

 private:
  AccountLock(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::filesystem::path path_;
};

// Removes the files of an account store (after a registration or link that failed half-way).
void remove_store_files(const std::filesystem::path& dir, const std::string& username);

[[nodiscard]] inline Error make_error(ErrorCode code, std::string message) {
  return Error{code, std::move(message)};
}

}  // namespace sotto::client
