// The `sotto group ...` commands, `sotto send --group` and `sotto chat --group`
// (docs/groups.md): registered on the CLI's app by add_group_commands, run by run_group_command
// once the command line is parsed. Output as the other commands: human lines, or with --json one
// JSON object per line; errors through the CLI's own `fail`.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sotto/client.h"

namespace sotto::cli {

struct GroupArgs {
  CLI::App* group = nullptr;
  CLI::App* create = nullptr;
  CLI::App* add = nullptr;
  CLI::App* remove = nullptr;
  CLI::App* admin = nullptr;
  CLI::App* rename = nullptr;
  CLI::App* describe = nullptr;
  CLI::App* leave = nullptr;
  CLI::App* link = nullptr;
  CLI::App* join = nullptr;
  CLI::App* info = nullptr;
  CLI::App* list = nullptr;
  CLI::App* timer = nullptr;
  CLI::App* avatar = nullptr;
  std::string id;
  std::string avatar_file;  // group avatar FILE, group create --avatar FILE
  std::string name;
  std::string text;
  std::vector<std::string> users;
  bool revoke = false;
  bool reset = false;
  bool off = false;
  std::uint32_t seconds = 0;
  std::string duration;  // group timer: 30s, 5m, 1h, 1d, 1w ... or off
  bool remove_avatar = false;
};

// What the CLI lends the group commands.
struct GroupContext {
  bool json = false;
  std::function<tl::expected<std::unique_ptr<Client>, Error>()> open;
  std::function<int(const Error&)> fail;
  std::function<void(const std::string&)> print;
};

void add_group_commands(CLI::App& app, GroupArgs& args);
// The exit status of the group command that was parsed; nullopt when none was.
[[nodiscard]] std::optional<int> run_group_command(const GroupArgs& args, const GroupContext& ctx);
// The quote and mentions of a send (--quote, --mention), found with the open client.
using SendOptionsOf = std::function<Result<SendOptions>(Client&)>;
// `sotto send --group ID TEXT [--attach FILE ...] [--quote ID] [--mention USER ...]`.
[[nodiscard]] int send_to_group(const std::string& id, const std::string& text,
                                const GroupContext& ctx,
                                const std::vector<std::string>& attach_files = {},
                                const SendOptionsOf& options_of = nullptr,
                                const std::string& caption = {});
// `sotto chat --group ID` (chat_commands.cpp): each line typed is sent to the group; its
// messages, receipts, typing, reactions, edits and deletes are shown; /attach sends a file.
[[nodiscard]] int chat_in_group(const std::string& id, const GroupContext& ctx);

[[nodiscard]] nlohmann::json group_json(const Group& g);
// The group's picture: null (none), {"downloaded": false}, or {path, sha256, size, contentType,
// downloaded: true}.
[[nodiscard]] nlohmann::json avatar_json(const Group& g);

}  // namespace sotto::cli
