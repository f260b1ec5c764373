// What the client engine takes from outside: the connector to the server, the random generator
// and the wall clock. The public API (include/sotto/client.h) builds the real ones; tests inject
// an in-process connector, a deterministic generator and a clock they move, so every flow runs
// the same way every time.
//
// The wall clock gives message timestamps, key ages, retention deadlines and the times shown to
// the user. Waiting (timeouts, backoff) uses std::chrono::steady_clock: it measures real time
// spent on real I/O, whatever the wall clock says.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "client/transport.h"
#include "crypto/rng.h"
#include "protocol/clock.h"

namespace sotto::client {

class WallClock {
 public:
  virtual ~WallClock() = default;
  // Milliseconds since the Unix epoch.
  [[nodiscard]] virtual std::uint64_t now_ms() const = 0;
};

class SystemWallClock final : public WallClock {
 public:
  std::uint64_t now_ms() const override;
};

// A clock that moves only when told to (tests). Thread-safe.
class ManualWallClock final : public WallClock {
 public:
  explicit ManualWallClock(std::uint64_t now_ms) : now_(now_ms) {}
  std::uint64_t now_ms() const override { return now_.load(); }
  void advance_ms(std::uint64_t ms) { now_ += ms; }

 private:
  std::atomic<std::uint64_t> now_;
};

// The protocol layer's clock (seconds) over a wall clock.
class ProtocolClock final : public protocol::Clock {
 public:
  explicit ProtocolClock(const WallClock& clock) : clock_(clock) {}
  std::uint64_t now_seconds() const override { return clock_.now_ms() / 1000; }

 private:
  const WallClock& clock_;
};

// Serialises a generator that is not thread-safe (DeterministicRng) for the engine's threads.
class LockedRng final : public crypto::Rng {
 public:
  explicit LockedRng(crypto::Rng& inner) : inner_(inner) {}
  void fill(std::span<std::uint8_t> out) override {
    std::lock_guard lock(mu_);
    inner_.fill(out);
  }

 private:
  std::mutex mu_;
  crypto::Rng& inner_;
};

struct Environment {
  std::shared_ptr<Connector> connector;
  // Outlives every engine built with it; need not be thread-safe (the engine locks around it).
  crypto::Rng* rng = nullptr;
  std::shared_ptr<const WallClock> clock;
};

// TLS connections, the system generator and the system clock.
[[nodiscard]] Environment system_environment();

}  // namespace sotto::client
