/* libpng and libjpeg behind a small C interface (image_codec.h). The error discipline, which is
 * why this file is C: each public function allocates its context (every resource the libraries
 * or this file acquire is reachable from it) and calls a static run_*() function that does the
 * setjmp(). A library error longjmp()s back into run_*(), which returns; the public function
 * then releases everything in the context. No frame that a longjmp() crosses owns anything, and
 * no automatic variable of a run_*() function changes after its setjmp(). */
#define _POSIX_C_SOURCE 200809L /* pread */

#include "client/image_codec.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* After stdio.h: jpeglib.h uses FILE without including it. */
#include <jerror.h>
#include <jpeglib.h>

/* ---- input ---------------------------------------------------------------------------------- */

#define READ_BUFFER_SIZE 65536u

struct reader {
  const struct sotto_image_source* source;
  uint64_t pos;
  int failed; /* a read error (not the end of the data) */
  uint8_t buffer[READ_BUFFER_SIZE];
};

/* Up to n bytes from the current position; fewer at the end of the data or on an error. */
static size_t reader_read(struct reader* r, uint8_t* out, size_t n) {
  const struct sotto_image_source* s = r->source;
  if (s->data != NULL) {
    if (r->pos >= s->size) return 0;
    const uint64_t left = s->size - r->pos;
    if (n > left) n = (size_t)left;
    memcpy(out, s->data + r->pos, n);
    r->pos += n;
    return n;
  }
  size_t got = 0;
  while (got < n) {
    const ssize_t k = pread(s->fd, out + got, n - got, (off_t)r->pos);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      r->failed = 1;
      break;
    }
    if (k == 0) break;
    got += (size_t)k;
    r->pos += (uint64_t)k;
  }
  return got;
}

/* ---- scaling -------------------------------------------------------------------------------- */

enum pixel_kind { PIXEL_GRAY, PIXEL_RGB, PIXEL_RGBA, PIXEL_CMYK, PIXEL_CMYK_INVERTED };

/* Averages boxes of source pixels into the target: source row y adds to target row
 * y * th / sh, source column x to target column x * tw / sw (so sw >= tw and sh >= th). Source
 * rows come in increasing order; target rows that no source row reached (an interlaced PNG's
 * last pass holds every other row only) repeat the row above them. */
struct scaler {
  uint32_t sw, sh, tw, th;
  uint8_t* out;
  int64_t row;  /* the target row being summed, -1 for none */
  int64_t done; /* the last target row written, -1 for none */
  uint64_t sum[SOTTO_IMAGE_MAX_OUTPUT_SIDE * 3];
  uint32_t count[SOTTO_IMAGE_MAX_OUTPUT_SIDE];
};

static void scaler_init(struct scaler* s, uint32_t sw, uint32_t sh, uint32_t tw, uint32_t th,
                        uint8_t* out) {
  s->sw = sw;
  s->sh = sh;
  s->tw = tw;
  s->th = th;
  s->out = out;
  s->row = -1;
  s->done = -1;
  memset(s->sum, 0, sizeof s->sum);
  memset(s->count, 0, sizeof s->count);
}

static void scaler_flush(struct scaler* s) {
  if (s->row < 0) return;
  const size_t stride = (size_t)s->tw * 3;
  uint8_t* dst = s->out + (size_t)s->row * stride;
  for (uint32_t x = 0; x < s->tw; ++x) {
    const uint64_t c = s->count[x] == 0 ? 1 : s->count[x];
    for (int k = 0; k < 3; ++k) dst[x * 3 + k] = (uint8_t)((s->sum[x * 3 + k] + c / 2) / c);
  }
  for (int64_t r = s->done + 1; r < s->row; ++r) memcpy(s->out + (size_t)r * stride, dst, stride);
  s->done = s->row;
  s->row = -1;
  memset(s->sum, 0, sizeof(uint64_t) * 3 * s->tw);
  memset(s->count, 0, sizeof(uint32_t) * s->tw);
}

