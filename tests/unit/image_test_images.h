// Test images made in memory: PNGs written chunk by chunk with zlib (so that tests can also make
// them wrong on purpose: a false size, a bad CRC, a cut stream), and JPEGs from the client's own
// encoder (client/image_codec.h). Shared by the thumbnail tests and the fuzz seed writer.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client/image_codec.h"

namespace sotto::test {

using Pixel = std::function<std::uint32_t(std::uint32_t x, std::uint32_t y)>;  // 0xRRGGBBAA

inline void put32(std::string& s, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}

inline std::string png_chunk(const std::string& type, const std::string& data,
                             bool good_crc = true) {
  std::string out;
  put32(out, static_cast<std::uint32_t>(data.size()));
  const std::string body = type + data;
  out += body;
  auto crc = static_cast<std::uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
  put32(out, good_crc ? crc : ~crc);
  return out;
}

inline std::string png_ihdr(std::uint32_t w, std::uint32_t h, int depth, int color, int interlace) {
  std::string ihdr;
  put32(ihdr, w);
  put32(ihdr, h);
  ihdr += static_cast<char>(depth);
  ihdr += static_cast<char>(color);
  ihdr += '\0';  // compression
  ihdr += '\0';  // filter
  ihdr += static_cast<char>(interlace);
  return png_chunk("IHDR", ihdr);
}

inline std::string zlib_compress(const std::string& raw) {
  uLongf n = compressBound(static_cast<uLong>(raw.size()));
  std::string out(n, '\0');
  compress2(reinterpret_cast<Bytef*>(out.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
            static_cast<uLong>(raw.size()), 6);
  out.resize(n);
  return out;
}

// One pixel's bytes for the colour types used here: 0 gray, 2 RGB, 6 RGBA (8 or 16 bits), and
// 3 palette (8 bits, the index is the red value).
inline void put_pixel(std::string& row, std::uint32_t p, int depth, int color) {
  const auto r = static_cast<std::uint8_t>(p >> 24), g = static_cast<std::uint8_t>(p >> 16),
             b = static_cast<std::uint8_t>(p >> 8), a = static_cast<std::uint8_t>(p);
  std::vector<std::uint8_t> samples;
  if (color == 0) samples = {r};
  if (color == 2) samples = {r, g, b};
  if (color == 6) samples = {r, g, b, a};
  if (color == 3) samples = {r};
  for (auto s : samples) {
    row += static_cast<char>(s);
    if (depth == 16) row += static_cast<char>(s);
  }
}

// A PNG of w x h pixels; interlaced with Adam7 when asked. Palette images (color 3) get a
// 256-entry gray palette whose entry 0 is fully transparent.
inline std::string make_png(std::uint32_t w, std::uint32_t h, const Pixel& pixel, int color = 2,
                            int depth = 8, bool interlace = false) {
  std::string out("\x89PNG\r\n\x1a\n", 8);
  out += png_ihdr(w, h, depth, color, interlace ? 1 : 0);
  if (color == 3) {
    std::string plte, trns(1, '\0');
    for (int i = 0; i < 256; ++i) plte += std::string(3, static_cast<char>(i));
    out += png_chunk("PLTE", plte);
    out += png_chunk("tRNS", trns);
  }
  std::string raw;
  const auto rows = [&](std::uint32_t x0, std::uint32_t y0, std::uint32_t dx, std::uint32_t dy) {
    if (x0 >= w || y0 >= h) return;
    for (std::uint32_t y = y0; y < h; y += dy) {
      raw += '\0';  // filter: none
      for (std::uint32_t x = x0; x < w; x += dx) put_pixel(raw, pixel(x, y), depth, color);
    }
  };
  if (!interlace) {
    rows(0, 0, 1, 1);
  } else {
    static constexpr std::uint32_t kPass[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8},
                                                  {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2},
                                                  {0, 1, 1, 2}};
    for (const auto& p : kPass) rows(p[0], p[1], p[2], p[3]);
  }
  out += png_chunk("IDAT", zlib_compress(raw));
  out += png_chunk("IEND", "");
  return out;
}

// A JPEG of w x h pixels from the client's encoder.
inline std::string make_jpeg(std::uint32_t w, std::uint32_t h, const Pixel& pixel,
                             bool progressive = false, int quality = 90) {
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(w) * h * 3);
  for (std::uint32_t y = 0; y < h; ++y) {
    for (std::uint32_t x = 0; x < w; ++x) {
      const std::uint32_t p = pixel(x, y);
      std::uint8_t* o = &rgb[(static_cast<std::size_t>(y) * w + x) * 3];
      o[0] = static_cast<std::uint8_t>(p >> 24);
      o[1] = static_cast<std::uint8_t>(p >> 16);
      o[2] = static_cast<std::uint8_t>(p >> 8);
    }
  }
  std::string out(rgb.size() + 65536, '\0');
  std::size_t n = 0;
  if (sotto_image_encode_jpeg(rgb.data(), w, h, quality, progressive ? 1 : 0,
                              reinterpret_cast<std::uint8_t*>(out.data()), out.size(),
                              &n) != SOTTO_IMAGE_OK) {
    return {};
  }
  out.resize(n);
  return out;
}

// Left half red, right half blue.
inline std::uint32_t halves(std::uint32_t x, std::uint32_t w) {
  return x < w / 2 ? 0xFF0000FFu : 0x0000FFFFu;
}

}  // namespace sotto::test
