#include "protocol/session_state.h"

#include <algorithm>

#include "protocol/codec_util.h"
#include "protocol/limits.h"
#include "storage.pb.h"

namespace sotto::protocol {
namespace {

namespace pb = sotto::wire::storage;
using detail::parse_strict;
using detail::pb_view;
using detail::to_pb_bytes;
using detail::wipe;

constexpr std::uint32_t kSessionRecordFormat = 1;

void encode_chain_key(const ChainKey& ck, pb::ChainKey* out) {
  out->set_index(ck.index);
  out->set_key(to_pb_bytes(ck.key.view()));
}

void encode_state(const SessionState& s, pb::SessionState* out) {
  out->set_version(s.version);
  out->set_local_identity(to_pb_bytes(s.local_identity.view()));
  out->set_remote_identity(to_pb_bytes(s.remote_identity.view()));
  out->set_root_key(to_pb_bytes(s.root_key.view()));
  out->set_previous_counter(s.previous_counter);
  auto* sc = out->mutable_sender_chain();
  sc->set_ratchet_public(to_pb_bytes(s.sender_chain.ratchet.public_key.view()));
  sc->set_ratchet_private(to_pb_bytes(s.sender_chain.ratchet.private_key.view()));
  encode_chain_key(s.sender_chain.chain_key, sc->mutable_chain_key());
  for (const auto& rc : s.receiver_chains) {
    auto* c = out->add_receiver_chains();
    c->set_their_ratchet_key(to_pb_bytes(rc.their_ratchet_key.view()));
    encode_chain_key(rc.chain_key, c->mutable_chain_key());
    for (const auto& k : rc.skipped) {
      auto* sk = c->add_skipped();
      sk->set_counter(k.counter);
      sk->set_seed(to_pb_bytes(k.seed.view()));
      sk->set_created_at(k.created_at);
    }
  }
  if (s.pending_pre_key) {
    auto* p = out->mutable_pending_pre_key();
    if (s.pending_pre_key->pre_key_id) p->set_pre_key_id(s.pending_pre_key->pre_key_id->value);
    p->set_signed_pre_key_id(s.pending_pre_key->signed_pre_key_id.value);
    p->set_base_key(to_pb_bytes(s.pending_pre_key->base_key.view()));
    p->set_created_at(s.pending_pre_key->created_at);
  }
  out->set_local_registration_id(s.local_registration_id.value);
  out->set_remote_registration_id(s.remote_registration_id.value);
  out->set_alice_base_key(to_pb_bytes(s.alice_base_key.view()));
}

void wipe_chain_key(pb::ChainKey* ck) { wipe(ck->mutable_key()); }

void wipe_state(pb::SessionState* s) {
  wipe(s->mutable_root_key());
  if (s->has_sender_chain()) {
    wipe(s->mutable_sender_chain()->mutable_ratchet_private());
    if (s->sender_chain().has_chain_key()) {
      wipe_chain_key(s->mutable_sender_chain()->mutable_chain_key());
    }
  }
  for (auto& rc : *s->mutable_receiver_chains()) {
    if (rc.has_chain_key()) wipe_chain_key(rc.mutable_chain_key());
    for (auto& sk : *rc.mutable_skipped()) wipe(sk.mutable_seed());
  }
}

void wipe_record(pb::SessionRecord* r) {
  if (r->has_current()) wipe_state(r->mutable_current());
  for (auto& s : *r->mutable_previous()) wipe_state(&s);
}

tl::expected<crypto::Secret<32>, Error> decode_secret32(const std::string& s) {
  if (s.size() != 32) return tl::unexpected(Error::malformed);
  return crypto::Secret<32>(pb_view(s));
}

tl::expected<PublicKey, Error> decode_public(const std::string& s) {
  auto k = PublicKey::from_raw(pb_view(s));
  if (!k) return tl::unexpected(Error::malformed);
  return *k;
}

tl::expected<ChainKey, Error> decode_chain_key(const pb::ChainKey& ck) {
  if (!ck.has_index() || !ck.has_key()) return tl::unexpected(Error::malformed);
  auto key = decode_secret32(ck.key());
  if (!key) return tl::unexpected(key.error());
  return ChainKey{std::move(*key), ck.index()};
}

tl::expected<SessionState, Error> decode_state(const pb::SessionState& in) {
  if (in.version() != 3 || !in.has_sender_chain()) return tl::unexpected(Error::malformed);
  if (static_cast<std::size_t>(in.receiver_chains_size()) > kMaxReceiverChains) {
    return tl::unexpected(Error::malformed);
  }
  SessionState s;
  s.version = in.version();
  auto local = decode_public(in.local_identity());
  auto remote = decode_public(in.remote_identity());
  auto root = decode_secret32(in.root_key());
  auto alice_base = decode_public(in.alice_base_key());
  if (!local || !remote || !root || !alice_base) return tl::unexpected(Error::malformed);
  s.local_identity = *local;
  s.remote_identity = *remote;
  s.root_key = std::move(*root);
  s.alice_base_key = *alice_base;
  s.previous_counter = in.previous_counter();
  s.local_registration_id = RegistrationId(in.local_registration_id());
  s.remote_registration_id = RegistrationId(in.remote_registration_id());

  const auto& sc = in.sender_chain();
  auto ratchet_pub = decode_public(sc.ratchet_public());
  auto ratchet_priv = decode_secret32(sc.ratchet_private());
  if (!ratchet_pub || !ratchet_priv || !sc.has_chain_key()) return tl::unexpected(Error::malformed);
  auto sck = decode_chain_key(sc.chain_key());
  if (!sck) return tl::unexpected(sck.error());
  s.sender_chain = SenderChain{KeyPair{*ratchet_pub, std::move(*ratchet_priv)}, std::move(*sck)};

  for (const auto& rc : in.receiver_chains()) {
    if (static_cast<std::size_t>(rc.skipped_size()) > kMaxMessageKeys || !rc.has_chain_key()) {
      return tl::unexpected(Error::malformed);
    }
    auto their = decode_public(rc.their_ratchet_key());
    auto ck = decode_chain_key(rc.chain_key());
    if (!their || !ck) return tl::unexpected(Error::malformed);
    ReceiverChain chain{*their, std::move(*ck), {}};
    for (const auto& sk : rc.skipped()) {
      auto seed = decode_secret32(sk.seed());
      if (!seed || !sk.has_counter()) return tl::unexpected(Error::malformed);
      chain.skipped.push_back({sk.counter(), std::move(*seed), sk.created_at()});
    }
    s.receiver_chains.push_back(std::move(chain));
  }
  if (in.has_pending_pre_key()) {
    const auto& p = in.pending_pre_key();
    auto base = decode_public(p.base_key());
    if (!base || !p.has_signed_pre_key_id()) return tl::unexpected(Error::malformed);
    PendingPreKey pending;
    if (p.has_pre_key_id()) pending.pre_key_id = PreKeyId(p.pre_key_id());
    pending.signed_pre_key_id = SignedPreKeyId(p.signed_pre_key_id());
    pending.base_key = *base;
    pending.created_at = p.created_at();
    s.pending_pre_key = pending;
  }
  return s;
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
    previous_.push_front(std::move(*current_));
    current_.reset();
  }
  while (previous_.size() > kMaxArchivedStates) previous_.pop_back();
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
  pb::SessionRecord rec;
  rec.set_format(kSessionRecordFormat);
  if (current_) encode_state(*current_, rec.mutable_current());
  for (const auto& s : previous_) encode_state(s, rec.add_previous());
  auto out = detail::serialize_secret(rec);
  wipe_record(&rec);
  return out;
}

tl::expected<SessionRecord, Error> SessionRecord::decode(ByteView bytes) {
  if (bytes.size() > kMaxSessionRecordBytes) return tl::unexpected(Error::too_large);
  pb::SessionRecord rec;
  const bool parsed = parse_strict(rec, bytes);
  struct Wiper {
    pb::SessionRecord* r;
    ~Wiper() { wipe_record(r); }
  } wiper{&rec};
  if (!parsed || rec.format() != kSessionRecordFormat ||
      static_cast<std::size_t>(rec.previous_size()) > kMaxArchivedStates) {
    return tl::unexpected(Error::malformed);
  }
  SessionRecord out;
  if (rec.has_current()) {
    auto s = decode_state(rec.current());
    if (!s) return tl::unexpected(s.error());
    out.current_ = std::move(*s);
  }
  for (const auto& p : rec.previous()) {
    auto s = decode_state(p);
    if (!s) return tl::unexpected(s.error());
    out.previous_.push_back(std::move(*s));
  }
  return out;
}

}  // namespace sotto::protocol