static void scaler_add(struct scaler* s, const uint8_t* px, enum pixel_kind kind, uint32_t y) {
  const int64_t ty = (int64_t)((uint64_t)y * s->th / s->sh);
  if (ty != s->row) {
    scaler_flush(s);
    s->row = ty;
  }
  uint32_t tx = 0;
  uint64_t at = 0;        /* x * tw */
  uint64_t bound = s->sw; /* (tx + 1) * sw */
  for (uint32_t x = 0; x < s->sw; ++x, at += s->tw) {
    while (at >= bound) {
      ++tx;
      bound += s->sw;
    }
    uint32_t r, g, b;
    switch (kind) {
      case PIXEL_GRAY:
        r = g = b = px[x];
        break;
      case PIXEL_RGB:
        r = px[x * 3];
        g = px[x * 3 + 1];
        b = px[x * 3 + 2];
        break;
      case PIXEL_RGBA: {
        const uint32_t a = px[x * 4 + 3];
        const uint32_t white = 255 * (255 - a);
        r = (px[x * 4] * a + white + 127) / 255;
        g = (px[x * 4 + 1] * a + white + 127) / 255;
        b = (px[x * 4 + 2] * a + white + 127) / 255;
        break;
      }
      case PIXEL_CMYK_INVERTED: /* as Adobe writes it: 255 is no ink */
        r = (px[x * 4] * (uint32_t)px[x * 4 + 3] + 127) / 255;
        g = (px[x * 4 + 1] * (uint32_t)px[x * 4 + 3] + 127) / 255;
        b = (px[x * 4 + 2] * (uint32_t)px[x * 4 + 3] + 127) / 255;
        break;
      case PIXEL_CMYK:
      default:
        r = ((255u - px[x * 4]) * (255u - px[x * 4 + 3]) + 127) / 255;
        g = ((255u - px[x * 4 + 1]) * (255u - px[x * 4 + 3]) + 127) / 255;
        b = ((255u - px[x * 4 + 2]) * (255u - px[x * 4 + 3]) + 127) / 255;
        break;
    }
    s->sum[tx * 3] += r;
    s->sum[tx * 3 + 1] += g;
    s->sum[tx * 3 + 2] += b;
    ++s->count[tx];
  }
}

/* 0 when no source row arrived at all. */
static int scaler_finish(struct scaler* s) {
  scaler_flush(s);
  if (s->done < 0) return 0;
  const size_t stride = (size_t)s->tw * 3;
  for (int64_t r = s->done + 1; r < (int64_t)s->th; ++r) {
    memcpy(s->out + (size_t)r * stride, s->out + (size_t)s->done * stride, stride);
  }
  return 1;
}

static void target_size(uint32_t w, uint32_t h, uint32_t longest, uint32_t* tw, uint32_t* th) {
  if (w <= longest && h <= longest) {
    *tw = w;
    *th = h;
  } else if (w >= h) {
    *tw = longest;
    *th = (uint32_t)(((uint64_t)h * longest + w / 2) / w);
  } else {
    *th = longest;
    *tw = (uint32_t)(((uint64_t)w * longest + h / 2) / h);
  }
  if (*tw == 0) *tw = 1;
  if (*th == 0) *th = 1;
}

static int within_limits(uint32_t w, uint32_t h, const struct sotto_image_limits* limits) {
  return w > 0 && h > 0 && w <= limits->max_side && h <= limits->max_side &&
         (uint64_t)w * h <= limits->max_pixels;
}

/* ---- PNG ------------------------------------------------------------------------------------ */

struct png_context {
  struct reader* reader;
  const struct sotto_image_limits* limits;
  uint32_t longest;
  struct sotto_image_decoded* out;
  int status;
  unsigned warnings;
  png_structp png;
  png_infop info;
  uint8_t* row;
  struct scaler scaler;
};

static void png_on_error(png_structp png, png_const_charp message) {
  (void)message;
  struct png_context* c = (struct png_context*)png_get_error_ptr(png);
  if (c->status == SOTTO_IMAGE_OK) c->status = SOTTO_IMAGE_MALFORMED;
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp message) {
  (void)message;
  struct png_context* c = (struct png_context*)png_get_error_ptr(png);
  if (++c->warnings > c->limits->max_warnings) png_error(png, "too many warnings");
}

static void png_on_read(png_structp png, png_bytep data, size_t length) {
  struct png_context* c = (struct png_context*)png_get_io_ptr(png);
  if (reader_read(c->reader, data, length) != length) {
    if (c->reader->failed) c->status = SOTTO_IMAGE_READ_ERROR;
    png_error(png, "the data ends early");
  }
}

