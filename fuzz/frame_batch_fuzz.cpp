// Fuzzes the transport's batch splitter (src/net/batch.h), which every WebSocket message from a
// peer goes through before any handler. Invariants: it never reads outside the message; a message
// it accepts is exactly the encoding of the frames it returned (one encoding per batch, so nothing
// in a message is skipped or read twice); a refused message leaves the output untouched.
#include <cstdint>
#include <vector>

#include "fuzz_check.h"
#include "net/batch.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace sotto;
  const ByteView message(data, size);
  const Bytes sentinel = {1, 2, 3};
  std::vector<ByteView> parts = {ByteView(sentinel)};
  if (!net::split_batch(message, parts)) {
    fuzz::require(parts.size() == 1 && parts[0].data() == sentinel.data(),
                  "a refused message changed the output");
    return 0;
  }
  fuzz::require(parts.size() >= 2, "an accepted batch returned no frame");
  std::vector<Bytes> frames;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    fuzz::require(parts[i].data() >= data && parts[i].data() + parts[i].size() <= data + size,
                  "a frame points outside the message");
    frames.emplace_back(parts[i].begin(), parts[i].end());
  }
  Bytes again;
  net::encode_batch(frames, again);
  fuzz::require(fuzz::same_bytes(again, message), "split then encode does not give the message");
  fuzz::require(again.size() == net::batch_size(frames), "batch_size disagrees with the encoding");
  return 0;
}
