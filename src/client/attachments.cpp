#include "client/attachments.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>
#include <utility>

#include "client/attachment_format.h"
#include "client/image_thumbnail.h"
#include "client/util.h"
#include "crypto/hash.h"
#include "crypto/secretstream.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;
using SteadyClock = std::chrono::steady_clock;

// Lost connections an upload or download rides out before it gives up.
constexpr int kMaxAttempts = 8;
constexpr std::string_view kUploadValuePrefix = "attachment.upload.";

// An Rng that hands out given bytes: the stream header of an upload being resumed, so that the
// ciphertext comes out the same as the first time.
class FixedRng final : public crypto::Rng {
 public:
  explicit FixedRng(ByteView bytes) : bytes_(bytes) {}
  void fill(std::span<std::uint8_t> out) override {
    if (out.size() > bytes_.size()) throw std::logic_error("FixedRng: not enough bytes");
    std::memcpy(out.data(), bytes_.data(), out.size());
    bytes_ = bytes_.subspan(out.size());
  }

 private:
  ByteView bytes_;
};

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

bool read_full(int fd, std::uint8_t* out, std::size_t n, std::size_t& got) {
  got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, out + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return true;
}

bool write_full(int fd, const std::uint8_t* data, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    done += static_cast<std::size_t>(w);
  }
  return true;
}

bool retryable(const Error& e) {
  return e.code == ErrorCode::network || e.code == ErrorCode::timeout;
}

Error io_error(const std::string& what) {
  return make_error(ErrorCode::invalid_argument, what + ": " + std::strerror(errno));
}

// The name under which an upload of this file (as it is now) keeps its state.
std::string upload_value_name(const std::filesystem::path& file, const struct stat& st) {
  const std::string key = std::filesystem::absolute(file).string() + "\n" +
                          std::to_string(st.st_size) + "\n" + std::to_string(st.st_mtim.tv_sec) +
                          "." + std::to_string(st.st_mtim.tv_nsec);
  const auto digest = crypto::sha256({as_bytes(key)});
  return std::string(kUploadValuePrefix) + to_hex(ByteView(digest.data(), 16));
}

// Encrypts a file into its attachment ciphertext, a piece at a time.
class Encryptor {
 public:
  Encryptor(int fd, std::uint64_t size, const UploadState& state)
      : fd_(fd), size_(size), stream_(make_stream(state)) {
    out_.assign(stream_.header().begin(), stream_.header().end());
    plain_.resize(kAttachmentChunkSize);
  }
  // Appends the next bytes of ciphertext to `out` (at least one secretstream message, or the
  // header); false on a read error. done() after the final message.
  bool next(std::string& out) {
    if (!out_.empty()) {
      out.insert(out.end(), out_.begin(), out_.end());
      out_.clear();
      return true;
    }
    const std::uint64_t left = size_ - read_;
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(left, kAttachmentChunkSize));
    std::size_t got = 0;
    if (!read_full(fd_, plain_.data(), n, got) || got != n) return false;
    read_ += n;
    const bool last = read_ == size_;
    const std::size_t at = out.size();
    out.resize(at + n + crypto::kSecretStreamOverhead);
    stream_.push(ByteView(plain_.data(), n), {},
                 last ? crypto::SecretStreamTag::final : crypto::SecretStreamTag::message,
                 std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(out.data()) + at,
                                         n + crypto::kSecretStreamOverhead));
    sodium_wipe();
    return true;
  }
  [[nodiscard]] bool done() const { return stream_.closed(); }

 private:
  static crypto::SecretStreamPush make_stream(const UploadState& state) {
    FixedRng header(ByteView(state.header.data(), state.header.size()));
    return crypto::SecretStreamPush(
        crypto::Secret<crypto::kSecretStreamKeySize>(ByteView(state.key.data(), state.key.size())),
        header);
  }
  void sodium_wipe() { crypto::secure_wipe(plain_.data(), plain_.size()); }

  int fd_;
  std::uint64_t size_;
  std::uint64_t read_ = 0;
  crypto::SecretStreamPush stream_;
  Bytes out_;
  Bytes plain_;
};

}  // namespace

Attachments::Attachments(Account& account, ServerLink& link) : account_(account), link_(link) {}

