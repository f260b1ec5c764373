// How the sotto CLI shows messages and events: one JSON object per line (--json, the daemon) or
// one human line (sanitised for the terminal).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "sotto/client.h"

namespace sotto::cli {

[[nodiscard]] nlohmann::json message_json(const Message& m);
// {"type": "message" | "error" | "identity_changed" | "devices_changed" | "server_key_changed" |
//  "security_alert" | "connection" | "fatal", ...}
[[nodiscard]] nlohmann::json event_json(const Event& e);
// A human line (or two) for an event; `self` is our username.
[[nodiscard]] std::string event_text(const Event& e, const std::string& self);
// "2026-12-07 09:55:00  alice (device 1): text"; a body of several lines goes on with lines that
// start with "  | ", so that none of them can pass for another message.
// `recipients`: in a group, the members our message went to (its receipts are summed up as
// "✓✓ read by 2/4"); 0 outside a group or when not known.
[[nodiscard]] std::string message_text(const Message& m, const std::string& self,
                                       std::size_t recipients = 0);
// Serialises without throwing on invalid UTF-8 (replaced by U+FFFD): peers choose the bytes.
// U+2028 and U+2029 are escaped, so that every reader sees one object per line.
[[nodiscard]] std::string dump(const nlohmann::json& j);
// {"error": {"code", "message", "hint"?}}; the hint names what to run next.
[[nodiscard]] nlohmann::json error_json(const Error& e, const std::string& hint = {});
// {"type": "security_alert", "kind", "user", "detail"} for an error of code security_alert
// (key transparency refused a contact's keys); null for any other error.
[[nodiscard]] nlohmann::json security_alert_json(const Error& e);
// The banner the CLI prints for such an error (several lines), empty for any other.
[[nodiscard]] std::string security_alert_banner(const Error& e);

// One object per contact, device or safety number (the CLI prints each on its own line).
[[nodiscard]] nlohmann::json contact_json(const Contact& c);
[[nodiscard]] nlohmann::json device_json(const Device& d);
[[nodiscard]] nlohmann::json safety_number_json(const std::string& user, const SafetyNumber& n);
// "bob  verified", "bob  safety number changed 2026-12-07 10:00:00 (not accepted yet; 2 messages
// held)", "bob  not accepted yet (the trust policy accepts only keys whose safety number you
// verified)".
[[nodiscard]] std::string contact_text(const Contact& c);
// "device 2  \"Work laptop\"  added 2026-12-07  (this device)".
[[nodiscard]] std::string device_text(const Device& d);
// What the user may do with a contact's key: verified, accepted but not verified, or changed
// and not accepted; with the commands that change it. Several lines.
[[nodiscard]] std::string safety_state_text(const std::string& user, const SafetyNumber& n);

}  // namespace sotto::cli
