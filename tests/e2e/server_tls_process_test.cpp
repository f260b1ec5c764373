// A real sotto-server process against TLS stacks that are not the server's own: OpenSSL used
// directly as a raw client, and the `openssl s_client` binary. Both record paths of the server
// run every test: the record handover (records protected by the server's own layer after the
// handshake) and OpenSSL keeping them (`tls_record_handover = false`).
//
// - close_notify on every way the server ends a connection (RFC 8446 section 6.1): a refused
//   upgrade, an unparsable request, the upgrade deadline, the idle timeout, a protocol error
//   (a text frame, a malformed frame), the server's shutdown. The client must read close_notify
//   (SSL_ERROR_ZERO_RETURN), not a bare EOF.
// - s_client's KeyUpdate commands (`k`: not requested, `K`: requested, which the server must
//   answer with its own) in each TLS 1.3 suite, the connection working both ways after each.
// - a record tampered with on the wire (a proxy flips one byte): refused with bad_record_mac, its
//   bytes never delivered.
// - 1-byte records and one record of 2^14 bytes, accepted and answered.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#ifndef SOTTO_SERVER_BIN
#error "SOTTO_SERVER_BIN must name the sotto-server binary"
#endif

namespace sotto {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Every wait is for a condition, bounded by this (the suite may run under sanitizers on a loaded
// machine); nothing asserts how long anything took.
constexpr auto kWait = 30s;

std::string read_file(const std::filesystem::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return {};
  std::string text;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  // A KeyUpdate and the record behind it are two writes: without this, Nagle holds the second
  // until the server's (delayed) ACK of the first.
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Waits for `events` on `fd` until `deadline`; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// --- the server process ----------------------------------------------------------------------

// sotto-server on free loopback ports with a config file (ROOT/server.toml) and its own data
// directory; its log goes to ROOT/server.log. SIGTERM on destruction.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& config) {
    char tmpl[] = "/tmp/sotto-tls-process-XXXXXX";
    root_ = mkdtemp(tmpl);
    {
      std::FILE* f = std::fopen((root_ / "server.toml").c_str(), "w");
      std::fputs(config.c_str(), f);
      std::fclose(f);
    }
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    const int err = ::open((root_ / "server.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      close(out[0]);
      close(out[1]);
      const std::string data = (root_ / "data").string();
      const std::string cfg = (root_ / "server.toml").string();
      execl(SOTTO_SERVER_BIN, SOTTO_SERVER_BIN, "--data", data.c_str(), "--config", cfg.c_str(),
            "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(err);
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      const std::string l(line);
      if (l.rfind("listening on ", 0) == 0) {
        port_ = static_cast<std::uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
      }
      if (l.rfind("http on ", 0) == 0) {
        http_port_ = static_cast<std::uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
        break;
      }
    }
    reader_ = std::thread([f] {  // drains its output so that it never blocks on the pipe
      char buf[512];
      while (std::fgets(buf, sizeof buf, f) != nullptr) {
      }
      std::fclose(f);
    });
  }
  ~ServerProcess() {
    (void)stop();
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  std::uint16_t port() const { return port_; }
  std::string log() const { return read_file(root_ / "server.log"); }

  // SIGTERM (a graceful shutdown) without waiting.
  void terminate() const {
    if (pid_ > 0) kill(pid_, SIGTERM);
  }
  // SIGTERM and the exit status; -1 when it did not exit normally.
  int stop() {
    int status = 0;
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
    if (reader_.joinable()) reader_.join();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::string http_get(const std::string& path) const {
    const int fd = connect_loopback(http_port_);
    if (fd < 0) return {};
    const std::string request = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    std::string response;
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n = 0;
      while ((n = read(fd, buf, sizeof buf)) > 0) response.append(buf, static_cast<std::size_t>(n));
    }
    close(fd);
    return response;
  }

 private:
  std::filesystem::path root_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t http_port_ = 0;
  std::thread reader_;
};

std::string config_for(bool handover, std::uint32_t idle_timeout_seconds = 120) {
  return std::string("tls_record_handover = ") + (handover ? "true" : "false") +
         "\nidle_timeout_seconds = " + std::to_string(idle_timeout_seconds) + "\n";
}

// --- WebSocket bytes ----------------------------------------------------------------------------

const std::string kUpgrade =
    "GET /v1/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

// One masked client frame (RFC 6455 section 5.2) with a payload under 126 bytes; `masked` false
// makes the frame a server must refuse.
std::string client_frame(std::uint8_t opcode, std::string_view payload, bool masked = true) {
  std::string frame;
  frame.push_back(static_cast<char>(0x80 | opcode));
  frame.push_back(static_cast<char>((masked ? 0x80 : 0) | payload.size()));
  const char mask[4] = {0x5a, 0x13, 0x7e, 0x21};
  if (masked) frame.append(mask, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    frame.push_back(masked ? static_cast<char>(payload[i] ^ mask[i % 4]) : payload[i]);
  }
  return frame;
}

constexpr std::uint8_t kText = 0x1;
constexpr std::uint8_t kPing = 0x9;
constexpr std::uint8_t kPong = 0xa;

// Takes one unmasked server frame with a payload under 64 KB off the front of `in`.
bool take_frame(std::string& in, std::uint8_t& opcode, std::string& payload) {
  if (in.size() < 2) return false;
  std::size_t size = static_cast<std::uint8_t>(in[1]) & 0x7fu;
  std::size_t head = 2;
  if (size == 126) {
    if (in.size() < 4) return false;
    size = (std::size_t{static_cast<std::uint8_t>(in[2])} << 8) | static_cast<std::uint8_t>(in[3]);
    head = 4;
  }
  if (in.size() < head + size) return false;
  opcode = static_cast<std::uint8_t>(in[0]) & 0x0f;
  payload = in.substr(head, size);
  in.erase(0, head + size);
  return true;
}

// --- OpenSSL as the client --------------------------------------------------------------------

// How a connection ended, as the client saw it.
enum class End { close_notify, bare_eof, alert, error, timeout };

const char* name(End e) {
  switch (e) {
    case End::close_notify:
      return "close_notify";
    case End::bare_eof:
      return "EOF without close_notify";
    case End::alert:
      return "an alert";
    case End::error:
      return "an error";
    case End::timeout:
      return "nothing (timeout)";
  }
  return "?";
}

// A TLS 1.3 client over a non-blocking socket, every operation bounded by kWait.
class TlsClient {
 public:
  TlsClient() = default;
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;
  ~TlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  // Connects and completes the handshake; `suite` restricts the TLS 1.3 suites.
  bool connect(std::uint16_t port, const char* suite = nullptr) {
    fd_ = connect_loopback(port);
    if (fd_ < 0 || ::fcntl(fd_, F_SETFL, O_NONBLOCK) != 0) return false;
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    if (suite != nullptr && SSL_CTX_set_ciphersuites(ctx_, suite) != 1) return false;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_msg_callback(ssl_, &TlsClient::on_message);
    SSL_set_msg_callback_arg(ssl_, this);
    const auto deadline = Clock::now() + kWait;
    for (;;) {
      const int r = SSL_connect(ssl_);
      if (r == 1) return true;
      if (!wait_for(r, deadline)) return false;
    }
  }

  // One SSL_write: one record when `bytes` is at most 2^14.
  bool write(std::string_view bytes) {
    const auto deadline = Clock::now() + kWait;
    for (;;) {
      std::size_t n = 0;
      const int r = SSL_write_ex(ssl_, bytes.data(), bytes.size(), &n);
      if (r == 1) return n == bytes.size();
      if (!wait_for(r, deadline)) return false;
    }
  }

  // Reads until `done(buffered)` holds; false on timeout or when the connection ends first.
  bool read_until(const std::function<bool(std::string&)>& done) {
    const auto deadline = Clock::now() + kWait;
    for (;;) {
      if (done(in_)) return true;
      char buf[16384];
      std::size_t n = 0;
      const int r = SSL_read_ex(ssl_, buf, sizeof buf, &n);
      if (r == 1) {
        in_.append(buf, n);
        continue;
      }
      if (!wait_for(r, deadline)) return false;
    }
  }

  bool upgrade() {
    if (!write(kUpgrade)) return false;
    std::string head;
    const bool ok = read_until([&](std::string& in) {
      const auto end = in.find("\r\n\r\n");
      if (end == std::string::npos) return false;
      head = in.substr(0, end + 4);
      in.erase(0, end + 4);
      return true;
    });
    return ok && head.rfind("HTTP/1.1 101", 0) == 0;
  }

  // Reads server frames until a pong; its payload, or nullopt.
  std::optional<std::string> read_pong() {
    std::optional<std::string> pong;
    const bool ok = read_until([&](std::string& in) {
      std::uint8_t op = 0;
      std::string payload;
      while (take_frame(in, op, payload)) {
        if (op == kPong) {
          pong = payload;
          return true;
        }
      }
      return false;
    });
    return ok ? pong : std::nullopt;
  }

  // Reads (keeping what arrives in received()) until the connection ends; how it ended.
  End read_to_end(std::chrono::seconds limit = kWait) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      char buf[16384];
      std::size_t n = 0;
      ERR_clear_error();
      const int r = SSL_read_ex(ssl_, buf, sizeof buf, &n);
      if (r == 1) {
        in_.append(buf, n);
        continue;
      }
      const int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ) {
        if (!wait_fd(fd_, POLLIN, deadline)) return End::timeout;
        continue;
      }
      if (e == SSL_ERROR_ZERO_RETURN) return End::close_notify;
      if (e == SSL_ERROR_SYSCALL) return End::bare_eof;  // a reset, or EOF
      const unsigned long err = ERR_peek_last_error();
      reason_ = ERR_reason_error_string(err) != nullptr ? ERR_reason_error_string(err) : "";
      reason_code_ = ERR_GET_REASON(err);
      if (reason_code_ == SSL_R_UNEXPECTED_EOF_WHILE_READING) return End::bare_eof;
      // OpenSSL's reasons for alerts received are SSL_AD_REASON_OFFSET + the description.
      if (reason_code_ >= SSL_AD_REASON_OFFSET && reason_code_ < SSL_AD_REASON_OFFSET + 256) {
        return End::alert;
      }
      return End::error;
    }
  }

  std::string& received() { return in_; }
  int reason_code() const { return reason_code_; }
  const std::string& reason() const { return reason_; }
  int fd() const { return fd_; }
  SSL* ssl() { return ssl_; }
  // KeyUpdate messages the server sent (seen by the message callback).
  int key_updates_received() const { return key_updates_in_.load(); }

 private:
  // After a failed SSL call: waits for what it wants; false when it failed for good.
  bool wait_for(int r, Clock::time_point deadline) {
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ) return wait_fd(fd_, POLLIN, deadline);
    if (e == SSL_ERROR_WANT_WRITE) return wait_fd(fd_, POLLOUT, deadline);
    return false;
  }

