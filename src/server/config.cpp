#include "server/config.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

// toml++ 3.3 asserts (debug builds only) on some malformed input that its release build rejects
// cleanly with a parse error; fuzz/server_config_fuzz runs the release path under ASan+UBSan
// without findings, so the debug assertion is disabled rather than aborting the server.
#define TOML_ASSERT(expr) static_cast<void>(0)
#include <toml++/toml.h>

#include "crypto/encoding.h"

namespace sotto::server {

tl::expected<Endpoint, std::string> parse_endpoint(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return tl::unexpected("expected HOST:PORT, got '" + text + "'");
  Endpoint e;
  e.host = colon == 0 ? "127.0.0.1" : text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || ptr != port.data() + port.size() || value > 65535) {
    return tl::unexpected("invalid port in '" + text + "'");
  }
  if (e.host.empty() || e.host.size() > 253)
    return tl::unexpected("invalid host in '" + text + "'");
  e.port = static_cast<std::uint16_t>(value);
  return e;
}

namespace {

template <typename T>
tl::expected<void, std::string> read_int(const toml::table& t, const char* key, T& out, T min,
                                         T max) {
  const auto* node = t.get(key);
  if (node == nullptr) return {};
  const auto* i = node->as_integer();
  const std::optional<std::int64_t> v = i ? std::optional<std::int64_t>(i->get()) : std::nullopt;
  if (!v || *v < static_cast<std::int64_t>(min) || *v > static_cast<std::int64_t>(max)) {
    std::ostringstream os;
    os << "'" << key << "' must be an integer in " << min << ".." << max;
    return tl::unexpected(os.str());
  }
  out = static_cast<T>(*v);
  return {};
}

tl::expected<void, std::string> read_string(const toml::table& t, const char* key,
                                            std::string& out) {
  const auto* node = t.get(key);
  if (node == nullptr) return {};
  const auto* str = node->as_string();
  const std::optional<std::string> v = str ? std::optional<std::string>(str->get()) : std::nullopt;
  if (!v || v->size() > 4096) return tl::unexpected(std::string("'") + key + "' must be a string");
  out = *v;
  return {};
}

}  // namespace

std::optional<std::string> check_log_level(std::string_view level) {
  static const std::set<std::string, std::less<>> kLevels = {"trace", "debug", "info",
                                                             "warn",  "error", "off"};
  if (kLevels.contains(level)) return std::nullopt;
  return "'log_level' (--log-level) must be one of trace, debug, info, warn, error, off";
}

std::optional<std::string> check_store(std::string_view store) {
  if (store.empty() || store == "sqlite" || store.starts_with("postgresql://") ||
      store.starts_with("postgres://"))
    return std::nullopt;
  return std::string(
      "'store' (--store) must be \"sqlite\" or a PostgreSQL URI such as "
      "\"postgresql://sotto@db.example/sotto\"");
}

