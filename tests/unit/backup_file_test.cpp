// The encrypted backup file (src/client/backup_file.h, docs/backup.md): round trips, streaming,
// and every way a file can be wrong. Runs with SOTTO_TEST_FAST_KDF=1 (tests/CMakeLists.txt); the
// tests pass their Argon2id parameters explicitly where they can.
#include "client/backup_file.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <streambuf>
#include <string>
#include <vector>

#include "crypto/hash.h"
#include "util/test_util.h"

namespace sotto::client {
namespace {

namespace fs = std::filesystem;
using sotto::testing::from_hex;
using sotto::testing::to_hex;
using wire::backup::BackupRecord;

const crypto::Argon2Params kFast{1, 64 * 1024};
constexpr std::string_view kPassphrase = "correct horse battery staple";

// Record i of a test backup: the account first, then contacts and messages of varying size.
BackupRecord make_record(std::uint64_t i) {
  BackupRecord r;
  if (i == 0) {
    auto* a = r.mutable_account();
    a->set_username("alice");
    a->set_server_host("sotto.example");
    a->set_server_port(7443);
    a->set_server_fingerprint(std::string(64, 'f'));
    a->set_trust_policy("on-first-use");
    a->set_created_at(1'800'000'000'000);
  } else if (i % 10 == 1) {
    auto* c = r.mutable_contact();
    c->set_username("contact" + std::to_string(i));
    c->set_identity_key(std::string(33, static_cast<char>(i)));
    c->set_accepted(true);
    c->set_verified(i % 3 == 0);
  } else {
    auto* m = r.mutable_message();
    m->set_id("id" + std::to_string(i));
    m->set_peer("bob");
    m->set_sender(i % 2 ? "alice" : "bob");
    m->set_sender_device(1);
    m->set_timestamp(1'800'000'000'000 + i);
    m->set_body(std::string(i % 300, static_cast<char>('a' + i % 26)));
    m->set_outgoing(i % 2 == 1);
  }
  return r;
}

bool same(const BackupRecord& a, const BackupRecord& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

BackupSecret passphrase() {
  return BackupSecret::passphrase(kPassphrase);
}

std::string write_backup(std::uint64_t count, std::uint64_t seed = 1) {
  crypto::DeterministicRng rng(seed);
  std::ostringstream out;
  auto writer = BackupWriter::open(out, passphrase(), rng, kFast);
  EXPECT_TRUE(writer);
  for (std::uint64_t i = 0; i < count; ++i) EXPECT_TRUE(writer->add(make_record(i)));
  const auto size = writer->finish();
  EXPECT_TRUE(size);
  EXPECT_EQ(*size, out.str().size());
  return out.str();
}

struct ReadResult {
  tl::expected<BackupSummary, BackupError> result;
  std::vector<BackupRecord> records;
};

ReadResult read_backup(const std::string& file, const BackupSecret& secret = passphrase(),
                       std::optional<crypto::Argon2Params> kdf_limit = std::nullopt) {
  ReadResult r{tl::unexpected(BackupError::io), {}};
  std::istringstream in(file);
  BackupReader reader([&](const BackupRecord& rec) {
    r.records.push_back(rec);
    return true;
  });
  if (kdf_limit) reader.limit_kdf(*kdf_limit);
  r.result = reader.read(in, secret);
  return r;
}

BackupError read_error(const std::string& file, const BackupSecret& secret = passphrase()) {
  const ReadResult r = read_backup(file, secret);
  EXPECT_FALSE(r.result.has_value());
  return r.result ? BackupError::io : r.result.error();
}

std::string u32be(std::uint64_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(v >> (24 - 8 * i));
  return s;
}

std::string framed(const BackupRecord& r) {
  const std::string body = r.SerializeAsString();
  return u32be(body.size()) + body;
}

// Builds files chunk by chunk with the real key, for the cases no writer of ours produces.
class Forge {
 public:
  explicit Forge(std::uint64_t seed = 9, BackupKeySource source = BackupKeySource::passphrase)
      : rng_(seed) {
    header_.key_source = source;
    header_.kdf = kFast;
    rng_.fill(header_.salt);
    key_ = *passphrase().derive_key(header_.salt, header_.kdf);
    push_.emplace(key_, rng_);
    header_.stream_header = push_->header();
    header_bytes_ = header_.encode();
    file_.assign(header_bytes_.begin(), header_bytes_.end());
  }

  Forge& chunk(const std::string& plaintext, bool final) {
    const Bytes sealed =
        push_->push(as_bytes(plaintext), header_bytes_,
                    final ? crypto::SecretStreamTag::final : crypto::SecretStreamTag::message);
    file_ += u32be(sealed.size());
    file_.append(sealed.begin(), sealed.end());
    return *this;
  }
  const std::string& file() const { return file_; }

 private:
  crypto::DeterministicRng rng_;
  BackupHeader header_;
  crypto::Secret<32> key_;
  std::optional<crypto::SecretStreamPush> push_;
  std::array<std::uint8_t, kBackupHeaderSize> header_bytes_{};
  std::string file_;
};

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("sotto-backup-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

TEST(BackupFile, EmptyBackupRoundTrips) {
  const std::string file = write_backup(0);
  // Header, then one empty final chunk: its length and the 17-byte secretstream overhead.
  EXPECT_EQ(file.size(), kBackupHeaderSize + 4 + 17);
  EXPECT_EQ(file.substr(0, 8), "SOTTOBK1");
  const ReadResult r = read_backup(file);
  ASSERT_TRUE(r.result) << to_string(r.result.error());
  EXPECT_EQ(r.result->records, 0u);
  EXPECT_EQ(r.result->chunks, 1u);
  EXPECT_EQ(r.result->bytes, file.size());
  EXPECT_TRUE(r.records.empty());
}

TEST(BackupFile, OneRecordRoundTrips) {
  const std::string file = write_backup(1);
  const ReadResult r = read_backup(file);
  ASSERT_TRUE(r.result) << to_string(r.result.error());
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_TRUE(same(r.records[0], make_record(0)));
  EXPECT_EQ(r.result->header.key_source, BackupKeySource::passphrase);
  EXPECT_EQ(r.result->header.kdf.ops_limit, kFast.ops_limit);
  EXPECT_EQ(r.result->header.kdf.mem_limit, kFast.mem_limit);
}

// 100k records through files on disk, neither side holding the backup in memory: the writer's
// file grows while records are added, and the reader hands out the first record after reading
// one chunk, not the file.
TEST(BackupFile, HundredThousandRecordsAreStreamed) {
  constexpr std::uint64_t kCount = 100'000;
  TempDir dir;
  const fs::path path = dir.path() / "big.sottobackup";
  crypto::DeterministicRng rng(3);
  auto writer = BackupWriter::create(path, passphrase(), rng, kFast);
  ASSERT_TRUE(writer);
  std::uint64_t written_midway = 0;
  for (std::uint64_t i = 0; i < kCount; ++i) {
    ASSERT_TRUE(writer->add(make_record(i)));
    if (i == kCount / 2) written_midway = writer->bytes_written();
  }
  EXPECT_FALSE(fs::exists(path));  // only "<path>.partial" until finish()
  const auto size = writer->finish();
  ASSERT_TRUE(size);
  EXPECT_EQ(writer->records(), kCount);
  EXPECT_EQ(fs::file_size(path), *size);
  EXPECT_FALSE(fs::exists(dir.path() / "big.sottobackup.partial"));
  EXPECT_GT(written_midway, *size / 3);
  EXPECT_LT(written_midway, *size * 2 / 3);

  std::uint64_t seen = 0;
  std::uint64_t bytes_at_first_record = 0;
  std::uint64_t last_progress = 0;
  std::uint64_t progress_calls = 0;
  BackupReader reader(
      [&](const BackupRecord& r) {
        if (!same(r, make_record(seen))) {
          ADD_FAILURE() << "record " << seen << " differs";
          return false;
        }
        if (seen == 0) bytes_at_first_record = last_progress;
        ++seen;
        return true;
      },
      [&](std::uint64_t bytes, std::optional<std::uint64_t> total) {
        EXPECT_EQ(total, std::optional<std::uint64_t>(*size));
        EXPECT_GE(bytes, last_progress);
        last_progress = bytes;
        ++progress_calls;
      });
  const auto summary = reader.read(path, passphrase());
  ASSERT_TRUE(summary) << to_string(summary.error());
  EXPECT_EQ(seen, kCount);
  EXPECT_EQ(summary->records, kCount);
  EXPECT_EQ(summary->bytes, *size);
  EXPECT_EQ(last_progress, *size);
  EXPECT_EQ(progress_calls, summary->chunks + 1);
  EXPECT_GT(summary->chunks, 100u);
  // Progress is reported after each chunk; the first record came with the header only read.
  EXPECT_EQ(bytes_at_first_record, kBackupHeaderSize);
}

TEST(BackupFile, ChunksAreFilledUpToTheLimit) {
  // Records of exactly the largest size: one per chunk, and each chunk exactly 64 KiB.
  BackupRecord big;
  big.mutable_message()->set_body(std::string(kMaxBackupRecordSize, 'b'));
  const std::size_t overshoot = big.ByteSizeLong() - kMaxBackupRecordSize;
  big.mutable_message()->set_body(std::string(kMaxBackupRecordSize - overshoot, 'b'));
  while (big.ByteSizeLong() < kMaxBackupRecordSize)
    big.mutable_message()->mutable_body()->push_back('b');
  ASSERT_EQ(big.ByteSizeLong(), kMaxBackupRecordSize);

  crypto::DeterministicRng rng(4);
  std::ostringstream out;
  auto writer = BackupWriter::open(out, passphrase(), rng, kFast);
  ASSERT_TRUE(writer);
  ASSERT_TRUE(writer->add(big));
  ASSERT_TRUE(writer->add(big));
  ASSERT_TRUE(writer->finish());
  EXPECT_EQ(out.str().size(), kBackupHeaderSize + 2 * (4 + kBackupChunkSize + 17));
  const ReadResult r = read_backup(out.str());
  ASSERT_TRUE(r.result);
  EXPECT_EQ(r.result->chunks, 2u);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_TRUE(same(r.records[1], big));

  big.mutable_message()->mutable_body()->push_back('b');
  crypto::DeterministicRng rng2(4);
  std::ostringstream out2;
  auto writer2 = BackupWriter::open(out2, passphrase(), rng2, kFast);
  ASSERT_TRUE(writer2);
  EXPECT_EQ(writer2->add(big).error(), BackupError::record_too_large);
  EXPECT_EQ(writer2->add(BackupRecord()).error(), BackupError::malformed_record);
  EXPECT_TRUE(writer2->add(make_record(0)));  // the writer is still usable
}

TEST(BackupFile, RecoveryCodeBackupsNeedTheCode) {
  crypto::DeterministicRng rng(5);
  const RecoveryCode code = RecoveryCode::generate(rng);
  std::ostringstream out;
  auto writer = BackupWriter::open(out, BackupSecret::recovery_code(code), rng, kFast);
  ASSERT_TRUE(writer);
  ASSERT_TRUE(writer->add(make_record(0)));
  ASSERT_TRUE(writer->finish());
  const std::string file = out.str();

  std::istringstream in(file);
  const auto info = inspect_backup(in);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->key_source, BackupKeySource::recovery_code);

  const crypto::SecretBuffer typed = code.text();
  auto parsed =
      RecoveryCode::parse(std::string(reinterpret_cast<const char*>(typed.data()), typed.size()));
  ASSERT_TRUE(parsed);
  const ReadResult r = read_backup(file, BackupSecret::recovery_code(*parsed));
  ASSERT_TRUE(r.result);
  EXPECT_EQ(r.records.size(), 1u);
  EXPECT_EQ(read_error(file, passphrase()), BackupError::wrong_key_source);
  EXPECT_EQ(read_error(file, BackupSecret::recovery_code(RecoveryCode::generate(rng))),
            BackupError::wrong_key);
  // The key is Argon2id of the code's normalised text, as derive_backup_key says.
  EXPECT_TRUE(*BackupSecret::recovery_code(code).derive_key(info->salt, info->kdf) ==
              *derive_backup_key(code, info->salt, info->kdf));
}

TEST(BackupFile, WrongPassphraseIsReportedAsSuch) {
  const std::string file = write_backup(3);
  EXPECT_EQ(read_error(file, BackupSecret::passphrase("correct horse battery stapler")),
            BackupError::wrong_key);
  EXPECT_EQ(read_error(file, BackupSecret::passphrase("")), BackupError::wrong_key);
  const std::string text(to_string(BackupError::wrong_key));
  EXPECT_EQ(text.find("horse"), std::string::npos);
}

TEST(BackupFile, TruncationAnywhereIsAnError) {
  const std::string file = write_backup(3000);  // several chunks
  // The offsets where a chunk ends: a cut there is a missing final chunk, anywhere else truncated.
  std::vector<std::size_t> boundaries;
  for (std::size_t at = kBackupHeaderSize; at < file.size();) {
    boundaries.push_back(at);
    const auto* p = reinterpret_cast<const std::uint8_t*>(file.data() + at);
    at += 4 +
          ((std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) | (std::size_t{p[2]} << 8) | p[3]);
  }
  ASSERT_GE(boundaries.size(), 3u);
  for (std::size_t cut : boundaries) {
    EXPECT_EQ(read_error(file.substr(0, cut)), BackupError::missing_final_chunk) << cut;
    EXPECT_EQ(read_error(file.substr(0, cut + 1)), BackupError::truncated) << cut;
    EXPECT_EQ(read_error(file.substr(0, cut + 3)), BackupError::truncated) << cut;
    EXPECT_EQ(read_error(file.substr(0, cut + 4)), BackupError::truncated) << cut;
    EXPECT_EQ(read_error(file.substr(0, cut + 100)), BackupError::truncated) << cut;
  }
  EXPECT_EQ(read_error(file.substr(0, file.size() - 1)), BackupError::truncated);
  for (std::size_t cut = 8; cut < kBackupHeaderSize; ++cut) {
    EXPECT_EQ(read_error(file.substr(0, cut)), BackupError::truncated) << cut;
  }
  for (std::size_t cut = 0; cut < 8; ++cut) {
    EXPECT_EQ(read_error(file.substr(0, cut)), BackupError::not_a_backup) << cut;
  }
}

TEST(BackupFile, MissingFinalChunkIsAnError) {
  const std::string records = framed(make_record(0)) + framed(make_record(1));
  const std::string no_final = Forge().chunk(records, false).chunk(records, false).file();
  const ReadResult r = read_backup(no_final);
  ASSERT_FALSE(r.result);
  EXPECT_EQ(r.result.error(), BackupError::missing_final_chunk);
  // The records were authentic and handed out: all or nothing is the caller's (see the header).
  EXPECT_EQ(r.records.size(), 4u);
  // A header alone is a backup without its final chunk too.
  EXPECT_EQ(read_error(Forge().file()), BackupError::missing_final_chunk);
}

TEST(BackupFile, TrailingBytesAfterTheFinalChunkAreAnError) {
  const std::string file = write_backup(2);
  EXPECT_EQ(read_error(file + std::string(1, '\0')), BackupError::trailing_bytes);
  EXPECT_EQ(read_error(file + file), BackupError::trailing_bytes);
  // Even a genuine chunk: the final one again.
  const std::size_t final_chunk = kBackupHeaderSize;  // a small backup has a single chunk
  EXPECT_EQ(read_error(file + file.substr(final_chunk)), BackupError::trailing_bytes);
}

TEST(BackupFile, OversizedRecordLengthsAreRefused) {
  const std::string record = framed(make_record(0));
  // Longer than what is left of the chunk.
  std::string longer = record;
  longer.replace(0, 4, u32be(record.size() - 4 + 1));
  EXPECT_EQ(read_error(Forge().chunk(longer, true).file()), BackupError::oversized_record);
  // Beyond any chunk.
  std::string huge = record;
  huge.replace(0, 4, u32be(0xFFFFFFFF));
  EXPECT_EQ(read_error(Forge().chunk(huge, true).file()), BackupError::oversized_record);
  std::string just_over = record;
  just_over.replace(0, 4, u32be(kMaxBackupRecordSize + 1));
  EXPECT_EQ(read_error(Forge().chunk(just_over, true).file()), BackupError::oversized_record);
}

TEST(BackupFile, MalformedRecordsAreRefused) {
  // Not protobuf: a field with wire type 7.
  EXPECT_EQ(read_error(Forge().chunk(u32be(2) + "\xFF\x01", true).file()),
            BackupError::malformed_record);
  // A truncated length-delimited field inside the record.
  EXPECT_EQ(read_error(Forge().chunk(u32be(2) + "\x1A\x05", true).file()),
            BackupError::malformed_record);
  // Invalid UTF-8 in a string field.
  BackupRecord r;
  r.mutable_contact()->set_username("x");
  std::string bytes = r.SerializeAsString();
  bytes.back() = '\xFF';
  EXPECT_EQ(read_error(Forge().chunk(u32be(bytes.size()) + bytes, true).file()),
            BackupError::malformed_record);
  // A record length cut short at the end of the chunk.
  EXPECT_EQ(read_error(Forge().chunk(framed(make_record(0)) + std::string(2, '\0'), true).file()),
            BackupError::malformed_record);
  // A later chunk's bad record: the earlier chunk's records were handed out, then the error.
  const ReadResult later = read_backup(
      Forge().chunk(framed(make_record(0)), false).chunk(u32be(1) + "\xFF", true).file());
  ASSERT_FALSE(later.result);
  EXPECT_EQ(later.result.error(), BackupError::malformed_record);
  EXPECT_EQ(later.records.size(), 1u);
}

TEST(BackupFile, ChunkLengthsOutsideTheBoundsAreRefused) {
  const std::string header = Forge().file();
  EXPECT_EQ(read_error(header + u32be(16) + std::string(16, 'x')), BackupError::bad_chunk_length);
  EXPECT_EQ(read_error(header + u32be(kMaxBackupSealedChunkSize + 1)),
            BackupError::bad_chunk_length);
  EXPECT_EQ(read_error(header + u32be(0xFFFFFFFF)), BackupError::bad_chunk_length);
  // At the bounds the length is accepted (and the missing bytes are the error).
  EXPECT_EQ(read_error(header + u32be(kMaxBackupSealedChunkSize)), BackupError::truncated);
  EXPECT_EQ(read_error(header + u32be(17) + std::string(17, 'x')), BackupError::wrong_key);
}

TEST(BackupFile, ReorderedDroppedOrAlteredChunksAreCorrupt) {
  Forge forge;
  forge.chunk(framed(make_record(0)), false);
  const std::size_t first_end = forge.file().size();
  forge.chunk(framed(make_record(1)), false);
  const std::size_t second_end = forge.file().size();
  forge.chunk(framed(make_record(2)), true);
  const std::string file = forge.file();
  ASSERT_EQ(read_backup(file).records.size(), 3u);
  const std::string header = file.substr(0, kBackupHeaderSize);
  const std::string c1 = file.substr(kBackupHeaderSize, first_end - kBackupHeaderSize);
  const std::string c2 = file.substr(first_end, second_end - first_end);
  const std::string c3 = file.substr(second_end);

  EXPECT_EQ(read_error(header + c2 + c1 + c3), BackupError::wrong_key);  // the first one fails
  const ReadResult swapped = read_backup(header + c1 + c3 + c2);
  ASSERT_FALSE(swapped.result);
  EXPECT_EQ(swapped.result.error(), BackupError::corrupt);
  EXPECT_EQ(swapped.records.size(), 1u);  // only the authenticated first chunk's record
  EXPECT_EQ(read_error(header + c1 + c3), BackupError::corrupt);
  EXPECT_EQ(read_error(header + c1 + c1 + c2 + c3), BackupError::corrupt);

  // Chunks of another backup (same passphrase, another salt and stream) do not fit in.
  const std::string other = write_backup(1, 77);
  EXPECT_EQ(read_error(header + c1 + other.substr(kBackupHeaderSize)), BackupError::corrupt);
}

TEST(BackupFile, HeaderFieldsAreCheckedBeforeAnyKeyDerivation) {
  const std::string file = write_backup(1);
  const auto with = [&](std::size_t offset, std::string bytes) {
    std::string f = file;
    f.replace(offset, bytes.size(), bytes);
    return f;
  };
  EXPECT_EQ(read_error(with(0, "SOTTOBK2")), BackupError::not_a_backup);
  EXPECT_EQ(read_error(with(0, "sottobk1")), BackupError::not_a_backup);
  EXPECT_EQ(read_error("PK\x03\x04 not a backup at all, but long enough for a header......."),
            BackupError::not_a_backup);
  EXPECT_EQ(read_error(with(8, "\x02")), BackupError::unsupported_version);
  EXPECT_EQ(read_error(with(8, std::string(1, '\0'))), BackupError::unsupported_version);
  EXPECT_EQ(read_error(with(9, std::string(1, '\0'))), BackupError::unknown_key_source);
  EXPECT_EQ(read_error(with(9, "\x03")), BackupError::unknown_key_source);
  // ops limit (offset 26, u32 BE) and mem limit (offset 30, u64 BE).
  EXPECT_EQ(read_error(with(26, u32be(0))), BackupError::bad_kdf_params);
  EXPECT_EQ(read_error(with(26, u32be(65))), BackupError::bad_kdf_params);
  EXPECT_EQ(read_error(with(26, u32be(0xFFFFFFFF))), BackupError::bad_kdf_params);
  EXPECT_EQ(read_error(with(30, std::string(8, '\0'))), BackupError::bad_kdf_params);
  EXPECT_EQ(read_error(with(30, std::string("\0\0\0\x01\0\0\0\x01", 8))),
            BackupError::bad_kdf_params);  // 4 GiB + 1
  EXPECT_EQ(read_error(with(30, std::string(8, '\xFF'))), BackupError::bad_kdf_params);
  // In bounds but changed: the key or the associated data no longer matches.
  EXPECT_EQ(read_error(with(26, u32be(2))), BackupError::wrong_key);

  // A reader may accept less than the format allows.
  std::istringstream in(file);
  BackupReader reader([](const BackupRecord&) { return true; });
  reader.limit_kdf({1, 32 * 1024});
  EXPECT_EQ(reader.read(in, passphrase()).error(), BackupError::bad_kdf_params);
  std::istringstream in2(file);
  reader.limit_kdf(kFast);
  EXPECT_TRUE(reader.read(in2, passphrase()));
}

// Every single-bit change of a small backup is detected, and no record is handed out from it.
TEST(BackupFile, EveryFlippedBitIsDetected) {
  const std::string file = write_backup(1);
  ASSERT_LT(file.size(), 256u);
  for (std::size_t i = 0; i < file.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = file;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      // Limited to the file's own parameters, so that a flipped mem limit bit (up to 4 GiB is
      // in the format's bounds) is refused before it costs an Argon2id run.
      const ReadResult r = read_backup(bad, passphrase(), kFast);
      ASSERT_FALSE(r.result) << "byte " << i << " bit " << bit;
      EXPECT_TRUE(r.records.empty()) << "byte " << i << " bit " << bit;
    }
  }
}

TEST(BackupFile, TheHandlerCanStopReading) {
  const std::string file = write_backup(10);
  std::istringstream in(file);
  int seen = 0;
  BackupReader reader([&](const BackupRecord&) { return ++seen < 4; });
  EXPECT_EQ(reader.read(in, passphrase()).error(), BackupError::stopped);
  EXPECT_EQ(seen, 4);
}

// A stream that cannot seek: the reader works, without a total for its progress.
class PipeBuf : public std::streambuf {
 public:
  explicit PipeBuf(const std::string& data) : data_(data) {
    char* p = data_.data();
    setg(p, p, p + data_.size());
  }

