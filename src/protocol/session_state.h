// Session state of the Double Ratchet with one peer device, and the record that holds the
// current state plus archived ones (Sesame's active and inactive sessions, Sesame spec section
// 3). A record is what a SessionStore loads and saves; encode()/decode() give its storage form
// (proto/storage.proto), which holds private keys and must be encrypted at rest by the store.
// Plain values, move-only because they hold secrets; thread-compatible.
#pragma once

#include <optional>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/secret.h"
#include "protocol/error.h"
#include "protocol/keys.h"
#include "protocol/ratchet_kdf.h"
#include "protocol/types.h"

namespace sotto::protocol {

// A message key kept for a message that has not arrived yet (out-of-order delivery).
struct SkippedKey {
  std::uint32_t counter = 0;
  crypto::Secret<32> seed;
  std::uint64_t created_at = 0;
  [[nodiscard]] SkippedKey clone() const { return {counter, seed.clone(), created_at}; }
};

struct ReceiverChain {
  PublicKey their_ratchet_key;
  ChainKey chain_key;
  // Oldest first. A vector rather than a deque: records are decoded and destroyed around every
  // message, and libstdc++'s deque allocates even when empty (and again on every move).
  std::vector<SkippedKey> skipped;
  [[nodiscard]] ReceiverChain clone() const;
};

struct SenderChain {
  KeyPair ratchet;
  ChainKey chain_key;
  [[nodiscard]] SenderChain clone() const { return {ratchet.clone(), chain_key.clone()}; }
};

// Set on the initiator's state until the peer answers: every message is then wrapped in a
// PreKeySignalMessage so the peer can build the session from any of them.
struct PendingPreKey {
  std::optional<PreKeyId> pre_key_id;
  SignedPreKeyId signed_pre_key_id;
  PublicKey base_key;
  std::uint64_t created_at = 0;
};

struct SessionState {
  std::uint32_t version = 3;
  PublicKey local_identity;
  PublicKey remote_identity;
  crypto::Secret<32> root_key;
  std::uint32_t previous_counter = 0;
  SenderChain sender_chain;
  std::vector<ReceiverChain> receiver_chains;  // oldest first, at most kMaxReceiverChains
  std::optional<PendingPreKey> pending_pre_key;
  RegistrationId local_registration_id;
  RegistrationId remote_registration_id;
  PublicKey alice_base_key;  // identifies the X3DH run that created this state

  [[nodiscard]] SessionState clone() const;
  // Index of the receiver chain for `their_ratchet_key`, if any.
  [[nodiscard]] std::optional<std::size_t> find_receiver_chain(const PublicKey& key) const;
  // Appends a chain, dropping the oldest beyond kMaxReceiverChains.
  void add_receiver_chain(ReceiverChain chain);
  // Deletes skipped keys older than kMaxSkippedKeyAgeSeconds.
  void expire_skipped_keys(std::uint64_t now);
};

class SessionRecord {
 public:
  SessionRecord() = default;
  SessionRecord(SessionRecord&&) noexcept = default;
  SessionRecord& operator=(SessionRecord&&) noexcept = default;
  [[nodiscard]] SessionRecord clone() const;

  [[nodiscard]] bool has_current() const { return current_.has_value(); }
  SessionState& current() { return *current_; }
  const SessionState& current() const { return *current_; }
  std::vector<SessionState>& previous() { return previous_; }
  const std::vector<SessionState>& previous() const { return previous_; }

  // Archives the current state (if any) and makes `state` current.
  void promote_state(SessionState state);
  // Makes previous()[i] current and archives the old current state.
  void promote_previous(std::size_t i);
  // Archives the current state, leaving none current (used when a peer's identity resets).
  void archive_current();
  // True when some state was created by the X3DH run with this base key (a re-sent
  // PreKeySignalMessage must not build a second state).
  [[nodiscard]] bool has_state_for(std::uint32_t version, const PublicKey& alice_base_key) const;
  // True when every state created by the X3DH run with this base key has this remote identity.
  [[nodiscard]] bool identity_matches(const PublicKey& alice_base_key,
                                      const PublicKey& remote_identity) const;

  // The storage form holds private keys, so it comes back in wiped-on-release memory.
  [[nodiscard]] crypto::SecretBuffer encode() const;
  [[nodiscard]] static tl::expected<SessionRecord, Error> decode(ByteView bytes);
  // The same, into an existing record (a store that hands out the record it decodes saves
  // moving it). REQUIRES: `out` is empty (default-constructed). On error `out` is unspecified.
  [[nodiscard]] static tl::expected<void, Error> decode(ByteView bytes, SessionRecord& out);

 private:
  std::optional<SessionState> current_;
  std::vector<SessionState> previous_;  // most recent first, at most kMaxArchivedStates
};

}  // namespace sotto::protocol
