// sotto-audit: a third-party auditor of a Sotto server's key transparency log (docs/
// transparency.md, "Auditing"). It fetches the log's audit records from where it stopped, replays
// them with its own trees (transparency::Auditor), checks the server's signed tree head against
// its replay and co-signs it with its own Ed25519 key, which the server hands to clients that
// require it. A log that shrank, rewrote or dropped an entry, or signs a head the replay does not
// give, gets no co-signature: sotto-audit says which entry or size and exits 3, its state
// unchanged.
//
// State directory: auditor.key (the key's 32-byte seed, mode 0600), log.keys (the log's pinned
// public keys), server.pin (the server's pinned TLS key), records (every record accepted, replayed
// at start: audit_core.h), lock.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstdio>
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

constexpr int kExitError = 1;
constexpr int kExitMisbehaved = 3;
constexpr std::chrono::seconds kTimeout{30};

int fail(const std::string& message) {
  std::fprintf(stderr, "sotto-audit: %s\n", message.c_str());
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

std::optional<kt::LogPublicKeys> parse_log_keys(const std::string& text) {
  const auto colon = text.find(':');
  if (colon == std::string::npos) return std::nullopt;
  auto signing = crypto::from_hex(text.substr(0, colon));
  auto vrf = crypto::from_hex(text.substr(colon + 1));
  if (!signing || !vrf || signing->size() != 32 || vrf->size() != 32) return std::nullopt;
  kt::LogPublicKeys keys;
  std::copy(signing->begin(), signing->end(), keys.signing_key.begin());
  std::copy(vrf->begin(), vrf->end(), keys.vrf_key.begin());
  return keys;
}

std::string log_keys_text(const kt::LogPublicKeys& k) {
  return crypto::to_hex(k.signing_key) + ":" + crypto::to_hex(k.vrf_key);
}

struct AuditOptions {
  fs::path state;
  std::string server;    // HOST:PORT
  std::string pin;       // the server's key fingerprint; empty: the pinned one, or TOFU
  std::string log_keys;  // SIGNING:VRF; empty: the pinned ones, or TOFU
  bool once = false;
  unsigned interval = 300;  // seconds between rounds when following
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

// One round: connect, pin, fetch and replay the new records, check the head, save, co-sign.
Outcome audit_round(const AuditOptions& o, const crypto::Ed25519KeyPair& key,
                    client::Connector& connector) {
  const fs::path& dir = o.state;
  auto endpoint = parse_server(o.server);
  if (!endpoint) return {kExitError, "--server must be HOST:PORT"};
  const auto pinned_server = read_text(dir / "server.pin");
  if (!o.pin.empty() && pinned_server && *pinned_server != o.pin) {
    return {kExitError, "--pin differs from the server key pinned in " +
                            (dir / "server.pin").string() + " (" + *pinned_server + ")"};
  }
  if (!o.pin.empty()) {
    endpoint->pins = {o.pin};
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
  if (!pinned_server) {
    const std::string pin = o.pin.empty() ? held->server_pin() : o.pin;
    endpoint->pins = {pin};
    if (!write_file_atomically(
            dir / "server.pin",
            ByteView(reinterpret_cast<const std::uint8_t*>(pin.data()), pin.size()), 0600)) {
      return {kExitError, "cannot write " + (dir / "server.pin").string()};
    }
    if (o.pin.empty()) std::printf("pinned the server key %s (trust on first use)\n", pin.c_str());
  }

  // The log's keys: given, pinned, or asked for (trust on first use, over the pinned server key).
  const auto pinned_keys_text = read_text(dir / "log.keys");
  std::optional<kt::LogPublicKeys> keys;
  if (!o.log_keys.empty()) {
    keys = parse_log_keys(o.log_keys);
    if (!keys) return {kExitError, "--log-keys must be SIGNING:VRF, 64 hex digits each"};
    if (pinned_keys_text && *pinned_keys_text != log_keys_text(*keys)) {
      return {kExitError,
              "--log-keys differ from the log keys pinned in " + (dir / "log.keys").string()};
    }
  } else if (pinned_keys_text) {
    keys = parse_log_keys(*pinned_keys_text);
    if (!keys) return {kExitError, (dir / "log.keys").string() + " is damaged"};
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
    std::printf("pinned the log keys %s (trust on first use)\n", log_keys_text(got).c_str());
  }
  if (!pinned_keys_text) {
    const std::string text = log_keys_text(*keys);
    if (!write_file_atomically(
            dir / "log.keys",
            ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), 0600)) {
      return {kExitError, "cannot write " + (dir / "log.keys").string()};
    }
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
  std::printf("co-signed tree head: size %llu, root %s (%llu new entries checked)\n",
              static_cast<unsigned long long>(head->head.size),
              crypto::to_hex(head->head.root).c_str(),
              static_cast<unsigned long long>(auditor.size() - before));
  std::fflush(stdout);
  return {};
}

// Holds the state directory for this process (one auditor per directory).
bool lock_state(const fs::path& dir) {
  const int fd = ::open((dir / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  return fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0;  // held until exit
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "sotto-audit: follows a Sotto server's key transparency log, checks that it only grows, "
      "and co-signs its tree heads (docs/transparency.md, \"Auditing\")"};
  app.set_version_flag("--version", SOTTO_VERSION);
  app.require_subcommand(1);
  AuditOptions o;
  std::string state;
  app.add_option("--state", state, "The auditor's state directory (its key and what it checked)")
      ->required();
  auto* key_cmd = app.add_subcommand("key", "Print the auditor's public key (made on first use)");
  auto* run_cmd = app.add_subcommand(
      "run", "Check the server's log from where the last run stopped and co-sign its head");
  run_cmd->add_option("--server", o.server, "HOST:PORT")->required();
  run_cmd->add_option("--pin", o.pin,
                      "The server's key fingerprint (as sotto-server prints it); without it the "
                      "one pinned before, or the first seen");
  run_cmd->add_option("--log-keys", o.log_keys,
                      "The log's keys SIGNING:VRF (sotto-server kt-keys); without them the ones "
                      "pinned before, or the first the server names");
  run_cmd->add_flag("--once", o.once, "One round, then exit (default: follow the log)");
  run_cmd->add_option("--interval", o.interval, "Seconds between rounds when following")
      ->check(CLI::Range(1u, 86400u));
  run_cmd->add_option("--batch", o.batch, "Records asked for per request")
      ->check(CLI::Range(1u, 1024u));
  CLI11_PARSE(app, argc, argv);
  o.state = state;

  std::error_code ec;
  fs::create_directories(o.state, ec);
  if (ec) return fail("cannot create " + o.state.string());
  fs::permissions(o.state, fs::perms::owner_all, fs::perm_options::replace, ec);
  // `key` beside a running auditor only reads the key; anything else holds the directory.
  const bool reads_only = key_cmd->parsed() && fs::exists(o.state / "auditor.key", ec);
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
      std::fprintf(stderr, "sotto-audit: THE LOG MISBEHAVED, nothing co-signed: %s\n",
                   out.message.c_str());
      return kExitMisbehaved;
    }
    if (out.code != 0) {
      std::fprintf(stderr, "sotto-audit: %s\n", out.message.c_str());
      if (o.once) return out.code;
    }
    if (o.once) return 0;
    std::this_thread::sleep_for(std::chrono::seconds(o.interval));
  }
}
