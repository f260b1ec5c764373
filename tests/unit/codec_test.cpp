// Decoders of untrusted bytes: every malformed input gets a clear error, and good input round
// trips. The fuzz targets (fuzz/) explore the same decoders at random.
#include <gtest/gtest.h>

#include "protocol/bundle.h"
#include "protocol/limits.h"
#include "protocol/messages.h"
#include "protocol/sender_keys.h"
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
  EXPECT_EQ(SignalMessage::decode(frame(0x43, signal_body(), 8)).error(),
            Error::unsupported_version);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body(false), 8)).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body(true, false), 8)).error(),
            Error::malformed);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, signal_body(true, true, false), 8)).error(),
            Error::malformed);
  EXPECT_EQ(SignalMessage::decode(frame(0x33, "\xff\xff\xff", 8)).error(), Error::malformed);
  EXPECT_EQ(SignalMessage::decode(Bytes(kMaxMessageBytes + 1, 0x33)).error(), Error::too_large);
  // An unknown field (number 9) is not silently carried.
  EXPECT_EQ(
      SignalMessage::decode(frame(0x33, signal_body() + std::string("\x48\x01", 2), 8)).error(),
      Error::malformed);
  // A ratchet key that is not 0x05 || 32 bytes.
  wire::signal::SignalMessage m;
  m.set_ratchet_key(std::string(32, 'k'));
  m.set_counter(0);
  m.set_ciphertext("x");
  EXPECT_EQ(SignalMessage::decode(frame(0x33, m.SerializeAsString(), 8)).error(),
            Error::invalid_key);
  // The low nibble is ignored as in the reference; the high nibble is the version.
  EXPECT_TRUE(SignalMessage::decode(frame(0x32, signal_body(), 8)));
}

// SignalMessage uses the allocation-free codec: its bytes must be exactly libprotobuf's (the
// reference serializes the same fields in the same order), and duplicates are refused.
TEST(SignalMessageDecode, SameBytesAsLibprotobufAndNoDuplicates) {
  crypto::DeterministicRng rng(3);
  const KeyPair ratchet = KeyPair::generate(rng), a = KeyPair::generate(rng),
                b = KeyPair::generate(rng);
  crypto::Secret<32> mac_key = rng.secret<32>();
  for (std::uint32_t counter : {0u, 1u, 127u, 128u, 300000u, 0xFFFFFFFFu}) {
    auto m = SignalMessage::create(ratchet.public_key, counter, counter / 2, Bytes(48, 0x42),
                                   mac_key, a.public_key, b.public_key);
    wire::signal::SignalMessage pb;
    const auto rk = ratchet.public_key.serialize();
    pb.set_ratchet_key(std::string(rk.begin(), rk.end()));
    pb.set_counter(counter);
    pb.set_previous_counter(counter / 2);
    pb.set_ciphertext(std::string(48, 0x42));
    const std::string body = pb.SerializeAsString();
    EXPECT_EQ(Bytes(m.serialized.begin() + 1, m.serialized.end() - 8),
              Bytes(body.begin(), body.end()));
    auto back = SignalMessage::decode(m.serialized);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->counter, counter);
    EXPECT_TRUE(back->verify_mac(a.public_key, b.public_key, mac_key));
  }
  // A second counter field (protobuf would take the last one) is refused.
  EXPECT_EQ(
      SignalMessage::decode(frame(0x33, signal_body() + std::string("\x10\x05", 2), 8)).error(),
      Error::malformed);
  // A counter that does not fit 32 bits is refused.
  EXPECT_EQ(
      SignalMessage::decode(frame(0x33, std::string("\x10\x80\x80\x80\x80\x10", 6), 8)).error(),
      Error::malformed);
}