static void run_png(struct png_context* c) {
  if (setjmp(png_jmpbuf(c->png))) return;
  png_set_read_fn(c->png, c, png_on_read);
  /* The sides are checked below against the caller's limits, with a status that says so. */
  png_set_user_limits(c->png, 0x7fffffffu, 0x7fffffffu);
  png_set_chunk_cache_max(c->png, 256);
  png_set_chunk_malloc_max(c->png, 4u << 20);
  png_read_info(c->png, c->info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0, interlace = 0;
  png_get_IHDR(c->png, c->info, &w, &h, &depth, &color, &interlace, NULL, NULL);
  c->out->format = SOTTO_IMAGE_FORMAT_PNG;
  c->out->width = w;
  c->out->height = h;
  if (!within_limits(w, h, c->limits)) {
    c->status = SOTTO_IMAGE_TOO_LARGE;
    return;
  }
  /* Interlaced: only the last pass is read into the picture (every odd row, whole), which needs
   * at least two rows. */
  const int interlaced = interlace != PNG_INTERLACE_NONE;
  if (interlaced && h < 2) {
    c->status = SOTTO_IMAGE_UNSUPPORTED;
    return;
  }
  png_set_expand(c->png);
  png_set_strip_16(c->png);
  png_set_gray_to_rgb(c->png);
  png_read_update_info(c->png, c->info);
  const png_byte channels = png_get_channels(c->png, c->info);
  if (channels != 3 && channels != 4) {
    c->status = SOTTO_IMAGE_UNSUPPORTED;
    return;
  }
  const enum pixel_kind kind = channels == 4 ? PIXEL_RGBA : PIXEL_RGB;
  c->row = (uint8_t*)malloc(png_get_rowbytes(c->png, c->info));
  if (c->row == NULL) {
    c->status = SOTTO_IMAGE_NO_MEMORY;
    return;
  }
  uint32_t tw = 0, th = 0;
  target_size(w, h, c->longest, &tw, &th);
  scaler_init(&c->scaler, w, h, tw, th, c->scaler.out);
  c->out->out_width = tw;
  c->out->out_height = th;
  if (!interlaced) {
    for (uint32_t y = 0; y < h; ++y) {
      png_read_row(c->png, c->row, NULL);
      scaler_add(&c->scaler, c->row, kind, y);
    }
  } else {
    /* Without libpng's interlace handling each pass comes as its own small picture, and passes
     * with no pixels are skipped. */
    for (int pass = 0; pass < 7; ++pass) {
      const uint32_t rows = PNG_PASS_ROWS(h, pass);
      if (rows == 0 || PNG_PASS_COLS(w, pass) == 0) continue;
      for (uint32_t i = 0; i < rows; ++i) {
        png_read_row(c->png, c->row, NULL);
        if (pass == 6) scaler_add(&c->scaler, c->row, kind, 2 * i + 1);
      }
    }
  }
  if (!scaler_finish(&c->scaler)) c->status = SOTTO_IMAGE_MALFORMED;
}

static int decode_png(struct reader* reader, const struct sotto_image_limits* limits,
                      uint32_t longest, uint8_t* rgb, struct sotto_image_decoded* out) {
  struct png_context* c = (struct png_context*)calloc(1, sizeof *c);
  if (c == NULL) return SOTTO_IMAGE_NO_MEMORY;
  c->reader = reader;
  c->limits = limits;
  c->longest = longest;
  c->out = out;
  c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_on_error, png_on_warning);
  if (c->png != NULL) c->info = png_create_info_struct(c->png);
  if (c->png == NULL || c->info == NULL) {
    c->status = SOTTO_IMAGE_NO_MEMORY;
  } else {
    c->scaler.out = rgb;
    run_png(c);
  }
  png_destroy_read_struct(&c->png, &c->info, NULL);
  free(c->row);
  const int status = c->status;
  free(c);
  return status;
}

/* ---- JPEG decoding -------------------------------------------------------------------------- */

struct jpeg_context {
  struct jpeg_error_mgr error; /* first: libjpeg hands back cinfo->err */
  jmp_buf jump;
  int status;
  unsigned warnings;
  struct reader* reader;
  const struct sotto_image_limits* limits;
  uint32_t longest;
  struct sotto_image_decoded* out;
  struct jpeg_source_mgr source;
  struct jpeg_progress_mgr progress;
  struct jpeg_decompress_struct cinfo;
  struct scaler scaler;
};

