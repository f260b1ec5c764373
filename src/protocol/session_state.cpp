#include "protocol/session_state.h"

#include <algorithm>
#include <cstring>

#include "protocol/limits.h"
#include "protocol/proto_codec.h"
#include "protocol/record_codec.h"

namespace sotto::protocol {
namespace {

using detail::once;
using detail::ProtoReader;
using detail::ProtoSizer;
using detail::ProtoWriter;
using detail::read32;
using detail::read_chain_key;
using detail::read_public;
using detail::read_skipped;
using detail::write_chain_key;
using detail::write_skipped;

constexpr std::uint32_t kSessionRecordFormat = 1;

// Field numbers of proto/storage.proto.
namespace field {
using namespace detail::field;  // ChainKey, SkippedKey
constexpr std::uint32_t kRecordFormat = 1, kRecordCurrent = 2, kRecordPrevious = 3;
constexpr std::uint32_t kVersion = 1, kLocalIdentity = 2, kRemoteIdentity = 3, kRootKey = 4,
                        kPreviousCounter = 5, kSenderChain = 6, kReceiverChains = 7,
                        kPendingPreKey = 8, kLocalRegistrationId = 9, kRemoteRegistrationId = 10,
                        kAliceBaseKey = 11;
constexpr std::uint32_t kTheirRatchetKey = 1, kReceiverChainKey = 2, kReceiverSkipped = 3;
constexpr std::uint32_t kRatchetPublic = 1, kRatchetPrivate = 2, kSenderChainKey = 3;
constexpr std::uint32_t kPendingPreKeyId = 1, kPendingSignedPreKeyId = 2, kPendingBaseKey = 3,
                        kPendingCreatedAt = 4;
}  // namespace field

template <typename W>
void write_state(W& w, const SessionState& s) {
  w.varint(field::kVersion, s.version);
  w.bytes(field::kLocalIdentity, s.local_identity.view());
  w.bytes(field::kRemoteIdentity, s.remote_identity.view());
  w.bytes(field::kRootKey, s.root_key.view());
  w.varint(field::kPreviousCounter, s.previous_counter);
  w.message(field::kSenderChain, [&](auto& c) {
    c.bytes(field::kRatchetPublic, s.sender_chain.ratchet.public_key.view());
    c.bytes(field::kRatchetPrivate, s.sender_chain.ratchet.private_key.view());
    c.message(field::kSenderChainKey,
              [&](auto& k) { write_chain_key(k, s.sender_chain.chain_key); });
  });
  for (const auto& rc : s.receiver_chains) {
    w.message(field::kReceiverChains, [&](auto& c) {
      c.bytes(field::kTheirRatchetKey, rc.their_ratchet_key.view());
      c.message(field::kReceiverChainKey, [&](auto& k) { write_chain_key(k, rc.chain_key); });
      for (const auto& sk : rc.skipped) {
        c.message(field::kReceiverSkipped, [&](auto& k) { write_skipped(k, sk); });
      }
    });
  }
  if (s.pending_pre_key) {
    const PendingPreKey& p = *s.pending_pre_key;
    w.message(field::kPendingPreKey, [&](auto& c) {
      if (p.pre_key_id) c.varint(field::kPendingPreKeyId, p.pre_key_id->value);
      c.varint(field::kPendingSignedPreKeyId, p.signed_pre_key_id.value);
      c.bytes(field::kPendingBaseKey, p.base_key.view());
      c.varint(field::kPendingCreatedAt, p.created_at);
    });
  }
  w.varint(field::kLocalRegistrationId, s.local_registration_id.value);
  w.varint(field::kRemoteRegistrationId, s.remote_registration_id.value);
  w.bytes(field::kAliceBaseKey, s.alice_base_key.view());
}

template <typename W>
void write_record(W& w, const std::optional<SessionState>& current,
                  const std::vector<SessionState>& previous) {
  w.varint(field::kRecordFormat, kSessionRecordFormat);
  if (current) w.message(field::kRecordCurrent, [&](auto& c) { write_state(c, *current); });
  for (const auto& s : previous) {
    w.message(field::kRecordPrevious, [&](auto& c) { write_state(c, s); });
  }
}

bool read_receiver_chain(ByteView in, ReceiverChain& out) {
  ProtoReader r(in);
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    ByteView v;
    if (f != field::kReceiverSkipped && !once(seen, f)) return false;
    switch (f) {
      case field::kTheirRatchetKey:
        if (!r.bytes(wt, v) || !read_public(v, out.their_ratchet_key)) return false;
        break;
      case field::kReceiverChainKey:
        if (!r.bytes(wt, v) || !read_chain_key(v, out.chain_key)) return false;
        break;
      case field::kReceiverSkipped:
        if (out.skipped.size() >= kMaxMessageKeys) return false;
        if (!r.bytes(wt, v) || !read_skipped(v, out.skipped.emplace_back())) return false;
        break;
      default:
        return false;
    }
  }
  const std::uint32_t required = (1u << field::kTheirRatchetKey) | (1u << field::kReceiverChainKey);
  return r.ok() && (seen & required) == required;
}

bool read_sender_chain(ByteView in, SenderChain& out) {
  ProtoReader r(in);
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    ByteView v;
    if (!once(seen, f)) return false;
    switch (f) {
      case field::kRatchetPublic:
        if (!r.bytes(wt, v) || !read_public(v, out.ratchet.public_key)) return false;
        break;
      case field::kRatchetPrivate:
        if (!r.bytes(wt, v) || !read32(v, out.ratchet.private_key)) return false;
        break;
      case field::kSenderChainKey:
        if (!r.bytes(wt, v) || !read_chain_key(v, out.chain_key)) return false;
        break;
      default:
        return false;
    }
  }
  return r.ok() && seen == ((1u << field::kRatchetPublic) | (1u << field::kRatchetPrivate) |
                            (1u << field::kSenderChainKey));
}