// SenderKeyMessage uses the allocation-free codec too: libprotobuf's bytes, duplicates refused.
TEST(SenderKeyMessageDecode, SameBytesAsLibprotobufAndNoDuplicates) {
  crypto::DeterministicRng rng(4);
  const KeyPair signing = KeyPair::generate(rng);
  const auto edwards = crypto::curve25519_edwards_public(signing.private_key);
  for (std::uint32_t n : {0u, 1u, 127u, 128u, 300000u, 0x7FFFFFFFu, 0xFFFFFFFFu}) {
    const Bytes ct(n % 3 == 0 ? 16 : 48, static_cast<std::uint8_t>(n));
    auto m = SenderKeyMessage::create(SenderKeyId(n), n / 3, ct, signing.private_key, edwards, rng);
    wire::signal::SenderKeyMessage pb;
    pb.set_id(n);
    pb.set_iteration(n / 3);
    pb.set_ciphertext(std::string(ct.begin(), ct.end()));
    const std::string body = pb.SerializeAsString();
    ASSERT_EQ(m.serialized.size(), 1 + body.size() + kSignatureSize);
    EXPECT_EQ(m.serialized[0], kVersionByte);
    EXPECT_EQ(Bytes(m.serialized.begin() + 1, m.serialized.end() - kSignatureSize),
              Bytes(body.begin(), body.end()));
    auto back = SenderKeyMessage::decode(m.serialized);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->key_id, SenderKeyId(n));
    EXPECT_EQ(back->iteration, n / 3);
    EXPECT_EQ(back->ciphertext, ct);
    EXPECT_EQ(back->serialized, m.serialized);
    EXPECT_TRUE(back->verify_signature(signing.public_key));
  }
  wire::signal::SenderKeyMessage pb;
  pb.set_id(1);
  pb.set_iteration(2);
  pb.set_ciphertext(std::string(16, 'c'));
  const std::string body = pb.SerializeAsString();
  EXPECT_TRUE(SenderKeyMessage::decode(frame(0x33, body, kSignatureSize)));
  EXPECT_EQ(SenderKeyMessage::decode(frame(0x23, body, kSignatureSize)).error(),
            Error::legacy_version);
  // Each field is required.
  for (int drop = 1; drop <= 3; ++drop) {
    wire::signal::SenderKeyMessage partial = pb;
    if (drop == 1) partial.clear_id();
    if (drop == 2) partial.clear_iteration();
    if (drop == 3) partial.clear_ciphertext();
    EXPECT_EQ(
        SenderKeyMessage::decode(frame(0x33, partial.SerializeAsString(), kSignatureSize)).error(),
        Error::malformed)
        << "without field " << drop;
  }
  // A second iteration field (protobuf would take the last one) is refused; so is an unknown
  // field, and an iteration that does not fit 32 bits.
  EXPECT_EQ(SenderKeyMessage::decode(frame(0x33, body + std::string("\x10\x05", 2), kSignatureSize))
                .error(),
            Error::malformed);
  EXPECT_EQ(SenderKeyMessage::decode(frame(0x33, body + std::string("\x48\x01", 2), kSignatureSize))
                .error(),
            Error::malformed);
  EXPECT_EQ(
      SenderKeyMessage::decode(
          frame(0x33, std::string("\x08\x01\x10\x80\x80\x80\x80\x10\x1a\x00", 10), kSignatureSize))
          .error(),
      Error::malformed);
  EXPECT_EQ(SenderKeyMessage::decode(frame(0x33, "\xff\xff\xff", kSignatureSize)).error(),
            Error::malformed);
}

TEST(PreKeySignalMessageDecode, RejectsMalformedInput) {
  EXPECT_EQ(PreKeySignalMessage::decode({}).error(), Error::malformed);
  wire::signal::PreKeySignalMessage m;
  EXPECT_EQ(PreKeySignalMessage::decode(frame(0x33, m.SerializeAsString())).error(),
            Error::malformed);
  Bytes k(33, 9);
  k[0] = 0x05;
  m.set_signed_pre_key_id(1);
  m.set_base_key(std::string(k.begin(), k.end()));
  m.set_identity_key(std::string(k.begin(), k.end()));
  m.set_message("\x33 not a signal message");
  EXPECT_EQ(PreKeySignalMessage::decode(frame(0x33, m.SerializeAsString())).error(),
            Error::malformed);
  Bytes inner = frame(0x33, signal_body(), 8);
  m.set_message(std::string(inner.begin(), inner.end()));
  EXPECT_TRUE(PreKeySignalMessage::decode(frame(0x33, m.SerializeAsString())));
  EXPECT_EQ(PreKeySignalMessage::decode(frame(0x23, m.SerializeAsString())).error(),
            Error::legacy_version);
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
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(bob.decrypt(alice.address(), *alice.encrypt(bob.address(), "x")));
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
  EXPECT_EQ(
      (*bob.sessions.load_session(alice.address()))->current().receiver_chains[0].skipped.size(),
      1u);
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
    EXPECT_EQ(Bytes(again.view().begin(), again.view().end()),
              Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)));
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

