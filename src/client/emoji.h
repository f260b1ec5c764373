// What a reaction may be: one emoji (docs/messages.md, "Reactions"). A pure check on untrusted
// text, used where a reaction is sent and where one arrives. Thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace sotto::client {

// Empty when `text` is one emoji; otherwise why not, as a clause for an error message ("it is
// empty", "it is text, not an emoji", ...). One emoji is one emoji character, optionally with a
// variation selector (U+FE0F) and a skin tone, joined to further such characters by U+200D (a
// family, a profession); a flag (two regional indicators, or a subdivision flag with its tags);
// or a keycap (0-9, # or * with U+20E3). At most kMaxEmojiBytes (content_codec.h) of valid UTF-8.
[[nodiscard]] std::string why_not_one_emoji(std::string_view text);

}  // namespace sotto::client