 protected:
  pos_type seekoff(off_type, std::ios_base::seekdir, std::ios_base::openmode) override {
    return pos_type(off_type(-1));
  }

 private:
  std::string data_;
};

TEST(BackupFile, ProgressReportsTheTotalWhenItIsKnown) {
  const std::string file = write_backup(50);
  std::vector<std::pair<std::uint64_t, std::optional<std::uint64_t>>> calls;
  BackupReader reader([](const BackupRecord&) { return true; },
                      [&](std::uint64_t bytes, std::optional<std::uint64_t> total) {
                        calls.emplace_back(bytes, total);
                      });
  std::istringstream seekable(file);
  ASSERT_TRUE(reader.read(seekable, passphrase()));
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0], std::make_pair(std::uint64_t{kBackupHeaderSize},
                                     std::optional<std::uint64_t>(file.size())));
  EXPECT_EQ(calls[1],
            std::make_pair(std::uint64_t{file.size()}, std::optional<std::uint64_t>(file.size())));

  calls.clear();
  PipeBuf pipe(file);
  std::istream unseekable(&pipe);
  ASSERT_TRUE(reader.read(unseekable, passphrase()));
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].first, file.size());
  EXPECT_FALSE(calls[1].second.has_value());

  // From the middle of a stream: the backup starts where the stream is, and so does the total.
  calls.clear();
  std::istringstream prefixed("prefix" + file);
  prefixed.seekg(6);
  ASSERT_TRUE(reader.read(prefixed, passphrase()));
  EXPECT_EQ(calls.back(),
            std::make_pair(std::uint64_t{file.size()}, std::optional<std::uint64_t>(file.size())));
}

