// sotto: the command-line client. Every command works on one account of the data directory
// (--account when there are several) and prints human text, or with --json one JSON object per
// line. An error prints one line on stderr (with --json, one JSON object) and exits with status 1:
// the library's text says what happened, and the CLI adds a hint naming the command that helps
// (the library's texts name no command).
#include <google/protobuf/stubs/logging.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "attach_commands.h"
#include "chat_commands.h"
#include "client/backup_file.h"
#include "client/recovery_code.h"
#include "daemon.h"
#include "group_commands.h"
#include "message_commands.h"
#include "message_output.h"
#include "output.h"
#include "sotto/client.h"
#include "terminal.h"

namespace {

using json = nlohmann::json;
using sotto::Client;
using sotto::Error;
using sotto::ErrorCode;

struct Globals {
  std::string data;
  bool json = false;
  std::string account;
  std::string passphrase_file;
  std::string trust_policy;
};

Globals g;

// Chat history shown on entry and by /history without a count.
constexpr std::size_t kChatHistory = 20;
// How long a command waits for the account's lock: long enough for another short command to
// finish, short enough that a command refused beside a chat or daemon says so at once.
constexpr std::chrono::milliseconds kLockWait{2000};
// How long `history` waits for the account's lock before it reads beside the process holding it.
constexpr std::chrono::milliseconds kHistoryLockWait{1000};

void print_line(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void print_json(const json& j) {
  print_line(sotto::cli::dump(j));
}

// Overwrites a secret (passphrase, recovery code) before its memory is released.
void wipe(std::string& s) {
  volatile char* p = s.data();
  for (std::size_t i = 0; i < s.size(); ++i) p[i] = 0;
  s.clear();
}

std::string address_text(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string address_text(const sotto::Server& s) {
  return address_text(s.host, s.port);
}

// What to run next after an error, in the CLI's terms. `user` is the contact the command was
// about (USER when none). A hint adds to the library's text (which names no command) and must not
// say again what that text says.
std::string default_hint(const Error& e, const std::string& user = {}) {
  const std::string u = user.empty() ? "USER" : sotto::cli::sanitize(user, false);
  switch (e.code) {
    case ErrorCode::fingerprint_mismatch:
      return "If the operator really changed the server's key, confirm the new fingerprint with "
             "them, then run `sotto server trust FINGERPRINT`";
    case ErrorCode::device_in_use:
      return "The other copy may be a `sotto chat` or `sotto daemon` started from a copied data "
             "directory; to link instead, run `sotto link --server HOST:PORT` with a new --data "
             "directory";
    case ErrorCode::unauthenticated:
      return "`sotto devices` on another device of the account lists the devices left; to use "
             "this machine again, link it into a new data directory with `sotto link --server "
             "HOST:PORT`, or, if every device is lost, run `sotto recover USER --code CODE "
             "--server HOST:PORT`";
    case ErrorCode::untrusted_identity:
      return "Compare `sotto safety-number " + u + "` with " + u +
             "'s screen, then run `sotto trust " + u +
             " --safety-number DIGITS` (or `sotto trust " + u +
             "` to accept the new key unverified)";
    case ErrorCode::account_busy:
      // The library's text already says who may hold the account.
      return "Stop it first (a `sotto daemon` also takes requests: docs/daemon.md); `sotto "
             "history` reads beside it";
    case ErrorCode::ambiguous_account:
      return "Give --account NAME";
    case ErrorCode::no_account:
      return "Make an account with `sotto register USER --server HOST:PORT`, link this machine "
             "with `sotto link --server HOST:PORT` (either makes the directory), or give the "
             "right --data DIR";
    case ErrorCode::wrong_passphrase:
      return "Give the store's passphrase with --passphrase-file FILE or $SOTTO_PASSPHRASE";
    case ErrorCode::rate_limited:
      if (e.message.find("try again") != std::string::npos ||
          e.message.find("retry in") != std::string::npos)
        return {};
      return "Wait a minute before trying again";
    default:
      return {};
  }
}

// The hint for a server key refused while creating an account here (register, recover, link):
// `sotto server trust` needs an account, so it cannot help yet.
std::string setup_fingerprint_hint(const std::string& fingerprint_given) {
  const std::string published =
      "the fingerprint the operator published (the server prints it at start as `fingerprint: "
      "...`: the SHA-256 of its public key, not the `certificate_fingerprint` of its log)";
  if (fingerprint_given.empty()) {
    return "Check the server's address and " + published +
           "; the account's other device pinned another key";
  }
  return "Check --server-fingerprint against " + published +
         ", then run this command again with it; if they match, this is not that server";
}

// Prints `e` (and a hint: `hint` when given, "" for none, else default_hint) and returns 1.
int fail(const Error& e, const std::optional<std::string>& hint = std::nullopt) {
  std::fflush(stdout);
  const std::string h = hint.value_or(default_hint(e));
  if (e.code == ErrorCode::security_alert) {
    if (g.json) {
      std::printf("%s\n", sotto::cli::dump(sotto::cli::security_alert_json(e)).c_str());
      std::fflush(stdout);
    } else {
      std::fprintf(stderr, "%s\n", sotto::cli::security_alert_banner(e).c_str());
    }
  }
  if (g.json) {
    const std::string line = sotto::cli::dump(sotto::cli::error_json(e, h));
    std::fprintf(stderr, "%s\n", line.c_str());
    return 1;
  }
  const auto end_sentence = [](std::string& s) {
    if (!s.empty() && s.back() != '.' && s.back() != '?' && s.back() != '!') s += '.';
  };
  std::string text = sotto::cli::sanitize(e.message, false);
  end_sentence(text);
  if (!h.empty()) {
    text += " " + h;
    end_sentence(text);
  }
  std::fprintf(stderr, "sotto: error: %s\n", sotto::cli::sanitize(text, false).c_str());
  return 1;
}

int fail(ErrorCode code, const std::string& message) {
  return fail(Error{code, message});
}

std::filesystem::path default_data_dir() {
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::filesystem::path(xdg) / "sotto";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return std::filesystem::path(home) / ".local" / "share" / "sotto";
  }
  return std::filesystem::path(".sotto");
}

// The first line of `path` (trailing newlines dropped).
tl::expected<std::string, Error> read_secret_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument, std::string("cannot read the ") + what + " file"});
  }
  std::string p((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!p.empty() && (p.back() == '\n' || p.back() == '\r')) p.pop_back();
  if (p.empty()) {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument, std::string("the ") + what + " file is empty"});
  }
  return p;
}

// Checks the form of a recovery code (24 characters A-Z 2-7; case, spaces and dashes do not
// matter), with one clear message.
tl::expected<void, Error> check_recovery_code(const std::string& code) {
  auto parsed = sotto::client::RecoveryCode::parse(code);
  if (!parsed) {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument, std::string(to_string(parsed.error()))});
  }
  return {};
}

// Whether a command opens an account of the data directory or makes one there.
enum class DataDir { existing, created };

// What is wrong with the data directory itself, said with its path: the library would only find
// "no account" in a directory that is missing, a file or unreadable.
tl::expected<void, Error> check_data_dir(const std::filesystem::path& dir, DataDir use) {
  namespace fs = std::filesystem;
  const std::string path = sotto::cli::sanitize(dir.string(), false);
  std::error_code ec;
  const auto status = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return tl::unexpected(Error{
        ErrorCode::store, "the data directory " + path + " cannot be read (" + ec.message() + ")"});
  }
  if (!fs::exists(status)) {
    if (use == DataDir::created) return {};
    return tl::unexpected(
        Error{ErrorCode::no_account, "the data directory " + path + " does not exist"});
  }
  if (!fs::is_directory(status)) {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument, "the data directory " + path + " is not a directory"});
  }
  const int mode = use == DataDir::created ? (R_OK | W_OK | X_OK) : (R_OK | X_OK);
  if (::access(dir.c_str(), mode) != 0) {
    return tl::unexpected(Error{
        ErrorCode::store, "the data directory " + path +
                              (use == DataDir::created ? " cannot be written" : " cannot be read") +
                              " (" + std::strerror(errno) + ")"});
  }
  return {};
}

tl::expected<sotto::Options, Error> make_options(DataDir use = DataDir::existing) {
  sotto::Options o;
  o.data_dir = g.data.empty() ? default_data_dir() : std::filesystem::path(g.data);
  if (auto ok = check_data_dir(o.data_dir, use); !ok) return tl::unexpected(ok.error());
  // Absolute from here on: every path reported (a saved file, a group picture, the daemon's
  // answers) is one a program can open wherever it runs.
  std::error_code absolute_ec;
  if (auto absolute = std::filesystem::absolute(o.data_dir, absolute_ec); !absolute_ec) {
    o.data_dir = absolute.lexically_normal();
  }
  if (!g.passphrase_file.empty()) {
    auto p = read_secret_file(g.passphrase_file, "passphrase");
    if (!p) return tl::unexpected(p.error());
    o.passphrase = std::move(*p);
  } else if (const char* env = std::getenv("SOTTO_PASSPHRASE"); env != nullptr && *env != '\0') {
    o.passphrase = std::string(env);
  }
  if (!g.trust_policy.empty()) o.trust_policy = g.trust_policy;
  o.lock_wait = kLockWait;
  return o;
}

