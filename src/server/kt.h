// The server's key transparency log (docs/transparency.md): a transparency::TransparencyLog whose
// entries live in the server store's own database (store::KtStore), told of every account change
// inside that change's transaction (store::AccountLog), and the proofs lookups carry.
//
// Keys: DIR/kt/signing.key (the Ed25519 seed tree heads are signed with) and DIR/kt/vrf.key (the
// VRF secret that hides usernames), 32 bytes each, mode 0600, made on first start. Never logged;
// only their public halves leave this class.
//
// Owns the log; borrows the KtStore and the random generator, which must outlive it. Thread-safe
// (the log's own mutex).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/rng.h"
#include "service.pb.h"
#include "store/server/store.h"
#include "transparency/log.h"

namespace sotto::server {

// The log's two public keys, as printed and as clients are told to pin them: 64 hex digits of the
// signing key, ':' and 64 of the VRF key.
std::string kt_keys_text(const transparency::LogPublicKeys& keys);
std::optional<transparency::LogPublicKeys> parse_kt_keys(std::string_view text);

// Reads the public keys of DIR/kt without starting a log (`sotto-server kt-keys`); nullopt when
// there are none yet or they cannot be read.
std::optional<transparency::LogPublicKeys> read_kt_public_keys(const std::filesystem::path& dir);

// The first start with a log logs the accounts there are in entries of at most this many changes
// (an audit record of one is then at most 4096 * 76 bytes, well inside a frame), all written in
// one transaction.
inline constexpr std::size_t kBulkEntryChanges = 4096;
static_assert(kBulkEntryChanges <= transparency::kMaxAuditChanges);
// An audit answer holds at most this many records, and stops adding records once it holds this
// many bytes (it always holds one when there is one).
inline constexpr std::uint32_t kMaxAuditRecordsPerAnswer = 1024;
inline constexpr std::size_t kMaxAuditAnswerBytes = 1 << 20;
// A co-signature dated further ahead of the server's clock than this is refused.
inline constexpr std::uint64_t kMaxCosignatureAheadMs = 10 * 60 * 1000;

class KeyTransparency final : public store::AccountLog {
 public:
  using NowMs = std::function<std::uint64_t()>;
  // Loads (or makes) the keys under data_dir/kt, opens the log from `kt`, logs every account not
  // logged yet (the first start with a log: all accounts, in one entry), then has `kt` log every
  // account change from now on. The error text is for the operator and names no secret.
  [[nodiscard]] static tl::expected<std::unique_ptr<KeyTransparency>, std::string> open(
      const std::filesystem::path& data_dir, store::KtStore& kt, crypto::Rng& rng, NowMs now_ms);
  // For tests: keys given, no files.
  [[nodiscard]] static tl::expected<std::unique_ptr<KeyTransparency>, std::string> open_with_keys(
      transparency::VrfKeyPair vrf, crypto::Ed25519KeyPair signing, store::KtStore& kt,
      crypto::Rng& rng, NowMs now_ms, std::size_t bulk_entry_changes = kBulkEntryChanges);
  ~KeyTransparency() override;  // unsets the store's account log
  KeyTransparency(const KeyTransparency&) = delete;
  KeyTransparency& operator=(const KeyTransparency&) = delete;

  transparency::LogPublicKeys public_keys() const { return log_.public_keys(); }
  transparency::TransparencyLog& log() { return log_; }

  [[nodiscard]] tl::expected<void, store::Error> account_changed(
      const store::AccountRecord& after, const Commit& commit, const ReadFrom& read_from) override;

  // Takes in what other servers sharing the store appended (nothing to do on SQLite). Lookups
  // (search, monitor) do it first; other readers of log() call it themselves.
  [[nodiscard]] tl::expected<void, transparency::Error> refresh() const;

  // The auditors whose co-signatures this server keeps and hands out (config kt_auditors). Loads
  // their stored co-signatures and keeps those of a head this log signed at that size (after a
  // log was rewritten or lost entries, an older co-signature no longer is). Call before serving.
  [[nodiscard]] tl::expected<void, std::string> set_auditors(
      std::vector<crypto::Ed25519PublicKey> auditors);

