// sotto-audit: a third-party auditor of a Sotto server's key transparency log (docs/
// transparency.md, "Auditing"). It fetches the log's audit records from where it stopped, replays
// them with its own trees (transparency::Auditor), checks the server's signed tree head against
// its replay and co-signs it with its own Ed25519 key, which the server hands to clients that
// require it. A log that shrank, rewrote or dropped an entry, or signs a head the replay does not
// give, gets no co-signature: sotto-audit says which entry or size and exits 3, its state
// unchanged. Every other failure, a command line it refuses included, exits 1 (as sotto does).
//
// State directory: auditor.key (the key's 32-byte seed, mode 0600), log.keys (the log's pinned
// public keys), server.pin (the server's pinned TLS key), records (every record accepted, replayed
// at start: audit_core.h), lock. The arguments are checked before the directory is touched, and
// the pins are written only with the first records that verified under them: a run that failed
// leaves no pin behind that the next run would have to match.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audit_core.h"
#include "client/connection.h"
#include "client/transport.h"
#include "crypto/ed25519.h"
#include "crypto/encoding.h"
#include "crypto/rng.h"
#include "crypto/secret.h"

#ifndef SOTTO_VERSION
#define SOTTO_VERSION "unknown"
#endif

namespace {

using namespace sotto;
namespace kt = transparency;
namespace svc = wire::service;
namespace fs = std::filesystem;

constexpr int kExitError = 1;  // anything but misbehaviour, a refused command line included
constexpr int kExitMisbehaved = 3;
constexpr std::chrono::seconds kTimeout{30};
constexpr unsigned kDefaultInterval = 300;

// In follow mode every line printed starts with the UTC time, for the service's log.
bool g_timestamps = false;

void say(std::FILE* to, const std::string& line) {
  std::string stamp;
  if (g_timestamps) {
    const std::time_t now = std::time(nullptr);
    std::tm utc{};
    char text[32];
    if (::gmtime_r(&now, &utc) && std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ ", &utc))
      stamp = text;
  }
  std::fprintf(to, "%s%s\n", stamp.c_str(), line.c_str());
  std::fflush(to);
}

int fail(const std::string& message) {
  say(stderr, "sotto-audit: " + message);
  return kExitError;
}

std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

// Writes `data` to `file` whole (a temporary file fsynced and renamed into place).
bool write_file_atomically(const fs::path& file, ByteView data, mode_t mode) {
  const fs::path tmp = file.string() + ".new";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  bool ok = true;
  std::size_t done = 0;
  while (ok && done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  return ok && std::rename(tmp.c_str(), file.c_str()) == 0;
}

std::optional<std::string> read_text(const fs::path& file) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  std::string s;
  std::getline(in, s);
  return s;
}

// The auditor's key: made on first use, read with read(2) into the stack (no stream buffer keeps
// a copy of the seed).
tl::expected<crypto::Ed25519KeyPair, std::string> load_or_create_key(const fs::path& state) {
  const fs::path file = state / "auditor.key";
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    crypto::Secret<32> seed;
    crypto::system_rng().fill(seed.span());
    if (!write_file_atomically(file, seed.view(), 0600))
      return tl::unexpected("cannot write " + file.string());
    return crypto::Ed25519KeyPair::from_seed(seed);
  }
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return tl::unexpected("cannot read " + file.string());
  std::array<std::uint8_t, 33> raw{};
  std::size_t got = 0;
  while (got < raw.size()) {
    const ssize_t n = ::read(fd, raw.data() + got, raw.size() - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  crypto::Secret<32> seed{ByteView(raw.data(), 32)};
  crypto::secure_wipe(raw.data(), raw.size());
  if (got != 32) return tl::unexpected(file.string() + " is not a 32-byte key");
  return crypto::Ed25519KeyPair::from_seed(seed);
}

// The command line, checked before anything is connected to or written.
struct AuditOptions {
  fs::path state;
  client::Endpoint server;
  std::optional<std::string> pin;             // normalised; none: the pinned one, or TOFU
  std::optional<kt::LogPublicKeys> log_keys;  // none: the pinned ones, or TOFU
  bool once = false;
  unsigned interval = kDefaultInterval;  // seconds between rounds when following
  std::uint32_t batch = 1024;
};

// The state a round starts from: the replay of every record accepted so far.
struct State {
  kt::LogPublicKeys keys;
  kt::Auditor auditor;
  std::size_t records_bytes = 0;  // the records file's intact length
  explicit State(kt::LogPublicKeys k) : keys(k), auditor(k) {}
};

tl::expected<std::unique_ptr<State>, std::string> load_state(const fs::path& dir,
                                                             const kt::LogPublicKeys& keys) {
  auto state = std::make_unique<State>(keys);
  std::ifstream in(dir / "records", std::ios::binary);
  if (!in) return state;  // nothing accepted yet
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  const auto stored = audit::parse_records_file(
      ByteView(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
  for (const Bytes& r : stored.records) {
    auto record = kt::decode_audit_record(r);
    if (!record || !state->auditor.apply(*record)) {
      return tl::unexpected("the records file in " + dir.string() + " does not replay (entry " +
                            std::to_string(state->auditor.size()) + "): it is not this log's");
    }
  }
  state->records_bytes = stored.valid_bytes;
  return state;
}

// Appends the accepted records after the file's intact part (cutting off a write a crash cut
// short) and fsyncs them.
bool append_records(const fs::path& dir, std::size_t valid_bytes, const std::vector<Bytes>& add) {
  const fs::path file = dir / "records";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = ::ftruncate(fd, static_cast<off_t>(valid_bytes)) == 0 &&
            ::lseek(fd, static_cast<off_t>(valid_bytes), SEEK_SET) >= 0;
  for (const Bytes& r : add) {
    const Bytes framed = audit::frame_record(r);
    std::size_t done = 0;
    while (ok && done < framed.size()) {
      const ssize_t n = ::write(fd, framed.data() + done, framed.size() - done);
      ok = n > 0;
      if (ok) done += static_cast<std::size_t>(n);
    }
  }
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

struct Outcome {
  int code = 0;
  std::string message;
};

std::optional<client::Endpoint> parse_server(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  client::Endpoint e;
  e.host = text.substr(0, colon);
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) return std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (port == 0 || port > 65535) return std::nullopt;
  e.port = static_cast<std::uint16_t>(port);
  return e;
}

bool write_text(const fs::path& file, const std::string& text) {
  return write_file_atomically(
      file, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), 0600);
}

// One round: connect, pin, fetch and replay the new records, check the head, save, co-sign.
Outcome audit_round(const AuditOptions& o, const crypto::Ed25519KeyPair& key,
                    client::Connector& connector) {
  const fs::path& dir = o.state;
  auto endpoint = std::optional<client::Endpoint>(o.server);
  std::optional<std::string> pinned_server;
  if (const auto text = read_text(dir / "server.pin")) {
    pinned_server = audit::normalize_pin(*text);
    if (!pinned_server) return {kExitError, (dir / "server.pin").string() + " is damaged"};
  }
  if (o.pin && pinned_server && *pinned_server != *o.pin) {
    return {kExitError, "--pin differs from the server key pinned in " +
                            (dir / "server.pin").string() + " (" + *pinned_server + ")"};
  }
  if (o.pin) {
    endpoint->pins = {*o.pin};
  } else if (pinned_server) {
    endpoint->pins = {*pinned_server};
  }
  auto connection = client::Connection::open(
      connector, *endpoint, [](svc::Push&&) {}, [](const std::string&) {});
  if (!connection) return {kExitError, "cannot connect: " + connection.error().message};
  std::unique_ptr<client::Connection> held = std::move(*connection);
  // The server closes a connection that does not log in after a while (login_deadline_seconds):
  // a long catch-up goes on over a new one, with the same pinned key.
  const auto call = [&](svc::Request request) -> Result<svc::Response> {
    if (!held->is_open()) {
      auto again = client::Connection::open(
          connector, *endpoint, [](svc::Push&&) {}, [](const std::string&) {});
      if (!again) return tl::unexpected(again.error());
      held = std::move(*again);
    }
    return held->call(std::move(request), kTimeout);
  };
  // The server key this run uses from now on; pinned below once an answer verified.
  const std::string server_pin = pinned_server ? *pinned_server
                                 : o.pin       ? *o.pin
                                               : held->server_pin();
  endpoint->pins = {server_pin};

  // The log's keys: given, pinned, or asked for (trust on first use, over the server key).
  std::optional<kt::LogPublicKeys> pinned_keys;
  if (const auto text = read_text(dir / "log.keys")) {
    pinned_keys = audit::parse_log_keys(*text);
    if (!pinned_keys) return {kExitError, (dir / "log.keys").string() + " is damaged"};
  }
  std::optional<kt::LogPublicKeys> keys;
  bool keys_asked = false;
  if (o.log_keys) {
    keys = o.log_keys;
    if (pinned_keys && audit::log_keys_text(*pinned_keys) != audit::log_keys_text(*keys)) {
      return {kExitError, "--log-keys differ from the log keys pinned in " +
                              (dir / "log.keys").string() + " (" +
                              audit::log_keys_text(*pinned_keys) + ")"};
    }
  } else if (pinned_keys) {
    keys = pinned_keys;
  } else {
    svc::Request request;
    request.mutable_kt_keys();
    auto response = call(std::move(request));
    if (!response)
      return {kExitError, "cannot ask for the log's keys: " + response.error().message};
    if (response->status().code() != svc::OK) {
      return {kExitError,
              "the server keeps no transparency log (" + response->status().message() + ")"};
    }
    const auto& k = response->kt_keys();
    if (k.signing_key().size() != 32 || k.vrf_key().size() != 32)
      return {kExitError, "the server's log keys are malformed"};
    kt::LogPublicKeys got;
    std::copy(k.signing_key().begin(), k.signing_key().end(), got.signing_key.begin());
    std::copy(k.vrf_key().begin(), k.vrf_key().end(), got.vrf_key.begin());
    keys = got;
    keys_asked = true;
  }

  auto state = load_state(dir, *keys);
  if (!state) return {kExitError, state.error()};
  kt::Auditor& auditor = (*state)->auditor;
  const std::uint64_t before = auditor.size();

  // Fetch from where the replay stopped until it reaches the newest head the server showed.
  std::vector<Bytes> accepted;
  std::optional<kt::SignedTreeHead> head;
  for (;;) {
    svc::Request request;
    request.mutable_kt_audit()->set_start(auditor.size());
    request.mutable_kt_audit()->set_count(o.batch);
    auto response = call(std::move(request));
    if (!response) return {kExitError, "the server did not answer: " + response.error().message};
    if (response->status().code() != svc::OK) {
      return {kExitError, "the server refused the audit request: " + response->status().message()};
    }
    auto got = audit::apply_answer(auditor, *keys, response->kt_audit(), accepted);
    if (!got) return {got.error().misbehaved ? kExitMisbehaved : kExitError, got.error().message};
    head = *got;
    if (auditor.size() >= head->head.size) break;
  }
  if (auto ok = audit::check_head(auditor, *head); !ok)
    return {ok.error().misbehaved ? kExitMisbehaved : kExitError, ok.error().message};

  // The log's answers verified under the server key and the log keys this run used: they are
  // pinned now (the records replay only under those keys), before the records that depend on them.
  if (!pinned_server) {
    if (!write_text(dir / "server.pin", server_pin))
      return {kExitError, "cannot write " + (dir / "server.pin").string()};
    if (!o.pin) say(stdout, "pinned the server key " + server_pin + " (trust on first use)");
  }
  if (!pinned_keys) {
    if (!write_text(dir / "log.keys", audit::log_keys_text(*keys)))
      return {kExitError, "cannot write " + (dir / "log.keys").string()};
    if (keys_asked) {
      say(stdout, "pinned the log keys " + audit::log_keys_text(*keys) + " (trust on first use)");
    }
  }

  // Saved before anything is co-signed.
  if (!accepted.empty() && !append_records(dir, (*state)->records_bytes, accepted))
    return {kExitError, "cannot write " + (dir / "records").string()};

  const std::uint64_t now = wall_ms();
  svc::Request request;
  auto* cosign = request.mutable_kt_cosign();
  const auto sig = kt::cosign_tree_head_at(head->head, now, key);
  const Bytes encoded = kt::encode_signed_tree_head(*head);
  cosign->set_auditor_key(std::string(key.public_key().begin(), key.public_key().end()));
  cosign->set_tree_head(std::string(encoded.begin(), encoded.end()));
  cosign->set_signature(std::string(sig.begin(), sig.end()));
  cosign->set_time_ms(now);
  auto response = call(std::move(request));
  if (!response) return {kExitError, "the server did not answer: " + response.error().message};
  if (response->status().code() == svc::FORBIDDEN) {
    return {kExitError,
            "the server does not keep this auditor's co-signatures: its operator adds " +
                crypto::to_hex(key.public_key()) + " to kt_auditors"};
  }
  if (response->status().code() != svc::OK) {
    return {kExitError, "the server refused the co-signature: " + response->status().message()};
  }
  say(stdout, "co-signed tree head: size " + std::to_string(head->head.size) + ", root " +
                  crypto::to_hex(head->head.root) + " (" + std::to_string(auditor.size() - before) +
                  " new entries checked)");
  return {};
}

// Holds the state directory for this process (one auditor per directory).
bool lock_state(const fs::path& dir) {
  const int fd = ::open((dir / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  return fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0;  // held until exit
}

// A command line CLI11 refused: one line on stderr and status 1, as sotto reports its own. --help
// and --version print as CLI11 does and exit with 0.
int usage_error(CLI::App& app, const CLI::ParseError& e) {
  if (e.get_exit_code() == 0) return app.exit(e);
  return fail(std::string(e.what()) + " (`sotto-audit --help` shows how to use it)");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "sotto-audit: follows a Sotto server's key transparency log, checks that it only grows, "
      "and co-signs its tree heads (docs/transparency.md, \"Auditing\")"};
  app.set_version_flag("--version", SOTTO_VERSION);
  app.require_subcommand(1);
  app.footer(
      "Exit status: 0 done (with --once: the head co-signed); 1 anything else (a command line it "
      "refuses, the network, the state directory, an unsigned answer, a refused co-signature); 3 "
      "THE LOG MISBEHAVED (it shrank, or rewrote or dropped an entry): nothing was co-signed and "
      "the state is as it was.");
  AuditOptions o;
  std::string state, server, pin, log_keys;
  app.add_option("--state", state, "The auditor's state directory (its key and what it checked)")
      ->required();
  auto* key_cmd = app.add_subcommand("key", "Print the auditor's public key (made on first use)");
  auto* run_cmd = app.add_subcommand(
      "run", "Check the server's log from where the last run stopped and co-sign its head");
  run_cmd->add_option("--server", server, "HOST:PORT")->required();
  run_cmd->add_option("--pin", pin,
                      "The server's key fingerprint, 64 hex digits (as sotto-server prints it); "
                      "without it the one pinned before, or the first seen");
  run_cmd->add_option("--log-keys", log_keys,
                      "The log's keys SIGNING:VRF (the line sotto-server kt-keys prints); without "
                      "them the ones pinned before, or the first the server names");
  auto* interval =
      run_cmd->add_option("--interval", o.interval, "Seconds between rounds when following the log")
          ->check(CLI::Range(1u, 86400u))
          ->capture_default_str();
  run_cmd->add_flag("--once", o.once, "One round, then exit (default: follow the log)")
      ->excludes(interval);
  run_cmd->add_option("--batch", o.batch, "Records asked for per request")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e);
  }
  o.state = state;

  // Every argument is checked before anything is connected to or written.
  if (run_cmd->parsed()) {
    auto endpoint = parse_server(server);
    if (!endpoint) return fail("--server must be HOST:PORT");
    o.server = *endpoint;
    if (run_cmd->count("--pin") > 0) {
      o.pin = audit::normalize_pin(pin);
      if (!o.pin) {
        return fail(
            "--pin must be the server's key fingerprint: 64 hex digits (colons and spaces "
            "between them allowed), as sotto-server prints it");
      }
    }
    if (run_cmd->count("--log-keys") > 0) {
      o.log_keys = audit::parse_log_keys(log_keys);
      if (!o.log_keys) {
        return fail(
            "--log-keys must be SIGNING:VRF, 64 hex digits each (the line `sotto-server kt-keys` "
            "prints)");
      }
    }
  }
  std::error_code ec;
  if (fs::exists(o.state, ec) && !fs::is_directory(o.state, ec))
    return fail("--state " + o.state.string() + " is a file, not a directory");
  fs::create_directories(o.state, ec);
  if (ec) return fail("cannot create " + o.state.string() + ": " + ec.message());
  fs::permissions(o.state, fs::perms::owner_all, fs::perm_options::replace, ec);
  // `key` beside a running auditor only reads the key; anything else holds the directory.
  const bool reads_only = key_cmd->parsed() && fs::exists(o.state / "auditor.key", ec);
  g_timestamps = run_cmd->parsed() && !o.once;
  if (!reads_only && !lock_state(o.state))
    return fail("another sotto-audit uses " + o.state.string());
  auto key = load_or_create_key(o.state);
  if (!key) return fail(key.error());
  if (key_cmd->parsed()) {
    std::printf("%s\n", crypto::to_hex(key->public_key()).c_str());
    return 0;
  }
  auto connector = client::make_tls_connector();
  for (;;) {
    const Outcome out = audit_round(o, *key, *connector);
    if (out.code == kExitMisbehaved) {
      say(stderr, "sotto-audit: THE LOG MISBEHAVED, nothing co-signed: " + out.message);
      return kExitMisbehaved;
    }
    if (out.code != 0) {
      say(stderr, "sotto-audit: " + out.message);
      if (o.once) return out.code;
    }
    if (o.once) return 0;
    std::this_thread::sleep_for(std::chrono::seconds(o.interval));
  }
}
