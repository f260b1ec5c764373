// Connection admission on a real sotto-server process (issue 16, cases 3, 4 and 8): connections
// that never log in cannot hold the server's slots (a login deadline that pings do not extend, a
// ceiling on pre-login connections, caps per source address), a connection that has not logged in
// cannot make the server hold a large message, the largest legitimate pre-login request still
// passes, and a low RLIMIT_NOFILE clamps max_connections so that connections over it are refused
// at once instead of waiting in the backlog while accept() fails.
//
// Several source addresses: the whole of 127.0.0.0/8 is the loopback interface on Linux, so a
// client can bind 127.0.0.2, 127.0.0.3, ... and the server sees distinct addresses.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "net/ws_client.h"
#include "server/config.h"
#include "server/limits.h"
#include "util/server_harness.h"

#ifndef SOTTO_SERVER_BIN
#error "SOTTO_SERVER_BIN must name the sotto-server binary"
#endif

namespace sotto {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Party;
using sotto::testing::str;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string read_text(const std::filesystem::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return {};
  std::string text;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

// Waits (polling) until `done` holds or `limit` passes; whether it held.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// sotto-server with a config file (`config` is its text; the data directory, listen and http
// addresses are flags) and optionally a file-descriptor limit set in the child before exec. Its log
// (stderr) is ROOT/server.log. SIGTERM on destruction.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& config, std::optional<rlim_t> nofile = std::nullopt) {
    char tmpl[] = "/tmp/sotto-admission-XXXXXX";
    root_ = mkdtemp(tmpl);
    const auto config_path = root_ / "server.toml";
    std::FILE* f = std::fopen(config_path.c_str(), "wb");
    if (f == nullptr) throw std::runtime_error("cannot write the config");
    std::fwrite(config.data(), 1, config.size(), f);
    std::fclose(f);
    const std::vector<std::string> args = {
        "--data",   (root_ / "data").string(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--config", config_path.string()};
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    const int err = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      close(out[0]);
      close(out[1]);
      if (nofile) {
        const rlimit limit{*nofile, *nofile};
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(126);
      }
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(SOTTO_SERVER_BIN));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(SOTTO_SERVER_BIN, argv.data());
      _exit(127);
    }
    close(err);
    close(out[1]);
    FILE* in = fdopen(out[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, in) != nullptr) {
      const std::string l(line);
      if (l.rfind("fingerprint: ", 0) == 0)
        fingerprint_ = l.substr(13, l.find_last_not_of("\r\n") - 12);
      if (l.rfind("listening on ", 0) == 0)
        port_ = static_cast<std::uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
      if (l.rfind("http on ", 0) == 0) break;
    }
    reader_ = std::thread([in] {
      char buf[512];
      while (std::fgets(buf, sizeof buf, in) != nullptr) {
      }
      std::fclose(in);
    });
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
    std::filesystem::remove_all(root_);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  std::uint16_t port() const { return port_; }
  const std::string& fingerprint() const { return fingerprint_; }
  std::filesystem::path log_path() const { return root_ / "server.log"; }
  std::string log() const { return read_text(log_path()); }

  // The server's resident memory (VmRSS), in KiB; -1 when it cannot be read.
  long rss_kib() const {
    const std::string status = read_text("/proc/" + std::to_string(pid_) + "/status");
    const auto at = status.find("VmRSS:");
    return at == std::string::npos ? -1 : std::stol(status.substr(at + 6));
  }

 private:
  std::filesystem::path root_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string fingerprint_;
  std::thread reader_;
};

// One WebSocket connection through the project's client (which answers pings by itself), from
// `source` (a local address to bind; empty: any). Records the frames received and the close
// reason.
class Peer {
 public:
  Peer(const ServerProcess& server, const std::string& source,
       std::shared_ptr<net::IoPool> pool = nullptr) {
    net::ClientOptions o;
    o.port = server.port();
    o.fingerprint = server.fingerprint();
    o.max_frame_bytes = 4 << 20;
    o.source_address = source;
    client_ = std::make_unique<net::WsClient>(
        o,
        [this](ByteView frame) {
          svc::Frame f;
          std::lock_guard lock(mu_);
          if (f.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) frames_.push_back(f);
          cv_.notify_all();
        },
        [this](const std::string& reason) {
          std::lock_guard lock(mu_);
          closed_ = reason;
          closed_at_ = Clock::now();
          cv_.notify_all();
        },
        std::move(pool));
    started_ = Clock::now();
    connected_ = client_->connect().has_value();
  }

