#include "net/batch.h"

#include <cstdint>
#include <cstring>

namespace sotto::net {
namespace {

// Protobuf keys (field number << 3 | wire type 2, length-delimited).
constexpr std::uint8_t kBatchKey = (4 << 3) | 2;  // Frame.batch
constexpr std::uint8_t kFrameKey = (1 << 3) | 2;  // Batch.frames
// A 32-bit length takes at most five varint bytes; longer encodings are refused.
constexpr std::size_t kMaxVarintBytes = 5;

std::size_t varint_size(std::size_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

std::uint8_t* put_varint(std::uint8_t* p, std::size_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<std::uint8_t>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<std::uint8_t>(v);
  return p;
}

// Reads a length varint at `pos`; false if truncated, over-long or not minimal.
bool get_length(ByteView in, std::size_t& pos, std::size_t& value) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < kMaxVarintBytes; ++i) {
    if (pos >= in.size()) return false;
    const std::uint8_t b = in[pos++];
    v |= static_cast<std::uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      if (b == 0 && i > 0) return false;  // padded encoding: not what any encoder writes
      if (v > UINT32_MAX) return false;
      value = static_cast<std::size_t>(v);
      return true;
    }
  }
  return false;
}

std::size_t inner_size(std::span<const Bytes> frames) {
  std::size_t n = 0;
  for (const auto& f : frames) n += 1 + varint_size(f.size()) + f.size();
  return n;
}

}  // namespace

std::size_t frames_for_next_write(std::span<const Bytes> queued) {
  const auto entry = [](const Bytes& f) { return 1 + varint_size(f.size()) + f.size(); };
  if (queued[0].empty()) return 1;
  std::size_t n = 1;
  std::size_t inner = entry(queued[0]);
  while (n < queued.size() && n < kMaxBatchFrames && !queued[n].empty()) {
    const std::size_t more = inner + entry(queued[n]);
    if (1 + varint_size(more) + more > kMaxBatchBytes) break;
    inner = more;
    ++n;
  }
  return n;
}

std::size_t batch_size(std::span<const Bytes> frames) {
  const std::size_t inner = inner_size(frames);
  return 1 + varint_size(inner) + inner;
}

void encode_batch(std::span<const Bytes> frames, Bytes& out) {
  const std::size_t inner = inner_size(frames);
  out.resize(1 + varint_size(inner) + inner);
  std::uint8_t* p = out.data();
  *p++ = kBatchKey;
  p = put_varint(p, inner);
  for (const auto& f : frames) {
    *p++ = kFrameKey;
    p = put_varint(p, f.size());
    if (!f.empty()) std::memcpy(p, f.data(), f.size());
    p += f.size();
  }
}

bool split_batch(ByteView message, std::vector<ByteView>& out) {
  if (message.empty() || message[0] != kBatchKey) return false;
  std::size_t pos = 1;
  std::size_t inner = 0;
  if (!get_length(message, pos, inner) || inner != message.size() - pos || inner == 0) return false;
  const std::size_t first = out.size();
  while (pos < message.size()) {
    std::size_t len = 0;
    if (out.size() - first == kMaxBatchFrames || message[pos++] != kFrameKey ||
        !get_length(message, pos, len) || len == 0 || len > message.size() - pos) {
      out.resize(first);
      return false;
    }
    out.push_back(message.subspan(pos, len));
    pos += len;
  }
  return true;
}

}  // namespace sotto::net