tl::expected<std::unique_ptr<Client>, Error> open_client() {
  auto o = make_options();
  if (!o) return tl::unexpected(o.error());
  return Client::open(*o, g.account);
}

tl::expected<sotto::Server, Error> parse_server(const std::string& text,
                                                const std::string& fingerprint) {
  const auto colon = text.rfind(':');
  const auto bad = [] {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument, "the server is HOST:PORT (port 1-65535)"});
  };
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) return bad();
  const std::string port_text = text.substr(colon + 1);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5)
    return bad();
  const int port = std::stoi(port_text);
  if (port < 1 || port > 65535) return bad();
  sotto::Server s;
  s.host = text.substr(0, colon);
  if (s.host.size() > 2 && s.host.front() == '[' && s.host.back() == ']')
    s.host = s.host.substr(1, s.host.size() - 2);
  s.port = static_cast<std::uint16_t>(port);
  for (char c : fingerprint) {
    if (c == ':' || c == ' ') continue;
    s.fingerprint += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

std::string group_digits(const std::string& digits) {
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && i % 20 == 0)
      out += "\n  ";
    else if (i > 0 && i % 5 == 0)
      out += ' ';
    out += digits[i];
  }
  return "  " + out;
}

// The safety number with `user` as digits and QR code, then what its state allows.
void print_safety_number(const std::string& user, const sotto::SafetyNumber& sn) {
  const std::string u = sotto::cli::sanitize(user, false);
  print_line("Safety number with " + u + " (compare it with the one on " + u +
             "'s screen, or scan their code):\n\n" + group_digits(sn.digits) + "\n\n" +
             sotto::cli::render_qr(sn.scannable));
  print_line(sotto::cli::safety_state_text(user, sn));
}

// The recovery code made by register or recover: shown once, never stored.
void print_recovery_code(const std::string& user, std::string& code, const sotto::Server& s) {
  if (code.empty()) return;
  print_line(
      "\nYour recovery code:\n\n    " + code +
      "\n\nWrite it down now and keep it somewhere safe. It is shown only once and is not stored "
      "on this device. It is the only way to take the account back if every device is lost "
      "(`sotto recover " +
      user + " --code CODE --server " + address_text(s) +
      "` on a new machine); anyone who has it can take the account.");
  wipe(code);
}

// --- commands --------------------------------------------------------------------------------

int cmd_register(const std::string& user, const std::string& server_text,
                 const std::string& fingerprint, const std::string& invite) {
  auto server = parse_server(server_text, fingerprint);
  if (!server) return fail(server.error());
  auto o = make_options(DataDir::created);
  if (!o) return fail(o.error());
  auto client = Client::register_account(*o, user, *server, invite);
  if (!client) {
    const Error& e = client.error();
    const auto name = sotto::normalize_username(user);
    if (e.code == ErrorCode::account_exists && name) {
      const auto local = Client::accounts(o->data_dir);
      if (std::find(local.begin(), local.end(), *name) == local.end()) {
        // Taken on the server, not here.
        return fail(e, "Run `sotto recover " + *name + " --code CODE --server " +
                           address_text(*server) + "`");
      }
      return fail(e, "Register into another --data directory, or use the account that is here");
    }
    if (e.code == ErrorCode::fingerprint_mismatch)
      return fail(e, setup_fingerprint_hint(fingerprint));
    if (e.code == ErrorCode::server && e.message.find("invite") != std::string::npos) {
      return fail(e, invite.empty() ? "Ask the server's operator for an invite code and give it "
                                      "with --invite CODE"
                                    : "The server does not accept the code given: it is unknown "
                                      "(case and dashes do not matter), already used or expired; "
                                      "ask the operator for a new one");
    }
    return fail(e);
  }
  const auto s = (*client)->server();
  std::string code = (*client)->recovery_code();
  if (g.json) {
    json j = {{"username", (*client)->username()},
              {"device", (*client)->device_id()},
              {"server", address_text(s)},
              {"fingerprint", s.fingerprint},
              {"trustedOnFirstUse", server->fingerprint.empty()},
              {"recoveryCode", code}};
    print_json(j);
    wipe(code);
    return 0;
  }
  print_line("Registered " + (*client)->username() + " (device " +
             std::to_string((*client)->device_id()) + ") on " + address_text(s) + ".");
  if (server->fingerprint.empty()) {
    print_line("Server key fingerprint, trusted on first use and pinned from now on:\n  " +
               s.fingerprint + "\nCompare it with the one the server operator publishes.");
  } else {
    print_line("Server key fingerprint verified and pinned.");
  }
  print_recovery_code((*client)->username(), code, s);
  return 0;
}

int cmd_recover(const std::string& user, std::string& code, const std::string& server_text,
                const std::string& fingerprint) {
  auto server = parse_server(server_text, fingerprint);
  if (!server) return fail(server.error());
  if (auto form = check_recovery_code(code); !form) {
    wipe(code);
    return fail(form.error(), "");
  }
  auto o = make_options(DataDir::created);
  if (!o) return fail(o.error());
  auto client = Client::recover(*o, user, code, *server);
  wipe(code);
  if (!client) {
    const Error& e = client.error();
    if (e.code == ErrorCode::account_exists) return fail(e, "");  // it says what to do
    if (e.code == ErrorCode::forbidden) {
      return fail(e, "Check the code (24 characters A-Z 2-7; dashes and case do not matter)");
    }
    if (e.code == ErrorCode::fingerprint_mismatch)
      return fail(e, setup_fingerprint_hint(fingerprint));
    return fail(e);
  }
  const auto s = (*client)->server();
  std::string next = (*client)->recovery_code();
  if (g.json) {
    json j = {{"username", (*client)->username()},
              {"device", (*client)->device_id()},
              {"server", address_text(s)},
              {"fingerprint", s.fingerprint},
              {"recoveryCode", next}};
    print_json(j);
    wipe(next);
    return 0;
  }
  print_line("Recovered " + (*client)->username() + ": this is now its primary device (device " +
             std::to_string((*client)->device_id()) + ") on " + address_text(s) +
             ", with a new identity key.\nThe account's other devices were removed, and your "
             "contacts will see that your safety number changed. The old recovery code no "
             "longer works.");
  if (server->fingerprint.empty()) {
    print_line("Server key fingerprint, trusted on first use and pinned from now on:\n  " +
               s.fingerprint + "\nCompare it with the one the server operator publishes.");
  }
  print_recovery_code((*client)->username(), next, s);
  return 0;
}

int cmd_send(const std::string& to, const std::string& text_arg, int timeout,
             const sotto::cli::MessageCommands& message_commands,
             const std::vector<std::string>& attach, const std::string& caption) {
  if (text_arg.empty() && attach.empty()) {
    return fail(ErrorCode::invalid_argument, "TEXT is required unless --attach FILE is given");
  }
  auto text = text_arg.empty() ? sotto::Result<std::string>(std::string())
                               : sotto::cli::text_argument(text_arg);  // "-": standard input
  if (!text) return fail(text.error());
  auto o = make_options();
  if (!o) return fail(o.error());
  o->send_timeout = std::chrono::seconds(timeout);
  auto client = Client::open(*o, g.account);
  if (!client) return fail(client.error());
  auto send_options = message_commands.send_options(**client, *text);
  if (!send_options) return fail(send_options.error());
  if (!attach.empty()) {
    auto uploaded = sotto::cli::upload_files(**client, attach, true, caption);
    if (!uploaded) return fail(uploaded.error());
    send_options->attachments = std::move(*uploaded);
  }
  auto r = (*client)->send(to, *text, *send_options);
  if (!r) {
    Error e = r.error();
    if (e.code == ErrorCode::not_found && e.message == "no such user") {
      e.message = "no such user: " + to + " has no account";  // as `sotto chat` says it
    } else if (e.code == ErrorCode::not_found) {
      e.message = to + ": " + e.message;
    }
    return fail(e, default_hint(e, to));
  }
  const std::string copies =
      std::to_string(r->devices) + (r->devices == 1 ? " device copy" : " device copies");
  if (g.json) {
    print_json({{"timestamp", r->timestamp}, {"devices", r->devices}});
  } else if (sotto::normalize_username(to) != (*client)->username()) {
    print_line("Sent to " + sotto::cli::sanitize(to, false) + " (" + copies + ").");
  } else if (r->devices == 0) {
    print_line("Saved as a note to yourself (no other device of the account to copy it to).");
  } else {
    print_line("Saved as a note to yourself, and sent to your other devices (" + copies + ").");
  }
  return 0;
}

