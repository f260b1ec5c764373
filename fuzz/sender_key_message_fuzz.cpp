// SenderKeyMessage::decode on untrusted bytes. A message that decodes must keep the bytes as
// sent, and one built from its fields must decode to the same fields and verify.
#include <cstddef>
#include <cstdint>

#include "crypto/signature.h"
#include "fuzz_check.h"
#include "protocol/messages.h"

using namespace sotto;
using namespace sotto::protocol;

namespace {

struct Signer {
  crypto::DeterministicRng rng{2};
  KeyPair key = KeyPair::generate(rng);
  crypto::EdwardsPublicBytes edwards = crypto::curve25519_edwards_public(key.private_key);
};

Signer& signer() {
  static Signer* const s = new Signer;
  return *s;
}

}  // namespace

// Builds the fixed state before fuzzing starts, so its coverage is not credited to an input.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  (void)signer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView input(data, size);
  auto m = SenderKeyMessage::decode(input);
  if (!m) return 0;
  fuzz::require(m->version == kMessageVersion, "decoded a message of another version");
  fuzz::require(fuzz::same_bytes(m->serialized, input), "decode did not keep the bytes as sent");
  (void)m->verify_signature(signer().key.public_key);

  const SenderKeyMessage built =
      SenderKeyMessage::create(m->key_id, m->iteration, m->ciphertext, signer().key.private_key,
                               signer().edwards, signer().rng);
  if (built.serialized.size() > kMaxMessageBytes) return 0;
  auto back = SenderKeyMessage::decode(built.serialized);
  fuzz::require(back.has_value(), "a created message does not decode");
  fuzz::require(back->key_id == m->key_id && back->iteration == m->iteration &&
                    back->ciphertext == m->ciphertext,
                "a created message decodes to other fields");
  fuzz::require(back->verify_signature(signer().key.public_key).has_value(),
                "a created message does not verify");
  return 0;
}
