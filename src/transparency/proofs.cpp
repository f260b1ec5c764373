#include "transparency/proofs.h"

#include <algorithm>

#include "transparency/codec.h"

namespace sotto::transparency {

namespace {

constexpr std::string_view kTreeHeadContext = "sotto key transparency tree head v1";

Bytes encode_tree_head(const TreeHead& h) {
  Bytes out;
  out.reserve(kTreeHeadSize);
  codec::put_u64(out, h.size);
  codec::put_u64(out, h.timestamp_ms);
  codec::put(out, h.root);
  return out;
}

Bytes signed_message(const TreeHead& h) {
  Bytes msg(kTreeHeadContext.begin(), kTreeHeadContext.end());
  append(msg, encode_tree_head(h));
  return msg;
}

void put_path(Bytes& out, const HashPath& path) {
  codec::put_u8(out, static_cast<std::uint8_t>(path.size()));
  for (const Hash& h : path) codec::put(out, h);
}

bool read_path(codec::Reader& r, HashPath& path) {
  const std::size_t n = r.u8();
  if (!r.ok() || n > kMaxLogPath) return false;
  path.reserve(n);
  for (std::size_t i = 0; i < n && r.ok(); ++i) path.push_back(r.fixed<32>());
  return r.ok();
}

void put_leaf(Bytes& out, const LeafProof& p) {
  codec::put(out, p.vrf_proof);
  append(out, encode_log_entry(p.entry));
  put_path(out, p.inclusion);
  encode_prefix_proof(p.prefix, out);
}

bool read_leaf(codec::Reader& r, LeafProof& p) {
  p.vrf_proof = r.fixed<kVrfProofSize>();
  p.entry.timestamp_ms = r.u64();
  p.entry.prefix_root = r.fixed<32>();
  return r.ok() && read_path(r, p.inclusion) && read_prefix_proof(r, p.prefix);
}

void put_value(Bytes& out, const Bytes& value) {
  codec::put_u16(out, static_cast<std::uint16_t>(value.size()));
  codec::put(out, value);
}

bool read_value(codec::Reader& r, Bytes& value) {
  const std::size_t len = r.u16();
  const ByteView v = r.bytes(len);
  value.assign(v.begin(), v.end());
  return r.ok();
}

// The label's index and its leaf value (std::nullopt: absent) at `head`.
tl::expected<std::optional<Hash>, Error> verify_leaf(const LogPublicKeys& keys,
                                                     const TreeHead& head, std::string_view label,
                                                     const LeafProof& p) {
  if (label.empty() || label.size() > kMaxLabelSize) return tl::unexpected(Error::invalid_argument);
  if (head.size == 0) return tl::unexpected(Error::bad_inclusion_proof);
  const auto beta = vrf_verify(keys.vrf_key, as_bytes(label), p.vrf_proof);
  if (!beta) return tl::unexpected(beta.error());
  Index index{};
  std::copy_n(beta->begin(), kIndexSize, index.begin());
  if (!verify_inclusion(log_entry_hash(p.entry), head.size - 1, head.size, p.inclusion, head.root))
    return tl::unexpected(Error::bad_inclusion_proof);
  return verify_prefix_proof(p.entry.prefix_root, index, p.prefix);
}

}  // namespace

Bytes encode_log_entry(const LogEntry& e) {
  Bytes out;
  out.reserve(40);
  codec::put_u64(out, e.timestamp_ms);
  codec::put(out, e.prefix_root);
  return out;
}

Hash log_entry_hash(const LogEntry& e) {
  return log_leaf_hash(encode_log_entry(e));
}

SignedTreeHead sign_tree_head(const TreeHead& head, const crypto::Ed25519KeyPair& key) {
  return {head, key.sign(signed_message(head))};
}

tl::expected<void, Error> verify_tree_head(const SignedTreeHead& sth, ByteView signing_key) {
  if (!crypto::ed25519_verify(signing_key, signed_message(sth.head), sth.signature))
    return tl::unexpected(Error::bad_signature);
  return {};
}

Bytes encode_signed_tree_head(const SignedTreeHead& sth) {
  Bytes out = encode_tree_head(sth.head);
  codec::put(out, sth.signature);
  return out;
}

tl::expected<SignedTreeHead, Error> decode_signed_tree_head(ByteView bytes) {
  if (bytes.size() != kSignedTreeHeadSize) return tl::unexpected(Error::malformed);
  codec::Reader r(bytes);
  SignedTreeHead sth;
  sth.head.size = r.u64();
  sth.head.timestamp_ms = r.u64();
  sth.head.root = r.fixed<32>();
  sth.signature = r.fixed<crypto::kEd25519SignatureSize>();
  if (!r.done()) return tl::unexpected(Error::malformed);
  return sth;
}

Bytes encode_consistency_proof(const ConsistencyProof& p) {
  Bytes out;
  put_path(out, p.path);
  return out;
}

tl::expected<ConsistencyProof, Error> decode_consistency_proof(ByteView bytes) {
  codec::Reader r(bytes);
  ConsistencyProof p;
  if (!read_path(r, p.path) || !r.done()) return tl::unexpected(Error::malformed);
  return p;
}

tl::expected<void, Error> verify_consistency_proof(const TreeHead& old_head,
                                                   const TreeHead& new_head,
                                                   const ConsistencyProof& proof) {
  if (old_head.size > new_head.size) return tl::unexpected(Error::rollback);
  if (!verify_consistency(old_head.size, new_head.size, old_head.root, new_head.root, proof.path))
    return tl::unexpected(Error::bad_consistency_proof);
  return {};
}

Bytes encode_search_proof(const SearchProof& p) {
  Bytes out;
  put_leaf(out, p.leaf);
  codec::put_u8(out, p.latest ? 1 : 0);
  if (p.latest) {
    codec::put_u32(out, p.latest->version);
    codec::put_u64(out, p.latest->opening.entry);
    codec::put(out, p.latest->previous_chain);
    codec::put(out, p.latest->opening.opening);
    put_value(out, p.latest->opening.value);
  }
  return out;
}

tl::expected<SearchProof, Error> decode_search_proof(ByteView bytes) {
  codec::Reader r(bytes);
  SearchProof p;
  if (!read_leaf(r, p.leaf)) return tl::unexpected(Error::malformed);
  const std::uint8_t found = r.u8();
  if (found > 1) return tl::unexpected(Error::malformed);
  if (found == 1) {
    SearchProof::Latest l;
    l.version = r.u32();
    l.opening.entry = r.u64();
    l.previous_chain = r.fixed<32>();
    l.opening.opening = r.fixed<kOpeningSize>();
    if (!read_value(r, l.opening.value)) return tl::unexpected(Error::malformed);
    p.latest = std::move(l);
  }
  if (!r.done()) return tl::unexpected(Error::malformed);
  return p;
}

Bytes encode_monitor_proof(const MonitorProof& p) {
  Bytes out;
  put_leaf(out, p.leaf);
  codec::put_u32(out, static_cast<std::uint32_t>(p.versions.size()));
  for (const VersionOpening& v : p.versions) {
    codec::put_u64(out, v.entry);
    codec::put(out, v.opening);
    put_value(out, v.value);
  }
  return out;
}

tl::expected<MonitorProof, Error> decode_monitor_proof(ByteView bytes) {
  codec::Reader r(bytes);
  MonitorProof p;
  if (!read_leaf(r, p.leaf)) return tl::unexpected(Error::malformed);
  const std::uint32_t n = r.u32();
  if (!r.ok() || n > kMaxMonitorVersions) return tl::unexpected(Error::malformed);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    VersionOpening v;
    v.entry = r.u64();
    v.opening = r.fixed<kOpeningSize>();
    if (!read_value(r, v.value)) return tl::unexpected(Error::malformed);
    p.versions.push_back(std::move(v));
  }
  if (!r.done()) return tl::unexpected(Error::malformed);
  return p;
}