int cmd_receive(int timeout, const std::string& attachments_dir) {
  if (!attachments_dir.empty()) {
    // Checked before any message is taken: a file that cannot be saved is not fetched again.
    std::error_code ec;
    std::filesystem::create_directories(attachments_dir, ec);
    if (!std::filesystem::is_directory(attachments_dir, ec) ||
        ::access(attachments_dir.c_str(), W_OK) != 0) {
      return fail(ErrorCode::invalid_argument, "--attachments-dir " + attachments_dir +
                                                   " is not a directory this user can write");
    }
  }
  auto client = open_client();
  if (!client) return fail(client.error());
  const std::string self = (*client)->username();
  auto r = (*client)->receive(std::chrono::seconds(timeout), [&](const sotto::Event& e) {
    // Attachments are saved before the message is shown, so that it can say where.
    json saved;
    if (e.kind == sotto::Event::Kind::message && !e.message.attachments.empty()) {
      saved = sotto::cli::save_attachments(**client, e.message, attachments_dir, true);
    }
    if (g.json) {
      json j = sotto::cli::event_json(e);
      if (!saved.is_null()) j["attachments"] = saved;
      print_json(j);
    } else if (saved.is_null()) {
      print_line(sotto::cli::event_text(e, self));
    } else {
      // The files once, with where each was saved.
      sotto::Event shown = e;
      shown.message.attachments.clear();
      print_line(sotto::cli::event_text(shown, self) + sotto::cli::attachments_text(saved));
    }
  });
  if (!r) return fail(r.error());
  return 0;
}

constexpr const char* kChatHelp =
    "Commands:\n"
    "  /help            this list\n"
    "  /history [N]     the last N messages (default 20)\n"
    "  /safety-number   the safety number with the other user and its state\n"
    "  /trust           accept the other user's current key, unverified\n"
    "  /trust DIGITS    accept and verify it: the 60 digits you compared (spaces allowed)\n"
    "  /attach PATH [CAPTION]  send a file (a PATH with spaces in double quotes)\n"
    "  /quit            leave (also Ctrl-D on an empty line)\n"
    "A line starting with // sends the text after the first /; any other /command is not sent.\n"
    "What is shown is marked read. Receipts (✓ sent, ✓✓ delivered, ✓✓ read), typing, reactions,\n"
    "edits and deletes show as they come; `sotto react`, `edit` and `delete` take the #number\n"
    "shown after a message's time.";

// What chat says at its start when the other user's key is not accepted: nothing can be sent.
std::string not_accepted_text(const std::string& peer, const sotto::SafetyNumber& sn) {
  std::string text = "! ";
  if (sn.changed_at != 0) {
    text += peer + "'s safety number changed (" + sotto::cli::format_time(sn.changed_at) +
            ") and the new key is not accepted";
  } else {
    text += peer +
            "'s key is not accepted yet (the trust policy accepts only keys whose safety number "
            "you verified)";
  }
  if (sn.held > 0) {
    text +=
        "; " + std::to_string(sn.held) + (sn.held == 1 ? " message is held" : " messages are held");
  }
  return text + ". Nothing can be sent to " + peer +
         " until you accept it: compare /safety-number " + "with " + peer +
         "'s screen, then /trust DIGITS (or /trust to accept it unverified).";
}

// A hint in chat's own commands where the CLI's would name other `sotto` commands.
std::string chat_hint(const Error& e, const std::string& peer) {
  if (e.code == ErrorCode::untrusted_identity) {
    return "Compare /safety-number with " + peer +
           "'s screen, then /trust DIGITS (or /trust to accept the new key unverified)";
  }
  return default_hint(e, peer);
}

int cmd_chat(const std::string& peer_in) {
  auto peer = sotto::normalize_username(peer_in);
  if (!peer) return fail(ErrorCode::invalid_argument, "invalid username");
  sotto::cli::ShutdownSignals signals;
  auto client = open_client();
  if (!client) return fail(client.error());
  const std::string self = (*client)->username();
  // Asks the server for the user's key (as `send` would): a name without an account is said
  // before the chat opens, not by every line failing to send.
  auto safety = (*client)->safety_number(*peer);
  if (!safety && safety.error().code == ErrorCode::not_found &&
      safety.error().message == "no such user") {
    return fail(Error{ErrorCode::not_found, "no such user: " + *peer + " has no account"},
                "Check the name (usernames are as `sotto register` made them)");
  }

  sotto::cli::LineEditor editor(*peer + "> ");
  signals.on_signal([&editor] { editor.interrupt(); });
  const auto show = [&](const std::string& line) { editor.print(line); };
  const auto show_json = [&](const json& j) { editor.print(sotto::cli::dump(j)); };
  const auto show_error = [&](const Error& e, const std::string& hint) {
    if (g.json) {
      show_json(sotto::cli::error_json(e, hint));
    } else {
      show("! " + sotto::cli::sanitize(e.message, false) + (hint.empty() ? "" : ". " + hint));
    }
  };
  const auto show_history = [&](std::size_t limit) {
    auto h = (*client)->history(*peer, limit);
    if (!h) {
      show_error(h.error(), default_hint(h.error(), *peer));
      return;
    }
    for (const auto& m : *h) {
      if (g.json) {
        json j = sotto::cli::message_json(m);
        j["type"] = "history";
        show_json(j);
      } else {
        show(sotto::cli::message_text(m, self));
      }
    }
  };

  if (!g.json) {
    show("Chat with " + *peer + " as " + self +
         ". Type a message and press Enter; /help lists "
         "the commands, /quit leaves.");
    show_history(kChatHistory);
  }
  // What is shown is read (read receipts, disappearing timers); typing is told as it happens.
  (void)(*client)->mark_read(*peer);
  std::future<void> typing_sent;
  editor.on_typing([&](bool typing) {
    if (typing_sent.valid() &&
        typing_sent.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      return;  // the last one is still on its way
    }
    typing_sent = std::async(std::launch::async, [&client, &peer, typing] {
      (void)(*client)->send_typing(*peer, typing);
    });
  });
  // Before anything is typed: a key that is not accepted would make every line fail to send.
  if (auto& sn = safety; sn && !sn->accepted) {
    if (g.json) {
      json j = sotto::cli::safety_number_json(*peer, *sn);
      j["type"] = "safety_number";
      show_json(j);
    } else {
      show(not_accepted_text(*peer, *sn));
    }
  }
  std::atomic<bool> stopped{false};  // the listener gave up (removed device, pin mismatch)
  std::atomic<bool> leaving{false};  // the user left: the connection's end is no news
  auto started = (*client)->start([&](const sotto::Event& e) {
    if (leaving &&
        (e.kind == sotto::Event::Kind::connected || e.kind == sotto::Event::Kind::disconnected)) {
      return;
    }
    if (e.kind == sotto::Event::Kind::fatal) stopped = true;
    if (g.json) {
      show_json(sotto::cli::event_json(e));
      if (stopped) editor.interrupt();
      if (e.kind == sotto::Event::Kind::message && !e.message.outgoing &&
          e.message.conversation == *peer) {
        (void)(*client)->mark_read(*peer, {e.message.timestamp});
      }
      return;
    }
    if (e.kind == sotto::Event::Kind::connected) return;  // quiet on the happy path
    if (e.kind == sotto::Event::Kind::message && e.message.conversation != *peer) {
      show("[" + sotto::cli::sanitize(e.message.conversation, false) + "] " +
           sotto::cli::event_text(e, self));
      return;
    }
    if (!e.message.conversation.empty() && e.message.conversation != *peer) {
      // Another conversation's (a group's) receipts and typing are not this chat's news; its
      // reactions, edits and deletes are shown with where they happened.
      if (e.kind == sotto::Event::Kind::receipt || e.kind == sotto::Event::Kind::typing) return;
      show("[" + sotto::cli::sanitize(e.message.conversation, false) + "] " +
           sotto::cli::event_text(e, self));
      return;
    }
    show(sotto::cli::event_text(e, self));
    if (e.kind == sotto::Event::Kind::message && !e.message.outgoing) {
      (void)(*client)->mark_read(*peer, {e.message.timestamp});
    }
    if (e.kind == sotto::Event::Kind::fatal) editor.interrupt();
  });
  if (!started) {
    signals.on_signal(nullptr);
    return fail(started.error());
  }

  int status = 0;
  while (auto line = editor.read_line()) {
    std::string text = std::move(*line);
    if (text.starts_with("//")) {
      text.erase(0, 1);  // "//x" sends "/x"
    } else if (text.starts_with("/")) {
      std::istringstream words(text);
      std::string command;
      words >> command;
      if (command == "/quit" || command == "/exit") break;
      if (command == "/help") {
        if (g.json) {
          show_json({{"type", "help"}, {"text", kChatHelp}});
        } else {
          show(kChatHelp);
        }
      } else if (command == "/history") {
        std::string count;
        words >> count;
        std::size_t limit = kChatHistory;
        if (!count.empty()) {
          if (count.find_first_not_of("0123456789") != std::string::npos || count.size() > 6) {
            show_error(Error{ErrorCode::invalid_argument, "/history takes a number of messages"},
                       "");
            continue;
          }
          limit = static_cast<std::size_t>(std::stoul(count));
        }
        show_history(limit);
      } else if (command == "/attach") {
        std::string rest;
        std::getline(words, rest);
        auto r = sotto::cli::send_file(**client, *peer, rest);
        if (!r) {
          status = 1;
          Error e = r.error();
          if (!e.message.starts_with("not sent")) e.message = "not sent: " + e.message;
          show_error(e, chat_hint(r.error(), *peer));
        } else if (g.json) {
          show_json({{"type", "sent"}, {"timestamp", r->timestamp}, {"devices", r->devices}});
        } else {
          show("* file sent #" + std::to_string(r->timestamp) + "\n  ~ ✓ sent");
        }
      } else if (command == "/safety-number") {
        auto sn = (*client)->safety_number(*peer);
        if (!sn) {
          show_error(sn.error(), chat_hint(sn.error(), *peer));
        } else if (g.json) {
          json j = sotto::cli::safety_number_json(*peer, *sn);
          j["type"] = "safety_number";
          show_json(j);
        } else {
          show("Safety number with " + *peer + ":\n" + group_digits(sn->digits) + "\n" +
               sotto::cli::safety_state_text(*peer, *sn));
        }
      } else if (command == "/trust") {
        std::string digits;
        std::getline(words, digits);
        digits.erase(0, digits.find_first_not_of(" \t"));
        auto r = (*client)->trust(
            *peer, digits.empty() ? std::nullopt : std::optional<std::string>(digits));
        if (!r) {
          show_error(r.error(), r.error().code == ErrorCode::safety_number_mismatch
                                    ? ""
                                    : chat_hint(r.error(), *peer));
        } else if (g.json) {
          json j = sotto::cli::safety_number_json(*peer, *r);
          j["type"] = "trusted";
          show_json(j);
        } else {
          show(r->verified ? "* " + *peer + " is verified, and the key is accepted."
                           : "* " + *peer +
                                 "'s current key is accepted, not verified (/trust DIGITS "
                                 "verifies it).");
        }
      } else {
        const std::string name = sotto::cli::sanitize(command, false);
        if (g.json) {
          show_json(sotto::cli::error_json(
              Error{ErrorCode::invalid_argument, "unknown command " + name}, "/help lists them"));
        } else {
          show("! unknown command " + name + "; /help lists them");
        }
      }
      continue;
    }
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    auto r = (*client)->send(*peer, text);
    if (!r) {
      status = 1;
      Error e = r.error();
      if (!e.message.starts_with("not sent")) e.message = "not sent: " + e.message;
      show_error(e, chat_hint(r.error(), *peer));
      continue;
    }
    sotto::Message m;
    m.id = "local-";
    m.from = self;
    m.timestamp = r->timestamp;
    m.body = text;
    m.conversation = *peer;
    m.outgoing = true;
    if (g.json)
      show_json({{"type", "sent"}, {"timestamp", r->timestamp}, {"devices", r->devices}});
    else
      show(sotto::cli::message_text(m, self) + "\n  ~ ✓ sent");  // ✓✓ lines follow as receipts
  }
  leaving = true;
  if (typing_sent.valid()) typing_sent.wait();
  (*client)->stop();
  signals.on_signal(nullptr);  // the editor goes away next
  return stopped ? 1 : status;
}

