// A Sender Key group of three in which one member is the reference implementation. The
// distribution messages travel inside pairwise sessions, as they must in a real group.
#include <gtest/gtest.h>

#include <signal_protocol.h>

#include <optional>
#include <random>

#include "interop_util.h"
#include "protocol/sender_keys.h"
#include "protocol/session.h"

namespace sotto::testing {
namespace {

using protocol::Error;
using protocol::SenderKeyName;

constexpr const char* kGroup = "family";

// Parameter: true when a Sotto member creates and sends first, false when the reference does.
class GroupInterop : public ::testing::TestWithParam<bool> {
 protected:
  Party alice{"alice", 1, 31};
  Party carol{"carol", 1, 33};
  ref::RefParty bob{"bob", 1};

  SenderKeyName name(const Party& p) const { return {kGroup, p.address()}; }
  SenderKeyName bob_name() const { return {kGroup, {"bob", protocol::DeviceId(1)}}; }

  // Pairwise sessions alice<->bob and carol<->bob (Sotto initiates one, the reference the other).
  void pair_up() {
    auto s = alice.stores();
    ASSERT_TRUE(protocol::process_pre_key_bundle({"bob", protocol::DeviceId(1)}, from_ref(bob.bundle(true)), s,
                                                 alice.rng, alice.clock));
    ASSERT_EQ(bob.process_bundle("carol", 1, to_ref(carol.bundle(true))), 0);
    // Warm both sessions so that the distributions ride on established sessions both ways.
    via_session_to_bob(alice, bytes_of("hi"));
    via_session_from_bob(carol, bytes_of("hi"));
  }

  // Sends `payload` from a Sotto party to bob through the pairwise session, returns bob's copy.
  ref::Bytes via_session_to_bob(Party& from, const ref::Bytes& payload) {
    auto c = from.encrypt({"bob", protocol::DeviceId(1)}, std::string(payload.begin(), payload.end()));
    EXPECT_TRUE(c);
    auto r = bob.decrypt(from.name, 1, to_ref(*c));
    EXPECT_EQ(r.error, 0) << ref::ref_error_name(r.error);
    return r.plaintext;
  }
  ref::Bytes via_session_from_bob(Party& to, const ref::Bytes& payload) {
    auto c = bob.encrypt(to.name, 1, payload);
    auto r = to.decrypt({"bob", protocol::DeviceId(1)}, from_ref(c));
    EXPECT_TRUE(r) << (r ? "" : to_string(r.error()));
    return r ? bytes_of(*r) : ref::Bytes{};
  }

  void distribute_all() {
    // Sotto members' distributions: to each other directly-stored, to bob through sessions.
    for (Party* p : {&alice, &carol}) {
      auto skdm = protocol::create_sender_key_distribution(name(*p), p->sender_keys, p->rng);
      ASSERT_TRUE(skdm);
      Party* other = p == &alice ? &carol : &alice;
      ASSERT_TRUE(protocol::process_sender_key_distribution(name(*p), *skdm, other->sender_keys));
      const auto at_bob = via_session_to_bob(*p, *skdm);
      ASSERT_EQ(bob.process_sender_key_distribution(kGroup, p->name, 1, at_bob), 0);
    }
    const auto bob_skdm = bob.create_sender_key_distribution(kGroup);
    for (Party* p : {&alice, &carol}) {
      const auto at_p = via_session_from_bob(*p, bob_skdm);
      ASSERT_TRUE(protocol::process_sender_key_distribution(bob_name(), at_p, p->sender_keys));
    }
  }

