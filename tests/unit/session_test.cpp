// Sotto-to-Sotto sessions: X3DH setup, the ratchet under reordering, loss and replay, the limits,
// identity changes and state convergence. Interop with the reference is in tests/interop.
#include "protocol/session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "protocol/messages.h"
#include "util/party.h"

namespace sotto::protocol {
namespace {

using sotto::testing::Party;

struct SessionTest : ::testing::Test {
  Party alice{"alice", 1, 101};
  Party bob{"bob", 1, 202};

  void connect(bool with_one_time) {
    auto s = alice.stores();
    ASSERT_TRUE(process_pre_key_bundle(bob.address(), bob.bundle(with_one_time), s, alice.rng,
                                       alice.clock));
  }
  std::string roundtrip(Party& from, Party& to, std::string_view text) {
    auto c = from.encrypt(to.address(), text);
    EXPECT_TRUE(c);
    auto p = to.decrypt(from.address(), *c);
    EXPECT_TRUE(p) << (p ? "" : to_string(p.error()));
    return p ? *p : "";
  }
};

TEST_F(SessionTest, SetupWithOneTimePreKeyConsumesIt) {
  connect(true);
  const std::size_t before = bob.pre_keys.size();
  auto c = alice.encrypt(bob.address(), "hi bob");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->type, MessageType::pre_key);
  EXPECT_EQ(bob.decrypt(alice.address(), *c), "hi bob");
  EXPECT_EQ(bob.pre_keys.size(), before - 1);
  // Until bob answers, alice keeps wrapping messages so bob can build the session from any.
  auto c2 = alice.encrypt(bob.address(), "again");
  EXPECT_EQ(c2->type, MessageType::pre_key);
  EXPECT_EQ(bob.decrypt(alice.address(), *c2), "again");
  EXPECT_EQ(roundtrip(bob, alice, "hello alice"), "hello alice");
  auto c3 = alice.encrypt(bob.address(), "now plain");
  EXPECT_EQ(c3->type, MessageType::signal);
  EXPECT_EQ(bob.decrypt(alice.address(), *c3), "now plain");
}

TEST_F(SessionTest, SetupWithoutOneTimePreKey) {
  connect(false);
  const std::size_t before = bob.pre_keys.size();
  EXPECT_EQ(roundtrip(alice, bob, "no otk"), "no otk");
  EXPECT_EQ(bob.pre_keys.size(), before);
  EXPECT_EQ(roundtrip(bob, alice, "reply"), "reply");
}

TEST_F(SessionTest, ManyMessagesInRandomBurstsBothWays) {
  connect(true);
  std::mt19937 gen(7);
  int sent = 0;
  while (sent < 400) {
    Party& from = gen() % 2 ? alice : bob;
    Party& to = &from == &alice ? bob : alice;
    if (&from == &bob && !bob.sessions.raw(alice.address())) continue;
    const int burst = 1 + static_cast<int>(gen() % 7);
    for (int i = 0; i < burst; ++i, ++sent) {
      const std::string text = "m" + std::to_string(sent);
      ASSERT_EQ(roundtrip(from, to, text), text);
    }
  }
}

TEST_F(SessionTest, OutOfOrderAcrossRatchetSteps) {
  connect(true);
  ASSERT_EQ(roundtrip(alice, bob, "start"), "start");
  std::vector<CiphertextMessage> held;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 5; ++i)
      held.push_back(*alice.encrypt(bob.address(), "a" + std::to_string(round * 5 + i)));
    ASSERT_EQ(roundtrip(bob, alice, "tick"), "tick");  // a DH ratchet step between batches
  }
  std::mt19937 gen(3);
  std::vector<std::size_t> order(held.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), gen);
  for (std::size_t i : order) {
    EXPECT_EQ(bob.decrypt(alice.address(), held[i]), "a" + std::to_string(i));
  }
}

TEST_F(SessionTest, DuplicatesAreRejected) {
  connect(true);
  auto first = *alice.encrypt(bob.address(), "once");
  ASSERT_EQ(bob.decrypt(alice.address(), first), "once");
  EXPECT_EQ(bob.decrypt(alice.address(), first).error(), Error::duplicate_message);
  ASSERT_EQ(roundtrip(bob, alice, "ack"), "ack");
  auto m = *alice.encrypt(bob.address(), "plain");
  ASSERT_EQ(bob.decrypt(alice.address(), m), "plain");
  EXPECT_EQ(bob.decrypt(alice.address(), m).error(), Error::duplicate_message);
}