tl::expected<void, std::string> check_config(const ServerConfig& c) {
  if (auto error = check_store(c.store)) return tl::unexpected(std::move(*error));
  if (auto error = check_log_level(c.log_level)) return tl::unexpected(std::move(*error));
  if (c.tls_certificate.empty() != c.tls_private_key.empty()) {
    return tl::unexpected(
        std::string(c.tls_certificate.empty()
                        ? "a TLS private key is given (--tls-key or 'tls_private_key') without its "
                          "certificate (--tls-cert or 'tls_certificate')"
                        : "a TLS certificate is given (--tls-cert or 'tls_certificate') without "
                          "its private "
                          "key (--tls-key or 'tls_private_key')") +
        ": give both, or neither to use the self-signed key under " +
        (c.data_dir / "tls").string());
  }
  // One message must always fit beside what a connection may already hold (a push goes out
  // while fewer than outbound_low_water_bytes are unsent): otherwise a device with such a
  // message queued is closed as a slow reader at every login, for good.
  if (c.max_message_bytes > c.max_outbound_bytes / 2) {
    return tl::unexpected("'max_message_bytes' (" + std::to_string(c.max_message_bytes) +
                          ") is more than half of 'max_outbound_bytes' (" +
                          std::to_string(c.max_outbound_bytes) +
                          "): a device could not be sent such a message; raise "
                          "'max_outbound_bytes' or lower 'max_message_bytes'");
  }
  // Pushes to one device may leave at the same moment from its own strand (the drain), the store's
  // commit thread and each I/O thread (a sender's live push), each having seen the connection
  // under the mark: all of them together must fit, or the server would close a device for a
  // backlog it made itself.
  if (c.max_message_bytes <= c.max_outbound_bytes / 2 && c.io_threads > 0) {
    const std::size_t burst = c.outbound_low_water_bytes +
                              (2 + static_cast<std::size_t>(c.io_threads)) * c.max_message_bytes;
    if (burst > c.max_outbound_bytes) {
      return tl::unexpected("'max_outbound_bytes' (" + std::to_string(c.max_outbound_bytes) +
                            ") must hold 'outbound_low_water_bytes' plus (2 + 'io_threads') x "
                            "'max_message_bytes' (" +
                            std::to_string(burst) +
                            "): pushes to one device may leave from that many threads at once");
    }
  }
  // Pushes pause at the mark and reading requests at twice it; the rest of the outbound limit is
  // room for one message and the answers to requests already read.
  if (c.outbound_low_water_bytes > c.max_outbound_bytes / 4) {
    return tl::unexpected("'outbound_low_water_bytes' (" +
                          std::to_string(c.outbound_low_water_bytes) +
                          ") must be at most a quarter of 'max_outbound_bytes' (" +
                          std::to_string(c.max_outbound_bytes) + ")");
  }
  if (c.max_buffered_bytes < c.max_outbound_bytes) {
    return tl::unexpected("'max_buffered_bytes' (" + std::to_string(c.max_buffered_bytes) +
                          ") must be at least 'max_outbound_bytes' (" +
                          std::to_string(c.max_outbound_bytes) + ")");
  }
  return {};
}

std::size_t prelogin_ceiling(const ServerConfig& c) {
  const std::size_t n =
      c.max_prelogin_connections > 0 ? c.max_prelogin_connections : c.max_connections / 4;
  return std::clamp<std::size_t>(n, 1, std::max<std::size_t>(1, c.max_connections));
}

const std::set<std::string>& config_keys() {
  static const std::set<std::string> kKnown = {"listen",
                                               "http",
                                               "tls_certificate",
                                               "tls_private_key",
                                               "invite_only",
                                               "max_message_bytes",
                                               "max_frame_bytes",
                                               "max_queue_per_device",
                                               "message_ttl_days",
                                               "max_connections",
                                               "max_connections_per_address",
                                               "max_prelogin_connections",
                                               "max_prelogin_per_address",
                                               "login_deadline_seconds",
                                               "prelogin_max_frame_bytes",
                                               "prelogin_idle_timeout_seconds",
                                               "idle_timeout_seconds",
                                               "max_outbound_bytes",
                                               "outbound_low_water_bytes",
                                               "max_buffered_bytes",
                                               "slow_reader_seconds",
                                               "io_threads",
                                               "registrations_per_minute",
                                               "logins_per_minute",
                                               "logins_per_account_per_minute",
                                               "bundle_fetches_per_minute",
                                               "sends_per_minute",
                                               "send_bytes_per_minute",
                                               "acks_per_minute",
                                               "device_lists_per_minute",
                                               "link_tokens_per_hour",
                                               "provisioning_per_minute",
                                               "max_queue_bytes_per_device",
                                               "max_queue_per_sender",
                                               "max_queue_bytes_per_sender",
                                               "max_stored_bytes",
                                               "min_free_disk_bytes",
                                               "pre_keys_per_device_per_hour",
                                               "log_level",
                                               "data",
                                               "store",
                                               "tls_next_key",
                                               "tls_record_handover",
                                               "max_attachment_bytes",
                                               "attachment_quota_bytes",
                                               "attachment_ttl_days",
                                               "attachment_upload_ttl_hours",
                                               "attachment_uploads_per_hour",
                                               "attachment_upload_bytes_per_minute",
                                               "attachment_download_bytes_per_minute",
                                               "kt_auditors"};
  return kKnown;
}

