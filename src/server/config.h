// Server configuration: defaults that work with no file at all, overridden by a TOML file
// (toml++) and then by command-line flags. Parsing is strict: unknown keys and out-of-range
// values are errors that name the key, so an operator's typo never passes silently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/ed25519.h"

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
  // Where the server keeps its tables: empty or "sqlite" for the SQLite file under data_dir, or a
  // PostgreSQL URI ("postgresql://user@host/db", docs/operations.md).
  std::string store;
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
  // Admission (docs/abuse.md). Per address means per IPv4 address or IPv6 /64
  // (net/address_key.h). Users behind one NAT share an address, so these are generous.
  std::size_t max_connections_per_address = 1000;
  // Connections not logged in yet, server-wide; 0: a quarter of max_connections. At the ceiling a
  // new connection displaces the oldest of them.
  std::size_t max_prelogin_connections = 0;
  std::size_t max_prelogin_per_address = 64;
  // Before login: the time from the WebSocket open to register, log in or start linking; the
  // largest message accepted; the idle timeout (pings answered count as activity).
  std::uint32_t login_deadline_seconds = 15;
  std::size_t prelogin_max_frame_bytes = 32 * 1024;
  std::uint32_t prelogin_idle_timeout_seconds = 10;
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
  // Per account (all its devices), per minute, counted once the login proof verified: the
  // per-address limit above is generous because a NAT's users share an address.
  std::uint32_t logins_per_account_per_minute = 60;
  // Per requesting account, per minute (protects one-time prekeys from exhaustion).
  std::uint32_t bundle_fetches_per_minute = 120;
  // Per sending account (docs/abuse.md): send requests (each one message to one user, to all of
  // its devices and our own) and their ciphertext bytes; a quarter of a minute's sends and half
  // a minute's bytes may come at once.
  std::uint32_t sends_per_minute = 1200;
  std::uint64_t send_bytes_per_minute = 64ull << 20;
  // Per account: envelope ids acknowledged (a fifth of a minute's at once).
  std::uint32_t acks_per_minute = 120000;
  // Per account: device lists of other accounts (a quarter at once; its own are not counted).
  std::uint32_t device_lists_per_minute = 60;
  // Per account: link tokens (a quarter of an hour's at once).
  std::uint32_t link_tokens_per_hour = 20;
  // Per source address (opening a provisioning address) and per account (sending to one).
  std::uint32_t provisioning_per_minute = 30;
  // A recipient device's queue: its bytes, and what one other account may hold of it (messages
  // and bytes); max_queue_per_device above bounds its messages.
  std::uint64_t max_queue_bytes_per_device = 1ull << 30;
  std::size_t max_queue_per_sender = 2500;
  std::uint64_t max_queue_bytes_per_sender = 256ull << 20;
  // The whole server: stored message bytes, and the free space the data directory's file system
  // must keep (0: not checked). Beyond either, sends are refused with UNAVAILABLE until
  // acknowledgements and expiry make room.
  std::uint64_t max_stored_bytes = 32ull << 30;
  std::uint64_t min_free_disk_bytes = 1ull << 30;
  // Per target device, per hour, and at most this many at once: one-time prekeys handed out in
  // bundles fetched by other accounts; beyond it, bundles come without one (X3DH without a
  // one-time prekey is valid). Bounds how fast strangers can drain a device's prekeys.
  std::uint32_t pre_keys_per_device_per_hour = 30;
  // Attachments (docs/attachments.md): the largest blob (ciphertext bytes; 0: attachments off),
  // what one account's blobs may hold together, how long a complete blob and an unfinished
  // upload are kept, and per-account rates: uploads begun (an hour's at once) and bytes written
  // and read (half a minute's at once).
  std::uint64_t max_attachment_bytes = 100ull << 20;
  std::uint64_t attachment_quota_bytes = 1ull << 30;
  std::uint64_t attachment_ttl_days = 30;
  std::uint64_t attachment_upload_ttl_hours = 24;
  std::uint32_t attachment_uploads_per_hour = 200;
  std::uint64_t attachment_upload_bytes_per_minute = 2ull << 30;
  std::uint64_t attachment_download_bytes_per_minute = 4ull << 30;
  std::string log_level = "info";
  // Hand TLS records from OpenSSL to the server's own record layer after each handshake (less
  // memory per connection); used only if the start-up self-check passes (net::ServerOptions).
  bool tls_record_handover = true;
  // Auditors whose co-signatures of the transparency log the server keeps and hands to clients
  // (docs/transparency.md, "Auditing"): Ed25519 public keys, as `sotto-audit key` prints them.
  std::vector<crypto::Ed25519PublicKey> kt_auditors;
};

// The error for a log level spdlog does not know (the same for the config key and the flag);
// nullopt when `level` is one of trace, debug, info, warn, error, off.
[[nodiscard]] std::optional<std::string> check_log_level(std::string_view level);
// Why a `store` value is refused (nullopt: it is "", "sqlite" or a PostgreSQL URI).
[[nodiscard]] std::optional<std::string> check_store(std::string_view store);

// Checks what only the merged configuration (file, then flags) can tell: a TLS certificate
// without its private key (or the other way round) would otherwise be ignored in favour of the
// self-signed key, an unknown log level would silence the log, and a message limit above half
// the outbound limit (or marks that do not fit under it) could lock a device's inbox.
[[nodiscard]] tl::expected<void, std::string> check_config(const ServerConfig& config);

// The server-wide ceiling on connections not logged in yet that `config` means (its
// max_prelogin_connections, or a quarter of max_connections when that is 0; at least 1).
[[nodiscard]] std::size_t prelogin_ceiling(const ServerConfig& config);

// Every key a config file may set (docs/configuration.md documents each one).
[[nodiscard]] const std::set<std::string>& config_keys();

// Reads a TOML file and applies it over `base`. Errors name the offending key.
[[nodiscard]] tl::expected<ServerConfig, std::string> apply_toml_file(
    ServerConfig base, const std::filesystem::path& file);
[[nodiscard]] tl::expected<ServerConfig, std::string> apply_toml_text(ServerConfig base,
                                                                      std::string_view text);

}  // namespace sotto::server
