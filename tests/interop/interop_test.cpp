// Sotto against the reference implementation, libsignal-protocol-c 2.3.3, in both directions:
// every scenario runs once with Sotto initiating and once with the reference initiating.
#include <gtest/gtest.h>

#include <signal_protocol.h>

#include <algorithm>
#include <memory>
#include <random>

#include "interop_util.h"
#include "protocol/fingerprint.h"
#include "protocol/session.h"

namespace sotto::testing {
namespace {

using protocol::Error;

enum class Kind { ok, duplicate, too_far, untrusted, invalid };

struct Outcome {
  Kind kind = Kind::invalid;
  std::string text;
  std::string detail;
};

// One participant of a 1:1 conversation, whichever implementation is behind it.
class Side {
 public:
  virtual ~Side() = default;
  virtual std::string label() const = 0;
  virtual ref::RefBundle bundle(bool with_one_time_pre_key) = 0;
  virtual Outcome start(const ref::RefBundle& peer_bundle) = 0;
  virtual ref::RefCiphertext send(std::string_view text) = 0;
  virtual Outcome receive(const ref::RefCiphertext& message) = 0;
  virtual ref::Bytes session_bytes() = 0;
  virtual ref::Bytes identity() = 0;
  // How this implementation reports a counter beyond the forward-jump limit: Sotto says so; the
  // reference reports SG_ERR_INVALID_MESSAGE, as it does for any undecryptable message.
  virtual Kind too_far_kind() const = 0;
};

class SottoSide final : public Side {
 public:
  SottoSide(std::string name, std::uint64_t seed, std::string peer)
      : party_(std::move(name), 1, seed), peer_{std::move(peer), protocol::DeviceId(1)} {}
  std::string label() const override { return "sotto"; }
  ref::RefBundle bundle(bool otk) override { return to_ref(party_.bundle(otk)); }
  Outcome start(const ref::RefBundle& b) override {
    auto s = party_.stores();
    auto r = protocol::process_pre_key_bundle(peer_, from_ref(b), s, party_.rng, party_.clock);
    return r ? Outcome{Kind::ok, {}, {}} : fail(r.error());
  }
  ref::RefCiphertext send(std::string_view text) override {
    auto c = party_.encrypt(peer_, text);
    if (!c) throw std::runtime_error(std::string("sotto encrypt: ") + std::string(to_string(c.error())));
    return to_ref(*c);
  }
  Outcome receive(const ref::RefCiphertext& m) override {
    auto r = party_.decrypt(peer_, from_ref(m));
    return r ? Outcome{Kind::ok, *r, {}} : fail(r.error());
  }
  ref::Bytes session_bytes() override { return party_.sessions.raw(peer_).value_or(ref::Bytes{}); }
  ref::Bytes identity() override {
    auto s = party_.identity.public_key.serialize();
    return {s.begin(), s.end()};
  }
  Kind too_far_kind() const override { return Kind::too_far; }
  Party& party() { return party_; }

 private:
  static Outcome fail(Error e) {
    Kind k = e == Error::duplicate_message    ? Kind::duplicate
             : e == Error::too_far_ahead      ? Kind::too_far
             : e == Error::untrusted_identity ? Kind::untrusted
                                              : Kind::invalid;
    return {k, {}, std::string(to_string(e))};
  }
  Party party_;
  protocol::Address peer_;
};

class RefSide final : public Side {
 public:
  RefSide(std::string name, std::string peer) : party_(std::move(name), 1), peer_(std::move(peer)) {}
  std::string label() const override { return "libsignal-c"; }
  ref::RefBundle bundle(bool otk) override { return party_.bundle(otk); }
  Outcome start(const ref::RefBundle& b) override { return from_code(party_.process_bundle(peer_, 1, b), {}); }
  ref::RefCiphertext send(std::string_view text) override { return party_.encrypt(peer_, 1, bytes_of(text)); }
  Outcome receive(const ref::RefCiphertext& m) override {
    auto r = party_.decrypt(peer_, 1, m);
    return from_code(r.error, string_of(r.plaintext));
  }
  ref::Bytes session_bytes() override { return party_.session_record_bytes(peer_, 1); }
  ref::Bytes identity() override { return party_.identity_public(); }
  Kind too_far_kind() const override { return Kind::invalid; }
  ref::RefParty& party() { return party_; }

 private:
  static Outcome from_code(int code, std::string text) {
    if (code == 0) return {Kind::ok, std::move(text), {}};
    Kind k = code == SG_ERR_DUPLICATE_MESSAGE    ? Kind::duplicate
             : code == SG_ERR_UNTRUSTED_IDENTITY ? Kind::untrusted
                                                 : Kind::invalid;
    return {k, {}, ref::ref_error_name(code)};
  }
  ref::RefParty party_;
  std::string peer_;
};

// Parameter: true when Sotto initiates.
class Interop : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    sotto_ = std::make_unique<SottoSide>("alice", 4242, "bob");
    ref_ = std::make_unique<RefSide>("bob", "alice");
    if (GetParam()) {
      initiator_ = sotto_.get();
      responder_ = ref_.get();
    } else {
      initiator_ = ref_.get();
      responder_ = sotto_.get();
    }
  }

