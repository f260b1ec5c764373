// A private PostgreSQL server for tests (the `cluster` CTest label): initdb in a fresh temporary
// directory, then postgres listening only on a Unix socket in that directory (no TCP port), and
// everything stopped and removed when the object goes. As root (CI), initdb and postgres refuse
// to run, so both run as the unprivileged `postgres` user (setuid in the forked child) and the
// directory is made theirs; the test process, as root, still reaches the socket.
//
// The server child gets SIGINT (fast shutdown) should the test process die first, so nothing is
// left running; the temporary directory is then left behind under /tmp.
//
// Thread-safety: none; one test (or test environment) owns a server.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

namespace sotto::testing {

class PostgresServer {
 public:
  // Starts the server (PostgreSQL's binaries from `bin_dir`); throws std::runtime_error saying
  // what failed, with the server's log.
  explicit PostgresServer(const std::filesystem::path& bin_dir);
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // libpq connection string for the server's `postgres` database, as its superuser.
  [[nodiscard]] std::string conninfo() const;
  // The same as a postgresql:// URI (what a sotto-server config names).
  [[nodiscard]] std::string uri() const;
  [[nodiscard]] const std::filesystem::path& directory() const { return dir_; }

  // Stops the server and waits for it (fast shutdown); idempotent. The destructor calls it.
  void stop();
  // Starts it again on the same data directory (after stop()).
  void restart();

 private:
  void start();

  std::filesystem::path bin_dir_;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  uid_t uid_ = 0;  // whom the server runs as (0: as this process)
  gid_t gid_ = 0;
};

}  // namespace sotto::testing
