#include "daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "output.h"
#include "terminal.h"

namespace sotto::cli {

namespace {

using json = nlohmann::json;

constexpr std::size_t kMaxRequestBytes = 1 << 20;
constexpr int kParseError = -32700;
constexpr int kInvalidRequest = -32600;
constexpr int kMethodNotFound = -32601;
constexpr int kInvalidParams = -32602;
constexpr int kApplicationError = -32000;

// One JSON-RPC peer: stdin/stdout, or one accepted socket connection.
class Peer {
 public:
  Peer(int in, int out, bool socket) : in_(in), out_(out), socket_(socket) {}
  ~Peer() {
    if (socket_) ::close(in_);
  }
  int in() const { return in_; }
  // False once the peer is gone.
  bool write_line(const std::string& line) {
    std::lock_guard lock(mu_);
    if (dead_) return false;
    std::string data = line + "\n";
    std::string_view rest = data;
    while (!rest.empty()) {
      const ssize_t n = socket_ ? ::send(out_, rest.data(), rest.size(), MSG_NOSIGNAL)
                                : ::write(out_, rest.data(), rest.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        dead_ = true;
        return false;
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void shutdown() {
    if (socket_) ::shutdown(in_, SHUT_RDWR);
  }

 private:
  int in_;
  int out_;
  bool socket_;
  std::mutex mu_;
  bool dead_ = false;
};

json rpc_error(const json& id, int code, const std::string& message, json data = nullptr) {
  json e = {{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = std::move(data);
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(e)}};
}

json rpc_result(const json& id, json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

json notification(const std::string& method, json params) {
  return {{"jsonrpc", "2.0"}, {"method", method}, {"params", std::move(params)}};
}

class Daemon {
 public:
  explicit Daemon(Client& client) : client_(client) {
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
  }
  ~Daemon() {
    for (int fd : wake_) {
      if (fd >= 0) ::close(fd);
    }
  }

  void quit(int code) {
    if (code != 0) exit_code_ = code;
    quit_ = true;
    if (wake_[1] >= 0) {
      const char b = 1;
      (void)!::write(wake_[1], &b, 1);
    }
  }
  bool quitting() const { return quit_; }
  int exit_code() const { return exit_code_; }
  int wake_fd() const { return wake_[0]; }

  void add_peer(const std::shared_ptr<Peer>& p) {
    std::lock_guard lock(peers_mu_);
    peers_.push_back(p);
  }
  void remove_peer(const std::shared_ptr<Peer>& p) {
    std::lock_guard lock(peers_mu_);
    std::erase(peers_, p);
  }
  void shutdown_peers() {
    std::lock_guard lock(peers_mu_);
    for (auto& p : peers_) p->shutdown();
  }

  void broadcast(const json& message) {
    const std::string line = dump(message);
    std::vector<std::shared_ptr<Peer>> peers;
    {
      std::lock_guard lock(peers_mu_);
      peers = peers_;
    }
    for (auto& p : peers) (void)p->write_line(line);
  }

  void on_event(const Event& e) {
    switch (e.kind) {
      case Event::Kind::message:
        broadcast(notification("message", message_json(e.message)));
        break;
      case Event::Kind::fatal:
        broadcast(notification("fatal", {{"error", e.detail}}));
        std::fprintf(stderr, "sotto: error: %s\n", e.detail.c_str());
        quit(1);
        break;
      default:
        broadcast(notification("event", event_json(e)));
        break;
    }
  }

  // Reads newline-separated requests from `peer` until it closes or the daemon quits.
  void serve(const std::shared_ptr<Peer>& peer) {
    std::string buffer;
    for (;;) {
      std::size_t nl;
      while ((nl = buffer.find('\n')) != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (auto reply = handle_line(line)) {
          if (!peer->write_line(dump(*reply))) return;
        }
      }
      if (buffer.size() > kMaxRequestBytes) {
        buffer.clear();
        (void)peer->write_line(dump(rpc_error(nullptr, kInvalidRequest, "request too large")));
      }
      if (quit_) return;
      pollfd fds[2] = {{peer->in(), POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, wake_[0] >= 0 ? 2 : 1, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (quit_) return;
      if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(peer->in(), chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (!buffer.empty()) {
          if (auto reply = handle_line(buffer)) (void)peer->write_line(dump(*reply));
        }
        return;
      }
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  std::optional<json> handle_line(const std::string& line) {
    json request = json::parse(line, nullptr, false);
    if (request.is_discarded()) return rpc_error(nullptr, kParseError, "parse error");
    if (request.is_array()) {
      if (request.empty()) return rpc_error(nullptr, kInvalidRequest, "empty batch");
      json replies = json::array();
      for (const auto& r : request) {
        if (auto reply = handle(r)) replies.push_back(std::move(*reply));
      }
      if (replies.empty()) return std::nullopt;
      return replies;
    }
    return handle(request);
  }

  std::optional<json> handle(const json& request) {
    if (!request.is_object() || request.value("jsonrpc", "") != "2.0" ||
        !request.contains("method") || !request["method"].is_string()) {
      return rpc_error(
          request.is_object() && request.contains("id") ? request["id"] : json(nullptr),
          kInvalidRequest, "invalid request");
    }
    const bool is_notification = !request.contains("id");
    const json id = is_notification ? json(nullptr) : request["id"];
    const std::string method = request["method"];
    json params = request.contains("params") ? request["params"] : json::object();
    if (!params.is_object() && !params.is_array()) {
      return rpc_error(id, kInvalidParams, "params must be an object or an array");
    }
    json reply = call(id, method, params);
    if (is_notification) return std::nullopt;
    return reply;
  }

  static std::optional<std::string> param(const json& params, const char* name, std::size_t index) {
    if (params.is_object()) {
      auto it = params.find(name);
      if (it != params.end() && it->is_string()) return it->get<std::string>();
      return std::nullopt;
    }
    if (params.is_array() && params.size() > index && params[index].is_string()) {
      return params[index].get<std::string>();
    }
    return std::nullopt;
  }

  static json app_error(const json& id, const Error& e) {
    return rpc_error(id, kApplicationError, e.message, {{"code", std::string(to_string(e.code))}});
  }

  json call(const json& id, const std::string& method, const json& params) {
    if (method == "send") {
      auto to = param(params, "to", 0);
      auto body = param(params, "body", 1);
      if (!to || !body) return rpc_error(id, kInvalidParams, "send needs {to, body}");
      auto r = client_.send(*to, *body);
      if (!r) return app_error(id, r.error());
      return rpc_result(id, {{"timestamp", r->timestamp}, {"devices", r->devices}});
    }
    if (method == "contacts") {
      auto r = client_.contacts();
      if (!r) return app_error(id, r.error());
      json list = json::array();
      for (const auto& c : *r) {
        list.push_back({{"username", c.username},
                        {"verified", c.verified},
                        {"identityChangedAt", c.identity_changed_at},
                        {"identityKey", c.identity_key_hex}});
      }
      return rpc_result(id, list);
    }
    if (method == "safetyNumber" || method == "trust") {
      auto user = param(params, "user", 0);
      if (!user) return rpc_error(id, kInvalidParams, method + " needs {user}");
      auto r = method == "trust" ? client_.trust(*user) : client_.safety_number(*user);
      if (!r) return app_error(id, r.error());
      static constexpr char kHex[] = "0123456789abcdef";
      std::string hex;
      for (auto b : r->scannable) {
        hex += kHex[b >> 4];
        hex += kHex[b & 0xF];
      }
      return rpc_result(id, {{"user", *user}, {"digits", r->digits}, {"scannable", hex}});
    }
    if (method == "devices") {
      auto r = client_.devices();
      if (!r) return app_error(id, r.error());
      json list = json::array();
      for (const auto& d : *r) {
        list.push_back({{"id", d.id},
                        {"registrationId", d.registration_id},
                        {"createdDay", d.created_day},
                        {"current", d.current}});
      }
      return rpc_result(id, list);
    }
    if (method == "history") {
      auto user = param(params, "user", 0);
      if (!user) return rpc_error(id, kInvalidParams, "history needs {user}");
      std::size_t limit = 0;
      if (params.is_object() && params.contains("limit")) {
        if (!params["limit"].is_number_unsigned()) {
          return rpc_error(id, kInvalidParams, "limit must be a non-negative integer");
        }
        limit = params["limit"].get<std::size_t>();
      }
      auto r = client_.history(*user, limit);
      if (!r) return app_error(id, r.error());
      json list = json::array();
      for (const auto& m : *r) list.push_back(message_json(m));
      return rpc_result(id, list);
    }
    if (method == "account") {
      return rpc_result(id, {{"username", client_.username()}, {"device", client_.device_id()}});
    }
    return rpc_error(id, kMethodNotFound, "method not found");
  }

  Client& client_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> quit_{false};
  std::atomic<int> exit_code_{0};
  std::mutex peers_mu_;
  std::vector<std::shared_ptr<Peer>> peers_;
};

// Creates, binds and listens on a Unix socket at `path` (mode 0600). -1 with a message on error.
int listen_unix(const std::string& path, std::string& error) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    error = "the socket path is too long";
    return -1;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = "the socket path exists and is not a socket";
      return -1;
    }
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live =
        probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (live) {
      error = "another daemon is listening on the socket path";
      return -1;
    }
    ::unlink(path.c_str());  // a stale socket of a daemon that died
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = "cannot create a socket";
    return -1;
  }
  const mode_t old = ::umask(0077);
  const int bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (bound != 0 || ::listen(fd, 16) != 0) {
    error = std::string("cannot listen on the socket path: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int run_daemon(Client& client, const std::optional<std::string>& socket_path) {
  ShutdownSignals signals;
  Daemon daemon(client);
  signals.on_signal([&daemon] { daemon.quit(0); });

  int listen_fd = -1;
  if (socket_path) {
    std::string error;
    listen_fd = listen_unix(*socket_path, error);
    if (listen_fd < 0) {
      signals.on_signal(nullptr);
      std::fprintf(stderr, "sotto: error: %s\n", error.c_str());
      return 1;
    }
  }
  std::shared_ptr<Peer> stdio;
  if (!socket_path) {
    stdio = std::make_shared<Peer>(STDIN_FILENO, STDOUT_FILENO, false);
    daemon.add_peer(stdio);
  }
  if (auto started = client.start([&daemon](const Event& e) { daemon.on_event(e); }); !started) {
    signals.on_signal(nullptr);
    std::fprintf(stderr, "sotto: error: %s\n", started.error().message.c_str());
    return 1;
  }

  if (stdio) {
    daemon.serve(stdio);  // until stdin closes or a signal arrives
  } else {
    std::vector<std::thread> threads;
    while (!daemon.quitting()) {
      pollfd fds[2] = {{listen_fd, POLLIN, 0}, {daemon.wake_fd(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (daemon.quitting()) break;
      if ((fds[0].revents & POLLIN) == 0) continue;
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      auto peer = std::make_shared<Peer>(fd, fd, true);
      daemon.add_peer(peer);
      threads.emplace_back([&daemon, peer] {
        daemon.serve(peer);
        daemon.remove_peer(peer);
      });
    }
    daemon.quit(0);
    daemon.shutdown_peers();
    for (auto& t : threads) t.join();
    ::close(listen_fd);
    ::unlink(socket_path->c_str());
  }
  client.stop();
  signals.on_signal(nullptr);  // the daemon object goes away next
  return daemon.exit_code();
}

}  // namespace sotto::cli
