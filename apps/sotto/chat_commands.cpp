#include "chat_commands.h"

#include <atomic>
#include <filesystem>
#include <future>
#include <sstream>

#include "group_commands.h"
#include "output.h"
#include "terminal.h"

namespace sotto::cli {

namespace {

using json = nlohmann::json;

constexpr std::size_t kGroupChatHistory = 20;

constexpr const char* kGroupChatHelp =
    "Commands:\n"
    "  /help                  this list\n"
    "  /history [N]           the last N messages (default 20)\n"
    "  /attach PATH [CAPTION] send a file (a PATH with spaces in double quotes)\n"
    "  /quit                  leave (also Ctrl-D on an empty line)\n"
    "A line starting with // sends the text after the first /; any other /command is not sent.\n"
    "What is shown is marked read. Receipts, typing, reactions, edits and deletes show as they\n"
    "come; `sotto react`, `edit` and `delete` take the #number shown after a message's time.";

Error invalid(std::string why) {
  return Error{ErrorCode::invalid_argument, std::move(why)};
}

}  // namespace

Result<SendResult> send_file(Client& client, const std::string& conversation,
                             const std::string& arguments) {
  std::string rest = arguments;
  rest.erase(0, rest.find_first_not_of(" \t"));
  std::string path;
  if (rest.starts_with("\"")) {
    const auto end = rest.find('"', 1);
    if (end == std::string::npos) return tl::unexpected(invalid("/attach: a quote is not closed"));
    path = rest.substr(1, end - 1);
    rest.erase(0, end + 1);
  } else {
    const auto end = rest.find_first_of(" \t");
    path = rest.substr(0, end);
    rest.erase(0, end == std::string::npos ? rest.size() : end);
  }
  rest.erase(0, rest.find_first_not_of(" \t"));
  if (path.empty()) return tl::unexpected(invalid("/attach takes a PATH (and a CAPTION)"));
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return tl::unexpected(invalid("/attach: no such file: " + sanitize(path, false)));
  }
  // No progress bar: the chat's line editor owns the terminal.
  auto uploaded = client.upload_attachment(path, rest);
  if (!uploaded) {
    Error e = uploaded.error();
    e.message = sanitize(path, false) + ": " + e.message;
    return tl::unexpected(std::move(e));
  }
  SendOptions options;
  options.attachments.push_back(std::move(*uploaded));
  if (conversation.rfind("group:", 0) == 0) {
    return client.send_group(conversation.substr(6), std::string(), options);
  }
  return client.send(conversation, std::string(), options);
}

