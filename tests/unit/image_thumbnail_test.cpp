// Image dimensions and thumbnails (client/image_thumbnail.h): real PNGs of every colour type and
// JPEGs (baseline, progressive), the limits, and malformed input of every kind: cut short,
// claiming huge sizes, bad checksums, garbage. None may crash; none but a whole image gives a
// thumbnail, and every thumbnail fits 8 KiB and decodes.
#include "client/image_thumbnail.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "client/attachment_format.h"
#include "client/image_codec.h"
#include "content.pb.h"
#include "image_test_images.h"

namespace sotto::client {
namespace {

using test::make_jpeg;
using test::make_png;

ByteView view(const std::string& s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

struct Decoded {
  std::uint32_t w = 0, h = 0;
  std::vector<std::uint8_t> rgb;
};

// Decodes a thumbnail back to pixels (at its own size).
Decoded decode(const Bytes& jpeg) {
  const sotto_image_source source{jpeg.data(), jpeg.size(), -1};
  const sotto_image_limits limits{4096, 1u << 24, 8u << 20, 64, 0};
  Decoded d;
  d.rgb.resize(256 * 256 * 3);
  sotto_image_decoded out{};
  EXPECT_EQ(sotto_image_decode_scaled(&source, &limits, 256, d.rgb.data(), &out), SOTTO_IMAGE_OK);
  d.w = out.out_width;
  d.h = out.out_height;
  return d;
}

std::array<int, 3> at(const Decoded& d, std::uint32_t x, std::uint32_t y) {
  const std::uint8_t* p = &d.rgb[(static_cast<std::size_t>(y) * d.w + x) * 3];
  return {p[0], p[1], p[2]};
}

// Checks a thumbnail and that its left edge is red and its right edge blue.
void expect_red_blue(const Thumbnail& t, std::uint32_t tw, std::uint32_t th) {
  EXPECT_LE(t.jpeg.size(), kMaxThumbnailBytes);
  EXPECT_EQ(check_thumbnail(t.jpeg), "image/jpeg");
  EXPECT_EQ(t.thumbnail_width, tw);
  EXPECT_EQ(t.thumbnail_height, th);
  const Decoded d = decode(t.jpeg);
  ASSERT_EQ(d.w, tw);
  ASSERT_EQ(d.h, th);
  const auto left = at(d, 1, th / 2), right = at(d, tw - 2, th / 2);
  EXPECT_GT(left[0], 200);
  EXPECT_LT(left[2], 60);
  EXPECT_LT(right[0], 60);
  EXPECT_GT(right[2], 200);
}

test::Pixel red_blue(std::uint32_t w) {
  return [w](std::uint32_t x, std::uint32_t) { return test::halves(x, w); };
}

TEST(ImageThumbnail, PngRgbGetsDimensionsAndAThumbnail) {
  const std::string png = make_png(640, 480, red_blue(640));
  auto t = make_thumbnail(view(png));
  ASSERT_TRUE(t.has_value()) << describe(t.error());
  EXPECT_EQ(t->content_type, "image/png");
  EXPECT_EQ(t->width, 640u);
  EXPECT_EQ(t->height, 480u);
  expect_red_blue(*t, 128, 96);
}

TEST(ImageThumbnail, EveryPngColourTypeAndDepth) {
  struct Case {
    int color, depth;
    bool interlace;
  };
  for (const Case c : {Case{2, 16, false}, Case{6, 8, false}, Case{6, 16, false}, Case{2, 8, true},
                       Case{6, 8, true}}) {
    SCOPED_TRACE(testing::Message()
                 << "color " << c.color << " depth " << c.depth << " interlace " << c.interlace);
    const std::string png = make_png(300, 200, red_blue(300), c.color, c.depth, c.interlace);
    auto t = make_thumbnail(view(png));
    ASSERT_TRUE(t.has_value()) << describe(t.error());
    EXPECT_EQ(t->width, 300u);
    EXPECT_EQ(t->height, 200u);
    expect_red_blue(*t, 128, 85);
  }
  // Gray, and a palette whose entry 0 is transparent (composed over white).
  const std::string gray = make_png(
      50, 40, [](auto x, auto) { return x < 25 ? 0u : 0xFFFFFFFFu; }, 0);
  auto g = make_thumbnail(view(gray));
  ASSERT_TRUE(g.has_value());
  const Decoded dg = decode(g->jpeg);
  EXPECT_EQ(dg.w, 50u);
  EXPECT_LT(at(dg, 2, 20)[0], 40);
  EXPECT_GT(at(dg, 47, 20)[0], 215);
  const std::string palette = make_png(
      60, 60, [](auto, auto) { return 0u; }, 3);
  auto p = make_thumbnail(view(palette));
  ASSERT_TRUE(p.has_value());
  const Decoded dp = decode(p->jpeg);
  EXPECT_GT(at(dp, 30, 30)[0], 235);  // transparent black shows as white
  // Interlaced pictures one and two rows high.
  EXPECT_FALSE(make_thumbnail(view(make_png(9, 1, red_blue(9), 2, 8, true))).has_value());
  auto two = make_thumbnail(view(make_png(9, 2, red_blue(9), 2, 8, true)));
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->thumbnail_height, 2u);
}

TEST(ImageThumbnail, JpegBaselineProgressiveAndSmall) {
  for (bool progressive : {false, true}) {
    const std::string jpeg = make_jpeg(1000, 700, red_blue(1000), progressive);
    ASSERT_FALSE(jpeg.empty());
    auto t = make_thumbnail(view(jpeg));
    ASSERT_TRUE(t.has_value()) << describe(t.error());
    EXPECT_EQ(t->content_type, "image/jpeg");
    EXPECT_EQ(t->width, 1000u);
    EXPECT_EQ(t->height, 700u);
    expect_red_blue(*t, 128, 90);
  }
  // Smaller than a thumbnail: kept at its size, not enlarged.
  auto small = make_thumbnail(view(make_jpeg(40, 30, red_blue(40))));
  ASSERT_TRUE(small.has_value());
  expect_red_blue(*small, 40, 30);
  // Tall.
  auto tall = make_thumbnail(view(make_jpeg(90, 900, red_blue(90))));
  ASSERT_TRUE(tall.has_value());
  EXPECT_EQ(tall->thumbnail_width, 13u);
  EXPECT_EQ(tall->thumbnail_height, 128u);
}

TEST(ImageThumbnail, NoiseStillFitsEightKiB) {
  std::mt19937 rng(7);
  std::vector<std::uint32_t> noise(400 * 400);
  for (auto& n : noise) n = static_cast<std::uint32_t>(rng()) | 0xFF;
  const std::string png = make_png(400, 400, [&](auto x, auto y) { return noise[y * 400 + x]; });
  auto t = make_thumbnail(view(png));
  ASSERT_TRUE(t.has_value()) << describe(t.error());
  EXPECT_LE(t->jpeg.size(), kMaxThumbnailBytes);
  EXPECT_LE(std::max(t->thumbnail_width, t->thumbnail_height), kThumbnailSide);
  EXPECT_GE(std::max(t->thumbnail_width, t->thumbnail_height), 64u);
  EXPECT_TRUE(check_thumbnail(t->jpeg).has_value());
}

TEST(ImageThumbnail, ReadsAFileDescriptorWithoutMovingIt) {
  char path[] = "/tmp/sotto-image-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  const std::string png = make_png(256, 256, red_blue(256));
  ASSERT_EQ(::write(fd, png.data(), png.size()), static_cast<ssize_t>(png.size()));
  ASSERT_EQ(::lseek(fd, 5, SEEK_SET), 5);
  auto t = make_thumbnail(fd);
  ASSERT_TRUE(t.has_value()) << describe(t.error());
  expect_red_blue(*t, 128, 128);
  EXPECT_EQ(::lseek(fd, 0, SEEK_CUR), 5);
  ::close(fd);
  EXPECT_EQ(make_thumbnail(fd).error(), ImageError::read_failed);
}

TEST(ImageThumbnailMalformed, EveryCutOfAPngAndAJpeg) {
  const std::string png = make_png(64, 48, red_blue(64));
  for (std::size_t n = 0; n < png.size(); ++n) {
    // A PNG cut anywhere before its last chunk fails; none crashes.
    auto t = make_thumbnail(view(png.substr(0, n)));
    if (n < png.size() - 12) {
      EXPECT_FALSE(t.has_value()) << n;
    }
  }
  for (bool progressive : {false, true}) {
    const std::string jpeg = make_jpeg(64, 48, red_blue(64), progressive);
    std::size_t header_end = jpeg.find("\xFF\xDA");  // the first scan
    ASSERT_NE(header_end, std::string::npos);
    for (std::size_t n = 0; n < jpeg.size(); ++n) {
      auto t = make_thumbnail(view(jpeg.substr(0, n)));
      if (n <= header_end) {
        EXPECT_FALSE(t.has_value()) << n;
        EXPECT_FALSE(check_thumbnail(view(jpeg.substr(0, n)))) << n;
      }
      // Later cuts give a picture that is partly gray (as libjpeg draws missing data), with
      // the right dimensions, or an error; never anything else.
      if (t) {
        EXPECT_EQ(t->width, 64u);
        EXPECT_LE(t->jpeg.size(), kMaxThumbnailBytes);
      }
    }
  }
}

TEST(ImageThumbnailMalformed, HugeDimensionsAreRefusedBeforeDecoding) {
  // A PNG that claims 100000 x 100000 pixels (a decompression bomb's header).
  std::string png("\x89PNG\r\n\x1a\n", 8);
  png += test::png_ihdr(100000, 100000, 8, 2, 0);
  png += test::png_chunk("IDAT", test::zlib_compress(std::string(1000, '\0')));
  EXPECT_EQ(make_thumbnail(view(png)).error(), ImageError::too_large);
  // Within the sides but over the pixels.
  std::string wide("\x89PNG\r\n\x1a\n", 8);
  wide += test::png_ihdr(60000, 60000, 8, 2, 0);
  wide += test::png_chunk("IDAT", test::zlib_compress(std::string(1000, '\0')));
  EXPECT_EQ(make_thumbnail(view(wide)).error(), ImageError::too_large);
  // A JPEG whose frame header says 65000 x 65000.
  std::string jpeg = make_jpeg(16, 16, red_blue(16));
  const std::size_t sof = jpeg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  for (std::size_t i : {sof + 5, sof + 7}) {
    jpeg[i] = static_cast<char>(0xFD);
    jpeg[i + 1] = static_cast<char>(0xE8);
  }
  EXPECT_EQ(make_thumbnail(view(jpeg)).error(), ImageError::too_large);
  // A progressive JPEG whose coefficients would pass the memory limit, or with too many scans.
  const std::string progressive = make_jpeg(512, 512, red_blue(512), true);
  ImageLimits tight;
  tight.max_memory = 100'000;
  EXPECT_EQ(make_thumbnail(view(progressive), tight).error(), ImageError::too_large);
  ImageLimits few_scans;
  few_scans.max_scans = 2;
  EXPECT_EQ(make_thumbnail(view(progressive), few_scans).error(), ImageError::too_large);
  ImageLimits small;
  small.max_pixels = 1000;
  EXPECT_EQ(make_thumbnail(view(make_png(40, 40, red_blue(40))), small).error(),
            ImageError::too_large);
}

TEST(ImageThumbnailMalformed, CorruptChunksAndGarbage) {
  const std::string png = make_png(32, 32, red_blue(32));
  // A bad CRC in the IHDR, and in the IDAT.
  std::string bad = png;
  bad[8 + 8 + 13] ^= 1;
  EXPECT_FALSE(make_thumbnail(view(bad)).has_value());
  bad = png;
  const std::size_t idat = png.find("IDAT");
  bad[idat + 6] ^= 0x55;
  EXPECT_FALSE(make_thumbnail(view(bad)).has_value());
  // An IDAT that is not zlib (with a good CRC).
  std::string not_zlib("\x89PNG\r\n\x1a\n", 8);
  not_zlib += test::png_ihdr(32, 32, 8, 2, 0);
  not_zlib += test::png_chunk("IDAT", std::string(200, 'x'));
  not_zlib += test::png_chunk("IEND", "");
  EXPECT_EQ(make_thumbnail(view(not_zlib)).error(), ImageError::malformed);
  // An IHDR with an impossible colour type, and a zero width.
  std::string odd("\x89PNG\r\n\x1a\n", 8);
  odd += test::png_ihdr(32, 32, 8, 5, 0);
  EXPECT_EQ(make_thumbnail(view(odd)).error(), ImageError::malformed);
  std::string zero("\x89PNG\r\n\x1a\n", 8);
  zero += test::png_ihdr(0, 32, 8, 2, 0);
  EXPECT_FALSE(make_thumbnail(view(zero)).has_value());
  // Garbage after either magic, and no magic at all.
  std::mt19937 rng(3);
  for (int i = 0; i < 200; ++i) {
    std::string junk(static_cast<std::size_t>(rng() % 3000), '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    const std::string prefix = i % 3 == 0   ? std::string("\x89PNG\r\n\x1a\n", 8)
                               : i % 3 == 1 ? std::string("\xFF\xD8\xFF", 3)
                                            : std::string();
    const std::string input = prefix + junk;
    EXPECT_FALSE(make_thumbnail(view(input)).has_value());
    EXPECT_FALSE(check_thumbnail(view(input)).has_value());
  }
  EXPECT_EQ(make_thumbnail(view(std::string())).error(), ImageError::not_an_image);
  EXPECT_EQ(make_thumbnail(view(std::string("GIF89a\x10\x00\x10\x00", 10))).error(),
            ImageError::not_an_image);
}

TEST(ImageThumbnail, ReceivedThumbnailsAreCheckedAndDroppedWhenBad) {
  auto t = make_thumbnail(view(make_png(200, 100, red_blue(200))));
  ASSERT_TRUE(t.has_value());
  const std::string good(t->jpeg.begin(), t->jpeg.end());
  EXPECT_EQ(check_thumbnail(view(good)), "image/jpeg");
  EXPECT_EQ(check_thumbnail(view(make_png(20, 20, red_blue(20)))), "image/png");
  // Too large a side, too many bytes, not an image.
  EXPECT_FALSE(check_thumbnail(view(make_png(2000, 2, red_blue(2000)))));
  std::string padded = good + std::string(kMaxThumbnailBytes, '\0');
  EXPECT_FALSE(check_thumbnail(view(padded)));
  EXPECT_FALSE(check_thumbnail(view(std::string("GIF89a\x01\x00\x01\x00", 10))));

  wire::content::AttachmentPointer p;
  p.set_thumbnail(good);
  drop_bad_thumbnail(p);
  EXPECT_EQ(p.thumbnail(), good);
  p.set_thumbnail(padded);
  p.set_file_name("x.png");
  drop_bad_thumbnail(p);
  EXPECT_TRUE(p.thumbnail().empty());
  EXPECT_EQ(p.file_name(), "x.png");  // the rest stays
  p.set_thumbnail("\xFF\xD8\xFF not really");
  drop_bad_thumbnail(p);
  EXPECT_TRUE(p.thumbnail().empty());
}

// Writes the seed corpus of fuzz/image_thumbnail_fuzz.cpp when SOTTO_IMAGE_SEEDS_DIR names a
// directory (fuzz/README.md); otherwise does nothing.
TEST(ImageThumbnail, WriteFuzzSeeds) {
  const char* dir = std::getenv("SOTTO_IMAGE_SEEDS_DIR");
  if (dir == nullptr) GTEST_SKIP() << "SOTTO_IMAGE_SEEDS_DIR not set";
  const auto write = [&](const std::string& name, const std::string& bytes) {
    std::FILE* f = std::fopen((std::string(dir) + "/" + name).c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  };
  write("png-rgb", make_png(20, 12, red_blue(20)));
  write("png-rgba16", make_png(9, 7, red_blue(9), 6, 16));
  write("png-interlaced", make_png(17, 11, red_blue(17), 2, 8, true));
  write("png-palette", make_png(
                           8, 8, [](auto x, auto) { return x * 30u << 24; }, 3));
  write("png-gray", make_png(
                        8, 8, [](auto x, auto) { return x * 30u << 24; }, 0));
  write("jpeg-baseline", make_jpeg(24, 16, red_blue(24)));
  write("jpeg-progressive", make_jpeg(24, 16, red_blue(24), true));
  const std::string cut = make_jpeg(24, 16, red_blue(24));
  write("jpeg-cut", cut.substr(0, cut.size() / 2));
  std::string huge("\x89PNG\r\n\x1a\n", 8);
  huge += test::png_ihdr(100000, 100000, 8, 2, 0);
  write("png-huge", huge);
}

}  // namespace
}  // namespace sotto::client
