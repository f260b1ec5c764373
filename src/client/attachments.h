// Attachments on the client (docs/attachments.md): a file is encrypted with a fresh key
// (libsodium's secretstream, through crypto/secretstream.h) as it is read, and its ciphertext
// uploaded to the server's blob store in chunks with several in flight; the pointer that comes
// back (content.proto AttachmentPointer: id, key, digest, sizes, name, type) travels inside the
// end-to-end message. A recipient downloads the ciphertext, decrypts it into a temporary file
// beside the destination, checks the digest and the stream's end, and only then moves the file
// into place. Memory stays bounded by a few chunks whatever the file's size.
//
// Uploads survive a lost connection (the server says how far it got and the upload goes on from
// there) and a stopped process: the upload's id, key and stream header are kept (sealed) in the
// client store until it completes, keyed by the file's path, size and modification time, so
// sending the same file again resumes it. Downloads resume after a lost connection.
//
// Thread-safe: each call works on its own state; requests go through the shared ServerLink.
#pragma once

#include <filesystem>
#include <string>

#include "client/account.h"
#include "client/server_link.h"
#include "content.pb.h"

namespace sotto::client {

// Chunks in flight on the connection. An upload's answers are small, so more of its chunks may
// be in flight; a download's answers are chunks, and the server closes a connection whose unsent
// bytes pass max_outbound_bytes (8 MiB by default; docs/abuse.md), so four at most.
inline constexpr std::size_t kUploadPipeline = 8;
inline constexpr std::size_t kDownloadPipeline = 4;

struct SavedFile {
  std::filesystem::path path;
  std::string sha256;  // of the plaintext, hex
  std::uint64_t size = 0;
};

class Attachments {
 public:
  Attachments(Account& account, ServerLink& link);

  // Encrypts and uploads `file`; the pointer to send (with a caption when given).
  [[nodiscard]] Result<wire::content::AttachmentPointer> upload(const std::filesystem::path& file,
                                                                const std::string& caption,
                                                                const Progress& progress);
  // Downloads, checks and decrypts the attachment into `dir` (created when missing) under its
  // file name (made unique when taken). Nothing is left in `dir` when any check fails.
  [[nodiscard]] Result<SavedFile> download(const wire::content::AttachmentPointer& pointer,
                                           const std::filesystem::path& dir,
                                           const Progress& progress);

 private:
  Account& account_;
  ServerLink& link_;
};

}  // namespace sotto::client
