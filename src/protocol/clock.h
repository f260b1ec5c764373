// Time is injected into the protocol layer (it never reads a clock itself). Apps pass a system
// clock; tests pass a ManualClock.
#pragma once

#include <cstdint>

namespace sotto::protocol {

class Clock {
 public:
  virtual ~Clock() = default;
  // Seconds since the Unix epoch.
  virtual std::uint64_t now_seconds() const = 0;
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::uint64_t now = 1'700'000'000) : now_(now) {}
  std::uint64_t now_seconds() const override { return now_; }
  void advance(std::uint64_t seconds) { now_ += seconds; }
  void set(std::uint64_t now) { now_ = now; }

 private:
  std::uint64_t now_;
};

}  // namespace sotto::protocol
