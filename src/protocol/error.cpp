#include "protocol/error.h"

namespace sotto::protocol {

std::string_view to_string(Error e) {
  switch (e) {
    case Error::malformed: return "malformed message";
    case Error::too_large: return "input exceeds size limit";
    case Error::legacy_version: return "legacy message version";
    case Error::unsupported_version: return "unsupported message version";
    case Error::invalid_key: return "invalid public key";
    case Error::bad_signature: return "bad signature";
    case Error::bad_mac: return "bad message MAC";
    case Error::bad_ciphertext: return "undecryptable ciphertext";
    case Error::duplicate_message: return "duplicate message";
    case Error::too_far_ahead: return "message too far ahead of chain";
    case Error::no_session: return "no session";
    case Error::untrusted_identity: return "untrusted identity key";
    case Error::unknown_pre_key: return "unknown one-time prekey";
    case Error::unknown_signed_pre_key: return "unknown signed prekey";
    case Error::no_sender_key: return "no sender key state";
    case Error::store_failure: return "store failure";
  }
  return "unknown protocol error";
}

Error from_crypto(crypto::Error e) {
  switch (e) {
    case crypto::Error::invalid_key: return Error::invalid_key;
    case crypto::Error::bad_signature: return Error::bad_signature;
    case crypto::Error::bad_mac: return Error::bad_mac;
    case crypto::Error::bad_padding: return Error::bad_ciphertext;
    case crypto::Error::invalid_length: return Error::malformed;
    case crypto::Error::library_failure: return Error::store_failure;
    // No protocol code uses a secretstream; these cannot reach it.
    case crypto::Error::stream_truncated:
    case crypto::Error::stream_closed:
    case crypto::Error::unexpected_tag: return Error::malformed;
  }
  return Error::malformed;
}

}  // namespace sotto::protocol