TEST(BackupFile, InspectTellsABackupAndItsKeySourceWithoutAKey) {
  const std::string file = write_backup(1);
  std::istringstream in(file);
  const auto info = inspect_backup(in);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->key_source, BackupKeySource::passphrase);
  EXPECT_EQ(info->version, kBackupVersion);
  std::istringstream text("just some text that is not a backup, but long enough to be one");
  EXPECT_EQ(inspect_backup(text).error(), BackupError::not_a_backup);
  std::istringstream empty("");
  EXPECT_EQ(inspect_backup(empty).error(), BackupError::not_a_backup);
  std::istringstream cut(file.substr(0, 20));
  EXPECT_EQ(inspect_backup(cut).error(), BackupError::truncated);

  TempDir dir;
  EXPECT_EQ(inspect_backup(dir.path() / "absent").error(), BackupError::io);
  std::ofstream(dir.path() / "b", std::ios::binary) << file;
  EXPECT_EQ(inspect_backup(dir.path() / "b")->key_source, BackupKeySource::passphrase);
}

TEST(BackupFile, AFileIsOnlyReplacedByAFinishedBackup) {
  TempDir dir;
  const fs::path path = dir.path() / "backup";
  std::ofstream(path) << "the previous backup";
  crypto::DeterministicRng rng(6);
  {
    auto writer = BackupWriter::create(path, passphrase(), rng, kFast);
    ASSERT_TRUE(writer);
    ASSERT_TRUE(writer->add(make_record(0)));
    EXPECT_TRUE(fs::exists(dir.path() / "backup.partial"));
    // Destroyed without finish(): the partial file goes, the old backup stays.
  }
  EXPECT_FALSE(fs::exists(dir.path() / "backup.partial"));
  std::ifstream old(path);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(old), {}), "the previous backup");

  auto writer = BackupWriter::create(path, passphrase(), rng, kFast);
  ASSERT_TRUE(writer);
  ASSERT_TRUE(writer->add(make_record(0)));
  ASSERT_TRUE(writer->finish());
  std::uint64_t records = 0;
  BackupReader reader([&](const BackupRecord&) { return ++records, true; });
  ASSERT_TRUE(reader.read(path, passphrase()));
  EXPECT_EQ(records, 1u);
  EXPECT_EQ(reader.read(dir.path() / "absent", passphrase()).error(), BackupError::io);
  EXPECT_EQ(
      BackupWriter::create(dir.path() / "no-such-dir" / "b", passphrase(), rng, kFast).error(),
      BackupError::io);
}

