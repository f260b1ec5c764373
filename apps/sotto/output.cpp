#include "output.h"

#include <unistd.h>

#include "attach_commands.h"
#include "message_output.h"
#include "terminal.h"

namespace sotto::cli {

nlohmann::json message_json(const Message& m) {
  nlohmann::json j = {{"id", m.id},
                      {"from", m.from},
                      {"device", m.device},
                      {"timestamp", m.timestamp},
                      {"body", m.body},
                      {"conversation", m.conversation},
                      {"outgoing", m.outgoing}};
  // When the server stored it (a message received now); the history does not keep it, and a
  // 0 would read as a time.
  if (m.server_timestamp != 0) j["serverTimestamp"] = m.server_timestamp;
  if (!m.group.empty()) j["group"] = m.group;
  // What this device wrote into the history (a group change, a refusal, an unreadable message),
  // so that a program does not take it for something a user wrote.
  if (m.notice) j["kind"] = m.group.empty() ? "notice" : "group_notice";
  add_message_fields(j, m);
  if (!m.attachments.empty()) j["attachments"] = attachments_json(m.attachments);
  return j;
}

nlohmann::json event_json(const Event& e) {
  nlohmann::json j;
  if (message_event_json(e, j)) {
    if (e.cursor != 0) j["cursor"] = e.cursor;
    return j;
  }
  switch (e.kind) {
    case Event::Kind::message:
      j = message_json(e.message);
      j["type"] = "message";
      break;
    case Event::Kind::decrypt_failed:
      j = {{"type", "error"},
           {"id", e.message.id},
           {"from", e.message.from},
           {"device", e.message.device},
           {"timestamp", e.message.timestamp},
           {"error", e.detail}};
      break;
    case Event::Kind::identity_changed:
      j = {{"type", "identity_changed"},
           {"user", e.user},
           {"accepted", e.accepted},
           {"changedAt", e.changed_at},
           {"held", e.held}};
      break;
    case Event::Kind::devices_changed:
      j = {{"type", "devices_changed"}, {"added", e.added}, {"removed", e.removed}};
      break;
    case Event::Kind::security_alert:
      j = {{"type", "security_alert"}, {"kind", e.alert}, {"user", e.user}, {"detail", e.detail}};
      break;
    case Event::Kind::server_key_changed:
      j = {{"type", "server_key_changed"}, {"detail", e.detail}};
      break;
    case Event::Kind::connected:
      j = {{"type", "connection"}, {"state", "connected"}};
      break;
    case Event::Kind::disconnected:
      j = {{"type", "connection"}, {"state", "disconnected"}, {"detail", e.detail}};
      break;
    case Event::Kind::fatal:
      j = {{"type", "fatal"}, {"error", e.detail}};
      break;
    case Event::Kind::group_changed:
    case Event::Kind::group_refused:
      j = {{"type", e.kind == Event::Kind::group_changed ? "group_changed" : "group_refused"},
           {"group", e.message.group},
           {"from", e.message.from},
           {"device", e.message.device},
           {"timestamp", e.message.timestamp},
           {"detail", e.detail}};
      break;
    case Event::Kind::group_join_refused:
    case Event::Kind::group_change_dropped:
      j = {{"type", e.kind == Event::Kind::group_join_refused ? "group_join_refused"
                                                              : "group_change_dropped"},
           {"group", e.message.group},
           {"from", e.message.from},
           {"timestamp", e.message.timestamp},
           {"detail", e.detail}};
      break;
    default:  // the everyday message types: message_event_json
      break;
  }
  if (e.cursor != 0) j["cursor"] = e.cursor;
  return j;
}

namespace {

// Bold on a terminal (a message that mentions us); as it is in a pipe or a file.
std::string highlight(const std::string& text) {
  static const bool tty = isatty(STDOUT_FILENO) != 0;
  return tty ? "\x1b[1m" + text + "\x1b[0m" : text;
}

// What begins each line of a message body after its first one.
constexpr std::string_view kContinuation = "\n  | ";

// A message body made safe for a terminal, its lines after the first indented and marked: the
// sender chooses every byte of a body, and a body line that began at the left margin could pass
// for a message from someone else ("2026-12-07 09:55:00  alice (device 1): ..."). U+2028 and
// U+2029 (line and paragraph separators) break lines too.
std::string body_text(std::string_view body) {
  const std::string clean = sanitize(body);
  std::string out;
  out.reserve(clean.size());
  for (std::size_t i = 0; i < clean.size(); ++i) {
    if (clean[i] == '\n') {
      out += kContinuation;
    } else if (clean.compare(i, 3, "\xE2\x80\xA8") == 0 ||
               clean.compare(i, 3, "\xE2\x80\xA9") == 0) {
      out += kContinuation;
      i += 2;
    } else {
      out += clean[i];
    }
  }
  return out;
}

}  // namespace

std::string message_text(const Message& m, const std::string& self, std::size_t recipients) {
  // The id the commands accept (react, edit, delete, --quote) follows the time.
  const std::string when = format_time(m.timestamp) + " " + message_id_text(m);
  const std::string body = (m.deleted ? std::string("[deleted]") : body_text(m.body)) +
                           message_extras_text(m, self, recipients);
  const std::string files =
      m.attachments.empty() ? std::string() : attachments_text(attachments_json(m.attachments));
  // A message that mentions us stands out: "@" before the time, and bold on a terminal.
  bool mentions_me = m.mentions_me;
  for (const auto& x : m.mentions) mentions_me = mentions_me || (x.user == self && !m.outgoing);
  if (!m.group.empty()) {
    // The group's short id: `sotto group list` shows which group it is.
    const std::string who = m.from == self ? "you" : sanitize(m.from, false);
    const std::string line = when + "  [group " + m.group.substr(0, 8) + "] " + who + " (device " +
                             std::to_string(m.device) + "): " + body + files;
    return mentions_me ? highlight("@ " + line) : line;
  }
  if (m.outgoing) {
    const std::string who = m.from == self ? "you" : sanitize(m.from, false);
    std::string line = when + "  " + who;
    if (m.device != 0 && !m.id.starts_with("local-"))
      line += " (device " + std::to_string(m.device) + ")";
    return line + " -> " + sanitize(m.conversation, false) + ": " + body + files;
  }
  const std::string line = when + "  " + sanitize(m.from, false) + " (device " +
                           std::to_string(m.device) + "): " + body + files;
  return mentions_me ? highlight("@ " + line) : line;
}

std::string event_text(const Event& e, const std::string& self) {
  if (std::string text; message_event_text(e, self, text)) return text;
  const std::string from = sanitize(e.message.from, false);
  const auto ids = [](const std::vector<std::uint32_t>& list) {
    std::string out;
    for (auto d : list) out += (out.empty() ? "" : ", ") + std::to_string(d);
    return out;
  };
  switch (e.kind) {
    case Event::Kind::message:
      return message_text(e.message, self);
    case Event::Kind::decrypt_failed:
      if (e.message.from.empty()) return "! " + sanitize(e.detail, false);
      return "! a message from " + from + " (device " + std::to_string(e.message.device) +
             ") could not be read: " + sanitize(e.detail, false);
    case Event::Kind::identity_changed: {
      const std::string user = sanitize(e.user, false);
      if (e.changed_at == 0 && !e.accepted) {
        // A new contact's first key, under the trust policy "never".
        std::string first = "! " + user +
                            "'s key is not accepted yet: the trust policy accepts "
                            "only keys whose safety number you verified";
        if (e.held > 0) {
          first += " (" + std::to_string(e.held) +
                   (e.held == 1 ? " message held" : " messages held") + ")";
        }
        return first + ". Compare `sotto safety-number " + user + "` with theirs, then run " +
               "`sotto trust " + user + " --safety-number DIGITS`.";
      }
      std::string text = "! " + user + "'s safety number changed";
      if (e.changed_at != 0) text += " (" + format_time(e.changed_at) + ")";
      if (e.accepted) {
        return text +
               "; the new key is accepted by your trust policy. Compare it with `sotto "
               "safety-number " +
               user + "`.";
      }
      text += ". Nothing is sent to " + user + " and nothing from the new key is shown";
      if (e.held > 0) {
        text += " (" + std::to_string(e.held) + (e.held == 1 ? " message held" : " messages held") +
                ")";
      }
      return text + " until you accept it: compare `sotto safety-number " + user +
             "` with theirs, then run `sotto trust " + user +
             " --safety-number DIGITS` (or `sotto trust " + user + "` to accept it unverified).";
    }
    case Event::Kind::devices_changed: {
      std::string text;
      if (!e.added.empty()) text += "* device " + ids(e.added) + " was added to your account";
      if (!e.removed.empty()) {
        text += std::string(text.empty() ? "* " : "; ") + "device " + ids(e.removed) +
                " was removed from your account";
      }
      return text.empty() ? "* your account's devices changed" : text;
    }
    case Event::Kind::security_alert:
      return "!!! SECURITY ALERT (" + sanitize(e.alert, false) + ") for " +
             sanitize(e.user, false) + ": " + sanitize(e.detail, false);
    case Event::Kind::server_key_changed:
      return "* " + sanitize(e.detail, false);
    case Event::Kind::connected:
      return "* connected";
    case Event::Kind::disconnected:
      return "* disconnected: " + sanitize(e.detail, false);
    case Event::Kind::fatal:
      return "! " + sanitize(e.detail, false);
    case Event::Kind::group_changed:
      return "* [group " + e.message.group.substr(0, 8) + "] " + sanitize(e.detail, false);
    case Event::Kind::group_refused:
      return "! [group " +
             (e.message.group.empty() ? std::string("?") : e.message.group.substr(0, 8)) +
             "] security notice: refused " + sanitize(e.detail, false);
    case Event::Kind::group_join_refused:
      return "! [group " + e.message.group.substr(0, 8) + "] " + sanitize(e.message.from, false) +
             " refused our request to join: " + sanitize(e.detail, false);
    case Event::Kind::group_change_dropped:
      return "! [group " + e.message.group.substr(0, 8) + "] " + sanitize(e.detail, false);
    default:  // the everyday message types: message_event_text
      break;
  }
  return {};
}

std::string dump(const nlohmann::json& j) {
  std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // U+2028 and U+2029 are valid in a JSON string, but readers that split lines the Unicode way
  // (JavaScript before ES2019, Python's str.splitlines) would cut a line in two: escape them.
  // Their UTF-8 bytes occur only inside strings, as everything outside strings is ASCII.
  for (std::size_t at = text.find("\xE2\x80"); at != std::string::npos;
       at = text.find("\xE2\x80", at + 1)) {
    if (at + 2 >= text.size()) break;
    const char last = text[at + 2];
    if (last == '\xA8' || last == '\xA9')
      text.replace(at, 3, last == '\xA8' ? "\\u2028" : "\\u2029");
  }
  return text;
}

nlohmann::json error_json(const Error& e, const std::string& hint) {
  nlohmann::json error = {{"code", std::string(to_string(e.code))}, {"message", e.message}};
  if (!hint.empty()) error["hint"] = hint;
  return {{"error", std::move(error)}};
}

nlohmann::json security_alert_json(const Error& e) {
  const auto alert = security_alert_of(e);
  if (!alert) return nullptr;
  return {{"type", "security_alert"},
          {"kind", alert->kind},
          {"user", alert->user},
          {"detail", alert->detail}};
}

std::string security_alert_banner(const Error& e) {
  const auto alert = security_alert_of(e);
  if (!alert) return {};
  const std::string rule(72, '!');
  const std::string what =
      alert->kind == "unlogged_key"
          ? "\n!! These keys are not proven by the server's key transparency log (or by the "
            "auditor this device requires). Nothing was encrypted to them."
          : "";
  return rule + "\n!! SECURITY ALERT (" + sanitize(alert->kind, false) + ") for " +
         sanitize(alert->user, false) + "\n!! " + sanitize(alert->detail, false) + what + "\n" +
         rule;
}

nlohmann::json contact_json(const Contact& c) {
  return {{"username", c.username},
          {"accepted", c.accepted},
          {"verified", c.verified},
          {"identityChangedAt", c.identity_changed_at},
          {"identityKey", c.identity_key_hex},
          {"held", c.held}};
}

nlohmann::json device_json(const Device& d) {
  return {{"id", d.id},
          {"name", d.name},
          {"primary", d.primary},
          {"current", d.current},
          {"createdDay", d.created_day},
          {"registrationId", d.registration_id}};
}

nlohmann::json safety_number_json(const std::string& user, const SafetyNumber& n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string scannable;
  for (auto b : n.scannable) {
    scannable += kHex[b >> 4];
    scannable += kHex[b & 0xF];
  }
  return {{"user", user},
          {"digits", n.digits},
          {"scannable", scannable},
          {"identityKey", n.identity_key_hex},
          {"changedAt", n.changed_at},
          {"accepted", n.accepted},
          {"verified", n.verified},
          {"held", n.held}};
}

namespace {
constexpr std::string_view kOnlyVerified =
    "the trust policy accepts only keys whose safety number you verified";

std::string held_text(std::size_t held) {
  return std::to_string(held) + (held == 1 ? " message held" : " messages held");
}
}  // namespace

std::string contact_text(const Contact& c) {
  std::string line = sanitize(c.username, false);
  if (!c.accepted && c.identity_changed_at == 0) {
    // The first key seen, under a policy that accepts only verified keys.
    line += "  not accepted yet (" + std::string(kOnlyVerified);
    if (c.held > 0) line += "; " + held_text(c.held);
    return line + ")";
  }
  if (!c.accepted) {
    line += "  safety number changed";
    if (c.identity_changed_at != 0) line += " " + format_time(c.identity_changed_at);
    line += " (not accepted yet";
    if (c.held > 0) line += "; " + held_text(c.held);
    return line + ")";
  }
  line += c.verified ? "  verified" : "  not verified";
  if (c.identity_changed_at != 0) {
    line += "  (safety number changed " + format_time(c.identity_changed_at) + ")";
  }
  return line;
}

std::string device_text(const Device& d) {
  std::string line = "device " + std::to_string(d.id);
  if (!d.name.empty()) line += "  \"" + sanitize(d.name, false) + "\"";
  if (d.primary) line += "  primary";
  line += "  added " + format_day(d.created_day);
  if (d.current) line += "  (this device)";
  return line;
}

std::string safety_state_text(const std::string& user_in, const SafetyNumber& n) {
  const std::string user = sanitize(user_in, false);
  const std::string verify = "`sotto trust " + user + " --safety-number \"DIGITS\"`";
  if (!n.accepted) {
    std::string text = "State: ";
    if (n.changed_at != 0) {
      text += user + "'s safety number changed at " + format_time(n.changed_at) +
              " and the new key is not accepted";
    } else {
      text += user + "'s key is not accepted yet (" + std::string(kOnlyVerified) + ")";
    }
    if (n.held > 0) text += " (" + held_text(n.held) + ")";
    return text + ".\nNothing is sent to " + user +
           " and nothing from that key is shown until you accept it. If the number above "
           "matches the one on " +
           user + "'s screen, run " + verify +
           " with the digits you compared (spaces allowed) to accept and verify it; `sotto "
           "trust " +
           user + "` accepts it without verifying.";
  }
  if (n.verified) return "State: verified (you compared this safety number with " + user + ").";
  std::string text = "State: accepted but not verified";
  if (n.changed_at != 0)
    text += " (the safety number changed at " + format_time(n.changed_at) + ")";
  return text + ".\nIf the number above matches the one on " + user + "'s screen, run " + verify +
         " with the digits you compared (spaces allowed) to mark " + user + " verified.";
}

}  // namespace sotto::cli
