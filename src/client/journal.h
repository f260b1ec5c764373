// The event journal (include/sotto/client.h, "Events"): every event the app must hear of is
// recorded here, in the store transaction that made the change it reports, and handed to the app
// from here. An event is never lost between the change and the app: a process that stops before
// its handler ran hands the event over on its next run.
//
// Records are sotto.wire.journal.JournalEvent (proto/journal.proto), sealed by the store.
// Thread-safe (the store locks).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "crypto/bytes.h"
#include "sotto/client.h"
#include "store/client/client_store.h"

namespace sotto::client {

// The record of an event; decode_event is strict about what an event kind may carry.
[[nodiscard]] Bytes encode_event(const Event& e);
[[nodiscard]] std::optional<Event> decode_event(ByteView record);

class Journal {
 public:
  explicit Journal(store::ClientStore& store) : store_(store) {}

  // Appends `e` (inside the caller's store transaction, when there is one); sets its cursor.
  [[nodiscard]] tl::expected<std::uint64_t, store::ClientError> record(Event& e);
  // Events after `after`, oldest first, at most `limit` (0: all). An entry that does not read
  // back is handed out as a decrypt_failed event saying so, keeping its cursor.
  [[nodiscard]] tl::expected<std::vector<Event>, store::ClientError> after(std::uint64_t after,
                                                                           std::size_t limit);
  [[nodiscard]] tl::expected<void, store::ClientError> acknowledge(std::uint64_t cursor);

 private:
  store::ClientStore& store_;
};

}  // namespace sotto::client
