// PreKeySignalMessage::decode on untrusted bytes. A message that decodes must keep the bytes as
// sent (outer and inner), and building one from its fields must decode to the same fields.
#include <cstddef>
#include <cstdint>

#include "fuzz_check.h"
#include "protocol/messages.h"

using namespace sotto;
using namespace sotto::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView input(data, size);
  auto m = PreKeySignalMessage::decode(input);
  if (!m) return 0;
  fuzz::require(m->version == kMessageVersion && m->message.version == kMessageVersion,
                "decoded a message of another version");
  fuzz::require(fuzz::same_bytes(m->serialized, input), "decode did not keep the bytes as sent");
  auto inner = SignalMessage::decode(m->message.serialized);
  fuzz::require(inner.has_value(), "the inner message does not decode on its own");

  const PreKeySignalMessage built =
      PreKeySignalMessage::create(m->registration_id, m->pre_key_id, m->signed_pre_key_id,
                                  m->base_key, m->identity_key, m->message);
  if (built.serialized.size() > kMaxMessageBytes) return 0;
  auto back = PreKeySignalMessage::decode(built.serialized);
  fuzz::require(back.has_value(), "a created message does not decode");
  fuzz::require(back->registration_id == m->registration_id && back->pre_key_id == m->pre_key_id &&
                    back->signed_pre_key_id == m->signed_pre_key_id &&
                    back->base_key == m->base_key && back->identity_key == m->identity_key,
                "a created message decodes to other fields");
  fuzz::require(back->message.serialized == m->message.serialized,
                "a created message carries other inner bytes");
  return 0;
}
