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
      dropped += frame.size();
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
    released += queue_[head_].size();
    queue_[head_] = Bytes();
    ++head_;
  }
  in_flight_ = 0;
  if (head_ == queue_.size()) {
    queue_.clear();
    head_ = 0;
    if (queue_.capacity() > kQueueSlotsKept) queue_.shrink_to_fit();
    batch_ = Bytes();
  }
  return released;
}

std::size_t OutboundQueue::drop_unsent() {
  const std::size_t keep = head_ + in_flight_;
  std::size_t dropped = 0;
  for (std::size_t i = keep; i < queue_.size(); ++i) dropped += queue_[i].size();
  if (queue_.size() > keep) queue_.resize(keep);
  return dropped;
}

}  // namespace sotto::net::detail
