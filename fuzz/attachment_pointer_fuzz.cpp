// Fuzzes what a client reads of an attachment (src/client/attachment_format.h): a received
// AttachmentPointer's checks, the saved upload state, the file name a received file is saved
// under, and the image header reader. Checked besides "no crash": a pointer that passes has the
// sizes it must (so a download allocates at most a chunk); the upload state decodes only from
// its exact size and encodes back to the same bytes; a saved name is never empty, never has a
// path separator or a leading dot, and fits in 255 bytes; a pointer's check is the same after a
// round trip through its encoding.
#include <cstdint>
#include <string>

#include "client/attachment_format.h"
#include "content.pb.h"
#include "fuzz_check.h"

using namespace sotto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView bytes(data, size);
  wire::content::AttachmentPointer p;
  if (p.ParseFromArray(data, static_cast<int>(size))) {
    const std::string why = client::check_pointer(p);
    if (why.empty()) {
      fuzz::require(p.id().size() == 16 && p.key().size() == 32 && p.digest().size() == 32,
                    "a good pointer's id, key and digest sizes");
      fuzz::require(p.chunk_size() >= 1 && p.chunk_size() <= client::kMaxAttachmentChunkSize,
                    "a good pointer's chunk size");
      fuzz::require(
          p.ciphertext_size() == client::attachment_ciphertext_size(p.size(), p.chunk_size()),
          "a good pointer's ciphertext size");
    }
    wire::content::AttachmentPointer again;
    fuzz::require(again.ParseFromString(p.SerializeAsString()), "a pointer re-encodes");
    fuzz::require(client::check_pointer(again) == why, "the check survives a round trip");
    const std::string name = client::safe_file_name(p.file_name());
    fuzz::require(!name.empty() && name.size() <= client::kMaxAttachmentNameBytes,
                  "a saved name's length");
    fuzz::require(name.find('/') == std::string::npos && name.find('\\') == std::string::npos &&
                      name.front() != '.',
                  "a saved name has no separator or leading dot");
  }
  if (auto s = client::decode_upload_state(bytes)) {
    fuzz::require(size == client::kUploadStateSize, "the upload state's size");
    fuzz::require(fuzz::same_bytes(client::encode_upload_state(*s), bytes),
                  "the upload state re-encodes");
  } else {
    fuzz::require(size != client::kUploadStateSize, "any exact-size upload state decodes");
  }
  const std::string name =
      client::safe_file_name(std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::require(!name.empty() && name.find('/') == std::string::npos && name.front() != '.',
                "a saved name from any bytes");
  (void)client::read_image_header(bytes);
  (void)client::content_type_of(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
