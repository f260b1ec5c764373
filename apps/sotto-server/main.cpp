// sotto-server: the Sotto relay. One binary; with only --data it runs on the embedded SQLite
// store with a self-signed certificate generated on first start.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "crypto/rng.h"
#include "net/http_server.h"
#include "net/tls.h"
#include "net/ws_server.h"
#include "server/config.h"
#include "server/metrics.h"
#include "server/server.h"
#include "store/server/sqlite_store.h"

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "sotto-server: the Sotto relay. Stores and forwards ciphertext it cannot read.\n"
      "With only --data it keeps an SQLite database and a self-signed TLS certificate under DIR\n"
      "and prints the certificate's fingerprint for clients to pin."};
  std::string data_dir;
  std::string listen;
  std::string http;
  std::string config_file;
  std::string tls_cert;
  std::string tls_key;
  std::string log_level;
  bool invite_only = false;
  app.add_option("--data", data_dir,
                 "Data directory (database, TLS certificate); created if missing")
      ->required();
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
  app.add_flag("--invite-only", invite_only, "Require an invite code to register");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off (default info)");
  app.footer(
      "Config file keys (TOML, all optional): listen, http, data, tls_certificate, "
      "tls_private_key,\n"
      "invite_only, max_message_bytes, max_frame_bytes, max_queue_per_device, message_ttl_days,\n"
      "max_connections, idle_timeout_seconds, io_threads, registrations_per_minute,\n"
      "logins_per_minute, bundle_fetches_per_minute, log_level.");
  auto* invite = app.add_subcommand("invite", "Manage invite codes (for invite-only registration)");
  auto* invite_create = invite->add_subcommand("create", "Create invite codes and print them");
  std::size_t invite_count = 1;
  std::uint64_t invite_days = 7;
  invite_create->add_option("--count", invite_count, "How many codes")->check(CLI::Range(1, 1000));
  invite_create->add_option("--days", invite_days, "Days until the codes expire")
      ->check(CLI::Range(1, 365));
  invite->require_subcommand(1);
  CLI11_PARSE(app, argc, argv);

  server::ServerConfig config;
  if (!config_file.empty()) {
    auto c = server::apply_toml_file(config, config_file);
    if (!c) return fail(c.error());
    config = *c;
  }
  config.data_dir = data_dir;
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
  if (invite_only) config.invite_only = true;
  if (!log_level.empty()) config.log_level = log_level;

  auto logger = spdlog::stderr_color_mt("sotto");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));

  umask(077);  // the database and keys are for this user only
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) return fail("cannot create data directory: " + ec.message());
  std::filesystem::permissions(config.data_dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);

  store::SqliteOptions options;
  options.max_queue_per_device = static_cast<std::uint32_t>(config.max_queue_per_device);
  options.message_ttl_seconds = config.message_ttl_days * 86400;
  options.log = [](std::string_view line) { spdlog::error("event=store {}", line); };
  auto store = store::SqliteServerStore::open(config.data_dir / "sotto.db", options);
  if (!store) return fail("cannot open the database under " + config.data_dir.string());

  server::Metrics metrics;
  server::Server server(config, **store, metrics, crypto::system_rng(), wall_ms);

  if (invite->parsed()) {
    for (const auto& code : server.create_invites(invite_count, invite_days))
      std::cout << code << "\n";
    return 0;
  }

  auto identity = (config.tls_certificate.empty() || config.tls_private_key.empty())
                      ? net::load_or_create_identity(config.data_dir)
                      : net::load_identity(config.tls_certificate, config.tls_private_key);
  if (!identity) return fail("cannot load or create the TLS certificate");

  // Handle SIGTERM/SIGINT in this thread only: block them before any other thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  net::ServerOptions ws_options;
  ws_options.address = config.listen.host;
  ws_options.port = config.listen.port;
  ws_options.max_frame_bytes = config.max_frame_bytes;
  ws_options.max_connections = config.max_connections;
  ws_options.idle_timeout = std::chrono::seconds(config.idle_timeout_seconds);
  ws_options.threads = config.io_threads;
  net::WsServer ws(*identity, ws_options, server);
  net::HttpOptions http_options;
  http_options.address = config.http.host;
  http_options.port = config.http.port;
  net::HttpServer http_server(http_options, [&](std::string_view path) {
    if (path == "/healthz") return net::HttpResponse{200, "text/plain", "ok\n"};
    if (path == "/metrics")
      return net::HttpResponse{200, "text/plain; version=0.0.4", metrics.render()};
    return net::HttpResponse{404, "text/plain", "not found\n"};
  });
  try {
    ws.start();
    http_server.start();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  std::printf("fingerprint: %s\nlistening on %s:%u\nhttp on %s:%u\n", identity->fingerprint.c_str(),
              config.listen.host.c_str(), ws.port(), config.http.host.c_str(), http_server.port());
  std::fflush(stdout);
  spdlog::info("event=start listen={}:{} http={}:{} invite_only={}", config.listen.host, ws.port(),
               config.http.host, http_server.port(), config.invite_only);

  int seconds = 0;
  for (;;) {
    timespec tick{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (++seconds % 60 == 0) server.maintenance();
  }
  spdlog::info("event=shutdown phase=begin");
  ws.stop();
  (*store)->messages().flush();  // in-flight commits finish before we exit
  http_server.stop();
  spdlog::info("event=shutdown phase=done");
  return 0;
}
