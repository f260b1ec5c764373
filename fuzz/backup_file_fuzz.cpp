// The backup file reader (src/client/backup_file.h) on untrusted files, read with a fixed
// passphrase (backup_file_fuzz.h). Two kinds of input:
//
// - A file as it is (first byte 'S'). Seeds are genuine backups made with that passphrase and
//   cheap Argon2id parameters, so mutations start past the header; the reader refuses dearer
//   parameters before deriving anything. Checked: inspect_backup and the reader agree on the
//   header; a success read the whole input and handed out as many records as it says.
// - Chunk plaintexts that the target seals itself (any other first byte), which reach the record
//   layer behind the authentication. Checked against a model of the format: the reader fails
//   with the model's error (oversized or malformed record, missing final chunk, trailing bytes,
//   truncation) or succeeds when the model does, and hands out exactly the model's records, in
//   order, and none from after the first bad one.
#include "backup_file_fuzz.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "client/backup_file.h"
#include "crypto/secretstream.h"
#include "fuzz_check.h"

using namespace sotto;
using namespace sotto::client;

namespace {

using wire::backup::BackupRecord;

struct Outcome {
  tl::expected<BackupSummary, BackupError> result = tl::unexpected(BackupError::io);
  std::vector<std::string> records;  // serialized
};

Outcome read(const std::string& file) {
  Outcome out;
  BackupReader reader([&](const BackupRecord& r) {
    out.records.push_back(r.SerializeAsString());
    return true;
  });
  reader.limit_kdf(fuzz::backup::kKdf);
  std::istringstream in(file);
  out.result = reader.read(in, BackupSecret::passphrase(fuzz::backup::kPassphrase));
  return out;
}

bool is_header_error(BackupError e) {
  return e == BackupError::not_a_backup || e == BackupError::unsupported_version ||
         e == BackupError::unknown_key_source || e == BackupError::bad_kdf_params;
}

void check_file(const std::string& file) {
  std::istringstream in(file);
  const auto header = inspect_backup(in);
  const Outcome outcome = read(file);
  if (!header) {
    fuzz::require(!outcome.result && outcome.result.error() == header.error(),
                  "the reader and inspect_backup disagree on a bad header");
    return;
  }
  if (outcome.result) {
    fuzz::require(outcome.result->bytes == file.size(), "a backup read succeeded before its end");
    fuzz::require(outcome.result->records == outcome.records.size(),
                  "the summary counts other records than were handed out");
    fuzz::require(header->key_source == BackupKeySource::passphrase,
                  "a recovery-code backup opened with a passphrase");
  } else if (is_header_error(outcome.result.error())) {
    fuzz::require(outcome.result.error() == BackupError::bad_kdf_params &&
                      (header->kdf.ops_limit > fuzz::backup::kKdf.ops_limit ||
                       header->kdf.mem_limit > fuzz::backup::kKdf.mem_limit),
                  "the reader refused a header that inspect_backup accepts");
  }
  if (!outcome.result) {
    const BackupError e = outcome.result.error();
    if (e == BackupError::wrong_key || e == BackupError::wrong_key_source || is_header_error(e)) {
      fuzz::require(outcome.records.empty(), "records handed out from an unauthenticated file");
    }
  }
}

// The key and header of the sealed inputs: fixed, derived once.
struct Sealer {
  Sealer() {
    header.kdf = fuzz::backup::kKdf;
    for (std::size_t i = 0; i < header.salt.size(); ++i)
      header.salt[i] = static_cast<std::uint8_t>(i);
    auto k =
        BackupSecret::passphrase(fuzz::backup::kPassphrase).derive_key(header.salt, header.kdf);
    fuzz::require(k.has_value(), "the fixed key derivation failed");
    key = std::move(*k);
  }
  BackupHeader header;
  crypto::Secret<32> key;
};

const Sealer& sealer() {
  static const Sealer s;
  return s;
}

struct Model {
  std::optional<BackupError> error;  // nullopt: success
  std::vector<std::string> records;
};

// The records of one chunk plaintext, as the format says to read them.
std::optional<BackupError> model_chunk(ByteView chunk, std::vector<std::string>& records) {
  std::size_t pos = 0;
  while (pos < chunk.size()) {
    if (chunk.size() - pos < kBackupRecordPrefixSize) return BackupError::malformed_record;
    const std::size_t size = (std::size_t{chunk[pos]} << 24) | (std::size_t{chunk[pos + 1]} << 16) |
                             (std::size_t{chunk[pos + 2]} << 8) | chunk[pos + 3];
    pos += kBackupRecordPrefixSize;
    if (size > kMaxBackupRecordSize || size > chunk.size() - pos) {
      return BackupError::oversized_record;
    }
    BackupRecord r;
    if (!r.ParseFromArray(chunk.data() + pos, static_cast<int>(size))) {
      return BackupError::malformed_record;
    }
    records.push_back(r.SerializeAsString());
    pos += size;
  }
  return std::nullopt;
}

void check_sealed(const std::uint8_t* data, std::size_t size) {
  const auto mode = static_cast<fuzz::backup::SealMode>(data[0] % 4);
  std::vector<ByteView> chunks;
  for (std::size_t pos = 1; pos < size;) {
    std::size_t n = data[pos];
    if (pos + 1 < size) n = (n << 8) | data[pos + 1];
    pos = std::min(pos + 2, size);
    n = std::min({n, size - pos, kBackupChunkSize});
    chunks.emplace_back(data + pos, n);
    pos += n;
  }

  const Sealer& s = sealer();
  crypto::DeterministicRng rng(1);  // the same stream header for every input
  crypto::SecretStreamPush push(s.key, rng);
  BackupHeader header = s.header;
  header.stream_header = push.header();
  const auto header_bytes = header.encode();
  std::string file(header_bytes.begin(), header_bytes.end());
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const bool final = i + 1 == chunks.size() && mode != fuzz::backup::SealMode::no_final;
    const Bytes sealed =
        push.push(chunks[i], header_bytes,
                  final ? crypto::SecretStreamTag::final : crypto::SecretStreamTag::message);
    for (int b = 3; b >= 0; --b) file.push_back(static_cast<char>(sealed.size() >> (8 * b)));
    file.append(sealed.begin(), sealed.end());
  }
  if (mode == fuzz::backup::SealMode::trailing) file.push_back('\0');
  if (mode == fuzz::backup::SealMode::cut_short) file.pop_back();

