// The attachment format's pure parts (docs/attachments.md), with no file, socket or store: the
// ciphertext layout of a file encrypted with libsodium's secretstream, the checks a received
// AttachmentPointer must pass before anything is downloaded, the saved upload state that lets a
// later run resume an upload, a safe local file name, and the image dimensions read from a
// PNG, JPEG or GIF header (no decoder: the headers only). Everything here reads untrusted bytes
// without throwing and is fuzzed (fuzz/attachment_pointer_fuzz.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "crypto/bytes.h"
#include "crypto/secretstream.h"

namespace sotto::wire::content {
class AttachmentPointer;
}  // namespace sotto::wire::content

namespace sotto::client {

// Plaintext bytes per secretstream message.
inline constexpr std::uint32_t kAttachmentChunkSize = 64 * 1024;
// A pointer's chunk size must lie in this range (a peer's pointer could otherwise make the
// reader allocate without bound).
inline constexpr std::uint32_t kMaxAttachmentChunkSize = 1024 * 1024;
// The largest plaintext this client sends or accepts (the server has its own limit).
inline constexpr std::uint64_t kMaxAttachmentSize = 4ull << 30;
inline constexpr std::size_t kMaxAttachmentNameBytes = 255;
inline constexpr std::size_t kMaxAttachmentTypeBytes = 127;
inline constexpr std::size_t kMaxAttachmentCaptionBytes = 4096;
inline constexpr std::size_t kMaxAttachmentThumbnailBytes = 8 * 1024;
inline constexpr std::size_t kMaxAttachmentsPerMessage = 32;

// Ciphertext: the secretstream header, then ceil(size / chunk) messages (at least one), each
// chunk_size plaintext bytes (the last one fewer) plus kSecretStreamOverhead; the last tagged
// final.
[[nodiscard]] std::uint64_t attachment_chunks(std::uint64_t size, std::uint32_t chunk_size);
[[nodiscard]] std::uint64_t attachment_ciphertext_size(std::uint64_t size,
                                                       std::uint32_t chunk_size);

// Clears a received pointer's thumbnail unless check_thumbnail() (image_thumbnail.h) accepts it:
// at most 8 KiB, a PNG or JPEG that decodes. The rest of the pointer is kept.
void drop_bad_thumbnail(wire::content::AttachmentPointer& p);

// Why a received pointer cannot be downloaded (empty: it can): sizes of the id, key and digest,
// the chunk size's range, the ciphertext size the plaintext size implies, the lengths of the
// text fields, the thumbnail's.
[[nodiscard]] std::string check_pointer(const wire::content::AttachmentPointer& p);

// An upload under way, saved (sealed) in the client store so that a later run resumes it: the
// server's blob id, the key and the stream header (the ciphertext is then the same again).
struct UploadState {
  std::array<std::uint8_t, 16> id{};
  std::array<std::uint8_t, crypto::kSecretStreamKeySize> key{};
  crypto::SecretStreamHeader header{};
};
inline constexpr std::size_t kUploadStateSize =
    16 + crypto::kSecretStreamKeySize + crypto::kSecretStreamHeaderSize;
[[nodiscard]] Bytes encode_upload_state(const UploadState& s);
// nullopt unless exactly kUploadStateSize bytes.
[[nodiscard]] std::optional<UploadState> decode_upload_state(ByteView bytes);

// A name to save a received file under: the last path component of what the sender called it,
// without control characters, separators or a leading dot, at most 255 bytes; "attachment"
// when nothing is left.
[[nodiscard]] std::string safe_file_name(std::string_view sent);

struct ImageInfo {
  std::string content_type;
  std::uint32_t width = 0;
  std::uint32_t height = 0;
};
// The type and dimensions of a PNG, JPEG or GIF from its first bytes; nullopt for anything else
// (or a header cut short).
[[nodiscard]] std::optional<ImageInfo> read_image_header(ByteView head);
// A MIME type from a file name's extension (application/octet-stream when unknown).
[[nodiscard]] std::string content_type_of(std::string_view file_name);

}  // namespace sotto::client