TEST_F(SessionTest, ForwardJumpLimit) {
  connect(true);
  ASSERT_EQ(roundtrip(alice, bob, "start"), "start");
  ASSERT_EQ(roundtrip(bob, alice, "ack"), "ack");
  std::vector<CiphertextMessage> msgs;
  for (int i = 0; i < 2003; ++i) msgs.push_back(*alice.encrypt(bob.address(), std::to_string(i)));
  const auto before = bob.sessions.raw(alice.address());
  // Alice's messages start a new chain (index 0) at bob: counter 2001 is one beyond the limit.
  EXPECT_EQ(bob.decrypt(alice.address(), msgs[2001]).error(), Error::too_far_ahead);
  EXPECT_EQ(bob.sessions.raw(alice.address()), before);
  // Exactly at the limit is accepted, and the skipped keys serve the earlier messages.
  EXPECT_EQ(bob.decrypt(alice.address(), msgs[2000]), "2000");
  EXPECT_EQ(bob.decrypt(alice.address(), msgs[5]), "5");
  EXPECT_EQ(bob.decrypt(alice.address(), msgs[2002]), "2002");
  EXPECT_EQ(bob.decrypt(alice.address(), msgs[2001]), "2001");
}

TEST_F(SessionTest, EveryBitFlipIsRejectedAndChangesNothing) {
  connect(true);
  ASSERT_EQ(roundtrip(alice, bob, "start"), "start");
  ASSERT_EQ(roundtrip(bob, alice, "ack"), "ack");
  auto m = *alice.encrypt(bob.address(), "integrity");
  ASSERT_EQ(m.type, MessageType::signal);
  const auto before = bob.sessions.raw(alice.address());
  for (std::size_t bit = 0; bit < m.serialized.size() * 8; ++bit) {
    CiphertextMessage bad = m;
    bad.serialized[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    auto r = bob.decrypt(alice.address(), bad);
    ASSERT_FALSE(r) << "bit " << bit;
    ASSERT_EQ(bob.sessions.raw(alice.address()), before) << "bit " << bit;
  }
  EXPECT_EQ(bob.decrypt(alice.address(), m), "integrity");
}

TEST_F(SessionTest, ChangedIdentityIsReportedNotAccepted) {
  connect(true);
  ASSERT_EQ(roundtrip(alice, bob, "start"), "start");
  Party reinstalled("bob", 1, 999);  // same account, new identity key
  auto s = alice.stores();
  auto r =
      process_pre_key_bundle(bob.address(), reinstalled.bundle(true), s, alice.rng, alice.clock);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Error::untrusted_identity);
  // Inbound: the re-installed bob writes first; alice refuses the new identity too.
  auto rs = reinstalled.stores();
  ASSERT_TRUE(process_pre_key_bundle(alice.address(), alice.bundle(true), rs, reinstalled.rng,
                                     reinstalled.clock));
  auto c = *reinstalled.encrypt(alice.address(), "it's me, really");
  EXPECT_EQ(alice.decrypt(bob.address(), c).error(), Error::untrusted_identity);
  // Once the user accepts the new key, the session works.
  alice.identities->set_policy(TrustPolicy::always);
  EXPECT_EQ(alice.decrypt(bob.address(), c), "it's me, really");
  EXPECT_EQ(alice.identities->load_identity(bob.address())->value(),
            reinstalled.identity.public_key);
}

// A message the peer sent before re-installing arrives after the first one from its new key: it
// still decrypts (with the archived state), it says which key authenticated it, and it does not
// make the old state current again, so what we send next goes to the new key.
TEST_F(SessionTest, ALateMessageFromThePeersEarlierKeyDecryptsWithoutRevivingThatKey) {
  connect(true);
  ASSERT_EQ(roundtrip(alice, bob, "start"), "start");
  ASSERT_EQ(roundtrip(bob, alice, "answer"), "answer");
  auto late = *bob.encrypt(alice.address(), "sent before re-installing");

  Party reinstalled("bob", 1, 999);
  auto rs = reinstalled.stores();
  ASSERT_TRUE(process_pre_key_bundle(alice.address(), alice.bundle(true), rs, reinstalled.rng,
                                     reinstalled.clock));
  auto fresh = *reinstalled.encrypt(alice.address(), "from my new key");
  alice.identities->set_policy(TrustPolicy::always);
  auto as = alice.stores();
  auto first = decrypt_pre_key_message(bob.address(), fresh.serialized, as, alice.rng, alice.clock);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->identity, reinstalled.identity.public_key);

  ASSERT_EQ(late.type, MessageType::signal);
  auto old = decrypt_signal_message(bob.address(), late.serialized, as, alice.rng, alice.clock);
  ASSERT_TRUE(old) << to_string(old.error());
  EXPECT_EQ(std::string(old->plaintext.view().begin(), old->plaintext.view().end()),
            "sent before re-installing");
  EXPECT_EQ(old->identity, bob.identity.public_key);

  auto record = alice.sessions.load_session(bob.address());
  ASSERT_TRUE(record && record->has_value());
  EXPECT_EQ((*record)->current().remote_identity, reinstalled.identity.public_key);
  EXPECT_EQ(roundtrip(alice, reinstalled, "to the new key"), "to the new key");
}

