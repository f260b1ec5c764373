// A real sotto-server process for tests, and a client that speaks its protocol frame by frame
// over the real TLS WebSocket (net::WsClient): what the process tests in tests/e2e share.
// ServerProcess starts the binary named by SOTTO_SERVER_BIN on free ports with a temporary data
// directory and a config text, reads its fingerprint and ports from its output, and can read its
// /metrics, its SQLite file and its log. RawClient sends one request at a time and collects
// responses and pushes.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "net/ws_client.h"
#include "service.pb.h"
#include "util/server_harness.h"

#ifndef SOTTO_SERVER_BIN
#error "SOTTO_SERVER_BIN must name the sotto-server binary"
#endif

namespace sotto::testing {

// What a finished run of the sotto-server binary printed.
struct CommandResult {
  int status = -1;  // exit status; -1 when it did not exit normally
  std::string out;
  std::string err;
};

inline std::string read_text(const std::filesystem::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return {};
  std::string text;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  std::fclose(f);
  return text;
}

// sotto-server in a temporary directory (its data directory is ROOT/data, its log ROOT/server.log)
// on free ports; SIGTERM on destruction. Started at once unless told otherwise.
class ServerProcess {
 public:
  explicit ServerProcess(bool start_now = true) {
    char tmpl[] = "/tmp/sotto-server-process-XXXXXX";
    root_ = mkdtemp(tmpl);
    dir_ = root_ / "data";
    args_ = {"--data", dir_.string(), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"};
    if (start_now) start();
  }
  ~ServerProcess() {
    stop();
    std::filesystem::remove_all(root_);
  }

  // Starts the server with `args` (default: the data directory and free ports) and waits until it
  // listens or exits. False when it exited.
  bool start(std::optional<std::vector<std::string>> args = std::nullopt) {
    if (args) args_ = *args;
    port_ = 0;
    fingerprint_.clear();
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    const int err = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      close(out[0]);
      close(out[1]);
      exec_server(args_);
    }
    close(err);
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      std::string l(line);
      if (l.rfind("fingerprint: ", 0) == 0)
        fingerprint_ = l.substr(13, l.find_last_not_of("\r\n") - 12);
      if (l.rfind("listening on ", 0) == 0)
        port_ = static_cast<std::uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
      if (l.rfind("http on ", 0) == 0) {
        http_port_ = static_cast<std::uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
        break;
      }
    }
    // Keep draining its output so it never blocks on a full pipe.
    reader_ = std::thread([f] {
      char buf[512];
      while (std::fgets(buf, sizeof buf, f) != nullptr) {
      }
      std::fclose(f);
    });
    if (port_ == 0) {
      stop();
      return false;
    }
    return true;
  }

  // SIGTERM, and waits for the exit (a graceful shutdown). Returns its exit status.
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

  void signal(int sig) const { kill(pid_, sig); }
  bool alive() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