  void establish(bool with_one_time_pre_key = true) {
    auto started = initiator_->start(responder_->bundle(with_one_time_pre_key));
    ASSERT_EQ(started.kind, Kind::ok) << started.detail;
    exchange(*initiator_, *responder_, "hello from the initiator");
    exchange(*responder_, *initiator_, "hello from the responder");
  }

  void exchange(Side& from, Side& to, const std::string& text) {
    auto got = to.receive(from.send(text));
    ASSERT_EQ(got.kind, Kind::ok) << from.label() << " -> " << to.label() << ": " << got.detail;
    ASSERT_EQ(got.text, text);
  }

  std::unique_ptr<SottoSide> sotto_;
  std::unique_ptr<RefSide> ref_;
  Side* initiator_ = nullptr;
  Side* responder_ = nullptr;
};

std::string direction_name(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "SottoInitiates" : "ReferenceInitiates";
}

TEST_P(Interop, SessionFromBundleWithOneTimePreKey) {
  establish(true);
  for (int i = 0; i < 5; ++i) {
    exchange(*initiator_, *responder_, "i" + std::to_string(i));
    exchange(*responder_, *initiator_, "r" + std::to_string(i));
  }
}

TEST_P(Interop, SessionFromBundleWithoutOneTimePreKey) {
  establish(false);
  for (int i = 0; i < 5; ++i) {
    exchange(*initiator_, *responder_, "i" + std::to_string(i));
    exchange(*responder_, *initiator_, "r" + std::to_string(i));
  }
}

TEST_P(Interop, InitiatorKeepsSendingPreKeyMessagesUntilAnswered) {
  auto started = initiator_->start(responder_->bundle(true));
  ASSERT_EQ(started.kind, Kind::ok);
  for (int i = 0; i < 3; ++i) {
    auto m = initiator_->send("unanswered " + std::to_string(i));
    EXPECT_EQ(m.type, 3);
    auto got = responder_->receive(m);
    ASSERT_EQ(got.kind, Kind::ok) << got.detail;
  }
  exchange(*responder_, *initiator_, "answer");
  EXPECT_EQ(initiator_->send("plain now").type, 2);
}

TEST_P(Interop, TwoHundredMessagesInRandomBursts) {
  establish();
  std::mt19937 gen(GetParam() ? 1 : 2);
  int sent = 0;
  while (sent < 200) {
    const bool forward = gen() % 2 == 0;
    Side& from = forward ? *initiator_ : *responder_;
    Side& to = forward ? *responder_ : *initiator_;
    const int burst = 1 + static_cast<int>(gen() % 8);
    // A burst is sent whole before any of it is delivered.
    std::vector<std::pair<std::string, ref::RefCiphertext>> inflight;
    for (int i = 0; i < burst && sent < 200; ++i, ++sent) {
      std::string text = from.label() + " #" + std::to_string(sent);
      inflight.emplace_back(text, from.send(text));
    }
    for (auto& [text, m] : inflight) {
      auto got = to.receive(m);
      ASSERT_EQ(got.kind, Kind::ok) << got.detail;
      ASSERT_EQ(got.text, text);
    }
  }
}

TEST_P(Interop, OutOfOrderAcrossRatchetStepsAndGapsUpToTheLimit) {
  establish();
  // Three batches separated by replies (each reply forces a DH ratchet step), shuffled.
  std::vector<std::pair<std::string, ref::RefCiphertext>> held;
  for (int batch = 0; batch < 3; ++batch) {
    for (int i = 0; i < 6; ++i) {
      std::string text = "b" + std::to_string(batch) + "m" + std::to_string(i);
      held.emplace_back(text, initiator_->send(text));
    }
    exchange(*responder_, *initiator_, "reply " + std::to_string(batch));
  }
  std::mt19937 gen(5);
  std::shuffle(held.begin(), held.end(), gen);
  for (auto& [text, m] : held) {
    auto got = responder_->receive(m);
    ASSERT_EQ(got.kind, Kind::ok) << got.detail;
    EXPECT_EQ(got.text, text);
  }
  // A gap of exactly the limit: the receiver's chain is at 0 for the new ratchet key, the last
  // of 2001 messages has counter 2000.
  exchange(*responder_, *initiator_, "new chain please");
  std::vector<ref::RefCiphertext> many;
  for (int i = 0; i <= 2000; ++i) many.push_back(initiator_->send("gap " + std::to_string(i)));
  auto last = responder_->receive(many.back());
  ASSERT_EQ(last.kind, Kind::ok) << last.detail;
  EXPECT_EQ(last.text, "gap 2000");
  for (int i : {1999, 0, 1000, 7}) {
    auto got = responder_->receive(many[static_cast<std::size_t>(i)]);
    ASSERT_EQ(got.kind, Kind::ok) << got.detail;
    EXPECT_EQ(got.text, "gap " + std::to_string(i));
  }
}

