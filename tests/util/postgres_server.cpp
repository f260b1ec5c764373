#include "util/postgres_server.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace sotto::testing {
namespace {

constexpr int kPort = 5432;  // only names the socket file: the directory is private

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Forks and runs `argv` as uid/gid (when uid != 0), output to `log`. In the child, the server
// (`server` true) gets SIGINT when this process dies.
pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& log, uid_t uid,
            gid_t gid, bool server) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid > 0) return pid;
  // The child: only async-signal-safe calls until exec.
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::close(fd);
  }
  const int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0) ::dup2(devnull, 0);
  ::setsid();  // a terminal's ^C goes to the test, which then stops the server itself
  if (uid != 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(126);
  }
  // After setuid: a change of credentials clears the parent-death signal.
  if (server) ::prctl(PR_SET_PDEATHSIG, SIGINT);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  ::_exit(127);
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace

PostgresServer::PostgresServer(const std::filesystem::path& bin_dir) : bin_dir_(bin_dir) {
  std::string pattern = (std::filesystem::temp_directory_path() / "sotto-pg-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
      std::filesystem::remove_all(dir_);
      throw std::runtime_error(
          "running as root, and PostgreSQL refuses root: a `postgres` user is needed to run it");
    }
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    if (::chown(dir_.c_str(), uid_, gid_) != 0) {
      std::filesystem::remove_all(dir_);
      throw std::runtime_error("cannot give " + dir_.string() + " to the postgres user");
    }
  }
  const auto log = dir_ / "initdb.log";
  const pid_t pid = spawn({(bin_dir_ / "initdb").string(), "-D", (dir_ / "data").string(), "-A",
                           "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"},
                          log, uid_, gid_, false);
  const int status = wait_for(pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string text = read_file(log);
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("initdb failed:\n" + text);
  }
  start();
}

PostgresServer::~PostgresServer() {
  stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void PostgresServer::start() {
  const auto log = dir_ / "postgres.log";
  pid_ = spawn({(bin_dir_ / "postgres").string(), "-D", (dir_ / "data").string(), "-k",
                dir_.string(), "-p", std::to_string(kPort), "-c", "listen_addresses=", "-c",
                "max_connections=200", "-c", "shared_buffers=32MB"},
               log, uid_, gid_, true);
  // Ready once a connection succeeds. A deadline for the start, not a test assertion: a server
  // that has not come up in two minutes (a loaded machine under ASan included) is broken.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  std::string last;
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("postgres exited at start:\n" + read_file(log));
    }
    try {
      pqxx::connection c(conninfo());
      return;
    } catch (const std::exception& e) {
      last = e.what();
    }
    if (std::chrono::steady_clock::now() > deadline) {
      stop();
      throw std::runtime_error("postgres did not accept connections (" + last + "):\n" +
                               read_file(log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void PostgresServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGINT);  // fast shutdown: clients are disconnected, the data is kept
  wait_for(pid_);
  pid_ = -1;
}

void PostgresServer::restart() {
  stop();
  start();
}

std::string PostgresServer::conninfo() const {
  return "host=" + dir_.string() + " port=" + std::to_string(kPort) +
         " user=postgres dbname=postgres connect_timeout=10";
}

std::string PostgresServer::uri() const {
  std::string host;
  for (const char c : dir_.string()) {
    if (c == '/') {
      host += "%2F";
    } else {
      host += c;
    }
  }
  return "postgresql://postgres@" + host + ":" + std::to_string(kPort) + "/postgres";
}

}  // namespace sotto::testing
