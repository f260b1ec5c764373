#include "client/image_thumbnail.h"

#include <algorithm>
#include <array>
#include <vector>

#include "client/image_codec.h"

namespace sotto::client {

namespace {

// Qualities tried at each size, best first, before the thumbnail shrinks.
constexpr std::array<int, 6> kQualities = {80, 70, 60, 50, 40, 30};
constexpr std::array<std::uint32_t, 3> kSides = {kThumbnailSide, 96, 64};

ImageError error_of(int status) {
  switch (status) {
    case SOTTO_IMAGE_TOO_LARGE:
      return ImageError::too_large;
    case SOTTO_IMAGE_MALFORMED:
      return ImageError::malformed;
    case SOTTO_IMAGE_READ_ERROR:
      return ImageError::read_failed;
    case SOTTO_IMAGE_NO_MEMORY:
      return ImageError::no_memory;
    default:
      return ImageError::not_an_image;
  }
}

sotto_image_limits c_limits(const ImageLimits& l) {
  return sotto_image_limits{l.max_side, l.max_pixels, l.max_memory, l.max_scans, l.max_warnings};
}

// A box average of w x h RGB pixels down to tw x th (tw <= w, th <= h).
std::vector<std::uint8_t> shrink(const std::vector<std::uint8_t>& rgb, std::uint32_t w,
                                 std::uint32_t h, std::uint32_t tw, std::uint32_t th) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(tw) * th * 3);
  for (std::uint32_t ty = 0; ty < th; ++ty) {
    const std::uint32_t y0 = ty * h / th, y1 = std::max(y0 + 1, (ty + 1) * h / th);
    for (std::uint32_t tx = 0; tx < tw; ++tx) {
      const std::uint32_t x0 = tx * w / tw, x1 = std::max(x0 + 1, (tx + 1) * w / tw);
      std::array<std::uint32_t, 3> sum{};
      for (std::uint32_t y = y0; y < y1; ++y) {
        for (std::uint32_t x = x0; x < x1; ++x) {
          for (std::size_t k = 0; k < 3; ++k)
            sum[k] += rgb[(static_cast<std::size_t>(y) * w + x) * 3 + k];
        }
      }
      const std::uint32_t n = (y1 - y0) * (x1 - x0);
      for (std::size_t k = 0; k < 3; ++k) {
        out[(static_cast<std::size_t>(ty) * tw + tx) * 3 + k] =
            static_cast<std::uint8_t>((sum[k] + n / 2) / n);
      }
    }
  }
  return out;
}

tl::expected<Thumbnail, ImageError> thumbnail_of(const sotto_image_source& source,
                                                 const ImageLimits& limits) {
  const sotto_image_limits l = c_limits(limits);
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(kThumbnailSide) * kThumbnailSide * 3);
  sotto_image_decoded decoded{};
  const int status = sotto_image_decode_scaled(&source, &l, kThumbnailSide, rgb.data(), &decoded);
  if (status != SOTTO_IMAGE_OK) return tl::unexpected(error_of(status));
  Thumbnail t;
  t.content_type = decoded.format == SOTTO_IMAGE_FORMAT_PNG ? "image/png" : "image/jpeg";
  t.width = decoded.width;
  t.height = decoded.height;
  std::uint32_t w = decoded.out_width, h = decoded.out_height;
  Bytes out(kMaxThumbnailBytes);
  for (const std::uint32_t side : kSides) {
    if (side < std::max(w, h)) {
      const std::uint32_t tw = std::max<std::uint32_t>(1, w >= h ? side : w * side / h);
      const std::uint32_t th = std::max<std::uint32_t>(1, w >= h ? h * side / w : side);
      rgb = shrink(rgb, w, h, tw, th);
      w = tw;
      h = th;
    }
    for (const int quality : kQualities) {
      std::size_t size = 0;
      const int s =
          sotto_image_encode_jpeg(rgb.data(), w, h, quality, 0, out.data(), out.size(), &size);
      if (s == SOTTO_IMAGE_OK) {
        out.resize(size);
        t.jpeg = std::move(out);
        t.thumbnail_width = w;
        t.thumbnail_height = h;
        return t;
      }
      if (s != SOTTO_IMAGE_TOO_LARGE) return tl::unexpected(error_of(s));
    }
  }
  return tl::unexpected(ImageError::too_detailed);
}

}  // namespace

std::string_view describe(ImageError e) {
  switch (e) {
    case ImageError::not_an_image:
      return "not a PNG or JPEG image this client decodes";
    case ImageError::too_large:
      return "the image is larger than this client decodes";
    case ImageError::malformed:
      return "the image is malformed";
    case ImageError::read_failed:
      return "the image could not be read";
    case ImageError::no_memory:
      return "out of memory";
    case ImageError::too_detailed:
      return "no thumbnail fits in 8 KiB";
  }
  return "unknown image error";
}

tl::expected<Thumbnail, ImageError> make_thumbnail(int fd, const ImageLimits& limits) {
  return thumbnail_of(sotto_image_source{nullptr, 0, fd}, limits);
}

tl::expected<Thumbnail, ImageError> make_thumbnail(ByteView bytes, const ImageLimits& limits) {
  return thumbnail_of(sotto_image_source{bytes.data(), bytes.size(), -1}, limits);
}

std::optional<std::string> check_thumbnail(ByteView bytes) {
  if (bytes.empty() || bytes.size() > kMaxThumbnailBytes) return std::nullopt;
  ImageLimits limits;
  limits.max_side = kMaxReceivedThumbnailSide;
  limits.max_pixels =
      static_cast<std::uint64_t>(kMaxReceivedThumbnailSide) * kMaxReceivedThumbnailSide;
  limits.max_memory = 4u << 20;
  limits.max_scans = 64;
  limits.max_warnings = 0;  // a thumbnail is small and whole, or it is not shown
  const sotto_image_limits l = c_limits(limits);
  const sotto_image_source source{bytes.data(), bytes.size(), -1};
  std::vector<std::uint8_t> rgb(16 * 16 * 3);
  sotto_image_decoded decoded{};
  if (sotto_image_decode_scaled(&source, &l, 16, rgb.data(), &decoded) != SOTTO_IMAGE_OK) {
    return std::nullopt;
  }
  return decoded.format == SOTTO_IMAGE_FORMAT_PNG ? "image/png" : "image/jpeg";
}

}  // namespace sotto::client
