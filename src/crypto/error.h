// Errors of the crypto layer. Error values never carry key material or input bytes.
#pragma once

#include <string_view>

namespace sotto::crypto {

enum class Error {
  invalid_key,        // a public key that is not a usable curve point (wrong size, low order)
  bad_signature,      // signature verification failed
  bad_mac,            // authentication tag or MAC mismatch
  bad_padding,        // CBC padding invalid after decryption
  invalid_length,     // an input or output length the primitive does not accept
  library_failure,    // libsodium or OpenSSL reported an internal failure
  stream_truncated,   // a secretstream ended before its final message
  stream_closed,      // a secretstream message after the final one, or after a failure
  unexpected_tag,     // an authentic secretstream message with a tag our writers never set
};

std::string_view to_string(Error e);

}  // namespace sotto::crypto