int chat_in_group(const std::string& id, const GroupContext& ctx) {
  ShutdownSignals signals;
  auto client = ctx.open();
  if (!client) return ctx.fail(client.error());
  auto g = (*client)->group(id);
  if (!g) return ctx.fail(g.error());
  const std::string self = (*client)->username();
  const std::string conversation = "group:" + g->id;
  const std::string title = g->name.empty() ? g->id.substr(0, 8) : sanitize(g->name, false);
  LineEditor editor(title + "> ");
  signals.on_signal([&editor] { editor.interrupt(); });
  const auto show = [&](const std::string& line) { editor.print(line); };
  const auto show_error = [&](const Error& e) {
    if (ctx.json) {
      show(dump(error_json(e)));
    } else {
      show("! " + sanitize(e.message, false));
    }
  };
  const auto show_history = [&](std::size_t limit) {
    auto h = (*client)->group_history(g->id, limit);
    if (!h) {
      show_error(h.error());
      return;
    }
    for (const auto& m : *h) {
      if (ctx.json) {
        json j = message_json(m);
        j["type"] = "history";
        show(dump(j));
      } else {
        show(message_text(m, self));
      }
    }
  };
  if (!ctx.json) {
    show("Group " + title + " (" + g->id + "), " + std::to_string(g->members.size()) +
         (g->members.size() == 1 ? " member" : " members") + (g->member ? "" : ", not a member") +
         ". Type a message and press Enter; /help lists the commands, /quit leaves.");
    show_history(kGroupChatHistory);
  }
  // What is shown is read (read receipts, disappearing timers); typing is told as it happens.
  (void)(*client)->mark_read(conversation);
  std::future<void> typing_sent;
  editor.on_typing([&](bool typing) {
    if (typing_sent.valid() &&
        typing_sent.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      return;  // the last one is still on its way
    }
    typing_sent = std::async(std::launch::async, [&client, &conversation, typing] {
      (void)(*client)->send_typing(conversation, typing);
    });
  });
  std::atomic<bool> stopped{false};
  std::atomic<bool> leaving{false};
  auto started = (*client)->start([&](const Event& e) {
    if (leaving && (e.kind == Event::Kind::connected || e.kind == Event::Kind::disconnected)) {
      return;
    }
    if (e.kind == Event::Kind::fatal) stopped = true;
    const bool here = e.message.conversation == conversation;
    if (ctx.json) {
      show(dump(event_json(e)));
    } else if (e.kind == Event::Kind::message && !here) {
      show("[" + sanitize(e.message.conversation, false) + "] " + event_text(e, self));
    } else if (e.kind != Event::Kind::connected) {
      show(event_text(e, self));
    }
    if (e.kind == Event::Kind::message && here && !e.message.outgoing) {
      (void)(*client)->mark_read(conversation, {e.message.timestamp});
    }
    if (stopped) editor.interrupt();
  });
  if (!started) {
    signals.on_signal(nullptr);
    return ctx.fail(started.error());
  }
  int status = 0;
  const auto sent = [&](const Result<SendResult>& r, const Message& m) {
    if (!r) {
      status = 1;
      Error e = r.error();
      if (!e.message.starts_with("not sent")) e.message = "not sent: " + e.message;
      show_error(e);
      return;
    }
    if (ctx.json) {
      show(dump(json{{"type", "sent"},
                     {"timestamp", r->timestamp},
                     {"devices", r->devices},
                     {"groupId", g->id}}));
      return;
    }
    Message shown = m;
    shown.id = "local-";
    shown.from = self;
    shown.device = (*client)->device_id();
    shown.timestamp = r->timestamp;
    shown.group = g->id;
    shown.conversation = conversation;
    shown.outgoing = true;
    show(message_text(shown, self) + "\n  ~ ✓ sent");  // ✓✓ lines follow as receipts
  };
  while (auto line = editor.read_line()) {
    std::string text = std::move(*line);
    if (text.starts_with("//")) {
      text.erase(0, 1);
    } else if (text.starts_with("/")) {
      std::istringstream words(text);
      std::string command;
      words >> command;
      if (command == "/quit" || command == "/exit") break;
      if (command == "/help") {
        if (ctx.json) {
          show(dump(json{{"type", "help"}, {"text", kGroupChatHelp}}));
        } else {
          show(kGroupChatHelp);
        }
      } else if (command == "/history") {
        std::string count;
        words >> count;
        if (!count.empty() &&
            (count.find_first_not_of("0123456789") != std::string::npos || count.size() > 6)) {
          show_error(invalid("/history takes a number of messages"));
          continue;
        }
        show_history(count.empty() ? kGroupChatHistory : std::stoul(count));
      } else if (command == "/attach") {
        std::string rest;
        std::getline(words, rest);
        Message m;
        m.body = "[file]";
        sent(send_file(**client, conversation, rest), m);
      } else {
        show_error(invalid("unknown command " + sanitize(command, false) + "; /help lists them"));
      }
      continue;
    }
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    Message m;
    m.body = text;
    sent((*client)->send_group(g->id, text), m);
  }
  leaving = true;
  if (typing_sent.valid()) typing_sent.wait();
  (*client)->stop();
  signals.on_signal(nullptr);
  return stopped ? 1 : status;
}

}  // namespace sotto::cli