  bool connected() const { return connected_; }
  // How long it was from the connection attempt to its close (more than from the WebSocket open).
  Clock::duration lifetime() {
    std::lock_guard lock(mu_);
    return closed_at_ - started_;
  }

  std::optional<svc::Response> call(svc::Request r) {
    r.set_id(++next_id_);
    svc::Frame f;
    *f.mutable_request() = std::move(r);
    Bytes b(f.ByteSizeLong());
    f.SerializeWithCachedSizesToArray(b.data());
    return call_raw(std::move(b), next_id_);
  }

  // Sends `bytes` as one message and waits for the response with id `id` (or the close).
  std::optional<svc::Response> call_raw(Bytes bytes, std::uint64_t id) {
    if (!client_->send(std::move(bytes))) return std::nullopt;
    std::unique_lock lock(mu_);
    std::optional<svc::Response> out;
    cv_.wait_for(lock, 20s, [&] {
      for (auto it = frames_.begin(); it != frames_.end(); ++it) {
        if (it->has_response() && it->response().id() == id) {
          out = it->response();
          frames_.erase(it);
          return true;
        }
      }
      return closed_.has_value();
    });
    return out;
  }

  // The close reason, once the connection closed (nullopt while it is open).
  std::optional<std::string> closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }
  std::optional<std::string> wait_closed(std::chrono::seconds limit) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return closed_.has_value(); });
    return closed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<svc::Frame> frames_;
  std::optional<std::string> closed_;
  Clock::time_point started_{};
  Clock::time_point closed_at_{};
  std::uint64_t next_id_ = 0;
  bool connected_ = false;
  std::unique_ptr<net::WsClient> client_;  // last: destroyed first (its callbacks use the above)
};

struct Account {
  Party party;
  crypto::Ed25519KeyPair auth;
  Account(const std::string& name, std::uint64_t seed)
      : party(name, 1, seed), auth(crypto::Ed25519KeyPair::generate(party.rng)) {}
};

// Registers `a` on `c` and logs it in there (challenge, then the signed nonce).
void join(Peer& c, Account& a) {
  const auto registered = c.call(sotto::testing::register_request(a.party, a.auth));
  ASSERT_TRUE(registered.has_value());
  ASSERT_EQ(registered->status().code(), svc::OK) << registered->status().message();
  svc::Request ch;
  ch.mutable_challenge();
  const auto nonce = c.call(ch);
  ASSERT_TRUE(nonce.has_value());
  const auto login =
      c.call(sotto::testing::authenticate(a.party.name, 1, a.auth, nonce->challenge().nonce()));
  ASSERT_TRUE(login.has_value());
  ASSERT_EQ(login->status().code(), svc::OK) << login->status().message();
}

svc::Request key_count() {
  svc::Request r;
  r.mutable_key_count();
  return r;
}