TEST_P(Interop, MessageBeyondTheLimitIsRejectedWithSessionUnchanged) {
  establish();
  exchange(*responder_, *initiator_, "new chain please");
  std::vector<ref::RefCiphertext> many;
  for (int i = 0; i <= 2001; ++i) many.push_back(initiator_->send("m" + std::to_string(i)));
  const auto before = responder_->session_bytes();
  auto beyond = responder_->receive(many[2001]);
  EXPECT_EQ(beyond.kind, responder_->too_far_kind()) << beyond.detail;
  EXPECT_EQ(responder_->session_bytes(), before);
  auto ok = responder_->receive(many[2000]);
  ASSERT_EQ(ok.kind, Kind::ok) << ok.detail;
  auto now_in_reach = responder_->receive(many[2001]);
  EXPECT_EQ(now_in_reach.kind, Kind::ok) << now_in_reach.detail;
}

TEST_P(Interop, DuplicateIsRejected) {
  auto started = initiator_->start(responder_->bundle(true));
  ASSERT_EQ(started.kind, Kind::ok);
  auto first = initiator_->send("pre-key message");
  ASSERT_EQ(first.type, 3);
  ASSERT_EQ(responder_->receive(first).kind, Kind::ok);
  EXPECT_EQ(responder_->receive(first).kind, Kind::duplicate);
  exchange(*responder_, *initiator_, "answer");
  auto m = initiator_->send("signal message");
  ASSERT_EQ(m.type, 2);
  ASSERT_EQ(responder_->receive(m).kind, Kind::ok);
  EXPECT_EQ(responder_->receive(m).kind, Kind::duplicate);
}

TEST_P(Interop, EveryBitFlipIsRejectedWithSessionUnchanged) {
  establish();
  for (Side* receiver : {responder_, initiator_}) {
    Side* sender = receiver == responder_ ? initiator_ : responder_;
    auto m = sender->send("tamper with me");
    ASSERT_EQ(m.type, 2);
    const auto before = receiver->session_bytes();
    for (std::size_t bit = 0; bit < m.bytes.size() * 8; ++bit) {
      auto bad = m;
      bad.bytes[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
      auto got = receiver->receive(bad);
      ASSERT_NE(got.kind, Kind::ok) << receiver->label() << " accepted a flip of bit " << bit;
      ASSERT_EQ(receiver->session_bytes(), before) << receiver->label() << " bit " << bit;
    }
    auto good = receiver->receive(m);
    ASSERT_EQ(good.kind, Kind::ok) << good.detail;
    EXPECT_EQ(good.text, "tamper with me");
  }
}

TEST_P(Interop, IdentityChangeIsReported) {
  establish();
  // The responder re-installs: same account name, new identity key.
  const ref::Bytes old_identity = responder_->identity();
  if (GetParam()) {
    ref_ = std::make_unique<RefSide>("bob", "alice");
    responder_ = ref_.get();
  } else {
    sotto_ = std::make_unique<SottoSide>("alice", 777, "bob");
    responder_ = sotto_.get();
  }
  ASSERT_NE(responder_->identity(), old_identity);
  // Outbound: the initiator fetches the new bundle and must refuse it.
  auto outbound = initiator_->start(responder_->bundle(true));
  EXPECT_EQ(outbound.kind, Kind::untrusted) << outbound.detail;
  // Inbound: the re-installed side writes first; the initiator refuses its new identity.
  auto started = responder_->start(initiator_->bundle(true));
  ASSERT_EQ(started.kind, Kind::ok) << started.detail;
  auto inbound = initiator_->receive(responder_->send("new phone, who dis"));
  EXPECT_EQ(inbound.kind, Kind::untrusted) << inbound.detail;
}

TEST_P(Interop, SafetyNumbersMatch) {
  const auto sotto_identity = *protocol::PublicKey::decode(sotto_->identity());
  const auto ref_identity = *protocol::PublicKey::decode(ref_->identity());
  for (int version : {0, 1}) {
    auto ours = protocol::compute_fingerprint("alice", sotto_identity, "bob", ref_identity, 5200,
                                              static_cast<std::uint32_t>(version));
    ASSERT_TRUE(ours);
    const std::string theirs =
        ref_->party().displayable_fingerprint("bob", "alice", sotto_->identity(), 5200, version);
    EXPECT_EQ(ours->displayable, theirs);
    EXPECT_EQ(ours->displayable.size(), 60u);
    // Scannable: byte-identical to the reference's from the same point of view, and each side
    // accepts the other's scan.
    auto ours_from_bob = protocol::compute_fingerprint("bob", ref_identity, "alice", sotto_identity,
                                                       5200, static_cast<std::uint32_t>(version));
    const auto ref_scannable =
        ref_->party().scannable_fingerprint("bob", "alice", sotto_->identity(), 5200, version);
    EXPECT_EQ(ours_from_bob->scannable, ref_scannable);
    EXPECT_EQ(ref_->party().compare_scannable("bob", "alice", sotto_->identity(), ours->scannable,
                                              5200, version),
              1);
    EXPECT_EQ(protocol::compare_scannable(ours->scannable, ref_scannable), true);
  }
}

INSTANTIATE_TEST_SUITE_P(BothDirections, Interop, ::testing::Values(true, false), direction_name);

}  // namespace
}  // namespace sotto::testing
