#include "net/handover/record_handover.h"

#include <openssl/crypto.h>
#include <openssl/err.h>

#include <atomic>
#include <cstdio>
#include <string_view>

namespace sotto::net::handover {
namespace {

std::atomic<std::int64_t> g_write_sequence_offset{0};

// The SSL ex_data slot that points at a connection's Capture while its handshake runs.
int capture_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

// OpenSSL's callbacks, given access to the Capture they fill.
struct Callbacks {
  // The key log line "<LABEL> <client random hex> <secret hex>" of the two application traffic
  // secrets goes to the connection's Capture; every other line is ignored. OpenSSL wipes the line.
  static void keylog(const SSL* ssl, const char* line) {
    auto* c = static_cast<Capture*>(SSL_get_ex_data(ssl, capture_index()));
    if (c == nullptr) return;
    const std::string_view text(line);
    constexpr std::string_view kClient = "CLIENT_TRAFFIC_SECRET_0 ";
    constexpr std::string_view kServer = "SERVER_TRAFFIC_SECRET_0 ";
    const bool client = text.starts_with(kClient);
    if (!client && !text.starts_with(kServer)) return;
    const std::size_t space = text.find(' ', kClient.size());
    if (space == std::string_view::npos) return;
    const std::string_view hex = text.substr(space + 1);
    if (hex.size() != 64 && hex.size() != 96) return;
    crypto::Secret<48>& out = client ? c->client_secret_ : c->server_secret_;
    for (std::size_t i = 0; i < hex.size() / 2; ++i) {
      const int hi = hex_digit(hex[2 * i]);
      const int lo = hex_digit(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) return;
      out.data()[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    (client ? c->client_len_ : c->server_len_) = hex.size() / 2;
    // The server's application key is installed now: every protected record written from here
    // on uses it (its Finished went out under the handshake key before this line).
    if (!client) c->server_keys_logged_ = true;
  }

  // OpenSSL 3.0 reports the inner content type of every protected record it writes, once per
  // record, after sealing it: the count of records under the application key.
  static void message(int write_p, int, int content_type, const void*, std::size_t, SSL*,
                      void* arg) {
    auto* c = static_cast<Capture*>(arg);
    if (c == nullptr || write_p != 1 || content_type != SSL3_RT_INNER_CONTENT_TYPE ||
        !c->server_keys_logged_) {
      return;
    }
    ++c->app_records_;
  }
};

void Capture::attach(SSL* ssl) {
  SSL_set_ex_data(ssl, capture_index(), this);
  SSL_set_read_ahead(ssl, 0);
  SSL_set_msg_callback(ssl, Callbacks::message);
  SSL_set_msg_callback_arg(ssl, this);
}

std::optional<detail::TlsRecordLayer> Capture::finish(SSL* ssl) {
  SSL_set_msg_callback(ssl, nullptr);
  SSL_set_msg_callback_arg(ssl, nullptr);
  SSL_set_ex_data(ssl, capture_index(), nullptr);
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  if (cipher == nullptr || client_len_ == 0 || server_len_ == 0 || SSL_has_pending(ssl) != 0) {
    return std::nullopt;
  }
  const std::int64_t offset = g_write_sequence_offset.load(std::memory_order_relaxed);
  const std::uint64_t write_seq = app_records_ + static_cast<std::uint64_t>(offset);
  return detail::TlsRecordLayer::create(SSL_CIPHER_get_protocol_id(cipher),
                                        {client_secret_.data(), client_len_}, 0,
                                        {server_secret_.data(), server_len_}, write_seq);
}

void enable(SSL_CTX* ctx) {
  SSL_CTX_set_keylog_callback(ctx, Callbacks::keylog);
}

bool enabled(const SSL_CTX* ctx) {
  return SSL_CTX_get_keylog_callback(ctx) == Callbacks::keylog;
}

bool version_tested(unsigned long version_num) {
  // 0xMNN00PPSL: major 3, minor 0, any patch (3.0.x). Another series may count records
  // differently.
  return (version_num & 0xfff00000UL) == 0x30000000UL;
}

Verdict decide(SSL_CTX* server_ctx, unsigned long version_num) {
  if (!version_tested(version_num)) {
    char version[48];
    std::snprintf(version, sizeof version, "%lu.%lu.%lu", version_num >> 28,
                  (version_num >> 20) & 0xffUL, (version_num >> 4) & 0xffUL);
    return {false, std::string("OpenSSL ") + version +
                       " is not a version the handover was tested with (the 3.0 series)"};
  }
  return self_check(server_ctx);
}

namespace testing {
void set_write_sequence_offset(std::int64_t offset) noexcept {
  g_write_sequence_offset.store(offset, std::memory_order_relaxed);
}
}  // namespace testing

}  // namespace sotto::net::handover