static void jpeg_on_error(j_common_ptr cinfo) {
  struct jpeg_context* c = (struct jpeg_context*)cinfo->err;
  if (c->status == SOTTO_IMAGE_OK) {
    const int code = cinfo->err->msg_code;
    c->status = (code == JERR_OUT_OF_MEMORY || code == JERR_NO_BACKING_STORE)
                    ? SOTTO_IMAGE_TOO_LARGE
                    : SOTTO_IMAGE_MALFORMED;
  }
  longjmp(c->jump, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level) {
  struct jpeg_context* c = (struct jpeg_context*)cinfo->err;
  if (level < 0 && ++c->warnings > c->limits->max_warnings) {
    c->status = SOTTO_IMAGE_MALFORMED;
    longjmp(c->jump, 1);
  }
}

static void jpeg_on_output(j_common_ptr cinfo) {
  (void)cinfo; /* nothing is printed */
}

static void jpeg_on_progress(j_common_ptr cinfo) {
  struct jpeg_context* c = (struct jpeg_context*)cinfo->err;
  if (cinfo->is_decompressor &&
      (unsigned)((j_decompress_ptr)cinfo)->input_scan_number > c->limits->max_scans) {
    c->status = SOTTO_IMAGE_TOO_LARGE;
    longjmp(c->jump, 1);
  }
}

static void jpeg_source_init(j_decompress_ptr cinfo) {
  (void)cinfo;
}

static boolean jpeg_source_fill(j_decompress_ptr cinfo) {
  struct jpeg_context* c = (struct jpeg_context*)cinfo->err;
  size_t n = reader_read(c->reader, c->reader->buffer, READ_BUFFER_SIZE);
  if (n == 0) {
    if (c->reader->failed) {
      c->status = SOTTO_IMAGE_READ_ERROR;
      longjmp(c->jump, 1);
    }
    /* The end of the data: an end-of-image marker (as libjpeg's own sources do) and a warning. */
    WARNMS(cinfo, JWRN_JPEG_EOF);
    c->reader->buffer[0] = 0xFF;
    c->reader->buffer[1] = JPEG_EOI;
    n = 2;
  }
  c->source.next_input_byte = c->reader->buffer;
  c->source.bytes_in_buffer = n;
  return TRUE;
}

static void jpeg_source_skip(j_decompress_ptr cinfo, long count) {
  struct jpeg_context* c = (struct jpeg_context*)cinfo->err;
  if (count <= 0) return;
  if ((size_t)count <= c->source.bytes_in_buffer) {
    c->source.next_input_byte += count;
    c->source.bytes_in_buffer -= (size_t)count;
    return;
  }
  c->reader->pos += (uint64_t)count - c->source.bytes_in_buffer;
  c->source.bytes_in_buffer = 0;
}

static void jpeg_source_term(j_decompress_ptr cinfo) {
  (void)cinfo;
}

static void run_jpeg(struct jpeg_context* c) {
  if (setjmp(c->jump)) return;
  j_decompress_ptr cinfo = &c->cinfo;
  jpeg_create_decompress(cinfo);
  cinfo->src = &c->source;
  cinfo->progress = &c->progress;
  cinfo->mem->max_memory_to_use = (long)c->limits->max_memory;
  jpeg_read_header(cinfo, TRUE);
  const uint32_t w = cinfo->image_width, h = cinfo->image_height;
  c->out->format = SOTTO_IMAGE_FORMAT_JPEG;
  c->out->width = w;
  c->out->height = h;
  if (!within_limits(w, h, c->limits)) {
    c->status = SOTTO_IMAGE_TOO_LARGE;
    return;
  }
  /* A progressive (or multi-scan) JPEG keeps every coefficient of the image in memory. */
  if (jpeg_has_multiple_scans(cinfo)) {
    uint64_t bytes = 0;
    for (int i = 0; i < cinfo->num_components; ++i) {
      const jpeg_component_info* comp = &cinfo->comp_info[i];
      bytes += (uint64_t)comp->width_in_blocks * comp->height_in_blocks * sizeof(JBLOCK);
    }
    if (bytes > c->limits->max_memory) {
      c->status = SOTTO_IMAGE_TOO_LARGE;
      return;
    }
  }
  enum pixel_kind kind = PIXEL_RGB;
  switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
      cinfo->out_color_space = JCS_GRAYSCALE;
      kind = PIXEL_GRAY;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      cinfo->out_color_space = JCS_CMYK;
      kind = cinfo->saw_Adobe_marker ? PIXEL_CMYK_INVERTED : PIXEL_CMYK;
      break;
    default:
      cinfo->out_color_space = JCS_RGB;
      break;
  }
  uint32_t tw = 0, th = 0;
  target_size(w, h, c->longest, &tw, &th);
  /* The decoder's own scaling (1/2, 1/4, 1/8) does most of the shrinking for free. */
  unsigned denom = 8;
  while (denom > 1 && ((w + denom - 1) / denom < tw || (h + denom - 1) / denom < th)) denom /= 2;
  cinfo->scale_num = 1;
  cinfo->scale_denom = denom;
  cinfo->dct_method = JDCT_ISLOW;
  jpeg_start_decompress(cinfo);
  const uint32_t sw = cinfo->output_width, sh = cinfo->output_height;
  if (sw == 0 || sh == 0 ||
      (cinfo->output_components != 1 && cinfo->output_components != 3 &&
       cinfo->output_components != 4)) {
    c->status = SOTTO_IMAGE_UNSUPPORTED;
    return;
  }
  if (tw > sw) tw = sw;
  if (th > sh) th = sh;
  c->scaler.sw = sw;
  c->scaler.sh = sh;
  c->scaler.tw = tw;
  c->scaler.th = th;
  c->out->out_width = tw;
  c->out->out_height = th;
  JSAMPARRAY row = (*cinfo->mem->alloc_sarray)((j_common_ptr)cinfo, JPOOL_IMAGE,
                                               sw * (JDIMENSION)cinfo->output_components, 1);
  while (cinfo->output_scanline < sh) {
    const JDIMENSION y = cinfo->output_scanline;
    if (jpeg_read_scanlines(cinfo, row, 1) != 1) {
      c->status = SOTTO_IMAGE_MALFORMED;
      return;
    }
    scaler_add(&c->scaler, row[0], kind, y);
  }
  if (!scaler_finish(&c->scaler)) c->status = SOTTO_IMAGE_MALFORMED;
}

