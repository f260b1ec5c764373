// Frame batches: several service Frames in one WebSocket message (docs/architecture.md section 5).
//
// A busy connection coalesces what is queued behind a write in flight into one message, so that
// one TLS record and one system call carry many frames instead of one each. The batch is itself a
// Frame (proto/service.proto: `Batch batch = 4`, `repeated Frame frames = 1`), so any protobuf
// decoder reads it; the transport builds it from frames already serialized (no re-encoding) and
// splits it with the strict decoder below, so the layers above still see one Frame at a time and
// never a batch. A connection that is not busy writes each frame alone: batching adds no latency.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "crypto/bytes.h"

namespace sotto::net {

// At most this many frames in one batch, so that one message can cost a receiver only so much
// work. Writers stop a batch there; a longer one is not split (it is one malformed frame).
inline constexpr std::size_t kMaxBatchFrames = 1024;
// Writers keep a batch, with its WebSocket header, within one TLS record; receivers accept any
// batch within their message limit, which the server requires to be at least 64 KiB.
inline constexpr std::size_t kMaxBatchBytes = 16384 - 16;

// How many of `queued` (frames waiting in order, at least one) the next write takes: the first
// alone when it is empty or too large for a batch, otherwise as many as fit within
// kMaxBatchBytes and kMaxBatchFrames, stopping before an empty one (which a batch may not hold).
// 1 means "write it as it is"; more means "write encode_batch of them".
std::size_t frames_for_next_write(std::span<const Bytes> queued);

// The size of `frames` encoded as one batch message.
std::size_t batch_size(std::span<const Bytes> frames);

// Writes the batch of `frames`, in order, into `out` (replacing its contents; the capacity is
// reused). REQUIRES: frames is not empty.
void encode_batch(std::span<const Bytes> frames, Bytes& out);

// If `message` is a well-formed batch, appends views of its frames (into `message`) to `out`, in
// order, and returns true. Returns false, leaving `out` as it was, when it is anything else: a
// plain frame, or a batch that is malformed, empty, holds an empty frame or more than
// kMaxBatchFrames, or has anything but frames in it. The caller
// then treats `message` as one frame, so malformed input gets the usual "malformed frame" answer.
// A frame inside a batch is not split again (a batch in a batch reaches the handler as such and
// is refused there).
bool split_batch(ByteView message, std::vector<ByteView>& out);

}  // namespace sotto::net
