// sotto-server: the Sotto relay. One binary; with only --data it runs on the embedded SQLite
// store with a self-signed certificate generated on first start. `sotto-server key` rotates that
// certificate's key; SIGHUP makes the running server load its TLS identity (and the next key it
// announces) again.
#include <fcntl.h>
#include <openssl/crypto.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "crypto/rng.h"
#include "net/http_server.h"
#include "net/server_key.h"
#include "net/tls.h"
#include "net/ws_server.h"
#include "server/config.h"
#include "server/kt.h"
#include "server/metrics.h"
#include "server/server.h"
#include "store/server/sqlite_store.h"
#ifdef SOTTO_HAVE_POSTGRES
#include "store/server/postgres/pg_store.h"
#endif

#ifndef SOTTO_VERSION
#define SOTTO_VERSION "unknown"
#endif

namespace {

using namespace sotto;

std::uint64_t wall_ms() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

int fail(const std::string& message) {
  std::fprintf(stderr, "sotto-server: %s\n", message.c_str());
  return 1;
}

bool operator_certificate(const server::ServerConfig& config) {
  return !config.tls_certificate.empty() && !config.tls_private_key.empty();
}

// What the server presents and what it announces: the current identity, and the next key with
// the current key's signature over it while the operator rotates.
struct TlsSetup {
  net::TlsIdentity current;
  std::optional<server::NextServerKey> next;
  std::string next_fingerprint;  // empty without a next key
};

// Loads the TLS setup from the config (--tls-cert, --tls-key, tls_next_key) or the data directory
// (DIR/tls: cert.pem, key.pem, next-cert.pem). At start the data directory's identity is made when
// there is none (`create`); a reload only loads. The error text is for the operator.
tl::expected<TlsSetup, std::string> load_tls(const server::ServerConfig& config, bool create) {
  const bool provided = operator_certificate(config);
  const auto tls_dir = config.data_dir / "tls";
  if (!provided && !create && !std::filesystem::is_directory(tls_dir)) {
    return tl::unexpected(
        "no TLS key under " + tls_dir.string() +
        (std::filesystem::exists(config.data_dir)
             ? std::string(" (the server makes it at its first start)")
             : ": the data directory " + config.data_dir.string() + " does not exist"));
  }
  auto current = provided ? net::load_identity(config.tls_certificate, config.tls_private_key)
                 : create ? net::load_or_create_identity(config.data_dir)
                          : net::load_identity(tls_dir / "cert.pem", tls_dir / "key.pem");
  if (!current) {
    return tl::unexpected((provided ? std::string("cannot load the TLS certificate and key given")
                                    : "cannot load (or create) the TLS certificate and key under " +
                                          tls_dir.string()) +
                          (current.error() == net::TlsError::bad_certificate
                               ? ": unreadable, or the key is not the certificate's"
                               : ""));
  }
  TlsSetup out{std::move(*current), std::nullopt, {}};
  std::optional<Bytes> next;
  if (!config.tls_next_key.empty()) {
    auto key = net::load_public_key(config.tls_next_key);
    if (!key) {
      return tl::unexpected("tls_next_key: no certificate or key in " +
                            config.tls_next_key.string());
    }
    next = std::move(*key);
  } else if (!provided) {
    auto identity = net::load_next_identity(config.data_dir);
    if (!identity) {
      return tl::unexpected("cannot load the next TLS key (" +
                            (tls_dir / "next-cert.pem").string() + " and next-key.pem)");
    }
    if (*identity) next = (*identity)->public_key;
  }
  // After an activation a next key that is the current one has nothing left to announce.
  if (next && *next != out.current.public_key) {
    auto signature = net::sign_next_key(out.current, *next);
    if (!signature) {
      return tl::unexpected("cannot announce the next TLS key: " +
                            std::string(net::to_string(signature.error())));
    }
    out.next_fingerprint = net::key_fingerprint(*next);
    out.next = server::NextServerKey{std::move(*next), std::move(*signature)};
  }
  return out;
}

// Descriptors the server needs besides its connections: the database (and its WAL and shared
// memory), the lock file, both listeners, the log, epoll and its wake-ups, the operator HTTP
// server's connections, and some slack.
constexpr rlim_t kReservedDescriptors = 128;

// Raises the soft RLIMIT_NOFILE to the hard limit, and returns how many connections fit under it:
// `wanted`, or fewer (with a warning naming both numbers) when the limit is too low. Accepting
// past the limit would make accept() fail with EMFILE while clients wait in the backlog; with
// max_connections below it, a connection over the limit is accepted and closed at once.
// A default max_connections that does not fit is said at info level (most hosts have a hard limit
// below 60,000, and the server is right to fit it); one the operator chose, as a warning.
std::size_t fit_descriptor_limit(std::size_t wanted, bool chosen) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn("event=limits result=unknown reason=\"getrlimit(RLIMIT_NOFILE) failed\"");
    return wanted;
  }
  // An unlimited hard limit cannot be the soft one (the kernel caps it at fs.nr_open): then as
  // much as is wanted.
  const rlim_t target = limit.rlim_max == RLIM_INFINITY
                            ? static_cast<rlim_t>(wanted) + kReservedDescriptors
                            : limit.rlim_max;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < target) {
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = target;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      limit.rlim_cur = before;
      spdlog::warn("event=limits reason=\"cannot raise RLIMIT_NOFILE from {} to {}\"", before,
                   target);
    }
  }
  const rlim_t soft = limit.rlim_cur;
  if (soft == RLIM_INFINITY || wanted + kReservedDescriptors <= soft) return wanted;
  const std::size_t fit =
      soft > kReservedDescriptors + 1 ? static_cast<std::size_t>(soft - kReservedDescriptors) : 1;
  spdlog::log(chosen ? spdlog::level::warn : spdlog::level::info,
              "event=limits max_connections={} clamped_to={} rlimit_nofile={} reserved={} "
              "reason=\"the file descriptor limit is too low for max_connections; raise the hard "
              "limit (e.g. LimitNOFILE= in the service unit) or lower max_connections\"",
              wanted, fit, soft, kReservedDescriptors);
  return fit;
}