TEST(BackupFile, WriteFailuresAreReported) {
  crypto::DeterministicRng rng(7);
  std::ostream nowhere(nullptr);  // every write fails
  EXPECT_EQ(BackupWriter::open(nowhere, passphrase(), rng, kFast).error(), BackupError::io);
  EXPECT_EQ(BackupWriter::open(nowhere, passphrase(), rng, crypto::Argon2Params{0, 8192}).error(),
            BackupError::bad_kdf_params);

  std::ostringstream out;
  auto writer = BackupWriter::open(out, passphrase(), rng, kFast);
  ASSERT_TRUE(writer);
  out.setstate(std::ios::badbit);
  EXPECT_EQ(writer->finish().error(), BackupError::io);
}

TEST(BackupFile, WritersPickTheFastParametersOnlyInTests) {
  const char* before = std::getenv("SOTTO_TEST_FAST_KDF");
  ::setenv("SOTTO_TEST_FAST_KDF", "1", 1);
  crypto::DeterministicRng rng(8);
  std::ostringstream out;
  auto writer = BackupWriter::open(out, passphrase(), rng);
  ASSERT_TRUE(writer);
  ASSERT_TRUE(writer->finish());
  std::istringstream in(out.str());
  const auto info = inspect_backup(in);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kdf.ops_limit, 1u);
  EXPECT_EQ(info->kdf.mem_limit, 64u * 1024);
  if (before == nullptr) ::unsetenv("SOTTO_TEST_FAST_KDF");
}