int cmd_link(const std::string& server_text, const std::string& fingerprint, int timeout,
             const std::string& name, bool transfer_history) {
  auto server = parse_server(server_text, fingerprint);
  if (!server) return fail(server.error());
  auto o = make_options(DataDir::created);
  if (!o) return fail(o.error());
  sotto::cli::ProgressBar bar("Receiving the history", "messages");
  sotto::LinkOptions link_options;
  link_options.device_name = name;
  link_options.transfer_history = transfer_history;
  link_options.history_progress = [&bar](std::uint64_t done, std::uint64_t total) {
    bar.update(done, total);
  };
  auto client = Client::link(
      *o, *server,
      [](const sotto::LinkPrompt& p) {
        if (g.json) {
          print_json({{"code", p.code}});
          return;
        }
        print_line(
            "Scan this code with a device of your account, or type the link code there:\n\n" +
            sotto::cli::render_qr_text(p.qr_text) + "\n  " + p.code +
            "\n\nOn a device of the account, run:\n  sotto add-device " + p.code +
            "\n(type the code exactly as shown). Waiting...");
      },
      std::chrono::seconds(timeout), link_options);
  bar.finish();
  if (!client) {
    if (client.error().code == ErrorCode::fingerprint_mismatch)
      return fail(client.error(), setup_fingerprint_hint(fingerprint));
    return fail(client.error());
  }
  if (g.json) {
    print_json({{"username", (*client)->username()},
                {"device", (*client)->device_id()},
                {"name", name},
                {"historyTransferred", transfer_history}});
  } else {
    std::string text = "Linked: this is device " + std::to_string((*client)->device_id());
    if (!name.empty()) text += " (\"" + sotto::cli::sanitize(name, false) + "\")";
    text += " of " + (*client)->username() + ".";
    if (transfer_history) text += " The conversation history was copied from the other device.";
    print_line(text);
  }
  return 0;
}

int cmd_add_device(const std::string& code) {
  auto client = open_client();
  if (!client) return fail(client.error());
  sotto::cli::ProgressBar bar("Sending the history", "messages");
  auto r = (*client)->add_device(
      code, [&bar](std::uint64_t done, std::uint64_t total) { bar.update(done, total); });
  bar.finish();
  if (!r) return fail(r.error());
  if (g.json) {
    print_json({{"device", *r}});
  } else if (*r != 0) {
    print_line("The new device is linked as device " + std::to_string(*r) + ".");
  } else {
    print_line(
        "Sent the account to the new device; it has not registered yet (see `sotto devices`).");
  }
  return 0;
}

int cmd_devices() {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->devices();
  if (!r) return fail(r.error());
  for (const auto& d : *r) {
    if (g.json)
      print_json(sotto::cli::device_json(d));
    else
      print_line(sotto::cli::device_text(d));
  }
  return 0;
}

int cmd_devices_remove(std::uint32_t id) {
  auto client = open_client();
  if (!client) return fail(client.error());
  if (auto r = (*client)->remove_device(id); !r) return fail(r.error());
  if (g.json)
    print_json({{"removed", id}});
  else
    print_line("Removed device " + std::to_string(id) + ".");
  return 0;
}

int cmd_contacts() {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->contacts();
  if (!r) return fail(r.error());
  if (!g.json && r->empty()) print_line("No contacts yet.");
  for (const auto& c : *r) {
    if (g.json)
      print_json(sotto::cli::contact_json(c));
    else
      print_line(sotto::cli::contact_text(c));
  }
  return 0;
}

int cmd_block(const std::string& user, bool block) {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = block ? (*client)->block(user) : (*client)->unblock(user);
  if (!r) return fail(r.error(), default_hint(r.error(), user));
  const std::string name = sotto::normalize_username(user).value_or(user);
  if (g.json) {
    print_json({{block ? "blocked" : "unblocked", name}});
  } else if (block) {
    print_line("Blocked " + name +
               ": the server keeps none of their messages for your devices (they are not told). "
               "`sotto unblock " +
               name + "` undoes it.");
  } else {
    print_line("Unblocked " + name +
               ": what they send from now on reaches you (what they sent while blocked is gone).");
  }
  return 0;
}

int cmd_blocked() {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->blocked();
  if (!r) return fail(r.error());
  if (!g.json && r->empty()) print_line("No one is blocked.");
  for (const auto& name : *r) {
    if (g.json)
      print_json({{"username", name}});
    else
      print_line(name);
  }
  return 0;
}

int cmd_safety_number(const std::string& user) {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->safety_number(user);
  if (!r) return fail(r.error(), default_hint(r.error(), user));
  if (g.json)
    print_json(sotto::cli::safety_number_json(user, *r));
  else
    print_safety_number(user, *r);
  return 0;
}

