// Third-party auditing of a transparency log: for each log entry the log publishes an AuditRecord
// (the entry and the label versions it added, by VRF index and commitment, never by username or
// value). An Auditor replays every record from entry 0 with its own copy of the trees and checks
// that the log only grows and that every label only ever gains versions: each change is the
// label's next version and is added by this entry, and the prefix root the entry names is the one
// the changes give. A log that rewrites or drops an old entry, or takes a version back, cannot
// produce records that pass and still match the heads it shows clients. The auditor co-signs
// tree heads it has checked.
//
// Auditor is not thread-safe. The free functions are.
#pragma once

#include <cstdint>
#include <tl/expected.hpp>
#include <unordered_map>
#include <vector>

#include "crypto/ed25519.h"
#include "transparency/proofs.h"

namespace sotto::transparency {

struct LeafChange {
  Index index{};
  VersionLink link;  // version, entry, commitment
  friend bool operator==(const LeafChange&, const LeafChange&) = default;
};

// Encoding: LogEntry[40] || u32 count || (index[32] || u32 version || u64 entry ||
// commitment[32])*, in the order the log applied them.
struct AuditRecord {
  LogEntry entry;
  std::vector<LeafChange> changes;
  friend bool operator==(const AuditRecord&, const AuditRecord&) = default;
};
inline constexpr std::size_t kMaxAuditChanges = 1 << 20;
Bytes encode_audit_record(const AuditRecord& r);
[[nodiscard]] tl::expected<AuditRecord, Error> decode_audit_record(ByteView bytes);

// An auditor's co-signature: Ed25519 under the auditor's key over
// "sotto key transparency audit v1" || tree head (48 bytes).
[[nodiscard]] crypto::Ed25519Signature cosign_tree_head(const TreeHead& head,
                                                        const crypto::Ed25519KeyPair& auditor_key);
[[nodiscard]] tl::expected<void, Error> verify_cosignature(const TreeHead& head,
                                                           ByteView auditor_key,
                                                           ByteView signature);

// A co-signature with the time the auditor made it, so that a client can require a recent one
// (the head's own time is its last entry's, which stays old while the log is idle): Ed25519 over
// "sotto key transparency audit v2" || tree head (48 bytes) || u64 time_ms.
struct Cosignature {
  crypto::Ed25519PublicKey auditor_key{};
  SignedTreeHead head;
  std::uint64_t time_ms = 0;
  crypto::Ed25519Signature signature{};
  friend bool operator==(const Cosignature&, const Cosignature&) = default;
};
[[nodiscard]] crypto::Ed25519Signature cosign_tree_head_at(
    const TreeHead& head, std::uint64_t time_ms, const crypto::Ed25519KeyPair& auditor_key);
[[nodiscard]] tl::expected<void, Error> verify_cosignature_at(const TreeHead& head,
                                                              std::uint64_t time_ms,
                                                              ByteView auditor_key,
                                                              ByteView signature);

class Auditor {
 public:
  explicit Auditor(LogPublicKeys log_keys) : keys_(log_keys) {}

  // Record number size() of the log. Error::bad_history (and no change) when it does not extend
  // what the auditor has seen.
  [[nodiscard]] tl::expected<void, Error> apply(const AuditRecord& record);
  std::uint64_t size() const { return log_.size(); }
  // The head the replayed records give (REQUIRES size() > 0).
  TreeHead head() const;
  // A head the log signed is co-signed only if the auditor's own replay gives the same root at
  // that size (Error::bad_consistency_proof otherwise; invalid_argument if not replayed that far).
  [[nodiscard]] tl::expected<crypto::Ed25519Signature, Error> check_and_cosign(
      const SignedTreeHead& sth, const crypto::Ed25519KeyPair& auditor_key) const;
  // The same checks without signing.
  [[nodiscard]] tl::expected<void, Error> check(const SignedTreeHead& sth) const;

 private:
  struct IndexHash {
    std::size_t operator()(const Index& i) const noexcept;
  };
  struct Label {
    std::uint32_t version = 0;
    Hash chain{};
  };

  LogPublicKeys keys_;
  LogTree log_;
  std::vector<std::uint64_t> timestamps_;
  PrefixTree prefix_;
  std::unordered_map<Index, Label, IndexHash> labels_;
};

}  // namespace sotto::transparency
