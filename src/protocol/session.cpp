#include "protocol/session.h"

#include <algorithm>
#include <cstring>

#include "crypto/cipher.h"
#include "crypto/hash.h"
#include "protocol/limits.h"

namespace sotto::protocol {
namespace {

// X3DH key derivation (X3DH spec, section 2.2 and 3.3): F = 0xFF * 32 prepended to the DH
// outputs, HKDF with a zero salt and info "WhisperText", 64 bytes -> root key, chain key.
// A post-quantum KEM secret (PQXDH) would be appended to `secret` here.
RootStep derive_initial_keys(const crypto::SecretBuffer& secret) {
  crypto::Secret<64> okm;
  crypto::hkdf_sha256(secret.view(), {}, as_bytes("WhisperText"), okm.span());
  RootStep out;
  std::memcpy(out.root_key.data(), okm.data(), 32);
  std::memcpy(out.chain_key.key.data(), okm.data() + 32, 32);
  out.chain_key.index = 0;
  return out;
}

class SecretBuilder {
 public:
  SecretBuilder() : buf_(32 * 5) {
    std::memset(buf_.data(), 0xFF, 32);
    len_ = 32;
  }
  tl::expected<void, Error> add(tl::expected<crypto::Secret<32>, Error> dh) {
    if (!dh) return tl::unexpected(dh.error());
    std::memcpy(buf_.data() + len_, dh->data(), 32);
    len_ += 32;
    return {};
  }
  crypto::SecretBuffer finish() {
    buf_.resize(len_);
    return std::move(buf_);
  }