// A TCP connection from `source` to the server's port, nothing sent; -1 when it fails.
int tcp_connect(std::uint16_t port, const char* source = "127.0.0.1") {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, source, &local.sin_addr);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Whether the server ended the connection on `fd`: readable with end of file or a reset (what a
// client sends nothing on can only receive from a server that closes it).
bool ended(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  char c = 0;
  const ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// A WebSocket over TLS spoken byte by byte with OpenSSL (no pin check: the test's own server), for
// what the project's client never sends: a frame header announcing more than is then sent.
class RawWebSocket {
 public:
  explicit RawWebSocket(std::uint16_t port) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
    fd_ = tcp_connect(port);
    if (fd_ < 0) return;
    timeval tv{20, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (SSL_connect(ssl_) != 1) return;
    const std::string upgrade =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    if (!write_all(upgrade.data(), upgrade.size())) return;
    std::string response;
    char c = 0;
    while (response.size() < 4096 && response.find("\r\n\r\n") == std::string::npos) {
      if (SSL_read(ssl_, &c, 1) != 1) return;
      response.push_back(c);
    }
    open_ = response.rfind("HTTP/1.1 101", 0) == 0;
  }
  ~RawWebSocket() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) close(fd_);
    SSL_CTX_free(ctx_);
  }
  RawWebSocket(const RawWebSocket&) = delete;
  RawWebSocket& operator=(const RawWebSocket&) = delete;

  bool open() const { return open_; }
  int fd() const { return fd_; }

  // The header of one masked binary frame of `length` bytes, then `sent` bytes of its payload.
  // False once a write fails (the server closed the connection).
  bool send_partial_frame(std::uint64_t length, std::size_t sent) {
    std::vector<std::uint8_t> header = {0x82, 0x80 | 127};
    for (int shift = 56; shift >= 0; shift -= 8)
      header.push_back(static_cast<std::uint8_t>(length >> shift));
    header.insert(header.end(), {0x11, 0x22, 0x33, 0x44});  // the mask
    if (!write_all(header.data(), header.size())) return false;
    const std::vector<std::uint8_t> chunk(16 * 1024, 0x5a);
    while (sent > 0) {
      const std::size_t n = std::min(sent, chunk.size());
      if (!write_all(chunk.data(), n)) return false;
      sent -= n;
    }
    return true;
  }

  // Whether the server closed the connection, within `limit`: a close frame, end of file or a
  // reset. Returns the close code seen (0: closed without a close frame), or nullopt when it did
  // not close in time.
  std::optional<int> wait_closed(std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    std::vector<std::uint8_t> in;
    for (;;) {
      if (SSL_pending(ssl_) == 0) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return std::nullopt;
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      }
      std::uint8_t buf[4096];
      const int n = SSL_read(ssl_, buf, sizeof buf);
      if (n <= 0) {
        const int e = SSL_get_error(ssl_, n);
        if (e == SSL_ERROR_WANT_READ) continue;
        return 0;
      }
      in.insert(in.end(), buf, buf + n);
      // A close frame from the server (unmasked): 0x88, length, then the code.
      if (in.size() >= 4 && in[0] == 0x88) return (in[2] << 8) | in[3];
      if (in.size() >= 2 && in[0] != 0x88) in.clear();  // anything else (a ping): skipped
    }
  }

 private:
  bool write_all(const void* data, std::size_t size) {
    return size == 0 || SSL_write(ssl_, data, static_cast<int>(size)) == static_cast<int>(size);
  }

  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool open_ = false;
};

class AdmissionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ::signal(SIGPIPE, SIG_IGN); }
};

// Case 3: twenty connections that never log in, answer every ping and come from one address held
// every slot of a server configured for twenty, for as long as they liked. Now they displace one
// another under the pre-login ceiling (a quarter of max_connections by default), a real client
// still registers and logs in, and each of them is closed at the login deadline (15 s by
// default) although it answers pings. Only keys main already had are set here: the same
// configuration on main's server leaves all twenty open and refuses the real client.
TEST_F(AdmissionTest, ConnectionsThatNeverLogInCannotHoldTheServer) {
  ServerProcess server("max_connections = 20\nidle_timeout_seconds = 6\n");
  ASSERT_NE(server.port(), 0) << server.log();
  auto pool = std::make_shared<net::IoPool>(1);
  std::vector<std::unique_ptr<Peer>> squatters;
  for (int i = 0; i < 20; ++i) {
    squatters.push_back(std::make_unique<Peer>(server, "127.0.0.2", pool));
  }
  const auto start = Clock::now();

  Peer user(server, "127.0.0.1");
  ASSERT_TRUE(user.connected());
  Account alice("alice", 1);
  join(user, alice);
  auto count = user.call(key_count());
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(count->status().code(), svc::OK);

  // Every squatter is closed, whether displaced by a newer one or at the deadline; the last ones
  // standing by the deadline, although the client answered every ping (idle timeout 6 s).
  int displaced = 0, deadline = 0;
  for (auto& s : squatters) {
    const auto reason =
        s->wait_closed(std::chrono::seconds(45) -
                       std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start));
    ASSERT_TRUE(reason.has_value()) << "a connection that never logged in is still open";
    if (reason->find("server busy") != std::string::npos) ++displaced;
    if (reason->find("login deadline") != std::string::npos) {
      ++deadline;
      // Not early either: the deadline counts from the WebSocket open, 15 s by default.
      EXPECT_GE(s->lifetime(), 15s - 100ms);
    }
  }
  EXPECT_GE(deadline, 1);
  EXPECT_GE(displaced, 1);
  EXPECT_EQ(displaced + deadline, 20);

  // The logged-in user is untouched by the deadline.
  EXPECT_FALSE(user.closed().has_value()) << *user.closed();
  count = user.call(key_count());
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(count->status().code(), svc::OK);
}

