// One-to-one sessions: X3DH session setup (X3DH spec, section 3) and the Double Ratchet (Double
// Ratchet spec, sections 3.4-3.5) in the Signal v3 wire format of libsignal-protocol-c.
//
// Two levels:
//  - record functions (encrypt/decrypt on a SessionRecord) are pure: no store, no clock, no
//    global RNG. decrypt derives into temporaries, checks the MAC, decrypts, and only then
//    changes the record; on any error the record is exactly as before.
//  - store functions load the record from a SessionStore, call the record functions, check and
//    save the peer's identity through IdentityKeyStore, and save the record only on success.
// Thread-compatible: callers serialise operations on one address.
#pragma once

#include <optional>
#include <tl/expected.hpp>

#include "crypto/rng.h"
#include "crypto/secret.h"
#include "protocol/bundle.h"
#include "protocol/clock.h"
#include "protocol/error.h"
#include "protocol/messages.h"
#include "protocol/session_state.h"
#include "protocol/stores.h"

namespace sotto::protocol {

// X3DH for the initiator (Alice), from a verified bundle. Exposed for tests and vectors; most
// callers use process_pre_key_bundle.
struct AliceParameters {
  const IdentityKeyPair& our_identity;
  const KeyPair& our_base_key;
  const PublicKey& their_identity;
  const PublicKey& their_signed_pre_key;
  std::optional<PublicKey> their_one_time_pre_key;
  const PublicKey& their_ratchet_key;  // Bob's signed prekey in v3
};
[[nodiscard]] tl::expected<SessionState, Error> initialize_alice_session(
    const AliceParameters& params, crypto::Rng& rng);

struct BobParameters {
  const IdentityKeyPair& our_identity;
  const KeyPair& our_signed_pre_key;
  const KeyPair* our_one_time_pre_key;  // nullptr when none was used
  const KeyPair& our_ratchet_key;       // our signed prekey in v3
  const PublicKey& their_identity;
  const PublicKey& their_base_key;
};
[[nodiscard]] tl::expected<SessionState, Error> initialize_bob_session(const BobParameters& params);

// A decrypted message and the identity key that authenticated it: the remote identity of the
// session state that decrypted it. An archived state may hold an earlier key of the peer (a
// message sent before the peer re-installed), so this is not always the peer's current key.
struct Decrypted {
  crypto::SecretBuffer plaintext;
  PublicKey identity;
};

// --- record level -------------------------------------------------------------------------
[[nodiscard]] tl::expected<CiphertextMessage, Error> encrypt(SessionRecord& record,
                                                             ByteView plaintext);
// Tries the current state, then archived ones. An archived state that decrypts is promoted to
// current (Sesame), unless it was built with another identity key than the current state: a
// late message from the peer's earlier key must not make us send to that key again.
[[nodiscard]] tl::expected<Decrypted, Error> decrypt(SessionRecord& record,
                                                     const SignalMessage& message, crypto::Rng& rng,
                                                     std::uint64_t now);

// --- store level --------------------------------------------------------------------------
struct SessionStores {
  IdentityKeyStore& identities;
  SessionStore& sessions;
  PreKeyStore& pre_keys;
  SignedPreKeyStore& signed_pre_keys;
};

// X3DH initiator: verifies the bundle's signature and the peer's identity, starts a new session
// state (archiving any current one) and saves it.
[[nodiscard]] tl::expected<void, Error> process_pre_key_bundle(const Address& remote,
                                                               const PreKeyBundle& bundle,
                                                               SessionStores& stores,
                                                               crypto::Rng& rng,
                                                               const Clock& clock);

[[nodiscard]] tl::expected<CiphertextMessage, Error> encrypt(const Address& remote,
                                                             ByteView plaintext,
                                                             SessionStores& stores);

[[nodiscard]] tl::expected<Decrypted, Error> decrypt_signal_message(const Address& remote,
                                                                    ByteView message,
                                                                    SessionStores& stores,
                                                                    crypto::Rng& rng,
                                                                    const Clock& clock);

// X3DH responder: builds the session from the PreKeySignalMessage (unless it was already built
// from an earlier copy), decrypts, then saves the session and the identity and deletes the
// one-time prekey it consumed. Nothing is written unless decryption succeeded; the writes go to
// three stores in turn, so a caller whose store can fail mid-way wraps the call in one store
// transaction (the client store does).
[[nodiscard]] tl::expected<Decrypted, Error> decrypt_pre_key_message(const Address& remote,
                                                                     ByteView message,
                                                                     SessionStores& stores,
                                                                     crypto::Rng& rng,
                                                                     const Clock& clock);

}  // namespace sotto::protocol
