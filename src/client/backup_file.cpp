#include "client/backup_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace sotto::client {
namespace {

constexpr std::size_t kMagicOffset = 0;
constexpr std::size_t kVersionOffset = 8;
constexpr std::size_t kKeySourceOffset = 9;
constexpr std::size_t kSaltOffset = 10;
constexpr std::size_t kOpsOffset = kSaltOffset + crypto::kArgon2SaltSize;
constexpr std::size_t kMemOffset = kOpsOffset + 4;
constexpr std::size_t kStreamHeaderOffset = kMemOffset + 8;
static_assert(kStreamHeaderOffset + crypto::kSecretStreamHeaderSize == kBackupHeaderSize);
static_assert(kBackupMagic.size() == kVersionOffset - kMagicOffset);
static_assert(kBackupHeaderSize == 62);
static_assert(kMaxBackupSealedChunkSize <= std::numeric_limits<std::uint32_t>::max());

using HeaderBytes = std::array<std::uint8_t, kBackupHeaderSize>;

void put_be(std::uint8_t* out, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(v >> (8 * (n - 1 - i)));
}

std::uint64_t get_be(const std::uint8_t* in, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | in[i];
  return v;
}

bool within_limit(const crypto::Argon2Params& p, const std::optional<crypto::Argon2Params>& max) {
  return !max || (p.ops_limit <= max->ops_limit && p.mem_limit <= max->mem_limit);
}

// Reads up to out.size() bytes; returns how many it got (fewer only at the end of the input).
tl::expected<std::size_t, BackupError> read_some(std::istream& in, std::span<std::uint8_t> out) {
  if (out.empty()) return 0;
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size()));
  if (in.bad()) return tl::unexpected(BackupError::io);
  return static_cast<std::size_t>(in.gcount());
}

// Makes a rename into `path`'s directory durable; best effort (some file systems cannot).
void sync_directory_of(const std::filesystem::path& path) {
  const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  static_cast<void>(::fsync(fd));
  ::close(fd);
}

// The size of what is left in `in`, when the stream can seek; the position is left unchanged.
std::optional<std::uint64_t> remaining_size(std::istream& in) {
  const std::istream::pos_type start = in.tellg();
  if (start == std::istream::pos_type(-1)) {
    in.clear();
    return std::nullopt;
  }
  in.seekg(0, std::ios::end);
  const std::istream::pos_type end = in.tellg();
  in.clear();
  in.seekg(start);
  if (!in || end == std::istream::pos_type(-1) || end < start) {
    in.clear();
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(end - start);
}

}  // namespace

std::string_view to_string(BackupError e) {
  switch (e) {
    case BackupError::not_a_backup:
      return "not a Sotto backup file";
    case BackupError::unsupported_version:
      return "the backup was made by a newer version of Sotto (unknown format version)";
    case BackupError::unknown_key_source:
      return "the backup header names an unknown key source";
    case BackupError::bad_kdf_params:
      return "the backup's key derivation parameters are outside the accepted bounds";
    case BackupError::wrong_key_source:
      return "the backup is encrypted with the other kind of secret (passphrase or recovery code)";
    case BackupError::key_derivation_failed:
      return "the backup key could not be derived (not enough memory?)";
    case BackupError::wrong_key:
      return "wrong passphrase or recovery code (or the backup is damaged at its start)";
    case BackupError::corrupt:
      return "the backup is damaged or was altered";
    case BackupError::bad_chunk_length:
      return "the backup has a chunk of an impossible length";
    case BackupError::truncated:
      return "the backup file is cut short";
    case BackupError::missing_final_chunk:
      return "the backup file ends before its last chunk (cut short or unfinished)";
    case BackupError::trailing_bytes:
      return "the backup file has bytes after its end";
    case BackupError::oversized_record:
      return "the backup holds a record length beyond its limit";
    case BackupError::malformed_record:
      return "the backup holds a malformed record";
    case BackupError::record_too_large:
      return "a record is too large for a backup";
    case BackupError::io:
      return "reading or writing the backup failed";
    case BackupError::stopped:
      return "reading the backup was stopped";
  }
  return "backup error";
}

