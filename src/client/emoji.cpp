#include "client/emoji.h"

#include "client/content_codec.h"
#include "client/text.h"

namespace sotto::client {

namespace {

// Code points that are emoji by themselves (Unicode's Emoji property, by block; ranges that hold
// emoji among other symbols are taken whole, which errs on the side of accepting a symbol).
bool emoji_base(char32_t c) {
  return (c >= 0x1F000 && c <= 0x1FAFF && !(c >= 0x1F1E6 && c <= 0x1F1FF) &&
          !(c >= 0x1F3FB && c <= 0x1F3FF)) ||
         (c >= 0x2600 && c <= 0x27BF) || (c >= 0x2300 && c <= 0x23FF) ||
         (c >= 0x2B00 && c <= 0x2BFF) || (c >= 0x2190 && c <= 0x21FF) ||
         (c >= 0x25A0 && c <= 0x25FF) || c == 0x00A9 || c == 0x00AE || c == 0x203C || c == 0x2049 ||
         c == 0x2122 || c == 0x2139 || c == 0x3030 || c == 0x303D || c == 0x3297 || c == 0x3299 ||
         c == 0x2934 || c == 0x2935;
}
bool regional_indicator(char32_t c) {
  return c >= 0x1F1E6 && c <= 0x1F1FF;
}
bool skin_tone(char32_t c) {
  return c >= 0x1F3FB && c <= 0x1F3FF;
}
bool tag(char32_t c) {
  return c >= 0xE0020 && c <= 0xE007F;
}
constexpr char32_t kZwj = 0x200D, kVs16 = 0xFE0F, kVs15 = 0xFE0E, kKeycap = 0x20E3;

// One emoji from `pos` (a base and what may follow it); false when there is none there.
bool one_element(const std::u32string& s, std::size_t& pos) {
  if (pos >= s.size() || !emoji_base(s[pos])) return false;
  ++pos;
  if (pos < s.size() && (s[pos] == kVs16 || s[pos] == kVs15)) ++pos;
  if (pos < s.size() && skin_tone(s[pos])) ++pos;
  return true;
}

bool one_emoji(const std::u32string& s) {
  if (s.empty()) return false;
  // A keycap: 0-9, # or *, an optional U+FE0F, U+20E3.
  if ((s[0] >= U'0' && s[0] <= U'9') || s[0] == U'#' || s[0] == U'*') {
    return (s.size() == 2 && s[1] == kKeycap) ||
           (s.size() == 3 && s[1] == kVs16 && s[2] == kKeycap);
  }
  // A flag: two regional indicators.
  if (regional_indicator(s[0])) return s.size() == 2 && regional_indicator(s[1]);
  std::size_t pos = 0;
  if (!one_element(s, pos)) return false;
  // A subdivision flag: the black flag, tags, the cancel tag.
  if (pos < s.size() && tag(s[pos])) {
    while (pos < s.size() && tag(s[pos])) ++pos;
    return pos == s.size() && s.back() == 0xE007F;
  }
  while (pos < s.size()) {
    if (s[pos] != kZwj) return false;
    ++pos;
    if (!one_element(s, pos)) return false;
  }
  return true;
}

}  // namespace

std::string why_not_one_emoji(std::string_view text) {
  if (text.empty()) return "it is empty";
  if (text.size() > kMaxEmojiBytes) return "it is longer than one emoji (at most 64 bytes)";
  auto points = decode_utf8(text);
  if (!points) return "it is not valid UTF-8";
  if (!one_emoji(*points)) {
    bool ascii = true;
    for (char32_t c : *points) ascii = ascii && c < 0x80;
    return ascii ? "it is text, not an emoji" : "it is not one emoji";
  }
  return {};
}

}  // namespace sotto::client
