#include "fixture.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "protocol/messages.h"
#include "protocol/sender_keys.h"

namespace sotto::fuzz {
namespace {

using namespace sotto::protocol;

constexpr std::uint64_t kAliceSeed = 0xA11CE;
constexpr std::uint64_t kBobSeed = 0xB0B;
constexpr std::uint64_t kReceiverSeed = 0x5EED;
constexpr std::size_t kPreKeyCount = 6;

[[noreturn]] void fixture_broken(const char* what) {
  std::fprintf(stderr, "fuzz fixture: %s\n", what);
  std::abort();
}

template <typename T>
T must(tl::expected<T, Error> r, const char* what) {
  if (!r) fixture_broken(what);
  return std::move(*r);
}

void must(tl::expected<void, Error> r, const char* what) {
  if (!r) fixture_broken(what);
}

Bytes to_bytes(ByteView v) {
  return {v.begin(), v.end()};
}

// One side of the conversation, with in-memory stores.
struct Side {
  Side(std::string name, std::uint64_t seed)
      : address{std::move(name), DeviceId(1)},
        rng(seed),
        identity(KeyPair::generate(rng)),
        registration_id(generate_registration_id(rng)),
        identities(identity.clone(), registration_id),
        signed_pre_key(generate_signed_pre_key(rng, identity, SignedPreKeyId(1), kFixtureNow)) {
    for (auto& pk : generate_pre_keys(rng, PreKeyId(1), kPreKeyCount)) {
      must(pre_keys.save_pre_key(pk), "save prekey");
    }
    must(signed_pre_keys.save_signed_pre_key(signed_pre_key), "save signed prekey");
  }

  SessionStores stores() { return {identities, sessions, pre_keys, signed_pre_keys}; }

  PreKeyBundle bundle(std::optional<PreKeyId> one_time) {
    PreKeyBundle b;
    b.registration_id = registration_id;
    b.device_id = address.device;
    if (one_time) {
      auto pk = must(pre_keys.load_pre_key(*one_time), "load prekey");
      if (!pk) fixture_broken("bundle prekey missing");
      b.pre_key_id = pk->id;
      b.pre_key = pk->key_pair.public_key;
    }
    b.signed_pre_key_id = signed_pre_key.id;
    b.signed_pre_key = signed_pre_key.key_pair.public_key;
    b.signed_pre_key_signature = signed_pre_key.signature;
    b.identity_key = identity.public_key;
    return b;
  }

  void connect(Side& to, std::optional<PreKeyId> one_time) {
    auto s = stores();
    must(process_pre_key_bundle(to.address, to.bundle(one_time), s, rng, clock), "X3DH");
  }

  CiphertextMessage send(const Side& to, const std::string& text) {
    auto s = stores();
    return must(encrypt(to.address, as_bytes(text), s), "encrypt");
  }

  std::string receive(const Side& from, const CiphertextMessage& m) {
    auto s = stores();
    auto p = m.type == MessageType::pre_key
                 ? decrypt_pre_key_message(from.address, m.serialized, s, rng, clock)
                 : decrypt_signal_message(from.address, m.serialized, s, rng, clock);
    if (!p) fixture_broken("a genuine message did not decrypt");
    return {p->plaintext.view().begin(), p->plaintext.view().end()};
  }

