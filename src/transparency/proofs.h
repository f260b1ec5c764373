// Tree heads and the proofs the log gives clients, their byte formats and their verification
// (docs/transparency.md, "Proof formats", gives each byte). Every decoder refuses trailing bytes,
// wrong lengths and over-long paths; every verifier needs only the log's two public keys.
// Plain values and pure functions; thread-safe. TreeHeadTracker is not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/bytes.h"
#include "crypto/ed25519.h"
#include "transparency/account_value.h"
#include "transparency/log_tree.h"
#include "transparency/prefix_tree.h"
#include "transparency/vrf.h"

namespace sotto::transparency {

// What a client must know of a log to check it: the key its tree heads are signed with and the
// VRF key that hides its labels.
struct LogPublicKeys {
  crypto::Ed25519PublicKey signing_key{};
  VrfPublicKey vrf_key{};
};

// Entry i of the log: the prefix tree's root after the i-th update batch.
// Encoding (40 bytes): u64 timestamp_ms || prefix_root[32].
struct LogEntry {
  std::uint64_t timestamp_ms = 0;
  Hash prefix_root{};
  friend bool operator==(const LogEntry&, const LogEntry&) = default;
};
Bytes encode_log_entry(const LogEntry& e);
Hash log_entry_hash(const LogEntry& e);

// Encoding (48 bytes): u64 size || u64 timestamp_ms || root[32].
struct TreeHead {
  std::uint64_t size = 0;
  std::uint64_t timestamp_ms = 0;
  Hash root{};
  friend bool operator==(const TreeHead&, const TreeHead&) = default;
};
inline constexpr std::size_t kTreeHeadSize = 48;
inline constexpr std::size_t kSignedTreeHeadSize = kTreeHeadSize + crypto::kEd25519SignatureSize;

// Encoding (112 bytes): tree head[48] || Ed25519 signature[64] over
// "sotto key transparency tree head v1" || tree head.
struct SignedTreeHead {
  TreeHead head;
  crypto::Ed25519Signature signature{};
  friend bool operator==(const SignedTreeHead&, const SignedTreeHead&) = default;
};
SignedTreeHead sign_tree_head(const TreeHead& head, const crypto::Ed25519KeyPair& key);
[[nodiscard]] tl::expected<void, Error> verify_tree_head(const SignedTreeHead& sth,
                                                         ByteView signing_key);
Bytes encode_signed_tree_head(const SignedTreeHead& sth);
[[nodiscard]] tl::expected<SignedTreeHead, Error> decode_signed_tree_head(ByteView bytes);

// Between two tree heads. Encoding: u8 count (at most 64) || hash[32]*.
struct ConsistencyProof {
  HashPath path;
  friend bool operator==(const ConsistencyProof&, const ConsistencyProof&) = default;
};
Bytes encode_consistency_proof(const ConsistencyProof& p);
[[nodiscard]] tl::expected<ConsistencyProof, Error> decode_consistency_proof(ByteView bytes);
// old must not be larger than new (Error::rollback); equal sizes need equal roots.
[[nodiscard]] tl::expected<void, Error> verify_consistency_proof(const TreeHead& old_head,
                                                                 const TreeHead& new_head,
                                                                 const ConsistencyProof& proof);

// Where a label's leaf stands at a tree head: the label's VRF proof, the head's last log entry
// with its inclusion path, and the prefix-tree path for the label's index in that entry's tree.
// Encoding: vrf_proof[80] || log entry[40] || u8 count || hash[32]* || prefix proof.
struct LeafProof {
  VrfProof vrf_proof{};
  LogEntry entry;
  HashPath inclusion;
  PrefixProof prefix;
  friend bool operator==(const LeafProof&, const LeafProof&) = default;
};

// One version with what opens its commitment.
struct VersionOpening {
  std::uint64_t entry = 0;
  Opening opening{};
  Bytes value;  // encode_account_value()
  friend bool operator==(const VersionOpening&, const VersionOpening&) = default;
};

// A lookup: the label's latest version at a tree head, or its absence.
// Encoding: leaf proof || u8 found (0 or 1) || [u32 version || u64 entry || previous_chain[32] ||
// opening[32] || u16 value length || value].
struct SearchProof {
  LeafProof leaf;
  struct Latest {
    std::uint32_t version = 0;
    Hash previous_chain{};
    VersionOpening opening;
    friend bool operator==(const Latest&, const Latest&) = default;
  };
  std::optional<Latest> latest;
  friend bool operator==(const SearchProof&, const SearchProof&) = default;
};
Bytes encode_search_proof(const SearchProof& p);
[[nodiscard]] tl::expected<SearchProof, Error> decode_search_proof(ByteView bytes);

// Every version of a label, for its owner. Encoding: leaf proof || u32 count ||
// (u64 entry || opening[32] || u16 value length || value)*; versions are 1..count in order.
struct MonitorProof {
  LeafProof leaf;
  std::vector<VersionOpening> versions;
  friend bool operator==(const MonitorProof&, const MonitorProof&) = default;
};
inline constexpr std::size_t kMaxMonitorVersions = 65536;
Bytes encode_monitor_proof(const MonitorProof& p);
[[nodiscard]] tl::expected<MonitorProof, Error> decode_monitor_proof(ByteView bytes);

// A verified version of a label.
struct LabelVersion {
  std::uint32_t version = 0;
  std::uint64_t entry = 0;  // the log entry (its index) that added it
  AccountValue value;
  friend bool operator==(const LabelVersion&, const LabelVersion&) = default;
};

// The label's latest version at `head` (which the caller has verified and checked consistent),
// or std::nullopt when the log proves the label absent.
[[nodiscard]] tl::expected<std::optional<LabelVersion>, Error> verify_search(
    const LogPublicKeys& keys, const TreeHead& head, std::string_view label,
    const SearchProof& proof);

// All versions of the label at `head`, oldest first; empty when the label is absent.
[[nodiscard]] tl::expected<std::vector<LabelVersion>, Error> verify_monitor(
    const LogPublicKeys& keys, const TreeHead& head, std::string_view label,
    const MonitorProof& proof);

// A client's view of one log: the newest tree head it has verified. advance() accepts a new
// head only with a valid signature and a proof that it extends the current one; a head older
// than the current one, or a different head of the same size, is refused (a fork).
class TreeHeadTracker {
 public:
  explicit TreeHeadTracker(LogPublicKeys keys) : keys_(keys) {}
  const std::optional<SignedTreeHead>& current() const { return current_; }
  const LogPublicKeys& keys() const { return keys_; }
  [[nodiscard]] tl::expected<void, Error> advance(const SignedTreeHead& next,
                                                  const ConsistencyProof& proof);

 private:
  LogPublicKeys keys_;
  std::optional<SignedTreeHead> current_;
};

}  // namespace sotto::transparency
