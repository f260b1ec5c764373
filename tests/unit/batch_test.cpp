// Frame batches (src/net/batch.h): the transport's own encoder and strict splitter, checked
// against libprotobuf's reading and writing of the same Batch message (proto/service.proto).
#include "net/batch.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "net/outbound_queue.h"
#include "service.pb.h"

namespace sotto::net {
namespace {

namespace svc = sotto::wire::service;

Bytes serialize(const svc::Frame& f) {
  Bytes b(f.ByteSizeLong());
  f.SerializeWithCachedSizesToArray(b.data());
  return b;
}

Bytes request_frame(std::uint64_t id, std::size_t padding = 0) {
  svc::Frame f;
  f.mutable_request()->set_id(id);
  if (padding > 0)
    f.mutable_request()->mutable_fetch_bundles()->set_username(std::string(padding, 'u'));
  return serialize(f);
}

std::vector<Bytes> copies(const std::vector<ByteView>& views) {
  std::vector<Bytes> out;
  for (auto v : views) out.emplace_back(v.begin(), v.end());
  return out;
}

TEST(FrameBatch, RoundTripsFramesOfEverySizeInOrder) {
  // Lengths on both sides of each varint boundary, and the smallest frame (an empty Request).
  std::vector<Bytes> frames = {request_frame(1),        Bytes{0x0a, 0x00},
                               request_frame(2, 120),   request_frame(3, 127),
                               request_frame(4, 20000), request_frame(5)};
  Bytes message;
  encode_batch(frames, message);
  EXPECT_EQ(message.size(), batch_size(frames));
  std::vector<ByteView> split;
  ASSERT_TRUE(split_batch(message, split));
  EXPECT_EQ(copies(split), frames);
}

TEST(FrameBatch, IsTheBatchMessageLibprotobufReadsAndWrites) {
  std::vector<Bytes> frames = {request_frame(7), request_frame(8, 300)};
  Bytes ours;
  encode_batch(frames, ours);

  svc::Frame parsed;
  ASSERT_TRUE(parsed.ParseFromArray(ours.data(), static_cast<int>(ours.size())));
  ASSERT_TRUE(parsed.has_batch());
  ASSERT_EQ(parsed.batch().frames_size(), 2);
  EXPECT_EQ(parsed.batch().frames(0).request().id(), 7u);
  EXPECT_EQ(parsed.batch().frames(1).request().fetch_bundles().username().size(), 300u);

  svc::Frame theirs;
  for (const auto& f : frames) {
    ASSERT_TRUE(
        theirs.mutable_batch()->add_frames()->ParseFromArray(f.data(), static_cast<int>(f.size())));
  }
  EXPECT_EQ(serialize(theirs), ours);
}

TEST(FrameBatch, APlainFrameIsNotABatch) {
  std::vector<ByteView> split;
  const Bytes plain = request_frame(9);
  EXPECT_FALSE(split_batch(plain, split));
  EXPECT_FALSE(split_batch(Bytes{}, split));
  EXPECT_TRUE(split.empty());
}

TEST(FrameBatch, MalformedBatchesAreRefusedAndLeaveTheOutputAlone) {
  Bytes good;
  encode_batch(std::vector<Bytes>{request_frame(1), request_frame(2)}, good);
  const std::vector<Bytes> bad = {
      {0x22},                                      // no length
      {0x22, 0x00},                                // an empty batch
      {0x22, 0x05, 0x0a, 0x01, 0x08},              // says 5 bytes, has 3
      {0x22, 0x02, 0x0a, 0x01},                    // a frame longer than the batch
      {0x22, 0x03, 0x12, 0x01, 0x08},              // a field other than frames
      {0x22, 0x02, 0x0a, 0x00, 0x00},              // bytes after the batch
      {0x22, 0x82, 0x00, 0x0a, 0x00},              // a padded length
      {0x22, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},  // a length over five bytes
      {0x22, 0x04, 0x0a, 0x00, 0x0a, 0x00},        // empty frames: never written, refused
  };
  for (const Bytes& b : bad) {
    std::vector<ByteView> split = {ByteView(good)};
    EXPECT_FALSE(split_batch(b, split));
    ASSERT_EQ(split.size(), 1u);  // what was there before, untouched
  }
  // Truncated anywhere: refused.
  for (std::size_t n = 0; n < good.size(); ++n) {
    std::vector<ByteView> split;
    EXPECT_FALSE(split_batch(ByteView(good.data(), n), split)) << n;
    EXPECT_TRUE(split.empty());
  }
}

TEST(FrameBatch, AtMostMaxBatchFramesInOneBatch) {
  std::vector<Bytes> frames(kMaxBatchFrames, Bytes{0x0a, 0x00});
  Bytes message;
  encode_batch(frames, message);
  std::vector<ByteView> split;
  ASSERT_TRUE(split_batch(message, split));
  EXPECT_EQ(split.size(), kMaxBatchFrames);
  frames.push_back(Bytes{0x0a, 0x00});
  encode_batch(frames, message);
  split.clear();
  EXPECT_FALSE(split_batch(message, split));  // one too many: handed on whole, refused there
  EXPECT_TRUE(split.empty());
}

TEST(FrameBatch, AWriteTakesWhatFitsOneBatch) {
  const Bytes small(100, 0x0a);
  EXPECT_EQ(frames_for_next_write(std::vector<Bytes>{small}), 1u);
  // An empty frame goes alone, and ends a batch before it.
  EXPECT_EQ(frames_for_next_write(std::vector<Bytes>{Bytes{}, small, small}), 1u);
  EXPECT_EQ(frames_for_next_write(std::vector<Bytes>{small, small, Bytes{}, small}), 2u);
  // A frame too large for a batch goes alone; one that would overflow it waits for the next.
  EXPECT_EQ(frames_for_next_write(std::vector<Bytes>{Bytes(20000, 1), small}), 1u);
  EXPECT_EQ(frames_for_next_write(std::vector<Bytes>{small, Bytes(kMaxBatchBytes, 1)}), 1u);
  // Many small frames: as many as fit the byte limit, and the batch really fits it.
  const std::vector<Bytes> many(1000, small);
  const std::size_t n = frames_for_next_write(many);
  EXPECT_GT(n, 100u);
  EXPECT_LE(batch_size(std::span<const Bytes>(many.data(), n)), kMaxBatchBytes);
  EXPECT_GT(batch_size(std::span<const Bytes>(many.data(), n + 1)), kMaxBatchBytes - 200);
  // Tiny frames: the frame count limit.
  EXPECT_EQ(frames_for_next_write(std::vector<Bytes>(3000, Bytes{0x0a, 0x00})), kMaxBatchFrames);
}

TEST(FrameBatch, ABatchInsideABatchIsNotSplitAgain) {
  Bytes inner;
  encode_batch(std::vector<Bytes>{request_frame(1), request_frame(2)}, inner);
  Bytes outer;
  encode_batch(std::vector<Bytes>{inner}, outer);
  std::vector<ByteView> split;
  ASSERT_TRUE(split_batch(outer, split));
  ASSERT_EQ(split.size(), 1u);
  EXPECT_EQ(Bytes(split[0].begin(), split[0].end()), inner);  // handed on whole: refused above
}

// A frame of `size` bytes that starts with its number, to check the order frames leave in.
Bytes numbered(std::uint32_t n, std::size_t size) {
  Bytes b(size, 0x5a);
  std::memcpy(b.data(), &n, sizeof n);
  return b;
}

std::uint32_t number_of(ByteView b) {
  std::uint32_t n = 0;
  std::memcpy(&n, b.data(), sizeof n);
  return n;
}

// A peer that always leaves some answers unread: the queue never empties, yet the slots of the
// frames written go back (issue 16, item 5: one slot per frame was kept for ever).
TEST(OutboundQueue, KeepsSlotsForUnsentFramesOnlyWhileItNeverEmpties) {
  constexpr std::size_t kBig = kMaxBatchBytes + 100;  // each goes out alone
  constexpr std::uint32_t kBehind = 10;               // frames that stay unsent
  constexpr std::uint32_t kFrames = 20000;
  detail::OutboundQueue q;
  std::uint32_t pushed = 0;
  std::uint32_t next_expected = 0;
  std::size_t max_slots = 0;
  for (; pushed < kBehind; ++pushed) q.push(numbered(pushed, kBig));
  q.take(true);
  while (next_expected < kFrames) {
    if (pushed < kFrames + kBehind) {
      q.push(numbered(pushed++, kBig));
      EXPECT_EQ(q.take(true), 0u);
    }
    ASSERT_TRUE(q.has_unsent());
    const ByteView bytes = q.next_write();
    ASSERT_EQ(bytes.size(), kBig);
    ASSERT_EQ(number_of(bytes), next_expected);  // in order, none lost or repeated
    ++next_expected;
    EXPECT_EQ(q.written(), detail::OutboundQueue::cost(Bytes(kBig)));
    max_slots = std::max(max_slots, q.slots());
  }
  EXPECT_TRUE(q.has_unsent());  // the last kBehind frames are still queued
  EXPECT_LE(max_slots, 64u) << "slots grow with the frames that passed through";
  // The rest drains, in order, and an empty queue keeps no slots beyond the few it always may.
  while (q.has_unsent()) {
    ASSERT_EQ(number_of(q.next_write()), next_expected++);
    q.written();
  }
  EXPECT_EQ(next_expected, kFrames + kBehind);
  EXPECT_LE(q.slots(), 16u);
}

// Small frames go out as batches; a burst leaves spare capacity that is given back once the
// queue has shrunk, though it never empties.
TEST(OutboundQueue, GivesBackABurstsSlotsWhileSomeFramesStayUnsent) {
  constexpr std::size_t kSmall = 40;
  constexpr std::size_t kFrames = 50000;
  const std::size_t cost = detail::OutboundQueue::cost(Bytes(kSmall));
  detail::OutboundQueue q;
  for (std::uint32_t i = 0; i < kFrames; ++i) q.push(numbered(i, kSmall));
  q.take(true);
  EXPECT_GE(q.slots(), kFrames);
  std::size_t written = 0;  // frames
  // Written batch by batch until about 2,000 frames are left unsent.
  while (kFrames - written > 2000) {
    (void)q.next_write();
    const std::size_t released = q.written();
    ASSERT_EQ(released % cost, 0u);
    written += released / cost;
  }
  ASSERT_TRUE(q.has_unsent());
  const std::size_t unsent = kFrames - written;
  EXPECT_LE(q.slots(), 8 * unsent + 64) << "a burst's slots stay after it has passed";
}

}  // namespace
}  // namespace sotto::net
