// SenderKeyDistributionMessage::decode on untrusted bytes. A message that decodes must keep the
// bytes as sent, and one built from its fields must decode to the same fields.
#include <cstddef>
#include <cstdint>

#include "fuzz_check.h"
#include "protocol/messages.h"

using namespace sotto;
using namespace sotto::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView input(data, size);
  auto m = SenderKeyDistributionMessage::decode(input);
  if (!m) return 0;
  fuzz::require(m->version == kMessageVersion, "decoded a message of another version");
  fuzz::require(fuzz::same_bytes(m->serialized, input), "decode did not keep the bytes as sent");

  const SenderKeyDistributionMessage built = SenderKeyDistributionMessage::create(
      m->key_id, m->iteration, m->chain_key, m->signing_key);
  auto back = SenderKeyDistributionMessage::decode(built.serialized);
  fuzz::require(back.has_value(), "a created message does not decode");
  fuzz::require(back->key_id == m->key_id && back->iteration == m->iteration &&
                    back->chain_key == m->chain_key && back->signing_key == m->signing_key,
                "a created message decodes to other fields");
  return 0;
}