// Case 3, per address: caps on one address's connections (all of them, and those not logged in)
// leave other addresses their way in.
TEST_F(AdmissionTest, CapsArePerSourceAddress) {
  ServerProcess server(
      "max_connections = 50\nmax_connections_per_address = 4\nmax_prelogin_per_address = 3\n"
      "login_deadline_seconds = 60\n");
  ASSERT_NE(server.port(), 0) << server.log();
  auto pool = std::make_shared<net::IoPool>(1);

  // Three connections that do not log in from 127.0.0.2; a fourth is refused at once.
  std::vector<std::unique_ptr<Peer>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<Peer>(server, "127.0.0.2", pool));
    EXPECT_TRUE(held.back()->connected()) << i;
  }
  Peer fourth(server, "127.0.0.2", pool);
  EXPECT_FALSE(fourth.connected());
  // Another address is not affected.
  Peer other(server, "127.0.0.3", pool);
  EXPECT_TRUE(other.connected());

  // Logged-in connections count under max_connections_per_address, not the pre-login cap: four
  // accounts log in from 127.0.0.4, and a fifth connection from there is refused.
  std::vector<std::unique_ptr<Peer>> users;
  std::vector<std::unique_ptr<Account>> accounts;
  for (int i = 0; i < 4; ++i) {
    accounts.push_back(std::make_unique<Account>("user" + std::to_string(i), 10 + i));
    users.push_back(std::make_unique<Peer>(server, "127.0.0.4", pool));
    ASSERT_TRUE(users.back()->connected()) << i;
    join(*users.back(), *accounts.back());
  }
  Peer fifth(server, "127.0.0.4", pool);
  EXPECT_FALSE(fifth.connected());
  Peer elsewhere(server, "127.0.0.5", pool);
  EXPECT_TRUE(elsewhere.connected());

  // A slot freed is a slot to take again.
  users.pop_back();
  EXPECT_TRUE(wait_until(
      [&] {
        Peer again(server, "127.0.0.4", pool);
        return again.connected();
      },
      20s));
  for (auto& u : users) {
    const auto c = u->call(key_count());
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->status().code(), svc::OK);
  }
}

