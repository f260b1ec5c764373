// The `attachment` phase of sotto-load (docs/attachments.md): one account made with the client
// library uploads a file of the given size to the server under test and downloads it again, and
// the same bytes are copied over a plain TLS 1.3 connection on loopback (OpenSSL on both ends,
// the receiver writing them to a file and fsyncing it, as the blob store does; and discarding
// them), so that the attachment figures can be read against what the machine's TLS and disk
// allow. Not thread-safe; runs on main's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace sotto::load {

struct AttachmentFigures {
  double upload_mb_s = 0;  // 10^6 bytes of plaintext per second
  double download_mb_s = 0;
  double tls_copy_mb_s = 0;       // receiver discards
  double tls_copy_disk_mb_s = 0;  // receiver writes and fsyncs
  std::string error;              // empty: measured
};

// The data directory of a server whose TLS key (DIR/tls/cert.pem, key.pem) the plain copy may use
// (the spawned one); without it the copy makes a key of its own.
void set_tls_identity_dir(const std::filesystem::path& data_dir);

[[nodiscard]] AttachmentFigures measure_attachments(const std::string& host, std::uint16_t port,
                                                    const std::string& fingerprint,
                                                    std::size_t bytes);

}  // namespace sotto::load