int cmd_trust(const std::string& user, const std::optional<std::string>& digits) {
  auto client = open_client();
  if (!client) return fail(client.error());
  // Held messages are released by trust(); the count before says how many.
  std::size_t held = 0;
  if (const auto name = sotto::normalize_username(user)) {
    if (auto contacts = (*client)->contacts()) {
      for (const auto& c : *contacts) {
        if (c.username == *name) held = c.held;
      }
    }
  }
  auto r = (*client)->trust(user, digits);
  if (!r) {
    if (r.error().code == ErrorCode::safety_number_mismatch) return fail(r.error(), "");
    if (r.error().code == ErrorCode::untrusted_identity) {
      return fail(r.error(),
                  "`sotto safety-number " + sotto::cli::sanitize(user, false) + "` shows it");
    }
    return fail(r.error(), default_hint(r.error(), user));
  }
  const std::size_t released = r->held == 0 ? held : 0;
  if (g.json) {
    json j = sotto::cli::safety_number_json(user, *r);
    j["released"] = released;
    print_json(j);
    return 0;
  }
  const std::string u = sotto::cli::sanitize(user, false);
  if (r->verified) {
    print_line(u + " is verified: you compared the safety number with " + u +
               "'s current key, and the key is accepted.");
  } else {
    print_line(u +
               "'s current key is accepted, but not verified. To verify it, compare `sotto "
               "safety-number " +
               u + "` with " + u + "'s screen, then run `sotto trust " + u +
               " --safety-number \"DIGITS\"`.");
  }
  if (released > 0) {
    print_line(std::to_string(released) +
               (released == 1 ? " held message from " : " held messages from ") + u +
               (released == 1 ? " was" : " were") + " released: `sotto receive` shows " +
               (released == 1 ? "it." : "them."));
  }
  return 0;
}

int cmd_history(const std::string& user, std::size_t limit) {
  auto o = make_options();
  if (!o) return fail(o.error());
  // Reading beside the lock's holder is the fallback, so there is no point in waiting long.
  o->lock_wait = kHistoryLockWait;
  std::string self = g.account;
  sotto::Result<std::vector<sotto::Message>> r;
  auto client = Client::open(*o, g.account);
  if (client) {
    self = (*client)->username();
    r = (*client)->history(user, limit);
  } else if (client.error().code == ErrorCode::account_busy) {
    // A daemon (or chat) holds the account: read beside it, without its lock.
    if (self.empty()) {
      const auto names = Client::accounts(o->data_dir);
      if (names.size() == 1) self = names.front();
    }
    r = Client::read_history(*o, g.account, user, limit);
  } else {
    return fail(client.error());
  }
  if (!r) return fail(r.error());
  // In a group, receipts are summed up over the members our messages go to (as the group is now).
  std::size_t recipients = 0;
  if (!g.json && user.starts_with("group:")) {
    // The same count with or without a daemon beside us (then the group is read from the store).
    auto group = client ? (*client)->group(user.substr(6))
                        : Client::read_group(*o, g.account, user.substr(6));
    if (group) {
      for (const auto& member : group->members) recipients += member.user != self;
    }
  }
  for (const auto& m : *r) {
    if (g.json)
      print_json(sotto::cli::message_json(m));
    else
      print_line(sotto::cli::message_text(m, self, recipients));
  }
  return 0;
}

// --- the server ------------------------------------------------------------------------------

int cmd_server_show() {
  auto client = open_client();
  if (!client) return fail(client.error());
  const auto s = (*client)->server();
  if (g.json) {
    print_json({{"server", address_text(s)},
                {"fingerprint", s.fingerprint},
                {"nextFingerprint",
                 s.next_fingerprint.empty() ? json(nullptr) : json(s.next_fingerprint)}});
    return 0;
  }
  print_line("Server: " + address_text(s) + "\nPinned key fingerprint: " +
             (s.fingerprint.empty() ? std::string("none yet (pinned at the next connection)")
                                    : s.fingerprint) +
             "\nAnnounced next key: " +
             (s.next_fingerprint.empty()
                  ? std::string("none")
                  : s.next_fingerprint +
                        " (signed by the current key; pinned when the server switches to it)"));
  return 0;
}

int cmd_server_trust(const std::string& fingerprint) {
  auto client = open_client();
  if (!client) return fail(client.error());
  if (auto r = (*client)->trust_server_key(fingerprint); !r) return fail(r.error());
  const auto s = (*client)->server();
  if (g.json) {
    print_json({{"server", address_text(s)}, {"fingerprint", s.fingerprint}});
  } else {
    print_line("Pinned the server key " + s.fingerprint + " for " + address_text(s) +
               ": only a server with this key is accepted from now on.");
  }
  return 0;
}

// sotto kt require-auditor KEY --max-age AGE | --off; without either, shows the requirement.
int cmd_kt_require_auditor(const std::string& key, const std::string& max_age, bool off) {
  if (off && (!key.empty() || !max_age.empty())) {
    return fail(Error{ErrorCode::invalid_argument, "--off takes no KEY and no --max-age"});
  }
  if (!off && !key.empty() && max_age.empty()) {
    return fail(Error{ErrorCode::invalid_argument, "--max-age is required with KEY"},
                std::string("e.g. `sotto kt require-auditor KEY --max-age 24h`"));
  }
  if (!off && key.empty() && !max_age.empty()) {
    return fail(Error{ErrorCode::invalid_argument, "KEY is required with --max-age"});
  }
  std::uint32_t seconds = 0;
  if (!max_age.empty()) {
    auto parsed = sotto::cli::parse_duration(max_age);
    if (!parsed) return fail(parsed.error());
    seconds = *parsed;
    if (seconds == 0) {
      return fail(Error{ErrorCode::invalid_argument,
                        "--max-age must be a time longer than 0 (a co-signature can never be "
                        "0 s old)"},
                  std::string("e.g. `--max-age 24h`; to require no auditor, use "
                              "`sotto kt require-auditor --off`"));
    }
  }
  auto client = open_client();
  if (!client) return fail(client.error());
  if (off || !key.empty()) {
    if (auto r =
            (*client)->require_auditor(off ? std::string() : key, std::chrono::seconds(seconds));
        !r) {
      return fail(r.error());
    }
  }
  auto now = (*client)->required_auditor();
  if (!now) return fail(now.error());
  if (g.json) {
    if (*now) {
      print_json({{"auditor", (*now)->key_hex},
                  {"maxAgeSeconds",
                   std::chrono::duration_cast<std::chrono::seconds>((*now)->max_age).count()}});
    } else {
      print_json({{"auditor", nullptr}});
    }
  } else if (*now) {
    print_line(
        "Lookups need a co-signature by auditor " + (*now)->key_hex + " at most " +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>((*now)->max_age).count()) +
        " s old; without one, nothing is encrypted to the keys looked up.");
  } else {
    print_line("No auditor co-signature is required.");
  }
  return 0;
}

// sotto kt show: the log this device pinned, to compare with `sotto-server kt-keys`.
int cmd_kt_show() {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto pin = (*client)->pinned_log();
  if (!pin) return fail(pin.error());
  if (g.json) {
    if (!*pin) {
      print_json({{"keys", nullptr}});
    } else {
      print_json({{"keys", (*pin)->keys},
                  {"treeSize", (*pin)->tree_size},
                  {"treeTime", (*pin)->tree_time_ms}});
    }
    return 0;
  }
  if (!*pin) {
    print_line(
        "No key transparency log pinned yet: this device pins the server's at its first "
        "lookup (or from the device that linked it).");
    return 0;
  }
  print_line("kt keys: " + (*pin)->keys);
  print_line((*pin)->tree_size == 0
                 ? std::string("No tree head verified yet.")
                 : "Newest verified tree head: " + std::to_string((*pin)->tree_size) +
                       " entries, made " + sotto::cli::format_time((*pin)->tree_time_ms) + ".");
  print_line("Compare the keys with what the operator's `sotto-server kt-keys` prints.");
  return 0;
}

int cmd_server_set_address(const std::string& address) {
  auto server = parse_server(address, {});
  if (!server) return fail(server.error());
  auto client = open_client();
  if (!client) return fail(client.error());
  if (auto r = (*client)->set_server_address(server->host, server->port); !r) {
    return fail(r.error());
  }
  const auto s = (*client)->server();
  if (g.json) {
    print_json({{"server", address_text(s)}, {"fingerprint", s.fingerprint}});
  } else {
    print_line("The account now uses the server at " + address_text(s) +
               " (the same server: its key must still be " + s.fingerprint + ").");
  }
  return 0;
}

// --- backups ---------------------------------------------------------------------------------

struct BackupSecretOptions {
  std::string recovery_code;  // "-": typed on the terminal
  std::string passphrase_file;
  bool force = false;  // export: replace an existing file
};

// A backup's file can be attacked offline, as fast as the attacker's hardware allows (Argon2id
// only slows each guess down): a short passphrase would fall.
constexpr std::size_t kMinBackupPassphrase = 8;

