#include "transparency/prefix_tree.h"

#include "transparency/codec.h"

namespace sotto::transparency {

namespace {

constexpr std::uint8_t kLeafPrefix = 0x01;
constexpr std::uint8_t kInnerPrefix = 0x02;

int bit(const Index& i, unsigned d) {
  return (i[d / 8] >> (7 - d % 8)) & 1;
}

// The first bit where a and b differ; 256 when equal.
unsigned first_difference(const Index& a, const Index& b) {
  for (unsigned byte = 0; byte < kIndexSize; ++byte) {
    const unsigned x = a[byte] ^ b[byte];
    if (x != 0) {
      unsigned d = byte * 8;
      for (unsigned m = 0x80; (x & m) == 0; m >>= 1) ++d;
      return d;
    }
  }
  return 256;
}

}  // namespace

struct PrefixTree::Node {
  bool leaf = true;
  std::uint8_t depth = 0;  // inner nodes: the split bit
  Index index{};           // leaves: their index; inner nodes: any leaf's below (the prefix)
  Hash value{};            // leaves only
  Hash hash{};
  std::unique_ptr<Node> child[2];

  void rehash() {
    hash = leaf ? prefix_leaf_hash(index, value)
                : prefix_inner_hash(depth, child[0]->hash, child[1]->hash);
  }
};

Hash prefix_leaf_hash(const Index& index, const Hash& value) {
  return crypto::sha256({ByteView(&kLeafPrefix, 1), index, value});
}

Hash prefix_inner_hash(std::uint8_t depth, const Hash& left, const Hash& right) {
  return crypto::sha256({ByteView(&kInnerPrefix, 1), ByteView(&depth, 1), left, right});
}

Hash empty_prefix_root() {
  return Hash{};
}

PrefixTree::PrefixTree() = default;
PrefixTree::~PrefixTree() = default;
PrefixTree::PrefixTree(PrefixTree&&) noexcept = default;
PrefixTree& PrefixTree::operator=(PrefixTree&&) noexcept = default;

const Hash& PrefixTree::root() const {
  static const Hash empty = empty_prefix_root();
  return root_ ? root_->hash : empty;
}

void PrefixTree::set(const Index& index, const Hash& value) {
  auto make_leaf = [&] {
    auto n = std::make_unique<Node>();
    n->index = index;
    n->value = value;
    n->rehash();
    return n;
  };
  std::vector<Node*> path;  // inner nodes passed, to rehash bottom-up
  std::unique_ptr<Node>* slot = &root_;
  while (true) {
    Node* n = slot->get();
    if (n == nullptr) {
      *slot = make_leaf();
      ++size_;
      break;
    }
    const unsigned diff = first_difference(index, n->index);
    if (n->leaf && diff == 256) {
      n->value = value;
      n->rehash();
      break;
    }
    if (n->leaf || diff < n->depth) {
      // The index leaves this subtree's common prefix at bit diff: a new inner node there.
      auto inner = std::make_unique<Node>();
      inner->leaf = false;
      inner->depth = static_cast<std::uint8_t>(diff);
      inner->index = n->index;
      const int side = bit(index, diff);
      inner->child[side] = make_leaf();
      inner->child[1 - side] = std::move(*slot);
      inner->rehash();
      *slot = std::move(inner);
      ++size_;
      break;
    }
    path.push_back(n);
    slot = &n->child[bit(index, n->depth)];
  }
  for (auto it = path.rbegin(); it != path.rend(); ++it) (*it)->rehash();
}

void PrefixTree::erase(const Index& index) {
  std::vector<Node*> path;
  std::unique_ptr<Node>* parent_slot = nullptr;
  std::unique_ptr<Node>* slot = &root_;
  while (*slot != nullptr && !(*slot)->leaf) {
    path.push_back(slot->get());
    parent_slot = slot;
    slot = &(*slot)->child[bit(index, (*slot)->depth)];
  }
  if (*slot == nullptr || (*slot)->index != index) return;
  --size_;
  if (parent_slot == nullptr) {
    root_.reset();
    return;
  }
  // The parent had two children; the sibling takes its place.
  Node* parent = parent_slot->get();
  const int side = bit(index, parent->depth);
  std::unique_ptr<Node> sibling = std::move(parent->child[1 - side]);
  *parent_slot = std::move(sibling);
  path.pop_back();
  for (auto it = path.rbegin(); it != path.rend(); ++it) (*it)->rehash();
}

std::optional<Hash> PrefixTree::get(const Index& index) const {
  const Node* n = root_.get();
  while (n != nullptr && !n->leaf) n = n->child[bit(index, n->depth)].get();
  if (n == nullptr || n->index != index) return std::nullopt;
  return n->value;
}

PrefixProof PrefixTree::prove(const Index& index) const {
  PrefixProof proof;
  const Node* n = root_.get();
  while (n != nullptr && !n->leaf) {
    const int side = bit(index, n->depth);
    proof.steps.push_back({n->depth, n->child[1 - side]->hash});
    n = n->child[side].get();
  }
  if (n != nullptr) {
    proof.ends_in_leaf = true;
    proof.leaf_index = n->index;
    proof.leaf_value = n->value;
  }
  return proof;
}

tl::expected<std::optional<Hash>, Error> verify_prefix_proof(const Hash& root, const Index& index,
                                                             const PrefixProof& proof) {
  if (!proof.ends_in_leaf) {
    if (!proof.steps.empty() || root != empty_prefix_root())
      return tl::unexpected(Error::bad_prefix_proof);
    return std::optional<Hash>{};
  }
  if (proof.steps.size() > kMaxPrefixDepth) return tl::unexpected(Error::bad_prefix_proof);
  const bool member = proof.leaf_index == index;
  for (std::size_t i = 0; i < proof.steps.size(); ++i) {
    const unsigned d = proof.steps[i].depth;
    if (i > 0 && d <= proof.steps[i - 1].depth) return tl::unexpected(Error::bad_prefix_proof);
    // Another leaf can end this index's walk only if it took the same turns.
    if (!member && bit(proof.leaf_index, d) != bit(index, d))
      return tl::unexpected(Error::bad_prefix_proof);
  }
  Hash h = prefix_leaf_hash(proof.leaf_index, proof.leaf_value);
  for (auto it = proof.steps.rbegin(); it != proof.steps.rend(); ++it) {
    h = bit(index, it->depth) == 0 ? prefix_inner_hash(it->depth, h, it->sibling)
                                   : prefix_inner_hash(it->depth, it->sibling, h);
  }
  if (h != root) return tl::unexpected(Error::bad_prefix_proof);
  if (!member) return std::optional<Hash>{};
  return std::optional<Hash>{proof.leaf_value};
}

void encode_prefix_proof(const PrefixProof& proof, Bytes& out) {
  codec::put_u8(out, proof.ends_in_leaf ? 1 : 0);
  if (proof.ends_in_leaf) {
    codec::put(out, proof.leaf_index);
    codec::put(out, proof.leaf_value);
  }
  codec::put_u16(out, static_cast<std::uint16_t>(proof.steps.size()));
  for (const PrefixStep& s : proof.steps) {
    codec::put_u8(out, s.depth);
    codec::put(out, s.sibling);
  }
}

bool read_prefix_proof(codec::Reader& r, PrefixProof& p) {
  const std::uint8_t kind = r.u8();
  if (kind > 1) return false;
  p.ends_in_leaf = kind == 1;
  if (p.ends_in_leaf) {
    p.leaf_index = r.fixed<kIndexSize>();
    p.leaf_value = r.fixed<32>();
  }
  const std::uint16_t n = r.u16();
  if (!r.ok() || n > kMaxPrefixDepth || (!p.ends_in_leaf && n != 0)) return false;
  p.steps.reserve(n);
  for (std::uint16_t i = 0; i < n && r.ok(); ++i) {
    PrefixStep s;
    s.depth = r.u8();
    s.sibling = r.fixed<32>();
    if (!p.steps.empty() && s.depth <= p.steps.back().depth) return false;
    p.steps.push_back(s);
  }
  return r.ok();
}

tl::expected<PrefixProof, Error> decode_prefix_proof(ByteView bytes) {
  codec::Reader r(bytes);
  PrefixProof p;
  if (!read_prefix_proof(r, p) || !r.done()) return tl::unexpected(Error::malformed);
  return p;
}

}  // namespace sotto::transparency
