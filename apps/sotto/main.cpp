// sotto: the command-line client. Every command works on one account of the data directory
// (--account when there are several) and prints human text, or JSON with --json. Errors print
// one line on stderr and exit with status 1.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "daemon.h"
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

void print_line(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void print_json(const json& j) { print_line(sotto::cli::dump(j)); }

int fail(const Error& e) {
  std::fflush(stdout);
  if (g.json) {
    const std::string line = sotto::cli::dump(sotto::cli::error_json(e));
    std::fprintf(stderr, "%s\n", line.c_str());
  } else {
    std::fprintf(stderr, "sotto: error: %s\n", sotto::cli::sanitize(e.message, false).c_str());
  }
  return 1;
}

int fail(ErrorCode code, const std::string& message) { return fail(Error{code, message}); }

std::filesystem::path default_data_dir() {
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::filesystem::path(xdg) / "sotto";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return std::filesystem::path(home) / ".local" / "share" / "sotto";
  }
  return std::filesystem::path(".sotto");
}

tl::expected<sotto::Options, Error> make_options() {
  sotto::Options o;
  o.data_dir = g.data.empty() ? default_data_dir() : std::filesystem::path(g.data);
  if (!g.passphrase_file.empty()) {
    std::ifstream in(g.passphrase_file, std::ios::binary);
    if (!in) return tl::unexpected(Error{ErrorCode::invalid_argument, "cannot read the passphrase file"});
    std::string p((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    while (!p.empty() && (p.back() == '\n' || p.back() == '\r')) p.pop_back();
    if (p.empty()) return tl::unexpected(Error{ErrorCode::invalid_argument, "the passphrase file is empty"});
    o.passphrase = std::move(p);
  } else if (const char* env = std::getenv("SOTTO_PASSPHRASE"); env != nullptr && *env != '\0') {
    o.passphrase = std::string(env);
  }
  if (!g.trust_policy.empty()) o.trust_policy = g.trust_policy;
  return o;
}

tl::expected<std::unique_ptr<Client>, Error> open_client() {
  auto o = make_options();
  if (!o) return tl::unexpected(o.error());
  return Client::open(*o, g.account);
}

tl::expected<sotto::Server, Error> parse_server(const std::string& text, const std::string& fingerprint) {
  const auto colon = text.rfind(':');
  const auto bad = [] {
    return tl::unexpected(Error{ErrorCode::invalid_argument, "the server is HOST:PORT (port 1-65535)"});
  };
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) return bad();
  const std::string port_text = text.substr(colon + 1);
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5) return bad();
  const int port = std::stoi(port_text);
  if (port < 1 || port > 65535) return bad();
  sotto::Server s;
  s.host = text.substr(0, colon);
  if (s.host.size() > 2 && s.host.front() == '[' && s.host.back() == ']') s.host = s.host.substr(1, s.host.size() - 2);
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
    if (i > 0 && i % 20 == 0) out += "\n  ";
    else if (i > 0 && i % 5 == 0) out += ' ';
    out += digits[i];
  }
  return "  " + out;
}

std::string hex(const std::vector<std::uint8_t>& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (auto b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xF];
  }
  return out;
}

void print_safety_number(const std::string& user, const sotto::SafetyNumber& sn, const char* intro) {
  if (g.json) {
    print_json({{"user", user}, {"digits", sn.digits}, {"scannable", hex(sn.scannable)}});
    return;
  }
  std::string text = std::string(intro) + "\n\n" + group_digits(sn.digits) + "\n\n" +
                     sotto::cli::render_qr(sn.scannable);
  print_line(text);
}

// --- commands --------------------------------------------------------------------------------

int cmd_register(const std::string& user, const std::string& server_text,
                 const std::string& fingerprint, const std::string& invite) {
  auto server = parse_server(server_text, fingerprint);
  if (!server) return fail(server.error());
  auto o = make_options();
  if (!o) return fail(o.error());
  auto client = Client::register_account(*o, user, *server, invite);
  if (!client) return fail(client.error());
  const auto s = (*client)->server();
  if (g.json) {
    print_json({{"username", (*client)->username()},
                {"device", (*client)->device_id()},
                {"server", s.host + ":" + std::to_string(s.port)},
                {"fingerprint", s.fingerprint},
                {"trustedOnFirstUse", server->fingerprint.empty()}});
    return 0;
  }
  print_line("Registered " + (*client)->username() + " (device " +
             std::to_string((*client)->device_id()) + ") on " + s.host + ":" +
             std::to_string(s.port) + ".");
  if (server->fingerprint.empty()) {
    print_line("Server certificate fingerprint, trusted on first use and pinned from now on:\n  " +
               s.fingerprint + "\nCompare it with the one the server operator publishes.");
  } else {
    print_line("Server certificate fingerprint verified and pinned.");
  }
  return 0;
}

