// The username rule, the same on client and server (docs/architecture.md section 4): 3-32
// characters from [a-z0-9._-], starting with a letter or digit, compared case-insensitively.
// Pure; thread-safe.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sotto::contract {

inline constexpr std::size_t kMinUsernameLength = 3;
inline constexpr std::size_t kMaxUsernameLength = 32;

// Lower-cases and checks a username. Returns nullopt when invalid.
[[nodiscard]] std::optional<std::string> normalize_username(std::string_view name);

}  // namespace sotto::contract
