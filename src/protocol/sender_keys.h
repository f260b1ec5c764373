// Sender Keys for group messages, in libsignal-protocol-c's format: a sender distributes its
// chain key and signing key once per group through pairwise sessions
// (SenderKeyDistributionMessage), then encrypts each group message once (SenderKeyMessage, signed
// with the sender's signing key). Record functions are pure and mutate the record only on
// success; the store functions load, call them and save. Thread-compatible.
#pragma once

#include <optional>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/rng.h"
#include "crypto/secret.h"
#include "protocol/error.h"
#include "protocol/keys.h"
#include "protocol/messages.h"
#include "protocol/ratchet_kdf.h"
#include "protocol/session_state.h"
#include "protocol/stores.h"

namespace sotto::protocol {

struct SenderKeyState {
  SenderKeyId key_id;
  ChainKey chain_key;  // index = iteration
  PublicKey signing_public;
  std::optional<PrivateKey> signing_private;  // only on our own sending state
  // With signing_private: its Edwards form, kept so that signing costs one base-point
  // multiplication instead of two (crypto::curve25519_edwards_public).
  std::optional<crypto::EdwardsPublicBytes> signing_edwards;
  std::vector<SkippedKey> skipped;  // oldest first, at most kMaxSenderMessageKeys

  [[nodiscard]] SenderKeyState clone() const;
};

class SenderKeyRecord {
 public:
  SenderKeyRecord() = default;
  SenderKeyRecord(SenderKeyRecord&&) noexcept = default;
  SenderKeyRecord& operator=(SenderKeyRecord&&) noexcept = default;
  [[nodiscard]] SenderKeyRecord clone() const;

  [[nodiscard]] bool empty() const { return states_.empty(); }
  SenderKeyState& newest() { return states_.front(); }
  [[nodiscard]] SenderKeyState* find(SenderKeyId id);
  // Adds a state in front, dropping the oldest beyond kMaxSenderKeyStates.
  void add(SenderKeyState state);
  void remove(SenderKeyId id);

  [[nodiscard]] crypto::SecretBuffer encode() const;
  [[nodiscard]] static tl::expected<SenderKeyRecord, Error> decode(ByteView bytes);

 private:
  std::vector<SenderKeyState> states_;  // most recent first, at most kMaxSenderKeyStates
};

// Creates our sending state if the record has none, and returns the distribution message for it.
[[nodiscard]] SenderKeyDistributionMessage sender_key_distribution(SenderKeyRecord& own,
                                                                   crypto::Rng& rng);
// Installs a sender's state. A repeat of a state we already hold keeps ours (which may have
// advanced); a different signing key under the same id replaces it.
void process_sender_key_distribution(SenderKeyRecord& record,
                                     const SenderKeyDistributionMessage& skdm);
[[nodiscard]] tl::expected<Bytes, Error> group_encrypt(SenderKeyRecord& own, ByteView plaintext,
                                                       crypto::Rng& rng);
[[nodiscard]] tl::expected<crypto::SecretBuffer, Error> group_decrypt(SenderKeyRecord& record,
                                                                      ByteView message,
                                                                      std::uint64_t now);

// Store-level wrappers.
[[nodiscard]] tl::expected<Bytes, Error> create_sender_key_distribution(const SenderKeyName& own,
                                                                        SenderKeyStore& store,
                                                                        crypto::Rng& rng);
[[nodiscard]] tl::expected<void, Error> process_sender_key_distribution(const SenderKeyName& sender,
                                                                        ByteView skdm,
                                                                        SenderKeyStore& store);
[[nodiscard]] tl::expected<Bytes, Error> group_encrypt(const SenderKeyName& own, ByteView plaintext,
                                                       SenderKeyStore& store, crypto::Rng& rng);
[[nodiscard]] tl::expected<crypto::SecretBuffer, Error> group_decrypt(const SenderKeyName& sender,
                                                                      ByteView message,
                                                                      SenderKeyStore& store,
                                                                      std::uint64_t now);

}  // namespace sotto::protocol