HeaderBytes BackupHeader::encode() const {
  if (!crypto::argon2_params_in_bounds(kdf.ops_limit, kdf.mem_limit)) {
    throw std::logic_error("backup header: Argon2id parameters out of bounds");
  }
  HeaderBytes out{};
  std::copy(kBackupMagic.begin(), kBackupMagic.end(), out.begin() + kMagicOffset);
  out[kVersionOffset] = version;
  out[kKeySourceOffset] = static_cast<std::uint8_t>(key_source);
  std::copy(salt.begin(), salt.end(), out.begin() + kSaltOffset);
  put_be(out.data() + kOpsOffset, kdf.ops_limit, 4);
  put_be(out.data() + kMemOffset, kdf.mem_limit, 8);
  std::copy(stream_header.begin(), stream_header.end(), out.begin() + kStreamHeaderOffset);
  return out;
}

tl::expected<BackupHeader, BackupError> BackupHeader::decode(ByteView file_start) {
  if (file_start.size() < kBackupMagic.size() ||
      !std::equal(kBackupMagic.begin(), kBackupMagic.end(), file_start.begin(),
                  [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; })) {
    return tl::unexpected(BackupError::not_a_backup);
  }
  if (file_start.size() < kBackupHeaderSize) return tl::unexpected(BackupError::truncated);
  BackupHeader h;
  h.version = file_start[kVersionOffset];
  if (h.version != kBackupVersion) return tl::unexpected(BackupError::unsupported_version);
  const std::uint8_t source = file_start[kKeySourceOffset];
  if (source != static_cast<std::uint8_t>(BackupKeySource::passphrase) &&
      source != static_cast<std::uint8_t>(BackupKeySource::recovery_code)) {
    return tl::unexpected(BackupError::unknown_key_source);
  }
  h.key_source = static_cast<BackupKeySource>(source);
  const std::uint64_t ops = get_be(file_start.data() + kOpsOffset, 4);
  const std::uint64_t mem = get_be(file_start.data() + kMemOffset, 8);
  if (!crypto::argon2_params_in_bounds(ops, mem)) {
    return tl::unexpected(BackupError::bad_kdf_params);
  }
  h.kdf = {static_cast<unsigned long long>(ops), static_cast<std::size_t>(mem)};
  std::copy_n(file_start.begin() + kSaltOffset, h.salt.size(), h.salt.begin());
  std::copy_n(file_start.begin() + kStreamHeaderOffset, h.stream_header.size(),
              h.stream_header.begin());
  return h;
}

tl::expected<BackupHeader, BackupError> inspect_backup(std::istream& in) {
  HeaderBytes bytes{};
  auto n = read_some(in, bytes);
  if (!n) return tl::unexpected(n.error());
  return BackupHeader::decode(ByteView(bytes.data(), *n));
}

tl::expected<BackupHeader, BackupError> inspect_backup(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return tl::unexpected(BackupError::io);
  return inspect_backup(in);
}

// --- BackupSecret ---

BackupSecret BackupSecret::passphrase(std::string_view passphrase) {
  return BackupSecret(BackupKeySource::passphrase, crypto::SecretBuffer(as_bytes(passphrase)),
                      std::nullopt);
}

BackupSecret BackupSecret::recovery_code(const RecoveryCode& code) {
  return BackupSecret(BackupKeySource::recovery_code, crypto::SecretBuffer(), code.clone());
}

tl::expected<crypto::Secret<32>, crypto::Error> BackupSecret::derive_key(
    const std::array<std::uint8_t, crypto::kArgon2SaltSize>& salt,
    crypto::Argon2Params params) const {
  if (code_) return derive_backup_key(*code_, salt, params);
  return crypto::argon2id_derive(
      std::string_view(reinterpret_cast<const char*>(passphrase_.data()), passphrase_.size()), salt,
      params);
}