Result<content::AttachmentPointer> Attachments::upload(const std::filesystem::path& file,
                                                       const std::string& caption,
                                                       const Progress& progress) {
  Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) return tl::unexpected(io_error("cannot read " + file.string()));
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, file.string() + " is not a regular file"));
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > kMaxAttachmentSize) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument,
                   file.string() + " is larger than an attachment may be (4 GiB)"));
  }
  if (caption.size() > kMaxAttachmentCaptionBytes) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "caption too long"));
  }
  const std::uint64_t total = attachment_ciphertext_size(size, kAttachmentChunkSize);
  const auto timeout = account_.options.request_timeout;
  const std::string value_name = upload_value_name(file, st);

  content::AttachmentPointer pointer;
  const std::string name = safe_file_name(file.filename().string());
  pointer.set_file_name(name);
  pointer.set_content_type(content_type_of(name));
  pointer.set_caption(caption);
  pointer.set_size(size);
  pointer.set_chunk_size(kAttachmentChunkSize);
  pointer.set_ciphertext_size(total);
  {
    Bytes head(std::min<std::uint64_t>(size, 256 * 1024));
    std::size_t got = 0;
    if (::pread(fd.fd, head.data(), head.size(), 0) >= 0) got = head.size();
    if (auto image = read_image_header(ByteView(head.data(), got))) {
      pointer.set_content_type(image->content_type);
      pointer.set_width(image->width);
      pointer.set_height(image->height);
      // A PNG or JPEG also gets a thumbnail; one that does not decode is sent without.
      if (image->content_type != "image/gif") {
        if (auto thumb = make_thumbnail(fd.fd)) {
          pointer.set_width(thumb->width);
          pointer.set_height(thumb->height);
          pointer.set_thumbnail(bytes_string(thumb->jpeg));
        }
      }
    }
  }

  // A saved state for this very file resumes its upload.
  std::optional<UploadState> state;
  if (auto saved = account_.store->load_value(value_name); saved && *saved) {
    state = decode_upload_state((*saved)->view());
  }
  int attempts = 0;
  std::uint64_t acknowledged = 0;
  for (;;) {
    auto connected = link_.ensure_connected(SteadyClock::now() + timeout);
    if (!connected) return tl::unexpected(connected.error());
    const ConnectionPtr c = connected->connection;
    const auto lost = [&](const Error& e) -> bool {
      return retryable(e) && ++attempts < kMaxAttempts;
    };

    std::uint32_t max_chunk = 0;
    std::uint64_t received = 0;
    if (state) {
      svc::Request status;
      status.mutable_attachment_status()->set_id(bytes_string(state->id));
      auto answer = c->call(std::move(status), timeout);
      if (!answer) {
        if (lost(answer.error())) continue;
        return tl::unexpected(answer.error());
      }
      if (answer->status().code() == svc::NOT_FOUND) {
        state.reset();  // expired or never created: start again
        (void)account_.store->remove_value(value_name);
      } else if (answer->status().code() != svc::OK) {
        return tl::unexpected(status_error(*answer));
      } else if (answer->attachment_status().size() != total) {
        state.reset();
        (void)account_.store->remove_value(value_name);
      } else {
        max_chunk = answer->attachment_status().max_chunk_bytes();
        received = answer->attachment_status().received();
      }
    }
    if (!state) {
      svc::Request create;
      create.mutable_attachment_create()->set_size(total);
      auto answer = c->call(std::move(create), timeout);
      if (!answer) {
        if (lost(answer.error())) continue;
        return tl::unexpected(answer.error());
      }
      if (answer->status().code() != svc::OK) {
        return tl::unexpected(status_error(*answer));
      }
      const auto& created = answer->attachment_create();
      if (created.id().size() != 16 || created.max_chunk_bytes() == 0) {
        return tl::unexpected(make_error(ErrorCode::server, "the server's upload id is malformed"));
      }
      UploadState fresh;
      std::memcpy(fresh.id.data(), created.id().data(), 16);
      account_.rng.fill(fresh.key);
      account_.rng.fill(fresh.header);
      const Bytes encoded = encode_upload_state(fresh);
      if (!account_.store->save_value(value_name, encoded)) {
        return tl::unexpected(make_error(ErrorCode::store, "cannot record the upload"));
      }
      state = fresh;
      max_chunk = created.max_chunk_bytes();
      received = 0;
    }
    max_chunk = std::min<std::uint32_t>(max_chunk, 1024 * 1024);

    // Encrypt from the start (the same key and header give the same bytes), hash everything,
    // and send what the server does not have yet.
    if (::lseek(fd.fd, 0, SEEK_SET) != 0)
      return tl::unexpected(io_error("cannot read " + file.string()));
    Encryptor enc(fd.fd, size, *state);
    crypto::Sha256 digest;
    // The ciphertext of the next write, encrypted straight into the string the request then
    // takes over (no copy on the way to the connection).
    const std::size_t pending_capacity =
        max_chunk + kAttachmentChunkSize + crypto::kSecretStreamOverhead;
    std::string pending;
    pending.reserve(pending_capacity);
    std::uint64_t produced = 0;  // ciphertext bytes made so far
    std::uint64_t sent = received;
    acknowledged = received;
    if (progress) progress(acknowledged, total);
    std::deque<std::pair<std::uint64_t, std::uint64_t>> inflight;  // request id, end offset
    std::optional<Error> failure;
    bool complete = false;
    const auto await_one = [&]() -> bool {
      auto [rid, end] = inflight.front();
      inflight.pop_front();
      auto answer = c->wait(rid, timeout);
      if (!answer) {
        failure = answer.error();
        return false;
      }
      if (answer->status().code() != svc::OK) {
        failure = status_error(*answer);
        if (answer->status().code() == svc::CONFLICT ||
            answer->status().code() == svc::RATE_LIMITED) {
          // Start over from what the server has (after the wait it asks for).
          failure->code = ErrorCode::network;
          if (answer->status().retry_after_ms() > 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(
                std::min<std::uint32_t>(answer->status().retry_after_ms(), 30'000)));
            --attempts;  // a rate limit is not a lost connection
          }
        }
        return false;
      }
      acknowledged = end;
      complete = answer->attachment_write().complete();
      if (progress) progress(acknowledged, total);
      return true;
    };
    const auto flush = [&](bool all) -> bool {
      while (!pending.empty() && (all || pending.size() >= max_chunk)) {
        const std::size_t n = std::min<std::size_t>(pending.size(), max_chunk);
        svc::Request w;
        auto* body = w.mutable_attachment_write();
        body->set_id(bytes_string(state->id));
        body->set_offset(sent);
        // The first n bytes go; the rest (less than a secretstream message) starts the next.
        std::string rest;
        rest.reserve(pending_capacity);
        rest.append(pending, n, std::string::npos);
        pending.resize(n);
        body->set_data(std::exchange(pending, std::move(rest)));
        if (inflight.size() >= kUploadPipeline && !await_one()) return false;
        auto rid = c->start(std::move(w));
        if (!rid) {
          failure = rid.error();
          return false;
        }
        sent += n;
        inflight.emplace_back(*rid, sent);
      }
      return true;
    };
    bool ok = true;
    while (!enc.done()) {
      const std::size_t at = pending.size();
      if (!enc.next(pending)) return tl::unexpected(io_error("cannot read " + file.string()));
      const std::size_t piece = pending.size() - at;
      digest.update(ByteView(reinterpret_cast<const std::uint8_t*>(pending.data()) + at, piece));
      const std::uint64_t start = produced;
      produced += piece;
      if (produced <= received) {  // the server has these bytes
        pending.resize(at);
        continue;
      }
      if (start < received) pending.erase(at, static_cast<std::size_t>(received - start));
      if (!flush(false)) {
        ok = false;
        break;
      }
    }
    if (ok) ok = flush(true);
    while (ok && !inflight.empty()) ok = await_one();
    // Answers still owed on a failed connection are dropped with it.
    while (!inflight.empty()) {
      (void)c->wait(inflight.front().first, std::chrono::milliseconds(0));
      inflight.pop_front();
    }
    if (!ok) {
      if (failure && lost(*failure)) {
        if (failure->code == ErrorCode::network && c->is_open()) continue;  // conflict: resync
        continue;
      }
      return tl::unexpected(failure.value_or(make_error(ErrorCode::network, "upload failed")));
    }
    if (produced != total || (!complete && received != total)) {
      return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                       file.string() + " changed while it was being sent"));
    }
    const auto d = digest.finish();
    pointer.set_id(bytes_string(state->id));
    pointer.set_key(bytes_string(state->key));
    pointer.set_digest(bytes_string(d));
    crypto::secure_wipe(state->key.data(), state->key.size());
    (void)account_.store->remove_value(value_name);
    return pointer;
  }
}

