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
  switch (e.kind) {
    case Event::Kind::message: {
      nlohmann::json j = message_json(e.message);
      j["type"] = "message";
      return j;
    }
    case Event::Kind::decrypt_failed:
      return {{"type", "error"},
              {"id", e.message.id},
              {"from", e.message.from},
              {"device", e.message.device},
              {"timestamp", e.message.timestamp},
              {"error", e.detail},
              {"untrustedIdentity", e.untrusted_identity}};
    case Event::Kind::identity_changed:
      return {{"type", "identityChanged"}, {"user", e.message.from}, {"device", e.message.device}};
    case Event::Kind::connected:
      return {{"type", "connection"}, {"state", "connected"}};
    case Event::Kind::disconnected:
      return {{"type", "connection"}, {"state", "disconnected"}, {"detail", e.detail}};
    case Event::Kind::fatal:
      return {{"type", "fatal"}, {"error", e.detail}};
  }
  return {};
}

std::string message_text(const Message& m, const std::string& self) {
  const std::string when = format_time(m.timestamp);
  const std::string body = sanitize(m.body);
  if (m.outgoing) {
    const std::string who = m.from == self ? "you" : sanitize(m.from, false);
    std::string line = when + "  " + who;
    if (m.device != 0 && !m.id.starts_with("local-")) line += " (device " + std::to_string(m.device) + ")";
    return line + " -> " + sanitize(m.conversation, false) + ": " + body;
  }
  return when + "  " + sanitize(m.from, false) + " (device " + std::to_string(m.device) + "): " + body;
}

std::string event_text(const Event& e, const std::string& self) {
  const std::string from = sanitize(e.message.from, false);
  switch (e.kind) {
    case Event::Kind::message:
      return message_text(e.message, self);
    case Event::Kind::decrypt_failed: {
      std::string text = "! a message from " + from + " (device " +
                         std::to_string(e.message.device) + ") could not be read: " + e.detail;
      if (e.untrusted_identity) {
        text += "\n! " + from + "'s safety number changed. Compare it with `sotto safety-number " +
                from + "`, then accept the new key with `sotto trust " + from + "`.";
      }
      return text;
    }
    case Event::Kind::identity_changed:
      return "! " + from + "'s safety number changed. Compare it with `sotto safety-number " + from +
             "`; `sotto trust " + from + "` marks it verified.";
    case Event::Kind::connected:
      return "* connected";
    case Event::Kind::disconnected:
      return "* disconnected: " + sanitize(e.detail, false);
    case Event::Kind::fatal:
      return "! " + e.detail;
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