// --- BackupWriter ---

struct BackupWriter::Impl {
  Impl(std::ostream& out_, HeaderBytes header_, crypto::SecretStreamPush push_)
      : out(&out_),
        header(header_),
        push(std::move(push_)),
        chunk(kBackupChunkSize),
        sealed(kBackupChunkPrefixSize + kMaxBackupSealedChunkSize) {}

  ~Impl() {
    if (file && !finished) {
      file->close();
      std::error_code ec;
      std::filesystem::remove(partial_path, ec);
    }
    if (fd >= 0) ::close(fd);
  }

  // Seals chunk[0, used) and writes it with its length.
  tl::expected<void, BackupError> flush(crypto::SecretStreamTag tag) {
    const std::size_t sealed_size = used + crypto::kSecretStreamOverhead;
    put_be(sealed.data(), sealed_size, kBackupChunkPrefixSize);
    push.push(chunk.view().first(used), header, tag,
              std::span<std::uint8_t>(sealed).subspan(kBackupChunkPrefixSize, sealed_size));
    crypto::secure_wipe(chunk.data(), used);
    used = 0;
    const std::size_t total = kBackupChunkPrefixSize + sealed_size;
    out->write(reinterpret_cast<const char*>(sealed.data()), static_cast<std::streamsize>(total));
    if (!*out) {
      failed = true;
      return tl::unexpected(BackupError::io);
    }
    bytes += total;
    return {};
  }

  std::ostream* out;
  std::unique_ptr<std::ofstream> file;  // set by create()
  int fd = -1;  // create(): the same file, kept open to fsync it before the rename
  std::filesystem::path path;
  std::filesystem::path partial_path;
  HeaderBytes header;
  crypto::SecretStreamPush push;
  crypto::SecretBuffer chunk;  // the chunk being filled, plaintext
  std::size_t used = 0;
  Bytes sealed;  // length prefix and sealed chunk (ciphertext)
  std::uint64_t bytes = 0;
  std::uint64_t records = 0;
  bool failed = false;
  bool finished = false;
};

BackupWriter::BackupWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BackupWriter::BackupWriter(BackupWriter&&) noexcept = default;
BackupWriter& BackupWriter::operator=(BackupWriter&&) noexcept = default;
BackupWriter::~BackupWriter() = default;

tl::expected<BackupWriter, BackupError> BackupWriter::open(
    std::ostream& out, const BackupSecret& secret, crypto::Rng& rng,
    std::optional<crypto::Argon2Params> params) {
  BackupHeader header;
  header.key_source = secret.source();
  header.kdf = params.value_or(crypto::Argon2Params::for_new_secret());
  if (!crypto::argon2_params_in_bounds(header.kdf.ops_limit, header.kdf.mem_limit)) {
    return tl::unexpected(BackupError::bad_kdf_params);
  }
  rng.fill(header.salt);
  auto key = secret.derive_key(header.salt, header.kdf);
  if (!key) return tl::unexpected(BackupError::key_derivation_failed);
  crypto::SecretStreamPush push(*key, rng);
  header.stream_header = push.header();
  const HeaderBytes bytes = header.encode();
  auto impl = std::make_unique<Impl>(out, bytes, std::move(push));
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) return tl::unexpected(BackupError::io);
  impl->bytes = bytes.size();
  return BackupWriter(std::move(impl));
}

