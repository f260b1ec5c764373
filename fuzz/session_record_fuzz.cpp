// The storage codecs of session and sender key records, on untrusted bytes (a store that was
// corrupted or tampered with). Every input is tried as both record kinds. A record that decodes
// must re-encode to bytes that decode and re-encode identically; and the record-level operations
// run on it must keep their contract: encrypt works whenever there is a current state, decrypt of
// a genuine held message either yields its plaintext or leaves the record exactly as it was.
// The seeds are the fixture's stored records, so mutations stay close to states that can decrypt
// the fixture's messages (fixture.h).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fixture.h"
#include "fuzz_check.h"
#include "protocol/sender_keys.h"
#include "protocol/session.h"
#include "protocol/session_state.h"

using namespace sotto;
using namespace sotto::protocol;

namespace {

struct Held {
  SignalMessage message;
  std::string plaintext;
};

// Every message bob has not decrypted yet, decoded once.
const std::vector<Held>& held_messages() {
  static const std::vector<Held>* const held = [] {
    auto* out = new std::vector<Held>;
    for (const fuzz::Genuine& g : fuzz::conversation().messages) {
      if (g.delivered) continue;
      auto m = SignalMessage::decode(g.inner);
      fuzz::require(m.has_value(), "a fixture message does not decode");
      out->push_back({std::move(*m), g.plaintext});
    }
    return out;
  }();
  return *held;
}

void check_session_record(ByteView input) {
  auto record = SessionRecord::decode(input);
  if (!record) return;
  const crypto::SecretBuffer encoded = record->encode();
  auto again = SessionRecord::decode(encoded.view());
  fuzz::require(again.has_value(), "an encoded session record does not decode");
  fuzz::require(again->encode() == encoded, "a session record re-encodes differently");
  fuzz::require(record->clone().encode() == encoded, "a cloned session record encodes differently");

  if (record->has_current()) {
    SessionRecord copy = record->clone();
    auto sent = encrypt(copy, as_bytes("fuzz"));
    fuzz::require(sent.has_value(), "encrypt failed on a record with a current state");
    const bool decodes = sent->type == MessageType::pre_key
                             ? PreKeySignalMessage::decode(sent->serialized).has_value()
                             : SignalMessage::decode(sent->serialized).has_value();
    fuzz::require(decodes, "encrypt produced a message that does not decode");
  }

  for (const Held& h : held_messages()) {
    SessionRecord copy = record->clone();
    crypto::DeterministicRng rng(3);
    auto plaintext = decrypt(copy, h.message, rng, fuzz::kFixtureNow);
    if (plaintext) {
      // The MAC verified, so the message keys were the sender's: the plaintext is too.
      fuzz::require(std::string(plaintext->plaintext.view().begin(),
                                plaintext->plaintext.view().end()) == h.plaintext,
                    "an authenticated message decrypted to another plaintext");
    } else {
      fuzz::require(copy.encode() == encoded, "a failed decrypt changed the session record");
    }
  }
}

void check_sender_key_record(ByteView input) {
  auto record = SenderKeyRecord::decode(input);
  if (!record) return;
  const crypto::SecretBuffer encoded = record->encode();
  auto again = SenderKeyRecord::decode(encoded.view());
  fuzz::require(again.has_value(), "an encoded sender key record does not decode");
  fuzz::require(again->encode() == encoded, "a sender key record re-encodes differently");
  fuzz::require(record->clone().encode() == encoded,
                "a cloned sender key record encodes differently");

  if (!record->empty() && record->newest().signing_private) {
    SenderKeyRecord copy = record->clone();
    crypto::DeterministicRng rng(4);
    auto sent = group_encrypt(copy, as_bytes("fuzz"), rng);
    fuzz::require(sent.has_value(), "group_encrypt failed on a record with a signing key");
    fuzz::require(SenderKeyMessage::decode(*sent).has_value(),
                  "group_encrypt produced a message that does not decode");
  }

  // Sender key messages are signed but carry no MAC over the plaintext, so a mutated chain key
  // can "succeed" with garbage (valid padding by chance); only failures are checked.
  for (const fuzz::GenuineGroup& g : fuzz::conversation().group_messages) {
    SenderKeyRecord copy = record->clone();
    if (!group_decrypt(copy, g.serialized, fuzz::kFixtureNow)) {
      fuzz::require(copy.encode() == encoded, "a failed group decrypt changed the record");
    }
  }
}

}  // namespace

// Builds the fixed state before fuzzing starts, so its coverage is not credited to an input.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  (void)held_messages();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView input(data, size);
  check_session_record(input);
  check_sender_key_record(input);
  return 0;
}
