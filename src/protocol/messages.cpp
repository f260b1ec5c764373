#include "protocol/messages.h"

#include <cstring>
#include <string>

#include "crypto/hash.h"
#include "protocol/proto_codec.h"
#include "signal.pb.h"

namespace sotto::protocol {
namespace {

namespace pb = sotto::wire::signal;

std::string to_string_bytes(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
ByteView view_of(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

template <typename Proto>
bool parse_strict(Proto& msg, ByteView bytes) {
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  // Unknown fields are rejected: everything we accept is something we understand.
  return msg.unknown_fields().empty();
}

template <typename Proto>
Bytes frame(std::uint8_t version_byte, const Proto& msg, std::size_t trailer) {
  const std::size_t n = msg.ByteSizeLong();
  Bytes out(1 + n, 0);
  out.reserve(1 + n + trailer);
  out[0] = version_byte;
  msg.SerializeWithCachedSizesToArray(out.data() + 1);
  return out;
}

// Version policy shared by every message: the high nibble is the message version.
tl::expected<std::uint8_t, Error> check_version(std::uint8_t version_byte) {
  const std::uint8_t v = static_cast<std::uint8_t>(version_byte >> 4);
  if (v < kMessageVersion) return tl::unexpected(Error::legacy_version);
  if (v > kMessageVersion) return tl::unexpected(Error::unsupported_version);
  return v;
}

crypto::Secret<32> compute_mac(const crypto::Secret<32>& mac_key, const PublicKey& sender,
                               const PublicKey& receiver, ByteView framed) {
  const auto s = sender.serialize();
  const auto r = receiver.serialize();
  return crypto::hmac_sha256(mac_key.view(), {ByteView(s), ByteView(r), framed});
}

}  // namespace

// SignalMessage is on every message's path, so it is read and written with the allocation-free
// codec (proto_codec.h) rather than libprotobuf; the bytes are the same (tests compare them).
tl::expected<SignalMessage, Error> SignalMessage::decode(ByteView bytes) {
  if (bytes.size() > kMaxMessageBytes) return tl::unexpected(Error::too_large);
  if (bytes.size() < 1 + kMacSize) return tl::unexpected(Error::malformed);
  auto version = check_version(bytes[0]);
  if (!version) return tl::unexpected(version.error());

  detail::ProtoReader r(bytes.subspan(1, bytes.size() - 1 - kMacSize));
  ByteView ratchet, ciphertext;
  std::uint32_t counter = 0, previous_counter = 0;
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    if (f > 4 || (seen & (1u << f)) != 0) return tl::unexpected(Error::malformed);
    seen |= 1u << f;
    const bool ok = f == 1   ? r.bytes(wt, ratchet)
                    : f == 2 ? r.u32(wt, counter)
                    : f == 3 ? r.u32(wt, previous_counter)
                             : r.bytes(wt, ciphertext);
    if (!ok) return tl::unexpected(Error::malformed);
  }
  constexpr std::uint32_t kRequired = (1u << 1) | (1u << 2) | (1u << 4);
  if (!r.ok() || (seen & kRequired) != kRequired) return tl::unexpected(Error::malformed);
  auto ratchet_key = PublicKey::decode(ratchet);
  if (!ratchet_key) return tl::unexpected(Error::invalid_key);

  SignalMessage out;
  out.version = *version;
  out.ratchet_key = *ratchet_key;
  out.counter = counter;
  out.previous_counter = previous_counter;
  out.ciphertext.assign(ciphertext.begin(), ciphertext.end());
  out.serialized.assign(bytes.begin(), bytes.end());
  return out;
}

SignalMessage SignalMessage::create(const PublicKey& ratchet_key, std::uint32_t counter,
                                    std::uint32_t previous_counter, Bytes ciphertext,
                                    const crypto::Secret<32>& mac_key,
                                    const PublicKey& sender_identity,
                                    const PublicKey& receiver_identity) {
  const auto rk = ratchet_key.serialize();
  const auto body = [&](auto& w) {
    w.bytes(1, rk);
    w.varint(2, counter);
    w.varint(3, previous_counter);
    w.bytes(4, ciphertext);
  };
  detail::ProtoSizer sizer;
  body(sizer);
  SignalMessage out;
  out.ratchet_key = ratchet_key;
  out.counter = counter;
  out.previous_counter = previous_counter;
  out.serialized.resize(1 + sizer.size + kMacSize);
  out.serialized[0] = kVersionByte;
  detail::ProtoWriter writer{out.serialized.data() + 1};
  body(writer);
  const ByteView framed(out.serialized.data(), 1 + sizer.size);
  const auto mac = compute_mac(mac_key, sender_identity, receiver_identity, framed);
  std::memcpy(out.serialized.data() + framed.size(), mac.data(), kMacSize);
  out.ciphertext = std::move(ciphertext);
  return out;
}

bool SignalMessage::verify_mac(const PublicKey& sender_identity, const PublicKey& receiver_identity,
                               const crypto::Secret<32>& mac_key) const {
  if (serialized.size() < 1 + kMacSize) return false;
  const ByteView framed(serialized.data(), serialized.size() - kMacSize);
  const auto mac = compute_mac(mac_key, sender_identity, receiver_identity, framed);
  return crypto::constant_time_equal(ByteView(mac.data(), kMacSize),
                                     ByteView(serialized.data() + framed.size(), kMacSize));
}

tl::expected<PreKeySignalMessage, Error> PreKeySignalMessage::decode(ByteView bytes) {
  if (bytes.size() > kMaxMessageBytes) return tl::unexpected(Error::too_large);
  if (bytes.empty()) return tl::unexpected(Error::malformed);
  auto version = check_version(bytes[0]);
  if (!version) return tl::unexpected(version.error());

  pb::PreKeySignalMessage msg;
  if (!parse_strict(msg, bytes.subspan(1))) return tl::unexpected(Error::malformed);
  if (!msg.has_signed_pre_key_id() || !msg.has_base_key() || !msg.has_identity_key() ||
      !msg.has_message()) {
    return tl::unexpected(Error::malformed);
  }
  auto base = PublicKey::decode(view_of(msg.base_key()));
  auto identity = PublicKey::decode(view_of(msg.identity_key()));
  if (!base || !identity) return tl::unexpected(Error::invalid_key);
  auto inner = SignalMessage::decode(view_of(msg.message()));
  if (!inner) return tl::unexpected(inner.error());
  if (inner->version != *version) return tl::unexpected(Error::malformed);

  PreKeySignalMessage out;
  out.version = *version;
  out.registration_id = RegistrationId(msg.registration_id());
  if (msg.has_pre_key_id()) out.pre_key_id = PreKeyId(msg.pre_key_id());
  out.signed_pre_key_id = SignedPreKeyId(msg.signed_pre_key_id());
  out.base_key = *base;
  out.identity_key = *identity;
  out.message = std::move(*inner);
  out.serialized.assign(bytes.begin(), bytes.end());
  return out;
}

PreKeySignalMessage PreKeySignalMessage::create(RegistrationId registration_id,
                                                std::optional<PreKeyId> pre_key_id,
                                                SignedPreKeyId signed_pre_key_id,
                                                const PublicKey& base_key,
                                                const PublicKey& identity_key,
                                                SignalMessage message) {
  pb::PreKeySignalMessage msg;
  msg.set_registration_id(registration_id.value);
  if (pre_key_id) msg.set_pre_key_id(pre_key_id->value);
  msg.set_signed_pre_key_id(signed_pre_key_id.value);
  const auto bk = base_key.serialize();
  const auto ik = identity_key.serialize();
  msg.set_base_key(to_string_bytes(bk));
  msg.set_identity_key(to_string_bytes(ik));
  msg.set_message(to_string_bytes(message.serialized));

  PreKeySignalMessage out;
  out.registration_id = registration_id;
  out.pre_key_id = pre_key_id;
  out.signed_pre_key_id = signed_pre_key_id;
  out.base_key = base_key;
  out.identity_key = identity_key;
  out.serialized = frame(kVersionByte, msg, 0);
  out.message = std::move(message);
  return out;
}

// SenderKeyMessage is on every group message's path: the allocation-free codec, as for
// SignalMessage (same bytes as libprotobuf; duplicates and over-long 32-bit fields refused).
tl::expected<SenderKeyMessage, Error> SenderKeyMessage::decode(ByteView bytes) {
  if (bytes.size() > kMaxMessageBytes) return tl::unexpected(Error::too_large);
  if (bytes.size() < 1 + kSignatureSize) return tl::unexpected(Error::malformed);
  auto version = check_version(bytes[0]);
  if (!version) return tl::unexpected(version.error());

  detail::ProtoReader r(bytes.subspan(1, bytes.size() - 1 - kSignatureSize));
  ByteView ciphertext;
  std::uint32_t id = 0, iteration = 0;
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    if (f > 3 || (seen & (1u << f)) != 0) return tl::unexpected(Error::malformed);
    seen |= 1u << f;
    const bool ok = f == 1   ? r.u32(wt, id)
                    : f == 2 ? r.u32(wt, iteration)
                             : r.bytes(wt, ciphertext);
    if (!ok) return tl::unexpected(Error::malformed);
  }
  constexpr std::uint32_t kRequired = (1u << 1) | (1u << 2) | (1u << 3);
  if (!r.ok() || (seen & kRequired) != kRequired) return tl::unexpected(Error::malformed);

