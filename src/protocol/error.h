// Errors of the protocol layer. Values name what went wrong, never with whose key or which
// bytes: error text reaches logs and must carry no key material, plaintext or user identifier.
#pragma once

#include <string_view>

#include "crypto/error.h"

namespace sotto::protocol {

enum class Error {
  malformed,             // bytes that do not decode, missing fields, wrong sizes, trailing data
  too_large,             // input above a named size limit, rejected before any work
  legacy_version,        // a message version this library no longer accepts (<= 2)
  unsupported_version,   // a message version from the future
  invalid_key,           // a public key that is not a usable Curve25519 point
  bad_signature,         // a prekey or sender key signature that does not verify
  bad_mac,               // a message MAC mismatch (tampered, or the wrong session)
  bad_ciphertext,        // authenticated but undecryptable body (padding)
  duplicate_message,     // a message key already used (a replay or a duplicate delivery)
  too_far_ahead,         // a counter beyond the forward-jump limit
  no_session,            // no session with this address
  untrusted_identity,    // the peer's identity key changed and the trust policy refuses it
  unknown_pre_key,       // a PreKeySignalMessage names a one-time prekey we do not have
  unknown_signed_pre_key,// ... or a signed prekey we do not have
  no_sender_key,         // no sender key state for this sender and distribution
  store_failure,         // a store interface reported a failure
};

std::string_view to_string(Error e);

// Maps crypto failures into protocol errors at the layer boundary.
Error from_crypto(crypto::Error e);

}  // namespace sotto::protocol
