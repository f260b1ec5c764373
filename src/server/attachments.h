// The attachment service (docs/attachments.md): the four requests of service.proto fields 50-53
// (create an upload, append a chunk, ask how far an upload got, read a chunk) over the blob
// store (store/server/blob_store.h), with the limits of docs/abuse.md (size, per-account quota,
// per-account rates). It sees only ciphertext and the sizes of blobs.
//
// Ownership: owns its BlobStore (opened from the configuration's data directory: without one,
// every request is answered UNAVAILABLE), its rate buckets and a commit thread (the fsync that
// completes an upload). Thread-safe: requests arrive on several I/O threads; the blob store
// serialises what must be.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

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
  // The write that completes a blob is answered after its fsync, here on the caller's thread.
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
  // With `commit` set, the write that completes a blob is not made durable here: *commit is
  // set to the blob's id and its completed expiry, and the caller must have commit_later() do it
  // before `out` is sent.
  struct PendingCommit {
    store::BlobId id{};
    std::uint64_t expires_at = 0;
  };
  void on_write(store::AccountId account, const wire::service::Request& r,
                wire::service::Response& out, std::optional<PendingCommit>* commit = nullptr);
  // On the commit thread: fsync the blob and mark it complete, then send `out` on `session`.
  void commit_later(SessionPtr session, PendingCommit commit, wire::service::Response out);
  void commit_loop();
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
  // The commit thread: the fsync that completes an upload (up to the whole blob's writeback)
  // runs there rather than on an I/O thread, where it would stall every connection of that
  // thread. Jobs run in order; the destructor finishes them, then joins.
  std::mutex commit_mutex_;
  std::condition_variable commit_cv_;
  std::deque<std::function<void()>> commit_jobs_;
  bool commit_stop_ = false;
  std::thread commit_thread_;
};

}  // namespace sotto::server
