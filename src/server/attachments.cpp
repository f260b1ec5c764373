#include "server/attachments.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstring>

#include "server/router.h"
#include "service.pb.h"
#ifdef SOTTO_HAVE_POSTGRES
#include "store/server/postgres/pg_store.h"
#endif

namespace sotto::server {

namespace svc = sotto::wire::service;

namespace {

// Room in a frame for everything around a chunk's bytes (ids, offsets, the frame's own fields).
constexpr std::size_t kFrameOverhead = 4096;

void refuse(svc::Response& out, svc::Code code, std::string_view message,
            std::uint32_t retry_after_ms = 0) {
  out.mutable_status()->set_code(code);
  out.mutable_status()->set_message(std::string(message));
  if (retry_after_ms != 0) out.mutable_status()->set_retry_after_ms(retry_after_ms);
}

std::optional<store::BlobId> blob_id(const std::string& bytes) {
  if (bytes.size() != store::kBlobIdSize) return std::nullopt;
  store::BlobId id{};
  std::memcpy(id.data(), bytes.data(), id.size());
  return id;
}

std::string account_key(store::AccountId account) {
  return std::to_string(account);
}

std::uint32_t bucket_burst(std::uint64_t per_minute) {
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(per_minute / 2, UINT32_MAX));
}

}  // namespace

AttachmentService::AttachmentService(const ServerConfig& config, crypto::Rng& rng, NowMs now_ms)
    : config_(config),
      rng_(rng),
      now_ms_(std::move(now_ms)),
      chunk_bytes_(static_cast<std::uint32_t>(
          std::min<std::size_t>(kAttachmentChunkBytes, config.max_frame_bytes > 2 * kFrameOverhead
                                                           ? config.max_frame_bytes - kFrameOverhead
                                                           : kFrameOverhead))),
      uploads_(config.attachment_uploads_per_hour, std::chrono::hours(1),
               config.attachment_uploads_per_hour),
      upload_bytes_(RateLimiter::Rate{
          static_cast<double>(config.attachment_upload_bytes_per_minute) / 60.0,
          static_cast<double>(bucket_burst(config.attachment_upload_bytes_per_minute))}),
      download_bytes_(RateLimiter::Rate{
          static_cast<double>(config.attachment_download_bytes_per_minute) / 60.0,
          static_cast<double>(bucket_burst(config.attachment_download_bytes_per_minute))}) {
  if (config_.data_dir.empty() || config_.max_attachment_bytes == 0) return;
  auto opened = store::BlobStore::open(config_.data_dir);
#ifdef SOTTO_HAVE_POSTGRES
  // On PostgreSQL the rows live there too; the blob files stay under the data directory.
  if (store::is_postgres_store(config_.store)) {
    auto rows = store::open_postgres_blob_rows(
        config_.store, [](std::string_view line) { spdlog::error("event=store {}", line); });
    opened = rows ? store::BlobStore::open(config_.data_dir, std::move(*rows))
                  : tl::unexpected(rows.error());
  }
#endif
  if (!opened) {
    spdlog::error("event=attachments_unavailable dir=\"{}\" (the blob store cannot be opened)",
                  (config_.data_dir / "blobs").string());
    return;
  }
  blobs_ = std::move(*opened);
  commit_thread_ = std::thread([this] { commit_loop(); });
}

AttachmentService::~AttachmentService() {
  {
    std::lock_guard lock(commit_mutex_);
    commit_stop_ = true;
  }
  commit_cv_.notify_all();
  if (commit_thread_.joinable()) commit_thread_.join();
}

void AttachmentService::commit_loop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(commit_mutex_);
      commit_cv_.wait(lock, [this] { return commit_stop_ || !commit_jobs_.empty(); });
      if (commit_jobs_.empty()) return;  // stopping, and nothing left to finish
      job = std::move(commit_jobs_.front());
      commit_jobs_.pop_front();
    }
    job();
  }
}

void AttachmentService::commit_later(SessionPtr session, PendingCommit commit, svc::Response out) {
  auto job = [this, session = std::move(session), commit, out = std::move(out)]() mutable {
    auto done = blobs_->commit(commit.id, commit.expires_at);
    if (done) {
      out.mutable_attachment_write()->set_received(done->received);
      out.mutable_attachment_write()->set_complete(true);
    } else {
      out.clear_attachment_write();
      refuse(out, svc::INTERNAL, "storage error");
    }
    send_response(*session, std::move(out));
  };
  {
    std::lock_guard lock(commit_mutex_);
    commit_jobs_.push_back(std::move(job));
  }
  commit_cv_.notify_one();
}

bool AttachmentService::handles(const svc::Request& r) {
  return r.has_attachment_create() || r.has_attachment_write() || r.has_attachment_status() ||
         r.has_attachment_read();
}

