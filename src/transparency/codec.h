// Big-endian writer and bounds-checked reader for the transparency formats (docs/transparency.md,
// "Formats"). The reader never reads past its input and reports any shortfall through ok();
// parsers call done() to refuse trailing bytes. Not thread-safe; each instance is one parse.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "crypto/bytes.h"

namespace sotto::transparency::codec {

inline void put_u8(Bytes& out, std::uint8_t v) {
  out.push_back(v);
}
inline void put_u16(Bytes& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}
inline void put_u32(Bytes& out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
inline void put_u64(Bytes& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}
inline void put(Bytes& out, ByteView v) {
  out.insert(out.end(), v.begin(), v.end());
}

class Reader {
 public:
  explicit Reader(ByteView in) : in_(in) {}

  std::uint8_t u8() { return static_cast<std::uint8_t>(uint(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(uint(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(uint(4)); }
  std::uint64_t u64() { return uint(8); }
  template <std::size_t N>
  std::array<std::uint8_t, N> fixed() {
    std::array<std::uint8_t, N> out{};
    ByteView v = bytes(N);
    if (ok_) std::memcpy(out.data(), v.data(), N);
    return out;
  }
  ByteView bytes(std::size_t n) {
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    ByteView v = in_.subspan(pos_, n);
    pos_ += n;
    return v;
  }
  void fail() { ok_ = false; }
  bool ok() const { return ok_; }
  // Everything read, nothing left over, nothing short.
  bool done() const { return ok_ && pos_ == in_.size(); }

 private:
  std::uint64_t uint(std::size_t n) {
    ByteView v = bytes(n);
    std::uint64_t out = 0;
    for (std::uint8_t b : v) out = (out << 8) | b;
    return out;
  }

  ByteView in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace sotto::transparency::codec