 private:
  crypto::SecretBuffer buf_;
  std::size_t len_ = 0;
};

// The result of decrypting with one state, not yet applied to it.
struct StateStep {
  crypto::SecretBuffer plaintext;
  std::optional<std::size_t> chain_index;     // existing receiver chain, or none for a new one
  std::optional<std::uint32_t> used_skipped;  // counter of a consumed skipped key
  std::optional<ChainKey> advanced;           // new chain key for the receiver chain
  std::vector<SkippedKey> new_skipped;        // keys skipped over on the way
  // DH ratchet step (Double Ratchet spec, section 3.5):
  std::optional<ReceiverChain> new_chain;
  std::optional<crypto::Secret<32>> new_root;
  std::optional<SenderChain> new_sender;
};

void append_skipped(std::vector<SkippedKey>& list, std::vector<SkippedKey>& added) {
  for (auto& k : added) list.push_back(std::move(k));
  if (list.size() > kMaxMessageKeys) {
    list.erase(list.begin(),
               list.begin() + static_cast<std::ptrdiff_t>(list.size() - kMaxMessageKeys));
  }
}

void apply(SessionState& state, StateStep& d, std::uint64_t now) {
  if (d.new_chain) {
    ReceiverChain chain = std::move(*d.new_chain);
    chain.chain_key = std::move(*d.advanced);
    append_skipped(chain.skipped, d.new_skipped);
    const std::uint32_t sent = state.sender_chain.chain_key.index;
    state.previous_counter = std::max<std::uint32_t>(sent, 1) - 1;
    state.add_receiver_chain(std::move(chain));
    state.sender_chain = std::move(*d.new_sender);
    state.root_key = std::move(*d.new_root);
  } else {
    ReceiverChain& chain = state.receiver_chains[*d.chain_index];
    if (d.used_skipped) {
      std::erase_if(chain.skipped,
                    [&](const SkippedKey& k) { return k.counter == *d.used_skipped; });
    } else {
      chain.chain_key = std::move(*d.advanced);
      append_skipped(chain.skipped, d.new_skipped);
    }
  }
  // The peer has answered: stop wrapping our messages in PreKeySignalMessages.
  state.pending_pre_key.reset();
  state.expire_skipped_keys(now);
}

tl::expected<StateStep, Error> decrypt_with_state(const SessionState& state,
                                                  const SignalMessage& message, crypto::Rng& rng,
                                                  std::uint64_t now) {
  if (message.version != state.version) return tl::unexpected(Error::unsupported_version);

  StateStep d;
  ChainKey chain_key;
  const ReceiverChain* existing = nullptr;
  if (auto idx = state.find_receiver_chain(message.ratchet_key)) {
    d.chain_index = *idx;
    existing = &state.receiver_chains[*idx];
    chain_key = existing->chain_key.clone();
  } else {
    // A new ratchet key from the peer: two root steps, one for their chain, one for ours.
    if (message.counter > kMaxForwardJumps) return tl::unexpected(Error::too_far_ahead);
    auto dh_recv = state.sender_chain.ratchet.agree(message.ratchet_key);
    if (!dh_recv) return tl::unexpected(dh_recv.error());
    RootStep receiving = kdf_root(state.root_key, *dh_recv);
    KeyPair our_new = KeyPair::generate(rng);
    auto dh_send = our_new.agree(message.ratchet_key);
    if (!dh_send) return tl::unexpected(dh_send.error());
    RootStep sending = kdf_root(receiving.root_key, *dh_send);
    chain_key = receiving.chain_key.clone();
    d.new_chain = ReceiverChain{message.ratchet_key, std::move(receiving.chain_key), {}};
    d.new_root = std::move(sending.root_key);
    d.new_sender = SenderChain{std::move(our_new), std::move(sending.chain_key)};
  }

  crypto::Secret<32> seed;
  if (message.counter < chain_key.index) {
    // Only an existing chain can be behind the message; look for a key kept for it.
    const SkippedKey* kept = nullptr;
    if (existing != nullptr) {
      for (const SkippedKey& k : existing->skipped) {
        if (k.counter == message.counter && k.created_at + kMaxSkippedKeyAgeSeconds >= now) {
          kept = &k;
          break;
        }
      }
    }
    if (kept == nullptr) return tl::unexpected(Error::duplicate_message);
    seed = kept->seed.clone();
    d.used_skipped = message.counter;
  } else {
    if (message.counter - chain_key.index > kMaxForwardJumps) {
      return tl::unexpected(Error::too_far_ahead);
    }
    d.new_skipped.reserve(message.counter - chain_key.index);
    while (chain_key.index < message.counter) {
      ChainStep st = chain_key.step();
      d.new_skipped.push_back({chain_key.index, std::move(st.seed), now});
      chain_key = std::move(st.next);
    }
    ChainStep st = chain_key.step();
    seed = std::move(st.seed);
    d.advanced = std::move(st.next);
  }

  const MessageKeys keys = MessageKeys::derive(seed, message.counter);
  if (!message.verify_mac(state.remote_identity, state.local_identity, keys.mac_key)) {
    return tl::unexpected(Error::bad_mac);
  }
  auto plaintext = crypto::aes256_cbc_open(
      keys.cipher_key, std::span<const std::uint8_t, 16>(keys.iv.data(), 16), message.ciphertext);
  if (!plaintext) return tl::unexpected(Error::bad_ciphertext);
  d.plaintext = std::move(*plaintext);
  return d;
}

}  // namespace

tl::expected<SessionState, Error> initialize_alice_session(const AliceParameters& p,
                                                           crypto::Rng& rng) {
  SecretBuilder secret;
  if (auto r = secret.add(p.our_identity.agree(p.their_signed_pre_key)); !r)
    return tl::unexpected(r.error());
  if (auto r = secret.add(p.our_base_key.agree(p.their_identity)); !r)
    return tl::unexpected(r.error());
  if (auto r = secret.add(p.our_base_key.agree(p.their_signed_pre_key)); !r)
    return tl::unexpected(r.error());
  if (p.their_one_time_pre_key) {
    if (auto r = secret.add(p.our_base_key.agree(*p.their_one_time_pre_key)); !r)
      return tl::unexpected(r.error());
  }
  RootStep initial = derive_initial_keys(secret.finish());

  SessionState state;
  state.version = kMessageVersion;
  state.local_identity = p.our_identity.public_key;
  state.remote_identity = p.their_identity;
  state.add_receiver_chain(ReceiverChain{p.their_ratchet_key, std::move(initial.chain_key), {}});

  // Alice takes the first DH ratchet step at once, so her first message already uses a fresh
  // ratchet key.
  KeyPair sending_ratchet = KeyPair::generate(rng);
  auto dh = sending_ratchet.agree(p.their_ratchet_key);
  if (!dh) return tl::unexpected(dh.error());
  RootStep sending = kdf_root(initial.root_key, *dh);
  state.root_key = std::move(sending.root_key);
  state.sender_chain = SenderChain{std::move(sending_ratchet), std::move(sending.chain_key)};
  state.alice_base_key = p.our_base_key.public_key;
  return state;
}

tl::expected<SessionState, Error> initialize_bob_session(const BobParameters& p) {
  SecretBuilder secret;
  if (auto r = secret.add(p.our_signed_pre_key.agree(p.their_identity)); !r)
    return tl::unexpected(r.error());
  if (auto r = secret.add(p.our_identity.agree(p.their_base_key)); !r)
    return tl::unexpected(r.error());
  if (auto r = secret.add(p.our_signed_pre_key.agree(p.their_base_key)); !r)
    return tl::unexpected(r.error());
  if (p.our_one_time_pre_key != nullptr) {
    if (auto r = secret.add(p.our_one_time_pre_key->agree(p.their_base_key)); !r)
      return tl::unexpected(r.error());
  }
  RootStep initial = derive_initial_keys(secret.finish());

  SessionState state;
  state.version = kMessageVersion;
  state.local_identity = p.our_identity.public_key;
  state.remote_identity = p.their_identity;
  state.root_key = std::move(initial.root_key);
  state.sender_chain = SenderChain{p.our_ratchet_key.clone(), std::move(initial.chain_key)};
  state.alice_base_key = p.their_base_key;
  return state;
}

tl::expected<CiphertextMessage, Error> encrypt(SessionRecord& record, ByteView plaintext) {
  if (!record.has_current()) return tl::unexpected(Error::no_session);
  if (plaintext.size() > kMaxMessageBytes - 1024) return tl::unexpected(Error::too_large);
  SessionState& state = record.current();
  ChainKey& ck = state.sender_chain.chain_key;
  ChainStep step = ck.step();
  const MessageKeys keys = MessageKeys::derive(step.seed, ck.index);
  Bytes ciphertext = crypto::aes256_cbc_seal(
      keys.cipher_key, std::span<const std::uint8_t, 16>(keys.iv.data(), 16), plaintext);
  SignalMessage message = SignalMessage::create(
      state.sender_chain.ratchet.public_key, ck.index, state.previous_counter,
      std::move(ciphertext), keys.mac_key, state.local_identity, state.remote_identity);
  ck = std::move(step.next);
  if (state.pending_pre_key) {
    const PendingPreKey& p = *state.pending_pre_key;
    PreKeySignalMessage wrapped =
        PreKeySignalMessage::create(state.local_registration_id, p.pre_key_id, p.signed_pre_key_id,
                                    p.base_key, state.local_identity, std::move(message));
    return CiphertextMessage{MessageType::pre_key, std::move(wrapped.serialized)};
  }
  return CiphertextMessage{MessageType::signal, std::move(message.serialized)};
}

tl::expected<Decrypted, Error> decrypt(SessionRecord& record, const SignalMessage& message,
                                       crypto::Rng& rng, std::uint64_t now) {
  if (!record.has_current() && record.previous().empty()) return tl::unexpected(Error::no_session);
  std::optional<Error> first_error;
  if (record.has_current()) {
    auto d = decrypt_with_state(record.current(), message, rng, now);
    if (d) {
      apply(record.current(), *d, now);
      return Decrypted{std::move(d->plaintext), record.current().remote_identity};
    }
    // A replay of a message the current state already consumed is reported as such.
    if (d.error() == Error::duplicate_message) return tl::unexpected(d.error());
    first_error = d.error();
  }
  for (std::size_t i = 0; i < record.previous().size(); ++i) {
    SessionState& state = record.previous()[i];
    auto d = decrypt_with_state(state, message, rng, now);
    if (d) {
      apply(state, *d, now);
      Decrypted out{std::move(d->plaintext), state.remote_identity};
      const bool same_identity =
          !record.has_current() || record.current().remote_identity == state.remote_identity;
      if (same_identity) record.promote_previous(i);
      return out;
    }
    if (!first_error) first_error = d.error();
  }
  return tl::unexpected(first_error.value_or(Error::no_session));
}

tl::expected<void, Error> process_pre_key_bundle(const Address& remote, const PreKeyBundle& bundle,
                                                 SessionStores& stores, crypto::Rng& rng,
                                                 const Clock& clock) {
  auto trusted =
      stores.identities.is_trusted_identity(remote, bundle.identity_key, Direction::sending);
  if (!trusted) return tl::unexpected(trusted.error());
  if (!*trusted) return tl::unexpected(Error::untrusted_identity);
  if (auto ok = bundle.verify_signature(); !ok) return tl::unexpected(ok.error());

  auto identity = stores.identities.identity_key_pair();
  if (!identity) return tl::unexpected(identity.error());
  auto registration_id = stores.identities.local_registration_id();
  if (!registration_id) return tl::unexpected(registration_id.error());
  auto loaded = stores.sessions.load_session(remote);
  if (!loaded) return tl::unexpected(loaded.error());

  const KeyPair base_key = KeyPair::generate(rng);
  auto state = initialize_alice_session(
      AliceParameters{*identity, base_key, bundle.identity_key, bundle.signed_pre_key,
                      bundle.pre_key, bundle.signed_pre_key},
      rng);
  if (!state) return tl::unexpected(state.error());
  state->pending_pre_key =
      PendingPreKey{bundle.pre_key ? bundle.pre_key_id : std::nullopt, bundle.signed_pre_key_id,
                    base_key.public_key, clock.now_seconds()};
  state->local_registration_id = *registration_id;
  state->remote_registration_id = bundle.registration_id;

  SessionRecord record = loaded->has_value() ? std::move(**loaded) : SessionRecord{};
  record.promote_state(std::move(*state));
  if (auto saved = stores.sessions.save_session(remote, record); !saved) {
    return tl::unexpected(saved.error());
  }
  if (auto saved = stores.identities.save_identity(remote, bundle.identity_key); !saved) {
    return tl::unexpected(saved.error());
  }
  return {};
}

tl::expected<CiphertextMessage, Error> encrypt(const Address& remote, ByteView plaintext,
                                               SessionStores& stores) {
  auto loaded = stores.sessions.load_session(remote);
  if (!loaded) return tl::unexpected(loaded.error());
  if (!loaded->has_value() || !(*loaded)->has_current()) return tl::unexpected(Error::no_session);
  SessionRecord& record = **loaded;
  auto trusted = stores.identities.is_trusted_identity(remote, record.current().remote_identity,
                                                       Direction::sending);
  if (!trusted) return tl::unexpected(trusted.error());
  if (!*trusted) return tl::unexpected(Error::untrusted_identity);
  auto out = encrypt(record, plaintext);
  if (!out) return out;
  if (auto saved = stores.sessions.save_session(remote, record); !saved) {
    return tl::unexpected(saved.error());
  }
  return out;
}

tl::expected<Decrypted, Error> decrypt_signal_message(const Address& remote, ByteView bytes,
                                                      SessionStores& stores, crypto::Rng& rng,
                                                      const Clock& clock) {
  auto message = SignalMessage::decode(bytes);
  if (!message) return tl::unexpected(message.error());
  auto loaded = stores.sessions.load_session(remote);
  if (!loaded) return tl::unexpected(loaded.error());
  if (!loaded->has_value()) return tl::unexpected(Error::no_session);
  SessionRecord& record = **loaded;
  auto decrypted = decrypt(record, *message, rng, clock.now_seconds());
  if (!decrypted) return decrypted;
  auto trusted =
      stores.identities.is_trusted_identity(remote, decrypted->identity, Direction::receiving);
  if (!trusted) return tl::unexpected(trusted.error());
  if (!*trusted) return tl::unexpected(Error::untrusted_identity);
  if (auto saved = stores.sessions.save_session(remote, record); !saved) {
    return tl::unexpected(saved.error());
  }
  return decrypted;
}

tl::expected<Decrypted, Error> decrypt_pre_key_message(const Address& remote, ByteView bytes,
                                                       SessionStores& stores, crypto::Rng& rng,
                                                       const Clock& clock) {
  auto message = PreKeySignalMessage::decode(bytes);
  if (!message) return tl::unexpected(message.error());
  auto trusted =
      stores.identities.is_trusted_identity(remote, message->identity_key, Direction::receiving);
  if (!trusted) return tl::unexpected(trusted.error());
  if (!*trusted) return tl::unexpected(Error::untrusted_identity);

  auto loaded = stores.sessions.load_session(remote);
  if (!loaded) return tl::unexpected(loaded.error());
  SessionRecord record = loaded->has_value() ? std::move(**loaded) : SessionRecord{};
  const std::uint64_t now = clock.now_seconds();

  std::optional<PreKeyId> consumed_pre_key;
  tl::expected<Decrypted, Error> plaintext = tl::unexpected(Error::no_session);
  if (record.has_state_for(message->version, message->base_key)) {
    // A re-sent initiation for a session we already built: decrypt with what we have. The outer
    // identity key is not covered by the inner MAC, so it must be the one the session was built
    // with; otherwise a replayed message could carry a substituted identity into save_identity.
    if (!record.identity_matches(message->base_key, message->identity_key)) {
      return tl::unexpected(Error::bad_mac);
    }
    plaintext = decrypt(record, message->message, rng, now);
  } else {
    auto signed_pre_key = stores.signed_pre_keys.load_signed_pre_key(message->signed_pre_key_id);
    if (!signed_pre_key) return tl::unexpected(signed_pre_key.error());
    if (!signed_pre_key->has_value()) return tl::unexpected(Error::unknown_signed_pre_key);
    std::optional<PreKeyRecord> one_time;
    if (message->pre_key_id) {
      auto pk = stores.pre_keys.load_pre_key(*message->pre_key_id);
      if (!pk) return tl::unexpected(pk.error());
      if (!pk->has_value()) return tl::unexpected(Error::unknown_pre_key);
      one_time = std::move(**pk);
    }
    auto identity = stores.identities.identity_key_pair();
    if (!identity) return tl::unexpected(identity.error());
    auto registration_id = stores.identities.local_registration_id();
    if (!registration_id) return tl::unexpected(registration_id.error());

    const KeyPair& spk = (*signed_pre_key)->key_pair;
    auto state = initialize_bob_session(BobParameters{*identity, spk,
                                                      one_time ? &one_time->key_pair : nullptr, spk,
                                                      message->identity_key, message->base_key});
    if (!state) return tl::unexpected(state.error());
    state->local_registration_id = *registration_id;
    state->remote_registration_id = message->registration_id;

    auto d = decrypt_with_state(*state, message->message, rng, now);
    if (!d) return tl::unexpected(d.error());
    apply(*state, *d, now);
    record.promote_state(std::move(*state));
    plaintext = Decrypted{std::move(d->plaintext), message->identity_key};
    consumed_pre_key = message->pre_key_id;
  }
  if (!plaintext) return plaintext;

  if (auto saved = stores.sessions.save_session(remote, record); !saved) {
    return tl::unexpected(saved.error());
  }
  if (auto saved = stores.identities.save_identity(remote, message->identity_key); !saved) {
    return tl::unexpected(saved.error());
  }
  if (consumed_pre_key) {
    if (auto removed = stores.pre_keys.remove_pre_key(*consumed_pre_key); !removed) {
      return tl::unexpected(removed.error());
    }
  }
  return plaintext;
}

}  // namespace sotto::protocol