static int decode_jpeg(struct reader* reader, const struct sotto_image_limits* limits,
                       uint32_t longest, uint8_t* rgb, struct sotto_image_decoded* out) {
  struct jpeg_context* c = (struct jpeg_context*)calloc(1, sizeof *c);
  if (c == NULL) return SOTTO_IMAGE_NO_MEMORY;
  c->reader = reader;
  c->limits = limits;
  c->longest = longest;
  c->out = out;
  c->cinfo.err = jpeg_std_error(&c->error);
  c->error.error_exit = jpeg_on_error;
  c->error.emit_message = jpeg_on_message;
  c->error.output_message = jpeg_on_output;
  c->source.init_source = jpeg_source_init;
  c->source.fill_input_buffer = jpeg_source_fill;
  c->source.skip_input_data = jpeg_source_skip;
  c->source.resync_to_restart = jpeg_resync_to_restart;
  c->source.term_source = jpeg_source_term;
  c->progress.progress_monitor = jpeg_on_progress;
  scaler_init(&c->scaler, 1, 1, 1, 1, rgb);
  run_jpeg(c);
  jpeg_destroy_decompress(&c->cinfo);
  const int status = c->status;
  free(c);
  return status;
}

int sotto_image_decode_scaled(const struct sotto_image_source* source,
                              const struct sotto_image_limits* limits, uint32_t longest,
                              uint8_t* rgb, struct sotto_image_decoded* out) {
  if (source == NULL || limits == NULL || rgb == NULL || out == NULL || longest == 0 ||
      longest > SOTTO_IMAGE_MAX_OUTPUT_SIDE) {
    return SOTTO_IMAGE_UNSUPPORTED;
  }
  memset(out, 0, sizeof *out);
  struct reader* reader = (struct reader*)malloc(sizeof *reader);
  if (reader == NULL) return SOTTO_IMAGE_NO_MEMORY;
  reader->source = source;
  reader->pos = 0;
  reader->failed = 0;
  uint8_t magic[8] = {0};
  const size_t n = reader_read(reader, magic, sizeof magic);
  reader->pos = 0;
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  int status = SOTTO_IMAGE_UNSUPPORTED;
  if (reader->failed) {
    status = SOTTO_IMAGE_READ_ERROR;
  } else if (n == 8 && memcmp(magic, kPng, 8) == 0) {
    status = decode_png(reader, limits, longest, rgb, out);
  } else if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    status = decode_jpeg(reader, limits, longest, rgb, out);
  }
  free(reader);
  if (status != SOTTO_IMAGE_OK) {
    out->out_width = 0;
    out->out_height = 0;
  }
  return status;
}