tl::expected<BackupWriter, BackupError> BackupWriter::create(
    const std::filesystem::path& path, const BackupSecret& secret, crypto::Rng& rng,
    std::optional<crypto::Argon2Params> params) {
  std::filesystem::path partial = path;
  partial += ".partial";
  // The file is the owner's alone (0600, whatever the umask) before a byte is written to it: the
  // backup is encrypted, but it is the user's whole history. A .partial left by a crash is
  // replaced rather than reused, so that neither its mode nor a descriptor open on it carries
  // over.
  std::error_code ec;
  std::filesystem::remove(partial, ec);
  const int fd =
      ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return tl::unexpected(BackupError::io);
  auto file = std::make_unique<std::ofstream>(partial, std::ios::binary | std::ios::trunc);
  if (!*file) {
    ::close(fd);
    std::filesystem::remove(partial, ec);
    return tl::unexpected(BackupError::io);
  }
  auto writer = open(*file, secret, rng, params);
  if (!writer) {
    ::close(fd);
    file->close();
    std::filesystem::remove(partial, ec);
    return writer;
  }
  writer->impl_->fd = fd;
  writer->impl_->file = std::move(file);
  writer->impl_->path = path;
  writer->impl_->partial_path = std::move(partial);
  return writer;
}

tl::expected<void, BackupError> BackupWriter::add(const wire::backup::BackupRecord& record) {
  Impl& w = *impl_;
  if (w.finished) throw std::logic_error("BackupWriter::add after finish");
  if (w.failed) return tl::unexpected(BackupError::io);
  if (record.kind_case() == wire::backup::BackupRecord::KIND_NOT_SET) {
    return tl::unexpected(BackupError::malformed_record);
  }
  const std::size_t size = record.ByteSizeLong();
  if (size > kMaxBackupRecordSize) return tl::unexpected(BackupError::record_too_large);
  if (w.used + kBackupRecordPrefixSize + size > kBackupChunkSize) {
    if (auto r = w.flush(crypto::SecretStreamTag::message); !r) return r;
  }
  std::uint8_t* at = w.chunk.data() + w.used;
  put_be(at, size, kBackupRecordPrefixSize);
  record.SerializeWithCachedSizesToArray(at + kBackupRecordPrefixSize);
  w.used += kBackupRecordPrefixSize + size;
  ++w.records;
  return {};
}

tl::expected<std::uint64_t, BackupError> BackupWriter::finish() {
  Impl& w = *impl_;
  if (w.finished) throw std::logic_error("BackupWriter::finish called twice");
  if (w.failed) return tl::unexpected(BackupError::io);
  if (auto r = w.flush(crypto::SecretStreamTag::final); !r) return tl::unexpected(r.error());
  w.out->flush();
  if (!*w.out) {
    w.failed = true;
    return tl::unexpected(BackupError::io);
  }
  if (w.file) {
    w.file->close();
    std::error_code ec;
    if (!*w.file) ec = std::make_error_code(std::errc::io_error);
    // On disk before it takes the place of an earlier backup: a crash must not leave a renamed
    // but empty or partial file where a complete one was.
    if (!ec && ::fsync(w.fd) != 0) ec = std::make_error_code(std::errc::io_error);
    ::close(w.fd);
    w.fd = -1;
    if (!ec) std::filesystem::rename(w.partial_path, w.path, ec);
    if (ec) {
      w.failed = true;
      return tl::unexpected(BackupError::io);
    }
    sync_directory_of(w.path);
  }
  w.finished = true;
  return w.bytes;
}

std::uint64_t BackupWriter::bytes_written() const noexcept {
  return impl_->bytes;
}
std::uint64_t BackupWriter::records() const noexcept {
  return impl_->records;
}

// --- BackupReader ---

tl::expected<BackupSummary, BackupError> BackupReader::read(std::istream& in,
                                                            const BackupSecret& secret) const {
  return read(in, secret, remaining_size(in));
}

tl::expected<BackupSummary, BackupError> BackupReader::read(const std::filesystem::path& path,
                                                            const BackupSecret& secret) const {
  std::ifstream in(path, std::ios::binary);
  if (!in) return tl::unexpected(BackupError::io);
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  return read(in, secret, ec ? std::nullopt : std::optional<std::uint64_t>(size));
}