  // Runs the binary with `args` to its end (an operator command), beside the running server.
  static CommandResult run(const std::vector<std::string>& args) {
    char tmpl[] = "/tmp/sotto-server-command-XXXXXX";
    const int err = mkstemp(tmpl);
    int out[2];
    if (err < 0 || pipe(out) != 0) throw std::runtime_error("pipe");
    const pid_t pid = fork();
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      close(out[0]);
      close(out[1]);
      exec_server(args);
    }
    close(out[1]);
    CommandResult r;
    char buf[512];
    ssize_t n = 0;
    while ((n = read(out[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<std::size_t>(n));
    close(out[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    close(err);
    r.err = read_text(tmpl);
    unlink(tmpl);
    return r;
  }

  // Waits until the server's log has `needle` at least `count` times.
  bool wait_log(const std::string& needle, int count = 1) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = read_text(log_path());
      int found = 0;
      for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        ++found;
      if (found >= count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // A GET on the operator HTTP address; the body.
  std::string http_get(const std::string& path) const {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(http_port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string response;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const std::string request =
          "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
      if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
        char buf[4096];
        ssize_t n = 0;
        while ((n = read(fd, buf, sizeof buf)) > 0)
          response.append(buf, static_cast<std::size_t>(n));
      }
    }
    close(fd);
    const auto body = response.find("\r\n\r\n");
    return body == std::string::npos ? std::string() : response.substr(body + 4);
  }

  // A gauge or counter's value from /metrics (-1 when absent).
  long long metric(const std::string& name) const {
    const std::string text = http_get("/metrics");
    for (auto at = text.find(name + " "); at != std::string::npos;
         at = text.find(name + " ", at + 1)) {
      if (at == 0 || text[at - 1] == '\n') return std::stoll(text.substr(at + name.size() + 1));
    }
    return -1;
  }

  std::uint16_t port() const { return port_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::filesystem::path& dir() const { return dir_; }
  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path log_path() const { return root_ / "server.log"; }

  // Rows per table in the server's database, read through SQLite beside the running server.
  std::map<std::string, long long> row_counts() const {
    std::map<std::string, long long> out;
    sqlite3* db = nullptr;
    const std::string file = (dir_ / "sotto.db").string();
    if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "cannot open the server database";
      sqlite3_close(db);
      return out;
    }
    for (const char* table : {"accounts", "devices", "signed_pre_keys", "pre_keys", "messages",
                              "send_dedup", "invites", "link_tokens", "shared_bodies"}) {
      sqlite3_stmt* st = nullptr;
      const std::string sql = std::string("SELECT count(*) FROM ") + table;
      if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
          sqlite3_step(st) == SQLITE_ROW) {
        out[table] = sqlite3_column_int64(st, 0);
      } else {
        ADD_FAILURE() << "cannot count " << table << ": " << sqlite3_errmsg(db);
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return out;
  }

 private:
  [[noreturn]] static void exec_server(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(SOTTO_SERVER_BIN));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(SOTTO_SERVER_BIN, argv.data());
    _exit(127);
  }

  std::filesystem::path root_;
  std::filesystem::path dir_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t http_port_ = 0;
  std::string fingerprint_;
  std::thread reader_;
};

// One WebSocket connection, frame by frame.
class RawClient {
 public:
  explicit RawClient(
      const ServerProcess& server, std::size_t max_frame = 4 << 20,
      std::function<std::string(const std::array<std::uint8_t, 32>&)> authorization = nullptr,
      std::optional<std::string> pin = std::nullopt) {
    net::ClientOptions o;
    o.port = server.port();
    o.fingerprint = pin.value_or(server.fingerprint());
    o.max_frame_bytes = max_frame;
    o.authorization = std::move(authorization);
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
          cv_.notify_all();
        });
    auto connected = client_->connect();
    EXPECT_TRUE(connected.has_value());
  }

  void send_raw(Bytes bytes) { EXPECT_TRUE(client_->send(std::move(bytes))); }

  std::uint64_t submit(svc::Request r) {
    r.set_id(++next_id_);
    svc::Frame f;
    *f.mutable_request() = std::move(r);
    Bytes b(f.ByteSizeLong());
    f.SerializeWithCachedSizesToArray(b.data());
    send_raw(std::move(b));
    return next_id_;
  }

  // The response with this id (0: the next response of any id).
  std::optional<svc::Response> response(std::uint64_t id) {
    std::unique_lock lock(mu_);
    std::optional<svc::Response> out;
    cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (auto it = frames_.begin(); it != frames_.end(); ++it) {
        if (it->has_response() && (id == 0 || it->response().id() == id)) {
          out = it->response();
          frames_.erase(it);
          return true;
        }
      }
      return closed_.has_value();
    });
    return out;
  }

  svc::Response call(svc::Request r) {
    auto got = response(submit(std::move(r)));
    if (!got) ADD_FAILURE() << "no response";
    return got.value_or(svc::Response{});
  }

  std::vector<svc::Envelope> envelopes(std::size_t want) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      std::size_t n = 0;
      for (const auto& f : frames_) n += f.has_push() && f.push().has_envelope();
      return n >= want || closed_.has_value();
    });
    std::vector<svc::Envelope> out;
    for (const auto& f : frames_) {
      if (f.has_push() && f.push().has_envelope()) out.push_back(f.push().envelope());
    }
    return out;
  }

  // The first push (the login result when the upgrade request carried a proof).
  std::optional<svc::Push> first_push() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (const auto& f : frames_) {
        if (f.has_push()) return true;
      }
      return closed_.has_value();
    });
    for (const auto& f : frames_) {
      if (f.has_push()) return f.push();
    }
    return std::nullopt;
  }

  std::array<std::uint8_t, 32> channel_binding() const {
    const auto b = client_->channel_binding();
    EXPECT_TRUE(b.has_value());
    return b.value_or(std::array<std::uint8_t, 32>{});
  }

  // The first push that `want` accepts, waiting for it.
  std::optional<svc::Push> wait_push(const std::function<bool(const svc::Push&)>& want) {
    std::unique_lock lock(mu_);
    std::optional<svc::Push> out;
    cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (const auto& f : frames_) {
        if (f.has_push() && want(f.push())) {
          out = f.push();
          return true;
        }
      }
      return closed_.has_value();
    });
    return out;
  }

  // Every push received so far.
  std::vector<svc::Push> pushes() {
    std::lock_guard lock(mu_);
    std::vector<svc::Push> out;
    for (const auto& f : frames_) {
      if (f.has_push()) out.push_back(f.push());
    }
    return out;
  }

  const net::WsClient& ws() const { return *client_; }
  bool is_open() const { return client_->is_open(); }

  std::optional<std::string> wait_closed() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] { return closed_.has_value(); });
    return closed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<svc::Frame> frames_;
  std::optional<std::string> closed_;
  std::uint64_t next_id_ = 0;
  // Last: destroyed first. Its destructor closes the connection, and the close handler (and a
  // frame arriving meanwhile) still use the members above.
  std::unique_ptr<net::WsClient> client_;
};

}  // namespace sotto::testing
