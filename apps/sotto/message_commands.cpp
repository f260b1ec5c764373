#include "message_commands.h"

#include <charconv>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "output.h"
#include "terminal.h"

namespace sotto::cli {

namespace {

using json = nlohmann::json;

Error invalid(std::string message) {
  return Error{ErrorCode::invalid_argument, std::move(message)};
}

constexpr std::uint32_t kMinute = 60, kHour = 3600, kDay = 86400, kWeek = 7 * 86400;

std::string copies_text(std::size_t n) {
  return std::to_string(n) + (n == 1 ? " device copy" : " device copies");
}

}  // namespace

Result<std::uint32_t> parse_duration(const std::string& text) {
  if (text == "off" || text == "0") return 0u;
  std::uint64_t n = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [end, ec] = std::from_chars(first, last, n);
  std::uint64_t unit = 1;
  if (ec == std::errc() && end + 1 == last) {
    switch (*end) {
      case 's':
        unit = 1;
        break;
      case 'm':
        unit = kMinute;
        break;
      case 'h':
        unit = kHour;
        break;
      case 'd':
        unit = kDay;
        break;
      case 'w':
        unit = kWeek;
        break;
      default:
        ec = std::errc::invalid_argument;
    }
  } else if (ec == std::errc() && end != last) {
    ec = std::errc::invalid_argument;
  }
  if (ec == std::errc() && n == 0) return 0u;  // 0s, 0h...: off, as "0" is
  if (ec != std::errc() || n * unit > 365ull * kDay) {
    return tl::unexpected(
        invalid("a duration is a number with s, m, h, d or w (30s, 5m, 1h, 1d, "
                "1w; at most a year), or off"));
  }
  return static_cast<std::uint32_t>(n * unit);
}

std::string duration_text(std::uint32_t s) {
  if (s == 0) return "off";
  const auto unit = [](std::uint32_t n, const char* word) {
    return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
  };
  if (s % kWeek == 0) return unit(s / kWeek, "week");
  if (s % kDay == 0) return unit(s / kDay, "day");
  if (s % kHour == 0) return unit(s / kHour, "hour");
  if (s % kMinute == 0) return unit(s / kMinute, "minute");
  return unit(s, "second");
}

Result<std::string> text_argument(const std::string& text) {
  if (text != "-") return text;
  std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (all.ends_with("\r\n")) {
    all.resize(all.size() - 2);
  } else if (all.ends_with("\n")) {
    all.pop_back();
  }
  if (all.empty()) return tl::unexpected(invalid("standard input held no text to send"));
  return all;
}

MessageCommands::MessageCommands(CLI::App& app) {
  react_ = app.add_subcommand(
      "react", "React to a message with an emoji (replacing your earlier reaction to it)");
  react_
      ->add_option("MESSAGE_ID", id_,
                   "The message: the number `receive` and `history` show, or AUTHOR:TIMESTAMP")
      ->required();
  react_->add_option("EMOJI", emoji_, "One emoji (with --remove: optional)");
  react_->add_flag("--remove", remove_, "Remove your reaction instead");

  edit_ = app.add_subcommand("edit",
                             "Replace the text of a message you sent (within 24 hours of sending)");
  edit_->add_option("MESSAGE_ID", id_, "Your message's id (as `history` shows it)")->required();
  edit_->add_option("TEXT", text_, "The new text (\"-\": read it from standard input)")->required();

  delete_ = app.add_subcommand(
      "delete", "Delete a message you sent for everyone (within 24 hours of sending)");
  delete_->add_option("MESSAGE_ID", id_, "Your message's id (as `history` shows it)")->required();

  read_ = app.add_subcommand(
      "read",
      "Mark USER's messages read: tells USER (unless read receipts are off) and your other "
      "devices, and starts their disappearing timers");
  read_->add_option("USER", user_, "The other user");
  read_->add_option("--group", group_, "Mark this group's messages read (its id) instead");
  read_->add_option("MESSAGE_ID", ids_, "Only these messages (default: every unread one)");

  disappearing_ = app.add_subcommand(
      "disappearing",
      "Show or set the disappearing-message timer of the conversation with USER (for both "
      "sides): each later message disappears that long after it was sent or read");
  disappearing_->add_option("USER", user_, "The other user")->required();
  disappearing_->add_option("DURATION", duration_, "30s, 5m, 1h, 1d, 1w ... or off");

  receipts_ = app.add_subcommand(
      "read-receipts",
      "Show or set whether read receipts are sent (off: none are sent, and none are shown)");
  receipts_->add_option("SETTING", setting_, "on or off")->check(CLI::IsMember({"on", "off"}));
}

void MessageCommands::add_send_options(CLI::App* send) {
  send->add_option("--quote", quote_, "Reply to this message (its id, as `history` shows it)");
  send->add_option("--mention", mentions_,
                   "Mention USER: the text must contain @USER (may be repeated)");
}

Result<SendOptions> MessageCommands::send_options(Client& client, const std::string& text) const {
  SendOptions options;
  if (!quote_.empty()) {
    auto quoted = client.find_message(quote_);
    if (!quoted) return tl::unexpected(quoted.error());
    options.quote = MessageRef{quoted->from, quoted->timestamp};
  }
  for (const auto& name : mentions_) {
    auto user = normalize_username(name);
    if (!user) return tl::unexpected(invalid("--mention takes a username"));
    const auto at = text.find("@" + *user);
    if (at == std::string::npos) {
      return tl::unexpected(
          invalid("--mention " + *user + ": the text does not contain @" + *user));
    }
    options.mentions.push_back(Mention{*user, static_cast<std::uint32_t>(at),
                                       static_cast<std::uint32_t>(user->size() + 1)});
  }
  return options;
}

std::optional<int> MessageCommands::run(const CommandEnv& env) {
  const bool ours = react_->parsed() || edit_->parsed() || delete_->parsed() || read_->parsed() ||
                    disappearing_->parsed() || receipts_->parsed();
  if (!ours) return std::nullopt;
  auto client = env.open();
  if (!client) return env.fail(client.error());
  Client& c = **client;
  const auto sent = [&](const SendResult& r, const std::string& what) {
    if (env.json) {
      env.print(dump({{"timestamp", r.timestamp}, {"devices", r.devices}}));
    } else {
      env.print(what + " (" + copies_text(r.devices) + ").");
    }
    return 0;
  };
  if (receipts_->parsed()) {
    if (!setting_.empty()) {
      if (auto r = c.set_read_receipts(setting_ == "on"); !r) return env.fail(r.error());
    }
    auto on = c.read_receipts();
    if (!on) return env.fail(on.error());
    if (env.json) {
      env.print(dump({{"readReceipts", *on}}));
    } else {
      env.print(std::string("Read receipts are ") + (*on ? "on." : "off: none are sent or shown."));
    }
    return 0;
  }
  if (disappearing_->parsed()) {
    if (duration_.empty()) {
      auto t = c.disappearing_timer(user_);
      if (!t) return env.fail(t.error());
      if (env.json) {
        env.print(dump({{"user", user_}, {"expireTimer", *t}}));
      } else {
        env.print("Disappearing messages with " + sanitize(user_, false) + ": " +
                  duration_text(*t) + ".");
      }
      return 0;
    }
    auto seconds = parse_duration(duration_);
    if (!seconds) return env.fail(seconds.error());
    auto r = c.set_disappearing_timer(user_, *seconds);
    if (!r) return env.fail(r.error());
    if (env.json) {
      env.print(
          dump({{"timestamp", r->timestamp}, {"devices", r->devices}, {"expireTimer", *seconds}}));
      return 0;
    }
    if (user_.rfind("group:", 0) == 0) {  // a group change, sent to every member (groups.md)
      env.print("Disappearing messages in the group: " + duration_text(*seconds) +
                " (the members are told).");
    } else {
      env.print("Disappearing messages with " + sanitize(user_, false) + ": " +
                duration_text(*seconds) + " (told " + copies_text(r->devices) + ").");
    }
    return 0;
  }
  if (read_->parsed()) {
    if (!group_.empty()) {
      // With --group, every word after it is a message id.
      if (!user_.empty()) ids_.insert(ids_.begin(), user_);
      user_ = "group:" + group_;
    } else if (user_.empty()) {
      return env.fail(invalid("read needs USER or --group ID"));
    }
    std::vector<std::uint64_t> timestamps;
    for (const auto& id : ids_) {
      auto m = c.find_message(id);
      if (!m) return env.fail(m.error());
      timestamps.push_back(m->timestamp);
    }
    auto n = c.mark_read(user_, timestamps);
    if (!n) return env.fail(n.error());
    if (env.json) {
      env.print(dump({{"read", *n}}));
    } else {
      env.print(*n == 0 ? std::string("Nothing unread.")
                        : "Marked " + std::to_string(*n) + (*n == 1 ? " message" : " messages") +
                              " read.");
    }
    return 0;
  }
  auto target = c.find_message(id_);
  if (!target) return env.fail(target.error());
  if (react_->parsed()) {
    if (!remove_ && emoji_.empty()) return env.fail(invalid("react needs an EMOJI (or --remove)"));
    auto r =
        c.react(target->conversation, MessageRef{target->from, target->timestamp}, emoji_, remove_);
    if (!r) return env.fail(r.error());
    return sent(*r, remove_ ? "Reaction removed" : "Reacted");
  }
  if (edit_->parsed()) {
    auto text = text_argument(text_);
    if (!text) return env.fail(text.error());
    if (target->from != c.username()) {
      return env.fail(invalid("only your own messages can be edited"));
    }
    auto r = c.edit(target->conversation, target->timestamp, *text);
    if (!r) return env.fail(r.error());
    return sent(*r, "Edited");
  }
  if (target->from != c.username()) {
    return env.fail(invalid("only your own messages can be deleted for everyone"));
  }
  auto r = c.remote_delete(target->conversation, target->timestamp);
  if (!r) return env.fail(r.error());
  return sent(*r, "Deleted for everyone");
}

}  // namespace sotto::cli
