#include "output.h"

#include "terminal.h"

namespace sotto::cli {

nlohmann::json message_json(const Message& m) {
  return {{"id", m.id},
          {"from", m.from},
          {"device", m.device},
          {"timestamp", m.timestamp},
          {"serverTimestamp", m.server_timestamp},
          {"body", m.body},
          {"conversation", m.conversation},
          {"outgoing", m.outgoing}};
}

nlohmann::json event_json(const Event& e) {
  nlohmann::json j;
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
  }
  if (e.cursor != 0) j["cursor"] = e.cursor;
  return j;
}

std::string message_text(const Message& m, const std::string& self) {
  const std::string when = format_time(m.timestamp);
  const std::string body = sanitize(m.body);
  if (m.outgoing) {
    const std::string who = m.from == self ? "you" : sanitize(m.from, false);
    std::string line = when + "  " + who;
    if (m.device != 0 && !m.id.starts_with("local-"))
      line += " (device " + std::to_string(m.device) + ")";
    return line + " -> " + sanitize(m.conversation, false) + ": " + body;
  }
  return when + "  " + sanitize(m.from, false) + " (device " + std::to_string(m.device) +
         "): " + body;
}

std::string event_text(const Event& e, const std::string& self) {
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
    case Event::Kind::server_key_changed:
      return "* " + sanitize(e.detail, false);
    case Event::Kind::connected:
      return "* connected";
    case Event::Kind::disconnected:
      return "* disconnected: " + sanitize(e.detail, false);
    case Event::Kind::fatal:
      return "! " + sanitize(e.detail, false);
  }
  return {};
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json error_json(const Error& e) {
  return {{"error", {{"code", std::string(to_string(e.code))}, {"message", e.message}}}};
}

}  // namespace sotto::cli