// Takes an exclusive lock on DIR/sotto-server.lock for the life of the process (the descriptor is
// never closed), so that a second server started on the same data directory does not run beside
// the first on the same database. The file holds the process id, for the operator.
tl::expected<void, std::string> lock_data_dir(const std::filesystem::path& dir) {
  const auto path = dir / "sotto-server.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return tl::unexpected("cannot open the lock file " + path.string());
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const bool held = errno == EWOULDBLOCK;
    char pid[32] = {};
    const ssize_t n = held ? ::pread(fd, pid, sizeof pid - 1, 0) : 0;
    ::close(fd);
    if (!held) return tl::unexpected("cannot lock " + path.string());
    std::string holder = n > 0 ? std::string(pid, static_cast<std::size_t>(n)) : std::string();
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return tl::unexpected("another sotto-server" +
                          (holder.empty() ? std::string() : " (process " + holder + ")") +
                          " is running on the data directory " + dir.string() +
                          ": stop it first, or give this one another --data directory");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  // The lock is what matters; the process id is only a courtesy to the operator.
  const bool written = ::ftruncate(fd, 0) == 0 &&
                       ::pwrite(fd, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size());
  static_cast<void>(written);
  return {};
}

// sotto-server key rotate | activate | show: one operator command on DIR/tls. `where` is how the
// operator named the data directory (--data DIR or --config FILE), for the next command to run.
int run_key_command(const server::ServerConfig& config, const std::string& command,
                    const std::string& where) {
  if (command == "show") {
    auto setup = load_tls(config, false);
    if (!setup) return fail(setup.error());
    std::printf("fingerprint: %s\nnext fingerprint: %s\n", setup->current.key_fingerprint.c_str(),
                setup->next ? setup->next_fingerprint.c_str() : "none");
    return 0;
  }
  const auto tls_dir = config.data_dir / "tls";
  if (operator_certificate(config)) {
    return fail(
        "the server uses --tls-cert and --tls-key: name its next key with tls_next_key "
        "(--tls-next-key); `key " +
        command + "` manages the self-signed key under " + tls_dir.string() + " only");
  }
  if (!std::filesystem::is_directory(tls_dir)) {
    auto missing = load_tls(config, false);  // says what is missing
    return fail(missing ? "no TLS key under " + tls_dir.string() : missing.error());
  }
  if (command == "rotate") {
    auto next = net::create_next_identity(config.data_dir);
    if (!next) {
      return fail(next.error() == net::TlsError::already_exists
                      ? "a next key is waiting already (`sotto-server " + where +
                            " key show`); activate it first"
                      : "cannot create the next TLS key under " + tls_dir.string());
    }
    std::printf("next fingerprint: %s\n", next->key_fingerprint.c_str());
    std::fprintf(stderr,
                 "Send SIGHUP to the running server: it then tells every device of the next key "
                 "when the device logs in (sotto_next_key_devices_told on /metrics counts the "
                 "devices told). Once the devices in use have been told, run `sotto-server %s key "
                 "activate` and send SIGHUP again.\n",
                 where.c_str());
    return 0;
  }
  auto active = net::activate_next_identity(config.data_dir);
  if (!active) {
    return fail(active.error() == net::TlsError::not_found
                    ? "no next key to activate: `sotto-server " + where + " key rotate` first"
                    : "cannot activate the next TLS key: " + tls_dir.string() +
                          " needs the operator's eyes");
  }
  const std::string& fp = active->key_fingerprint;
  std::printf("fingerprint: %s\n", fp.c_str());
  std::fprintf(stderr,
               "The old pair is kept as %s/previous-*.pem. After a SIGHUP to the running server, "
               "new connections present the new key.\n"
               "Warning: only devices that connected while the next key was announced know it. A "
               "device that has not connected since `key rotate` (and its SIGHUP) will refuse the "
               "server until its user checks the new fingerprint with you and runs `sotto server "
               "trust %s`. To tell whether the devices in use have been told, compare "
               "sotto_next_key_devices_told on /metrics with the number of devices in use, or "
               "keep the key announced for a week or so (devices used daily connect within it) "
               "before the SIGHUP.\n",
               tls_dir.c_str(), fp.c_str());
  return 0;
}

