#include "transparency/store.h"

namespace sotto::transparency {

tl::expected<void, Error> TransparencyStore::load_from(
    std::uint64_t first, const std::function<void(const StoredEntry&)>& visit) const {
  return load([&](const StoredEntry& e) {
    if (e.index >= first) visit(e);
  });
}

tl::expected<void, Error> MemoryTransparencyStore::append(const StoredEntry& e) {
  std::lock_guard lock(mu_);
  if (fail_next_) {
    fail_next_ = false;
    return tl::unexpected(Error::storage_failure);
  }
  if (e.index != entries_.size()) return tl::unexpected(Error::invalid_argument);
  entries_.push_back(e);
  return {};
}

tl::expected<void, Error> MemoryTransparencyStore::load(
    const std::function<void(const StoredEntry&)>& visit) const {
  std::lock_guard lock(mu_);
  for (const StoredEntry& e : entries_) visit(e);
  return {};
}

}  // namespace sotto::transparency
