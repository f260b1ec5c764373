#include "crypto/error.h"

namespace sotto::crypto {

std::string_view to_string(Error e) {
  switch (e) {
    case Error::invalid_key: return "invalid key";
    case Error::bad_signature: return "bad signature";
    case Error::bad_mac: return "bad MAC";
    case Error::bad_padding: return "bad padding";
    case Error::invalid_length: return "invalid length";
    case Error::library_failure: return "crypto library failure";
    case Error::stream_truncated: return "encrypted stream ends before its final message";
    case Error::stream_closed: return "encrypted stream already ended or failed";
    case Error::unexpected_tag: return "encrypted stream message with an unexpected tag";
  }
  return "unknown crypto error";
}

}  // namespace sotto::crypto
