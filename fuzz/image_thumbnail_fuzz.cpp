// Fuzzes the image decoder and thumbnailer (src/client/image_thumbnail.h, over libpng and
// libjpeg-turbo through image_codec.c) with the bytes of a file a user might send, or a thumbnail
// a peer sent. Checked besides "no crash, no sanitizer report, no leak": a thumbnail is a JPEG of
// at most 8 KiB and 128 pixels a side that check_thumbnail() accepts, of an image within the
// limits; a thumbnail check_thumbnail() accepts is at most 8 KiB. The limits are lower than the
// client's so that each input stays quick; the code paths are the same.
#include <cstdint>

#include "client/image_thumbnail.h"
#include "fuzz_check.h"

using namespace sotto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView bytes(data, size);
  client::ImageLimits limits;
  limits.max_pixels = 4'000'000;
  limits.max_memory = 8u << 20;
  limits.max_scans = 64;
  if (auto t = client::make_thumbnail(bytes, limits)) {
    fuzz::require(!t->jpeg.empty() && t->jpeg.size() <= client::kMaxThumbnailBytes,
                  "a thumbnail's size");
    fuzz::require(t->thumbnail_width >= 1 && t->thumbnail_height >= 1 &&
                      t->thumbnail_width <= client::kThumbnailSide &&
                      t->thumbnail_height <= client::kThumbnailSide,
                  "a thumbnail's sides");
    fuzz::require(t->width >= 1 && t->height >= 1 &&
                      static_cast<std::uint64_t>(t->width) * t->height <= limits.max_pixels,
                  "an image within the limits");
    fuzz::require(client::check_thumbnail(t->jpeg) == std::optional<std::string>("image/jpeg"),
                  "our own thumbnail passes the receiver's check");
  }
  if (auto type = client::check_thumbnail(bytes)) {
    fuzz::require(size <= client::kMaxThumbnailBytes, "an accepted thumbnail's size");
    fuzz::require(*type == "image/png" || *type == "image/jpeg", "an accepted thumbnail's type");
  }
  return 0;
}
