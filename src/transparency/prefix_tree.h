// The prefix tree: a binary Merkle trie over 32-byte indices (the VRF outputs of labels), each
// leaf holding a 32-byte value (the head of the label's version chain). Path-compressed: an inner
// node exists only where two leaves part, and its hash names the bit where they do, so the walk
// for an index from a given root is unique and a root proves at most one answer per index
// (a value, or absence).
//
//   leaf:  SHA-256(0x01 || index[32] || value[32])
//   inner: SHA-256(0x02 || depth[1] || left[32] || right[32])   (left: bit `depth` is 0)
//   empty tree: 32 zero bytes
//
// PrefixTree is the server's in-memory tree. Not thread-safe. Proof verification is thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/bytes.h"
#include "transparency/error.h"
#include "transparency/log_tree.h"

namespace sotto::transparency {

inline constexpr std::size_t kIndexSize = 32;
using Index = std::array<std::uint8_t, kIndexSize>;
// Inner nodes on one path have strictly increasing depths in 0..255.
inline constexpr std::size_t kMaxPrefixDepth = 256;

struct PrefixStep {
  std::uint8_t depth = 0;  // the bit this node splits on
  Hash sibling{};          // the hash of the other side
  friend bool operator==(const PrefixStep&, const PrefixStep&) = default;
};

// The path from the root towards an index: the inner nodes, root first, and where it ends.
struct PrefixProof {
  std::vector<PrefixStep> steps;
  bool ends_in_leaf = false;  // false only for the empty tree
  Index leaf_index{};         // the leaf the walk reached: the index itself, or another
  Hash leaf_value{};
  friend bool operator==(const PrefixProof&, const PrefixProof&) = default;
};

Hash prefix_leaf_hash(const Index& index, const Hash& value);
Hash prefix_inner_hash(std::uint8_t depth, const Hash& left, const Hash& right);
Hash empty_prefix_root();

class PrefixTree {
 public:
  PrefixTree();
  ~PrefixTree();
  PrefixTree(PrefixTree&&) noexcept;
  PrefixTree& operator=(PrefixTree&&) noexcept;

  // Sets (adds or replaces) the value at index.
  void set(const Index& index, const Hash& value);
  // Removes index if present (undoes a set that could not be stored).
  void erase(const Index& index);
  std::optional<Hash> get(const Index& index) const;
  const Hash& root() const;
  std::size_t size() const { return size_; }
  PrefixProof prove(const Index& index) const;

 private:
  struct Node;
  std::unique_ptr<Node> root_;
  std::size_t size_ = 0;
};

// What a proof shows about index under root: its value, or std::nullopt when absent.
[[nodiscard]] tl::expected<std::optional<Hash>, Error> verify_prefix_proof(
    const Hash& root, const Index& index, const PrefixProof& proof);

// Byte format (docs/transparency.md): u8 kind (0 empty, 1 leaf) || [index || value] ||
// u16 step count || (u8 depth || sibling)*. decode refuses trailing bytes, more than 256 steps,
// depths that do not strictly increase, and steps under an empty tree.
void encode_prefix_proof(const PrefixProof& proof, Bytes& out);
[[nodiscard]] tl::expected<PrefixProof, Error> decode_prefix_proof(ByteView bytes);

namespace codec {
class Reader;
}
// The same format read from the middle of a larger one (proofs.h); false when malformed.
[[nodiscard]] bool read_prefix_proof(codec::Reader& reader, PrefixProof& proof);

}  // namespace sotto::transparency
