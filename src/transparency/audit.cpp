#include "transparency/audit.h"

#include <cstring>
#include <optional>

#include "transparency/codec.h"

namespace sotto::transparency {

namespace {

constexpr std::string_view kAuditContext = "sotto key transparency audit v1";

Bytes cosigned_message(const TreeHead& h) {
  Bytes msg(kAuditContext.begin(), kAuditContext.end());
  codec::put_u64(msg, h.size);
  codec::put_u64(msg, h.timestamp_ms);
  codec::put(msg, h.root);
  return msg;
}

constexpr std::string_view kAuditAtContext = "sotto key transparency audit v2";

Bytes cosigned_at_message(const TreeHead& h, std::uint64_t time_ms) {
  Bytes msg(kAuditAtContext.begin(), kAuditAtContext.end());
  codec::put_u64(msg, h.size);
  codec::put_u64(msg, h.timestamp_ms);
  codec::put(msg, h.root);
  codec::put_u64(msg, time_ms);
  return msg;
}

}  // namespace

Bytes encode_audit_record(const AuditRecord& r) {
  Bytes out = encode_log_entry(r.entry);
  codec::put_u32(out, static_cast<std::uint32_t>(r.changes.size()));
  for (const LeafChange& c : r.changes) {
    codec::put(out, c.index);
    codec::put_u32(out, c.link.version);
    codec::put_u64(out, c.link.entry);
    codec::put(out, c.link.commitment);
  }
  return out;
}

tl::expected<AuditRecord, Error> decode_audit_record(ByteView bytes) {
  codec::Reader r(bytes);
  AuditRecord rec;
  rec.entry.timestamp_ms = r.u64();
  rec.entry.prefix_root = r.fixed<32>();
  const std::uint32_t n = r.u32();
  // Each change is 76 bytes: a count the input cannot hold is refused before reserving.
  if (!r.ok() || n > kMaxAuditChanges || n > bytes.size() / 76)
    return tl::unexpected(Error::malformed);
  rec.changes.reserve(n);
  for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
    LeafChange c;
    c.index = r.fixed<kIndexSize>();
    c.link.version = r.u32();
    c.link.entry = r.u64();
    c.link.commitment = r.fixed<32>();
    rec.changes.push_back(c);
  }
  if (!r.done()) return tl::unexpected(Error::malformed);
  return rec;
}

crypto::Ed25519Signature cosign_tree_head(const TreeHead& head,
                                          const crypto::Ed25519KeyPair& auditor_key) {
  return auditor_key.sign(cosigned_message(head));
}

tl::expected<void, Error> verify_cosignature(const TreeHead& head, ByteView auditor_key,
                                             ByteView signature) {
  if (!crypto::ed25519_verify(auditor_key, cosigned_message(head), signature))
    return tl::unexpected(Error::bad_signature);
  return {};
}

crypto::Ed25519Signature cosign_tree_head_at(const TreeHead& head, std::uint64_t time_ms,
                                             const crypto::Ed25519KeyPair& auditor_key) {
  return auditor_key.sign(cosigned_at_message(head, time_ms));
}

tl::expected<void, Error> verify_cosignature_at(const TreeHead& head, std::uint64_t time_ms,
                                                ByteView auditor_key, ByteView signature) {
  if (!crypto::ed25519_verify(auditor_key, cosigned_at_message(head, time_ms), signature))
    return tl::unexpected(Error::bad_signature);
  return {};
}

std::size_t Auditor::IndexHash::operator()(const Index& i) const noexcept {
  std::size_t h = 0;
  std::memcpy(&h, i.data(), sizeof h);
  return h;
}

tl::expected<void, Error> Auditor::apply(const AuditRecord& record) {
  const std::uint64_t entry = log_.size();
  if (!timestamps_.empty() && record.entry.timestamp_ms < timestamps_.back())
    return tl::unexpected(Error::bad_history);
  // Work on the live tree and undo on failure, as the log does.
  std::vector<std::pair<Index, std::optional<Hash>>> previous;
  std::unordered_map<Index, Label, IndexHash> changed;
  bool ok = true;
  for (const LeafChange& c : record.changes) {
    auto [it, fresh] = changed.try_emplace(c.index);
    if (fresh) {
      const auto known = labels_.find(c.index);
      if (known != labels_.end()) it->second = known->second;
      previous.emplace_back(c.index, prefix_.get(c.index));
    }
    Label& l = it->second;
    // Only the next version, only added by this entry.
    if (c.link.version != l.version + 1 || c.link.entry != entry) {
      ok = false;
      break;
    }
    l.version = c.link.version;
    l.chain = chain_next(l.chain, c.link);
    prefix_.set(c.index, l.chain);
  }
  if (!ok || prefix_.root() != record.entry.prefix_root) {
    for (const auto& [index, old] : previous) {
      if (old) {
        prefix_.set(index, *old);
      } else {
        prefix_.erase(index);
      }
    }
    return tl::unexpected(Error::bad_history);
  }
  for (auto& [index, l] : changed) labels_[index] = l;
  log_.append_leaf_hash(log_entry_hash(record.entry));
  timestamps_.push_back(record.entry.timestamp_ms);
  return {};
}

TreeHead Auditor::head() const {
  return {log_.size(), timestamps_.back(), log_.root(log_.size())};
}

tl::expected<void, Error> Auditor::check(const SignedTreeHead& sth) const {
  if (auto ok = verify_tree_head(sth, keys_.signing_key); !ok) return tl::unexpected(ok.error());
  const TreeHead& h = sth.head;
  if (h.size == 0 || h.size > log_.size()) return tl::unexpected(Error::invalid_argument);
  if (log_.root(h.size) != h.root || timestamps_[h.size - 1] != h.timestamp_ms)
    return tl::unexpected(Error::bad_consistency_proof);
  return {};
}

tl::expected<crypto::Ed25519Signature, Error> Auditor::check_and_cosign(
    const SignedTreeHead& sth, const crypto::Ed25519KeyPair& auditor_key) const {
  if (auto ok = check(sth); !ok) return tl::unexpected(ok.error());
  return cosign_tree_head(sth.head, auditor_key);
}

}  // namespace sotto::transparency