  SenderKeyMessage out;
  out.version = *version;
  out.key_id = SenderKeyId(id);
  out.iteration = iteration;
  out.ciphertext.assign(ciphertext.begin(), ciphertext.end());
  out.serialized.assign(bytes.begin(), bytes.end());
  return out;
}

SenderKeyMessage SenderKeyMessage::create(SenderKeyId key_id, std::uint32_t iteration,
                                          Bytes ciphertext, const PrivateKey& signing_key,
                                          const crypto::EdwardsPublicBytes& signing_edwards,
                                          crypto::Rng& rng) {
  const auto body = [&](auto& w) {
    w.varint(1, key_id.value);
    w.varint(2, iteration);
    w.bytes(3, ciphertext);
  };
  detail::ProtoSizer sizer;
  body(sizer);
  SenderKeyMessage out;
  out.key_id = key_id;
  out.iteration = iteration;
  out.serialized.resize(1 + sizer.size + kSignatureSize);
  out.serialized[0] = kVersionByte;
  detail::ProtoWriter writer{out.serialized.data() + 1};
  body(writer);
  const ByteView signed_part(out.serialized.data(), 1 + sizer.size);
  const auto sig = crypto::curve25519_sign(signing_key, signing_edwards, signed_part, rng);
  std::memcpy(out.serialized.data() + signed_part.size(), sig.data(), sig.size());
  out.ciphertext = std::move(ciphertext);
  return out;
}

tl::expected<void, Error> SenderKeyMessage::verify_signature(const PublicKey& signing_key) const {
  if (serialized.size() < 1 + kSignatureSize) return tl::unexpected(Error::malformed);
  const std::size_t body = serialized.size() - kSignatureSize;
  return signing_key.verify(ByteView(serialized.data(), body),
                            ByteView(serialized.data() + body, kSignatureSize));
}

tl::expected<SenderKeyDistributionMessage, Error> SenderKeyDistributionMessage::decode(
    ByteView bytes) {
  if (bytes.size() > kMaxMessageBytes) return tl::unexpected(Error::too_large);
  if (bytes.empty()) return tl::unexpected(Error::malformed);
  auto version = check_version(bytes[0]);
  if (!version) return tl::unexpected(version.error());
  pb::SenderKeyDistributionMessage msg;
  if (!parse_strict(msg, bytes.subspan(1))) return tl::unexpected(Error::malformed);
  if (!msg.has_id() || !msg.has_iteration() || !msg.has_chain_key() || !msg.has_signing_key() ||
      msg.chain_key().size() != 32) {
    return tl::unexpected(Error::malformed);
  }
  auto signing = PublicKey::decode(view_of(msg.signing_key()));
  if (!signing) return tl::unexpected(Error::invalid_key);
  SenderKeyDistributionMessage out;
  out.version = *version;
  out.key_id = SenderKeyId(msg.id());
  out.iteration = msg.iteration();
  out.chain_key = crypto::Secret<32>(view_of(msg.chain_key()));
  out.signing_key = *signing;
  out.serialized.assign(bytes.begin(), bytes.end());
  // The protobuf object held the chain key in a std::string; wipe it before it is freed.
  crypto::secure_wipe(msg.mutable_chain_key()->data(), msg.chain_key().size());
  return out;
}

SenderKeyDistributionMessage SenderKeyDistributionMessage::create(
    SenderKeyId key_id, std::uint32_t iteration, const crypto::Secret<32>& chain_key,
    const PublicKey& signing_key) {
  pb::SenderKeyDistributionMessage msg;
  msg.set_id(key_id.value);
  msg.set_iteration(iteration);
  msg.set_chain_key(to_string_bytes(chain_key.view()));
  const auto sk = signing_key.serialize();
  msg.set_signing_key(to_string_bytes(sk));
  SenderKeyDistributionMessage out;
  out.key_id = key_id;
  out.iteration = iteration;
  out.chain_key = chain_key.clone();
  out.signing_key = signing_key;
  out.serialized = frame(kVersionByte, msg, 0);
  crypto::secure_wipe(msg.mutable_chain_key()->data(), msg.chain_key().size());
  return out;
}

}  // namespace sotto::protocol
