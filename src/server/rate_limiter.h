// Token buckets keyed by a string (a source address, an account), refilled continuously.
// Thread-safe; memory is bounded by evicting idle full buckets.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace sotto::server {

class RateLimiter {
 public:
  RateLimiter(std::uint32_t per_minute, std::uint32_t burst);
  // `count` tokens every `period`, at most `burst` saved up (limits slower than one a minute).
  RateLimiter(std::uint32_t count, std::chrono::seconds period, std::uint32_t burst);
  // A rate in tokens per second (for weighted buckets: bytes, ids).
  struct Rate {
    double per_second;
    double burst;
  };
  explicit RateLimiter(Rate rate);
  // Takes one token for `key`; false when the bucket is empty.
  bool allow(const std::string& key,
             std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  // Takes `cost` tokens for `key` (a cost above the burst is taken as the whole burst, so that
  // one large request can pass a full bucket). Returns 0 when taken; otherwise nothing is taken
  // and the result is how many milliseconds until the bucket holds enough (at least 1).
  std::uint32_t take(const std::string& key, double cost,
                     std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point updated;
  };
  double rate_per_second_;
  double burst_;
  std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::size_t calls_since_sweep_ = 0;
};

}  // namespace sotto::server
