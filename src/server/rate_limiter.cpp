#include "server/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace sotto::server {

RateLimiter::RateLimiter(std::uint32_t per_minute, std::uint32_t burst)
    : rate_per_second_(per_minute / 60.0), burst_(std::max<double>(1.0, burst)) {}

RateLimiter::RateLimiter(std::uint32_t count, std::chrono::seconds period, std::uint32_t burst)
    : rate_per_second_(period.count() > 0 ? count / static_cast<double>(period.count()) : 0.0),
      burst_(std::max<double>(1.0, burst)) {}

RateLimiter::RateLimiter(Rate rate)
    : rate_per_second_(std::max(0.0, rate.per_second)), burst_(std::max(1.0, rate.burst)) {}

bool RateLimiter::allow(const std::string& key, std::chrono::steady_clock::time_point now) {
  return take(key, 1.0, now) == 0;
}

std::uint32_t RateLimiter::take(const std::string& key, double cost,
                                std::chrono::steady_clock::time_point now) {
  cost = std::clamp(cost, 0.0, burst_);
  std::lock_guard lock(mutex_);
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{burst_, now});
  Bucket& b = it->second;
  if (!inserted && now > b.updated) {
    const double elapsed = std::chrono::duration<double>(now - b.updated).count();
    b.tokens = std::min(burst_, b.tokens + elapsed * rate_per_second_);
    b.updated = now;
  }
  std::uint32_t wait_ms = 0;
  if (b.tokens >= cost) {
    b.tokens -= cost;
  } else if (rate_per_second_ <= 0) {
    wait_ms = UINT32_MAX;
  } else {
    const double ms = std::ceil((cost - b.tokens) / rate_per_second_ * 1000.0);
    wait_ms = static_cast<std::uint32_t>(std::clamp(ms, 1.0, 4.0e9));
  }
  if (++calls_since_sweep_ >= 4096) {
    calls_since_sweep_ = 0;
    std::erase_if(buckets_, [&](const auto& kv) {
      const double elapsed = std::chrono::duration<double>(now - kv.second.updated).count();
      return kv.second.tokens + elapsed * rate_per_second_ >= burst_;
    });
  }
  return wait_ms;
}

}  // namespace sotto::server