tl::expected<ServerConfig, std::string> apply_toml_text(ServerConfig c, std::string_view text) {
  if (text.size() > 1024 * 1024) return tl::unexpected(std::string("config file too large"));
  // toml++ 3.3 reaches an unreachable branch on some non-ASCII input (found by
  // fuzz/server_config_fuzz); every key and value Sotto reads is ASCII, so the file must be too.
  int line = 1;
  for (char ch : text) {
    if (ch == '\n') ++line;
    if (static_cast<unsigned char>(ch) >= 0x80 || ch == '\0') {
      return tl::unexpected("config must be ASCII text (unexpected byte on line " +
                            std::to_string(line) + ")");
    }
  }
  toml::table t;
  try {
    t = toml::parse(text);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << "config syntax error at line " << e.source().begin.line << ": " << e.description();
    return tl::unexpected(os.str());
  }
  for (const auto& [key, value] : t) {
    (void)value;
    if (!config_keys().contains(std::string(key.str()))) {
      return tl::unexpected("unknown config key '" + std::string(key.str()) + "'");
    }
  }
  std::string s;
  for (const auto& [key, target] : {std::pair<const char*, Endpoint*>{"listen", &c.listen},
                                    std::pair<const char*, Endpoint*>{"http", &c.http}}) {
    s.clear();
    if (auto r = read_string(t, key, s); !r) return tl::unexpected(r.error());
    if (!s.empty()) {
      auto e = parse_endpoint(s);
      if (!e) return tl::unexpected(std::string("'") + key + "': " + e.error());
      *target = *e;
    }
  }
  s.clear();
  if (auto r = read_string(t, "data", s); !r) return tl::unexpected(r.error());
  if (!s.empty()) c.data_dir = s;
  s.clear();
  if (auto r = read_string(t, "store", s); !r) return tl::unexpected(r.error());
  if (!s.empty()) {
    if (auto bad = check_store(s)) return tl::unexpected(std::move(*bad));
    c.store = s;
  }
  s.clear();
  if (auto r = read_string(t, "tls_certificate", s); !r) return tl::unexpected(r.error());
  if (!s.empty()) c.tls_certificate = s;
  s.clear();
  if (auto r = read_string(t, "tls_private_key", s); !r) return tl::unexpected(r.error());
  if (!s.empty()) c.tls_private_key = s;
  s.clear();
  if (auto r = read_string(t, "tls_next_key", s); !r) return tl::unexpected(r.error());
  if (!s.empty()) c.tls_next_key = s;
  if (const auto* node = t.get("invite_only")) {
    const auto* b = node->as_boolean();
    if (b == nullptr) return tl::unexpected(std::string("'invite_only' must be true or false"));
    c.invite_only = b->get();
  }
  if (const auto* node = t.get("tls_record_handover")) {
    const auto* b = node->as_boolean();
    if (b == nullptr) {
      return tl::unexpected(std::string("'tls_record_handover' must be true or false"));
    }
    c.tls_record_handover = b->get();
  }
  std::string level = c.log_level;
  if (auto r = read_string(t, "log_level", level); !r) return tl::unexpected(r.error());
  if (auto error = check_log_level(level)) return tl::unexpected(std::move(*error));
  c.log_level = level;

  tl::expected<void, std::string> r;
  if (!(r = read_int<std::size_t>(t, "max_message_bytes", c.max_message_bytes, 1024, 16u << 20)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_frame_bytes", c.max_frame_bytes, 65536, 64u << 20)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_queue_per_device", c.max_queue_per_device, 1,
                                  10'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "message_ttl_days", c.message_ttl_days, 1, 365)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_connections", c.max_connections, 1, 1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_connections_per_address", c.max_connections_per_address,
                                  1, 1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_prelogin_connections", c.max_prelogin_connections, 0,
                                  1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_prelogin_per_address", c.max_prelogin_per_address, 1,
                                  1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "login_deadline_seconds", c.login_deadline_seconds, 1, 600)))
    return tl::unexpected(r.error());
  // At least what a client's frame batch may take (net/batch.h: kMaxBatchBytes and its header).
  if (!(r = read_int<std::size_t>(t, "prelogin_max_frame_bytes", c.prelogin_max_frame_bytes,
                                  16 * 1024, 64u << 20)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "prelogin_idle_timeout_seconds",
                                    c.prelogin_idle_timeout_seconds, 2, 86400)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "idle_timeout_seconds", c.idle_timeout_seconds, 5, 86400)))
    return tl::unexpected(r.error());
  if (!(r = read_int<int>(t, "io_threads", c.io_threads, 1, 64))) return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_outbound_bytes", c.max_outbound_bytes, 1u << 20,
                                  1u << 30)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "outbound_low_water_bytes", c.outbound_low_water_bytes,
                                  64u << 10, 256u << 20)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_buffered_bytes", c.max_buffered_bytes, 1u << 20,
                                  std::size_t{1} << 40)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "slow_reader_seconds", c.slow_reader_seconds, 5, 3600)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "registrations_per_minute", c.registrations_per_minute, 1,
                                    1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "logins_per_minute", c.logins_per_minute, 1, 10'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "logins_per_account_per_minute",
                                    c.logins_per_account_per_minute, 1, 10'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "bundle_fetches_per_minute", c.bundle_fetches_per_minute, 1,
                                    1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "sends_per_minute", c.sends_per_minute, 1, 10'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "send_bytes_per_minute", c.send_bytes_per_minute, 1u << 20,
                                    1ull << 50)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "acks_per_minute", c.acks_per_minute, 100, 100'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "device_lists_per_minute", c.device_lists_per_minute, 1,
                                    10'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "link_tokens_per_hour", c.link_tokens_per_hour, 1,
                                    1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "provisioning_per_minute", c.provisioning_per_minute, 1,
                                    1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "max_queue_bytes_per_device", c.max_queue_bytes_per_device,
                                    1u << 20, 1ull << 50)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::size_t>(t, "max_queue_per_sender", c.max_queue_per_sender, 1,
                                  10'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "max_queue_bytes_per_sender", c.max_queue_bytes_per_sender,
                                    1u << 20, 1ull << 50)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "max_stored_bytes", c.max_stored_bytes, 1u << 20,
                                    1ull << 50)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "min_free_disk_bytes", c.min_free_disk_bytes, 0,
                                    1ull << 50)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "pre_keys_per_device_per_hour",
                                    c.pre_keys_per_device_per_hour, 1, 1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "max_attachment_bytes", c.max_attachment_bytes, 0,
                                    1ull << 40)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "attachment_quota_bytes", c.attachment_quota_bytes, 0,
                                    1ull << 50)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "attachment_ttl_days", c.attachment_ttl_days, 1, 365)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "attachment_upload_ttl_hours", c.attachment_upload_ttl_hours,
                                    1, 24 * 365)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint32_t>(t, "attachment_uploads_per_hour", c.attachment_uploads_per_hour,
                                    1, 1'000'000)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "attachment_upload_bytes_per_minute",
                                    c.attachment_upload_bytes_per_minute, 1u << 20, 1ull << 50)))
    return tl::unexpected(r.error());
  if (!(r = read_int<std::uint64_t>(t, "attachment_download_bytes_per_minute",
                                    c.attachment_download_bytes_per_minute, 1u << 20, 1ull << 50)))
    return tl::unexpected(r.error());
  if (const auto* node = t.get("kt_auditors")) {
    const auto* list = node->as_array();
    const std::string bad =
        "'kt_auditors' must be a list of auditor keys (64 hex digits each, as `sotto-audit key` "
        "prints them)";
    if (list == nullptr || list->size() > 64) return tl::unexpected(bad + " (at most 64)");
    c.kt_auditors.clear();
    std::size_t n = 0;
    for (const auto& item : *list) {
      ++n;
      const auto* str = item.as_string();
      auto key = str ? crypto::from_hex(str->get()) : std::nullopt;
      if (!key || key->size() != 32) {
        return tl::unexpected(bad + ": entry " + std::to_string(n) + " is not one");
      }
      crypto::Ed25519PublicKey k{};
      std::copy(key->begin(), key->end(), k.begin());
      if (std::find(c.kt_auditors.begin(), c.kt_auditors.end(), k) == c.kt_auditors.end())
        c.kt_auditors.push_back(k);
    }
  }
  if (c.prelogin_max_frame_bytes > c.max_frame_bytes) {
    return tl::unexpected(
        std::string("'prelogin_max_frame_bytes' must not exceed 'max_frame_bytes'"));
  }
  if (c.max_message_bytes + 4096 > c.max_frame_bytes) {
    return tl::unexpected("'max_frame_bytes' (" + std::to_string(c.max_frame_bytes) +
                          ") must exceed 'max_message_bytes' (" +
                          std::to_string(c.max_message_bytes) +
                          ") by at least 4096: raise 'max_frame_bytes' too (and, for a large "
                          "message limit, 'max_outbound_bytes': docs/configuration.md)");
  }
  return c;
}

tl::expected<ServerConfig, std::string> apply_toml_file(ServerConfig base,
                                                        const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return tl::unexpected("cannot read config file " + file.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return apply_toml_text(std::move(base), ss.str());
}

}  // namespace sotto::server
