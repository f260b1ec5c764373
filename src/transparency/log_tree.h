// The append-only log tree: a Merkle tree over log entries as RFC 9162 section 2.1 defines it
// (leaf hash SHA-256(0x00 || entry), node hash SHA-256(0x01 || left || right), the empty tree's
// root SHA-256("")), with its inclusion and consistency proofs and their verification.
//
// LogTree keeps every complete subtree's hash in memory, so a root or a proof for any size up to
// the current one costs O(log n) hashes. Not thread-safe (the owner serialises access); the free
// verification functions are thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "crypto/bytes.h"
#include "crypto/hash.h"

namespace sotto::transparency {

using Hash = crypto::Sha256Digest;
using HashPath = std::vector<Hash>;

// Longest path a tree of fewer than 2^64 entries needs (inclusion and consistency alike).
inline constexpr std::size_t kMaxLogPath = 64;

Hash log_leaf_hash(ByteView entry);
Hash log_node_hash(const Hash& left, const Hash& right);
Hash empty_log_root();

class LogTree {
 public:
  void append_leaf_hash(const Hash& leaf);
  std::uint64_t size() const { return levels_.empty() ? 0 : levels_[0].size(); }
  // REQUIRES for all three: the sizes and index are within the tree (0 < size <= size(),
  // index < tree_size, old_size <= new_size).
  Hash root(std::uint64_t tree_size) const;
  HashPath inclusion_proof(std::uint64_t index, std::uint64_t tree_size) const;
  HashPath consistency_proof(std::uint64_t old_size, std::uint64_t new_size) const;

 private:
  Hash subtree(std::uint64_t start, std::uint64_t n) const;
  void path(std::uint64_t m, std::uint64_t start, std::uint64_t n, HashPath& out) const;
  void subproof(std::uint64_t m, std::uint64_t start, std::uint64_t n, bool whole,
                HashPath& out) const;

  // levels_[k][i]: the root of the complete subtree of 2^k leaves starting at leaf i * 2^k.
  std::vector<std::vector<Hash>> levels_;
};

// RFC 9162 section 2.1.3.2.
[[nodiscard]] bool verify_inclusion(const Hash& leaf, std::uint64_t index, std::uint64_t tree_size,
                                    const HashPath& path, const Hash& root);
// RFC 9162 section 2.1.4.2. old_size == 0 is consistent with anything (empty path); equal sizes
// need an empty path and equal roots.
[[nodiscard]] bool verify_consistency(std::uint64_t old_size, std::uint64_t new_size,
                                      const Hash& old_root, const Hash& new_root,
                                      const HashPath& path);

}  // namespace sotto::transparency
