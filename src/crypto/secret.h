// Secret memory. Secret<N> holds a fixed-size secret inline and wipes it with sodium_memzero when
// destroyed or moved from; SecretBuffer is a heap buffer of fixed capacity (it never grows, so it
// never leaves an unwiped copy behind) wiped on release. Both compare only in constant time and
// print as "redacted". Neither is thread-safe; neither is copyable (use clone() when a copy is
// really wanted, so that copies of secrets are visible in the code).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>
#include <span>

#include "crypto/bytes.h"

namespace sotto::crypto {

void secure_wipe(void* p, std::size_t n) noexcept;
[[nodiscard]] bool constant_time_equal(ByteView a, ByteView b) noexcept;

template <std::size_t N>
class Secret {
 public:
  static constexpr std::size_t kSize = N;

  Secret() noexcept { bytes_.fill(0); }
  explicit Secret(ByteView from) noexcept {
    bytes_.fill(0);
    const std::size_t n = from.size() < N ? from.size() : N;
    for (std::size_t i = 0; i < n; ++i) bytes_[i] = from[i];
  }
  ~Secret() { secure_wipe(bytes_.data(), N); }

  Secret(Secret&& other) noexcept : bytes_(other.bytes_) { secure_wipe(other.bytes_.data(), N); }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      bytes_ = other.bytes_;
      secure_wipe(other.bytes_.data(), N);
    }
    return *this;
  }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;

  [[nodiscard]] Secret clone() const noexcept {
    Secret s;
    s.bytes_ = bytes_;
    return s;
  }

  std::uint8_t* data() noexcept { return bytes_.data(); }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  static constexpr std::size_t size() noexcept { return N; }
  std::span<std::uint8_t, N> span() noexcept { return std::span<std::uint8_t, N>(bytes_); }
  ByteView view() const noexcept { return {bytes_.data(), N}; }

  friend bool operator==(const Secret& a, const Secret& b) noexcept {
    return constant_time_equal(a.view(), b.view());
  }
  friend std::ostream& operator<<(std::ostream& os, const Secret&) { return os << "redacted"; }

 private:
  std::array<std::uint8_t, N> bytes_;
};

// A variable-size secret whose capacity is fixed at construction. resize() may only shrink or grow
// up to the capacity, so the bytes never move and never leave an unwiped copy.
class SecretBuffer {
 public:
  SecretBuffer() = default;
  explicit SecretBuffer(std::size_t capacity);
  explicit SecretBuffer(ByteView from);
  ~SecretBuffer();
  SecretBuffer(SecretBuffer&& other) noexcept;
  SecretBuffer& operator=(SecretBuffer&& other) noexcept;
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;

  [[nodiscard]] SecretBuffer clone() const;
  // REQUIRES: n <= capacity().
  void resize(std::size_t n);

  std::uint8_t* data() noexcept { return data_.get(); }
  const std::uint8_t* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size_ == 0; }
  ByteView view() const noexcept { return {data_.get(), size_}; }
  std::span<std::uint8_t> span() noexcept { return {data_.get(), size_}; }

  friend bool operator==(const SecretBuffer& a, const SecretBuffer& b) noexcept {
    return a.size_ == b.size_ && constant_time_equal(a.view(), b.view());
  }
  friend std::ostream& operator<<(std::ostream& os, const SecretBuffer&) { return os << "redacted"; }

 private:
  void release() noexcept;
  std::unique_ptr<std::uint8_t[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace sotto::crypto
