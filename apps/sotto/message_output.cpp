#include "message_output.h"

#include "message_commands.h"
#include "output.h"
#include "terminal.h"

namespace sotto::cli {

namespace {

nlohmann::json ref_json(const MessageRef& r) {
  return {{"author", r.author}, {"timestamp", r.timestamp}};
}

std::string ref_text(const MessageRef& r) {
  return sanitize(r.author, false) + " #" + std::to_string(r.timestamp);
}

}  // namespace

void add_message_fields(nlohmann::json& j, const Message& m) {
  if (m.quote) {
    j["quote"] = ref_json(*m.quote);
    j["quote"]["text"] = m.quote_text;
    if (m.quote_deleted) j["quote"]["deleted"] = true;
  }
  if (!m.mentions.empty()) {
    auto list = nlohmann::json::array();
    for (const auto& x : m.mentions) {
      list.push_back({{"user", x.user}, {"start", x.start}, {"length", x.length}});
    }
    j["mentions"] = std::move(list);
  }
  if (m.mentions_me) j["mentionsMe"] = true;
  if (!m.reactions.empty()) {
    auto list = nlohmann::json::array();
    for (const auto& r : m.reactions) {
      list.push_back({{"user", r.user}, {"emoji", r.emoji}, {"timestamp", r.timestamp}});
    }
    j["reactions"] = std::move(list);
  }
  if (m.edited) {
    j["edited"] = true;
    j["editedAt"] = m.edited_at;
  }
  if (m.deleted) j["deleted"] = true;
  if (m.expire_timer != 0) {
    j["expireTimer"] = m.expire_timer;
    j["expiresAt"] = m.expires_at;
  }
  if (m.read_at != 0) j["readAt"] = m.read_at;
  if (!m.receipts.empty()) {
    auto list = nlohmann::json::array();
    for (const auto& r : m.receipts) {
      // A time not known yet (not delivered, not read) is left out, as serverTimestamp is.
      nlohmann::json receipt = {{"user", r.user}};
      if (r.delivered_at != 0) receipt["deliveredAt"] = r.delivered_at;
      if (r.read_at != 0) receipt["readAt"] = r.read_at;
      list.push_back(std::move(receipt));
    }
    j["receipts"] = std::move(list);
  }
}

std::string message_id_text(const Message& m) {
  return "#" + std::to_string(m.timestamp);
}

std::string receipt_mark(const Message& m, std::size_t recipients) {
  if (!m.outgoing || m.notice) return {};  // a notice is not sent, so it has no receipts
  if (recipients > 0) {
    std::size_t delivered = 0, read = 0;
    for (const auto& r : m.receipts) {
      delivered += r.delivered_at != 0 || r.read_at != 0;
      read += r.read_at != 0;
    }
    const std::string of = "/" + std::to_string(recipients);
    if (delivered == 0) return "✓ sent";
    if (read >= recipients) return "✓✓ read by " + std::to_string(read) + of;
    std::string out = "✓✓ delivered to " + std::to_string(delivered) + of;
    if (read > 0) out += ", read by " + std::to_string(read) + of;
    return out;
  }
  bool delivered = !m.receipts.empty(), read = !m.receipts.empty();
  for (const auto& r : m.receipts) {
    delivered = delivered && r.delivered_at != 0;
    read = read && r.read_at != 0;
  }
  if (read) return "✓✓ read";
  if (delivered) return "✓✓ delivered";
  return "✓ sent";
}

std::string message_extras_text(const Message& m, const std::string& self, std::size_t recipients) {
  std::string out;
  if (m.quote) {
    out += "\n  ~ reply to " + ref_text(*m.quote) + ": " +
           (m.quote_deleted ? std::string("[the original was deleted]")
                            : "\"" + sanitize(m.quote_text, false) + "\"");
  }
  std::string marks;
  const auto add = [&](const std::string& s) { marks += (marks.empty() ? "" : " · ") + s; };
  if (m.deleted) add("deleted for everyone");
  if (m.edited) add("edited " + format_time(m.edited_at));
  for (const auto& x : m.mentions) {
    add(x.user == self && !m.outgoing ? std::string("mentions YOU")
                                      : "mentions " + sanitize(x.user, false));
  }
  for (const auto& r : m.reactions) {
    add(sanitize(r.emoji, false) + " " + (r.user == self ? "you" : sanitize(r.user, false)));
  }
  if (m.outgoing && m.from == self && !m.receipts.empty()) add(receipt_mark(m, recipients));
  if (m.expire_timer != 0) {
    add(m.expires_at != 0 ? "disappears " + format_time(m.expires_at)
                          : "disappears " + duration_text(m.expire_timer) + " after reading");
  }
  if (!marks.empty()) out += "\n  ~ " + marks;
  return out;
}

bool message_event_json(const Event& e, nlohmann::json& j) {
  const auto targets = [&] {
    auto list = nlohmann::json::array();
    for (const auto& t : e.targets) list.push_back(ref_json(t));
    return list;
  };
  switch (e.kind) {
    case Event::Kind::receipt:
      j = {{"type", "receipt"},
           {"receiptType", e.read ? "read" : "delivery"},
           {"user", e.user},
           {"conversation", e.message.conversation},
           {"targets", targets()}};
      return true;
    case Event::Kind::typing:
      j = {{"type", "typing"},
           {"user", e.user},
           {"conversation", e.message.conversation},
           {"action", e.typing ? "started" : "stopped"}};
      return true;
    case Event::Kind::reaction:
      j = {{"type", "reaction"},
           {"user", e.user},
           {"conversation", e.message.conversation},
           {"emoji", e.emoji},
           {"remove", e.emoji.empty()},
           {"timestamp", e.message.timestamp},
           {"targets", targets()}};
      return true;
    case Event::Kind::edit:
      j = message_json(e.message);
      j["type"] = "edit";
      j["targets"] = targets();
      return true;
    case Event::Kind::remote_delete:
      j = {{"type", "remote_delete"},
           {"user", e.user},
           {"conversation", e.message.conversation},
           {"targets", targets()}};
      return true;
    case Event::Kind::disappearing_timer:
      j = {{"type", "disappearing_timer"},
           {"user", e.user},
           {"conversation", e.message.conversation},
           {"expireTimer", e.expire_timer}};
      return true;
    default:
      return false;
  }
}

bool message_event_text(const Event& e, const std::string& self, std::string& out) {
  const std::string who = e.user == self ? "you" : sanitize(e.user, false);
  const auto target = [&] {
    return e.targets.empty() ? std::string("a message") : ref_text(e.targets.front());
  };
  // A change of a group message carries the group's tag, as the message's own line does.
  const std::string& conversation = e.message.conversation;
  const std::string group = !e.message.group.empty()             ? e.message.group
                            : conversation.starts_with("group:") ? conversation.substr(6)
                                                                 : std::string();
  const std::string tag = group.empty() ? std::string() : "[group " + group.substr(0, 8) + "] ";
  switch (e.kind) {
    case Event::Kind::receipt: {
      std::string list;
      for (const auto& t : e.targets) list += " #" + std::to_string(t.timestamp);
      out = std::string(e.read ? "✓✓ read by " : "✓✓ delivered to ") + who + ":" + list;
      return true;
    }
    case Event::Kind::typing:
      out = "* " + who + (e.typing ? " is typing..." : " stopped typing");
      return true;
    case Event::Kind::reaction:
      out = e.emoji.empty()
                ? "* " + tag + who + " removed their reaction to " + target()
                : "* " + tag + who + " reacted " + sanitize(e.emoji, false) + " to " + target();
      return true;
    case Event::Kind::edit: {
      const std::string author = e.message.from == self ? "you" : sanitize(e.message.from, false);
      const std::string ts =
          e.targets.empty() ? std::string() : " #" + std::to_string(e.targets.front().timestamp);
      out = "* " + tag + author + " edited a message" + ts + ":\n" + message_text(e.message, self);
      return true;
    }
    case Event::Kind::remote_delete: {
      const std::string ts =
          e.targets.empty() ? std::string() : " #" + std::to_string(e.targets.front().timestamp);
      out = "* " + tag + who + " deleted a message" + ts + " for everyone";
      return true;
    }
    case Event::Kind::disappearing_timer:
      out =
          "* " + who + " set disappearing messages" +
          (e.user == e.message.conversation ? std::string()
                                            : " with " + sanitize(e.message.conversation, false)) +
          " to " + duration_text(e.expire_timer);
      return true;
    default:
      return false;
  }
}

}  // namespace sotto::cli
