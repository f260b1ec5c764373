// Server configuration: defaults that work with no file at all, overridden by a TOML file
// (toml++) and then by command-line flags. Parsing is strict: unknown keys and out-of-range
// values are errors that name the key, so an operator's typo never passes silently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>

namespace sotto::server {

struct Endpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
};

// Parses "HOST:PORT" (IPv4 or name) with a port in 0..65535 (0: any free port, printed at start),
// or ":PORT".
[[nodiscard]] tl::expected<Endpoint, std::string> parse_endpoint(const std::string& text);

struct ServerConfig {
  std::filesystem::path data_dir;
  Endpoint listen{"127.0.0.1", 7443};
  Endpoint http{"127.0.0.1", 7480};       // /healthz and /metrics, loopback by default
  std::filesystem::path tls_certificate;  // both empty: self-signed under data_dir/tls
  std::filesystem::path tls_private_key;
  // The next TLS key (a PEM certificate, public or private key), announced to every device after
  // its login; empty: DIR/tls/next-cert.pem when the self-signed identity is in use.
  std::filesystem::path tls_next_key;
  bool invite_only = false;
  std::size_t max_message_bytes = 256 * 1024;  // one ciphertext
  std::size_t max_frame_bytes = 2 * 1024 * 1024;
  std::size_t max_queue_per_device = 10000;
  std::uint64_t message_ttl_days = 30;
  std::size_t max_connections = 60000;
  std::uint32_t idle_timeout_seconds = 120;
  // Back-pressure by bytes (docs/abuse.md). A connection is closed ("slow reader") when its
  // unsent bytes would pass max_outbound_bytes, or when it has some and not one write has
  // completed for slow_reader_seconds. Pushes to it pause above outbound_low_water_bytes and
  // reading its requests above twice that; both pause on every connection while all of them
  // together hold max_buffered_bytes or more.
  std::size_t max_outbound_bytes = 8 * 1024 * 1024;
  std::size_t outbound_low_water_bytes = 1024 * 1024;
  std::size_t max_buffered_bytes = std::size_t{256} * 1024 * 1024;
  std::uint32_t slow_reader_seconds = 60;
  int io_threads = 2;
  // Per source address, per minute.
  std::uint32_t registrations_per_minute = 30;
  std::uint32_t logins_per_minute = 600;
  // Per requesting account, per minute (protects one-time prekeys from exhaustion).
  std::uint32_t bundle_fetches_per_minute = 120;
  std::string log_level = "info";
};

// The error for a log level spdlog does not know (the same for the config key and the flag);
// nullopt when `level` is one of trace, debug, info, warn, error, off.
[[nodiscard]] std::optional<std::string> check_log_level(std::string_view level);

// Checks what only the merged configuration (file, then flags) can tell: a TLS certificate
// without its private key (or the other way round) would otherwise be ignored in favour of the
// self-signed key, an unknown log level would silence the log, and a message limit above half
// the outbound limit (or marks that do not fit under it) could lock a device's inbox.
[[nodiscard]] tl::expected<void, std::string> check_config(const ServerConfig& config);

// Reads a TOML file and applies it over `base`. Errors name the offending key.
[[nodiscard]] tl::expected<ServerConfig, std::string> apply_toml_file(
    ServerConfig base, const std::filesystem::path& file);
[[nodiscard]] tl::expected<ServerConfig, std::string> apply_toml_text(ServerConfig base,
                                                                      std::string_view text);

}  // namespace sotto::server
