#include "crypto/rng.h"

#include <sodium.h>

#include <stdexcept>

namespace sotto::crypto {
namespace {

struct SodiumInit {
  SodiumInit() {
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
  }
};

}  // namespace

void ensure_sodium_initialized() {
  static const SodiumInit init;
  (void)init;
}

std::uint32_t Rng::next_u32() {
  std::uint8_t b[4];
  fill(b);
  return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
         static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}

void SystemRng::fill(std::span<std::uint8_t> out) {
  if (out.empty()) return;
  ensure_sodium_initialized();
  randombytes_buf(out.data(), out.size());
}

DeterministicRng::DeterministicRng(std::uint64_t seed) {
  ensure_sodium_initialized();
  for (std::size_t i = 0; i < 8; ++i) key_.data()[i] = static_cast<std::uint8_t>(seed >> (8 * i));
}

void DeterministicRng::fill(std::span<std::uint8_t> out) {
  if (out.empty()) return;
  // Each call takes a fresh ChaCha20 nonce, so outputs never overlap.
  std::uint8_t nonce[crypto_stream_chacha20_NONCEBYTES] = {};
  for (std::size_t i = 0; i < 8; ++i) nonce[i] = static_cast<std::uint8_t>(counter_ >> (8 * i));
  ++counter_;
  crypto_stream_chacha20(out.data(), out.size(), nonce, key_.data());
}

SystemRng& system_rng() {
  static SystemRng rng;
  return rng;
}

}  // namespace sotto::crypto