bool read_pending(ByteView in, PendingPreKey& out) {
  ProtoReader r(in);
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    ByteView v;
    std::uint32_t id = 0;
    if (!once(seen, f)) return false;
    switch (f) {
      case field::kPendingPreKeyId:
        if (!r.u32(wt, id)) return false;
        out.pre_key_id = PreKeyId(id);
        break;
      case field::kPendingSignedPreKeyId:
        if (!r.u32(wt, id)) return false;
        out.signed_pre_key_id = SignedPreKeyId(id);
        break;
      case field::kPendingBaseKey:
        if (!r.bytes(wt, v) || !read_public(v, out.base_key)) return false;
        break;
      case field::kPendingCreatedAt:
        if (!r.varint(wt, out.created_at)) return false;
        break;
      default:
        return false;
    }
  }
  const std::uint32_t required =
      (1u << field::kPendingSignedPreKeyId) | (1u << field::kPendingBaseKey);
  return r.ok() && (seen & required) == required;
}

bool read_state(ByteView in, SessionState& out) {
  ProtoReader r(in);
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    ByteView v;
    std::uint32_t n = 0;
    if (f != field::kReceiverChains && !once(seen, f)) return false;
    switch (f) {
      case field::kVersion:
        if (!r.u32(wt, out.version) || out.version != 3) return false;
        break;
      case field::kLocalIdentity:
        if (!r.bytes(wt, v) || !read_public(v, out.local_identity)) return false;
        break;
      case field::kRemoteIdentity:
        if (!r.bytes(wt, v) || !read_public(v, out.remote_identity)) return false;
        break;
      case field::kRootKey:
        if (!r.bytes(wt, v) || !read32(v, out.root_key)) return false;
        break;
      case field::kPreviousCounter:
        if (!r.u32(wt, out.previous_counter)) return false;
        break;
      case field::kSenderChain:
        if (!r.bytes(wt, v) || !read_sender_chain(v, out.sender_chain)) return false;
        break;
      case field::kReceiverChains:
        if (out.receiver_chains.size() >= kMaxReceiverChains) return false;
        if (out.receiver_chains.empty()) out.receiver_chains.reserve(2);
        if (!r.bytes(wt, v) || !read_receiver_chain(v, out.receiver_chains.emplace_back())) {
          return false;
        }
        break;
      case field::kPendingPreKey:
        if (!r.bytes(wt, v) || !read_pending(v, out.pending_pre_key.emplace())) return false;
        break;
      case field::kLocalRegistrationId:
        if (!r.u32(wt, n)) return false;
        out.local_registration_id = RegistrationId(n);
        break;
      case field::kRemoteRegistrationId:
        if (!r.u32(wt, n)) return false;
        out.remote_registration_id = RegistrationId(n);
        break;
      case field::kAliceBaseKey:
        if (!r.bytes(wt, v) || !read_public(v, out.alice_base_key)) return false;
        break;
      default:
        return false;
    }
  }
  const std::uint32_t required = (1u << field::kVersion) | (1u << field::kLocalIdentity) |
                                 (1u << field::kRemoteIdentity) | (1u << field::kRootKey) |
                                 (1u << field::kSenderChain) | (1u << field::kAliceBaseKey);
  return r.ok() && (seen & required) == required;
}

}  // namespace

ReceiverChain ReceiverChain::clone() const {
  ReceiverChain c{their_ratchet_key, chain_key.clone(), {}};
  for (const auto& k : skipped) c.skipped.push_back(k.clone());
  return c;
}