  Model model;
  const std::size_t readable = mode == fuzz::backup::SealMode::cut_short && !chunks.empty()
                                   ? chunks.size() - 1
                                   : chunks.size();
  for (std::size_t i = 0; i < readable && !model.error; ++i) {
    model.error = model_chunk(chunks[i], model.records);
  }
  if (!model.error) {
    switch (mode) {
      case fuzz::backup::SealMode::complete:
        if (chunks.empty()) model.error = BackupError::missing_final_chunk;
        break;
      case fuzz::backup::SealMode::no_final:
        model.error = BackupError::missing_final_chunk;
        break;
      case fuzz::backup::SealMode::trailing:
        // After a last chunk that is not final (none at all), the byte starts a chunk length.
        model.error = chunks.empty() ? BackupError::truncated : BackupError::trailing_bytes;
        break;
      case fuzz::backup::SealMode::cut_short:
        model.error = BackupError::truncated;
        break;
    }
  }

  const Outcome outcome = read(file);
  if (model.error) {
    fuzz::require(!outcome.result, "the reader accepted a backup the format refuses");
    fuzz::require(outcome.result.error() == *model.error,
                  "the reader refused a backup for another reason than the format's");
  } else {
    fuzz::require(outcome.result.has_value(), "the reader refused a well-formed backup");
    fuzz::require(outcome.result->chunks == chunks.size() && outcome.result->bytes == file.size(),
                  "the summary does not describe the backup read");
  }
  fuzz::require(outcome.records == model.records,
                "the reader handed out other records than the backup holds");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  if (data[0] == static_cast<std::uint8_t>(kBackupMagic[0])) {
    check_file(std::string(reinterpret_cast<const char*>(data), size));
  } else {
    check_sealed(data, size);
  }
  return 0;
}