tl::expected<BackupSummary, BackupError> BackupReader::read(
    std::istream& in, const BackupSecret& secret, std::optional<std::uint64_t> total) const {
  const auto progress = [&](std::uint64_t bytes) {
    if (on_progress_) on_progress_(bytes, total);
  };

  // The header: every bound is checked before the (deliberately expensive) key derivation.
  HeaderBytes header_bytes{};
  auto n = read_some(in, header_bytes);
  if (!n) return tl::unexpected(n.error());
  auto header = BackupHeader::decode(ByteView(header_bytes.data(), *n));
  if (!header) return tl::unexpected(header.error());
  if (!within_limit(header->kdf, kdf_limit_)) return tl::unexpected(BackupError::bad_kdf_params);
  if (header->key_source != secret.source()) return tl::unexpected(BackupError::wrong_key_source);
  BackupSummary summary;
  summary.header = *header;
  summary.bytes = kBackupHeaderSize;
  progress(summary.bytes);

  auto key = secret.derive_key(header->salt, header->kdf);
  if (!key) return tl::unexpected(BackupError::key_derivation_failed);
  crypto::SecretStreamPull pull(*key, header->stream_header);

  Bytes sealed(kMaxBackupSealedChunkSize);
  crypto::SecretBuffer chunk(kBackupChunkSize);
  wire::backup::BackupRecord record;
  for (;;) {
    std::array<std::uint8_t, kBackupChunkPrefixSize> prefix{};
    auto got = read_some(in, prefix);
    if (!got) return tl::unexpected(got.error());
    if (*got == 0) return tl::unexpected(BackupError::missing_final_chunk);
    if (*got < prefix.size()) return tl::unexpected(BackupError::truncated);
    const std::uint64_t sealed_size = get_be(prefix.data(), prefix.size());
    if (sealed_size < crypto::kSecretStreamOverhead || sealed_size > kMaxBackupSealedChunkSize) {
      return tl::unexpected(BackupError::bad_chunk_length);
    }
    const std::span<std::uint8_t> sealed_view(sealed.data(), sealed_size);
    got = read_some(in, sealed_view);
    if (!got) return tl::unexpected(got.error());
    if (*got < sealed_size) return tl::unexpected(BackupError::truncated);
    summary.bytes += prefix.size() + sealed_size;

    const std::size_t plain_size = sealed_size - crypto::kSecretStreamOverhead;
    chunk.resize(plain_size);
    auto tag = pull.pull(sealed_view, header_bytes, chunk.span());
    if (!tag) {
      if (tag.error() == crypto::Error::bad_mac && summary.chunks == 0) {
        return tl::unexpected(BackupError::wrong_key);
      }
      return tl::unexpected(BackupError::corrupt);
    }
    ++summary.chunks;

    // The chunk is authentic: hand out its records.
    ByteView rest = chunk.view();
    while (!rest.empty()) {
      if (rest.size() < kBackupRecordPrefixSize)
        return tl::unexpected(BackupError::malformed_record);
      const std::uint64_t size = get_be(rest.data(), kBackupRecordPrefixSize);
      rest = rest.subspan(kBackupRecordPrefixSize);
      if (size > kMaxBackupRecordSize || size > rest.size()) {
        return tl::unexpected(BackupError::oversized_record);
      }
      record.Clear();
      if (!record.ParseFromArray(rest.data(), static_cast<int>(size))) {
        return tl::unexpected(BackupError::malformed_record);
      }
      rest = rest.subspan(size);
      ++summary.records;
      if (on_record_ && !on_record_(record)) return tl::unexpected(BackupError::stopped);
    }
    progress(summary.bytes);
    if (*tag == crypto::SecretStreamTag::final) break;
  }
  record.Clear();

  // Nothing may follow the final chunk.
  if (in.peek() != std::istream::traits_type::eof()) {
    return tl::unexpected(BackupError::trailing_bytes);
  }
  if (in.bad()) return tl::unexpected(BackupError::io);
  if (!pull.finish()) return tl::unexpected(BackupError::corrupt);
  return summary;
}

}  // namespace sotto::client