int cmd_send(const std::string& to, const std::string& text, int timeout) {
  auto o = make_options();
  if (!o) return fail(o.error());
  o->send_timeout = std::chrono::seconds(timeout);
  auto client = Client::open(*o, g.account);
  if (!client) return fail(client.error());
  auto r = (*client)->send(to, text);
  if (!r) {
    Error e = r.error();
    if (e.code == ErrorCode::untrusted_identity) {
      e.message = to + "'s safety number changed; nothing was sent. Compare it with `sotto "
                  "safety-number " + to + "` and accept the new key with `sotto trust " + to + "`";
    } else if (e.code == ErrorCode::not_found) {
      e.message = to + ": " + e.message;
    }
    return fail(e);
  }
  if (g.json) {
    print_json({{"timestamp", r->timestamp}, {"devices", r->devices}});
  } else {
    print_line("Sent to " + sotto::cli::sanitize(to, false) + " (" + std::to_string(r->devices) +
               (r->devices == 1 ? " device copy" : " device copies") + ").");
  }
  return 0;
}

int cmd_receive(int timeout) {
  auto client = open_client();
  if (!client) return fail(client.error());
  const std::string self = (*client)->username();
  auto r = (*client)->receive(std::chrono::seconds(timeout), [&](const sotto::Event& e) {
    if (g.json) print_json(sotto::cli::event_json(e));
    else print_line(sotto::cli::event_text(e, self));
  });
  if (!r) return fail(r.error());
  return 0;
}

int cmd_chat(const std::string& peer_in) {
  auto peer = sotto::normalize_username(peer_in);
  if (!peer) return fail(ErrorCode::invalid_argument, "invalid username");
  sotto::cli::ShutdownSignals signals;
  auto client = open_client();
  if (!client) return fail(client.error());
  const std::string self = (*client)->username();

  sotto::cli::LineEditor editor(*peer + "> ");
  signals.on_signal([&editor] { editor.interrupt(); });
  const auto show = [&](const std::string& line) { editor.print(line); };
  const auto show_json = [&](const json& j) { editor.print(sotto::cli::dump(j)); };

  if (!g.json) {
    show("Chat with " + *peer + " as " + self + ". Type a message and press Enter; /quit leaves.");
    if (auto h = (*client)->history(*peer, 20); h) {
      for (const auto& m : *h) show(sotto::cli::message_text(m, self));
    }
  }
  auto started = (*client)->start([&](const sotto::Event& e) {
    if (g.json) {
      show_json(sotto::cli::event_json(e));
      return;
    }
    if (e.kind == sotto::Event::Kind::connected) return;  // quiet on the happy path
    if (e.kind == sotto::Event::Kind::message && e.message.conversation != *peer) {
      show("[" + sotto::cli::sanitize(e.message.conversation, false) + "] " +
           sotto::cli::event_text(e, self));
      return;
    }
    show(sotto::cli::event_text(e, self));
    if (e.kind == sotto::Event::Kind::fatal) editor.interrupt();
  });
  if (!started) {
    signals.on_signal(nullptr);
    return fail(started.error());
  }

  int status = 0;
  while (auto line = editor.read_line()) {
    if (*line == "/quit" || *line == "/exit") break;
    if (line->find_first_not_of(" \t") == std::string::npos) continue;
    auto r = (*client)->send(*peer, *line);
    if (!r) {
      std::string message = r.error().message;
      if (r.error().code == ErrorCode::untrusted_identity) {
        message = *peer + "'s safety number changed; not sent. Check it with `sotto "
                  "safety-number " + *peer + "` and accept it with `sotto trust " + *peer + "`";
      }
      if (g.json) show_json(sotto::cli::error_json(Error{r.error().code, message}));
      else show("! not sent: " + message);
      continue;
    }
    sotto::Message m;
    m.id = "local-";
    m.from = self;
    m.timestamp = r->timestamp;
    m.body = *line;
    m.conversation = *peer;
    m.outgoing = true;
    if (g.json) show_json({{"type", "sent"}, {"timestamp", r->timestamp}, {"devices", r->devices}});
    else show(sotto::cli::message_text(m, self));
  }
  (*client)->stop();
  signals.on_signal(nullptr);  // the editor goes away next
  return status;
}

