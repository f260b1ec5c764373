// valid_utf8 and decode_utf8 (src/client/text.h) against RFC 3629's rules, including the
// boundary cases of Markus Kuhn's UTF-8 decoder stress test.
#include "client/text.h"

#include <gtest/gtest.h>

#include <string>

namespace sotto::client {
namespace {

std::string bytes(std::initializer_list<unsigned> list) {
  std::string s;
  for (unsigned b : list) s.push_back(static_cast<char>(b));
  return s;
}

TEST(Utf8, AcceptsEveryLengthAtItsBoundaries) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain ASCII, with\ttab"));
  EXPECT_TRUE(valid_utf8(bytes({0x00})));
  EXPECT_TRUE(valid_utf8(bytes({0x7F})));
  EXPECT_TRUE(valid_utf8(bytes({0xC2, 0x80})));              // U+0080
  EXPECT_TRUE(valid_utf8(bytes({0xDF, 0xBF})));              // U+07FF
  EXPECT_TRUE(valid_utf8(bytes({0xE0, 0xA0, 0x80})));        // U+0800
  EXPECT_TRUE(valid_utf8(bytes({0xED, 0x9F, 0xBF})));        // U+D7FF
  EXPECT_TRUE(valid_utf8(bytes({0xEE, 0x80, 0x80})));        // U+E000
  EXPECT_TRUE(valid_utf8(bytes({0xEF, 0xBF, 0xBF})));        // U+FFFF
  EXPECT_TRUE(valid_utf8(bytes({0xF0, 0x90, 0x80, 0x80})));  // U+10000
  EXPECT_TRUE(valid_utf8(bytes({0xF4, 0x8F, 0xBF, 0xBF})));  // U+10FFFF
  EXPECT_TRUE(valid_utf8("Grüße, 日本語, 🙂"));
}

TEST(Utf8, RefusesOverlongForms) {
  EXPECT_FALSE(valid_utf8(bytes({0xC0, 0xAF})));              // '/' in two bytes
  EXPECT_FALSE(valid_utf8(bytes({0xC1, 0xBF})));              // U+007F in two bytes
  EXPECT_FALSE(valid_utf8(bytes({0xC0, 0x80})));              // NUL in two bytes
  EXPECT_FALSE(valid_utf8(bytes({0xE0, 0x80, 0xAF})));        // '/' in three
  EXPECT_FALSE(valid_utf8(bytes({0xE0, 0x9F, 0xBF})));        // U+07FF in three
  EXPECT_FALSE(valid_utf8(bytes({0xF0, 0x80, 0x80, 0xAF})));  // '/' in four
  EXPECT_FALSE(valid_utf8(bytes({0xF0, 0x8F, 0xBF, 0xBF})));  // U+FFFF in four
}

TEST(Utf8, RefusesSurrogates) {
  EXPECT_FALSE(valid_utf8(bytes({0xED, 0xA0, 0x80})));  // U+D800
  EXPECT_FALSE(valid_utf8(bytes({0xED, 0xAD, 0xBF})));  // U+DB7F
  EXPECT_FALSE(valid_utf8(bytes({0xED, 0xBF, 0xBF})));  // U+DFFF
  // A CESU-8 pair for U+10000.
  EXPECT_FALSE(valid_utf8(bytes({0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80})));
}

TEST(Utf8, RefusesCodePointsAboveU10FFFF) {
  EXPECT_FALSE(valid_utf8(bytes({0xF4, 0x90, 0x80, 0x80})));  // U+110000
  EXPECT_FALSE(valid_utf8(bytes({0xF5, 0x80, 0x80, 0x80})));
  EXPECT_FALSE(valid_utf8(bytes({0xF7, 0xBF, 0xBF, 0xBF})));  // U+1FFFFF
  EXPECT_FALSE(valid_utf8(bytes({0xF8, 0x88, 0x80, 0x80, 0x80})));
  EXPECT_FALSE(valid_utf8(bytes({0xFC, 0x84, 0x80, 0x80, 0x80, 0x80})));
  EXPECT_FALSE(valid_utf8(bytes({0xFE})));
  EXPECT_FALSE(valid_utf8(bytes({0xFF})));
}

TEST(Utf8, RefusesTruncatedAndStraySequences) {
  EXPECT_FALSE(valid_utf8(bytes({0xC2})));
  EXPECT_FALSE(valid_utf8(bytes({0xE2, 0x82})));
  EXPECT_FALSE(valid_utf8(bytes({0xF0, 0x9F, 0x99})));
  EXPECT_FALSE(valid_utf8("ok" + bytes({0xF0, 0x9F, 0x99})));
  EXPECT_FALSE(valid_utf8(bytes({0xE2, 0x82, 'a'})));  // a continuation byte missing mid-text
  EXPECT_FALSE(valid_utf8(bytes({0x80})));             // continuation without a lead byte
  EXPECT_FALSE(valid_utf8(bytes({0xBF})));
  EXPECT_FALSE(valid_utf8(bytes({0xC2, 0x80, 0x80})));  // one continuation too many
  EXPECT_FALSE(valid_utf8(bytes({0xC2, 0xC0})));        // a lead byte where a continuation goes
}

TEST(Utf8, DecodesCodePointsOrNothing) {
  EXPECT_EQ(decode_utf8("a\xC3\xA9\xE2\x80\xAE\xF0\x9F\x99\x82"),
            std::u32string({U'a', U'\u00E9', U'\u202E', U'\U0001F642'}));
  EXPECT_EQ(decode_utf8(""), std::u32string());
  EXPECT_FALSE(decode_utf8(bytes({'a', 0xED, 0xA0, 0x80})).has_value());
}

// Every two-byte input: the decoder agrees with a direct reading of RFC 3629's table.
TEST(Utf8, AllTwoByteInputsFollowTheTable) {
  for (unsigned a = 0; a < 256; ++a) {
    for (unsigned b = 0; b < 256; ++b) {
      const bool ascii_pair = a < 0x80 && b < 0x80;
      const bool two_byte = a >= 0xC2 && a <= 0xDF && b >= 0x80 && b <= 0xBF;
      EXPECT_EQ(valid_utf8(bytes({a, b})), ascii_pair || two_byte) << a << " " << b;
    }
  }
}

}  // namespace
}  // namespace sotto::client
