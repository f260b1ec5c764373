// Thumbnails and dimensions of the images a user sends (docs/attachments.md, "Thumbnails"): a
// PNG or JPEG (told by its first bytes, never by its name) is decoded with libpng or libjpeg-turbo
// and drawn as a small JPEG, which travels in the AttachmentPointer. The file may be hostile (it
// may be a file someone sent the user): ImageLimits bounds its sides, pixels, memory and the work
// of a JPEG's scans before anything is decoded, and every failure is an ImageError, never a crash
// (fuzz/image_thumbnail_fuzz.cpp). A received thumbnail is checked with check_thumbnail() before
// anything shows it.
//
// The C code that touches the libraries is image_codec.{h,c}, kept in C so that their
// setjmp/longjmp error path cannot skip a destructor; this file owns every buffer it hands them.
//
// Thread-safe: pure functions of their input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>

#include "crypto/bytes.h"

namespace sotto::client {

// The largest thumbnail sent or accepted (AttachmentPointer.thumbnail).
inline constexpr std::size_t kMaxThumbnailBytes = 8 * 1024;
// The longest side of a thumbnail this client draws; it shrinks towards 64 when the JPEG does not
// fit kMaxThumbnailBytes at a lower quality.
inline constexpr std::uint32_t kThumbnailSide = 128;
// A received thumbnail may be larger than ours, not larger than this a side.
inline constexpr std::uint32_t kMaxReceivedThumbnailSide = 1024;

enum class ImageError {
  not_an_image,  // neither PNG nor JPEG, or a kind of either this client does not decode
  too_large,     // over an ImageLimits bound
  malformed,     // the decoder refused it or it ends early
  read_failed,   // the file could not be read
  no_memory,
  too_detailed,  // no thumbnail fits kMaxThumbnailBytes
};
[[nodiscard]] std::string_view describe(ImageError e);

struct ImageLimits {
  std::uint32_t max_side = 65'535;
  std::uint64_t max_pixels = 100'000'000;  // 100 megapixels
  std::size_t max_memory = 32u << 20;      // a progressive JPEG's coefficients
  unsigned max_scans = 256;                // a JPEG's scans
  unsigned max_warnings = 100;             // recoverable errors the decoder reports
};

struct Thumbnail {
  std::string content_type;  // of the image: image/png or image/jpeg
  std::uint32_t width = 0;   // the image's pixels
  std::uint32_t height = 0;
  Bytes jpeg;  // the thumbnail, at most kMaxThumbnailBytes
  std::uint32_t thumbnail_width = 0;
  std::uint32_t thumbnail_height = 0;
};

// The thumbnail of the image in the file `fd` (read from offset 0 with pread; its offset is left
// alone), or of `bytes`.
[[nodiscard]] tl::expected<Thumbnail, ImageError> make_thumbnail(int fd,
                                                                 const ImageLimits& limits = {});
[[nodiscard]] tl::expected<Thumbnail, ImageError> make_thumbnail(ByteView bytes,
                                                                 const ImageLimits& limits = {});

// A received thumbnail's content type (image/png or image/jpeg) when it is at most
// kMaxThumbnailBytes, a PNG or a JPEG by its first bytes, at most kMaxReceivedThumbnailSide a
// side, and decodes; nullopt otherwise (the thumbnail is then dropped).
[[nodiscard]] std::optional<std::string> check_thumbnail(ByteView bytes);

}  // namespace sotto::client