// Case 4 (before login): forty connections that each announced a 2 MiB message and sent all of it
// but a byte made main's server hold 80 MB. Before login the limit is 32 KiB: the frame header is
// refused as soon as it arrives (close code 1009) and the memory is never taken.
TEST_F(AdmissionTest, APreLoginConnectionCannotMakeTheServerHoldALargeMessage) {
  // A sanitized server would keep up to 256 MB of freed memory in quarantine, and the RSS bound
  // below would measure that (the option is ignored by a server built without ASan).
  const std::string asan =
      std::getenv("ASAN_OPTIONS") != nullptr ? std::getenv("ASAN_OPTIONS") : "";
  if (asan.find("quarantine_size_mb") == std::string::npos) {
    const std::string options = asan + (asan.empty() ? "" : ":") +
                                "quarantine_size_mb=16:thread_local_quarantine_size_kb=256";
    setenv("ASAN_OPTIONS", options.c_str(), 1);  // before the fork: the child only execs
  }
  ServerProcess server("");  // every default (max_frame_bytes 2 MiB)
  ASSERT_NE(server.port(), 0) << server.log();
  {
    RawWebSocket warm(server.port());  // the server's first connection allocates a little
    ASSERT_TRUE(warm.open());
  }
  std::this_thread::sleep_for(200ms);
  const long before = server.rss_kib();
  ASSERT_GT(before, 0);

  constexpr std::uint64_t kAnnounced = 2 * 1024 * 1024 - 64;
  std::vector<std::unique_ptr<RawWebSocket>> peers;
  for (int i = 0; i < 40; ++i) {
    peers.push_back(std::make_unique<RawWebSocket>(server.port()));
    ASSERT_TRUE(peers.back()->open()) << i;
    // A write may fail part way: the server closed the connection, which is the point.
    (void)peers.back()->send_partial_frame(kAnnounced, kAnnounced - 1);
  }
  const long after = server.rss_kib();
  ASSERT_GT(after, 0);
  std::printf("server RSS: %ld KiB before, %ld KiB with 40 announced 2 MiB messages\n", before,
              after);
  EXPECT_LT(after - before, 40 * 1024)
      << "the server's RSS grew by " << (after - before) / 1024 << " MiB";
  for (auto& p : peers) {
    const auto code = p->wait_closed(15s);
    ASSERT_TRUE(code.has_value()) << "a pre-login connection holding a partial message stays open";
    if (*code != 0) {
      EXPECT_EQ(*code, 1009);  // "message too big"
    }
  }
}

// Before login the idle timeout is short: a connection that opened its WebSocket and then went
// silent (it does not even answer pings) is dropped after prelogin_idle_timeout_seconds, long
// before the login deadline or the logged-in idle timeout would.
TEST_F(AdmissionTest, ASilentConnectionThatHasNotLoggedInIsDroppedAtTheShortIdleTimeout) {
  ServerProcess server(
      "login_deadline_seconds = 120\nprelogin_idle_timeout_seconds = 2\n"
      "idle_timeout_seconds = 300\n");
  ASSERT_NE(server.port(), 0) << server.log();
  const auto start = Clock::now();
  RawWebSocket silent(server.port());
  ASSERT_TRUE(silent.open());
  // Nothing is read until the server gives up: its pings go unanswered.
  std::this_thread::sleep_for(1500ms);
  const auto code = silent.wait_closed(60s);
  ASSERT_TRUE(code.has_value()) << "a silent pre-login connection is still open";
  EXPECT_GE(Clock::now() - start, 2s);
  EXPECT_LT(Clock::now() - start, 100s);  // not the login deadline (120 s)
}

