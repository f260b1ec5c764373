// The attachment service (docs/attachments.md): the four requests of service.proto fields 50-53
// (create an upload, append a chunk, ask how far an upload got, read a chunk) over the blob
// store (store/server/blob_store.h), with the limits of docs/abuse.md (size, per-account quota,
// per-account rates). It sees only ciphertext and the sizes of blobs.
//
// Ownership: owns its BlobStore (opened from the configuration's data directory: without one,
// every request is answered UNAVAILABLE) and its rate buckets. Thread-safe: requests arrive on
// several I/O threads; the blob store serialises what must be.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "crypto/rng.h"
#include "server/config.h"
#include "server/rate_limiter.h"
#include "server/service.h"
#include "store/server/blob_store.h"

namespace sotto::wire::service {
class Request;
class Response;
}  // namespace sotto::wire::service

namespace sotto::server {

// The largest chunk a write may carry or a read return: a Frame with it stays well under the
// default 2 MiB frame limit, and a few of them in flight keep a link busy without going past the
// per-connection read pause (docs/abuse.md).
inline constexpr std::uint32_t kAttachmentChunkBytes = 1024 * 1024;

class AttachmentService final : public Service {
 public:
  using NowMs = std::function<std::uint64_t()>;
  AttachmentService(const ServerConfig& config, crypto::Rng& rng, NowMs now_ms);
  ~AttachmentService();

  // Whether `request` is one of this service's.
  [[nodiscard]] static bool handles(const wire::service::Request& request);
  // Answers one request of an authenticated `account` in `out` (whose status is OK on entry).
  void handle(store::AccountId account, const wire::service::Request& request,
              wire::service::Response& out);
  // Deletes expired blobs and orphaned files; returns how many blobs went.
  std::size_t sweep();

  // Service: the four requests for logged-in sessions, and the sweep as housekeeping.
  void add_routes(Router& router) override;
  void maintenance() override { (void)sweep(); }

  // The largest chunk for this configuration (kAttachmentChunkBytes, or less under a small
  // max_frame_bytes).
  [[nodiscard]] std::uint32_t chunk_bytes() const { return chunk_bytes_; }
  // The blob store, or null when the server has no data directory (tests).
  [[nodiscard]] store::BlobStore* blobs() { return blobs_.get(); }

 private:
  void on_create(store::AccountId account, const wire::service::Request& r,
                 wire::service::Response& out);
  void on_write(store::AccountId account, const wire::service::Request& r,
                wire::service::Response& out);
  void on_status(store::AccountId account, const wire::service::Request& r,
                 wire::service::Response& out);
  void on_read(store::AccountId account, const wire::service::Request& r,
               wire::service::Response& out);
  // The free space of the data directory's file system minus min_free_disk_bytes allows `bytes`.
  bool disk_allows(std::uint64_t bytes) const;

  ServerConfig config_;
  crypto::Rng& rng_;
  NowMs now_ms_;
  std::uint32_t chunk_bytes_;
  std::unique_ptr<store::BlobStore> blobs_;
  std::mutex create_mutex_;  // a quota check and its reservation happen together
  RateLimiter uploads_;
  RateLimiter upload_bytes_;
  RateLimiter download_bytes_;
};

}  // namespace sotto::server
