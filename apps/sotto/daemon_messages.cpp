#include "daemon_messages.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "attach_commands.h"

namespace sotto::cli {

namespace {

using json = nlohmann::json;

MessageCallOutcome bad(std::string why) {
  MessageCallOutcome o;
  o.invalid_params = std::move(why);
  return o;
}

MessageCallOutcome failed(Error e) {
  MessageCallOutcome o;
  o.error = std::move(e);
  return o;
}

MessageCallOutcome ok(json result) {
  MessageCallOutcome o;
  o.result = std::move(result);
  return o;
}

const json* param(const json& params, std::initializer_list<const char*> names) {
  if (!params.is_object()) return nullptr;
  for (const char* name : names) {
    if (auto it = params.find(name); it != params.end()) return &*it;
  }
  return nullptr;
}

std::optional<std::string> string_param(const json& params,
                                        std::initializer_list<const char*> names) {
  const json* p = param(params, names);
  if (p == nullptr || !p->is_string()) return std::nullopt;
  return p->get<std::string>();
}

std::optional<std::uint64_t> number_param(const json& params,
                                          std::initializer_list<const char*> names) {
  const json* p = param(params, names);
  if (p == nullptr || !p->is_number_unsigned()) return std::nullopt;
  return p->get<std::uint64_t>();
}

std::optional<bool> bool_param(const json& params, std::initializer_list<const char*> names) {
  const json* p = param(params, names);
  if (p == nullptr || !p->is_boolean()) return std::nullopt;
  return p->get<bool>();
}

// One recipient: a username, or an array holding one (signal-cli takes arrays); or a group,
// with signal-cli's groupId ("group:" + the id, as the client names a group's conversation).
std::optional<std::string> recipient_param(const json& params) {
  if (const json* group = param(params, {"groupId"})) {
    if (param(params, {"recipient", "to", "user"}) != nullptr || !group->is_string()) {
      return std::nullopt;  // one of them, and a group id is a string
    }
    return "group:" + group->get<std::string>();
  }
  const json* p = param(params, {"recipient", "to", "user"});
  if (p == nullptr) return std::nullopt;
  if (p->is_string()) return p->get<std::string>();
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) return (*p)[0].get<std::string>();
  return std::nullopt;
}

json sent_json(const std::string& recipient, const SendResult& r) {
  json result = {{"type", "SUCCESS"}, {"timestamp", r.timestamp}, {"devices", r.devices}};
  if (recipient.rfind("group:", 0) == 0) {
    result["groupId"] = recipient.substr(6);
  } else {
    result["recipient"] = recipient;
  }
  return {{"timestamp", r.timestamp},
          {"devices", r.devices},
          {"results", json::array({std::move(result)})}};
}

// signal-cli's mention form "START:LENGTH:USER" (or an object {start, length, user}).
std::optional<Mention> mention_of(const json& m) {
  if (m.is_object()) {
    const auto start = m.find("start"), length = m.find("length"), user = m.find("user");
    if (start == m.end() || length == m.end() || user == m.end() || !start->is_number_unsigned() ||
        !length->is_number_unsigned() || !user->is_string() ||
        start->get<std::uint64_t>() > UINT32_MAX || length->get<std::uint64_t>() > UINT32_MAX) {
      return std::nullopt;
    }
    return Mention{user->get<std::string>(), start->get<std::uint32_t>(),
                   length->get<std::uint32_t>()};
  }
  if (!m.is_string()) return std::nullopt;
  const std::string& s = m.get_ref<const std::string&>();
  const auto a = s.find(':');
  const auto b = a == std::string::npos ? a : s.find(':', a + 1);
  if (b == std::string::npos) return std::nullopt;
  std::uint32_t start = 0, length = 0;
  const auto r1 = std::from_chars(s.data(), s.data() + a, start);
  const auto r2 = std::from_chars(s.data() + a + 1, s.data() + b, length);
  if (r1.ec != std::errc() || r1.ptr != s.data() + a || r2.ec != std::errc() ||
      r2.ptr != s.data() + b) {
    return std::nullopt;
  }
  return Mention{s.substr(b + 1), start, length};
}

MessageCallOutcome send(Client& client, const json& params) {
  const auto recipient = recipient_param(params);
  const auto body = string_param(params, {"message", "body"});
  if (!recipient || !body) {
    return bad(
        "send with quoteTimestamp, mention or editTimestamp needs {recipient (one) or groupId, "
        "message}");
  }
  if (const json* edit = param(params, {"editTimestamp"})) {
    if (!edit->is_number_unsigned()) return bad("editTimestamp is a message's timestamp (ms)");
    auto r = client.edit(*recipient, edit->get<std::uint64_t>(), *body);
    if (!r) return failed(r.error());
    return ok(sent_json(*recipient, *r));
  }
  SendOptions options;
  if (const json* quote = param(params, {"quoteTimestamp"})) {
    const auto author = string_param(params, {"quoteAuthor"});
    if (!quote->is_number_unsigned() || !author) {
      return bad("a quote is quoteTimestamp (ms) and quoteAuthor (a username)");
    }
    options.quote = MessageRef{*author, quote->get<std::uint64_t>()};
  }
  if (const json* mentions = param(params, {"mention", "mentions"})) {
    const json list = mentions->is_array() ? *mentions : json::array({*mentions});
    for (const auto& m : list) {
      auto mention = mention_of(m);
      if (!mention) return bad("a mention is \"START:LENGTH:USER\" (UTF-8 bytes of the message)");
      // As `sotto send --mention` makes them: the range covers "@" and the user's name.
      auto user = normalize_username(mention->user);
      if (!user) return bad("a mention names a username");
      if (recipient->starts_with("group:")) {
        // Membership first, in the words `sotto send --mention` uses.
        auto g = client.group(recipient->substr(6));
        if (!g) return failed(g.error());
        if (std::none_of(g->members.begin(), g->members.end(),
                         [&](const GroupMember& member) { return member.user == *user; })) {
          return bad("a mention names " + *user + ", who is not in the group");
        }
      }
      const std::string at = "@" + *user;
      const std::uint64_t end = std::uint64_t{mention->start} + mention->length;
      std::string covered =
          end <= body->size() ? body->substr(mention->start, mention->length) : std::string();
      for (auto& ch : covered) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (covered != at) {
        return bad("the mention of " + *user + " must cover \"" + at +
                   "\" in the message (START and LENGTH in UTF-8 bytes)");
      }
      mention->user = *user;
      options.mentions.push_back(std::move(*mention));
    }
  }
  // Files with a reply or mentions (signal-cli's "attachments": paths the daemon can read).
  if (const json* a = param(params, {"attachments", "attachment"})) {
    std::vector<std::string> files;
    const json list = a->is_array() ? *a : json::array({*a});
    for (const auto& f : list) {
      if (!f.is_string()) return bad("attachments must be a list of file paths");
      files.push_back(f.get<std::string>());
    }
    auto uploaded = upload_files(client, files, false);
    if (!uploaded) return failed(uploaded.error());
    options.attachments = std::move(*uploaded);
  }
  auto r = client.send(*recipient, *body, options);
  if (!r) return failed(r.error());
  return ok(sent_json(*recipient, *r));
}

MessageCallOutcome send_reaction(Client& client, const json& params) {
  const auto recipient = recipient_param(params);
  const auto emoji = string_param(params, {"emoji"});
  const auto author = string_param(params, {"targetAuthor"});
  const auto target = number_param(params, {"targetTimestamp"});
  const bool remove = bool_param(params, {"remove"}).value_or(false);
  if (!recipient || !author || !target || (!emoji && !remove)) {
    return bad(
        "sendReaction needs {recipient or groupId, emoji, targetAuthor, targetTimestamp} "
        "(remove: true to take the reaction back)");
  }
  auto r = client.react(*recipient, MessageRef{*author, *target}, emoji.value_or(""), remove);
  if (!r) return failed(r.error());
  return ok(sent_json(*recipient, *r));
}

MessageCallOutcome remote_delete(Client& client, const json& params) {
  const auto recipient = recipient_param(params);
  const auto target = number_param(params, {"targetTimestamp"});
  if (!recipient || !target) {
    return bad("remoteDelete needs {recipient or groupId, targetTimestamp}");
  }
  auto r = client.remote_delete(*recipient, *target);
  if (!r) return failed(r.error());
  return ok(sent_json(*recipient, *r));
}

MessageCallOutcome send_receipt(Client& client, const json& params) {
  const auto recipient = recipient_param(params);
  const json* targets = param(params, {"targetTimestamps", "targetTimestamp"});
  const auto type = string_param(params, {"type"}).value_or("read");
  std::vector<std::uint64_t> timestamps;
  if (targets != nullptr) {
    const json list = targets->is_array() ? *targets : json::array({*targets});
    for (const auto& t : list) {
      if (!t.is_number_unsigned()) return bad("targetTimestamps are message timestamps (ms)");
      timestamps.push_back(t.get<std::uint64_t>());
    }
  }
  if (!recipient || timestamps.empty() || (type != "read" && type != "viewed")) {
    return bad(
        "sendReceipt needs {recipient (or groupId for a group's messages), targetTimestamps, "
        "type: \"read\"} (delivery receipts are sent by themselves)");
  }
  auto r = client.mark_read(*recipient, timestamps);
  if (!r) return failed(r.error());
  return ok({{"read", *r}});
}

MessageCallOutcome send_typing(Client& client, const json& params) {
  const auto recipient = recipient_param(params);
  const bool stop = bool_param(params, {"stop"}).value_or(false);
  if (!recipient) {
    return bad("sendTyping needs {recipient or groupId} (stop: true when typing stopped)");
  }
  auto r = client.send_typing(*recipient, !stop);
  if (!r) return failed(r.error());
  return ok(json::object());
}

MessageCallOutcome update_contact(Client& client, const json& params) {
  const auto recipient = recipient_param(params);
  const auto expiration = number_param(params, {"expiration"});
  if (!recipient || !expiration || *expiration > UINT32_MAX) {
    return bad(
        "updateContact needs {recipient, expiration} (the disappearing-message timer in "
        "seconds; 0: off)");
  }
  auto r = client.set_disappearing_timer(*recipient, static_cast<std::uint32_t>(*expiration));
  if (!r) return failed(r.error());
  json result = sent_json(*recipient, *r);
  result["expiration"] = *expiration;
  return ok(std::move(result));
}

MessageCallOutcome update_configuration(Client& client, const json& params) {
  if (const json* p = param(params, {"readReceipts"})) {
    if (!p->is_boolean()) return bad("readReceipts is true or false");
    if (auto r = client.set_read_receipts(p->get<bool>()); !r) return failed(r.error());
  } else if (params.is_object() && !params.empty()) {
    return bad("updateConfiguration takes {readReceipts}");
  }
  auto on = client.read_receipts();
  if (!on) return failed(on.error());
  return ok({{"readReceipts", *on}});
}

}  // namespace

