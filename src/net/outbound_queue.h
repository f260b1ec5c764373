// OutboundQueue: the frames one connection sends, handed in from any thread and written in order
// on the connection's strand, several at a time as one batch (batch.h) when they queued behind a
// write in flight. Shared by the server's and the client's connections (internal to src/net).
//
// Threading: push() from any thread; everything else on the connection's strand only.
#pragma once

#include <cstddef>
#include <mutex>
#include <vector>

#include "crypto/bytes.h"

namespace sotto::net::detail {

class OutboundQueue {
 public:
  // What one queued frame is counted as against a connection's limits: its bytes and about what
  // its allocation and its slot take besides, so that a flood of tiny answers counts for the
  // memory it holds. take(), written() and drop_unsent() return these costs.
  static constexpr std::size_t kFrameOverhead = 64;
  static std::size_t cost(const Bytes& frame) { return frame.size() + kFrameOverhead; }

  // Any thread. True when the caller must post take() to the strand: frames pushed meanwhile
  // wait for that one post (one post per burst, not per frame).
  bool push(Bytes frame);

  // Moves what push() gathered behind the unsent frames, or drops it when `accept` is false
  // (the connection is closing). Returns the cost of what was dropped.
  std::size_t take(bool accept);

  // Frames queued and not yet being written.
  bool has_unsent() const { return head_ + in_flight_ < queue_.size(); }

  // REQUIRES: no write in flight, has_unsent(). The bytes of the next write: the next frame
  // alone, or as many as fit one batch, encoded. They stay valid until written().
  ByteView next_write();

  // The write of next_write()'s bytes is over (done or failed): releases its frames and
  // returns their cost. An emptied queue gives its memory back (an idle connection keeps none),
  // and the slots of written frames are reclaimed once they are half the queue, so a connection
  // that always keeps some frames unsent holds slots for those only (amortized O(1) per frame).
  std::size_t written();

  // Drops every unsent frame (those being written stay: their bytes are in use). Returns their
  // cost.
  std::size_t drop_unsent();

  // The frame slots held (written, unsent and spare), for tests of the memory a queue keeps.
  std::size_t slots() const { return queue_.capacity(); }

 private:
  std::mutex inbox_mu_;
  std::vector<Bytes> inbox_;    // pushed, not yet taken; guarded by inbox_mu_
  bool inbox_posted_ = false;   // a take() is on its way; guarded by inbox_mu_
  std::vector<Bytes> arrived_;  // take()'s scratch, swapped with inbox_
  std::vector<Bytes> queue_;  // frames from head_ on are unsent; in_flight_ of them are being sent
  std::size_t head_ = 0;
  std::size_t in_flight_ = 0;
  Bytes batch_;  // the batch being written, when more than one frame is
};

}  // namespace sotto::net::detail
