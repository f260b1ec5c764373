// Base64url without padding (RFC 4648 section 5), by libsodium: binary values carried in text,
// such as the login proof in a WebSocket upgrade request's Authorization header.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "crypto/bytes.h"

namespace sotto::crypto {

[[nodiscard]] std::string base64url_encode(ByteView bytes);
// Strict: only the URL-safe alphabet, no padding, no whitespace, nothing after the value, and at
// most `max_bytes` decoded. Nullopt otherwise.
[[nodiscard]] std::optional<Bytes> base64url_decode(std::string_view text, std::size_t max_bytes);

}  // namespace sotto::crypto
