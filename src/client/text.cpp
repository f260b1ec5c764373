#include "client/text.h"

#include <cstdint>

namespace sotto::client {
namespace {

bool continuation(std::uint8_t b) {
  return (b & 0xC0) == 0x80;
}

// Decodes the sequence at `pos` and moves past it; nullopt for an invalid one. The ranges of the
// second byte are RFC 3629's table (section 4): they exclude overlong forms (E0 80..9F, F0
// 80..8F), surrogates (ED A0..BF) and code points above U+10FFFF (F4 90..BF, F5..FF).
std::optional<char32_t> next_code_point(std::string_view text, std::size_t& pos) {
  const auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(text[pos + i]); };
  const std::uint8_t b0 = byte(0);
  if (b0 < 0x80) {
    pos += 1;
    return b0;
  }
  std::size_t length = 0;
  std::uint8_t low = 0x80, high = 0xBF;
  char32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {  // C0 and C1 only start overlong forms
    length = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) low = 0xA0;
    if (b0 == 0xED) high = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) low = 0x90;
    if (b0 == 0xF4) high = 0x8F;
  } else {
    return std::nullopt;
  }
  if (text.size() - pos < length) return std::nullopt;
  const std::uint8_t b1 = byte(1);
  if (b1 < low || b1 > high) return std::nullopt;
  cp = (cp << 6) | (b1 & 0x3F);
  for (std::size_t i = 2; i < length; ++i) {
    if (!continuation(byte(i))) return std::nullopt;
    cp = (cp << 6) | (byte(i) & 0x3F);
  }
  pos += length;
  return cp;
}

}  // namespace

bool valid_utf8(std::string_view text) noexcept {
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (!next_code_point(text, pos)) return false;
  }
  return true;
}

std::optional<std::u32string> decode_utf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto cp = next_code_point(text, pos);
    if (!cp) return std::nullopt;
    out.push_back(*cp);
  }
  return out;
}

}  // namespace sotto::client