void AttachmentService::handle(store::AccountId account, const svc::Request& r,
                               svc::Response& out) {
  if (!blobs_) {
    refuse(out, svc::UNAVAILABLE, "this server does not store attachments");
    return;
  }
  if (r.has_attachment_create()) {
    on_create(account, r, out);
  } else if (r.has_attachment_write()) {
    on_write(account, r, out);
  } else if (r.has_attachment_status()) {
    on_status(account, r, out);
  } else if (r.has_attachment_read()) {
    on_read(account, r, out);
  } else {
    refuse(out, svc::BAD_REQUEST, "not an attachment request");
  }
}

bool AttachmentService::disk_allows(std::uint64_t bytes) const {
  if (config_.min_free_disk_bytes == 0) return true;
  struct statvfs fs {};
  if (statvfs(config_.data_dir.c_str(), &fs) != 0) return true;
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  return free_bytes >= config_.min_free_disk_bytes &&
         free_bytes - config_.min_free_disk_bytes >= bytes;
}

void AttachmentService::on_create(store::AccountId account, const svc::Request& r,
                                  svc::Response& out) {
  const std::uint64_t size = r.attachment_create().size();
  if (size == 0) {
    refuse(out, svc::BAD_REQUEST, "an attachment must have at least one byte");
    return;
  }
  if (size > config_.max_attachment_bytes) {
    refuse(out, svc::TOO_LARGE,
           "attachment too large: at most " + std::to_string(config_.max_attachment_bytes) +
               " bytes of ciphertext on this server");
    return;
  }
  if (!uploads_.allow(account_key(account))) {
    refuse(out, svc::RATE_LIMITED, "too many attachment uploads begun by this account",
           static_cast<std::uint32_t>(
               3'600'000 / std::max<std::uint32_t>(1, config_.attachment_uploads_per_hour)));
    return;
  }
  if (!disk_allows(size)) {
    refuse(out, svc::UNAVAILABLE, "server storage is full (its disk is almost full)", 30'000);
    return;
  }
  const std::uint64_t now_s = now_ms_() / 1000;
  const std::uint64_t expires_at = now_s + config_.attachment_upload_ttl_hours * 3600;
  std::lock_guard lock(create_mutex_);
  auto used = blobs_->account_bytes(account);
  if (!used) {
    refuse(out, svc::INTERNAL, "storage error");
    return;
  }
  if (*used + size > config_.attachment_quota_bytes) {
    refuse(out, svc::FORBIDDEN,
           "attachment quota exceeded: this account's attachments hold " + std::to_string(*used) +
               " of " + std::to_string(config_.attachment_quota_bytes) +
               " bytes until they expire");
    return;
  }
  store::BlobId id{};
  for (int attempt = 0; attempt < 3; ++attempt) {
    rng_.fill(id);
    auto created = blobs_->create(id, account, size, expires_at);
    if (created) {
      auto* body = out.mutable_attachment_create();
      body->set_id(std::string(reinterpret_cast<const char*>(id.data()), id.size()));
      body->set_max_chunk_bytes(chunk_bytes_);
      body->set_expires_at(expires_at);
      return;
    }
    if (created.error() != store::Error::conflict) break;
  }
  refuse(out, svc::INTERNAL, "storage error");
}

void AttachmentService::on_write(store::AccountId account, const svc::Request& r,
                                 svc::Response& out, std::optional<PendingCommit>* commit) {
  const auto& w = r.attachment_write();
  auto id = blob_id(w.id());
  if (!id) {
    refuse(out, svc::BAD_REQUEST, "attachment id must be 16 bytes");
    return;
  }
  if (w.data().empty() || w.data().size() > chunk_bytes_) {
    refuse(out, svc::BAD_REQUEST,
           "a chunk must carry 1 to " + std::to_string(chunk_bytes_) + " bytes");
    return;
  }
  if (auto wait = upload_bytes_.take(account_key(account), static_cast<double>(w.data().size()));
      wait != 0) {
    refuse(out, svc::RATE_LIMITED, "too many attachment bytes uploaded by this account", wait);
    return;
  }
  auto record = blobs_->find(*id);
  if (!record || record->account != account) {
    // Another account's upload is answered as an unknown one: ids are not confirmed to others.
    refuse(out, svc::NOT_FOUND, "no such upload");
    return;
  }
  if (record->complete) {
    out.mutable_attachment_write()->set_received(record->received);
    out.mutable_attachment_write()->set_complete(true);
    refuse(out, svc::CONFLICT, "the upload is already complete");
    return;
  }
  if (w.offset() != record->received) {
    out.mutable_attachment_write()->set_received(record->received);
    refuse(out, svc::CONFLICT, "the write's offset is not the bytes received so far");
    return;
  }
  if (w.offset() + w.data().size() > record->size) {
    refuse(out, svc::BAD_REQUEST, "the chunk goes past the attachment's announced size");
    return;
  }
  const std::uint64_t complete_expires = now_ms_() / 1000 + config_.attachment_ttl_days * 86400;
  auto written = blobs_->append(
      *id, w.offset(),
      ByteView(reinterpret_cast<const std::uint8_t*>(w.data().data()), w.data().size()),
      complete_expires, commit == nullptr);
  if (!written) {
    if (written.error() == store::Error::conflict) {
      // Another write to the same upload got there first.
      if (auto now = blobs_->find(*id)) out.mutable_attachment_write()->set_received(now->received);
      refuse(out, svc::CONFLICT, "the write's offset is not the bytes received so far");
      return;
    }
    refuse(out, svc::INTERNAL, "storage error");
    return;
  }
  out.mutable_attachment_write()->set_received(written->received);
  out.mutable_attachment_write()->set_complete(written->complete);
  if (commit != nullptr && !written->complete && written->received == written->size) {
    *commit = PendingCommit{*id, complete_expires};
  }
}

void AttachmentService::on_status(store::AccountId account, const svc::Request& r,
                                  svc::Response& out) {
  auto id = blob_id(r.attachment_status().id());
  if (!id) {
    refuse(out, svc::BAD_REQUEST, "attachment id must be 16 bytes");
    return;
  }
  auto record = blobs_->find(*id);
  if (!record || record->account != account || record->expires_at <= now_ms_() / 1000) {
    refuse(out, svc::NOT_FOUND, "no such upload");
    return;
  }
  if (!record->complete && record->received == record->size) {
    // Every byte is in but the upload was never made complete (the server stopped during the
    // commit, or it is under way on the commit thread): do it now, so that the uploader does not
    // take the blob for complete while readers are refused.
    auto done = blobs_->commit(*id, now_ms_() / 1000 + config_.attachment_ttl_days * 86400);
    if (!done) {
      refuse(out, svc::INTERNAL, "storage error");
      return;
    }
    record = done;
  }
  auto* body = out.mutable_attachment_status();
  body->set_size(record->size);
  body->set_received(record->received);
  body->set_complete(record->complete);
  body->set_expires_at(record->expires_at);
  body->set_max_chunk_bytes(chunk_bytes_);
}

void AttachmentService::on_read(store::AccountId account, const svc::Request& r,
                                svc::Response& out) {
  const auto& rd = r.attachment_read();
  auto id = blob_id(rd.id());
  if (!id) {
    refuse(out, svc::BAD_REQUEST, "attachment id must be 16 bytes");
    return;
  }
  if (rd.length() == 0) {
    refuse(out, svc::BAD_REQUEST, "a read must ask for at least one byte");
    return;
  }
  const std::uint32_t length = std::min(rd.length(), chunk_bytes_);
  if (auto wait = download_bytes_.take(account_key(account), static_cast<double>(length));
      wait != 0) {
    refuse(out, svc::RATE_LIMITED, "too many attachment bytes downloaded by this account", wait);
    return;
  }
  auto record = blobs_->find(*id);
  if (!record || !record->complete || record->expires_at <= now_ms_() / 1000) {
    refuse(out, svc::NOT_FOUND, "no such attachment (unknown, not complete, or expired)");
    return;
  }
  if (rd.offset() > record->size) {
    refuse(out, svc::BAD_REQUEST, "the read starts past the attachment's end");
    return;
  }
  // Read straight into the answer's field (the record above was checked: no second lookup).
  const std::size_t n =
      static_cast<std::size_t>(std::min<std::uint64_t>(length, record->size - rd.offset()));
  auto* body = out.mutable_attachment_read();
  auto data = blobs_->read_file(*id, rd.offset(), n, *body->mutable_data());
  if (!data) {
    out.clear_attachment_read();
    refuse(out, data.error() == store::Error::not_found ? svc::NOT_FOUND : svc::INTERNAL,
           data.error() == store::Error::not_found ? "no such attachment" : "storage error");
    return;
  }
  body->set_size(record->size);
}

void AttachmentService::add_routes(Router& router) {
  const auto account_of = [](Call& c) {
    std::lock_guard lock(c.session->mutex);
    return c.session->account;
  };
  const auto call = [this, account_of](Call& c) {
    handle(account_of(c), c.request, c.out);
    return Outcome::reply;
  };
  for (const auto kind : {svc::Request::kAttachmentCreate, svc::Request::kAttachmentStatus,
                          svc::Request::kAttachmentRead}) {
    router.route(kind, Router::Access::logged_in, call);
  }
  // A write is answered at once, except the one that completes a blob: that one after its fsync,
  // which the commit thread does.
  router.route(svc::Request::kAttachmentWrite, Router::Access::logged_in,
               [this, account_of](Call& c) {
                 if (!blobs_) {
                   handle(account_of(c), c.request, c.out);
                   return Outcome::reply;
                 }
                 std::optional<PendingCommit> commit;
                 on_write(account_of(c), c.request, c.out, &commit);
                 if (!commit) return Outcome::reply;
                 commit_later(c.session, *commit, std::move(c.out));
                 return Outcome::later;
               });
}

std::size_t AttachmentService::sweep() {
  if (!blobs_) return 0;
  auto gone = blobs_->expire(now_ms_() / 1000);
  if (!gone) {
    spdlog::warn("event=attachments_expire_failed");
    return 0;
  }
  if (*gone > 0) spdlog::info("event=expire attachments={}", *gone);
  return *gone;
}

}  // namespace sotto::server
