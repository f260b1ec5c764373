// The sotto-server the load tool measures: either one it spawns itself (a temporary data
// directory, free ports, a config that lifts the per-address rate limits a load test from one
// machine would trip) or one already running, named by address, fingerprint and pid.
// Not thread-safe; owned by main.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace sotto::load {

struct ServerEndpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string fingerprint;
  pid_t pid = 0;  // 0: unknown (no memory figures then)
};

class SpawnedServer {
 public:
  // Starts `binary` and waits until it prints its fingerprint and port. Throws
  // std::runtime_error (with the server's stderr tail) when it does not come up.
  SpawnedServer(const std::filesystem::path& binary, bool keep_data);
  ~SpawnedServer();  // SIGTERM, wait, then remove the data directory unless kept
  SpawnedServer(const SpawnedServer&) = delete;
  SpawnedServer& operator=(const SpawnedServer&) = delete;

  const ServerEndpoint& endpoint() const { return endpoint_; }
  const std::filesystem::path& directory() const { return dir_; }
  // Stops the server (SIGTERM, then SIGKILL after a grace period); true when it exited cleanly.
  bool stop();

 private:
  std::filesystem::path dir_;
  ServerEndpoint endpoint_;
  bool keep_data_ = false;
  bool running_ = false;
};

// Resident set size of a process in bytes (VmRSS in /proc/<pid>/status); nullopt if unreadable.
std::optional<std::uint64_t> resident_bytes(pid_t pid);

// CPU time a process has used so far, user and system, all threads (/proc/PID/stat; the
// kernel counts in clock ticks, 10 ms here).
std::optional<double> cpu_seconds(pid_t pid);

}  // namespace sotto::load