// A sender key record as libprotobuf writes it: an own state (signing private key and its Edwards
// form) and a peer's state with skipped keys, one of them without created_at.
wire::storage::SenderKeyRecord sample_sender_key_record() {
  wire::storage::SenderKeyRecord pb;
  pb.set_format(1);
  auto* own = pb.add_states();
  own->set_key_id(7);
  own->mutable_chain_key()->set_index(5);
  own->mutable_chain_key()->set_key(std::string(32, 'c'));
  own->set_signing_public(std::string(32, 'p'));
  own->set_signing_private(std::string(32, 's'));
  own->set_signing_edwards(std::string(32, 'e'));
  auto* peer = pb.add_states();
  peer->set_key_id(0x7FFFFFFF);
  peer->mutable_chain_key()->set_index(300000);
  peer->mutable_chain_key()->set_key(std::string(32, 'k'));
  peer->set_signing_public(std::string(32, 'q'));
  for (std::uint32_t i : {3u, 128u, 299999u}) {
    auto* k = peer->add_skipped();
    k->set_iteration(i);
    k->set_seed(std::string(32, static_cast<char>('a' + i % 7)));
    if (i != 128) k->set_created_at(1ull << 40 | i);
  }
  return pb;
}

// SenderKeyRecord has a hand codec like the session record's: records written by the libprotobuf
// codec it replaced decode to the same state, and it writes exactly libprotobuf's bytes.
TEST(SenderKeyRecordCodec, ByteCompatibleWithLibprotobuf) {
  const wire::storage::SenderKeyRecord pb = sample_sender_key_record();
  const std::string theirs = pb.SerializeAsString();
  auto rec = SenderKeyRecord::decode(as_bytes(theirs));
  ASSERT_TRUE(rec);
  SenderKeyState* own = rec->find(SenderKeyId(7));
  ASSERT_NE(own, nullptr);
  EXPECT_EQ(own->chain_key.index, 5u);
  EXPECT_TRUE(own->chain_key.key == crypto::Secret<32>(as_bytes(std::string(32, 'c'))));
  ASSERT_TRUE(own->signing_private && own->signing_edwards);
  EXPECT_TRUE(*own->signing_private == crypto::Secret<32>(as_bytes(std::string(32, 's'))));
  EXPECT_EQ((*own->signing_edwards)[31], 'e');
  EXPECT_TRUE(own->skipped.empty());
  SenderKeyState* peer = rec->find(SenderKeyId(0x7FFFFFFF));
  ASSERT_NE(peer, nullptr);
  EXPECT_FALSE(peer->signing_private || peer->signing_edwards);
  EXPECT_EQ(peer->signing_public.view()[0], 'q');
  ASSERT_EQ(peer->skipped.size(), 3u);
  EXPECT_EQ(peer->skipped[1].counter, 128u);
  EXPECT_EQ(peer->skipped[1].created_at, 0u);
  EXPECT_EQ(peer->skipped[2].created_at, (1ull << 40) | 299999u);
  EXPECT_EQ(rec->newest().key_id, SenderKeyId(7));

  // Re-encoded: libprotobuf's bytes, except that created_at is now always written (as 0).
  wire::storage::SenderKeyRecord expected = pb;
  expected.mutable_states(1)->mutable_skipped(1)->set_created_at(0);
  const std::string expected_bytes = expected.SerializeAsString();
  const auto ours = rec->encode();
  EXPECT_EQ(Bytes(ours.view().begin(), ours.view().end()),
            Bytes(expected_bytes.begin(), expected_bytes.end()));
  wire::storage::SenderKeyRecord parsed;
  ASSERT_TRUE(parsed.ParseFromArray(ours.data(), static_cast<int>(ours.size())));
  EXPECT_TRUE(parsed.unknown_fields().empty());
  EXPECT_EQ(parsed.SerializeAsString(), expected_bytes);
}

