// The server side of key transparency: an append-only log of prefix-tree roots, the prefix tree
// of VRF-hidden labels whose leaves chain each label's versions, signed tree heads, and the
// proofs clients verify with proofs.h. One append() is one log entry, however many labels it
// changes; the server appends in the same transaction that changes the account.
//
// Owns its trees, its VRF key and its signing key; borrows the store and the random generator,
// which must outlive it. Thread-safe: every call takes the log's mutex (appends are serialised,
// lookups wait for the append in progress).
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <unordered_map>
#include <vector>

#include "crypto/ed25519.h"
#include "crypto/rng.h"
#include "transparency/audit.h"
#include "transparency/proofs.h"
#include "transparency/store.h"
#include "transparency/vrf.h"

namespace sotto::transparency {

class TransparencyLog {
 public:
  TransparencyLog(TransparencyStore& store, VrfKeyPair vrf, crypto::Ed25519KeyPair signing_key,
                  crypto::Rng& rng);

  // Rebuilds the trees from the store and checks every stored entry's prefix root against the
  // versions stored with it (Error::bad_history when they differ). An empty store gets entry 0,
  // the empty prefix tree, so every tree head has at least one entry.
  [[nodiscard]] tl::expected<void, Error> open(std::uint64_t now_ms);

  LogPublicKeys public_keys() const;

  struct Update {
    std::string label;  // the normalised username, 1..255 bytes
    AccountValue value;
  };
  // One new entry adding a version for each update (a label twice gets two versions). The entry's
  // time is now_ms, or the previous entry's if the clock went back. Nothing changes on failure.
  [[nodiscard]] tl::expected<SignedTreeHead, Error> append(std::span<const Update> updates,
                                                           std::uint64_t now_ms);

  // Computes and keeps the label's VRF proof (about 0.3 ms) without holding the log's mutex:
  // a server calls it before the account change whose append needs it, so that the change's
  // transaction does not wait for it. append(), search() and monitor() call it too.
  void warm(std::string_view label) const;

  // Takes in the entries other servers sharing the store appended since this log last looked
  // (a cluster on one database: its writers take turns under the store's lock), checking each
  // as open() does. Error::bad_history when one does not give the prefix root it names (the log
  // then refuses every call, as a server that must not go on); storage errors change nothing.
  [[nodiscard]] tl::expected<void, Error> refresh();
  // Forgets the trees (keeps the keys and the labels' VRF proofs) so that open() reads them from
  // the store again: after a write that another server of a shared store made first.
  void reset();

  SignedTreeHead head() const;
  // The label's latest version (or absence) at head().
  [[nodiscard]] tl::expected<SearchProof, Error> search(std::string_view label) const;
  // Every version of the label at head(), for its owner.
  [[nodiscard]] tl::expected<MonitorProof, Error> monitor(std::string_view label) const;
  // From a tree head of old_size to one of new_size (REQUIRES old_size <= new_size <= size).
  [[nodiscard]] tl::expected<ConsistencyProof, Error> consistency(std::uint64_t old_size,
                                                                  std::uint64_t new_size) const;
  // The signed head of an earlier size (a client catching up from it).
  [[nodiscard]] tl::expected<SignedTreeHead, Error> head_at(std::uint64_t size) const;
  // What an auditor needs of entry `index` (audit.h).
  [[nodiscard]] tl::expected<AuditRecord, Error> audit_record(std::uint64_t index) const;

 private:
  struct IndexHash {
    std::size_t operator()(const Index& i) const noexcept;
  };
  struct HeldVersion {
    StoredVersion stored;
    Hash chain_before{};
  };
  struct Labelled {
    Index index{};
    VrfProof proof{};
  };

  const Labelled& label_locked(std::string_view label) const;
  LeafProof leaf_locked(const Labelled& l) const;
  void apply_locked(const StoredEntry& e);
  SignedTreeHead head_locked(std::uint64_t size) const;

  TransparencyStore& store_;
  VrfKeyPair vrf_;
  crypto::Ed25519KeyPair signing_key_;
  crypto::Rng& rng_;

  mutable std::mutex mu_;
  bool open_ = false;
  bool broken_ = false;  // refresh() found entries that do not match: never serves again
  LogTree log_;
  std::vector<LogEntry> entries_;
  std::vector<std::vector<LeafChange>> changes_;  // per entry, for audit_record()
  PrefixTree prefix_;
  std::unordered_map<Index, std::vector<HeldVersion>, IndexHash> versions_;
  SignedTreeHead head_;
  // VRF proofs cost a few scalar multiplications; each label's is computed once.
  mutable std::map<std::string, Labelled, std::less<>> labels_;
};

}  // namespace sotto::transparency
