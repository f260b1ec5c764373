#include "server/rate_limiter.h"

#include <algorithm>

namespace sotto::server {

RateLimiter::RateLimiter(std::uint32_t per_minute, std::uint32_t burst)
    : rate_per_second_(per_minute / 60.0), burst_(std::max<double>(1.0, burst)) {}

RateLimiter::RateLimiter(std::uint32_t count, std::chrono::seconds period, std::uint32_t burst)
    : rate_per_second_(period.count() > 0 ? count / static_cast<double>(period.count()) : 0.0),
      burst_(std::max<double>(1.0, burst)) {}

bool RateLimiter::allow(const std::string& key, std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{burst_, now});
  Bucket& b = it->second;
  if (!inserted) {
    const double elapsed = std::chrono::duration<double>(now - b.updated).count();
    b.tokens = std::min(burst_, b.tokens + elapsed * rate_per_second_);
    b.updated = now;
  }
  const bool ok = b.tokens >= 1.0;
  if (ok) b.tokens -= 1.0;
  if (++calls_since_sweep_ >= 4096) {
    calls_since_sweep_ = 0;
    std::erase_if(buckets_, [&](const auto& kv) {
      const double elapsed = std::chrono::duration<double>(now - kv.second.updated).count();
      return kv.second.tokens + elapsed * rate_per_second_ >= burst_;
    });
  }
  return ok;
}

}  // namespace sotto::server
