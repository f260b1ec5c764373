// In-process demonstration of the protocol core: two parties set up a session from a prekey
// bundle, exchange messages both ways (some delivered out of order), a three-member Sender Key
// group talks, and both sides print the same safety number. Every byte that would cross the
// network is encoded and decoded as it would be on the wire.
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "crypto/rng.h"
#include "protocol/bundle.h"
#include "protocol/fingerprint.h"
#include "protocol/in_memory_stores.h"
#include "protocol/sender_keys.h"
#include "protocol/session.h"

namespace {

using namespace sotto;
using namespace sotto::protocol;

class SystemClock final : public Clock {
 public:
  std::uint64_t now_seconds() const override {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  }
};

const SystemClock kClock;

struct Participant {
  explicit Participant(std::string n)
      : name(std::move(n)),
        identity(KeyPair::generate(crypto::system_rng())),
        registration_id(generate_registration_id(crypto::system_rng())),
        identities(identity.clone(), registration_id),
        signed_pre_key(generate_signed_pre_key(crypto::system_rng(), identity, SignedPreKeyId(1),
                                               kClock.now_seconds())) {
    for (auto& pk : generate_pre_keys(crypto::system_rng(), PreKeyId(1), 10)) {
      check(pre_keys.save_pre_key(pk));
    }
    check(signed_pre_keys.save_signed_pre_key(signed_pre_key));
  }

  Address address() const { return {name, DeviceId(1)}; }
  SessionStores stores() { return {identities, sessions, pre_keys, signed_pre_keys}; }

  // What the server would hand out: the encoded bundle with the next one-time prekey.
  Bytes published_bundle() {
    PreKeyBundle b;
    b.registration_id = registration_id;
    b.device_id = DeviceId(1);
    auto pk = *pre_keys.load_pre_key(PreKeyId(next_pre_key++));
    b.pre_key_id = pk->id;
    b.pre_key = pk->key_pair.public_key;
    b.signed_pre_key_id = signed_pre_key.id;
    b.signed_pre_key = signed_pre_key.key_pair.public_key;
    b.signed_pre_key_signature = signed_pre_key.signature;
    b.identity_key = identity.public_key;
    return b.encode();
  }

  template <typename T>
  static void check(const tl::expected<T, Error>& r) {
    if (!r) throw std::runtime_error(std::string(to_string(r.error())));
  }

