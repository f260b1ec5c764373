// Checks on text that users type and that other devices send: UTF-8 validity (RFC 3629) and its
// code points. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sotto::client {

// RFC 3629 section 4: every sequence in its shortest form, no surrogate (U+D800..U+DFFF), nothing
// above U+10FFFF, no sequence cut short. The empty string is valid.
[[nodiscard]] bool valid_utf8(std::string_view text) noexcept;

// The code points of `text`; nullopt when it is not valid UTF-8 (as valid_utf8 decides).
[[nodiscard]] std::optional<std::u32string> decode_utf8(std::string_view text);

}  // namespace sotto::client
