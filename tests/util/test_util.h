// Helpers shared by the test executables: hex, vector files, and a two-party protocol fixture.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "crypto/bytes.h"

namespace sotto::testing {

Bytes from_hex(std::string_view hex);
std::string to_hex(ByteView bytes);
// Loads tests/vectors/<name>.
nlohmann::json load_vectors(const std::string& name);

}  // namespace sotto::testing
