// Decoders of untrusted bytes: every malformed input gets a clear error, and good input round
// trips. The fuzz targets (fuzz/) explore the same decoders at random.
#include <gtest/gtest.h>

#include "protocol/bundle.h"
#include "protocol/messages.h"
#include "protocol/session.h"
#include "signal.pb.h"
#include "storage.pb.h"
#include "util/party.h"
#include "util/test_util.h"

namespace sotto::protocol {
namespace {

using sotto::testing::Party;

Bytes frame(std::uint8_t version, const std::string& body, std::size_t trailer = 0) {
  Bytes out(1 + body.size() + trailer, 0xAB);
  out[0] = version;
  std::copy(body.begin(), body.end(), out.begin() + 1);
  return out;
}

std::string signal_body(bool with_ratchet = true, bool with_counter = true, bool with_ct = true) {
  wire::signal::SignalMessage m;
  if (with_ratchet) {
    Bytes k(33, 7);
    k[0] = 0x05;
    m.set_ratchet_key(std::string(k.begin(), k.end()));
  }
  if (with_counter) m.set_counter(1);
  if (with_ct) m.set_ciphertext(std::string(16, 'c'));
  return m.SerializeAsString();
}

TEST(SignalMessageDecode, RejectsMalformedInput) {
  EXPECT_EQ(SignalMessage::decode({}).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(Bytes(8, 0x33)).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(frame(0x23, signal_body(), 8)).error(), Error::legacy_version);
  EXPECT_EQ(SignalMessage::decode(frame(0x43, signal_body(), 8)).error(), Error::unsupported_version);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body(false), 8)).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body(true, false), 8)).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body(true, true, false), 8)).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, "\xff\xff\xff", 8)).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(Bytes(kMaxMessageBytes + 1, 0x33)).error(), Error::too_large);
  // An unknown field (number 9) is not silently carried.
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body() + std::string("\x48\x01", 2), 8)).error(),
            Error::malformed);
  // A ratchet key that is not 0x05 || 32 bytes.
  wire::signal::SignalMessage m;
  m.set_ratchet_key(std::string(32, 'k'));
  m.set_counter(0);
  m.set_ciphertext("x");
  EXPECT_EQ(SignalMessage::decode(frame(0x33, m.SerializeAsString(), 8)).error(), Error::invalid_key);
  // The low nibble is ignored as in the reference; the high nibble is the version.
  EXPECT_TRUE(SignalMessage::decode(frame(0x32, signal_body(), 8)));
}

// SignalMessage uses the allocation-free codec: its bytes must be exactly libprotobuf's (the
// reference serializes the same fields in the same order), and duplicates are refused.
TEST(SignalMessageDecode, SameBytesAsLibprotobufAndNoDuplicates) {
  crypto::DeterministicRng rng(3);
  const KeyPair ratchet = KeyPair::generate(rng), a = KeyPair::generate(rng), b = KeyPair::generate(rng);
  crypto::Secret<32> mac_key = rng.secret<32>();
  for (std::uint32_t counter : {0u, 1u, 127u, 128u, 300000u, 0xFFFFFFFFu}) {
    auto m = SignalMessage::create(ratchet.public_key, counter, counter / 2, Bytes(48, 0x42), mac_key,
                                   a.public_key, b.public_key);
    wire::signal::SignalMessage pb;
    const auto rk = ratchet.public_key.serialize();
    pb.set_ratchet_key(std::string(rk.begin(), rk.end()));
    pb.set_counter(counter);
    pb.set_previous_counter(counter / 2);
    pb.set_ciphertext(std::string(48, 0x42));
    const std::string body = pb.SerializeAsString();
    EXPECT_EQ(Bytes(m.serialized.begin() + 1, m.serialized.end() - 8), Bytes(body.begin(), body.end()));
    auto back = SignalMessage::decode(m.serialized);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->counter, counter);
    EXPECT_TRUE(back->verify_mac(a.public_key, b.public_key, mac_key));
  }
  // A second counter field (protobuf would take the last one) is refused.
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body() + std::string("\x10\x05", 2), 8)).error(),
            Error::malformed);
  // A counter that does not fit 32 bits is refused.
  EXPECT_EQ(SignalMessage::decode(frame(0x33, std::string("\x10\x80\x80\x80\x80\x10", 6), 8)).error(),
            Error::malformed);
}