  static void on_message(int write_p, int, int content_type, const void* buf, std::size_t len, SSL*,
                         void* arg) {
    auto* self = static_cast<TlsClient*>(arg);
    const auto* p = static_cast<const std::uint8_t*>(buf);
    if (write_p == 0 && content_type == SSL3_RT_HANDSHAKE && len >= 1 &&
        p[0] == SSL3_MT_KEY_UPDATE) {
      self->key_updates_in_.fetch_add(1);
    }
  }

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string in_;
  std::string reason_;
  int reason_code_ = 0;
  std::atomic<int> key_updates_in_{0};
};

// --- the tests ----------------------------------------------------------------------------------

class ServerTls : public ::testing::TestWithParam<bool> {
 protected:
  bool handover() const { return GetParam(); }
};

std::string handover_name(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "Handover" : "OpenSslRecords";
}

TEST_P(ServerTls, TheStartUpLogAndMetricsSayWhichRecordPathIsInUse) {
  ServerProcess server(config_for(handover()));
  ASSERT_NE(server.port(), 0) << server.log();
  const std::string log = server.log();
  EXPECT_NE(
      log.find(std::string("event=tls_record_handover in_use=") + (handover() ? "true" : "false")),
      std::string::npos)
      << log;
  if (handover()) {
    EXPECT_NE(log.find("self-check passed"), std::string::npos) << log;
  }
  EXPECT_NE(server.http_get("/metrics")
                .find(std::string("sotto_tls_record_handover ") + (handover() ? "1" : "0")),
            std::string::npos);
}