// The largest pre-login request a client may send is a registration with kMaxPreKeysPerUpload
// one-time prekeys and every field at its largest; it fits the pre-login limit with room to spare
// and is accepted. Once logged in, the connection takes messages up to max_frame_bytes again: a
// 48 KiB frame closes a connection that has not logged in, and only gets an answer from one that
// has.
TEST_F(AdmissionTest, TheLargestRegistrationPassesAndLoginRaisesTheFrameLimit) {
  ServerProcess server("");
  ASSERT_NE(server.port(), 0) << server.log();
  Account big("a" + std::string(server::kMaxUsernameLength - 1, 'b'), 7);
  auto r = sotto::testing::register_request(big.party, big.auth);
  auto* reg = r.mutable_register_();
  reg->set_invite_code(std::string(64, 'x'));  // ignored on an open server
  reg->set_recovery_key(std::string(server::kRecoveryKeySize, 'r'));
  auto* device = reg->mutable_device();
  device->set_registration_id(0x7FFFFFFF);
  device->set_name(std::string(server::kMaxDeviceNameBytes, 'n'));
  auto* keys = device->mutable_keys();
  keys->clear_pre_keys();
  crypto::DeterministicRng rng(5);
  for (std::uint32_t i = 0; i < server::kMaxPreKeysPerUpload; ++i) {
    auto* k = keys->add_pre_keys();
    k->set_id(0xFFFFFF - i);  // the largest ids take the most bytes
    std::string key(33, '\0');
    rng.fill(std::span(reinterpret_cast<std::uint8_t*>(key.data()) + 1, 32));
    key[0] = 0x05;
    k->set_public_key(key);
  }
  r.set_id(0xFFFFFFFFFFFFFFFFull);
  svc::Frame frame;
  *frame.mutable_request() = r;
  const std::size_t size = frame.ByteSizeLong();
  std::printf("largest registration: %zu bytes (pre-login limit %zu)\n", size,
              server::ServerConfig{}.prelogin_max_frame_bytes);
  EXPECT_GT(size, 9000u);
  EXPECT_LT(size, server::ServerConfig{}.prelogin_max_frame_bytes * 3 / 4);

  Peer c(server, "127.0.0.1");
  ASSERT_TRUE(c.connected());
  Bytes bytes(size);
  frame.SerializeWithCachedSizesToArray(bytes.data());
  const auto registered = c.call_raw(std::move(bytes), r.id());
  ASSERT_TRUE(registered.has_value()) << c.closed().value_or("");
  EXPECT_EQ(registered->status().code(), svc::OK) << registered->status().message();

  // 48 KiB before login: the connection is closed ("message too big").
  Peer before(server, "127.0.0.1");
  ASSERT_TRUE(before.connected());
  Bytes junk(48 * 1024, 0xff);
  EXPECT_FALSE(before.call_raw(junk, 1).has_value());
  EXPECT_TRUE(before.wait_closed(10s).has_value());

  // After login the same bytes are only a malformed frame, answered as such.
  svc::Request ch;
  ch.mutable_challenge();
  const auto nonce = c.call(ch);
  ASSERT_TRUE(nonce.has_value());
  const auto login =
      c.call(sotto::testing::authenticate(big.party.name, 1, big.auth, nonce->challenge().nonce()));
  ASSERT_TRUE(login.has_value());
  ASSERT_EQ(login->status().code(), svc::OK) << login->status().message();
  // The server answers a frame it cannot parse with id 0.
  const auto answer = c.call_raw(junk, 0);
  ASSERT_TRUE(answer.has_value()) << c.closed().value_or("");
  EXPECT_EQ(answer->status().code(), svc::BAD_REQUEST);
}

// Case 3, descriptors: main kept whatever RLIMIT_NOFILE it inherited, below its default
// max_connections of 60,000; past the limit accept() failed (EMFILE) and clients waited in the
// backlog. With a hard limit of 200 the server clamps max_connections to 200 minus its reserve
// (128), says so naming both numbers, and refuses connections over the clamp at once.
TEST_F(AdmissionTest, ALowDescriptorLimitClampsMaxConnectionsAndRefusesTheRestAtOnce) {
  // Ceilings on pre-login connections out of the way: here every connection is pre-login.
  ServerProcess server("max_prelogin_connections = 100000\nmax_prelogin_per_address = 100000\n",
                       rlim_t{200});
  ASSERT_NE(server.port(), 0) << server.log();
  const std::string log = server.log();
  EXPECT_NE(log.find("max_connections=60000 clamped_to=72 rlimit_nofile=200"), std::string::npos)
      << log;

  // 240 TCP connections that send nothing: the server holds 72 (waiting for a TLS handshake, for
  // up to 10 s) and ends the other 168 at once, more than its descriptor limit in all.
  std::vector<int> fds;
  for (int i = 0; i < 240; ++i) {
    const int fd = tcp_connect(server.port());
    ASSERT_GE(fd, 0) << i;
    fds.push_back(fd);
  }
  std::vector<bool> closed(fds.size(), false);
  const auto count_closed = [&] {
    int n = 0;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (!closed[i]) closed[i] = ended(fds[i]);
      n += closed[i];
    }
    return n;
  };
  EXPECT_TRUE(wait_until([&] { return count_closed() >= 168; }, 8s)) << count_closed();
  EXPECT_EQ(count_closed(), 168);

  // Once they go, the server serves again.
  for (int fd : fds) close(fd);
  EXPECT_TRUE(wait_until([&] { return Peer(server, "127.0.0.1").connected(); }, 20s));
}

}  // namespace
}  // namespace sotto
