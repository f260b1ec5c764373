// The sotto CLI's commands for the everyday message types (docs/messages.md): `react`, `edit`,
// `delete`, `read`, `disappearing`, `read-receipts`, and the options `send` gains (--quote,
// --mention, TEXT "-" for standard input). main.cpp registers them and runs them through a
// CommandEnv (its way of opening the account, printing and failing), so the commands keep the
// CLI's output and error conventions without living in main.cpp.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sotto/client.h"

namespace sotto::cli {

struct CommandEnv {
  bool json = false;
  std::function<Result<std::unique_ptr<Client>>()> open;
  // Prints the error (with the CLI's hint for it) and returns the exit status.
  std::function<int(const Error&)> fail;
  std::function<void(const std::string&)> print;
};

// "30s", "5m", "2h", "1d", "1w", a number of seconds, or "off" (0).
[[nodiscard]] Result<std::uint32_t> parse_duration(const std::string& text);
// "5 minutes", "1 day", "off".
[[nodiscard]] std::string duration_text(std::uint32_t seconds);
// TEXT as given, or all of standard input for "-" (one trailing newline dropped).
[[nodiscard]] Result<std::string> text_argument(const std::string& text);

class MessageCommands {
 public:
  explicit MessageCommands(CLI::App& app);
  void add_send_options(CLI::App* send);
  // The SendOptions of `send` (the quoted message found on this device, mentions in the text).
  [[nodiscard]] Result<SendOptions> send_options(Client& client, const std::string& text) const;
  // Runs the command given, if it is one of these; nullopt otherwise.
  [[nodiscard]] std::optional<int> run(const CommandEnv& env);

 private:
  CLI::App* react_ = nullptr;
  CLI::App* edit_ = nullptr;
  CLI::App* delete_ = nullptr;
  CLI::App* read_ = nullptr;
  CLI::App* disappearing_ = nullptr;
  CLI::App* receipts_ = nullptr;
  std::string id_, emoji_, text_, user_, duration_, setting_, group_;
  std::vector<std::string> ids_;
  bool remove_ = false;
  std::string quote_;
  std::vector<std::string> mentions_;
};

}  // namespace sotto::cli
