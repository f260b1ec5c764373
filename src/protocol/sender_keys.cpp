#include "protocol/sender_keys.h"

#include <cstring>

#include "crypto/cipher.h"
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

constexpr std::uint32_t kSenderKeyRecordFormat = 1;

// Field numbers of proto/storage.proto (SenderKeyRecord, SenderKeyState).
namespace field {
using namespace detail::field;  // ChainKey, SenderMessageKey (= SkippedKey)
constexpr std::uint32_t kRecordFormat = 1, kRecordStates = 2;
constexpr std::uint32_t kKeyId = 1, kChainKey = 2, kSigningPublic = 3, kSigningPrivate = 4,
                        kSkipped = 5, kSigningEdwards = 6;
}  // namespace field

// Field order as libprotobuf writes it (by number), so records stay byte-identical to the ones
// written before this codec replaced it.
template <typename W>
void write_state(W& w, const SenderKeyState& s) {
  w.varint(field::kKeyId, s.key_id.value);
  w.message(field::kChainKey, [&](auto& k) { write_chain_key(k, s.chain_key); });
  w.bytes(field::kSigningPublic, s.signing_public.view());
  if (s.signing_private) w.bytes(field::kSigningPrivate, s.signing_private->view());
  for (const auto& k : s.skipped) {
    w.message(field::kSkipped, [&](auto& m) { write_skipped(m, k); });
  }
  if (s.signing_edwards) w.bytes(field::kSigningEdwards, *s.signing_edwards);
}

template <typename W>
void write_record(W& w, const std::vector<SenderKeyState>& states) {
  w.varint(field::kRecordFormat, kSenderKeyRecordFormat);
  for (const auto& s : states) {
    w.message(field::kRecordStates, [&](auto& c) { write_state(c, s); });
  }
}

bool read_state(ByteView in, SenderKeyState& out) {
  ProtoReader r(in);
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    ByteView v;
    std::uint32_t id = 0;
    if (f != field::kSkipped && !once(seen, f)) return false;
    switch (f) {
      case field::kKeyId:
        if (!r.u32(wt, id)) return false;
        out.key_id = SenderKeyId(id);
        break;
      case field::kChainKey:
        if (!r.bytes(wt, v) || !read_chain_key(v, out.chain_key)) return false;
        break;
      case field::kSigningPublic:
        if (!r.bytes(wt, v) || !read_public(v, out.signing_public)) return false;
        break;
      case field::kSigningPrivate:
        if (!r.bytes(wt, v) || !read32(v, out.signing_private.emplace())) return false;
        break;
      case field::kSkipped:
        if (out.skipped.size() >= kMaxSenderMessageKeys) return false;
        if (!r.bytes(wt, v) || !read_skipped(v, out.skipped.emplace_back())) return false;
        break;
      case field::kSigningEdwards:
        if (!r.bytes(wt, v) || v.size() != 32) return false;
        std::memcpy(out.signing_edwards.emplace().data(), v.data(), 32);
        break;
      default:
        return false;
    }
  }
  const std::uint32_t required =
      (1u << field::kKeyId) | (1u << field::kChainKey) | (1u << field::kSigningPublic);
  return r.ok() && (seen & required) == required;
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
  states_.insert(states_.begin(), std::move(state));
  if (states_.size() > kMaxSenderKeyStates) states_.resize(kMaxSenderKeyStates);
}

// A strict hand codec (record_codec.h) in proto/storage.proto's format, like the session
// record's: group records are loaded and saved around every group message.
crypto::SecretBuffer SenderKeyRecord::encode() const {
  ProtoSizer sizer;
  write_record(sizer, states_);
  crypto::SecretBuffer out(sizer.size);
  ProtoWriter writer{out.data()};
  write_record(writer, states_);
  return out;
}

tl::expected<SenderKeyRecord, Error> SenderKeyRecord::decode(ByteView bytes) {
  if (bytes.size() > kMaxSenderKeyRecordBytes) return tl::unexpected(Error::too_large);
  ProtoReader r(bytes);
  SenderKeyRecord out;
  std::uint32_t f = 0, wt = 0;
  bool have_format = false;
  while (r.next(f, wt)) {
    ByteView v;
    std::uint32_t format = 0;
    switch (f) {
      case field::kRecordFormat:
        if (have_format || !r.u32(wt, format) || format != kSenderKeyRecordFormat) {
          return tl::unexpected(Error::malformed);
        }
        have_format = true;
        break;
      case field::kRecordStates:
        if (out.states_.size() >= kMaxSenderKeyStates || !r.bytes(wt, v) ||
            !read_state(v, out.states_.emplace_back())) {
          return tl::unexpected(Error::malformed);
        }
        break;
      default:
        return tl::unexpected(Error::malformed);
    }
  }
  if (!r.ok() || !have_format) return tl::unexpected(Error::malformed);
  return out;
}

SenderKeyDistributionMessage sender_key_distribution(SenderKeyRecord& own, crypto::Rng& rng) {
  if (own.empty() || !own.newest().signing_private) {
    KeyPair signing = KeyPair::generate(rng);
    const auto edwards = crypto::curve25519_edwards_public(signing.private_key);
    own.add(SenderKeyState{SenderKeyId(rng.next_u32() & 0x7FFFFFFF),
                           ChainKey{rng.secret<32>(), 0},
                           signing.public_key,
                           std::move(signing.private_key),
                           edwards,
                           {}});
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
  record.add(SenderKeyState{skdm.key_id,
                            ChainKey{skdm.chain_key.clone(), skdm.iteration},
                            skdm.signing_key,
                            std::nullopt,
                            std::nullopt,
                            {}});
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
  SenderKeyMessage msg =
      SenderKeyMessage::create(s.key_id, s.chain_key.index, std::move(ciphertext),
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
  if (auto ok = msg->verify_signature(state->signing_public); !ok)
    return tl::unexpected(ok.error());

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
    if (state->skipped.size() > kMaxSenderMessageKeys) {
      state->skipped.erase(
          state->skipped.begin(),
          state->skipped.begin() +
              static_cast<std::ptrdiff_t>(state->skipped.size() - kMaxSenderMessageKeys));
    }
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
                                                          SenderKeyStore& store, crypto::Rng& rng) {
  auto record = load_or_empty(own, store);
  if (!record) return tl::unexpected(record.error());
  auto skdm = sender_key_distribution(*record, rng);
  if (auto saved = store.save_sender_key(own, *record); !saved)
    return tl::unexpected(saved.error());
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
  if (auto saved = store.save_sender_key(own, *record); !saved)
    return tl::unexpected(saved.error());
  return out;
}

tl::expected<crypto::SecretBuffer, Error> group_decrypt(const SenderKeyName& sender,
                                                        ByteView message, SenderKeyStore& store,
                                                        std::uint64_t now) {
  auto record = load_or_empty(sender, store);
  if (!record) return tl::unexpected(record.error());
  auto out = group_decrypt(*record, message, now);
  if (!out) return out;
  if (auto saved = store.save_sender_key(sender, *record); !saved)
    return tl::unexpected(saved.error());
  return out;
}

}  // namespace sotto::protocol
