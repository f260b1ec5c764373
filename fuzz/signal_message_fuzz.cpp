// SignalMessage::decode on untrusted bytes. A message that decodes must keep the bytes as sent,
// and building a message from its fields must give one that decodes to the same fields and
// verifies under the key it was built with.
#include <cstddef>
#include <cstdint>

#include "fuzz_check.h"
#include "protocol/messages.h"

using namespace sotto;
using namespace sotto::protocol;

namespace {

struct Keys {
  crypto::Secret<32> mac_key;
  PublicKey sender;
  PublicKey receiver;
};

const Keys& keys() {
  static const Keys* const k = [] {
    crypto::DeterministicRng rng(1);
    auto* out = new Keys{rng.secret<32>(), KeyPair::generate(rng).public_key,
                         KeyPair::generate(rng).public_key};
    return out;
  }();
  return *k;
}

}  // namespace

// Builds the fixed state before fuzzing starts, so its coverage is not credited to an input.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  (void)keys();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView input(data, size);
  auto m = SignalMessage::decode(input);
  if (!m) return 0;
  fuzz::require(m->version == kMessageVersion, "decoded a message of another version");
  fuzz::require(fuzz::same_bytes(m->serialized, input), "decode did not keep the bytes as sent");
  (void)m->verify_mac(keys().sender, keys().receiver, keys().mac_key);

  const SignalMessage built = SignalMessage::create(m->ratchet_key, m->counter,
                                                    m->previous_counter, m->ciphertext,
                                                    keys().mac_key, keys().sender, keys().receiver);
  // Absent optional fields are written out, so the canonical form can be a few bytes longer.
  if (built.serialized.size() > kMaxMessageBytes) return 0;
  auto back = SignalMessage::decode(built.serialized);
  fuzz::require(back.has_value(), "a created message does not decode");
  fuzz::require(back->ratchet_key == m->ratchet_key && back->counter == m->counter &&
                    back->previous_counter == m->previous_counter &&
                    back->ciphertext == m->ciphertext,
                "a created message decodes to other fields");
  fuzz::require(back->verify_mac(keys().sender, keys().receiver, keys().mac_key),
                "a created message does not verify");
  return 0;
}
