#include "server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace sotto::load {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto kStartTimeout = 20s;
constexpr auto kStopGrace = 15s;

// A port nobody listens on right now (the kernel's pick for a bound, unused socket). The server
// binds it a moment later; another process taking it in between makes the start fail loudly.
std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail(const std::string& s, std::size_t n) {
  return s.size() <= n ? s : s.substr(s.size() - n);
}

// The value after `key` up to the end of its line, or empty.
std::string line_value(const std::string& text, const std::string& key) {
  const auto at = text.find(key);
  if (at == std::string::npos) return {};
  const auto start = at + key.size();
  const auto end = text.find('\n', start);
  if (end == std::string::npos) return {};  // the line is not complete yet
  return text.substr(start, end - start);
}

}  // namespace

SpawnedServer::SpawnedServer(const fs::path& binary, bool keep_data) : keep_data_(keep_data) {
  std::string tmpl = (fs::temp_directory_path() / "sotto-load-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  const std::uint16_t port = free_port();
  const std::uint16_t http_port = free_port();

  // The default per-address limits (30 registrations and 600 logins a minute, 1000 connections,
  // 64 of them not logged in) and per-account logins (60 a minute) are right for a public server
  // and would stop a load test that runs every client from 127.0.0.x and logs the same accounts
  // in again and again; only this test server gets higher ones.
  const fs::path config = dir_ / "load.toml";
  {
    std::ofstream out(config);
    // Likewise the per-account send and acknowledgement buckets (docs/abuse.md): a real user
    // never sends hundreds of messages a second, but each of this tool's senders does, to
    // measure the relay's throughput rather than the limits. Everything else stays at its default
    // (durability, queue shares and the storage budget included).
    out << "# written by sotto-load for this run only\n"
           "registrations_per_minute = 1000000\n"
           "logins_per_minute = 10000000\n"
           "sends_per_minute = 10000000\n"
           "send_bytes_per_minute = 1125899906842624\n"
           "acks_per_minute = 100000000\n"
           "logins_per_account_per_minute = 10000000\n"
           "max_connections_per_address = 1000000\n"
           "max_prelogin_per_address = 1000000\n";
    if (!out) throw std::runtime_error("cannot write " + config.string());
  }
  const std::string data = (dir_ / "data").string();
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  const std::string http = "127.0.0.1:" + std::to_string(http_port);
  const std::string out_path = (dir_ / "server.out").string();
  const std::string err_path = (dir_ / "server.err").string();
  const std::string bin = binary.string();
  const std::string cfg = config.string();

  // Everything the child needs is prepared before fork(): it only opens, dups and execs.
  std::vector<const char*> argv = {bin.c_str(),    "--data", data.c_str(), "--listen",
                                   listen.c_str(), "--http", http.c_str(), "--config",
                                   cfg.c_str(),    nullptr};
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0 || err < 0) ::_exit(126);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(err, STDERR_FILENO);
    ::execv(bin.c_str(), const_cast<char* const*>(argv.data()));
    ::_exit(127);
  }
  endpoint_.pid = pid;
  running_ = true;

  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  for (;;) {
    const std::string text = read_text(out_path);
    const std::string fp = line_value(text, "fingerprint: ");
    const std::string listening = line_value(text, "listening on ");
    if (!fp.empty() && !listening.empty()) {
      endpoint_.fingerprint = fp;
      const auto colon = listening.rfind(':');
      endpoint_.host = listening.substr(0, colon);
      endpoint_.port = static_cast<std::uint16_t>(std::stoi(listening.substr(colon + 1)));
      return;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      running_ = false;
      throw std::runtime_error("sotto-server exited during start: " +
                               tail(read_text(err_path), 2000));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      stop();
      throw std::runtime_error("sotto-server did not start: " + tail(read_text(err_path), 2000));
    }
    std::this_thread::sleep_for(20ms);
  }
}

bool SpawnedServer::stop() {
  if (!running_) return true;
  running_ = false;
  const pid_t pid = endpoint_.pid;
  ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + kStopGrace;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (r < 0) return false;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
}

SpawnedServer::~SpawnedServer() {
  stop();
  if (!keep_data_ && !dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::optional<std::uint64_t> resident_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      std::uint64_t kb = 0;
      std::string unit;
      if (fields >> kb >> unit && unit == "kB") return kb * 1024;
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::optional<double> cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  std::uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15; ++i) {  // fields 3 (state) to 15 (stime)
    if (!(fields >> field)) return std::nullopt;
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  if (ticks <= 0) return std::nullopt;
  return static_cast<double>(utime + stime) / static_cast<double>(ticks);
}

}  // namespace sotto::load