Result<SavedFile> Attachments::download(const content::AttachmentPointer& pointer,
                                        const std::filesystem::path& dir,
                                        const Progress& progress) {
  if (auto why = check_pointer(pointer); !why.empty()) {
    return tl::unexpected(
        make_error(ErrorCode::protocol, "the attachment cannot be fetched: " + why));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "cannot create " + dir.string() + ": " + ec.message()));
  }
  const std::string name = safe_file_name(pointer.file_name());
  std::string tmpl = (dir / ("." + name + ".part-XXXXXX")).string();
  Fd out(::mkstemp(tmpl.data()));
  if (out.fd < 0) return tl::unexpected(io_error("cannot write in " + dir.string()));
  const std::filesystem::path tmp = tmpl;
  struct Cleanup {
    std::filesystem::path path;
    bool keep = false;
    ~Cleanup() {
      std::error_code e;
      if (!keep) std::filesystem::remove(path, e);
    }
  } cleanup{tmp};

  const std::uint64_t total = pointer.ciphertext_size();
  const std::uint32_t chunk = pointer.chunk_size();
  const auto timeout = account_.options.request_timeout;
  crypto::Sha256 cipher_digest;
  crypto::Sha256 plain_digest;
  std::optional<crypto::SecretStreamPull> stream;
  Bytes buffer;  // the start of a stream unit cut by the end of an answer
  // Plaintext decrypted and not written yet: written out (and its writeback started) a megabyte
  // or more at a time, not a message at a time, so the disk sees few large writes.
  constexpr std::size_t kWriteBatch = 1024 * 1024;
  constexpr std::uint64_t kCacheBehind = 8u << 20;
  Bytes plain;
  plain.reserve(kWriteBatch + chunk);
  struct WipeOnExit {
    Bytes& b;
    ~WipeOnExit() {
      b.resize(b.capacity());
      crypto::secure_wipe(b.data(), b.size());
    }
  } wipe_plain{plain};
  std::uint64_t next_offset = 0;  // the next byte to ask for
  std::uint64_t written = 0;      // plaintext bytes decrypted (in `plain` or in the file)
  std::uint64_t on_disk = 0;      // plaintext bytes written to the file
  const crypto::Secret<crypto::kSecretStreamKeySize> key(as_bytes(pointer.key()));
  const auto refused = [&](const std::string& why) {
    return tl::unexpected(
        make_error(ErrorCode::protocol,
                   "the attachment " + name + " was refused (" + why + "); nothing was saved"));
  };

  // Writes the decrypted plaintext to the file and starts its writeback (not waited for), so
  // that the fsync at the end has little left to do.
  const auto write_out = [&]() -> std::optional<std::string> {
    if (plain.empty()) return std::nullopt;
    if (!write_full(out.fd, plain.data(), plain.size()))
      return std::string("cannot write: ") + std::strerror(errno);
    (void)::sync_file_range(out.fd, static_cast<off_t>(on_disk), static_cast<off_t>(plain.size()),
                            SYNC_FILE_RANGE_WRITE);
    on_disk += plain.size();
    // Drop what was written a few megabytes ago from the page cache (pages not yet written back
    // are skipped, not waited for): a large download then reuses the same few pages instead of
    // taking new ones for every megabyte.
    if (on_disk > kCacheBehind) {
      (void)::posix_fadvise(out.fd, 0, static_cast<off_t>(on_disk - kCacheBehind),
                            POSIX_FADV_DONTNEED);
    }
    crypto::secure_wipe(plain.data(), plain.size());
    plain.clear();
    return std::nullopt;
  };
  // The size of the next unit of the stream: its header, then each message.
  const auto next_unit = [&]() -> std::size_t {
    if (!stream) return crypto::kSecretStreamHeaderSize;
    const std::uint64_t left = pointer.size() - written;
    return static_cast<std::size_t>(std::min<std::uint64_t>(left, chunk)) +
           crypto::kSecretStreamOverhead;
  };
  // Takes one whole unit: the header starts the stream, a message is decrypted and its
  // plaintext batched for the file.
  const auto take_unit = [&](ByteView unit) -> std::optional<std::string> {
    if (!stream) {
      crypto::SecretStreamHeader header{};
      std::memcpy(header.data(), unit.data(), header.size());
      stream.emplace(key, header);
      return std::nullopt;
    }
    const std::size_t n = unit.size() - crypto::kSecretStreamOverhead;
    const std::size_t start = plain.size();
    plain.resize(start + n);
    auto tag = stream->pull(unit, {}, std::span<std::uint8_t>(plain.data() + start, n));
    if (!tag) return std::string("it does not decrypt: altered or not this key");
    if ((*tag == crypto::SecretStreamTag::final) != (written + n == pointer.size())) {
      return std::string("its stream ends in the wrong place");
    }
    plain_digest.update(ByteView(plain.data() + start, n));
    written += n;
    if (plain.size() >= kWriteBatch) return write_out();
    return std::nullopt;
  };
  // Decrypts the whole units of an answer's bytes where they lie; only a unit cut by the end of
  // an answer is copied (into `buffer`) to be completed by the next one.
  const auto consume = [&](ByteView in, bool at_end) -> std::optional<std::string> {
    if (!buffer.empty()) {
      const std::size_t unit = next_unit();
      const std::size_t take = std::min(unit - buffer.size(), in.size());
      buffer.insert(buffer.end(), in.begin(), in.begin() + static_cast<std::ptrdiff_t>(take));
      in = in.subspan(take);
      if (buffer.size() < unit) {
        if (at_end) return std::string("it is cut short");
        return std::nullopt;
      }
      if (auto why = take_unit(buffer)) return why;
      buffer.clear();
    }
    while (!(stream && stream->final_seen())) {
      const std::size_t unit = next_unit();
      if (in.size() < unit) break;
      if (auto why = take_unit(in.first(unit))) return why;
      in = in.subspan(unit);
    }
    buffer.assign(in.begin(), in.end());
    if (at_end && !buffer.empty()) return std::string("it has bytes after its end");
    if (at_end) return write_out();
    return std::nullopt;
  };

  int attempts = 0;
  while (next_offset < total) {
    auto connected = link_.ensure_connected(SteadyClock::now() + timeout);
    if (!connected) return tl::unexpected(connected.error());
    const ConnectionPtr c = connected->connection;
    std::deque<std::pair<std::uint64_t, std::uint64_t>> inflight;  // request id, offset
    std::uint64_t asked = next_offset;
    std::optional<Error> failure;
    while (next_offset < total && !failure) {
      while (inflight.size() < kDownloadPipeline && asked < total) {
        svc::Request r;
        auto* body = r.mutable_attachment_read();
        body->set_id(pointer.id());
        body->set_offset(asked);
        const auto len =
            static_cast<std::uint32_t>(std::min<std::uint64_t>(total - asked, 1024 * 1024));
        body->set_length(len);
        auto rid = c->start(std::move(r));
        if (!rid) {
          failure = rid.error();
          break;
        }
        inflight.emplace_back(*rid, asked);
        asked += len;
      }
      if (failure || inflight.empty()) break;
      auto [rid, offset] = inflight.front();
      inflight.pop_front();
      auto answer = c->wait(rid, timeout);
      if (!answer) {
        failure = answer.error();
        break;
      }
      if (answer->status().code() == svc::RATE_LIMITED) {
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min<std::uint32_t>(
            std::max<std::uint32_t>(answer->status().retry_after_ms(), 100), 30'000)));
        failure = make_error(ErrorCode::network, "rate limited");
        --attempts;
        break;
      }
      if (answer->status().code() != svc::OK) return tl::unexpected(status_error(*answer));
      const auto& data = answer->attachment_read().data();
      if (answer->attachment_read().size() != total)
        return refused("its size on the server differs");
      if (offset != next_offset || data.empty() || data.size() > total - next_offset) {
        return refused("the server's answer does not fit");
      }
      cipher_digest.update(as_bytes(data));
      next_offset += data.size();
      if (next_offset < asked && inflight.empty()) asked = next_offset;  // a short read
      if (auto why = consume(as_bytes(data), next_offset == total)) return refused(*why);
      if (progress) progress(next_offset, total);
    }
    while (!inflight.empty()) {
      (void)c->wait(inflight.front().first, std::chrono::milliseconds(0));
      inflight.pop_front();
    }
    if (failure) {
      if (!retryable(*failure) || ++attempts >= kMaxAttempts) return tl::unexpected(*failure);
    }
  }
  const auto digest = cipher_digest.finish();
  if (pointer.digest().size() != digest.size() ||
      !crypto::constant_time_equal(as_bytes(pointer.digest()),
                                   ByteView(digest.data(), digest.size()))) {
    return refused("its digest does not match");
  }
  if (!stream || !stream->finish() || written != pointer.size() || on_disk != written) {
    return refused("it is cut short");
  }
  if (::fsync(out.fd) != 0) return tl::unexpected(io_error("cannot write in " + dir.string()));
  // Into place without replacing anything: "name", then "name (1)", ...
  std::filesystem::path dest;
  const std::filesystem::path base = name;
  for (int n = 0; n < 1000; ++n) {
    dest = dir / (n == 0 ? base
                         : std::filesystem::path(base.stem().string() + " (" + std::to_string(n) +
                                                 ")" + base.extension().string()));
    if (::link(tmp.c_str(), dest.c_str()) == 0) break;
    if (errno != EEXIST) return tl::unexpected(io_error("cannot save " + dest.string()));
    dest.clear();
  }
  if (dest.empty())
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "no free name in " + dir.string()));
  {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.fd >= 0) (void)::fsync(d.fd);
  }
  const auto plain_sha = plain_digest.finish();
  return SavedFile{dest, to_hex(ByteView(plain_sha.data(), plain_sha.size())), written};
}

}  // namespace sotto::client
