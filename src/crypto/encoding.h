// Text forms of binary values, in one place for every layer: lower-case hex (fingerprints, ids
// in logs and JSON) and RFC 4648 base32 (link codes, recovery codes). Base64url, which the login
// proof in an upgrade request uses, is in base64.h (included here). Pure functions;
// thread-safe. Not for secrets that must not linger: the results are ordinary strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "crypto/base64.h"
#include "crypto/bytes.h"

namespace sotto::crypto {

// Lower case, two digits a byte.
[[nodiscard]] std::string to_hex(ByteView bytes);
// Either case; nullopt on an odd length or a character that is not a hex digit.
[[nodiscard]] std::optional<Bytes> from_hex(std::string_view text);

// RFC 4648 base32 (upper case, no padding).
[[nodiscard]] std::string base32_encode(ByteView bytes);
// Case-insensitive; nullopt on a character outside the alphabet or leftover bits that are not 0.
[[nodiscard]] std::optional<Bytes> base32_decode(std::string_view text);

}  // namespace sotto::crypto
