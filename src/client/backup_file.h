// The encrypted backup file (docs/backup.md has the format byte by byte, its limits and why).
//
// A backup is a header (magic, version, key source, Argon2id salt and parameters, secretstream
// header) followed by secretstream chunks, each holding length-prefixed serialized
// sotto.wire.backup.BackupRecord (proto/backup.proto), the last one tagged final. The key is
// Argon2id of a passphrase or of the account's recovery code; every chunk authenticates the
// whole header as associated data.
//
// Writing and reading stream: memory stays bounded (about two chunks, 64 KiB each) whatever the
// size of the backup. Nothing here reads a clock or draws randomness of its own: the writer's salt
// and stream header come from the Rng it is given.
//
// All or nothing: the reader hands out a record only once the chunk holding it authenticated,
// but it hands out the records of early chunks before it has seen the later ones. A caller that
// must not apply part of a backup (a restore into a store) collects the records, or stages them
// in a transaction, and applies them only once read() returned success: a truncated, altered or
// over-long file is only known to be so at its end.
//
// BackupWriter and BackupReader are not thread-safe; the free functions are.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <string_view>
#include <tl/expected.hpp>

#include "backup.pb.h"
#include "client/recovery_code.h"
#include "crypto/bytes.h"
#include "crypto/pwhash.h"
#include "crypto/rng.h"
#include "crypto/secret.h"
#include "crypto/secretstream.h"

namespace sotto::client {

inline constexpr std::string_view kBackupMagic = "SOTTOBK1";
inline constexpr std::uint8_t kBackupVersion = 1;
// magic (8), version (1), key source (1), salt (16), ops limit (4), mem limit (8), stream header
// (24).
inline constexpr std::size_t kBackupHeaderSize =
    8 + 1 + 1 + crypto::kArgon2SaltSize + 4 + 8 + crypto::kSecretStreamHeaderSize;
// Plaintext bytes of one chunk, at most: what a reader holds in memory at once.
inline constexpr std::size_t kBackupChunkSize = 64 * 1024;
// Each chunk is stored as a u32 BE length and the secretstream message (chunk + 17 bytes).
inline constexpr std::size_t kBackupChunkPrefixSize = 4;
inline constexpr std::size_t kMaxBackupSealedChunkSize =
    kBackupChunkSize + crypto::kSecretStreamOverhead;
// Each record is a u32 BE length and the serialized record, inside one chunk.
inline constexpr std::size_t kBackupRecordPrefixSize = 4;
inline constexpr std::size_t kMaxBackupRecordSize = kBackupChunkSize - kBackupRecordPrefixSize;

enum class BackupKeySource : std::uint8_t {
  passphrase = 1,
  recovery_code = 2,
};

enum class BackupError {
  not_a_backup,           // shorter than the magic, or another magic
  unsupported_version,    // a version this code does not read
  unknown_key_source,     // a key source byte other than 1 or 2
  bad_kdf_params,         // Argon2id parameters outside the bounds (or above the reader's limit)
  wrong_key_source,       // a passphrase for a recovery-code backup, or the other way round
  key_derivation_failed,  // Argon2id failed (not enough memory)
  wrong_key,              // the first chunk does not authenticate: wrong passphrase or code
  corrupt,                // a later chunk does not authenticate, or has an unknown tag
  bad_chunk_length,       // a chunk length outside 17..kMaxBackupSealedChunkSize
  truncated,              // the file ends inside the header, a length or a chunk
  missing_final_chunk,    // the file ends between chunks, before the final one
  trailing_bytes,         // bytes after the final chunk
  oversized_record,       // a record length beyond kMaxBackupRecordSize or its chunk's end
  malformed_record,       // a record that does not parse (or, when writing, has no kind)
  record_too_large,       // writing: a record above kMaxBackupRecordSize
  io,                     // the stream or file failed
  stopped,                // the record handler asked to stop
};
[[nodiscard]] std::string_view to_string(BackupError e);

struct BackupHeader {
  std::uint8_t version = kBackupVersion;
  BackupKeySource key_source = BackupKeySource::passphrase;
  std::array<std::uint8_t, crypto::kArgon2SaltSize> salt{};
  crypto::Argon2Params kdf{};
  crypto::SecretStreamHeader stream_header{};

  // REQUIRES: kdf within crypto::argon2_params_in_bounds (std::logic_error otherwise).
  [[nodiscard]] std::array<std::uint8_t, kBackupHeaderSize> encode() const;
  // Reads the header at the start of a file (what follows it is ignored). Checks the magic, the
  // version, the key source and the Argon2id bounds, so that a caller never starts an expensive
  // derivation on parameters it would refuse.
  [[nodiscard]] static tl::expected<BackupHeader, BackupError> decode(ByteView file_start);
};

// Whether `in` (from its current position) or the file at `path` starts with a Sotto backup
// header, and with which key source (so that a UI asks for the right secret). Needs no key; reads
// kBackupHeaderSize bytes at most.
[[nodiscard]] tl::expected<BackupHeader, BackupError> inspect_backup(std::istream& in);
[[nodiscard]] tl::expected<BackupHeader, BackupError> inspect_backup(
    const std::filesystem::path& path);

// What a backup is encrypted with. The key is Argon2id over the passphrase's bytes as given (no
// Unicode normalisation) or over the recovery code's normalised text (derive_backup_key).
class BackupSecret {
 public:
  [[nodiscard]] static BackupSecret passphrase(std::string_view passphrase);
  [[nodiscard]] static BackupSecret recovery_code(const RecoveryCode& code);