  enum class CosignRefusal { unknown_auditor, bad_head, bad_signature, too_new, storage };
  // Keeps `c` as its auditor's newest co-signature (durably) when the auditor is configured, the
  // head is one this log signed at that size and the signature verifies. An older co-signature
  // than the one kept is accepted and changes nothing.
  [[nodiscard]] tl::expected<void, CosignRefusal> add_cosignature(
      const transparency::Cosignature& c);

  // Audit records from entry `start` (at most `count` and about max_bytes, at least one when
  // there is one) and the newest signed head, read before them; encoded. None from a start at or
  // beyond the head's size: the head alone tells an auditor the log holds no more (or shrank).
  struct Audit {
    std::vector<Bytes> records;
    Bytes tree_head;
  };
  [[nodiscard]] tl::expected<Audit, transparency::Error> audit(
      std::uint64_t start, std::uint32_t count, std::size_t max_bytes = kMaxAuditAnswerBytes) const;

  // A co-signature as a lookup carries it: with a consistency proof from its head to the
  // answer's.
  struct ServedCosignature {
    transparency::Cosignature cosignature;
    Bytes consistency;
  };
  // What a lookup of `username` carries: the current signed head, a consistency proof from
  // `known_size` (empty when 0 or the current size), a search proof, and the co-signatures;
  // each encoded.
  struct Proof {
    Bytes tree_head;
    Bytes consistency;
    Bytes proof;  // search or monitor proof
    std::vector<ServedCosignature> cosignatures;
  };
  [[nodiscard]] tl::expected<Proof, transparency::Error> search(std::string_view username,
                                                                std::uint64_t known_size) const;
  [[nodiscard]] tl::expected<Proof, transparency::Error> monitor(std::string_view username,
                                                                 std::uint64_t known_size) const;

  // The log value of an account record (nullopt when it cannot be logged: sizes out of range).
  static std::optional<transparency::AccountValue> value_of(const store::AccountRecord& record);

 private:
  class Adapter;
  KeyTransparency(std::unique_ptr<Adapter> adapter, transparency::VrfKeyPair vrf,
                  crypto::Ed25519KeyPair signing, store::KtStore& kt, crypto::Rng& rng,
                  NowMs now_ms);
  [[nodiscard]] tl::expected<void, std::string> start(std::size_t bulk_entry_changes);
  [[nodiscard]] tl::expected<Proof, transparency::Error> head_and_consistency(
      std::uint64_t known_size, const transparency::SignedTreeHead& head) const;

  std::unique_ptr<Adapter> adapter_;
  store::KtStore& kt_;
  NowMs now_ms_;
  // mutable: a lookup takes in the entries other servers appended before it answers.
  mutable transparency::TransparencyLog log_;
  // The stored co-signatures of `auditors` that are of this log (nullopt: the store failed).
  std::optional<std::vector<transparency::Cosignature>> read_cosignatures(
      const std::vector<crypto::Ed25519PublicKey>& auditors) const;

  mutable std::mutex cosign_mu_;
  std::vector<crypto::Ed25519PublicKey> auditors_;
  // Each auditor's newest, consistent; on a shared store read again by refresh() at most every
  // kCosignatureRereadMs (mutable for that).
  mutable std::vector<transparency::Cosignature> cosignatures_;
  mutable std::uint64_t cosignatures_read_ms_ = 0;
  static constexpr std::uint64_t kCosignatureRereadMs = 5000;
};

// Sets a KtCosignature message from a served co-signature.
void fill_kt_cosignature(const KeyTransparency::ServedCosignature& c,
                         wire::service::KtCosignature& out);

// Fills a lookup's KtProof for `username` (docs/transparency.md). On failure sets `out`'s status
// (BAD_REQUEST for a known size beyond the log, INTERNAL otherwise) and returns false.
bool fill_kt_proof(const KeyTransparency& kt, std::string_view username, std::uint64_t known_size,
                   wire::service::KtProof& proof, wire::service::Response& out);

}  // namespace sotto::server
