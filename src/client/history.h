// Bringing the history to a newly linked device (`link --transfer-history`): the new device asks
// the device that linked it (a HistoryRequest inside the end-to-end encryption), which sends its
// contacts (their keys, and what the user decided about them) and every message of its history
// in HistoryChunks to that device only, oldest first. The server relays them like any message
// and learns nothing of their content.
//
// Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "client/account.h"
#include "content.pb.h"

namespace sotto::client {

class Outbox;

// Bodies per chunk, before padding and encryption: well under the server's message limit.
inline constexpr std::size_t kHistoryChunkBytes = 48 * 1024;
inline constexpr std::size_t kHistoryChunkMessages = 256;

class History {
 public:
  History(Account& account, Outbox& outbox) : account_(account), outbox_(outbox) {}

  // The sending side: our new device `device` said whether it wants the history. It gets the
  // contacts in any case, and the messages if so.
  void on_request(std::uint32_t device, bool wanted);
  [[nodiscard]] Result<std::size_t> serve(std::uint32_t device, bool with_messages);
  void set_serve_progress(Progress progress);
  // Where the groups sent with the history come from (Groups::export_logs; called with
  // crypto_mu held). Unset: no groups.
  using GroupSource = std::function<Result<std::vector<wire::backup::GroupLog>>()>;
  void set_group_source(GroupSource source) { group_source_ = std::move(source); }
  // Whether `device` has said what it wants (and got it), so add_device can stop waiting.
  [[nodiscard]] bool answered(std::uint32_t device) const;

  // The receiving side, inside the inbox's store transaction: stores a chunk's messages (checked
  // by content_codec.h). REQUIRES: crypto_mu held.
  [[nodiscard]] Result<void> import(const std::vector<store::StoredMessage>& messages,
                                    const std::vector<store::Contact>& contacts, bool last,
                                    std::uint64_t total);
  void set_import_progress(Progress progress);
  // Whether the last chunk of a transfer arrived.
  [[nodiscard]] bool complete() const;

 private:
  Account& account_;
  Outbox& outbox_;
  mutable std::mutex mu_;
  Progress serve_progress_;
  Progress import_progress_;
  GroupSource group_source_;  // set once, before any request
  std::vector<std::uint32_t> answered_;
  bool complete_ = false;
  std::uint64_t imported_ = 0;
};

}  // namespace sotto::client
