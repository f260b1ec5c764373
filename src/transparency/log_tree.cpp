#include "transparency/log_tree.h"

#include <bit>

namespace sotto::transparency {

namespace {

constexpr std::uint8_t kLeafPrefix = 0x00;
constexpr std::uint8_t kNodePrefix = 0x01;

// The largest power of two strictly below n (n >= 2).
std::uint64_t split_point(std::uint64_t n) {
  return std::bit_floor(n - 1);
}

}  // namespace

Hash log_leaf_hash(ByteView entry) {
  return crypto::sha256({ByteView(&kLeafPrefix, 1), entry});
}

Hash log_node_hash(const Hash& left, const Hash& right) {
  return crypto::sha256({ByteView(&kNodePrefix, 1), left, right});
}

Hash empty_log_root() {
  return crypto::sha256({});
}

void LogTree::append_leaf_hash(const Hash& leaf) {
  if (levels_.empty()) levels_.emplace_back();
  levels_[0].push_back(leaf);
  // Close every complete subtree the new leaf finishes.
  for (std::size_t k = 0; levels_[k].size() % 2 == 0; ++k) {
    if (levels_.size() == k + 1) levels_.emplace_back();
    const auto& lv = levels_[k];
    levels_[k + 1].push_back(log_node_hash(lv[lv.size() - 2], lv[lv.size() - 1]));
  }
}

Hash LogTree::subtree(std::uint64_t start, std::uint64_t n) const {
  if (std::has_single_bit(n) && start % n == 0) {
    return levels_[static_cast<std::size_t>(std::countr_zero(n))][start / n];
  }
  const std::uint64_t k = split_point(n);
  return log_node_hash(subtree(start, k), subtree(start + k, n - k));
}

Hash LogTree::root(std::uint64_t tree_size) const {
  if (tree_size == 0) return empty_log_root();
  return subtree(0, tree_size);
}

void LogTree::path(std::uint64_t m, std::uint64_t start, std::uint64_t n, HashPath& out) const {
  if (n <= 1) return;
  const std::uint64_t k = split_point(n);
  if (m < k) {
    path(m, start, k, out);
    out.push_back(subtree(start + k, n - k));
  } else {
    path(m - k, start + k, n - k, out);
    out.push_back(subtree(start, k));
  }
}

HashPath LogTree::inclusion_proof(std::uint64_t index, std::uint64_t tree_size) const {
  HashPath out;
  path(index, 0, tree_size, out);
  return out;
}

void LogTree::subproof(std::uint64_t m, std::uint64_t start, std::uint64_t n, bool whole,
                       HashPath& out) const {
  if (m == n) {
    if (!whole) out.push_back(subtree(start, n));
    return;
  }
  const std::uint64_t k = split_point(n);
  if (m <= k) {
    subproof(m, start, k, whole, out);
    out.push_back(subtree(start + k, n - k));
  } else {
    subproof(m - k, start + k, n - k, false, out);
    out.push_back(subtree(start, k));
  }
}

HashPath LogTree::consistency_proof(std::uint64_t old_size, std::uint64_t new_size) const {
  HashPath out;
  if (old_size == 0 || old_size == new_size) return out;
  subproof(old_size, 0, new_size, true, out);
  return out;
}

bool verify_inclusion(const Hash& leaf, std::uint64_t index, std::uint64_t tree_size,
                      const HashPath& path, const Hash& root) {
  if (index >= tree_size || path.size() > kMaxLogPath) return false;
  std::uint64_t fn = index;
  std::uint64_t sn = tree_size - 1;
  Hash r = leaf;
  for (const Hash& p : path) {
    if (sn == 0) return false;
    if ((fn & 1) != 0 || fn == sn) {
      r = log_node_hash(p, r);
      while ((fn & 1) == 0 && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      r = log_node_hash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn == 0 && r == root;
}

bool verify_consistency(std::uint64_t old_size, std::uint64_t new_size, const Hash& old_root,
                        const Hash& new_root, const HashPath& path) {
  if (old_size > new_size || path.size() > kMaxLogPath) return false;
  if (old_size == 0) return path.empty() && old_root == empty_log_root();
  if (old_size == new_size) return path.empty() && old_root == new_root;
  if (path.empty()) return false;
  HashPath p;
  p.reserve(path.size() + 1);
  if (std::has_single_bit(old_size)) p.push_back(old_root);
  p.insert(p.end(), path.begin(), path.end());
  std::uint64_t fn = old_size - 1;
  std::uint64_t sn = new_size - 1;
  while ((fn & 1) != 0) {
    fn >>= 1;
    sn >>= 1;
  }
  Hash fr = p[0];
  Hash sr = p[0];
  for (std::size_t i = 1; i < p.size(); ++i) {
    const Hash& c = p[i];
    if (sn == 0) return false;
    if ((fn & 1) != 0 || fn == sn) {
      fr = log_node_hash(c, fr);
      sr = log_node_hash(c, sr);
      while ((fn & 1) == 0 && fn != 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else {
      sr = log_node_hash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr == old_root && sr == new_root && sn == 0;
}

}  // namespace sotto::transparency