TEST(PreKeySignalMessageDecode, RejectsMalformedInput) {
  EXPECT_EQ(PreKeySignalMessage::decode({}).error(), Error::malformed);
  wire::signal::PreKeySignalMessage m;
  EXPECT_EQ(PreKeySignalMessage::decode(frame(0x33, m.SerializeAsString())).error(), Error::malformed);
  Bytes k(33, 9);
  k[0] = 0x05;
  m.set_signed_pre_key_id(1);
  m.set_base_key(std::string(k.begin(), k.end()));
  m.set_identity_key(std::string(k.begin(), k.end()));
  m.set_message("\x33 not a signal message");
  EXPECT_EQ(PreKeySignalMessage::decode(frame(0x33, m.SerializeAsString())).error(), Error::malformed);
  Bytes inner = frame(0x33, signal_body(), 8);
  m.set_message(std::string(inner.begin(), inner.end()));
  EXPECT_TRUE(PreKeySignalMessage::decode(frame(0x33, m.SerializeAsString())));
  EXPECT_EQ(PreKeySignalMessage::decode(frame(0x23, m.SerializeAsString())).error(), Error::legacy_version);
}

TEST(BundleCodec, RoundTripAndErrors) {
  Party bob("bob", 3, 5);
  for (bool otk : {true, false}) {
    auto b = bob.bundle(otk);
    auto back = PreKeyBundle::decode(b.encode());
    ASSERT_TRUE(back);
    EXPECT_EQ(back->encode(), b.encode());
    EXPECT_EQ(back->device_id.value, 3u);
    EXPECT_EQ(back->pre_key.has_value(), otk);
    EXPECT_TRUE(back->verify_signature());
  }
  EXPECT_EQ(PreKeyBundle::decode(as_bytes("\x08")).error(), Error::malformed);
  EXPECT_EQ(PreKeyBundle::decode(Bytes(kMaxBundleBytes + 1)).error(), Error::too_large);
  Bytes enc = bob.bundle(false).encode();
  enc.pop_back();  // truncate the identity key field
  EXPECT_FALSE(PreKeyBundle::decode(enc));
}

TEST(SessionRecordCodec, RoundTripAndRejectsGarbage) {
  Party alice("alice", 1, 1), bob("bob", 1, 2);
  auto s = alice.stores();
  ASSERT_TRUE(process_pre_key_bundle(bob.address(), bob.bundle(true), s, alice.rng, alice.clock));
  auto c = alice.encrypt(bob.address(), "x");
  ASSERT_TRUE(bob.decrypt(alice.address(), *c));
  for (Party* p : {&alice, &bob}) {
    const Address peer = p == &alice ? bob.address() : alice.address();
    auto raw = p->sessions.raw(peer);
    ASSERT_TRUE(raw);
    auto rec = SessionRecord::decode(*raw);
    ASSERT_TRUE(rec);
    auto again = rec->encode();
    EXPECT_EQ(Bytes(again.view().begin(), again.view().end()), *raw);
  }
  EXPECT_EQ(SessionRecord::decode(as_bytes("\x08\x02")).error(), Error::malformed);  // format 2
  EXPECT_EQ(SessionRecord::decode(as_bytes("\xff")).error(), Error::malformed);
  EXPECT_TRUE(SessionRecord::decode({}).error() == Error::malformed);
}

