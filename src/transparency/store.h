// Where a transparency log keeps what it must not lose: each log entry with the label versions it
// added. The trees themselves are rebuilt from this at open (TransparencyLog::open), so a store
// holds no hashes it could get out of step with. MemoryTransparencyStore keeps everything in
// process memory (tests, benchmarks, a server without persistence); a database-backed store
// implements the same two calls. Implementations must be thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <tl/expected.hpp>
#include <vector>

#include "transparency/account_value.h"
#include "transparency/prefix_tree.h"
#include "transparency/proofs.h"

namespace sotto::transparency {

struct StoredVersion {
  Index index{};     // the label's VRF index
  VersionLink link;  // version, entry, commitment
  Opening opening{};
  Bytes value;  // encode_account_value()
  friend bool operator==(const StoredVersion&, const StoredVersion&) = default;
};

struct StoredEntry {
  std::uint64_t index = 0;  // position in the log
  LogEntry entry;
  std::vector<StoredVersion> versions;  // in the order they were applied
  friend bool operator==(const StoredEntry&, const StoredEntry&) = default;
};

class TransparencyStore {
 public:
  virtual ~TransparencyStore() = default;
  // Adds entry e.index, which must equal the number of entries stored, with all its versions,
  // atomically: on failure nothing is stored.
  [[nodiscard]] virtual tl::expected<void, Error> append(const StoredEntry& e) = 0;
  // Visits every stored entry in log order.
  [[nodiscard]] virtual tl::expected<void, Error> load(
      const std::function<void(const StoredEntry&)>& visit) const = 0;
  // Visits the stored entries from index `first` on, in log order (what other writers of a
  // shared store appended since; TransparencyLog::refresh). The default reads them all and skips.
  [[nodiscard]] virtual tl::expected<void, Error> load_from(
      std::uint64_t first, const std::function<void(const StoredEntry&)>& visit) const;
};

class MemoryTransparencyStore final : public TransparencyStore {
 public:
  [[nodiscard]] tl::expected<void, Error> append(const StoredEntry& e) override;
  [[nodiscard]] tl::expected<void, Error> load(
      const std::function<void(const StoredEntry&)>& visit) const override;

  // Tests: make the next append fail (a full disk), and rewrite history (a malicious operator).
  void fail_next_append() { fail_next_ = true; }
  std::vector<StoredEntry>& entries_for_test() { return entries_; }
  // Tests: an entry another server sharing the store appended (no check of its index).
  void append_for_test(const StoredEntry& e) {
    std::lock_guard lock(mu_);
    entries_.push_back(e);
  }

 private:
  mutable std::mutex mu_;
  std::vector<StoredEntry> entries_;
  bool fail_next_ = false;
};

}  // namespace sotto::transparency
