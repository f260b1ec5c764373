#include "protocol/sender_keys.h"

#include "crypto/cipher.h"
#include "protocol/codec_util.h"
#include "protocol/limits.h"
#include "storage.pb.h"

namespace sotto::protocol {
namespace {

namespace pb = sotto::wire::storage;
using detail::pb_view;
using detail::to_pb_bytes;
using detail::wipe;

constexpr std::uint32_t kSenderKeyRecordFormat = 1;

void wipe_record(pb::SenderKeyRecord* r) {
  for (auto& s : *r->mutable_states()) {
    if (s.has_chain_key()) wipe(s.mutable_chain_key()->mutable_key());
    wipe(s.mutable_signing_private());
    for (auto& k : *s.mutable_skipped()) wipe(k.mutable_seed());
  }
}

}  // namespace

SenderKeyState SenderKeyState::clone() const {
  SenderKeyState s{key_id, chain_key.clone(), signing_public, std::nullopt, signing_edwards, {}};
  if (signing_private) s.signing_private = signing_private->clone();
  for (const auto& k : skipped) s.skipped.push_back(k.clone());
  return s;
}

SenderKeyRecord SenderKeyRecord::clone() const {
  SenderKeyRecord r;
  for (const auto& s : states_) r.states_.push_back(s.clone());
  return r;
}

SenderKeyState* SenderKeyRecord::find(SenderKeyId id) {
  for (auto& s : states_) {
    if (s.key_id == id) return &s;
  }
  return nullptr;
}

void SenderKeyRecord::remove(SenderKeyId id) {
  std::erase_if(states_, [id](const SenderKeyState& s) { return s.key_id == id; });
}

void SenderKeyRecord::add(SenderKeyState state) {
  states_.push_front(std::move(state));
  while (states_.size() > kMaxSenderKeyStates) states_.pop_back();
}

crypto::SecretBuffer SenderKeyRecord::encode() const {
  pb::SenderKeyRecord rec;
  rec.set_format(kSenderKeyRecordFormat);
  for (const auto& s : states_) {
    auto* out = rec.add_states();
    out->set_key_id(s.key_id.value);
    out->mutable_chain_key()->set_index(s.chain_key.index);
    out->mutable_chain_key()->set_key(to_pb_bytes(s.chain_key.key.view()));
    out->set_signing_public(to_pb_bytes(s.signing_public.view()));
    if (s.signing_private) out->set_signing_private(to_pb_bytes(s.signing_private->view()));
    if (s.signing_edwards) out->set_signing_edwards(to_pb_bytes(*s.signing_edwards));
    for (const auto& k : s.skipped) {
      auto* sk = out->add_skipped();
      sk->set_iteration(k.counter);
      sk->set_seed(to_pb_bytes(k.seed.view()));
      sk->set_created_at(k.created_at);
    }
  }
  auto out = detail::serialize_secret(rec);
  wipe_record(&rec);
  return out;
}

tl::expected<SenderKeyRecord, Error> SenderKeyRecord::decode(ByteView bytes) {
  if (bytes.size() > kMaxSenderKeyRecordBytes) return tl::unexpected(Error::too_large);
  pb::SenderKeyRecord rec;
  const bool parsed = detail::parse_strict(rec, bytes);
  struct Wiper {
    pb::SenderKeyRecord* r;
    ~Wiper() { wipe_record(r); }
  } wiper{&rec};
  if (!parsed || rec.format() != kSenderKeyRecordFormat ||
      static_cast<std::size_t>(rec.states_size()) > kMaxSenderKeyStates) {
    return tl::unexpected(Error::malformed);
  }
  SenderKeyRecord out;
  for (const auto& s : rec.states()) {
    if (!s.has_key_id() || !s.has_chain_key() || !s.chain_key().has_index() ||
        s.chain_key().key().size() != 32 ||
        (s.has_signing_private() && s.signing_private().size() != 32) ||
        (s.has_signing_edwards() && s.signing_edwards().size() != 32) ||
        static_cast<std::size_t>(s.skipped_size()) > kMaxSenderMessageKeys) {
      return tl::unexpected(Error::malformed);
    }
    auto signing = PublicKey::from_raw(pb_view(s.signing_public()));
    if (!signing) return tl::unexpected(Error::malformed);
    SenderKeyState state{SenderKeyId(s.key_id()),
                         ChainKey{crypto::Secret<32>(pb_view(s.chain_key().key())),
                                  s.chain_key().index()},
                         *signing,
                         std::nullopt,
                         std::nullopt,
                         {}};
    if (s.has_signing_private()) state.signing_private = PrivateKey(pb_view(s.signing_private()));
    if (s.has_signing_edwards()) {
      crypto::EdwardsPublicBytes e{};
      std::copy(s.signing_edwards().begin(), s.signing_edwards().end(), e.begin());
      state.signing_edwards = e;
    }
    for (const auto& k : s.skipped()) {
      if (k.seed().size() != 32 || !k.has_iteration()) return tl::unexpected(Error::malformed);
      state.skipped.push_back({k.iteration(), crypto::Secret<32>(pb_view(k.seed())), k.created_at()});
    }
    out.states_.push_back(std::move(state));
  }
  return out;
}

SenderKeyDistributionMessage sender_key_distribution(SenderKeyRecord& own, crypto::Rng& rng) {
  if (own.empty() || !own.newest().signing_private) {
    KeyPair signing = KeyPair::generate(rng);
    const auto edwards = crypto::curve25519_edwards_public(signing.private_key);
    own.add(SenderKeyState{SenderKeyId(rng.next_u32() & 0x7FFFFFFF),
                           ChainKey{rng.secret<32>(), 0}, signing.public_key,
                           std::move(signing.private_key), edwards, {}});
  }
  const SenderKeyState& s = own.newest();
  return SenderKeyDistributionMessage::create(s.key_id, s.chain_key.index, s.chain_key.key,
                                              s.signing_public);
}

void process_sender_key_distribution(SenderKeyRecord& record,
                                     const SenderKeyDistributionMessage& skdm) {
  if (SenderKeyState* existing = record.find(skdm.key_id)) {
    if (existing->signing_public == skdm.signing_key) return;
    record.remove(skdm.key_id);
  }
  record.add(SenderKeyState{skdm.key_id, ChainKey{skdm.chain_key.clone(), skdm.iteration},
                            skdm.signing_key, std::nullopt, std::nullopt, {}});
}

tl::expected<Bytes, Error> group_encrypt(SenderKeyRecord& own, ByteView plaintext,
                                         crypto::Rng& rng) {
  if (own.empty() || !own.newest().signing_private) return tl::unexpected(Error::no_sender_key);
  if (plaintext.size() > kMaxMessageBytes - 1024) return tl::unexpected(Error::too_large);
  SenderKeyState& s = own.newest();
  ChainStep step = s.chain_key.step();
  const auto keys = SenderMessageKeys::derive(step.seed, s.chain_key.index);
  Bytes ciphertext = crypto::aes256_cbc_seal(
      keys.cipher_key, std::span<const std::uint8_t, 16>(keys.iv.data(), 16), plaintext);
  if (!s.signing_edwards) s.signing_edwards = crypto::curve25519_edwards_public(*s.signing_private);
  SenderKeyMessage msg = SenderKeyMessage::create(s.key_id, s.chain_key.index, std::move(ciphertext),
                                                  *s.signing_private, *s.signing_edwards, rng);
  s.chain_key = std::move(step.next);
  return std::move(msg.serialized);
}

tl::expected<crypto::SecretBuffer, Error> group_decrypt(SenderKeyRecord& record, ByteView bytes,
                                                        std::uint64_t now) {
  auto msg = SenderKeyMessage::decode(bytes);
  if (!msg) return tl::unexpected(msg.error());
  SenderKeyState* state = record.find(msg->key_id);
  if (state == nullptr) return tl::unexpected(Error::no_sender_key);
  if (auto ok = msg->verify_signature(state->signing_public); !ok) return tl::unexpected(ok.error());

  // Derive into temporaries; the state changes only after the body decrypts.
  crypto::Secret<32> seed;
  std::optional<ChainKey> advanced;
  std::vector<SkippedKey> new_skipped;
  bool used_skipped = false;
  if (msg->iteration < state->chain_key.index) {
    const SkippedKey* kept = nullptr;
    for (const SkippedKey& k : state->skipped) {
      if (k.counter == msg->iteration && k.created_at + kMaxSkippedKeyAgeSeconds >= now) {
        kept = &k;
        break;
      }
    }
    if (kept == nullptr) return tl::unexpected(Error::duplicate_message);
    seed = kept->seed.clone();
    used_skipped = true;
  } else {
    if (msg->iteration - state->chain_key.index > kMaxSenderKeyForwardJumps) {
      return tl::unexpected(Error::too_far_ahead);
    }
    ChainKey ck = state->chain_key.clone();
    while (ck.index < msg->iteration) {
      ChainStep st = ck.step();
      new_skipped.push_back({ck.index, std::move(st.seed), now});
      ck = std::move(st.next);
    }
    ChainStep st = ck.step();
    seed = std::move(st.seed);
    advanced = std::move(st.next);
  }
  const auto keys = SenderMessageKeys::derive(seed, msg->iteration);
  auto plaintext = crypto::aes256_cbc_open(
      keys.cipher_key, std::span<const std::uint8_t, 16>(keys.iv.data(), 16), msg->ciphertext);
  if (!plaintext) return tl::unexpected(Error::bad_ciphertext);

  if (used_skipped) {
    std::erase_if(state->skipped, [&](const SkippedKey& k) { return k.counter == msg->iteration; });
  } else {
    state->chain_key = std::move(*advanced);
    for (auto& k : new_skipped) state->skipped.push_back(std::move(k));
    while (state->skipped.size() > kMaxSenderMessageKeys) state->skipped.pop_front();
  }
  std::erase_if(state->skipped, [now](const SkippedKey& k) {
    return k.created_at + kMaxSkippedKeyAgeSeconds < now;
  });
  return std::move(*plaintext);
}

namespace {

tl::expected<SenderKeyRecord, Error> load_or_empty(const SenderKeyName& name,
                                                   SenderKeyStore& store) {
  auto loaded = store.load_sender_key(name);
  if (!loaded) return tl::unexpected(loaded.error());
  return loaded->has_value() ? std::move(**loaded) : SenderKeyRecord{};
}

}  // namespace

tl::expected<Bytes, Error> create_sender_key_distribution(const SenderKeyName& own,
                                                          SenderKeyStore& store,
                                                          crypto::Rng& rng) {
  auto record = load_or_empty(own, store);
  if (!record) return tl::unexpected(record.error());
  auto skdm = sender_key_distribution(*record, rng);
  if (auto saved = store.save_sender_key(own, *record); !saved) return tl::unexpected(saved.error());
  return std::move(skdm.serialized);
}

tl::expected<void, Error> process_sender_key_distribution(const SenderKeyName& sender,
                                                          ByteView bytes, SenderKeyStore& store) {
  auto skdm = SenderKeyDistributionMessage::decode(bytes);
  if (!skdm) return tl::unexpected(skdm.error());
  auto record = load_or_empty(sender, store);
  if (!record) return tl::unexpected(record.error());
  process_sender_key_distribution(*record, *skdm);
  return store.save_sender_key(sender, *record);
}

tl::expected<Bytes, Error> group_encrypt(const SenderKeyName& own, ByteView plaintext,
                                         SenderKeyStore& store, crypto::Rng& rng) {
  auto record = load_or_empty(own, store);
  if (!record) return tl::unexpected(record.error());
  auto out = group_encrypt(*record, plaintext, rng);
  if (!out) return out;
  if (auto saved = store.save_sender_key(own, *record); !saved) return tl::unexpected(saved.error());
  return out;
}

tl::expected<crypto::SecretBuffer, Error> group_decrypt(const SenderKeyName& sender,
                                                        ByteView message, SenderKeyStore& store,
                                                        std::uint64_t now) {
  auto record = load_or_empty(sender, store);
  if (!record) return tl::unexpected(record.error());
  auto out = group_decrypt(*record, message, now);
  if (!out) return out;
  if (auto saved = store.save_sender_key(sender, *record); !saved) return tl::unexpected(saved.error());
  return out;
}

}  // namespace sotto::protocol
