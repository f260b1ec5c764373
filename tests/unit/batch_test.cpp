// Frame batches (src/net/batch.h): the transport's own encoder and strict splitter, checked
// against libprotobuf's reading and writing of the same Batch message (proto/service.proto).
#include "net/batch.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

}  // namespace
}  // namespace sotto::net