  std::string sotto_receive(Party& at, const SenderKeyName& from, const ref::Bytes& m,
                            std::optional<Error>* err = nullptr) {
    auto r = protocol::group_decrypt(from, m, at.sender_keys, at.clock.now_seconds());
    if (!r) {
      if (err) *err = r.error();
      return "<" + std::string(to_string(r.error())) + ">";
    }
    return std::string(r->view().begin(), r->view().end());
  }
};

TEST_P(GroupInterop, ThreeMembersOneOfThemTheReference) {
  pair_up();
  distribute_all();

  std::mt19937 gen(GetParam() ? 11 : 12);
  for (int i = 0; i < 60; ++i) {
    const int who = GetParam() ? i % 3 : (i + 2) % 3;  // 2 = bob first when the reference leads
    const std::string text = "group message " + std::to_string(i);
    if (who == 2) {
      const auto m = bob.group_encrypt(kGroup, bytes_of(text));
      EXPECT_EQ(sotto_receive(alice, bob_name(), m), text);
      EXPECT_EQ(sotto_receive(carol, bob_name(), m), text);
    } else {
      Party& from = who == 0 ? alice : carol;
      Party& other = who == 0 ? carol : alice;
      auto m = protocol::group_encrypt(name(from), as_bytes(text), from.sender_keys, from.rng);
      ASSERT_TRUE(m);
      auto at_bob = bob.group_decrypt(kGroup, from.name, 1, *m);
      EXPECT_EQ(at_bob.error, 0) << ref::ref_error_name(at_bob.error);
      EXPECT_EQ(string_of(at_bob.plaintext), text);
      EXPECT_EQ(sotto_receive(other, name(from), *m), text);
    }
  }
}

TEST_P(GroupInterop, OutOfOrderDuplicatesAndLimitAcrossImplementations) {
  pair_up();
  distribute_all();
  if (GetParam()) {
    // Sotto sends, the reference receives.
    std::vector<Bytes> ms;
    for (int i = 0; i <= 2001; ++i) {
      ms.push_back(*protocol::group_encrypt(name(alice), as_bytes("m" + std::to_string(i)),
                                            alice.sender_keys, alice.rng));
    }
    EXPECT_EQ(bob.group_decrypt(kGroup, "alice", 1, ms[2001]).error, SG_ERR_INVALID_MESSAGE);
    EXPECT_EQ(string_of(bob.group_decrypt(kGroup, "alice", 1, ms[2000]).plaintext), "m2000");
    EXPECT_EQ(string_of(bob.group_decrypt(kGroup, "alice", 1, ms[17]).plaintext), "m17");
    EXPECT_EQ(bob.group_decrypt(kGroup, "alice", 1, ms[17]).error, SG_ERR_DUPLICATE_MESSAGE);
    EXPECT_EQ(string_of(bob.group_decrypt(kGroup, "alice", 1, ms[2001]).plaintext), "m2001");
  } else {
    // The reference sends, Sotto receives.
    std::vector<ref::Bytes> ms;
    for (int i = 0; i <= 2001; ++i) ms.push_back(bob.group_encrypt(kGroup, bytes_of("m" + std::to_string(i))));
    std::optional<Error> err;
    sotto_receive(alice, bob_name(), ms[2001], &err);
    EXPECT_EQ(err, Error::too_far_ahead);
    EXPECT_EQ(sotto_receive(alice, bob_name(), ms[2000]), "m2000");
    EXPECT_EQ(sotto_receive(alice, bob_name(), ms[17]), "m17");
    sotto_receive(alice, bob_name(), ms[17], &err);
    EXPECT_EQ(err, Error::duplicate_message);
    EXPECT_EQ(sotto_receive(alice, bob_name(), ms[2001]), "m2001");
  }
}

TEST_P(GroupInterop, TamperedGroupMessageIsRejected) {
  pair_up();
  distribute_all();
  if (GetParam()) {
    auto m = *protocol::group_encrypt(name(alice), as_bytes("signed"), alice.sender_keys, alice.rng);
    for (std::size_t i = 0; i < m.size(); ++i) {
      auto bad = m;
      bad[i] ^= 0x10;
      EXPECT_NE(bob.group_decrypt(kGroup, "alice", 1, bad).error, 0) << "byte " << i;
    }
    EXPECT_EQ(string_of(bob.group_decrypt(kGroup, "alice", 1, m).plaintext), "signed");
  } else {
    auto m = bob.group_encrypt(kGroup, bytes_of("signed"));
    for (std::size_t i = 0; i < m.size(); ++i) {
      auto bad = m;
      bad[i] ^= 0x10;
      std::optional<Error> err;
      sotto_receive(alice, bob_name(), bad, &err);
      EXPECT_TRUE(err.has_value()) << "byte " << i;
    }
    EXPECT_EQ(sotto_receive(alice, bob_name(), m), "signed");
  }
}

INSTANTIATE_TEST_SUITE_P(BothDirections, GroupInterop, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "SottoLeads" : "ReferenceLeads";
                         });

}  // namespace
}  // namespace sotto::testing