  BackupSecret(BackupSecret&&) noexcept = default;
  BackupSecret& operator=(BackupSecret&&) noexcept = default;

  [[nodiscard]] BackupKeySource source() const noexcept { return source_; }
  [[nodiscard]] tl::expected<crypto::Secret<32>, crypto::Error> derive_key(
      const std::array<std::uint8_t, crypto::kArgon2SaltSize>& salt,
      crypto::Argon2Params params) const;

 private:
  BackupSecret(BackupKeySource source, crypto::SecretBuffer passphrase,
               std::optional<RecoveryCode> code)
      : source_(source), passphrase_(std::move(passphrase)), code_(std::move(code)) {}

  BackupKeySource source_;
  crypto::SecretBuffer passphrase_;
  std::optional<RecoveryCode> code_;
};

// Writes a backup record by record. Records go out as each chunk fills up; the file is complete
// only after finish(), and a file whose writer stopped before (a crash, an error) is refused by
// the reader (missing_final_chunk or truncated), never read as a shorter backup.
class BackupWriter {
 public:
  // Derives the key (Argon2id with `params`, by default Argon2Params::for_new_secret(), with a
  // salt from `rng`) and writes the header to `out`, which must outlive the writer.
  [[nodiscard]] static tl::expected<BackupWriter, BackupError> open(
      std::ostream& out, const BackupSecret& secret, crypto::Rng& rng,
      std::optional<crypto::Argon2Params> params = std::nullopt);
  // The same into a new file: it is written as "<path>.partial" (mode 0600, a stale one
  // replaced) and renamed to `path` by finish() after an fsync, so that an earlier backup at
  // `path` is only replaced by a complete one. The partial file is removed if the writer is
  // destroyed before finish() succeeded.
  [[nodiscard]] static tl::expected<BackupWriter, BackupError> create(
      const std::filesystem::path& path, const BackupSecret& secret, crypto::Rng& rng,
      std::optional<crypto::Argon2Params> params = std::nullopt);

  BackupWriter(BackupWriter&&) noexcept;
  BackupWriter& operator=(BackupWriter&&) noexcept;
  ~BackupWriter();

  // Adds a record (which must have a kind and serialize to at most kMaxBackupRecordSize bytes).
  // After an io error the writer only fails. REQUIRES: finish() not called yet.
  [[nodiscard]] tl::expected<void, BackupError> add(const wire::backup::BackupRecord& record);
  // Writes the final chunk, flushes (and for create(), renames the file into place); returns the
  // size of the whole backup. REQUIRES: not called before.
  [[nodiscard]] tl::expected<std::uint64_t, BackupError> finish();

  [[nodiscard]] std::uint64_t bytes_written() const noexcept;
  [[nodiscard]] std::uint64_t records() const noexcept;

 private:
  struct Impl;
  explicit BackupWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Called with each record once its chunk authenticated (the reference is valid during the call
// only); returns false to stop reading (read() then fails with BackupError::stopped).
using BackupRecordHandler = std::function<bool(const wire::backup::BackupRecord&)>;
// Called after the header and after each chunk: bytes read so far, and the size of the input when
// it is known (a file, a seekable stream).
using BackupProgressHandler =
    std::function<void(std::uint64_t bytes_read, std::optional<std::uint64_t> total)>;

struct BackupSummary {
  BackupHeader header;
  std::uint64_t records = 0;
  std::uint64_t chunks = 0;
  std::uint64_t bytes = 0;
};

class BackupReader {
 public:
  explicit BackupReader(BackupRecordHandler on_record, BackupProgressHandler on_progress = {})
      : on_record_(std::move(on_record)), on_progress_(std::move(on_progress)) {}

  // Refuses files whose Argon2id parameters exceed `max` (bad_kdf_params) before deriving
  // anything: for a reader that cannot afford what the format allows.
  void limit_kdf(crypto::Argon2Params max) { kdf_limit_ = max; }

  // Reads a whole backup from `in` (from its current position) and checks that nothing follows
  // it. Success means every record was handed out and the file is complete and unaltered.
  [[nodiscard]] tl::expected<BackupSummary, BackupError> read(std::istream& in,
                                                              const BackupSecret& secret) const;
  [[nodiscard]] tl::expected<BackupSummary, BackupError> read(const std::filesystem::path& path,
                                                              const BackupSecret& secret) const;

 private:
  [[nodiscard]] tl::expected<BackupSummary, BackupError> read(
      std::istream& in, const BackupSecret& secret, std::optional<std::uint64_t> total) const;

  BackupRecordHandler on_record_;
  BackupProgressHandler on_progress_;
  std::optional<crypto::Argon2Params> kdf_limit_;
};

}  // namespace sotto::client
