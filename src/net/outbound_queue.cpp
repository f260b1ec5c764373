#include "net/outbound_queue.h"

#include <span>

#include "net/batch.h"

namespace sotto::net::detail {

namespace {
// Vectors shrink back to this many slots once a burst has passed.
constexpr std::size_t kQueueSlotsKept = 16;
}  // namespace

bool OutboundQueue::push(Bytes frame) {
  std::lock_guard lock(inbox_mu_);
  inbox_.push_back(std::move(frame));
  const bool post = !inbox_posted_;
  inbox_posted_ = true;
  return post;
}

std::size_t OutboundQueue::take(bool accept) {
  {
    std::lock_guard lock(inbox_mu_);
    arrived_.swap(inbox_);
    inbox_posted_ = false;
  }
  std::size_t dropped = 0;
  for (auto& frame : arrived_) {
    if (accept) {
      queue_.push_back(std::move(frame));
    } else {
      dropped += cost(frame);
    }
  }
  arrived_.clear();
  if (arrived_.capacity() > kQueueSlotsKept) arrived_.shrink_to_fit();
  return dropped;
}

ByteView OutboundQueue::next_write() {
  const std::span<const Bytes> unsent(queue_.data() + head_, queue_.size() - head_);
  in_flight_ = frames_for_next_write(unsent);
  if (in_flight_ == 1) return queue_[head_];
  encode_batch(unsent.first(in_flight_), batch_);
  return batch_;
}

std::size_t OutboundQueue::written() {
  std::size_t released = 0;
  for (std::size_t i = 0; i < in_flight_; ++i) {
    released += cost(queue_[head_]);
    queue_[head_] = Bytes();
    ++head_;
  }
  in_flight_ = 0;
  if (head_ == queue_.size()) {
    queue_.clear();
    head_ = 0;
    if (queue_.capacity() > kQueueSlotsKept) queue_.shrink_to_fit();
    batch_ = Bytes();
  } else if (head_ >= kQueueSlotsKept && head_ * 2 >= queue_.size()) {
    // A peer that always leaves some frames unread never empties the queue: drop the written
    // prefix once it is at least half the queue. The frames moved are fewer than those written
    // since the last compaction, so each frame costs O(1) moves; moving a frame keeps its bytes
    // where they are (no write is in flight here anyway).
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
    // Spare capacity left by a burst goes back too, once it is mostly spare (again amortized:
    // the queue shrank by at least three quarters since it was last this large).
    if (queue_.capacity() > kQueueSlotsKept && queue_.capacity() > 4 * queue_.size())
      queue_.shrink_to_fit();
  }
  return released;
}

std::size_t OutboundQueue::drop_unsent() {
  const std::size_t keep = head_ + in_flight_;
  std::size_t dropped = 0;
  for (std::size_t i = keep; i < queue_.size(); ++i) dropped += cost(queue_[i]);
  if (queue_.size() > keep) queue_.resize(keep);
  return dropped;
}

}  // namespace sotto::net::detail