int cmd_link(const std::string& server_text, const std::string& fingerprint, int timeout) {
  auto server = parse_server(server_text, fingerprint);
  if (!server) return fail(server.error());
  auto o = make_options();
  if (!o) return fail(o.error());
  auto client = Client::link(*o, *server, [](const sotto::LinkPrompt& p) {
    if (g.json) {
      print_json({{"code", p.code}});
      return;
    }
    print_line("Scan this code with a device of your account, or type the link code there:\n\n" +
               sotto::cli::render_qr_text(p.qr_text) + "\n  " + p.code +
               "\n\nOn a device of the account, run:\n  sotto add-device " + p.code +
               "\n(type the code exactly as shown). Waiting...");
  }, std::chrono::seconds(timeout));
  if (!client) return fail(client.error());
  if (g.json) {
    print_json({{"username", (*client)->username()}, {"device", (*client)->device_id()}});
  } else {
    print_line("Linked: this is device " + std::to_string((*client)->device_id()) + " of " +
               (*client)->username() + ".");
  }
  return 0;
}

int cmd_add_device(const std::string& code) {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->add_device(code);
  if (!r) return fail(r.error());
  if (g.json) {
    print_json({{"device", *r}});
  } else if (*r != 0) {
    print_line("The new device is linked as device " + std::to_string(*r) + ".");
  } else {
    print_line("Sent the account to the new device; it has not registered yet (see `sotto devices`).");
  }
  return 0;
}

int cmd_devices() {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->devices();
  if (!r) return fail(r.error());
  if (g.json) {
    json list = json::array();
    for (const auto& d : *r) {
      list.push_back({{"id", d.id}, {"registrationId", d.registration_id},
                      {"createdDay", d.created_day}, {"current", d.current}});
    }
    print_json(list);
    return 0;
  }
  for (const auto& d : *r) {
    print_line("device " + std::to_string(d.id) + "  added " + sotto::cli::format_day(d.created_day) +
               (d.current ? "  (this device)" : ""));
  }
  return 0;
}

int cmd_devices_remove(std::uint32_t id) {
  auto client = open_client();
  if (!client) return fail(client.error());
  if (auto r = (*client)->remove_device(id); !r) return fail(r.error());
  if (g.json) print_json({{"removed", id}});
  else print_line("Removed device " + std::to_string(id) + ".");
  return 0;
}

int cmd_contacts() {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->contacts();
  if (!r) return fail(r.error());
  if (g.json) {
    json list = json::array();
    for (const auto& c : *r) {
      list.push_back({{"username", c.username}, {"verified", c.verified},
                      {"identityChangedAt", c.identity_changed_at}, {"identityKey", c.identity_key_hex}});
    }
    print_json(list);
    return 0;
  }
  if (r->empty()) print_line("No contacts yet.");
  for (const auto& c : *r) {
    std::string line = c.username;
    if (c.verified) line += "  verified";
    if (c.identity_changed_at != 0) {
      line += "  safety number changed " + sotto::cli::format_time(c.identity_changed_at);
    }
    print_line(line);
  }
  return 0;
}

int cmd_safety_number(const std::string& user) {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->safety_number(user);
  if (!r) return fail(r.error());
  const std::string intro = "Safety number with " + user +
                            " (compare it with the one on their screen, or scan their code):";
  print_safety_number(user, *r, intro.c_str());
  if (!g.json) print_line("If they match, run `sotto trust " + user + "` to mark " + user + " verified.");
  return 0;
}

int cmd_trust(const std::string& user) {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->trust(user);
  if (!r) return fail(r.error());
  const std::string intro = user + "'s current identity key is trusted and marked verified. Safety number:";
  print_safety_number(user, *r, intro.c_str());
  return 0;
}