// The store the config names: the SQLite file under the data directory, or PostgreSQL (whose
// schema must be current: `sotto-server migrate` applies migrations, a start never does). The
// error text is for the operator.
tl::expected<std::unique_ptr<store::ServerStore>, std::string> open_store(
    const server::ServerConfig& config) {
  store::SqliteOptions options;
  options.max_queue_per_device = static_cast<std::uint32_t>(config.max_queue_per_device);
  options.max_queue_bytes_per_device = config.max_queue_bytes_per_device;
  options.max_queue_per_sender = static_cast<std::uint32_t>(config.max_queue_per_sender);
  options.max_queue_bytes_per_sender = config.max_queue_bytes_per_sender;
  options.message_ttl_seconds = config.message_ttl_days * 86400;
  // Lines logged while opening also name the reason in the error.
  auto why = std::make_shared<std::string>();
  options.log = [why](std::string_view line) {
    spdlog::error("event=store {}", line);
    if (why->empty()) *why = std::string(line);
  };
  if (config.store.empty() || config.store == "sqlite") {
    auto opened = store::SqliteServerStore::open(config.data_dir / "sotto.db", options);
    if (!opened) {
      return tl::unexpected("cannot open the database under " + config.data_dir.string() +
                            (why->empty() ? std::string() : ": " + *why));
    }
    return std::unique_ptr<store::ServerStore>(std::move(*opened));
  }
#ifdef SOTTO_HAVE_POSTGRES
  store::PostgresOptions pg;
  static_cast<store::SqliteOptions&>(pg) = options;
  auto opened = store::PostgresServerStore::open(config.store, pg);
  if (!opened) {
    return tl::unexpected("cannot use the PostgreSQL store" +
                          (why->empty() ? std::string() : ": " + *why));
  }
  return std::unique_ptr<store::ServerStore>(std::move(*opened));
#else
  return tl::unexpected(std::string(
      "this sotto-server was built without PostgreSQL support (libpqxx): use store = \"sqlite\""));
#endif
}