// The hand-written session record codec writes exactly proto/storage.proto's format: libprotobuf
// parses it, and libprotobuf's serialization of it decodes back to the same bytes.
TEST(SessionRecordCodec, ByteCompatibleWithLibprotobuf) {
  Party alice("alice", 1, 21), bob("bob", 1, 22);
  auto s = alice.stores();
  ASSERT_TRUE(process_pre_key_bundle(bob.address(), bob.bundle(true), s, alice.rng, alice.clock));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(bob.decrypt(alice.address(), *alice.encrypt(bob.address(), "x")));
  auto late = alice.encrypt(bob.address(), "skipped");  // leaves a skipped key at bob
  ASSERT_TRUE(bob.decrypt(alice.address(), *alice.encrypt(bob.address(), "y")));
  ASSERT_TRUE(late);
  ASSERT_TRUE(process_pre_key_bundle(bob.address(), bob.bundle(false), s, alice.rng, alice.clock));
  for (Party* p : {&alice, &bob}) {
    const Address peer = p == &alice ? bob.address() : alice.address();
    const Bytes ours = *p->sessions.raw(peer);
    wire::storage::SessionRecord pb;
    ASSERT_TRUE(pb.ParseFromArray(ours.data(), static_cast<int>(ours.size())));
    EXPECT_TRUE(pb.unknown_fields().empty());
    EXPECT_EQ(pb.format(), 1u);
    const std::string theirs = pb.SerializeAsString();
    EXPECT_EQ(Bytes(theirs.begin(), theirs.end()), ours);
    auto back = SessionRecord::decode(as_bytes(theirs));
    ASSERT_TRUE(back);
  }
  EXPECT_EQ((*bob.sessions.load_session(alice.address()))->current().receiver_chains[0].skipped.size(), 1u);
}

TEST(SessionRecordCodec, RejectsDuplicatesUnknownFieldsAndTruncation) {
  Party alice("alice", 1, 23), bob("bob", 1, 24);
  auto s = alice.stores();
  ASSERT_TRUE(process_pre_key_bundle(bob.address(), bob.bundle(true), s, alice.rng, alice.clock));
  const Bytes good = *alice.sessions.raw(bob.address());
  ASSERT_TRUE(SessionRecord::decode(good));
  // A truncated record either fails or ends at a field boundary of the top-level record (then it
  // is a valid shorter record that re-encodes to exactly the prefix).
  std::size_t accepted = 0;
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    auto r = SessionRecord::decode(ByteView(good).first(cut));
    if (!r) continue;
    ++accepted;
    auto again = r->encode();
    EXPECT_EQ(Bytes(again.view().begin(), again.view().end()), Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)));
  }
  EXPECT_LE(accepted, 1u);  // only the bare format field
  Bytes twice_format = {0x08, 0x01};
  twice_format.insert(twice_format.end(), good.begin(), good.end());  // format field twice
  EXPECT_EQ(SessionRecord::decode(twice_format).error(), Error::malformed);
  Bytes unknown = good;
  unknown.insert(unknown.end(), {0xF8, 0x07, 0x01});  // field 127, varint
  EXPECT_EQ(SessionRecord::decode(unknown).error(), Error::malformed);
  Bytes overlong = {0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F};
  EXPECT_EQ(SessionRecord::decode(overlong).error(), Error::malformed);
}

TEST(SenderKeyDistributionDecode, RejectsMalformedInput) {
  wire::signal::SenderKeyDistributionMessage m;
  m.set_id(1);
  m.set_iteration(0);
  m.set_chain_key(std::string(31, 'k'));
  Bytes k(33, 3);
  k[0] = 0x05;
  m.set_signing_key(std::string(k.begin(), k.end()));
  EXPECT_EQ(SenderKeyDistributionMessage::decode(frame(0x33, m.SerializeAsString())).error(),
            Error::malformed);
  m.set_chain_key(std::string(32, 'k'));
  EXPECT_TRUE(SenderKeyDistributionMessage::decode(frame(0x33, m.SerializeAsString())));
  EXPECT_EQ(SenderKeyDistributionMessage::decode(frame(0x43, m.SerializeAsString())).error(),
            Error::unsupported_version);
  EXPECT_EQ(SenderKeyMessage::decode(Bytes(40, 0x33)).error(), Error::malformed);
}

}  // namespace
}  // namespace sotto::protocol