std::size_t utf8_characters(const std::string& s) {
  return static_cast<std::size_t>(std::count_if(
      s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

// Prints a warning on standard error (with --json, {"warning": "..."}).
void warn(const std::string& text) {
  std::fflush(stdout);
  if (g.json) {
    std::fprintf(stderr, "%s\n", sotto::cli::dump({{"warning", text}}).c_str());
  } else {
    std::fprintf(stderr, "sotto: warning: %s\n", text.c_str());
  }
}

// Reads a secret (`what`: "recovery code") typed on the terminal; `twice` asks again and requires
// the same text (`same` compares). An error when standard input is not a terminal (`absent` says
// what to give instead).
tl::expected<std::string, Error> type_secret(
    const std::string& what, bool twice, const std::string& absent,
    const std::function<bool(const std::string&, const std::string&)>& same,
    const std::function<tl::expected<void, Error>(const std::string&)>& check) {
  const bool terminal = ::isatty(STDIN_FILENO) != 0;
  std::string prompt = what + ": ";
  prompt.front() = static_cast<char>(std::toupper(static_cast<unsigned char>(prompt.front())));
  auto typed = sotto::cli::read_hidden_line(prompt);
  if (!typed) {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument, terminal ? "cancelled; nothing was done" : absent});
  }
  if (auto ok = check(*typed); !ok) {
    wipe(*typed);
    return tl::unexpected(ok.error());
  }
  if (twice) {
    auto again = sotto::cli::read_hidden_line("The same " + what + " again: ");
    const bool equal = again && same(*again, *typed);
    if (again) wipe(*again);
    if (!equal) {
      wipe(*typed);
      return tl::unexpected(
          Error{ErrorCode::invalid_argument, "the two " + what + "s differ; nothing was written"});
    }
  }
  return std::move(*typed);
}

bool same_recovery_code(const std::string& a, const std::string& b) {
  auto x = sotto::client::RecoveryCode::parse(a);
  auto y = sotto::client::RecoveryCode::parse(b);
  return x && y && *x == *y;
}

bool same_text(const std::string& a, const std::string& b) {
  return a == b;
}

tl::expected<void, Error> check_passphrase(const std::string& p) {
  if (p.empty())
    return tl::unexpected(Error{ErrorCode::invalid_argument, "the passphrase is empty"});
  if (utf8_characters(p) < kMinBackupPassphrase) {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument,
              "a backup passphrase needs at least " + std::to_string(kMinBackupPassphrase) +
                  " characters: whoever gets the file can try passphrases offline, without limit"});
  }
  return {};
}

tl::expected<void, Error> accept_any(const std::string& p) {
  if (p.empty())
    return tl::unexpected(Error{ErrorCode::invalid_argument, "the passphrase is empty"});
  return {};
}

// The secret of a backup: the recovery code (given, or "-" to type it), a passphrase from a file,
// from $SOTTO_BACKUP_PASSPHRASE, or typed on the terminal. An export asks for a typed secret
// twice; an import asks for the kind of secret the backup's header names (`source`).
tl::expected<sotto::BackupSecret, Error> backup_secret(
    BackupSecretOptions& in, bool exporting, std::optional<sotto::client::BackupKeySource> source) {
  using sotto::client::BackupKeySource;
  sotto::BackupSecret secret;
  if (!in.recovery_code.empty() && !in.passphrase_file.empty()) {
    return tl::unexpected(Error{ErrorCode::invalid_argument,
                                "give --recovery-code or --backup-passphrase-file, not both"});
  }
  const bool wants_code =
      source ? *source == BackupKeySource::recovery_code : !in.recovery_code.empty();
  if (source == BackupKeySource::recovery_code && !in.passphrase_file.empty()) {
    return tl::unexpected(Error{ErrorCode::invalid_argument,
                                "this backup is encrypted with the account's recovery code, not a "
                                "passphrase: give it with --recovery-code CODE"});
  }
  if (source == BackupKeySource::passphrase && !in.recovery_code.empty()) {
    return tl::unexpected(
        Error{ErrorCode::invalid_argument,
              "this backup is encrypted with a passphrase, not the recovery code: give it with "
              "--backup-passphrase-file FILE or $SOTTO_BACKUP_PASSPHRASE, or type it"});
  }
  if (wants_code) {
    secret.kind = sotto::BackupSecret::Kind::recovery_code;
    if (!in.recovery_code.empty() && in.recovery_code != "-") {
      if (auto ok = check_recovery_code(in.recovery_code); !ok) return tl::unexpected(ok.error());
      secret.text = std::move(in.recovery_code);
      wipe(in.recovery_code);
      if (exporting) {
        warn(
            "the backup is sealed with the recovery code exactly as given: only its form is "
            "checked, not that it is this account's code. Keep that exact code with the backup; "
            "a backup sealed with a mistyped code cannot be opened by anyone");
      }
      return secret;
    }
    auto typed =
        type_secret("recovery code", exporting,
                    "this backup is encrypted with the account's recovery code: give it with "
                    "--recovery-code CODE",
                    same_recovery_code, check_recovery_code);
    if (!typed) return tl::unexpected(typed.error());
    secret.text = std::move(*typed);
    return secret;
  }
  secret.kind = sotto::BackupSecret::Kind::passphrase;
  const auto& check = exporting ? check_passphrase : accept_any;
  if (!in.passphrase_file.empty()) {
    auto p = read_secret_file(in.passphrase_file, "backup passphrase");
    if (!p) return tl::unexpected(p.error());
    if (auto ok = check(*p); !ok) {
      wipe(*p);
      return tl::unexpected(ok.error());
    }
    secret.text = std::move(*p);
    return secret;
  }
  if (const char* env = std::getenv("SOTTO_BACKUP_PASSPHRASE"); env != nullptr && *env != '\0') {
    if (auto ok = check(env); !ok) return tl::unexpected(ok.error());
    secret.text = env;
    return secret;
  }
  auto typed = type_secret(
      "backup passphrase", exporting,
      exporting ? "no backup secret: give --backup-passphrase-file FILE, $SOTTO_BACKUP_PASSPHRASE "
                  "or --recovery-code CODE (or type a passphrase on a terminal)"
                : "this backup is encrypted with a passphrase: give it with "
                  "--backup-passphrase-file FILE or $SOTTO_BACKUP_PASSPHRASE (or type it on a "
                  "terminal)",
      same_text, check);
  if (!typed) return tl::unexpected(typed.error());
  secret.text = std::move(*typed);
  return secret;
}

// What is wrong with the backup file before any secret is asked for: an export's file that
// exists (without --force), an import's file that does not, or is not a backup. For an import,
// the kind of secret its header names.
tl::expected<std::optional<sotto::client::BackupKeySource>, Error> check_backup_file(
    bool exporting, const std::string& file, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto status = fs::status(file, ec);
  const std::string path = sotto::cli::sanitize(file, false);
  const auto error = [](std::string text) {
    return tl::unexpected(Error{ErrorCode::invalid_argument, std::move(text)});
  };
  if (exporting) {
    if (fs::is_directory(status)) return error(path + " is a directory: name a file");
    if (fs::exists(status) && !force) {
      return error(path +
                   " exists already: give --force to replace it (with a complete backup "
                   "only: it stays as it is if writing fails)");
    }
    return std::nullopt;
  }
  if (!fs::exists(status)) return error("the backup file " + path + " does not exist");
  if (fs::is_directory(status)) return error(path + " is a directory, not a backup file");
  auto header = sotto::client::inspect_backup(fs::path(file));
  if (!header) {
    if (header.error() == sotto::client::BackupError::io)
      return error("cannot read the backup file " + path);
    return error(path + ": " + std::string(to_string(header.error())));
  }
  return header->key_source;
}

int cmd_backup(bool exporting, const std::string& file, BackupSecretOptions& secret_options) {
  auto source = check_backup_file(exporting, file, secret_options.force);
  if (!source) return fail(source.error(), "");
  auto client = open_client();
  if (!client) return fail(client.error());
  auto secret = backup_secret(secret_options, exporting, *source);
  if (!secret) return fail(secret.error(), "");
  sotto::cli::ProgressBar bar(exporting ? "Writing the backup" : "Reading the backup",
                              exporting ? "messages" : "bytes");
  const auto progress = [&bar](std::uint64_t done, std::uint64_t total) {
    bar.update(done, total);
  };
  auto r = exporting ? (*client)->backup_export(file, *secret, progress)
                     : (*client)->backup_import(file, *secret, progress);
  wipe(secret->text);
  bar.finish();
  if (!r) {
    if (r.error().code == ErrorCode::wrong_passphrase) {
      return fail(r.error(),
                  std::string("Nothing was imported; give the ") +
                      (*source == sotto::client::BackupKeySource::recovery_code ? "recovery code"
                                                                                : "passphrase") +
                      " the backup was written with");
    }
    return fail(r.error());
  }
  const std::string path = sotto::cli::sanitize(file, false);
  if (g.json) {
    print_json({{"messages", *r}});
  } else if (exporting) {
    print_line("Wrote " + std::to_string(*r) + (*r == 1 ? " message" : " messages") +
               ", the contacts and their trust to " + path + ".");
  } else {
    print_line("Added " + std::to_string(*r) + (*r == 1 ? " message" : " messages") + " from " +
               path + " (messages already here are kept once), and restored the contacts' trust.");
  }
  return 0;
}