tl::expected<std::optional<LabelVersion>, Error> verify_search(const LogPublicKeys& keys,
                                                               const TreeHead& head,
                                                               std::string_view label,
                                                               const SearchProof& proof) {
  const auto leaf = verify_leaf(keys, head, label, proof.leaf);
  if (!leaf) return tl::unexpected(leaf.error());
  if (!proof.latest) {
    if (leaf->has_value()) return tl::unexpected(Error::bad_prefix_proof);
    return std::optional<LabelVersion>{};
  }
  if (!leaf->has_value()) return tl::unexpected(Error::bad_prefix_proof);
  const SearchProof::Latest& l = *proof.latest;
  // Version 1 starts the chain; a later version's entry lies inside the head.
  if (l.version == 0 || l.opening.entry >= head.size ||
      (l.version == 1 && l.previous_chain != Hash{}))
    return tl::unexpected(Error::bad_history);
  const VersionLink link{l.version, l.opening.entry,
                         commit(l.opening.opening, label, l.opening.value)};
  if (chain_next(l.previous_chain, link) != **leaf) return tl::unexpected(Error::bad_commitment);
  auto value = decode_account_value(l.opening.value);
  if (!value) return tl::unexpected(Error::malformed);
  return std::optional<LabelVersion>{LabelVersion{l.version, l.opening.entry, std::move(*value)}};
}

tl::expected<std::vector<LabelVersion>, Error> verify_monitor(const LogPublicKeys& keys,
                                                              const TreeHead& head,
                                                              std::string_view label,
                                                              const MonitorProof& proof) {
  const auto leaf = verify_leaf(keys, head, label, proof.leaf);
  if (!leaf) return tl::unexpected(leaf.error());
  if (proof.versions.empty()) {
    if (leaf->has_value()) return tl::unexpected(Error::bad_history);
    return std::vector<LabelVersion>{};
  }
  if (!leaf->has_value()) return tl::unexpected(Error::bad_prefix_proof);
  std::vector<LabelVersion> out;
  out.reserve(proof.versions.size());
  Hash chain{};
  for (std::size_t i = 0; i < proof.versions.size(); ++i) {
    const VersionOpening& v = proof.versions[i];
    if (v.entry >= head.size || (i > 0 && v.entry < proof.versions[i - 1].entry))
      return tl::unexpected(Error::bad_history);
    const auto version = static_cast<std::uint32_t>(i + 1);
    chain = chain_next(chain, {version, v.entry, commit(v.opening, label, v.value)});
    auto value = decode_account_value(v.value);
    if (!value) return tl::unexpected(Error::malformed);
    out.push_back({version, v.entry, std::move(*value)});
  }
  if (chain != **leaf) return tl::unexpected(Error::bad_history);
  return out;
}

tl::expected<void, Error> TreeHeadTracker::advance(const SignedTreeHead& next,
                                                   const ConsistencyProof& proof) {
  if (auto ok = verify_tree_head(next, keys_.signing_key); !ok) return ok;
  if (current_) {
    const TreeHead& cur = current_->head;
    if (next.head.size < cur.size || next.head.timestamp_ms < cur.timestamp_ms)
      return tl::unexpected(Error::rollback);
    // Two signed heads of one size must be one head: anything else is the log equivocating.
    if (next.head.size == cur.size && next.head != cur)
      return tl::unexpected(Error::bad_consistency_proof);
    if (auto ok = verify_consistency_proof(cur, next.head, proof); !ok) return ok;
  }
  current_ = next;
  return {};
}

}  // namespace sotto::transparency