  std::string name;
  IdentityKeyPair identity;
  RegistrationId registration_id;
  InMemoryIdentityKeyStore identities;
  InMemorySessionStore sessions;
  InMemoryPreKeyStore pre_keys;
  InMemorySignedPreKeyStore signed_pre_keys;
  InMemorySenderKeyStore sender_keys;
  SignedPreKeyRecord signed_pre_key;
  std::uint32_t next_pre_key = 1;
};

void start_session(Participant& from, Participant& to) {
  auto bundle = PreKeyBundle::decode(to.published_bundle());
  Participant::check(bundle);
  auto s = from.stores();
  Participant::check(process_pre_key_bundle(to.address(), *bundle, s, crypto::system_rng(), kClock));
  std::printf("  %s fetched %s's prekey bundle (signature verified) and started a session\n",
              from.name.c_str(), to.name.c_str());
}

CiphertextMessage send(Participant& from, Participant& to, const std::string& text) {
  auto s = from.stores();
  auto c = encrypt(to.address(), as_bytes(text), s);
  Participant::check(c);
  return *c;
}

std::string receive(Participant& at, Participant& from, const CiphertextMessage& m) {
  auto s = at.stores();
  auto p = m.type == MessageType::pre_key
               ? decrypt_pre_key_message(from.address(), m.serialized, s, crypto::system_rng(), kClock)
               : decrypt_signal_message(from.address(), m.serialized, s, crypto::system_rng(), kClock);
  Participant::check(p);
  return {p->plaintext.view().begin(), p->plaintext.view().end()};
}

void deliver(Participant& at, Participant& from, const CiphertextMessage& m) {
  const std::string text = receive(at, from, m);
  std::printf("  %-5s <- %-5s [%s, %3zu bytes] \"%s\"\n", at.name.c_str(), from.name.c_str(),
              m.type == MessageType::pre_key ? "PreKeySignalMessage" : "SignalMessage      ",
              m.serialized.size(), text.c_str());
}

void one_to_one(Participant& alice, Participant& bob) {
  std::printf("\n== 1:1 session (X3DH + Double Ratchet, Signal v3 wire format) ==\n");
  start_session(alice, bob);
  auto m1 = send(alice, bob, "Hi Bob, this is Alice.");
  auto m2 = send(alice, bob, "Are you free tonight?");
  auto m3 = send(alice, bob, "(this one overtook the others)");
  std::printf("  alice sent three messages; the network delivers them out of order: 3, 1, 2\n");
  deliver(bob, alice, m3);
  deliver(bob, alice, m1);
  deliver(bob, alice, m2);
  deliver(alice, bob, send(bob, alice, "Hi Alice! Yes, at eight?"));
  deliver(bob, alice, send(alice, bob, "Eight it is."));
  auto r1 = send(bob, alice, "See you.");
  auto r2 = send(bob, alice, "Bring the map.");
  std::printf("  bob sent two; they arrive reversed\n");
  deliver(alice, bob, r2);
  deliver(alice, bob, r1);
  try {
    receive(alice, bob, r1);
  } catch (const std::exception& e) {
    std::printf("  a replayed copy of bob's message is refused: %s\n", e.what());
  }
}

void group(Participant& alice, Participant& bob, Participant& carol) {
  std::printf("\n== Sender Key group of three ==\n");
  start_session(alice, carol);
  start_session(bob, carol);
  // Everyone answers once so every pair has a two-way session.
  receive(carol, alice, send(alice, carol, "hello carol"));
  receive(alice, carol, send(carol, alice, "hello alice"));
  receive(carol, bob, send(bob, carol, "hello carol"));
  receive(bob, carol, send(carol, bob, "hello bob"));

  const std::string group_id = "weekend-trip";
  std::vector<Participant*> members = {&alice, &bob, &carol};
  for (Participant* sender : members) {
    auto skdm = create_sender_key_distribution({group_id, sender->address()}, sender->sender_keys,
                                               crypto::system_rng());
    Participant::check(skdm);
    for (Participant* member : members) {
      if (member == sender) continue;
      // The distribution message travels inside the pairwise session.
      auto wrapped = send(*sender, *member, std::string(skdm->begin(), skdm->end()));
      const std::string opened = receive(*member, *sender, wrapped);
      Participant::check(process_sender_key_distribution({group_id, sender->address()},
                                                         as_bytes(opened), member->sender_keys));
    }
    std::printf("  %s distributed a sender key to the other two through pairwise sessions\n",
                sender->name.c_str());
  }
  const std::vector<std::pair<Participant*, std::string>> lines = {
      {&alice, "Who's bringing the tent?"}, {&carol, "I can."}, {&bob, "I'll bring food."}};
  for (const auto& [sender, text] : lines) {
    auto m = group_encrypt({group_id, sender->address()}, as_bytes(text), sender->sender_keys,
                           crypto::system_rng());
    Participant::check(m);
    std::printf("  %s -> group [SenderKeyMessage, %zu bytes, encrypted once]\n",
                sender->name.c_str(), m->size());
    for (Participant* member : members) {
      if (member == sender) continue;
      auto p = group_decrypt({group_id, sender->address()}, *m, member->sender_keys,
                             kClock.now_seconds());
      Participant::check(p);
      std::printf("      %-5s reads \"%s\"\n", member->name.c_str(),
                  std::string(p->view().begin(), p->view().end()).c_str());
    }
  }
}

void safety_numbers(Participant& alice, Participant& bob) {
  std::printf("\n== Safety number ==\n");
  auto a = compute_fingerprint(alice.name, alice.identity.public_key, bob.name, bob.identity.public_key);
  auto b = compute_fingerprint(bob.name, bob.identity.public_key, alice.name, alice.identity.public_key);
  Participant::check(a);
  Participant::check(b);
  auto groups = [](const std::string& digits) {
    std::string out;
    for (std::size_t i = 0; i < digits.size(); i += 5) {
      if (i != 0) out += (i % 20 == 0) ? "\n                   " : " ";
      out += digits.substr(i, 5);
    }
    return out;
  };
  std::printf("  alice sees:        %s\n", groups(a->displayable).c_str());
  std::printf("  bob sees:          %s\n", groups(b->displayable).c_str());
  auto scanned = compare_scannable(a->scannable, b->scannable);
  std::printf("  same 60 digits: %s; bob scanning alice's QR code: %s\n",
              a->displayable == b->displayable ? "yes" : "NO",
              scanned && *scanned ? "match" : "MISMATCH");
  if (a->displayable != b->displayable || !scanned || !*scanned) {
    throw std::runtime_error("safety numbers differ");
  }
}

}  // namespace

int main() {
  try {
    std::printf("Sotto protocol core demo: everything below runs in this process; randomness from\n"
                "libsodium, primitives from libsodium and OpenSSL.\n");
    Participant alice("alice"), bob("bob"), carol("carol");
    one_to_one(alice, bob);
    group(alice, bob, carol);
    safety_numbers(alice, bob);
    std::printf("\ndemo finished\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo failed: %s\n", e.what());
    return 1;
  }
}