int cmd_history(const std::string& user, std::size_t limit) {
  auto client = open_client();
  if (!client) return fail(client.error());
  auto r = (*client)->history(user, limit);
  if (!r) return fail(r.error());
  const std::string self = (*client)->username();
  for (const auto& m : *r) {
    if (g.json) print_json(sotto::cli::message_json(m));
    else print_line(sotto::cli::message_text(m, self));
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

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"sotto: an end-to-end encrypted messenger (Signal protocol)"};
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the command: `sotto send bob hi --json`
  app.add_option("--data", g.data, "Data directory (default ~/.local/share/sotto)");
  app.add_flag("--json", g.json, "Machine-readable output: JSON, one object per line");
  app.add_option("--account", g.account, "The account to use when the data directory has several");
  app.add_option("--passphrase-file", g.passphrase_file,
                 "File holding the store passphrase (else $SOTTO_PASSPHRASE; neither: a key file)");
  app.add_option("--trust-new-identities", g.trust_policy,
                 "Contacts' identity keys: on-first-use (default), always, never (saved)")
      ->check(CLI::IsMember({"on-first-use", "always", "never"}));

  std::string user, server, fingerprint, invite, text, code;
  int timeout = 30;
  std::uint32_t device = 0;
  std::size_t limit = 50;

  auto* reg = app.add_subcommand("register", "Create an account on a server");
  reg->add_option("USER", user, "Username: 3-32 of a-z 0-9 . _ -")->required();
  reg->add_option("--server", server, "HOST:PORT")->required();
  reg->add_option("--server-fingerprint", fingerprint,
                  "SHA-256 of the server certificate (hex); without it the first one seen is pinned");
  reg->add_option("--invite", invite, "Invite code (invite-only servers)");

  auto* send = app.add_subcommand("send", "Send a message");
  send->add_option("USER", user, "Recipient")->required();
  send->add_option("TEXT", text, "Message text")->required();
  send->add_option("--timeout", timeout, "Seconds to keep retrying (default 30)")->check(CLI::Range(1, 3600));

  auto* receive = app.add_subcommand("receive", "Fetch, decrypt and print waiting messages");
  receive->add_option("--timeout", timeout, "Seconds at most (default 30)")->check(CLI::Range(1, 3600));

  auto* chat = app.add_subcommand("chat", "Interactive conversation (/quit to leave)");
  chat->add_option("USER", user, "The other user")->required();

  auto* link = app.add_subcommand(
      "link", "Link this machine as a new device of an existing account (shows a QR code and a "
              "link code to type exactly into `sotto add-device` on a device of the account)");
  link->add_option("--server", server, "HOST:PORT")->required();
  link->add_option("--server-fingerprint", fingerprint, "SHA-256 of the server certificate (hex)");
  int link_timeout = 600;
  link->add_option("--timeout", link_timeout, "Seconds to wait (default 600)")->check(CLI::Range(1, 86400));

  auto* add = app.add_subcommand("add-device", "Link the new device showing CODE to this account");
  add->add_option("CODE", code,
                  "The link code shown by `sotto link`, typed exactly (80 characters A-Z 2-7; the "
                  "dashes are optional)")
      ->required();

  auto* devices = app.add_subcommand("devices", "List the account's devices");
  auto* remove = devices->add_subcommand("remove", "Remove a device from the account");
  remove->add_option("ID", device, "Device id")->required();

  auto* contacts = app.add_subcommand("contacts", "List contacts and their trust state");

  auto* safety = app.add_subcommand("safety-number", "Show the safety number with USER (digits and QR code)");
  safety->add_option("USER", user, "The other user")->required();

  auto* trust = app.add_subcommand("trust", "Accept USER's current identity key and mark it verified");
  trust->add_option("USER", user, "The other user")->required();

  auto* history = app.add_subcommand("history", "Show the conversation with USER");
  history->add_option("USER", user, "The other user")->required();
  history->add_option("--limit", limit, "Newest messages to show (0: all; default 50)");

  auto* daemon = app.add_subcommand("daemon", "JSON-RPC 2.0 over stdin/stdout or a Unix socket");
  sotto::cli::DaemonOptions daemon_options;
  sotto::cli::add_daemon_options(*daemon, daemon_options);

  CLI11_PARSE(app, argc, argv);

  try {
    if (reg->parsed()) return cmd_register(user, server, fingerprint, invite);
    if (send->parsed()) return cmd_send(user, text, timeout);
    if (receive->parsed()) return cmd_receive(timeout);
    if (chat->parsed()) return cmd_chat(user);
    if (link->parsed()) return cmd_link(server, fingerprint, link_timeout);
    if (add->parsed()) return cmd_add_device(code);
    if (remove->parsed()) return cmd_devices_remove(device);
    if (devices->parsed()) return cmd_devices();
    if (contacts->parsed()) return cmd_contacts();
    if (safety->parsed()) return cmd_safety_number(user);
    if (trust->parsed()) return cmd_trust(user);
    if (history->parsed()) return cmd_history(user, limit);
    if (daemon->parsed()) return cmd_daemon(daemon_options);
  } catch (const std::exception&) {
    return fail(ErrorCode::store, "internal error");
  }
  return 1;
}
