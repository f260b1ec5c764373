// How the sotto CLI shows messages and events: one JSON object per line (--json, the daemon) or
// one human line (sanitised for the terminal).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "sotto/client.h"

namespace sotto::cli {

[[nodiscard]] nlohmann::json message_json(const Message& m);
// {"type": "message" | "error" | "identityChanged" | ..., ...}
[[nodiscard]] nlohmann::json event_json(const Event& e);
// A human line (or two) for an event; `self` is our username.
[[nodiscard]] std::string event_text(const Event& e, const std::string& self);
[[nodiscard]] std::string message_text(const Message& m, const std::string& self);
// Serialises without throwing on invalid UTF-8 (replaced by U+FFFD): peers choose the bytes.
[[nodiscard]] std::string dump(const nlohmann::json& j);
[[nodiscard]] nlohmann::json error_json(const Error& e);

}  // namespace sotto::cli
