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
  }
  return "unknown crypto error";
}

}  // namespace sotto::crypto