SessionState SessionState::clone() const {
  SessionState s;
  s.version = version;
  s.local_identity = local_identity;
  s.remote_identity = remote_identity;
  s.root_key = root_key.clone();
  s.previous_counter = previous_counter;
  s.sender_chain = sender_chain.clone();
  for (const auto& rc : receiver_chains) s.receiver_chains.push_back(rc.clone());
  s.pending_pre_key = pending_pre_key;
  s.local_registration_id = local_registration_id;
  s.remote_registration_id = remote_registration_id;
  s.alice_base_key = alice_base_key;
  return s;
}

std::optional<std::size_t> SessionState::find_receiver_chain(const PublicKey& key) const {
  for (std::size_t i = 0; i < receiver_chains.size(); ++i) {
    if (receiver_chains[i].their_ratchet_key == key) return i;
  }
  return std::nullopt;
}

void SessionState::add_receiver_chain(ReceiverChain chain) {
  receiver_chains.push_back(std::move(chain));
  while (receiver_chains.size() > kMaxReceiverChains) {
    receiver_chains.erase(receiver_chains.begin());
  }
}

void SessionState::expire_skipped_keys(std::uint64_t now) {
  for (auto& rc : receiver_chains) {
    std::erase_if(rc.skipped, [now](const SkippedKey& k) {
      return k.created_at + kMaxSkippedKeyAgeSeconds < now;
    });
  }
}

SessionRecord SessionRecord::clone() const {
  SessionRecord r;
  if (current_) r.current_ = current_->clone();
  for (const auto& s : previous_) r.previous_.push_back(s.clone());
  return r;
}

void SessionRecord::promote_state(SessionState state) {
  archive_current();
  current_ = std::move(state);
}

void SessionRecord::promote_previous(std::size_t i) {
  SessionState s = std::move(previous_.at(i));
  previous_.erase(previous_.begin() + static_cast<std::ptrdiff_t>(i));
  promote_state(std::move(s));
}

void SessionRecord::archive_current() {
  if (current_) {
    previous_.insert(previous_.begin(), std::move(*current_));
    current_.reset();
  }
  if (previous_.size() > kMaxArchivedStates) previous_.resize(kMaxArchivedStates);
}

bool SessionRecord::has_state_for(std::uint32_t version, const PublicKey& alice_base_key) const {
  if (current_ && current_->version == version && current_->alice_base_key == alice_base_key) {
    return true;
  }
  return std::any_of(previous_.begin(), previous_.end(), [&](const SessionState& s) {
    return s.version == version && s.alice_base_key == alice_base_key;
  });
}

bool SessionRecord::identity_matches(const PublicKey& alice_base_key,
                                     const PublicKey& remote_identity) const {
  const auto ok = [&](const SessionState& s) {
    return s.alice_base_key != alice_base_key || s.remote_identity == remote_identity;
  };
  return (!current_ || ok(*current_)) && std::all_of(previous_.begin(), previous_.end(), ok);
}

crypto::SecretBuffer SessionRecord::encode() const {
  ProtoSizer sizer;
  write_record(sizer, current_, previous_);
  crypto::SecretBuffer out(sizer.size);
  ProtoWriter writer{out.data()};
  write_record(writer, current_, previous_);
  return out;
}

tl::expected<SessionRecord, Error> SessionRecord::decode(ByteView bytes) {
  SessionRecord out;
  if (auto ok = decode(bytes, out); !ok) return tl::unexpected(ok.error());
  return out;
}

tl::expected<void, Error> SessionRecord::decode(ByteView bytes, SessionRecord& out) {
  if (bytes.size() > kMaxSessionRecordBytes) return tl::unexpected(Error::too_large);
  ProtoReader r(bytes);
  std::uint32_t f = 0, wt = 0;
  bool have_format = false;
  while (r.next(f, wt)) {
    ByteView v;
    std::uint32_t format = 0;
    switch (f) {
      case field::kRecordFormat:
        if (have_format || !r.u32(wt, format) || format != kSessionRecordFormat) {
          return tl::unexpected(Error::malformed);
        }
        have_format = true;
        break;
      case field::kRecordCurrent:
        if (out.current_ || !r.bytes(wt, v) || !read_state(v, out.current_.emplace())) {
          return tl::unexpected(Error::malformed);
        }
        break;
      case field::kRecordPrevious:
        if (out.previous_.size() >= kMaxArchivedStates || !r.bytes(wt, v) ||
            !read_state(v, out.previous_.emplace_back())) {
          return tl::unexpected(Error::malformed);
        }
        break;
      default:
        return tl::unexpected(Error::malformed);
    }
  }
  if (!r.ok() || !have_format) return tl::unexpected(Error::malformed);
  return {};
}

}  // namespace sotto::protocol
