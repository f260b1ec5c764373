// A deterministic conversation for the fuzz targets and the corpus generator: alice runs X3DH
// with bob four times (two one-time-prekey runs bob has answered or seen, one unseen run with a
// one-time prekey, one unseen run without), they exchange messages in both directions, and some of
// alice's messages are held back from bob. Bob's state after delivery is the baseline every fuzz
// input starts from: a current session, an archived one with a skipped message key, unused
// one-time prekeys, and genuine messages that still decrypt (or are replays) against it.
// The same seeds give the same bytes, so corpora generated from it stay meaningful.
//
// Built once per process (conversation()); read-only afterwards. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "crypto/bytes.h"
#include "crypto/rng.h"
#include "protocol/clock.h"
#include "protocol/in_memory_stores.h"
#include "protocol/session.h"

namespace sotto::fuzz {

// The clock every fixture operation and every fuzz input runs at.
inline constexpr std::uint64_t kFixtureNow = 1'700'000'000;

// A message alice sent, as it went over the wire.
struct Genuine {
  protocol::MessageType type;
  Bytes serialized;      // as sent
  Bytes inner;           // the SignalMessage under the MAC (serialized itself for type signal)
  std::string plaintext;
  bool delivered;        // bob has already decrypted it, so feeding it again is a replay
};

// A group message from alice's sender key, and whether bob has decrypted it.
struct GenuineGroup {
  Bytes serialized;
  std::string plaintext;
  bool delivered;
};

// Fresh stores holding a copy of bob's baseline state, for one fuzz input.
struct Conversation;

class Receiver {
 public:
  Receiver();  // from conversation()
  explicit Receiver(const Conversation& c);
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  protocol::SessionStores stores() { return {identities_, sessions_, pre_keys_, signed_pre_keys_}; }
  protocol::InMemorySessionStore& sessions() { return sessions_; }
  protocol::InMemoryPreKeyStore& pre_keys() { return pre_keys_; }
  protocol::InMemoryIdentityKeyStore& identities() { return identities_; }
  crypto::Rng& rng() { return rng_; }
  const protocol::Clock& clock() const { return clock_; }

 private:
  protocol::InMemoryIdentityKeyStore identities_;
  protocol::InMemorySessionStore sessions_;
  protocol::InMemoryPreKeyStore pre_keys_;
  protocol::InMemorySignedPreKeyStore signed_pre_keys_;
  crypto::DeterministicRng rng_;
  protocol::ManualClock clock_;
};

struct Conversation {
  protocol::Address alice;
  protocol::Address bob;
  protocol::IdentityKeyPair bob_identity;
  protocol::RegistrationId bob_registration_id;
  protocol::PublicKey alice_identity;
  protocol::SignedPreKeyRecord bob_signed_pre_key;
  std::vector<protocol::PreKeyRecord> bob_pre_keys;  // the ones bob still holds

  // Bundles as the server would hand them out (bob's with and without a one-time prekey, alice's).
  std::vector<Bytes> bundles;

  std::vector<Genuine> messages;        // everything alice sent bob, in sending order
  Bytes bob_record;                     // bob's stored session record for alice
  Bytes alice_record;                   // alice's stored session record for bob

  std::vector<GenuineGroup> group_messages;  // alice's group messages, in sending order
  Bytes sender_key_distribution;             // alice's distribution message
  Bytes bob_sender_key_record;               // bob's record of alice's sender key
  Bytes alice_sender_key_record;             // alice's own (signing) record
  protocol::SenderKeyName group_sender;      // whose key bob's record holds
};

// Builds the conversation on first use; aborts if the protocol no longer behaves as the fixture
// expects (a held message that does not decrypt, a replay that does).
const Conversation& conversation();

// The index of a genuine message whose inner SignalMessage is exactly `inner`, or -1.
int find_genuine(ByteView inner);

}  // namespace sotto::fuzz