// sotto-server migrate: brings the configured store's schema to this server's version.
int run_migrate(const server::ServerConfig& config) {
  if (config.store.empty() || config.store == "sqlite") {
    auto opened = open_store(config);  // SQLite migrates at every open
    if (!opened) return fail(opened.error());
    std::printf("sqlite store %s: schema current\n", (config.data_dir / "sotto.db").c_str());
    return 0;
  }
#ifdef SOTTO_HAVE_POSTGRES
  auto before = store::postgres_schema_status(config.store);
  if (!before) return fail(before.error());
  auto after = store::postgres_migrate(config.store);
  if (!after) return fail("migrate: " + after.error());
  if (before->database == after->database) {
    std::printf("postgresql store: schema version %d, current\n", after->database);
  } else {
    std::printf("postgresql store: schema migrated from version %d to %d\n", before->database,
                after->database);
  }
  return 0;
#else
  return fail("this sotto-server was built without PostgreSQL support (libpqxx)");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "sotto-server: the Sotto relay. Stores and forwards ciphertext it cannot read.\n"
      "With only --data it keeps an SQLite database and a self-signed TLS certificate under DIR\n"
      "and prints its key's fingerprint (`fingerprint:`, the SHA-256 of its public key, not of\n"
      "the certificate) for clients to pin."};
  std::string data_dir;
  std::string listen;
  std::string http;
  std::string config_file;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_next_key;
  std::string log_level;
  bool invite_only = false;
  // Options may follow a subcommand too: `sotto-server key rotate --data DIR`.
  app.fallthrough();
  app.add_option("--data", data_dir,
                 "Data directory (database, TLS certificate); created if missing, and used by "
                 "one running server at a time. Required unless the config file gives `data`");
  app.add_option(
      "--listen", listen,
      "TLS WebSocket address, HOST:PORT (default 127.0.0.1:7443; port 0: any free port, printed)");
  app.add_option("--http", http,
                 "Plain HTTP address for /healthz and /metrics (default 127.0.0.1:7480)");
  app.add_option("--config", config_file, "TOML config file; flags given here override it")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", tls_cert,
                 "PEM certificate chain (with --tls-key); default: self-signed under DIR/tls");
  app.add_option("--tls-key", tls_key, "PEM private key for --tls-cert");
  app.add_option("--tls-next-key", tls_next_key,
                 "PEM certificate or key of the next TLS key, announced to every device after "
                 "its login (signed by the current key) until it is the current one");
  std::string store_setting;
  app.add_option("--store", store_setting,
                 "Where the tables live: \"sqlite\" (default: DIR/sotto.db) or a PostgreSQL URI "
                 "(postgresql://user@host/db; run `sotto-server migrate` first)");
  app.set_version_flag("--version", std::string("sotto-server ") + SOTTO_VERSION);
  app.add_flag("--invite-only", invite_only, "Require an invite code to register");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off (default info)");
  app.footer(
      "Config file (--config, TOML): every key has a default but data (or --data);\n"
      "docs/configuration.md lists them, docs/abuse.md explains the limits.\n"
      "SIGHUP: load the TLS certificate and key (and the next key) again, without dropping\n"
      "connections; the rest of the configuration is read at start only.");
  auto* invite = app.add_subcommand("invite", "Manage invite codes (for invite-only registration)");
  auto* invite_create = invite->add_subcommand("create", "Create invite codes and print them");
  std::size_t invite_count = 1;
  std::uint64_t invite_days = 7;
  invite_create->add_option("--count", invite_count, "How many codes")->check(CLI::Range(1, 1000));
  invite_create->add_option("--days", invite_days, "Days until the codes expire")
      ->check(CLI::Range(1, 365));
  invite->require_subcommand(1);
  auto* key = app.add_subcommand(
      "key",
      "Rotate the self-signed TLS key under DIR/tls (devices that connect while the next key is "
      "announced follow without re-pinning)");
  key->add_subcommand("rotate",
                      "Make the next key (DIR/tls/next-*.pem) and print its fingerprint; the "
                      "server announces it after SIGHUP");
  key->add_subcommand("activate",
                      "Make the next key the current one (the old pair stays as previous-*.pem) "
                      "and print its fingerprint; new connections present it after SIGHUP");
  key->add_subcommand("show", "Print the current and the next key's fingerprints");
  key->require_subcommand(1);
  auto* kt_keys = app.add_subcommand(
      "kt-keys",
      "Print the key transparency log's public keys (signing:vrf, hex) for clients to pin "
      "; the server makes them under DIR/kt at its first start");
  // Tests only (tests/e2e/test_transparency.py): what a coerced operator does in the open, a
  // device added to USER's account without the account, logged honestly. Hidden from --help; the
  // server must be stopped (it caches accounts).
  auto* kt_ghost = app.add_subcommand("kt-test-ghost-device", "");
  kt_ghost->group("");
  std::string ghost_user;
  kt_ghost->add_option("user", ghost_user)->required();
  auto* migrate = app.add_subcommand(
      "migrate",
      "Bring the store's schema to this server's version and exit (a server on PostgreSQL "
      "refuses to start until then; SQLite migrates at every start)");
  auto* check = app.add_subcommand(
      "check-config",
      "Check the configuration (--config FILE and the flags given) as a start does: every key "
      "and value, the checks between them, and the TLS certificate and key files it names. "
      "Prints a summary and exits 0, or the reason and 1. Neither the data directory nor the "
      "store is touched (a PostgreSQL store is not contacted)");
  CLI11_PARSE(app, argc, argv);

  // Signals are for this thread alone: blocked before any other thread starts (the store's
  // writers, the I/O threads), which inherit the mask, and taken by sigtimedwait below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  server::ServerConfig config;
  if (!config_file.empty()) {
    auto c = server::apply_toml_file(config, config_file);
    if (!c) return fail(c.error());
    config = *c;
  }
  if (!data_dir.empty()) config.data_dir = data_dir;
  if (config.data_dir.empty()) {
    return fail("no data directory: give --data DIR, or `data` in the --config file");
  }
  if (!listen.empty()) {
    auto e = server::parse_endpoint(listen);
    if (!e) return fail("--listen: " + e.error());
    config.listen = *e;
  }
  if (!http.empty()) {
    auto e = server::parse_endpoint(http);
    if (!e) return fail("--http: " + e.error());
    config.http = *e;
  }
  if (!tls_cert.empty()) config.tls_certificate = tls_cert;
  if (!tls_key.empty()) config.tls_private_key = tls_key;
  if (!tls_next_key.empty()) config.tls_next_key = tls_next_key;
  if (invite_only) config.invite_only = true;
  if (!log_level.empty()) config.log_level = log_level;
  if (!store_setting.empty()) config.store = store_setting;
  if (auto checked = server::check_config(config); !checked) return fail(checked.error());
  if (check->parsed()) {
    // The files an operator names must load; the data directory's own identity is made at the
    // first start, so it is not required here.
    if (operator_certificate(config)) {
      if (auto tls = load_tls(config, false); !tls) return fail(tls.error());
    }
    const bool sqlite = config.store.empty() || config.store == "sqlite";
    std::printf("config ok: %s (data %s, store %s, listen %s:%u, http %s:%u)\n",
                config_file.empty() ? "no config file" : config_file.c_str(),
                config.data_dir.c_str(), sqlite ? "sqlite" : "postgresql",
                config.listen.host.c_str(), config.listen.port, config.http.host.c_str(),
                config.http.port);
    if (!config.kt_auditors.empty()) {
      std::printf("kt auditors: %zu (co-signatures of other keys are refused)\n",
                  config.kt_auditors.size());
    }
    return 0;
  }

  auto logger = spdlog::stderr_color_mt("sotto");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  umask(077);  // the database and keys are for this user only
  if (kt_keys->parsed()) {
    auto keys = server::read_kt_public_keys(config.data_dir);
    if (!keys) {
      return fail("no transparency log keys under " + (config.data_dir / "kt").string() +
                  " (the server makes them at its first start)");
    }
    std::printf("kt keys: %s\n", server::kt_keys_text(*keys).c_str());
    return 0;
  }
  if (key->parsed()) {
    const std::string where = data_dir.empty() && !config_file.empty()
                                  ? "--config " + config_file
                                  : "--data " + config.data_dir.string();
    return run_key_command(config, key->get_subcommands().front()->get_name(), where);
  }

  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) return fail("cannot create data directory: " + ec.message());
  std::filesystem::permissions(config.data_dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  // One server per data directory (operator commands such as `invite create` and `key` still run
  // beside it): held until the process exits.
  if (!invite->parsed() && !migrate->parsed()) {
    if (auto locked = lock_data_dir(config.data_dir); !locked) return fail(locked.error());
  }

  if (migrate->parsed()) return run_migrate(config);
  auto store = open_store(config);
  if (!store) return fail(store.error());
  if (kt_ghost->parsed()) {
    if ((*store)->kt() == nullptr) return fail("this store keeps no transparency log");
    auto opened = server::KeyTransparency::open(config.data_dir, *(*store)->kt(),
                                                crypto::system_rng(), wall_ms);
    if (!opened) return fail(opened.error());
    auto account = (*store)->accounts().find_account(ghost_user);
    if (!account) return fail("no such user");
    store::DeviceRecord ghost;
    ghost.registration_id = 4343;
    ghost.auth_key = Bytes(32, 0x67);
    const store::SignedPreKeyRecord spk{1, Bytes(33, 0x05), Bytes(64, 0)};
    auto id = (*store)->accounts().add_device(account->id, ghost, spk, {});
    if (!id) return fail("cannot add the device");
    std::printf("ghost device %u\n", *id);
    return 0;
  }

  server::Metrics metrics;
  server::Server server(config, **store, metrics, crypto::system_rng(), wall_ms);
  // The key transparency log lives in the store's database, beside the accounts it logs
  // (docs/transparency.md).
  std::unique_ptr<server::KeyTransparency> kt;
  if (!invite->parsed() && (*store)->kt() != nullptr) {
    auto opened = server::KeyTransparency::open(config.data_dir, *(*store)->kt(),
                                                crypto::system_rng(), wall_ms);
    if (!opened) return fail(opened.error());
    kt = std::move(*opened);
    if (auto ok = kt->set_auditors(config.kt_auditors); !ok) return fail(ok.error());
    server.set_key_transparency(kt.get());
  }

  if (invite->parsed()) {
    for (const auto& code : server.create_invites(invite_count, invite_days))
      std::cout << code << "\n";
    return 0;
  }

  auto tls = load_tls(config, true);
  if (!tls) return fail(tls.error());
  server.announce_next_key(tls->next);

  server::ServerConfig admission = config;
  admission.max_connections = fit_descriptor_limit(
      config.max_connections, config.max_connections != server::ServerConfig{}.max_connections);

  net::ServerOptions ws_options;
  ws_options.address = config.listen.host;
  ws_options.port = config.listen.port;
  ws_options.max_frame_bytes = config.max_frame_bytes;
  ws_options.max_connections = admission.max_connections;
  ws_options.max_connections_per_address = config.max_connections_per_address;
  ws_options.max_prelogin_connections = server::prelogin_ceiling(admission);
  ws_options.max_prelogin_per_address = config.max_prelogin_per_address;
  ws_options.login_deadline = std::chrono::seconds(config.login_deadline_seconds);
  ws_options.prelogin_max_frame_bytes = config.prelogin_max_frame_bytes;
  ws_options.prelogin_idle_timeout = std::chrono::seconds(config.prelogin_idle_timeout_seconds);
  ws_options.idle_timeout = std::chrono::seconds(config.idle_timeout_seconds);
  ws_options.max_outbound_bytes = config.max_outbound_bytes;
  ws_options.outbound_low_water = config.outbound_low_water_bytes;
  ws_options.max_buffered_bytes = config.max_buffered_bytes;
  ws_options.slow_reader_timeout = std::chrono::seconds(config.slow_reader_seconds);
  ws_options.threads = config.io_threads;
  ws_options.tls_record_handover = config.tls_record_handover;
  net::WsServer ws(tls->current, ws_options, server);
  // Which TLS record path serves the connections, and why (the handover's self-check ran just
  // now when it was wanted).
  const net::RecordHandoverState& handover = ws.record_handover();
  metrics.tls_record_handover.store(handover.in_use ? 1 : 0);
  if (handover.in_use || !config.tls_record_handover) {
    spdlog::info("event=tls_record_handover in_use={} openssl=\"{}\" reason=\"{}\"",
                 handover.in_use, OpenSSL_version(OPENSSL_VERSION), handover.reason);
  } else {
    spdlog::warn(
        "event=tls_record_handover in_use=false openssl=\"{}\" reason=\"{}\" (OpenSSL keeps "
        "each connection's TLS records: correct, about 13 KB more memory per open connection)",
        OpenSSL_version(OPENSSL_VERSION), handover.reason);
  }
  net::HttpOptions http_options;
  http_options.address = config.http.host;
  http_options.port = config.http.port;
  net::HttpServer http_server(http_options, [&](std::string_view path) {
    if (path == "/healthz") return net::HttpResponse{200, "text/plain", "ok\n"};
    if (path == "/metrics") {
      metrics.buffered_bytes.store(static_cast<std::int64_t>(ws.buffered_bytes()),
                                   std::memory_order_relaxed);
      return net::HttpResponse{200, "text/plain; version=0.0.4", metrics.render()};
    }
    return net::HttpResponse{404, "text/plain", "not found\n"};
  });
  // The transport's own texts name the address; the operator also needs the option to change.
  try {
    ws.start();
  } catch (const std::exception& e) {
    return fail(std::string(e.what()) +
                " (the messaging listener: --listen, or 'listen' in the config)");
  }
  try {
    http_server.start();
  } catch (const std::exception& e) {
    return fail(std::string(e.what()) +
                " (the operator HTTP listener: --http, or 'http' in the config; each server on a "
                "machine needs its own)");
  }
  // Clients pin the key's fingerprint; tests and tools read this line.
  std::printf("fingerprint: %s\n", tls->current.key_fingerprint.c_str());
  if (kt) {
    std::printf("kt keys: %s\n", server::kt_keys_text(kt->public_keys()).c_str());
    if (!config.kt_auditors.empty()) std::printf("kt auditors: %zu\n", config.kt_auditors.size());
  }
  if (tls->next) std::printf("next fingerprint: %s\n", tls->next_fingerprint.c_str());
  std::printf("listening on %s:%u\nhttp on %s:%u\n", config.listen.host.c_str(), ws.port(),
              config.http.host.c_str(), http_server.port());
  std::fflush(stdout);
  spdlog::info(
      "event=start listen={}:{} http={}:{} invite_only={} fingerprint={} "
      "certificate_fingerprint={} next={}",
      config.listen.host, ws.port(), config.http.host, http_server.port(), config.invite_only,
      tls->current.key_fingerprint, tls->current.fingerprint,
      tls->next ? tls->next_fingerprint : "none");

  int seconds = 0;
  for (;;) {
    timespec tick{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (sig == SIGHUP) {
      // A reload that fails keeps everything as it was: identity and announcement.
      auto reloaded = load_tls(config, false);
      if (!reloaded) {
        spdlog::error("event=reload result=error reason=\"{}\" (the previous TLS identity stays)",
                      reloaded.error());
        continue;
      }
      try {
        ws.set_identity(reloaded->current);
      } catch (const std::exception& e) {
        spdlog::error("event=reload result=error reason=\"{}\" (the previous TLS identity stays)",
                      e.what());
        continue;
      }
      server.announce_next_key(reloaded->next);
      spdlog::info("event=reload result=ok fingerprint={} next={}",
                   reloaded->current.key_fingerprint,
                   reloaded->next ? reloaded->next_fingerprint : "none");
      continue;
    }
    if (++seconds % 60 == 0) server.maintenance();
  }
  spdlog::info("event=shutdown phase=begin");
  ws.stop();
  (*store)->messages().flush();  // in-flight commits finish before we exit
  http_server.stop();
  spdlog::info("event=shutdown phase=done");
  return 0;
}