// A backup made by this version, byte for byte: later versions must keep reading it. Made once
// with the DeterministicRng below (the writer is deterministic given its Rng), and read back by
// an independent implementation of docs/backup.md over Python's `cryptography` (Argon2id,
// HChaCha20, ChaCha20 and Poly1305 composed as libsodium's secretstream), which found both
// records.
constexpr std::string_view kPinnedBackup =
    "534f54544f424b310101e42b90b1c6daead071ea70f182576ed20000000100000000000100001265e8671ecc"
    "93fd81c54b61425495d6d3502f95d497204f000000bc223dfa9f2bcfb01f8c66b2e56639ddc23bc8b6cbfa6c"
    "6625f7375edcc5d0b1b9c87f3e2a89db1f771facb3e3b8ce3827c1fb99c251c10a514fc4b900c43fef5ca487"
    "35d811467929c476baa4a563163ea6f0d43619ad291a1a87c91252e6c705dc40ff84a5772c11476660dc1730"
    "30653dc6423dc2491d464c9095a6e258ec9bdfb2b712b7fa0000b7d95f61878aee1df997e752452b357f387c"
    "b0365c6f90fed8d5c75b5e9d7cf587806f86a42e934b3f8c20ba60c3aa7a1d56bda4";

TEST(BackupFile, PinnedBackupIsWrittenAndReadTheSame) {
  crypto::DeterministicRng rng(2026);
  std::ostringstream out;
  auto writer = BackupWriter::open(out, passphrase(), rng, kFast);
  ASSERT_TRUE(writer);
  ASSERT_TRUE(writer->add(make_record(0)));
  ASSERT_TRUE(writer->add(make_record(1)));
  ASSERT_TRUE(writer->finish());
  EXPECT_EQ(to_hex(as_bytes(out.str())), kPinnedBackup);

  const Bytes pinned = from_hex(kPinnedBackup);
  const ReadResult r = read_backup(std::string(pinned.begin(), pinned.end()));
  ASSERT_TRUE(r.result);
  ASSERT_EQ(r.records.size(), 2u);
  EXPECT_TRUE(same(r.records[0], make_record(0)));
  EXPECT_TRUE(same(r.records[1], make_record(1)));
}

TEST(BackupFile, ErrorTextsAreDistinct) {
  std::vector<std::string> texts;
  for (int e = 0; e <= static_cast<int>(BackupError::stopped); ++e) {
    texts.emplace_back(to_string(static_cast<BackupError>(e)));
  }
  std::sort(texts.begin(), texts.end());
  EXPECT_EQ(std::adjacent_find(texts.begin(), texts.end()), texts.end());
}

}  // namespace
}  // namespace sotto::client