TEST_F(SessionTest, SimultaneousInitiationConverges) {
  auto as = alice.stores();
  auto bs = bob.stores();
  ASSERT_TRUE(process_pre_key_bundle(bob.address(), bob.bundle(true), as, alice.rng, alice.clock));
  ASSERT_TRUE(process_pre_key_bundle(alice.address(), alice.bundle(true), bs, bob.rng, bob.clock));
  auto from_alice = *alice.encrypt(bob.address(), "hi from alice");
  auto from_bob = *bob.encrypt(alice.address(), "hi from bob");
  EXPECT_EQ(bob.decrypt(alice.address(), from_alice), "hi from alice");
  EXPECT_EQ(alice.decrypt(bob.address(), from_bob), "hi from bob");
  // Each now holds two states; traffic settles on one pair and keeps working both ways.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(roundtrip(alice, bob, "a" + std::to_string(i)), "a" + std::to_string(i));
    ASSERT_EQ(roundtrip(bob, alice, "b" + std::to_string(i)), "b" + std::to_string(i));
  }
  auto ra = alice.sessions.load_session(bob.address());
  auto rb = bob.sessions.load_session(alice.address());
  EXPECT_EQ((*ra)->current().alice_base_key, (*rb)->current().alice_base_key);
}

TEST_F(SessionTest, SkippedKeysExpire) {
  connect(true);
  ASSERT_EQ(roundtrip(alice, bob, "start"), "start");
  auto late = *alice.encrypt(bob.address(), "late");
  ASSERT_EQ(roundtrip(alice, bob, "on time"), "on time");
  bob.clock.advance(kMaxSkippedKeyAgeSeconds + 1);
  EXPECT_EQ(bob.decrypt(alice.address(), late).error(), Error::duplicate_message);
}

TEST_F(SessionTest, ArchivedStatesAreBounded) {
  for (int i = 0; i < 45; ++i) connect(false);
  auto r = alice.sessions.load_session(bob.address());
  ASSERT_TRUE(r && r->has_value());
  EXPECT_EQ((*r)->previous().size(), kMaxArchivedStates);
  EXPECT_EQ(roundtrip(alice, bob, "latest works"), "latest works");
}

TEST_F(SessionTest, UnknownPreKeyChangesNothing) {
  auto b = bob.bundle(true);
  ASSERT_TRUE(bob.pre_keys.remove_pre_key(*b.pre_key_id));
  auto s = alice.stores();
  ASSERT_TRUE(process_pre_key_bundle(bob.address(), b, s, alice.rng, alice.clock));
  auto c = *alice.encrypt(bob.address(), "x");
  EXPECT_EQ(bob.decrypt(alice.address(), c).error(), Error::unknown_pre_key);
  EXPECT_FALSE(bob.sessions.raw(alice.address()));
  EXPECT_FALSE(bob.identities->load_identity(alice.address())->has_value());
}

TEST_F(SessionTest, BadBundleSignatureIsRejected) {
  auto b = bob.bundle(true);
  b.signed_pre_key_signature[10] ^= 1;
  auto s = alice.stores();
  EXPECT_EQ(process_pre_key_bundle(bob.address(), b, s, alice.rng, alice.clock).error(),
            Error::bad_signature);
  EXPECT_FALSE(alice.sessions.raw(bob.address()));
}

TEST_F(SessionTest, ReplayedInitiationWithSubstitutedIdentityIsRejected) {
  connect(true);
  auto first = *alice.encrypt(bob.address(), "genuine");
  ASSERT_EQ(bob.decrypt(alice.address(), first), "genuine");
  auto second = *alice.encrypt(bob.address(), "second");  // same base key, still unanswered
  auto parsed = PreKeySignalMessage::decode(second.serialized);
  ASSERT_TRUE(parsed);
  Party mallory("mallory", 1, 666);
  auto forged = PreKeySignalMessage::create(parsed->registration_id, parsed->pre_key_id,
                                            parsed->signed_pre_key_id, parsed->base_key,
                                            mallory.identity.public_key, parsed->message);
  bob.identities->set_policy(TrustPolicy::always);  // even a permissive policy must not help
  EXPECT_EQ(bob.decrypt(alice.address(), {MessageType::pre_key, forged.serialized}).error(),
            Error::bad_mac);
  EXPECT_EQ(bob.identities->load_identity(alice.address())->value(), alice.identity.public_key);
  EXPECT_EQ(bob.decrypt(alice.address(), second), "second");
}

TEST_F(SessionTest, NoSessionErrors) {
  EXPECT_EQ(alice.encrypt(bob.address(), "x").error(), Error::no_session);
  connect(true);
  ASSERT_EQ(roundtrip(alice, bob, "start"), "start");
  ASSERT_EQ(roundtrip(bob, alice, "ack"), "ack");
  auto m = *alice.encrypt(bob.address(), "to someone else");
  Party carol("carol", 1, 303);
  EXPECT_EQ(carol.decrypt(alice.address(), m).error(), Error::no_session);
}

}  // namespace
}  // namespace sotto::protocol
