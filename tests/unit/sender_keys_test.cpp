// Sender Keys among Sotto parties: distribution, order, replay, limits and tampering.
#include "protocol/sender_keys.h"

#include <gtest/gtest.h>

#include "protocol/in_memory_stores.h"
#include "util/party.h"

namespace sotto::protocol {
namespace {

using sotto::testing::Party;

struct GroupTest : ::testing::Test {
  Party alice{"alice", 1, 11}, bob{"bob", 1, 12}, carol{"carol", 1, 13};
  const std::string group = "group-1";
  SenderKeyName name(const Party& p) const { return {group, p.address()}; }

  void distribute(Party& from, std::initializer_list<Party*> to) {
    auto skdm = create_sender_key_distribution(name(from), from.sender_keys, from.rng);
    ASSERT_TRUE(skdm);
    for (Party* p : to)
      ASSERT_TRUE(process_sender_key_distribution(name(from), *skdm, p->sender_keys));
  }
  Bytes send(Party& from, std::string_view text) {
    auto m = group_encrypt(name(from), as_bytes(text), from.sender_keys, from.rng);
    EXPECT_TRUE(m);
    return *m;
  }
  tl::expected<std::string, Error> receive(Party& at, const Party& from, const Bytes& m) {
    auto p = group_decrypt(name(from), m, at.sender_keys, at.clock.now_seconds());
    if (!p) return tl::unexpected(p.error());
    return std::string(p->view().begin(), p->view().end());
  }
};

TEST_F(GroupTest, ThreeMembersTalk) {
  distribute(alice, {&bob, &carol});
  distribute(bob, {&alice, &carol});
  distribute(carol, {&alice, &bob});
  for (int i = 0; i < 20; ++i) {
    Party& from = i % 3 == 0 ? alice : i % 3 == 1 ? bob : carol;
    const auto m = send(from, "msg " + std::to_string(i));
    for (Party* p : {&alice, &bob, &carol}) {
      if (p == &from) continue;
      EXPECT_EQ(receive(*p, from, m), "msg " + std::to_string(i));
    }
  }
}

TEST_F(GroupTest, OutOfOrderDuplicateAndLimit) {
  distribute(alice, {&bob});
  std::vector<Bytes> ms;
  for (int i = 0; i < 2003; ++i) ms.push_back(send(alice, std::to_string(i)));
  EXPECT_EQ(receive(bob, alice, ms[2001]).error(), Error::too_far_ahead);
  EXPECT_EQ(receive(bob, alice, ms[2000]), "2000");
  EXPECT_EQ(receive(bob, alice, ms[3]), "3");
  EXPECT_EQ(receive(bob, alice, ms[3]).error(), Error::duplicate_message);
  EXPECT_EQ(receive(bob, alice, ms[2002]), "2002");
}

TEST_F(GroupTest, TamperedMessageFailsSignature) {
  distribute(alice, {&bob});
  auto m = send(alice, "signed");
  for (std::size_t i = 0; i < m.size(); ++i) {
    Bytes bad = m;
    bad[i] ^= 0x04;
    EXPECT_FALSE(receive(bob, alice, bad)) << "byte " << i;
  }
  EXPECT_EQ(receive(bob, alice, m), "signed");
}

TEST_F(GroupTest, UnknownSenderAndNoOwnState) {
  EXPECT_EQ(group_encrypt(name(alice), as_bytes("x"), alice.sender_keys, alice.rng).error(),
            Error::no_sender_key);
  distribute(alice, {});
  auto m = send(alice, "who?");
  EXPECT_EQ(receive(bob, alice, m).error(), Error::no_sender_key);
}

TEST_F(GroupTest, RepeatedDistributionKeepsAdvancedState) {
  distribute(alice, {&bob});
  auto m0 = send(alice, "zero");
  EXPECT_EQ(receive(bob, alice, m0), "zero");
  // Alice re-sends her (now advanced) distribution; bob keeps his state and still rejects replays.
  distribute(alice, {&bob});
  EXPECT_EQ(receive(bob, alice, m0).error(), Error::duplicate_message);
  EXPECT_EQ(receive(bob, alice, send(alice, "one")), "one");
}

TEST_F(GroupTest, SameKeyIdWithNewSigningKeyReplacesTheState) {
  distribute(alice, {&bob});
  auto skdm = create_sender_key_distribution(name(alice), alice.sender_keys, alice.rng);
  auto parsed = SenderKeyDistributionMessage::decode(*skdm);
  ASSERT_TRUE(parsed);
  KeyPair other = KeyPair::generate(alice.rng);
  auto swapped = SenderKeyDistributionMessage::create(parsed->key_id, parsed->iteration,
                                                      parsed->chain_key, other.public_key);
  ASSERT_TRUE(process_sender_key_distribution(name(alice), swapped.serialized, bob.sender_keys));
  // Alice's real messages are signed with her original key: bob no longer accepts them.
  EXPECT_EQ(receive(bob, alice, send(alice, "x")).error(), Error::bad_signature);
}

TEST_F(GroupTest, RecordRoundTripsThroughStorageForm) {
  distribute(alice, {&bob});
  auto rec = alice.sender_keys.load_sender_key(name(alice));
  ASSERT_TRUE(rec && rec->has_value());
  auto bytes = (*rec)->encode();
  auto back = SenderKeyRecord::decode(bytes.view());
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->encode() == bytes);
  EXPECT_EQ(SenderKeyRecord::decode(as_bytes("garbage")).error(), Error::malformed);
}

}  // namespace
}  // namespace sotto::protocol
