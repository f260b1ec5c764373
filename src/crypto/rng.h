// Randomness is injected everywhere above this layer (crypto::Rng&), so that protocol code is
// deterministic under test. SystemRng draws from libsodium's CSPRNG and is thread-safe.
// DeterministicRng expands a 32-byte seed with ChaCha20 and must be used only by tests, vector
// generators and benchmarks; it is not thread-safe.
#pragma once

#include <cstdint>
#include <span>

#include "crypto/secret.h"

namespace sotto::crypto {

class Rng {
 public:
  virtual ~Rng() = default;
  virtual void fill(std::span<std::uint8_t> out) = 0;

  std::uint32_t next_u32();
  template <std::size_t N>
  Secret<N> secret() {
    Secret<N> s;
    fill(s.span());
    return s;
  }
};

class SystemRng final : public Rng {
 public:
  void fill(std::span<std::uint8_t> out) override;
};

class DeterministicRng final : public Rng {
 public:
  explicit DeterministicRng(std::uint64_t seed);
  void fill(std::span<std::uint8_t> out) override;

 private:
  Secret<32> key_;
  std::uint64_t counter_ = 0;
};

// Initialises libsodium once; every wrapper that calls libsodium calls this first.
void ensure_sodium_initialized();

// The process-wide system generator. Apps pass it down; library code never calls it directly.
SystemRng& system_rng();

}  // namespace sotto::crypto
