#include "store/server/write_queue.h"

#include <algorithm>

namespace sotto::store {

void QueueUsage::add(const std::string& source, std::uint64_t n, std::uint64_t b) {
  count += n;
  bytes += b;
  auto& s = by_source[source];
  s.first += n;
  s.second += b;
}

void QueueUsage::remove(const std::string& source, std::uint64_t n, std::uint64_t b) {
  count -= std::min(count, n);
  bytes -= std::min(bytes, b);
  if (auto it = by_source.find(source); it != by_source.end()) {
    it->second.first -= std::min(it->second.first, n);
    it->second.second -= std::min(it->second.second, b);
    if (it->second.first == 0) by_source.erase(it);
  }
}

std::pair<std::uint64_t, std::uint64_t> QueueUsage::of(const std::string& source) const {
  auto it = by_source.find(source);
  return it == by_source.end() ? std::pair<std::uint64_t, std::uint64_t>{0, 0} : it->second;
}

WriteQueue::WriteQueue(Options options, Commit commit)
    : options_(std::move(options)), commit_(std::move(commit)) {
  if (!options_.log) options_.log = [](std::string_view) {};
  if (options_.max_batch == 0) options_.max_batch = 1;
}

WriteQueue::~WriteQueue() {
  stop();
}

void WriteQueue::start() {
  writer_ = std::thread([this] { writer_loop(); });
}

void WriteQueue::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (writer_.joinable()) writer_.join();  // the writer drains the queue before it returns
}

void WriteQueue::push(std::unique_ptr<PendingWrite> op) {
  {
    std::unique_lock lock(mu_);
    if (!stopping_) {
      for (std::size_t i = 0; i < op->envelopes.size(); ++i) {
        // A duplicate id keeps the first entry; the second fails its send with conflict.
        pending_.emplace(op->envelopes[i].id, PendingRef{op.get(), i});
      }
      queue_.push_back(std::move(op));
      lock.unlock();
      queue_cv_.notify_one();
      return;
    }
  }
  // Only a caller racing the store's destructor gets here.
  options_.log("enqueue after shutdown began: refused");
  complete(*op, tl::unexpected(Error::io));
}

void WriteQueue::enqueue(std::vector<QueuedEnvelope> envelopes, std::optional<Bytes> dedup_key,
                         MessageStore::Completion done) {
  auto op = std::make_unique<PendingWrite>();
  op->cancelled.assign(envelopes.size(), false);
  op->envelopes = std::move(envelopes);
  op->dedup_key = std::move(dedup_key);
  op->sent = std::move(done);
  push(std::move(op));
}

void WriteQueue::enqueue_partial(std::vector<QueuedEnvelope> envelopes, Bytes dedup_key,
                                 MessageStore::PartialCompletion done) {
  auto op = std::make_unique<PendingWrite>();
  op->cancelled.assign(envelopes.size(), false);
  op->envelopes = std::move(envelopes);
  op->dedup_key = std::move(dedup_key);
  op->sent_partial = std::move(done);
  push(std::move(op));
}

void WriteQueue::remove_async(AccountId account, DeviceId device, std::vector<EnvelopeId> ids,
                              MessageStore::RemoveCompletion done,
                              std::vector<MessageStore::Removing> known) {
  if (known.size() != ids.size()) known.clear();
  std::size_t cancelled = 0;
  {
    std::unique_lock lock(mu_);
    if (stopping_) {
      lock.unlock();
      options_.log("remove after shutdown began: refused");
      if (done) done(tl::unexpected(Error::io));
      return;
    }
    std::vector<EnvelopeId> rest;
    std::vector<MessageStore::Removing> rest_known;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const EnvelopeId& id = ids[i];
      auto it = pending_.find(id);
      // The account and device conditions keep one device from cancelling another's envelope.
      if (it != pending_.end()) {
        PendingWrite& send = *it->second.op;
        const QueuedEnvelope& e = send.envelopes[it->second.index];
        if (e.account == account && e.device == device) {
          send.cancelled[it->second.index] = true;
          pending_.erase(it);
          ++cancelled;
          continue;
        }
      }
      rest.push_back(id);
      if (!known.empty()) rest_known.push_back(std::move(known[i]));
    }
    if (!rest.empty()) {
      // Queued under the same lock as the cancellations, so it follows every send it names.
      auto op = std::make_unique<PendingWrite>();
      op->removal = true;
      op->account = account;
      op->device = device;
      op->ids = std::move(rest);
      op->known = std::move(rest_known);
      op->already_removed = cancelled;
      op->removed = std::move(done);
      queue_.push_back(std::move(op));
      lock.unlock();
      queue_cv_.notify_one();
      return;
    }
  }
  if (done) done(cancelled);
}

bool WriteQueue::holds(ByteView dedup_key) {
  std::lock_guard lock(mu_);
  for (const auto& op : queue_) {
    if (op->dedup_key && op->dedup_key->size() == dedup_key.size() &&
        std::equal(op->dedup_key->begin(), op->dedup_key->end(), dedup_key.begin())) {
      return true;
    }
  }
  return false;
}

void WriteQueue::flush() {
  std::unique_lock lock(mu_);
  flush_waiters_ += 1;
  queue_cv_.notify_all();  // no point in the writer lingering for more sends now
  idle_cv_.wait(lock, [&] { return queue_.empty() && in_flight_ == 0; });
  flush_waiters_ -= 1;
}

void WriteQueue::complete(PendingWrite& op, const WriteResult& result) {
  try {
    if (op.removal) {
      if (op.removed) op.removed(result ? WriteResult(op.already_removed + *result) : result);
    } else if (op.sent_partial) {
      if (result) {
        op.sent_partial(std::move(op.refused));
      } else {
        op.sent_partial(tl::unexpected(result.error()));
      }
    } else if (op.sent) {
      op.sent(result ? tl::expected<void, Error>{}
                     : tl::expected<void, Error>(tl::unexpected(result.error())));
    }
  } catch (...) {
    // A throwing completion is the caller's bug; it must not stop every later write.
    options_.log("a completion threw; ignored");
  }
}

void WriteQueue::writer_loop() {
  PendingBatch batch;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is written
      const auto max_batch = options_.max_batch;
      if (queue_.size() < max_batch && options_.max_delay.count() > 0 && !stopping_ &&
          flush_waiters_ == 0) {
        // Linger briefly so that sends arriving together share the fsync (and recipients online
        // have time to acknowledge, which spares the write altogether).
        queue_cv_.wait_for(lock, options_.max_delay, [&] {
          return stopping_ || flush_waiters_ > 0 || queue_.size() >= max_batch;
        });
      }
      const std::size_t n = std::min(queue_.size(), max_batch);
      for (std::size_t i = 0; i < n; ++i) {
        auto op = std::move(queue_.front());
        queue_.pop_front();
        for (std::size_t j = 0; j < op->envelopes.size(); ++j) {
          if (op->cancelled[j]) continue;
          auto it = pending_.find(op->envelopes[j].id);
          if (it != pending_.end() && it->second.op == op.get()) pending_.erase(it);
        }
        batch.push_back(std::move(op));
      }
      in_flight_ = n;
    }

    const std::vector<WriteResult> results = commit_(batch);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      complete(*batch[i], i < results.size() ? results[i] : WriteResult(tl::unexpected(Error::io)));
    }
    batch.clear();
    {
      std::lock_guard lock(mu_);
      in_flight_ = 0;
    }
    idle_cv_.notify_all();
  }
}

}  // namespace sotto::store
