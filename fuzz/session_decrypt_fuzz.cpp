// Decryption on a live session. Each input starts from a fresh copy of bob's baseline state in the
// fixture conversation (fixture.h): a current session with alice, an archived one, unused
// one-time prekeys, and messages from alice that bob has or has not seen yet.
//
// The first byte picks what the input is (kMode*): a SignalMessage or a PreKeySignalMessage from
// alice, a genuine message XORed with the input (so that well-formed messages reach the MAC
// check), or a second message after a genuine one was delivered; one bit makes bob trust every
// identity key, so that messages with another identity get past the trust check. Checked for
// every input:
//  - a failed decrypt leaves bob's stored record, prekeys and recorded identity as they were;
//  - a successful one returns the plaintext of a genuine message alice sent (nothing else can
//    pass the MAC), never of one bob has already decrypted (no replays), and leaves as alice's
//    recorded identity the one her session was built with (the outer identity key of a
//    PreKeySignalMessage is not under the MAC).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fixture.h"
#include "fuzz_check.h"
#include "protocol/messages.h"
#include "protocol/session.h"

using namespace sotto;
using namespace sotto::protocol;

namespace {

// Low two bits of the first byte.
constexpr std::uint8_t kModeSignal = 0;         // rest: a SignalMessage
constexpr std::uint8_t kModePreKey = 1;         // rest: a PreKeySignalMessage
constexpr std::uint8_t kModeMutateGenuine = 2;  // byte 1: which genuine message; rest: XOR mask
constexpr std::uint8_t kModeAfterGenuine = 3;   // byte 1: genuine message to deliver first;
                                                // rest: the next message
// Higher bits of the first byte.
constexpr std::uint8_t kAfterGenuineAsPreKey =
    4;                                           // in mode 3: the next one is a PreKeySignalMessage
constexpr std::uint8_t kTrustEveryIdentity = 8;  // bob's identity store uses TrustPolicy::always

struct Bob {
  fuzz::Receiver receiver;
  std::vector<bool> consumed;  // per genuine message: bob has decrypted it

  Bob() {
    for (const auto& g : fuzz::conversation().messages) consumed.push_back(g.delivered);
  }

  tl::expected<Decrypted, Error> decrypt(bool pre_key, ByteView message) {
    auto stores = receiver.stores();
    const Address& alice = fuzz::conversation().alice;
    return pre_key
               ? decrypt_pre_key_message(alice, message, stores, receiver.rng(), receiver.clock())
               : decrypt_signal_message(alice, message, stores, receiver.rng(), receiver.clock());
  }

  // Decrypts and checks the invariants above.
  void receive(bool pre_key, ByteView message) {
    const Address& alice = fuzz::conversation().alice;
    const std::optional<Bytes> record_before = receiver.sessions().raw(alice);
    const std::size_t pre_keys_before = receiver.pre_keys().size();
    const auto identity_before = receiver.identities().load_identity(alice);

    auto plaintext = decrypt(pre_key, message);
    if (!plaintext) {
      fuzz::require(receiver.sessions().raw(alice) == record_before,
                    "a failed decrypt changed the stored session");
      fuzz::require(receiver.pre_keys().size() == pre_keys_before,
                    "a failed decrypt removed a prekey");
      fuzz::require(receiver.identities().load_identity(alice) == identity_before,
                    "a failed decrypt changed the recorded identity");
      return;
    }
    Bytes inner(message.begin(), message.end());
    if (pre_key) {
      auto outer = PreKeySignalMessage::decode(message);
      fuzz::require(outer.has_value(), "decrypted a prekey message that does not decode");
      inner = outer->message.serialized;
    }
    const int index = fuzz::find_genuine(inner);
    fuzz::require(index >= 0, "accepted a message alice never sent");
    const auto i = static_cast<std::size_t>(index);
    const fuzz::Genuine& g = fuzz::conversation().messages[i];
    fuzz::require(std::string(plaintext->plaintext.view().begin(),
                              plaintext->plaintext.view().end()) == g.plaintext,
                  "a genuine message decrypted to another plaintext");
    fuzz::require(!consumed[i], "accepted a replay of a message already decrypted");
    consumed[i] = true;

    auto record = SessionRecord::decode(receiver.sessions().raw(alice).value_or(Bytes{}));
    fuzz::require(record.has_value() && record->has_current(), "no session after a decrypt");
    const auto identity = receiver.identities().load_identity(alice);
    fuzz::require(identity.has_value() && identity->has_value() &&
                      **identity == record->current().remote_identity,
                  "the recorded identity is not the one the session was built with");
  }
};

}  // namespace

// Builds the fixed state before fuzzing starts, so its coverage is not credited to an input.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  (void)fuzz::conversation();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const auto& messages = fuzz::conversation().messages;
  const std::uint8_t mode = data[0] & 3;
  const ByteView rest(data + 1, size - 1);
  Bob bob;
  if ((data[0] & kTrustEveryIdentity) != 0) {
    bob.receiver.identities().set_policy(TrustPolicy::always);
  }

  switch (mode) {
    case kModeSignal:
      bob.receive(false, rest);
      break;
    case kModePreKey:
      bob.receive(true, rest);
      break;
    case kModeMutateGenuine: {
      if (rest.empty()) return 0;
      const fuzz::Genuine& g = messages[rest[0] % messages.size()];
      const ByteView mask = rest.subspan(1);
      Bytes mutated = g.serialized;
      for (std::size_t i = 0; i < mask.size(); ++i) {
        if (i < mutated.size()) {
          mutated[i] ^= mask[i];
        } else {
          mutated.push_back(mask[i]);
        }
      }
      bob.receive(g.type == MessageType::pre_key, mutated);
      break;
    }
    case kModeAfterGenuine: {
      if (rest.empty()) return 0;
      const std::size_t first = rest[0] % messages.size();
      const fuzz::Genuine& g = messages[first];
      const bool decrypted = bob.decrypt(g.type == MessageType::pre_key, g.serialized).has_value();
      fuzz::require(decrypted != g.delivered, "a fixture message no longer behaves as recorded");
      bob.consumed[first] = true;
      bob.receive((data[0] & kAfterGenuineAsPreKey) != 0, rest.subspan(1));
      break;
    }
    default:
      break;
  }
  return 0;
}
