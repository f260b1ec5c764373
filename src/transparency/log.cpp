#include "transparency/log.h"

#include <algorithm>
#include <cstring>

namespace sotto::transparency {

std::size_t TransparencyLog::IndexHash::operator()(const Index& i) const noexcept {
  std::size_t h = 0;
  std::memcpy(&h, i.data(), sizeof h);  // VRF outputs are uniform
  return h;
}

TransparencyLog::TransparencyLog(TransparencyStore& store, VrfKeyPair vrf,
                                 crypto::Ed25519KeyPair signing_key, crypto::Rng& rng)
    : store_(store), vrf_(std::move(vrf)), signing_key_(std::move(signing_key)), rng_(rng) {}

LogPublicKeys TransparencyLog::public_keys() const {
  return {signing_key_.public_key(), vrf_.public_key()};
}

void TransparencyLog::apply_locked(const StoredEntry& e) {
  for (const StoredVersion& v : e.versions) {
    auto& held = versions_[v.index];
    const Hash before =
        held.empty() ? Hash{} : chain_next(held.back().chain_before, held.back().stored.link);
    held.push_back({v, before});
    prefix_.set(v.index, chain_next(before, v.link));
  }
  changes_.emplace_back();
  for (const StoredVersion& v : e.versions) changes_.back().push_back({v.index, v.link});
  entries_.push_back(e.entry);
  log_.append_leaf_hash(log_entry_hash(e.entry));
}

tl::expected<void, Error> TransparencyLog::open(std::uint64_t now_ms) {
  std::lock_guard lock(mu_);
  if (broken_) return tl::unexpected(Error::bad_history);
  if (open_) return {};
  bool consistent = true;
  auto loaded = store_.load([&](const StoredEntry& e) {
    if (!consistent) return;
    if (e.index != entries_.size()) {
      consistent = false;
      return;
    }
    apply_locked(e);
    consistent = prefix_.root() == e.entry.prefix_root;
  });
  if (!loaded) return loaded;
  if (!consistent) return tl::unexpected(Error::bad_history);
  if (entries_.empty()) {
    const StoredEntry first{0, LogEntry{now_ms, empty_prefix_root()}, {}};
    if (auto ok = store_.append(first); !ok) return ok;
    apply_locked(first);
  }
  head_ = head_locked(entries_.size());
  open_ = true;
  return {};
}

SignedTreeHead TransparencyLog::head_locked(std::uint64_t size) const {
  const TreeHead h{size, entries_[size - 1].timestamp_ms, log_.root(size)};
  return sign_tree_head(h, signing_key_);
}

// The VRF proof costs a few scalar multiplications (about 0.3 ms): computed before the mutex is
// taken, so that appends and lookups of other labels do not wait for it. Empty and over-long
// labels are left to the caller's own check.
void TransparencyLog::warm(std::string_view label) const {
  if (label.empty() || label.size() > kMaxLabelSize) return;
  {
    std::lock_guard lock(mu_);
    if (labels_.find(label) != labels_.end()) return;
  }
  Labelled l;
  l.proof = vrf_.prove(as_bytes(label));
  const VrfOutput beta = *vrf_proof_to_hash(l.proof);
  std::copy_n(beta.begin(), kIndexSize, l.index.begin());
  std::lock_guard lock(mu_);
  labels_.emplace(std::string(label), l);
}

const TransparencyLog::Labelled& TransparencyLog::label_locked(std::string_view label) const {
  auto it = labels_.find(label);
  if (it == labels_.end()) {
    Labelled l;
    l.proof = vrf_.prove(as_bytes(label));
    const VrfOutput beta = *vrf_proof_to_hash(l.proof);
    std::copy_n(beta.begin(), kIndexSize, l.index.begin());
    it = labels_.emplace(std::string(label), l).first;
  }
  return it->second;
}

tl::expected<SignedTreeHead, Error> TransparencyLog::append(std::span<const Update> updates,
                                                            std::uint64_t now_ms) {
  for (const Update& u : updates) warm(u.label);
  std::lock_guard lock(mu_);
  if (!open_) return tl::unexpected(Error::invalid_argument);
  for (const Update& u : updates) {
    if (u.label.empty() || u.label.size() > kMaxLabelSize || !valid(u.value))
      return tl::unexpected(Error::invalid_argument);
  }
  StoredEntry e;
  e.index = entries_.size();
  e.entry.timestamp_ms = std::max(now_ms, entries_.back().timestamp_ms);
  // Versions within this batch count on from the stored ones.
  std::unordered_map<Index, std::uint32_t, IndexHash> next_version;
  for (const Update& u : updates) {
    const Labelled& l = label_locked(u.label);
    auto [it, fresh] = next_version.try_emplace(l.index, 0);
    if (fresh) {
      auto held = versions_.find(l.index);
      it->second =
          held == versions_.end() ? 1 : static_cast<std::uint32_t>(held->second.size() + 1);
    }
    StoredVersion v;
    v.index = l.index;
    rng_.fill(v.opening);
    v.value = encode_account_value(u.value);
    v.link = {it->second++, e.index, commit(v.opening, u.label, v.value)};
    e.versions.push_back(std::move(v));
  }
  // Work out the new prefix root on the live tree, and undo if the store refuses the entry.
  std::vector<std::pair<Index, std::optional<Hash>>> previous;
  std::unordered_map<Index, Hash, IndexHash> chain;
  for (const StoredVersion& v : e.versions) {
    auto [it, fresh] = chain.try_emplace(v.index);
    if (fresh) {
      previous.emplace_back(v.index, prefix_.get(v.index));
      it->second = previous.back().second.value_or(Hash{});
    }
    it->second = chain_next(it->second, v.link);
    prefix_.set(v.index, it->second);
  }
  e.entry.prefix_root = prefix_.root();
  if (auto ok = store_.append(e); !ok) {
    for (const auto& [index, old] : previous) {
      if (old) {
        prefix_.set(index, *old);
      } else {
        prefix_.erase(index);
      }
    }
    return tl::unexpected(ok.error());
  }
  // The prefix tree already holds the new leaves; record the versions and the entry.
  for (const StoredVersion& v : e.versions) {
    auto& held = versions_[v.index];
    const Hash before =
        held.empty() ? Hash{} : chain_next(held.back().chain_before, held.back().stored.link);
    held.push_back({v, before});
  }
  changes_.emplace_back();
  for (const StoredVersion& v : e.versions) changes_.back().push_back({v.index, v.link});
  entries_.push_back(e.entry);
  log_.append_leaf_hash(log_entry_hash(e.entry));
  head_ = head_locked(entries_.size());
  return head_;
}

void TransparencyLog::reset() {
  std::lock_guard lock(mu_);
  open_ = false;
  broken_ = false;
  log_ = LogTree{};
  entries_.clear();
  changes_.clear();
  prefix_ = PrefixTree{};
  versions_.clear();
  head_ = SignedTreeHead{};
}

tl::expected<void, Error> TransparencyLog::refresh() {
  std::lock_guard lock(mu_);
  if (!open_) return tl::unexpected(Error::invalid_argument);
  std::vector<StoredEntry> fresh;
  auto loaded =
      store_.load_from(entries_.size(), [&](const StoredEntry& e) { fresh.push_back(e); });
  if (!loaded) return loaded;
  if (fresh.empty()) return {};
  for (const StoredEntry& e : fresh) {
    if (e.index != entries_.size()) {
      open_ = false;
      broken_ = true;
      return tl::unexpected(Error::bad_history);
    }
    apply_locked(e);
    if (prefix_.root() != e.entry.prefix_root) {
      open_ = false;  // the trees no longer match the store: nothing more is served from them
      broken_ = true;
      return tl::unexpected(Error::bad_history);
    }
  }
  head_ = head_locked(entries_.size());
  return {};
}

SignedTreeHead TransparencyLog::head() const {
  std::lock_guard lock(mu_);
  return head_;
}

tl::expected<SignedTreeHead, Error> TransparencyLog::head_at(std::uint64_t size) const {
  std::lock_guard lock(mu_);
  if (!open_ || size == 0 || size > entries_.size()) return tl::unexpected(Error::invalid_argument);
  return head_locked(size);
}

tl::expected<AuditRecord, Error> TransparencyLog::audit_record(std::uint64_t index) const {
  std::lock_guard lock(mu_);
  if (!open_ || index >= entries_.size()) return tl::unexpected(Error::invalid_argument);
  return AuditRecord{entries_[index], changes_[index]};
}

LeafProof TransparencyLog::leaf_locked(const Labelled& l) const {
  const std::uint64_t size = entries_.size();
  LeafProof p;
  p.vrf_proof = l.proof;
  p.entry = entries_.back();
  p.inclusion = log_.inclusion_proof(size - 1, size);
  p.prefix = prefix_.prove(l.index);
  return p;
}

tl::expected<SearchProof, Error> TransparencyLog::search(std::string_view label) const {
  warm(label);
  std::lock_guard lock(mu_);
  if (!open_ || label.empty() || label.size() > kMaxLabelSize)
    return tl::unexpected(Error::invalid_argument);
  const Labelled& l = label_locked(label);
  SearchProof p;
  p.leaf = leaf_locked(l);
  if (auto it = versions_.find(l.index); it != versions_.end()) {
    const HeldVersion& h = it->second.back();
    p.latest =
        SearchProof::Latest{h.stored.link.version, h.chain_before,
                            VersionOpening{h.stored.link.entry, h.stored.opening, h.stored.value}};
  }
  return p;
}

tl::expected<MonitorProof, Error> TransparencyLog::monitor(std::string_view label) const {
  warm(label);
  std::lock_guard lock(mu_);
  if (!open_ || label.empty() || label.size() > kMaxLabelSize)
    return tl::unexpected(Error::invalid_argument);
  const Labelled& l = label_locked(label);
  MonitorProof p;
  p.leaf = leaf_locked(l);
  if (auto it = versions_.find(l.index); it != versions_.end()) {
    for (const HeldVersion& h : it->second)
      p.versions.push_back({h.stored.link.entry, h.stored.opening, h.stored.value});
  }
  return p;
}

tl::expected<ConsistencyProof, Error> TransparencyLog::consistency(std::uint64_t old_size,
                                                                   std::uint64_t new_size) const {
  std::lock_guard lock(mu_);
  if (!open_ || old_size > new_size || new_size > entries_.size() || new_size == 0)
    return tl::unexpected(Error::invalid_argument);
  return ConsistencyProof{log_.consistency_proof(old_size, new_size)};
}

}  // namespace sotto::transparency
