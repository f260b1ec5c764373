/* The only code in Sotto that calls libpng and libjpeg (docs/attachments.md, "Thumbnails"):
 * decode a PNG or JPEG into a small RGB picture, and encode RGB pixels as a JPEG.
 *
 * Written in C on purpose. Both libraries report errors by longjmp() back to a setjmp() point,
 * which skips every stack frame in between; in C++ that would skip destructors. Here no frame
 * between a setjmp() and the library's longjmp() has anything to destroy: every allocation this
 * unit makes is recorded in a context struct that the setjmp() caller frees on both paths, and
 * the output buffers belong to the caller. image_thumbnail.h is the C++ face of this unit; use
 * that one.
 *
 * The input is untrusted (an image someone sent the user): the dimensions, pixel count, memory
 * and (JPEG) scan count are limited before any pixel is decoded, a cut-off or malformed file is an
 * error, and nothing is printed. Memory is a few rows of the source whatever its size (a
 * progressive JPEG also needs its coefficients, which the memory limit bounds; an interlaced PNG
 * is thumbnailed from its last pass, so it too is read a row at a time).
 *
 * Thread-safe: no global state; each call works on its own. */
#ifndef SOTTO_CLIENT_IMAGE_CODEC_H
#define SOTTO_CLIENT_IMAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum sotto_image_status {
  SOTTO_IMAGE_OK = 0,
  SOTTO_IMAGE_UNSUPPORTED = 1, /* not a PNG or JPEG, or a kind this unit does not decode */
  SOTTO_IMAGE_TOO_LARGE = 2,   /* over a limit: sides, pixels, memory, scans, output size */
  SOTTO_IMAGE_MALFORMED = 3,   /* the library refused the data, or it ends too early */
  SOTTO_IMAGE_READ_ERROR = 4,  /* the file descriptor could not be read */
  SOTTO_IMAGE_NO_MEMORY = 5
};

enum sotto_image_format { SOTTO_IMAGE_FORMAT_PNG = 1, SOTTO_IMAGE_FORMAT_JPEG = 2 };

/* The largest side of a decoded (scaled) picture this unit produces. */
#define SOTTO_IMAGE_MAX_OUTPUT_SIDE 256u

/* Where the encoded image comes from: `size` bytes at `data`, or (data == NULL) the file `fd`
 * read with pread() from offset 0 (the descriptor's own offset is left alone). */
struct sotto_image_source {
  const uint8_t* data;
  size_t size;
  int fd;
};

struct sotto_image_limits {
  uint32_t max_side;     /* width and height each at most this */
  uint64_t max_pixels;   /* width * height at most this */
  size_t max_memory;     /* a progressive JPEG's coefficient buffers */
  unsigned max_scans;    /* a JPEG's scans (each is a pass over the whole picture) */
  unsigned max_warnings; /* recoverable errors the library reports before this unit gives up */
};

struct sotto_image_decoded {
  int format;             /* enum sotto_image_format */
  uint32_t width, height; /* of the image as encoded */
  uint32_t out_width, out_height;
};

/* Decodes the image and scales it (an average over boxes of source pixels, transparency composed
 * over white) so that its longer side is `longest` (at most SOTTO_IMAGE_MAX_OUTPUT_SIDE; a smaller
 * image keeps its size). Writes out_width * out_height * 3 bytes of RGB rows to `rgb`, which must
 * hold longest * longest * 3 bytes. */
int sotto_image_decode_scaled(const struct sotto_image_source* source,
                              const struct sotto_image_limits* limits, uint32_t longest,
                              uint8_t* rgb, struct sotto_image_decoded* out);

/* The largest side sotto_image_encode_jpeg() takes. */
#define SOTTO_IMAGE_MAX_ENCODE_SIDE 16384u

/* Encodes width * height RGB pixels (rows of width * 3 bytes) as a JPEG of the given quality
 * (1-100), baseline or (progressive != 0, for tests) progressive, into `out`, which holds
 * `capacity` bytes; SOTTO_IMAGE_TOO_LARGE when the result would not fit. `*size` is the JPEG's
 * length. */
int sotto_image_encode_jpeg(const uint8_t* rgb, uint32_t width, uint32_t height, int quality,
                            int progressive, uint8_t* out, size_t capacity, size_t* size);

#ifdef __cplusplus
}
#endif

#endif /* SOTTO_CLIENT_IMAGE_CODEC_H */