TEST_P(ServerTls, ARefusedUpgradeEndsWithCloseNotify) {
  ServerProcess server(config_for(handover()));
  ASSERT_NE(server.port(), 0) << server.log();
  {
    // A valid HTTP request that is not a WebSocket upgrade: Beast answers 400.
    TlsClient c;
    ASSERT_TRUE(c.connect(server.port()));
    ASSERT_TRUE(c.write("GET /v1/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    const End end = c.read_to_end();
    EXPECT_EQ(end, End::close_notify) << name(end) << " " << c.reason();
    EXPECT_EQ(c.received().rfind("HTTP/1.1 400", 0), 0u) << c.received();
  }
  {
    // Not HTTP at all.
    TlsClient c;
    ASSERT_TRUE(c.connect(server.port()));
    ASSERT_TRUE(c.write("HELLO THERE\r\n\r\n"));
    const End end = c.read_to_end();
    EXPECT_EQ(end, End::close_notify) << name(end) << " " << c.reason();
  }
}

TEST_P(ServerTls, TheIdleTimeoutAndTheUpgradeDeadlineEndWithCloseNotify) {
  ServerProcess server(config_for(handover(), /*idle_timeout_seconds=*/5));
  ASSERT_NE(server.port(), 0) << server.log();
  // Upgraded, then silent (the server's pings stay unanswered): closed after the idle timeout.
  TlsClient idle;
  ASSERT_TRUE(idle.connect(server.port()));
  ASSERT_TRUE(idle.upgrade());
  // TLS only, no upgrade request: closed at the upgrade deadline (handshake_timeout).
  TlsClient mute;
  ASSERT_TRUE(mute.connect(server.port()));
  const End idle_end = idle.read_to_end();
  EXPECT_EQ(idle_end, End::close_notify) << name(idle_end) << " " << idle.reason();
  const End mute_end = mute.read_to_end();
  EXPECT_EQ(mute_end, End::close_notify) << name(mute_end) << " " << mute.reason();
}

TEST_P(ServerTls, AProtocolErrorEndsWithCloseNotify) {
  ServerProcess server(config_for(handover()));
  ASSERT_NE(server.port(), 0) << server.log();
  // A text frame: the server sends a close frame (unsupported data) and, as the client never
  // answers it, closes at the close deadline.
  TlsClient text;
  ASSERT_TRUE(text.connect(server.port()));
  ASSERT_TRUE(text.upgrade());
  ASSERT_TRUE(text.write(client_frame(kText, "hello")));
  // An unmasked frame (RFC 6455 section 5.1: the server must close the connection).
  TlsClient unmasked;
  ASSERT_TRUE(unmasked.connect(server.port()));
  ASSERT_TRUE(unmasked.upgrade());
  ASSERT_TRUE(unmasked.write(client_frame(kPing, "x", /*masked=*/false)));
  const End text_end = text.read_to_end();
  EXPECT_EQ(text_end, End::close_notify) << name(text_end) << " " << text.reason();
  std::uint8_t op = 0;
  std::string payload;
  ASSERT_TRUE(take_frame(text.received(), op, payload));
  EXPECT_EQ(op, 0x8);  // the close frame came first
  const End unmasked_end = unmasked.read_to_end();
  EXPECT_EQ(unmasked_end, End::close_notify) << name(unmasked_end) << " " << unmasked.reason();
}

TEST_P(ServerTls, TheServersShutdownEndsEveryConnectionWithCloseNotify) {
  ServerProcess server(config_for(handover()));
  ASSERT_NE(server.port(), 0) << server.log();
  TlsClient open;  // never answers the server's close frame
  ASSERT_TRUE(open.connect(server.port()));
  ASSERT_TRUE(open.upgrade());
  ASSERT_TRUE(open.write(client_frame(kPing, "up")));
  ASSERT_EQ(open.read_pong(), std::optional<std::string>("up"));
  // (A connection whose TLS handshake the client has finished but the server may not have yet
  // cannot be asked for a close_notify: nothing is sent before the server's handshake is done,
  // and the client cannot tell when that is without a write. One past its handshake and not
  // upgraded is the upgrade deadline's case,
  // TheIdleTimeoutAndTheUpgradeDeadlineEndWithCloseNotify.)
  server.terminate();
  const End open_end = open.read_to_end();
  EXPECT_EQ(open_end, End::close_notify) << name(open_end) << " " << open.reason();
  EXPECT_EQ(server.stop(), 0);
}

// 1-byte records (a ping written one byte per record) and one record of exactly 2^14 bytes (126
// pings), every ping answered.
TEST_P(ServerTls, OneByteRecordsAndAFullSizeRecordAreAcceptedAndAnswered) {
  ServerProcess server(config_for(handover()));
  ASSERT_NE(server.port(), 0) << server.log();
  TlsClient c;
  ASSERT_TRUE(c.connect(server.port()));
  ASSERT_TRUE(c.upgrade());

  const std::string ping = client_frame(kPing, "one byte per record");
  for (const char byte : ping) ASSERT_TRUE(c.write(std::string_view(&byte, 1)));
  EXPECT_EQ(c.read_pong(), std::optional<std::string>("one byte per record"));

  std::string record;
  std::vector<std::string> payloads;
  while (record.size() + 131 <= 16384) {  // 125 pings of 125 bytes (131 bytes each)...
    std::string p = "full-size record, ping " + std::to_string(payloads.size()) + " ";
    p.resize(125, '.');
    record += client_frame(kPing, p);
    payloads.push_back(p);
  }
  const std::string last(16384 - record.size() - 6, '!');  // ...and one that fills it exactly
  record += client_frame(kPing, last);
  payloads.push_back(last);
  ASSERT_EQ(record.size(), 16384u);
  ASSERT_TRUE(c.write(record));
  for (const std::string& p : payloads) ASSERT_EQ(c.read_pong(), std::optional<std::string>(p));

  // The server still answers after both.
  ASSERT_TRUE(c.write(client_frame(kPing, "after")));
  EXPECT_EQ(c.read_pong(), std::optional<std::string>("after"));
}

// OpenSSL's own KeyUpdate, requested and not, in each suite: the server reads under the new key
// and, when asked, updates its own before its next record (the client counts the KeyUpdates it
// receives).
TEST_P(ServerTls, KeyUpdatesFromOpenSslInEverySuite) {
  ServerProcess server(config_for(handover()));
  ASSERT_NE(server.port(), 0) << server.log();
  for (const char* suite :
       {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}) {
    SCOPED_TRACE(suite);
    TlsClient c;
    ASSERT_TRUE(c.connect(server.port(), suite));
    ASSERT_TRUE(c.upgrade());
    int requested = 0;
    for (int i = 0; i < 6; ++i) {
      const bool request = i % 2 == 1;
      requested += request ? 1 : 0;
      ASSERT_EQ(SSL_key_update(c.ssl(),
                               request ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED),
                1);
      const std::string payload = "after key update " + std::to_string(i);
      ASSERT_TRUE(c.write(client_frame(kPing, payload)));
      ASSERT_EQ(c.read_pong(), std::optional<std::string>(payload));
      EXPECT_EQ(c.key_updates_received(), requested);
    }
  }
}

// --- a proxy that flips one byte
// ------------------------------------------------------------------

// Forwards one connection between a client and the server; once armed, flips one byte of the
// next application-data record the client sends (in its ciphertext, so its tag no longer
// matches).
class TamperingProxy {
 public:
  explicit TamperingProxy(std::uint16_t server_port) : server_port_(server_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_, 1) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("proxy listen");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~TamperingProxy() {
    stop_.store(true);
    thread_.join();
    ::close(listener_);
  }
  std::uint16_t port() const { return port_; }
  void arm() { armed_.store(true); }
  bool tampered() const { return tampered_.load(); }

 private:
  void run() {
    if (!wait_fd(listener_, POLLIN, Clock::now() + kWait)) return;
    const int client = ::accept(listener_, nullptr, nullptr);
    const int server = connect_loopback(server_port_);
    if (client < 0 || server < 0) return;
    std::string from_client;  // bytes of an incomplete record from the client
    const auto deadline = Clock::now() + 2 * kWait;
    while (!stop_.load() && Clock::now() < deadline) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      char buf[65536];
      if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        const ssize_t n = ::recv(client, buf, sizeof buf, 0);
        if (n <= 0) {
          ::shutdown(server, SHUT_WR);
          p[0].fd = -1;
          break;
        }
        from_client.append(buf, static_cast<std::size_t>(n));
        // Forwards whole records only, so that one can be changed before it leaves.
        std::size_t whole = 0;
        while (from_client.size() - whole >= 5) {
          const std::size_t len =
              (std::size_t{static_cast<std::uint8_t>(from_client[whole + 3])} << 8) |
              static_cast<std::uint8_t>(from_client[whole + 4]);
          if (from_client.size() - whole < 5 + len) break;
          if (from_client[whole] == 0x17 && len > 0 && armed_.load() && !tampered_.load()) {
            from_client[whole + 5 + len / 2] ^= 0x01;
            tampered_.store(true);
          }
          whole += 5 + len;
        }
        if (whole > 0) {
          if (::send(server, from_client.data(), whole, MSG_NOSIGNAL) !=
              static_cast<ssize_t>(whole)) {
            break;
          }
          from_client.erase(0, whole);
        }
      }
      if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        const ssize_t n = ::recv(server, buf, sizeof buf, 0);
        if (n <= 0) {
          ::shutdown(client, SHUT_WR);
          // Keep relaying the client's side until it closes too.
          while (!stop_.load() && Clock::now() < deadline) {
            if (!wait_fd(client, POLLIN, Clock::now() + 100ms)) continue;
            if (::recv(client, buf, sizeof buf, 0) <= 0) break;
          }
          break;
        }
        if (::send(client, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) break;
      }
    }
    ::close(client);
    ::close(server);
  }

  std::uint16_t server_port_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> armed_{false};
  std::atomic<bool> tampered_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_P(ServerTls, ARecordTamperedWithOnTheWireIsRefusedWithBadRecordMacAndNeverDelivered) {
  ServerProcess server(config_for(handover()));
  ASSERT_NE(server.port(), 0) << server.log();
  TamperingProxy proxy(server.port());
  TlsClient c;
  ASSERT_TRUE(c.connect(proxy.port()));
  ASSERT_TRUE(c.upgrade());
  ASSERT_TRUE(c.write(client_frame(kPing, "before")));
  ASSERT_EQ(c.read_pong(), std::optional<std::string>("before"));

  proxy.arm();
  ASSERT_TRUE(c.write(client_frame(kPing, "tampered")));
  const End end = c.read_to_end();
  EXPECT_TRUE(proxy.tampered());
  EXPECT_EQ(end, End::alert) << name(end) << " " << c.reason();
  EXPECT_EQ(c.reason_code(), SSL_R_SSLV3_ALERT_BAD_RECORD_MAC) << c.reason();
  // The corrupt ping was never delivered: no pong for it.
  std::uint8_t op = 0;
  std::string payload;
  while (take_frame(c.received(), op, payload)) EXPECT_NE(op, kPong) << payload;
}

INSTANTIATE_TEST_SUITE_P(RecordPaths, ServerTls, ::testing::Bool(), handover_name);

// --- openssl s_client ---------------------------------------------------------------------------

// `openssl s_client` with its stdin and its output (stdout and stderr together) on pipes.
class SClient {
 public:
  SClient(std::uint16_t port, const char* suite) {
    int in[2];
    int out[2];
    if (pipe(in) != 0 || pipe(out) != 0) throw std::runtime_error("pipe");
    const std::string connect = "127.0.0.1:" + std::to_string(port);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      dup2(out[1], STDERR_FILENO);
      close(in[0]);
      close(in[1]);
      close(out[0]);
      close(out[1]);
      // -msg: every TLS message in and out (KeyUpdates among them). No -quiet or -ign_eof: they
      // turn the K/k commands off.
      execlp("openssl", "openssl", "s_client", "-connect", connect.c_str(), "-tls1_3",
             "-ciphersuites", suite, "-msg", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];
    reader_ = std::thread([this, fd = out[0]] {
      char buf[4096];
      for (;;) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        std::lock_guard lock(mu_);
        if (n <= 0) {
          eof_ = true;
          cv_.notify_all();
          break;
        }
        out_.append(buf, static_cast<std::size_t>(n));
        cv_.notify_all();
      }
      close(fd);
    });
  }
  ~SClient() {
    close_stdin();
    if (pid_ > 0) {
      // It quits at the end of its input; a kill only if it does not within the wait.
      if (!wait_exit()) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
    }
    if (reader_.joinable()) reader_.join();
  }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = write(stdin_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Waits until the output holds `needle` at least `count` times.
  bool wait_for(std::string_view needle, int count = 1) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, Clock::now() + kWait, [&] {
      return occurrences(needle) >= count || eof_;
    }) && occurrences(needle) >= count;
  }

  int count(std::string_view needle) {
    std::lock_guard lock(mu_);
    return occurrences(needle);
  }

  std::string output() {
    std::lock_guard lock(mu_);
    return out_;
  }

  void close_stdin() {
    if (stdin_ >= 0) ::close(stdin_);
    stdin_ = -1;
  }

  // Waits for the process to exit; true when it did.
  bool wait_exit() {
    const auto deadline = Clock::now() + kWait;
    while (Clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

 private:
  int occurrences(std::string_view needle) const {  // REQUIRES: mu_ held
    int n = 0;
    for (auto at = out_.find(needle); at != std::string::npos; at = out_.find(needle, at + 1)) ++n;
    return n;
  }

  pid_t pid_ = -1;
  int stdin_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string out_;
  bool eof_ = false;
};

class SClientKeyUpdate : public ::testing::TestWithParam<std::tuple<bool, const char*>> {};

// s_client's KeyUpdate commands: `k` updates its key, `K` also asks the server to update its own
// (RFC 8446 section 4.6.3). After each, a masked ping goes through and its pong comes back; every
// `K` brings exactly one KeyUpdate from the server (before the pong), every `k` none.
TEST_P(SClientKeyUpdate, KeyUpdatesWithAndWithoutRequestKeepTheConnectionWorkingBothWays) {
  const auto [handover, suite] = GetParam();
  ServerProcess server(config_for(handover));
  ASSERT_NE(server.port(), 0) << server.log();
  SClient s(server.port(), suite);
  ASSERT_TRUE(s.wait_for(std::string("Cipher is ") + suite)) << s.output();
  ASSERT_TRUE(s.send(kUpgrade));
  ASSERT_TRUE(s.wait_for("HTTP/1.1 101")) << s.output();

  constexpr std::string_view kReceivedKeyUpdate = "<<< TLS 1.3, Handshake [length 0005], KeyUpdate";
  constexpr std::string_view kSentKeyUpdate = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate";
  int requested = 0;
  const std::vector<char> commands = {'k', 'K', 'k', 'K'};
  for (std::size_t i = 0; i < commands.size(); ++i) {
    SCOPED_TRACE(std::string("command ") + commands[i]);
    ASSERT_TRUE(s.send(std::string(1, commands[i]) + "\n"));
    // The command is read alone, and the update goes out, before the ping is written.
    ASSERT_TRUE(s.wait_for("KEYUPDATE", static_cast<int>(i + 1))) << s.output();
    ASSERT_TRUE(s.wait_for(kSentKeyUpdate, static_cast<int>(i + 1))) << s.output();
    if (commands[i] == 'K') ++requested;
    const std::string payload = "pong after key update " + std::to_string(i);
    ASSERT_TRUE(s.send(client_frame(kPing, payload)));
    ASSERT_TRUE(s.wait_for(payload)) << s.output();
    EXPECT_EQ(s.count(kReceivedKeyUpdate), requested) << s.output();
  }
  EXPECT_EQ(s.count("KEYUPDATE failure"), 0);
  s.close_stdin();  // s_client says close_notify and quits
  EXPECT_TRUE(s.wait_exit());
}

INSTANTIATE_TEST_SUITE_P(RecordPathsAndSuites, SClientKeyUpdate,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values("TLS_AES_128_GCM_SHA256",
                                                              "TLS_AES_256_GCM_SHA384",
                                                              "TLS_CHACHA20_POLY1305_SHA256")),
                         [](const ::testing::TestParamInfo<std::tuple<bool, const char*>>& p) {
                           return std::string(std::get<0>(p.param) ? "Handover_"
                                                                   : "OpenSslRecords_") +
                                  std::get<1>(p.param);
                         });

}  // namespace
}  // namespace sotto
