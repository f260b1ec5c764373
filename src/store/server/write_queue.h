// The group-commit write queue every server store shares (docs/delivery.md, "Durability"): sends
// and removals wait here in arrival order; one writer thread takes them in batches and hands each
// batch to its store, which writes it in one transaction and one fsync. An acknowledgement that
// arrives before its envelope was written takes the envelope out of its waiting send, so that it
// is never written at all. What a batch is written as (SQL, tables) is the store's business; the
// queue owns the order, the batching, the cancellation and the completions.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "store/server/store.h"

namespace sotto::store {

// One entry of the queue: a send (enqueue, enqueue_partial) or a removal (remove_async).
struct PendingWrite {
  bool removal = false;
  // A send. cancelled[i]: envelope i was acknowledged before it was written, so it never will be
  // (guarded by the queue's lock until the writer takes the entry, then the writer's alone).
  std::vector<QueuedEnvelope> envelopes;
  std::vector<bool> cancelled;
  std::optional<Bytes> dedup_key;
  MessageStore::Completion sent;
  // A partial send (enqueue_partial): answered here instead of `sent`, with the devices left out
  // (set by the store's commit once the send is stored).
  MessageStore::PartialCompletion sent_partial;
  std::vector<MessageStore::Refusal> refused;
  // A removal; already_removed counts the ids cancelled before they were written.
  AccountId account = 0;
  DeviceId device = 0;
  std::vector<EnvelopeId> ids;
  std::vector<MessageStore::Removing> known;  // empty, or one per id
  std::size_t already_removed = 0;
  MessageStore::RemoveCompletion removed;
};

using PendingBatch = std::vector<std::unique_ptr<PendingWrite>>;
// What the store's commit says of one entry: for a removal, how many rows it deleted.
using WriteResult = tl::expected<std::size_t, Error>;

struct EnvelopeIdHash {
  std::size_t operator()(const EnvelopeId& id) const noexcept {
    // Envelope ids are random: their first bytes are as good as any hash of them.
    std::size_t h = 0;
    std::memcpy(&h, id.data(), sizeof h);
    return h;
  }
};

// What a device's queue holds: envelopes and ciphertext bytes, in all and per source username
// (the per-sender share, SqliteOptions::max_queue_per_sender).
struct QueueUsage {
  std::uint64_t count = 0;
  std::uint64_t bytes = 0;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>, std::less<>> by_source;

  void add(const std::string& source, std::uint64_t n, std::uint64_t b);
  void remove(const std::string& source, std::uint64_t n, std::uint64_t b);
  [[nodiscard]] std::pair<std::uint64_t, std::uint64_t> of(const std::string& source) const;
};

class WriteQueue {
 public:
  struct Options {
    std::size_t max_batch = 512;
    // How long the writer lingers for more entries when a batch is not full (no flush waiting).
    std::chrono::microseconds max_delay{0};
    std::function<void(std::string_view)> log;
  };
  // Writes one batch, in order, in one transaction: one result per entry. Runs on the writer
  // thread only; a partial send's refusals go in its `refused`.
  using Commit = std::function<std::vector<WriteResult>(const PendingBatch&)>;

  WriteQueue(Options options, Commit commit);
  // Waits for everything queued to be written.
  ~WriteQueue();
  WriteQueue(const WriteQueue&) = delete;
  WriteQueue& operator=(const WriteQueue&) = delete;

  // Starts the writer; the store calls it once everything the commit uses exists.
  void start();
  // Refuses new entries, writes what is queued, and joins the writer. Idempotent.
  void stop();

  void enqueue(std::vector<QueuedEnvelope> envelopes, std::optional<Bytes> dedup_key,
               MessageStore::Completion done);
  void enqueue_partial(std::vector<QueuedEnvelope> envelopes, Bytes dedup_key,
                       MessageStore::PartialCompletion done);
  void remove_async(AccountId account, DeviceId device, std::vector<EnvelopeId> ids,
                    MessageStore::RemoveCompletion done, std::vector<MessageStore::Removing> known);
  // Whether a send with this dedup key waits in the queue (not yet taken by the writer).
  [[nodiscard]] bool holds(ByteView dedup_key);
  // Returns once everything queued before the call is written and completed.
  void flush();

 private:
  void push(std::unique_ptr<PendingWrite> op);
  void writer_loop();
  void complete(PendingWrite& op, const WriteResult& result);

  // Where an envelope not yet taken by the writer waits: its send and its index there.
  struct PendingRef {
    PendingWrite* op;
    std::size_t index;
  };

  Options options_;
  Commit commit_;
  std::mutex mu_;
  std::condition_variable queue_cv_;                 // the writer waits here for work
  std::condition_variable idle_cv_;                  // flush() waits here for the writer to drain
  std::deque<std::unique_ptr<PendingWrite>> queue_;  // guarded by mu_
  std::unordered_map<EnvelopeId, PendingRef, EnvelopeIdHash> pending_;  // guarded by mu_
  std::size_t in_flight_ = 0;      // guarded by mu_: entries taken but not yet completed
  std::size_t flush_waiters_ = 0;  // guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  std::thread writer_;
};

}  // namespace sotto::store
