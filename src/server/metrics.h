// Prometheus metrics of the server: lock-free counters and gauges and a latency histogram,
// rendered in the text exposition format for /metrics. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace sotto::server {

class Histogram {
 public:
  // Upper bounds in seconds.
  static constexpr std::array<double, 12> kBounds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                                     0.05,   0.1,   0.2,   0.5,   1.0,  5.0};
  void observe(double seconds);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::array<std::atomic<std::uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_micros_{0};
};

struct Metrics {
  std::atomic<std::int64_t> connections{0};
  std::atomic<std::int64_t> authenticated_connections{0};
  std::atomic<std::uint64_t> messages_in{0};     // envelopes accepted and stored
  std::atomic<std::uint64_t> messages_out{0};    // envelopes pushed to devices
  std::atomic<std::uint64_t> messages_acked{0};  // envelopes deleted after acknowledgement
  std::atomic<std::uint64_t> sends_refused{0};   // stale device lists, full queues, bad input
  std::atomic<std::uint64_t> logins{0};
  std::atomic<std::uint64_t> login_failures{0};
  std::atomic<std::uint64_t> registrations{0};
  std::atomic<std::uint64_t> bad_frames{0};
  std::atomic<std::int64_t> queue_depth{0};   // stored, unacknowledged envelopes
  std::atomic<std::int64_t> stored_bytes{0};  // their ciphertext bytes (the storage budget)
  // The data directory's free space at the last check (-1: not checked; see min_free_disk_bytes).
  std::atomic<std::int64_t> disk_free_bytes{-1};
  std::atomic<std::uint64_t> rate_limited{0};          // requests refused by a per-account bucket
  std::atomic<std::uint64_t> storage_refusals{0};      // sends refused: storage over budget
  std::atomic<std::uint64_t> queue_share_refusals{0};  // sends refused: sender's share held
  // Distinct devices told of the announced next key (in memory: since it was announced, or since
  // the server started); 0 while none is announced.
  std::atomic<std::int64_t> next_key_devices_told{0};
  // 1 while the server hands TLS records over to its own record layer, 0 while OpenSSL keeps
  // them (net::WsServer::record_handover); set once at start.
  std::atomic<std::int64_t> tls_record_handover{0};
  // Every connection's unsent bytes together (net::WsServer::buffered_bytes), set when /metrics
  // is rendered.
  std::atomic<std::int64_t> buffered_bytes{0};
  Histogram commit_latency;  // send received -> durable

  std::string render() const;
};

}  // namespace sotto::server
