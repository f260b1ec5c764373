#include "server/metrics.h"

#include <cstdio>

namespace sotto::server {

void Histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  std::uint64_t cumulative = 0;
  char line[160];
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    std::snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", name.c_str(), kBounds[i],
                  static_cast<unsigned long long>(cumulative));
    out += line;
  }
  cumulative += buckets_[kBounds.size()].load(std::memory_order_relaxed);
  std::snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n",
                name.c_str(), static_cast<unsigned long long>(cumulative), name.c_str(),
                static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6,
                name.c_str(),
                static_cast<unsigned long long>(count_.load(std::memory_order_relaxed)));
  out += line;
}

namespace {
template <typename T>
void metric(std::string& out, const char* name, const char* type, const char* help, const T& v) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + std::to_string(v.load(std::memory_order_relaxed)) + "\n";
}
}  // namespace

std::string Metrics::render() const {
  std::string out;
  metric(out, "sotto_connections", "gauge", "Open WebSocket connections.", connections);
  metric(out, "sotto_authenticated_connections", "gauge", "Connections authenticated as a device.",
         authenticated_connections);
  metric(out, "sotto_messages_in_total", "counter", "Envelopes accepted and stored durably.",
         messages_in);
  metric(out, "sotto_messages_out_total", "counter", "Envelopes pushed to devices.", messages_out);
  metric(out, "sotto_messages_acked_total", "counter", "Envelopes deleted after acknowledgement.",
         messages_acked);
  metric(out, "sotto_sends_refused_total", "counter",
         "Sends refused (stale devices, full queue, bad input).", sends_refused);
  metric(out, "sotto_logins_total", "counter", "Successful device logins.", logins);
  metric(out, "sotto_login_failures_total", "counter", "Failed device logins.", login_failures);
  metric(out, "sotto_registrations_total", "counter", "Accounts registered.", registrations);
  metric(out, "sotto_bad_frames_total", "counter", "Frames that failed to decode.", bad_frames);
  metric(out, "sotto_queue_depth", "gauge",
         "Stored envelopes not yet acknowledged (counted from the store at start).", queue_depth);
  metric(out, "sotto_stored_bytes", "gauge",
         "Ciphertext bytes of stored envelopes (counted from the store at start).", stored_bytes);
  metric(out, "sotto_disk_free_bytes", "gauge",
         "Free space of the data directory's file system at the last check (-1: not checked).",
         disk_free_bytes);
  metric(out, "sotto_rate_limited_total", "counter",
         "Requests refused by a per-account (or provisioning per-address) rate limit.",
         rate_limited);
  metric(out, "sotto_storage_refusals_total", "counter",
         "Sends refused because storage is over budget (stored bytes or free disk).",
         storage_refusals);
  metric(out, "sotto_queue_share_refusals_total", "counter",
         "Sends refused because the sender holds its share of a recipient device's queue.",
         queue_share_refusals);
  metric(out, "sotto_next_key_devices_told", "gauge",
         "Distinct devices told of the announced next server key since it was announced (or the "
         "server started); 0 while none is announced.",
         next_key_devices_told);
  metric(out, "sotto_tls_record_handover", "gauge",
         "1 when TLS records are handed from OpenSSL to the server's record layer after the "
         "handshake, 0 when OpenSSL keeps them (turned off, or the start-up self-check failed).",
         tls_record_handover);
  metric(out, "sotto_buffered_bytes", "gauge",
         "Bytes queued for every connection and not yet written (against max_buffered_bytes).",
         buffered_bytes);
  commit_latency.render(out, "sotto_commit_latency_seconds",
                        "Time from receiving a send to its durable commit.");
  return out;
}

}  // namespace sotto::server