TEST(SenderKeyRecordCodec, RejectsDuplicatesUnknownFieldsBadSizesAndTruncation) {
  const auto encode = [](const wire::storage::SenderKeyRecord& r) {
    const std::string s = r.SerializeAsString();
    return Bytes(s.begin(), s.end());
  };
  const Bytes good = encode(sample_sender_key_record());
  ASSERT_TRUE(SenderKeyRecord::decode(good));
  std::size_t accepted = 0;
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    auto r = SenderKeyRecord::decode(ByteView(good).first(cut));
    if (!r) continue;
    ++accepted;
    const auto again = r->encode();
    EXPECT_EQ(Bytes(again.view().begin(), again.view().end()),
              Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)));
  }
  EXPECT_LE(accepted, 2u);  // the bare format field, and format + the first state

  Bytes twice_format = {0x08, 0x01};
  twice_format.insert(twice_format.end(), good.begin(), good.end());
  EXPECT_EQ(SenderKeyRecord::decode(twice_format).error(), Error::malformed);
  Bytes unknown = good;
  unknown.insert(unknown.end(), {0xF8, 0x07, 0x01});  // field 127, varint
  EXPECT_EQ(SenderKeyRecord::decode(unknown).error(), Error::malformed);
  EXPECT_EQ(SenderKeyRecord::decode(as_bytes("\x08\x02")).error(), Error::malformed);  // format 2
  EXPECT_EQ(SenderKeyRecord::decode({}).error(), Error::malformed);                    // no format

  // Inside a state: an unknown field, a duplicate, missing or mis-sized keys, too many keys.
  const auto state_with = [&](auto&& edit) {
    wire::storage::SenderKeyRecord r = sample_sender_key_record();
    edit(*r.mutable_states(1));
    return SenderKeyRecord::decode(encode(r));
  };
  EXPECT_TRUE(state_with([](auto&) {}));
  EXPECT_FALSE(state_with([](auto& s) { s.set_signing_public(std::string(31, 'q')); }));
  EXPECT_FALSE(state_with([](auto& s) { s.clear_signing_public(); }));
  EXPECT_FALSE(state_with([](auto& s) { s.clear_key_id(); }));
  EXPECT_FALSE(state_with([](auto& s) { s.clear_chain_key(); }));
  EXPECT_FALSE(state_with([](auto& s) { s.mutable_chain_key()->clear_index(); }));
  EXPECT_FALSE(state_with([](auto& s) { s.mutable_chain_key()->set_key(std::string(33, 'k')); }));
  EXPECT_FALSE(state_with([](auto& s) { s.set_signing_private(std::string(16, 's')); }));
  EXPECT_FALSE(state_with([](auto& s) { s.set_signing_edwards(std::string(31, 'e')); }));
  EXPECT_FALSE(state_with([](auto& s) { s.mutable_skipped(0)->set_seed(std::string(31, 'x')); }));
  EXPECT_FALSE(state_with([](auto& s) { s.mutable_skipped(0)->clear_iteration(); }));
  EXPECT_FALSE(state_with([](auto& s) {
    s.mutable_unknown_fields()->append("\x48\x01", 2);  // field 9 inside the state
  }));
  EXPECT_FALSE(state_with([](auto& s) {
    s.mutable_unknown_fields()->append("\x08\x07", 2);  // key_id a second time
  }));
  EXPECT_FALSE(state_with([](auto& s) {
    for (std::size_t i = 3; i <= kMaxSenderMessageKeys; ++i) *s.add_skipped() = s.skipped(0);
  }));
  EXPECT_TRUE(state_with([](auto& s) {
    for (std::size_t i = 3; i < kMaxSenderMessageKeys; ++i) *s.add_skipped() = s.skipped(0);
  }));
  wire::storage::SenderKeyRecord six = sample_sender_key_record();
  for (int i = 0; i < 4; ++i) *six.add_states() = six.states(1);
  EXPECT_EQ(SenderKeyRecord::decode(encode(six)).error(), Error::malformed);
  six.mutable_states()->RemoveLast();
  EXPECT_TRUE(SenderKeyRecord::decode(encode(six)));
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