/* ---- JPEG encoding -------------------------------------------------------------------------- */

struct encode_context {
  struct jpeg_error_mgr error; /* first, as above */
  jmp_buf jump;
  int status;
  const uint8_t* rgb;
  uint32_t width, height;
  int quality;
  int progressive;
  uint8_t* out;
  size_t capacity;
  int overflow;
  struct jpeg_destination_mgr dest;
  struct jpeg_compress_struct cinfo;
};

static void encode_on_error(j_common_ptr cinfo) {
  struct encode_context* c = (struct encode_context*)cinfo->err;
  if (c->status == SOTTO_IMAGE_OK) c->status = SOTTO_IMAGE_MALFORMED;
  longjmp(c->jump, 1);
}

static void encode_dest_init(j_compress_ptr cinfo) {
  struct encode_context* c = (struct encode_context*)cinfo->err;
  c->dest.next_output_byte = c->out;
  c->dest.free_in_buffer = c->capacity;
}

/* The buffer is full: the JPEG will not fit. Go on writing over the start (the result is thrown
 * away) rather than stop libjpeg half way. */
static boolean encode_dest_empty(j_compress_ptr cinfo) {
  struct encode_context* c = (struct encode_context*)cinfo->err;
  c->overflow = 1;
  c->dest.next_output_byte = c->out;
  c->dest.free_in_buffer = c->capacity;
  return TRUE;
}

static void encode_dest_term(j_compress_ptr cinfo) {
  (void)cinfo;
}

static void run_encode(struct encode_context* c) {
  if (setjmp(c->jump)) return;
  j_compress_ptr cinfo = &c->cinfo;
  jpeg_create_compress(cinfo);
  cinfo->dest = &c->dest;
  cinfo->image_width = c->width;
  cinfo->image_height = c->height;
  cinfo->input_components = 3;
  cinfo->in_color_space = JCS_RGB;
  jpeg_set_defaults(cinfo);
  jpeg_set_quality(cinfo, c->quality, TRUE);
  cinfo->optimize_coding = TRUE;
  if (c->progressive) jpeg_simple_progression(cinfo);
  jpeg_start_compress(cinfo, TRUE);
  while (cinfo->next_scanline < cinfo->image_height) {
    /* libjpeg's row type is not const; it only reads the rows. */
    JSAMPROW row = (JSAMPROW)(uintptr_t)(c->rgb + (size_t)cinfo->next_scanline * c->width * 3);
    jpeg_write_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_compress(cinfo);
}

int sotto_image_encode_jpeg(const uint8_t* rgb, uint32_t width, uint32_t height, int quality,
                            int progressive, uint8_t* out, size_t capacity, size_t* size) {
  if (rgb == NULL || out == NULL || size == NULL || capacity == 0 || width == 0 || height == 0 ||
      width > SOTTO_IMAGE_MAX_ENCODE_SIDE || height > SOTTO_IMAGE_MAX_ENCODE_SIDE || quality < 1 ||
      quality > 100) {
    return SOTTO_IMAGE_UNSUPPORTED;
  }
  *size = 0;
  struct encode_context* c = (struct encode_context*)calloc(1, sizeof *c);
  if (c == NULL) return SOTTO_IMAGE_NO_MEMORY;
  c->rgb = rgb;
  c->width = width;
  c->height = height;
  c->quality = quality;
  c->progressive = progressive;
  c->out = out;
  c->capacity = capacity;
  c->cinfo.err = jpeg_std_error(&c->error);
  c->error.error_exit = encode_on_error;
  c->error.output_message = jpeg_on_output;
  c->dest.init_destination = encode_dest_init;
  c->dest.empty_output_buffer = encode_dest_empty;
  c->dest.term_destination = encode_dest_term;
  run_encode(c);
  int status = c->status;
  if (status == SOTTO_IMAGE_OK && c->overflow) status = SOTTO_IMAGE_TOO_LARGE;
  if (status == SOTTO_IMAGE_OK) *size = c->capacity - c->dest.free_in_buffer;
  jpeg_destroy_compress(&c->cinfo);
  free(c);
  return status;
}