  Address address;
  crypto::DeterministicRng rng;
  ManualClock clock{kFixtureNow};
  IdentityKeyPair identity;
  RegistrationId registration_id;
  InMemoryIdentityKeyStore identities;
  InMemorySessionStore sessions;
  InMemoryPreKeyStore pre_keys;
  InMemorySignedPreKeyStore signed_pre_keys;
  SignedPreKeyRecord signed_pre_key;
};

Bytes inner_of(const CiphertextMessage& m) {
  if (m.type == MessageType::signal) return m.serialized;
  return must(PreKeySignalMessage::decode(m.serialized), "decode own prekey message")
      .message.serialized;
}

std::unique_ptr<Conversation> build() {
  auto c = std::make_unique<Conversation>();
  Side alice("alice", kAliceSeed);
  Side bob("bob", kBobSeed);
  c->alice = alice.address;
  c->bob = bob.address;

  std::vector<CiphertextMessage> sent;
  std::vector<std::string> texts;
  std::vector<bool> delivered;
  auto from_alice = [&](const std::string& text, bool deliver) {
    sent.push_back(alice.send(bob, text));
    texts.push_back(text);
    delivered.push_back(deliver);
    if (deliver && bob.receive(alice, sent.back()) != text) fixture_broken("wrong plaintext");
  };
  auto from_bob = [&](const std::string& text) {
    if (alice.receive(bob, bob.send(alice, text)) != text) fixture_broken("wrong plaintext");
  };

  // Run 1: answered, so it ratchets; bob skips one message and never sees two others.
  c->bundles.push_back(bob.bundle(PreKeyId(1)).encode());
  alice.connect(bob, PreKeyId(1));
  from_alice("run 1: first, with a one-time prekey", true);
  from_alice("run 1: a copy of the initiation bob never got", false);
  from_bob("run 1: reply");
  from_alice("run 1: after the reply", true);
  from_alice("run 1: skipped over", false);
  from_alice("run 1: delivered after a gap", true);
  from_bob("run 1: second reply");
  from_alice("run 1: new ratchet key, held", false);
  // Run 2: alice starts again (a reinstall); bob archives run 1.
  c->bundles.push_back(bob.bundle(PreKeyId(2)).encode());
  alice.connect(bob, PreKeyId(2));
  from_alice("run 2: first", true);
  from_alice("run 2: second, held", false);
  // Runs 3 and 4: initiations bob has not seen, with and without a one-time prekey.
  c->bundles.push_back(bob.bundle(PreKeyId(3)).encode());
  alice.connect(bob, PreKeyId(3));
  from_alice("run 3: unseen, one-time prekey 3", false);
  c->bundles.push_back(bob.bundle(std::nullopt).encode());
  alice.connect(bob, std::nullopt);
  from_alice("run 4: unseen, no one-time prekey", false);
  c->bundles.push_back(alice.bundle(PreKeyId(1)).encode());

  for (std::size_t i = 0; i < sent.size(); ++i) {
    c->messages.push_back(
        Genuine{sent[i].type, sent[i].serialized, inner_of(sent[i]), texts[i], delivered[i]});
  }
  c->bob_identity = bob.identity.clone();
  c->bob_registration_id = bob.registration_id;
  c->alice_identity = alice.identity.public_key;
  c->bob_signed_pre_key = bob.signed_pre_key.clone();
  for (std::uint32_t id = 1; id <= kPreKeyCount; ++id) {
    auto pk = must(bob.pre_keys.load_pre_key(PreKeyId(id)), "load prekey");
    if (pk) c->bob_pre_keys.push_back(std::move(*pk));
  }
  auto bob_record = bob.sessions.raw(alice.address);
  auto alice_record = alice.sessions.raw(bob.address);
  if (!bob_record || !alice_record) fixture_broken("no stored session");
  c->bob_record = std::move(*bob_record);
  c->alice_record = std::move(*alice_record);

  // Sender keys: alice distributes, sends four group messages; bob decrypts the first and third.
  SenderKeyRecord alice_own;
  c->sender_key_distribution = sender_key_distribution(alice_own, alice.rng).serialized;
  SenderKeyRecord bob_view;
  process_sender_key_distribution(
      bob_view, must(SenderKeyDistributionMessage::decode(c->sender_key_distribution), "skdm"));
  for (int i = 0; i < 4; ++i) {
    const std::string text = "group message " + std::to_string(i);
    Bytes m = must(group_encrypt(alice_own, as_bytes(text), alice.rng), "group encrypt");
    const bool deliver = i == 0 || i == 2;
    if (deliver) {
      auto p = must(group_decrypt(bob_view, m, kFixtureNow), "group decrypt");
      if (std::string(p.view().begin(), p.view().end()) != text) fixture_broken("group plaintext");
    }
    c->group_messages.push_back(GenuineGroup{std::move(m), text, deliver});
  }
  c->bob_sender_key_record = to_bytes(bob_view.encode().view());
  c->alice_sender_key_record = to_bytes(alice_own.encode().view());
  c->group_sender = SenderKeyName{"group", alice.address};
  return c;
}

// Every held message decrypts against a fresh copy of bob's baseline, every delivered one fails.
void self_check(const Conversation& c) {
  for (const Genuine& g : c.messages) {
    Receiver r(c);
    auto s = r.stores();
    auto p = g.type == MessageType::pre_key
                 ? decrypt_pre_key_message(c.alice, g.serialized, s, r.rng(), r.clock())
                 : decrypt_signal_message(c.alice, g.serialized, s, r.rng(), r.clock());
    if (g.delivered == p.has_value()) fixture_broken("baseline does not match the messages");
    if (p && std::string(p->plaintext.view().begin(), p->plaintext.view().end()) != g.plaintext) {
      fixture_broken("baseline gives a wrong plaintext");
    }
  }
}

}  // namespace

Receiver::Receiver() : Receiver(conversation()) {}

Receiver::Receiver(const Conversation& c)
    : identities_(c.bob_identity.clone(), c.bob_registration_id),
      rng_(kReceiverSeed),
      clock_(kFixtureNow) {
  must(identities_.save_identity(c.alice, c.alice_identity), "save identity");
  must(sessions_.save_session(c.alice, must(SessionRecord::decode(c.bob_record), "bob record")),
       "save session");
  for (const auto& pk : c.bob_pre_keys) must(pre_keys_.save_pre_key(pk), "save prekey");
  must(signed_pre_keys_.save_signed_pre_key(c.bob_signed_pre_key), "save signed prekey");
}

const Conversation& conversation() {
  // Never destroyed, so fuzz targets may use it from exit handlers.
  static const Conversation* const c = [] {
    std::unique_ptr<Conversation> built = build();
    self_check(*built);
    return built.release();
  }();
  return *c;
}

int find_genuine(ByteView inner) {
  const auto& messages = conversation().messages;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (std::equal(inner.begin(), inner.end(), messages[i].inner.begin(),
                   messages[i].inner.end())) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

}  // namespace sotto::fuzz