bool send_has_message_options(const json& params) {
  return params.is_object() && (params.contains("quoteTimestamp") ||
                                params.contains("editTimestamp") || params.contains("mention") ||
                                params.contains("mentions") || params.contains("quoteAuthor"));
}

MessageCallOutcome run_message_method(Client& client, std::string_view method, const json& params) {
  if (!params.is_object() && !(params.is_null() && method == "updateConfiguration")) {
    return bad(std::string(method) + " takes named params (an object)");
  }
  if (method == "send") return send(client, params);
  if (method == "sendReaction") return send_reaction(client, params);
  if (method == "remoteDelete") return remote_delete(client, params);
  if (method == "sendReceipt") return send_receipt(client, params);
  if (method == "sendTyping") return send_typing(client, params);
  if (method == "updateContact") return update_contact(client, params);
  if (method == "updateConfiguration") return update_configuration(client, params);
  return bad("no such method");
}

const std::vector<MessageMethodDoc>& message_method_docs() {
  static const std::vector<MessageMethodDoc> docs = {
      {"sendReaction",
       "Reacts to a message with one emoji (one per user; remove takes it back), in a 1:1 "
       "conversation (recipient) or a group (groupId)",
       R"([{"name": "recipient", "description": "required without groupId", "schema": {"type": "string"}},
           {"name": "groupId", "description": "the group's id, 64 hex digits", "schema": {"type": "string"}},
           {"name": "emoji", "required": true, "description": "one emoji", "schema": {"type": "string"}},
           {"name": "targetAuthor", "required": true, "schema": {"type": "string"}},
           {"name": "targetTimestamp", "required": true, "schema": {"type": "integer"}},
           {"name": "remove", "schema": {"type": "boolean"}}])",
       R"({"name": "sent", "schema": {"type": "object"}})"},
      {"remoteDelete",
       "Deletes one of our messages for everyone (within 24 hours of sending), in a 1:1 "
       "conversation or a group",
       R"([{"name": "recipient", "description": "required without groupId", "schema": {"type": "string"}},
           {"name": "groupId", "schema": {"type": "string"}},
           {"name": "targetTimestamp", "required": true, "schema": {"type": "integer"}}])",
       R"({"name": "sent", "schema": {"type": "object"}})"},
      {"sendReceipt",
       "Marks messages read: a read receipt to their author (unless read receipts are off) and a "
       "note to our other devices; starts their disappearing timers. A group's messages: groupId",
       R"([{"name": "recipient", "description": "the author (1:1); required without groupId", "schema": {"type": "string"}},
           {"name": "groupId", "schema": {"type": "string"}},
           {"name": "targetTimestamps", "required": true, "schema": {"type": "array", "items": {"type": "integer"}}},
           {"name": "type", "schema": {"enum": ["read", "viewed"]}}])",
       R"({"name": "receipt", "schema": {"type": "object", "properties": {"read": {"type": "integer"}}}})"},
      {"sendTyping",
       "Tells a user, or a group's other members, that we started (or, with stop, stopped) typing",
       R"([{"name": "recipient", "description": "required without groupId", "schema": {"type": "string"}},
           {"name": "groupId", "schema": {"type": "string"}},
           {"name": "stop", "schema": {"type": "boolean"}}])",
       R"({"name": "sent", "schema": {"type": "object"}})"},
      {"updateContact",
       "Sets the disappearing-message timer of the conversation with a user (for both sides)",
       R"([{"name": "recipient", "required": true, "schema": {"type": "string"}},
           {"name": "expiration", "required": true, "description": "seconds; 0: off",
            "schema": {"type": "integer"}}])",
       R"({"name": "updated", "schema": {"type": "object"}})"},
      {"updateConfiguration", "Shows or sets the account's settings: readReceipts",
       R"([{"name": "readReceipts", "schema": {"type": "boolean"}}])",
       R"({"name": "configuration", "schema": {"type": "object", "properties": {"readReceipts": {"type": "boolean"}}}})"},
  };
  return docs;
}

}  // namespace sotto::cli