int cmd_daemon(const sotto::cli::DaemonOptions& daemon) {
  auto o = make_options();
  if (!o) return fail(o.error());
  auto client = Client::open(sotto::cli::daemon_client_options(*o, daemon), g.account);
  if (!client) return fail(client.error());
  return sotto::cli::run_daemon(**client, daemon);
}

// A command line CLI11 refused, reported like any other error: one line on stderr (with --json,
// one JSON object) and status 1. --help and --version print as CLI11 does and exit with 0.
int usage_error(CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == 0) return app.exit(e);
  g.json = g.json || app.count("--json") > 0;  // CLI11 may stop before it set the flag
  std::string words;  // the command as far as it was understood: "", "backup", "devices remove"
  CLI::App* last = &app;
  for (;;) {
    const auto subs = last->get_subcommands();
    if (subs.empty()) break;
    last = subs.front();
    words += (words.empty() ? "" : " ") + last->get_name();
  }
  const std::string command = words.empty() ? "sotto" : "sotto " + words;
  std::string message = e.what();
  std::string hint = "`" + command + " --help` shows how to use it";
  const auto rest = app.remaining();
  // A word where a command (of those `last` has) was expected.
  const bool has_commands = !last->get_subcommands([](const CLI::App*) { return true; }).empty();
  const bool stray_word = has_commands && !rest.empty() && !rest.front().starts_with("-");
  if (message == "A subcommand is required" || stray_word) {
    hint = "`" + command + " --help` lists the commands";
    message = rest.empty() ? "`" + command + "` needs a command"
                           : "unknown command `" + words + (words.empty() ? "" : " ") +
                                 sotto::cli::sanitize(rest.front(), false) + "`";
  } else if (words == "send" && message.starts_with("The following argument")) {
    hint = "Quote a message of several words: sotto send USER \"TEXT\"";
  } else if (constexpr std::string_view kConvert = "Could not convert: ";
             message.starts_with(kConvert)) {
    // "Could not convert: ID = abc"
    const std::string what = message.substr(kConvert.size());
    const auto eq = what.find(" = ");
    if (eq != std::string::npos)
      message = what.substr(0, eq) + ": '" + what.substr(eq + 3) + "' is not a valid value";
  }
  return fail(Error{ErrorCode::invalid_argument, message}, hint);
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  // What a peer sends is parsed by protobuf, which logs to stderr when a text field is not valid
  // UTF-8; the client reports such a message itself (as an error event), once.
  google::protobuf::SetLogHandler(nullptr);
  CLI::App app{"sotto: an end-to-end encrypted messenger (Signal protocol)"};
  app.set_version_flag("--version", std::string("sotto ") + SOTTO_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the command: `sotto send bob hi --json`
  app.add_option("--data", g.data, "Data directory (default ~/.local/share/sotto)");
  app.add_flag("--json", g.json,
               "Machine-readable output: one JSON object per line (errors: one object on "
               "stderr)");
  app.add_option("--account", g.account, "The account to use when the data directory has several");
  app.add_option("--passphrase-file", g.passphrase_file,
                 "File holding the store passphrase (else $SOTTO_PASSPHRASE; neither: a key file)");
  app.add_option("--trust-new-identities", g.trust_policy,
                 "Contacts' identity keys: on-first-use (default: the first key is accepted, a "
                 "changed one is held until you accept it), always (changes accepted and "
                 "reported), never (only keys verified with their safety number); saved")
      ->check(CLI::IsMember({"on-first-use", "always", "never"}));

  std::string user, server, fingerprint, invite, text, code, name, file, digits_text;
  std::vector<std::string> attach_files;
  std::string caption;
  std::string attachments_dir;
  int timeout = 30;
  std::uint32_t device = 0;
  std::size_t limit = 50;
  bool transfer_history = false;
  BackupSecretOptions backup_options;

  auto* reg = app.add_subcommand("register",
                                 "Create an account on a server; prints its recovery code, once");
  reg->add_option("USER", user, "Username: 3-32 of a-z 0-9 . _ -")->required();
  reg->add_option("--server", server, "HOST:PORT")->required();
  reg->add_option("--server-fingerprint", fingerprint,
                  "SHA-256 of the server's public key (hex, as sotto-server prints it); without "
                  "it the first key seen is pinned");
  reg->add_option("--invite", invite, "Invite code (invite-only servers)");

  auto* recover = app.add_subcommand(
      "recover",
      "Take USER's account back with its recovery code when every device is lost: this data "
      "directory becomes its primary device with a new identity key, the other devices are "
      "removed, and a new recovery code is printed");
  recover->add_option("USER", user, "The account's username")->required();
  recover->add_option("--code", code, "The recovery code (24 characters; dashes optional)")
      ->required();
  recover->add_option("--server", server, "HOST:PORT")->required();
  recover->add_option("--server-fingerprint", fingerprint,
                      "SHA-256 of the server's public key (hex); without it the first key seen "
                      "is pinned");

  auto* send = app.add_subcommand("send", "Send a message (UTF-8 text, files, or both)");
  std::string group_id;
  send->add_option("USER", user, "Recipient (with --group: the text)");
  send->add_option("TEXT", text,
                   "Message text (\"-\": read it from standard input; optional with --attach)");
  send->add_option("--group", group_id, "Send TEXT to this group (its id) instead of a user");
  send->add_option("--attach", attach_files,
                   "A file to send with the message, encrypted (repeatable; docs/attachments.md). "
                   "It takes every word after it: the message text goes before it");
  send->add_option("--caption", caption, "A caption for the files of --attach (each file's own)");
  sotto::cli::MessageCommands message_commands(app);
  message_commands.add_send_options(send);
  send->add_option("--timeout", timeout, "Seconds to keep retrying (default 30)")
      ->check(CLI::Range(1, 3600));

  auto* receive = app.add_subcommand(
      "receive",
      "Fetch, decrypt and print waiting messages and events (identity and device changes, "
      "messages that could not be read)");
  receive->add_option("--timeout", timeout, "Seconds at most (default 30)")
      ->check(CLI::Range(1, 3600));
  receive->add_option("--attachments-dir", attachments_dir,
                      "Where received files are saved (default: DATA_DIR/attachments/ACCOUNT)");

  auto* chat = app.add_subcommand(
      "chat",
      "Interactive conversation: each line is sent; /help lists the commands (/history [N], "
      "/safety-number, /trust [DIGITS], /quit); //text sends /text. Exit status 1 when a message "
      "was not sent");
  chat->add_option("USER", user, "The other user");
  chat->add_option("--group", group_id, "Chat in this group (its id) instead");
  sotto::cli::GroupArgs group_args;
  sotto::cli::add_group_commands(app, group_args);

  auto* link = app.add_subcommand(
      "link",
      "Link this machine as a new device of an existing account (shows a QR code and a "
      "link code to type exactly into `sotto add-device` on a device of the account)");
  link->add_option("--server", server, "HOST:PORT")->required();
  link->add_option("--server-fingerprint", fingerprint, "SHA-256 of the server's public key (hex)");
  link->add_option("--name", name, "A name for this device, shown by `sotto devices`");
  link->add_flag("--transfer-history", transfer_history,
                 "Copy the conversation history from the device that links this one");
  int link_timeout = 600;
  link->add_option("--timeout", link_timeout, "Seconds to wait (default 600)")
      ->check(CLI::Range(1, 86400));

  auto* add = app.add_subcommand(
      "add-device",
      "Link the new device showing CODE to this account (and send it the history when it "
      "asks)");
  add->add_option("CODE", code,
                  "The link code shown by `sotto link`, typed exactly (80 characters A-Z 2-7; the "
                  "dashes are optional)")
      ->required();

  auto* devices = app.add_subcommand(
      "devices", "List the account's devices: id, name, primary, the day it was added");
  auto* remove =
      devices->add_subcommand("remove",
                              "Remove another device from the account (any device may remove a "
                              "linked device; the primary device, id 1, cannot be removed)");
  remove->add_option("ID", device, "Device id")->required();

  auto* contacts = app.add_subcommand(
      "contacts",
      "List contacts: verified or not, safety number changes, messages held until a new key is "
      "accepted");

  auto* block = app.add_subcommand(
      "block",
      "Block USER at the server, for every device of this account: their messages are no "
      "longer stored for you (they are not told, and what they send while blocked is never "
      "delivered, even after an unblock), and any already waiting are dropped unread");
  block->add_option("USER", user, "The user to block")->required();
  auto* unblock = app.add_subcommand(
      "unblock",
      "Let USER's messages reach you again (from now on: what they sent while blocked "
      "is gone)");
  unblock->add_option("USER", user, "The user to unblock")->required();
  auto* blocked = app.add_subcommand("blocked", "List the users this account blocks");

  auto* safety = app.add_subcommand(
      "safety-number",
      "Show the safety number with USER (digits and QR code) and its state: verified, accepted, "
      "or changed and not accepted");
  safety->add_option("USER", user, "The other user")->required();

  auto* trust = app.add_subcommand(
      "trust",
      "Accept USER's current identity key (the one `sotto safety-number` shows); with "
      "--safety-number also mark it verified. Held messages are then shown by `sotto receive`");
  trust->add_option("USER", user, "The other user")->required();
  trust->add_option("--safety-number", digits_text,
                    "The 60 digits you compared with USER's screen (spaces allowed: quote them); "
                    "refused, and nothing changes, when they do not match");

  auto* history = app.add_subcommand(
      "history", "Show the conversation with USER (also while a daemon uses the account)");
  history->add_option("USER", user, "The other user");
  history->add_option("--group", group_id, "Show this group's conversation (its id) instead");
  history->add_option("--limit", limit, "Newest messages to show (0: all; default 50)");

  auto* server_cmd = app.add_subcommand("server", "The server this account uses, and its key");
  server_cmd->require_subcommand(1);
  auto* server_show = server_cmd->add_subcommand(
      "show", "The server's address, its pinned key fingerprint and the next one it announced");
  auto* server_trust = server_cmd->add_subcommand(
      "trust",
      "Pin FINGERPRINT as the server's key: only after confirming with the operator that the "
      "key really changed");
  server_trust->add_option("FINGERPRINT", fingerprint, "SHA-256 of the server's public key (hex)")
      ->required();
  auto* server_move = server_cmd->add_subcommand(
      "set-address", "Use the same server at another address (its key stays pinned)");
  server_move->add_option("ADDRESS", server, "HOST:PORT")->required();

  auto* kt_cmd = app.add_subcommand("kt", "Key transparency settings of this device");
  kt_cmd->require_subcommand(1);
  std::string auditor_key, auditor_max_age;
  bool auditor_off = false;
  auto* kt_require = kt_cmd->add_subcommand(
      "require-auditor",
      "Refuse every key lookup whose answer has no co-signature by the auditor KEY no older than "
      "--max-age (docs/transparency.md); --off stops requiring it; neither shows the setting");
  kt_require->add_option("KEY", auditor_key,
                         "The auditor's key (64 hex digits, `sotto-audit key`)");
  kt_require->add_option("--max-age", auditor_max_age,
                         "Oldest co-signature accepted: 30s, 5m, 1h, 1d, 1w ...");
  kt_require->add_flag("--off", auditor_off, "Require no auditor any more");
  auto* kt_show = kt_cmd->add_subcommand(
      "show",
      "The key transparency log this device pinned (its keys, to compare with the operator's "
      "`sotto-server kt-keys`) and the newest tree head it verified");

  auto* backup = app.add_subcommand(
      "backup",
      "Encrypted backups of the contacts, their trust and the history (no keys). The secret is "
      "--recovery-code, --backup-passphrase-file, $SOTTO_BACKUP_PASSPHRASE, or typed");
  backup->require_subcommand(1);
  auto* backup_export = backup->add_subcommand("export", "Write a backup to FILE");
  auto* backup_import = backup->add_subcommand(
      "import",
      "Merge the backup in FILE into this account (checked whole before anything is "
      "written)");
  for (auto* sub : {backup_export, backup_import}) {
    sub->add_option("FILE", file, "The backup file")->required();
    sub->add_option("--recovery-code", backup_options.recovery_code,
                    "Encrypt with (or open with) the account's recovery code; - to type it");
    sub->add_option("--backup-passphrase-file", backup_options.passphrase_file,
                    "File holding the backup passphrase (at least 8 characters)");
  }
  backup_export->add_flag("--force", backup_options.force, "Replace FILE if it exists");

  auto* daemon = app.add_subcommand("daemon", "JSON-RPC 2.0 over stdin/stdout or a Unix socket");
  sotto::cli::DaemonOptions daemon_options;
  sotto::cli::add_daemon_options(*daemon, daemon_options);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e);
  }

  try {
    if (reg->parsed()) return cmd_register(user, server, fingerprint, invite);
    if (recover->parsed()) return cmd_recover(user, code, server, fingerprint);
    const sotto::cli::GroupContext group_context{g.json, [] { return open_client(); },
                                                 [](const Error& e) { return fail(e); },
                                                 [](const std::string& line) { print_line(line); }};
    if (auto status = sotto::cli::run_group_command(group_args, group_context)) return *status;
    if (send->parsed() && group_id.empty() && user.empty()) {
      // As CLI11 says it when USER is a required option.
      return fail(Error{ErrorCode::invalid_argument, "USER is required"},
                  std::string("`sotto send --help` shows how to use it (or --group ID)"));
    }
    if (send->parsed()) {
      if (auto files = sotto::cli::check_attach_files(attach_files); !files) {
        return fail(files.error());
      }
      if (!caption.empty() && attach_files.empty()) {
        return fail(ErrorCode::invalid_argument,
                    "--caption is a caption for files: give them with --attach");
      }
    }
    if (send->parsed() && !group_id.empty()) {
      if (user.empty() && attach_files.empty()) {
        return fail(
            Error{ErrorCode::invalid_argument, "TEXT is required unless --attach FILE is given"},
            std::string("`sotto send --help` shows how to use it"));
      }
      if (user == "-") {
        auto piped = sotto::cli::text_argument(user);  // "-": standard input
        if (!piped) return fail(piped.error());
        user = *piped;
      }
      if (!text.empty()) {
        return fail(ErrorCode::invalid_argument,
                    "with --group, give the text only: sotto send "
                    "--group ID TEXT");
      }
      return sotto::cli::send_to_group(
          group_id, user, group_context, attach_files,
          [&message_commands, &user](sotto::Client& c) {
            return message_commands.send_options(c, user);
          },
          caption);
    }
    if (send->parsed() && text.empty() && attach_files.empty()) {
      // As CLI11 says it when TEXT is a required option.
      return fail(Error{ErrorCode::invalid_argument, "TEXT is required"},
                  std::string("`sotto send --help` shows how to use it (or --attach FILE)"));
    }
    if (send->parsed())
      return cmd_send(user, text, timeout, message_commands, attach_files, caption);
    {
      sotto::cli::CommandEnv env;
      env.json = g.json;
      env.open = [] { return open_client(); };
      env.fail = [](const Error& e) { return fail(e); };
      env.print = [](const std::string& line) { print_line(line); };
      if (auto status = message_commands.run(env)) return *status;
    }
    if (receive->parsed()) return cmd_receive(timeout, attachments_dir);
    if (chat->parsed() && !group_id.empty()) {
      return sotto::cli::chat_in_group(group_id, group_context);
    }
    if (chat->parsed() && user.empty()) {
      return fail(Error{ErrorCode::invalid_argument, "USER is required"},
                  std::string("`sotto chat --help` shows how to use it (or --group ID)"));
    }
    if (chat->parsed()) return cmd_chat(user);
    if (link->parsed()) return cmd_link(server, fingerprint, link_timeout, name, transfer_history);
    if (add->parsed()) return cmd_add_device(code);
    if (remove->parsed()) return cmd_devices_remove(device);
    if (devices->parsed()) return cmd_devices();
    if (contacts->parsed()) return cmd_contacts();
    if (block->parsed()) return cmd_block(user, true);
    if (unblock->parsed()) return cmd_block(user, false);
    if (blocked->parsed()) return cmd_blocked();
    if (safety->parsed()) return cmd_safety_number(user);
    if (trust->parsed()) {
      return cmd_trust(user, trust->count("--safety-number") > 0
                                 ? std::optional<std::string>(digits_text)
                                 : std::nullopt);
    }
    if (history->parsed()) {
      if (user.empty() == group_id.empty()) {
        return fail(Error{ErrorCode::invalid_argument, "give USER or --group ID (one of them)"},
                    std::string("`sotto history --help` shows how to use it"));
      }
      return cmd_history(group_id.empty() ? user : "group:" + group_id, limit);
    }
    if (server_show->parsed()) return cmd_server_show();
    if (server_trust->parsed()) return cmd_server_trust(fingerprint);
    if (server_move->parsed()) return cmd_server_set_address(server);
    if (kt_require->parsed())
      return cmd_kt_require_auditor(auditor_key, auditor_max_age, auditor_off);
    if (kt_show->parsed()) return cmd_kt_show();
    if (backup_export->parsed()) return cmd_backup(true, file, backup_options);
    if (backup_import->parsed()) return cmd_backup(false, file, backup_options);
    if (daemon->parsed()) return cmd_daemon(daemon_options);
  } catch (const std::exception&) {
    return fail(ErrorCode::store, "internal error");
  }
  return 1;
}
