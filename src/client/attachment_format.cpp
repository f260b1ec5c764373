#include "client/attachment_format.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "client/image_thumbnail.h"
#include "content.pb.h"

namespace sotto::client {

std::uint64_t attachment_chunks(std::uint64_t size, std::uint32_t chunk_size) {
  if (chunk_size == 0) return 0;
  return std::max<std::uint64_t>(1, (size + chunk_size - 1) / chunk_size);
}

std::uint64_t attachment_ciphertext_size(std::uint64_t size, std::uint32_t chunk_size) {
  return crypto::kSecretStreamHeaderSize + size +
         attachment_chunks(size, chunk_size) * crypto::kSecretStreamOverhead;
}

static_assert(kMaxAttachmentThumbnailBytes == kMaxThumbnailBytes);

void drop_bad_thumbnail(wire::content::AttachmentPointer& p) {
  if (p.thumbnail().empty()) return;
  if (!check_thumbnail(as_bytes(p.thumbnail()))) p.clear_thumbnail();
}

std::string check_pointer(const wire::content::AttachmentPointer& p) {
  if (p.id().size() != 16) return "its id is not 16 bytes";
  if (p.key().size() != crypto::kSecretStreamKeySize) return "its key is not 32 bytes";
  if (p.digest().size() != 32) return "its digest is not 32 bytes";
  if (p.chunk_size() == 0 || p.chunk_size() > kMaxAttachmentChunkSize) {
    return "its chunk size is out of range";
  }
  if (p.size() > kMaxAttachmentSize) return "it is larger than this client accepts";
  if (p.ciphertext_size() != attachment_ciphertext_size(p.size(), p.chunk_size())) {
    return "its ciphertext size does not match its size";
  }
  if (p.file_name().size() > kMaxAttachmentNameBytes ||
      p.content_type().size() > kMaxAttachmentTypeBytes ||
      p.caption().size() > kMaxAttachmentCaptionBytes ||
      p.thumbnail().size() > kMaxAttachmentThumbnailBytes) {
    return "a field is longer than allowed";
  }
  return {};
}

Bytes encode_upload_state(const UploadState& s) {
  Bytes out;
  out.reserve(kUploadStateSize);
  out.insert(out.end(), s.id.begin(), s.id.end());
  out.insert(out.end(), s.key.begin(), s.key.end());
  out.insert(out.end(), s.header.begin(), s.header.end());
  return out;
}

std::optional<UploadState> decode_upload_state(ByteView bytes) {
  if (bytes.size() != kUploadStateSize) return std::nullopt;
  UploadState s;
  std::memcpy(s.id.data(), bytes.data(), s.id.size());
  std::memcpy(s.key.data(), bytes.data() + 16, s.key.size());
  std::memcpy(s.header.data(), bytes.data() + 16 + s.key.size(), s.header.size());
  return s;
}

std::string safe_file_name(std::string_view sent) {
  if (auto slash = sent.find_last_of("/\\"); slash != std::string_view::npos) {
    sent = sent.substr(slash + 1);
  }
  std::string out;
  for (char c : sent) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == ':') continue;
    out += c;
  }
  while (!out.empty() && (out.front() == '.' || out.front() == ' ')) out.erase(out.begin());
  if (out.size() > kMaxAttachmentNameBytes) out.resize(kMaxAttachmentNameBytes);
  // A cut in the middle of a UTF-8 sequence leaves continuation bytes at the end.
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
  if (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0xC0) out.pop_back();
  if (out.empty()) return "attachment";
  return out;
}

namespace {

std::uint32_t be16(ByteView b, std::size_t at) {
  return (static_cast<std::uint32_t>(b[at]) << 8) | b[at + 1];
}
std::uint32_t be32(ByteView b, std::size_t at) {
  return (be16(b, at) << 16) | be16(b, at + 2);
}

}  // namespace

std::optional<ImageInfo> read_image_header(ByteView h) {
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (h.size() >= 24 && std::memcmp(h.data(), kPng, 8) == 0 &&
      std::memcmp(h.data() + 12, "IHDR", 4) == 0) {
    return ImageInfo{"image/png", be32(h, 16), be32(h, 20)};
  }
  if (h.size() >= 10 &&
      (std::memcmp(h.data(), "GIF87a", 6) == 0 || std::memcmp(h.data(), "GIF89a", 6) == 0)) {
    return ImageInfo{"image/gif", static_cast<std::uint32_t>(h[6] | (h[7] << 8)),
                     static_cast<std::uint32_t>(h[8] | (h[9] << 8))};
  }
  if (h.size() >= 4 && h[0] == 0xFF && h[1] == 0xD8) {
    // JPEG: walk the marker segments to the first start-of-frame.
    std::size_t at = 2;
    while (at + 4 <= h.size()) {
      if (h[at] != 0xFF) return std::nullopt;
      const std::uint8_t marker = h[at + 1];
      if (marker == 0xFF) {  // fill byte
        ++at;
        continue;
      }
      if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) {
        at += 2;
        continue;
      }
      const std::uint32_t length = be16(h, at + 2);
      if (length < 2) return std::nullopt;
      const bool sof =
          marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        if (at + 9 > h.size()) return std::nullopt;
        return ImageInfo{"image/jpeg", be16(h, at + 7), be16(h, at + 5)};
      }
      if (marker == 0xD9 || marker == 0xDA) return std::nullopt;  // no frame before the data
      at += 2 + length;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::string content_type_of(std::string_view name) {
  const auto dot = name.find_last_of('.');
  if (dot == std::string_view::npos) return "application/octet-stream";
  std::string ext;
  for (char c : name.substr(dot + 1)) {
    ext += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  static constexpr std::pair<std::string_view, std::string_view> kTypes[] = {
      {"png", "image/png"},       {"jpg", "image/jpeg"},      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},       {"webp", "image/webp"},     {"txt", "text/plain"},
      {"pdf", "application/pdf"}, {"zip", "application/zip"}, {"mp4", "video/mp4"},
      {"mp3", "audio/mpeg"},      {"ogg", "audio/ogg"},       {"json", "application/json"},
      {"html", "text/html"},      {"md", "text/markdown"},    {"csv", "text/csv"},
  };
  for (const auto& [e, type] : kTypes) {
    if (ext == e) return std::string(type);
  }
  return "application/octet-stream";
}

}  // namespace sotto::client
