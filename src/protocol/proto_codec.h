// A minimal protobuf wire-format reader and writer for the hot storage records (internal).
// SessionRecord is loaded and saved around every message on a real client, and libprotobuf's
// generic parser spends most of that time allocating a std::string per field; this codec reads
// fields as views into the input and writes straight into a pre-sized secret buffer. The bytes
// are exactly proto/storage.proto's format, so libprotobuf can still read them (a test checks).
// Strict: unknown fields, wrong wire types, over-long varints and truncation are errors.
#pragma once

#include <cstdint>
#include <cstring>

#include "crypto/bytes.h"

namespace sotto::protocol::detail {

enum WireType : std::uint32_t { kVarint = 0, kLengthDelimited = 2 };

inline std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

// Counts the bytes a message will take (first pass).
struct ProtoSizer {
  std::size_t size = 0;
  void varint(std::uint32_t field, std::uint64_t v) {
    size += varint_size(field << 3) + varint_size(v);
  }
  void bytes(std::uint32_t field, ByteView b) {
    size += varint_size(field << 3 | kLengthDelimited) + varint_size(b.size()) + b.size();
  }
  template <typename F>
  void message(std::uint32_t field, F&& body) {
    ProtoSizer inner;
    body(inner);
    size += varint_size(field << 3 | kLengthDelimited) + varint_size(inner.size) + inner.size;
  }
};

// Writes into memory sized by ProtoSizer (second pass). REQUIRES: enough room.
struct ProtoWriter {
  std::uint8_t* out;
  void put(std::uint64_t v) {
    while (v >= 0x80) {
      *out++ = static_cast<std::uint8_t>(v | 0x80);
      v >>= 7;
    }
    *out++ = static_cast<std::uint8_t>(v);
  }
  void varint(std::uint32_t field, std::uint64_t v) {
    put(field << 3);
    put(v);
  }
  void bytes(std::uint32_t field, ByteView b) {
    put(field << 3 | kLengthDelimited);
    put(b.size());
    if (!b.empty()) std::memcpy(out, b.data(), b.size());
    out += b.size();
  }
  template <typename F>
  void message(std::uint32_t field, F&& body) {
    ProtoSizer inner;
    body(inner);
    put(field << 3 | kLengthDelimited);
    put(inner.size);
    body(*this);
  }
};

class ProtoReader {
 public:
  explicit ProtoReader(ByteView in) : p_(in.data()), end_(in.data() + in.size()) {}

  // Reads the next tag; false at the end of input or on error (check ok()).
  bool next(std::uint32_t& field, std::uint32_t& wire) {
    if (p_ == end_ || !ok_) return false;
    std::uint64_t tag = 0;
    if (!read_varint(tag) || tag > 0xFFFFFFFFu || (tag >> 3) == 0) return fail();
    field = static_cast<std::uint32_t>(tag >> 3);
    wire = static_cast<std::uint32_t>(tag & 7);
    return true;
  }
  bool varint(std::uint32_t wire, std::uint64_t& v) {
    if (wire != kVarint) return fail();
    return read_varint(v) || fail();
  }
  bool u32(std::uint32_t wire, std::uint32_t& v) {
    std::uint64_t x = 0;
    if (!varint(wire, x) || x > 0xFFFFFFFFu) return fail();
    v = static_cast<std::uint32_t>(x);
    return true;
  }
  bool bytes(std::uint32_t wire, ByteView& v) {
    std::uint64_t n = 0;
    if (wire != kLengthDelimited || !read_varint(n) || n > static_cast<std::uint64_t>(end_ - p_)) {
      return fail();
    }
    v = ByteView(p_, static_cast<std::size_t>(n));
    p_ += n;
    return true;
  }
  bool fail() {
    ok_ = false;
    return false;
  }
  bool ok() const { return ok_; }

 private:
  bool read_varint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return false;
      const std::uint8_t b = *p_++;
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return shift < 63 || b <= 1;
    }
    return false;
  }

  const std::uint8_t* p_;
  const std::uint8_t* end_;
  bool ok_ = true;
};

}  // namespace sotto::protocol::detail
