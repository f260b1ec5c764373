// sotto-load: a load generator for sotto-server that speaks the real protocol. It registers real
// accounts (identity key, device auth key, signed prekey, identity signature), logs them in with
// challenge/authenticate over TLS 1.3 with the server's certificate pinned, sends opaque
// ciphertext-sized messages to every device of the recipient and acknowledges what it receives,
// batching acknowledgements as a client may. It measures delivered messages/s at saturation,
// latency at a fixed rate, logins/s, server memory per idle connection, storing and draining
// an offline queue, and draining a backlog of maximum-size messages with the server's memory
// bounded; and it checks that every message the server accepted was delivered exactly
// once (re-deliveries of the same envelope are counted separately: the server delivers at least
// once and clients drop repeats by envelope id).
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "attachment_phase.h"
#include "contract/ids.h"
#include "crypto/encoding.h"
#include "crypto/rng.h"
#include "key_methods.h"
#include "net/ws_client.h"
#include "peer.h"
#include "server_process.h"
#include "tls_ceiling.h"

namespace sotto::load {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr std::size_t kMessageHeader = 20;  // sender index, sequence, send time (see Content)
constexpr std::size_t kRandomPoolBytes = 1 << 16;
constexpr std::size_t kRegistrationConnections = 4;
constexpr std::size_t kRegistrationWindow = 16;
constexpr auto kQuiesceTimeout = 60s;
constexpr auto kStallTimeout = 30s;  // no delivery and no send response for this long
constexpr auto kQuiesceLimit = 30min;
constexpr std::uint32_t kMessageTypeSignal = 2;     // protocol::MessageType::signal
constexpr std::uint32_t kMessageTypeSenderKey = 4;  // protocol::MessageType::sender_key
// The group phase's senders number their messages from here (receivers key what they got by
// sender index; the other phases' senders count from 0).
constexpr std::uint32_t kGroupSenderIndex = 1u << 24;

struct Options {
  std::string server;
  std::string fingerprint;
  int server_pid = 0;
  std::string spawn_server;
  bool keep_data = false;
  std::vector<std::string> phases{"saturation", "fixed-rate", "logins",        "idle-memory",
                                  "offline",    "backlog",    "tls-handshakes"};
  bool json_output = false;
  int threads = 2;
  std::size_t pairs = 64;
  std::size_t window = 16;
  std::size_t message_bytes = 160;
  // 1: each envelope acknowledged as it arrives, as the client library does (src/client); the
  // transport batches what a busy connection sends (net/batch.h).
  std::size_t ack_batch = 1;
  double ack_delay_ms = 2;  // a partial batch waits at most this long
  double warmup_s = 2;
  double duration_s = 5;
  double rate = 5000;
  double fixed_duration_s = 10;
  std::size_t login_accounts = 500;
  std::size_t login_concurrency = 32;
  double login_duration_s = 5;
  std::size_t idle_connections = 19000;
  std::size_t source_addresses = 0;  // 0: one per 4000 connections
  double idle_hold_s = 2;            // idle time before the memory is read
  std::size_t offline_messages = 10000;
  std::size_t offline_senders = 16;  // a busy group writing to one device that is away
  std::size_t offline_window = 64;
  // A device away while several senders store this much for it in maximum-size messages; then
  // it drains the backlog (delivery paced by bytes: the server's memory must stay bounded).
  std::size_t backlog_mb = 500;
  std::size_t backlog_message_bytes = 256 * 1024;
  std::size_t backlog_senders = 8;
  std::size_t backlog_window = 4;
  std::size_t pre_keys = 0;
  // Group messages (MultiSendRequest): one round per size, every member online.
  std::vector<std::size_t> group_sizes{100, 1024};
  std::size_t group_senders = 2;
  std::size_t group_window = 8;    // multi-sends in flight per sender
  std::size_t attachment_mb = 64;  // the attachment phase's file (MiB)
  // OpenSSL's provider dispatch for the tool's own X25519 and EC work, instead of its built-in
  // methods (key_methods.h); for comparing the two.
  bool provider_key_methods = false;
  bool builtin_key_methods = false;  // in use: set by main()

  bool has(const std::string& phase) const {
    return std::find(phases.begin(), phases.end(), phase) != phases.end();
  }
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// The machine's one-minute load average (/proc/loadavg), recorded with a round's figures: on a
// shared host it says how much else competed for the cores.
std::optional<double> load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (f == nullptr) return std::nullopt;
  double one = 0;
  const int got = std::fscanf(f, "%lf", &one);
  std::fclose(f);
  if (got != 1) return std::nullopt;
  return one;
}

double seconds_between(std::int64_t a_ns, std::int64_t b_ns) {
  return static_cast<double>(b_ns - a_ns) / 1e9;
}

void put_u32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}
std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

// Waits for a condition that callbacks on the I/O threads make true; they call notify(), or
// count() when the waiting thread may return (and destroy what they would touch) as soon as it
// sees the condition.
class Waiter {
 public:
  void notify() {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }
  // Increments `counter` under the lock that wait() checks its predicate with, so the waiting
  // thread cannot see the new value, return and destroy this Waiter (or the counter) before
  // the call has let go of both. The caller must touch neither afterwards.
  void count(std::atomic<std::size_t>& counter) {
    std::lock_guard lock(mu_);
    ++counter;
    cv_.notify_all();
  }
  template <class Int>
  void count_down(std::atomic<Int>& counter) {
    std::lock_guard lock(mu_);
    --counter;
    cv_.notify_all();
  }
  template <class Pred>
  bool wait(Pred pred, Clock::duration limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, pred);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

struct LatencySummary {
  std::size_t samples = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

LatencySummary summarize(std::vector<std::uint32_t> us) {
  LatencySummary s;
  s.samples = us.size();
  if (us.empty()) return s;
  std::sort(us.begin(), us.end());
  const auto at = [&](double q) {
    const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(us.size()))) - 1;
    return static_cast<double>(us[std::min(i, us.size() - 1)]) / 1000.0;
  };
  s.p50_ms = at(0.50);
  s.p99_ms = at(0.99);
  s.max_ms = static_cast<double>(us.back()) / 1000.0;
  return s;
}

struct Receiver;

// One sending device. Sequence numbers grow over the whole run, so the exactly-once check at
// the end covers every phase.
struct Sender {
  std::uint32_t index = 0;  // written into each message
  Account* account = nullptr;
  Receiver* to = nullptr;
  std::unique_ptr<Peer> peer;
  std::mutex mu;
  std::uint64_t next_seq = 0;         // guarded by mu
  std::vector<std::uint64_t> failed;  // sequences the server refused; guarded by mu
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::int64_t> outstanding{0};
  std::atomic<bool> keep_window{false};
};

// One receiving device: what it got, per sender, and the acknowledgements it still owes.
struct Receiver {
  Account* account = nullptr;
  std::unique_ptr<Peer> peer;
  std::mutex mu;
  std::map<std::uint32_t, std::vector<std::uint64_t>> seen;  // sender -> seq -> envelope tag
  std::vector<std::string> pending_acks;
  std::vector<std::uint32_t> latencies_us;
  std::uint64_t unique = 0;       // guarded by mu
  std::uint64_t redelivered = 0;  // same envelope again: allowed (at-least-once), dropped
  std::uint64_t duplicates = 0;   // same message under another envelope id: a server bug
  std::uint64_t malformed = 0;
  std::atomic<std::uint64_t> acked{0};
  std::atomic<std::int64_t> last_ack_ns{0};
  std::atomic<bool> drained{false};
};

class LoadTool {
 public:
  LoadTool(Options o, ServerEndpoint endpoint)
      : o_(std::move(o)),
        ep_(std::move(endpoint)),
        pool_(std::make_shared<net::IoPool>(o_.threads)) {
    crypto::system_rng().fill(random_pool_);
    std::array<std::uint8_t, 4> tag{};
    crypto::system_rng().fill(tag);
    run_tag_ = crypto::to_hex(tag);
    crypto::system_rng().fill(cmid_prefix_);
  }

  ~LoadTool() {
    stop_flusher();
    // Peers before the pool goes away; closing many connections one by one takes a while, so
    // it happens on several threads.
    std::vector<std::unique_ptr<Peer>> all;
    for (auto& s : senders_) all.push_back(std::move(s->peer));
    for (auto& r : receivers_) all.push_back(std::move(r->peer));
    destroy_parallel(all);
  }

  int run() {
    raise_fd_limit();
    const std::size_t pair_accounts = (o_.has("saturation") || o_.has("fixed-rate")) ? o_.pairs : 0;
    const std::size_t offline = o_.has("offline") ? o_.offline_senders : 0;
    const std::size_t backlog_senders = o_.has("backlog") ? o_.backlog_senders : 0;
    std::size_t shared = 0;
    if (o_.has("idle-memory")) shared = o_.idle_connections;
    if (o_.has("logins")) shared = std::max(shared, o_.login_accounts);
    std::size_t group_members = 0;
    if (o_.has("group")) {
      for (std::size_t g : o_.group_sizes) group_members = std::max(group_members, g - 1);
    }
    const std::size_t group_senders = o_.has("group") ? o_.group_senders : 0;
    const std::size_t total = 2 * pair_accounts + offline + (offline > 0 ? 1 : 0) +
                              backlog_senders + (backlog_senders > 0 ? 1 : 0) + shared +
                              group_senders + group_members;

    log("server " + ep_.host + ":" + std::to_string(ep_.port) + " pid " + std::to_string(ep_.pid));
    // What the tool's own handshakes run on (key_methods.h): it changes the tool's CPU per
    // handshake, and so what is left of a shared machine for the server.
    results_["tool_key_methods"] = o_.builtin_key_methods ? "openssl-builtin" : "openssl-providers";
    log(std::string("the tool's X25519 and EC work: OpenSSL's ") +
        (o_.builtin_key_methods ? "built-in methods" : "providers"));
    auto t0 = Clock::now();
    generate_accounts(total);
    log("generated " + std::to_string(total) + " accounts in " + fmt(secs(t0)) + " s");
    t0 = Clock::now();
    if (!register_accounts()) return finish(false);
    const double reg_s = secs(t0);
    results_["registrations"] = total;
    results_["registrations_per_s"] = round1(static_cast<double>(total) / reg_s);
    log("registered in " + fmt(reg_s) + " s");

    std::size_t next = 0;
    auto take = [&](std::size_t n) {
      std::vector<Account*> out;
      for (std::size_t i = 0; i < n; ++i) out.push_back(&*accounts_[next++]);
      return out;
    };
    const auto pair_senders = take(pair_accounts);
    const auto pair_receivers = take(pair_accounts);
    const auto offline_senders = take(offline);
    const auto offline_receiver = take(offline > 0 ? 1 : 0);
    const auto backlog_from = take(backlog_senders);
    const auto backlog_receiver = take(backlog_senders > 0 ? 1 : 0);
    const auto shared_accounts = take(shared);
    const auto group_from = take(group_senders);
    const auto group_to = take(group_members);

    start_flusher();
    bool ok = true;
    if (pair_accounts > 0) {
      if (!setup_pairs(pair_senders, pair_receivers)) return finish(false);
      if (o_.has("saturation")) ok = saturation() && ok;
      if (o_.has("fixed-rate")) ok = fixed_rate() && ok;
    }
    if (o_.has("logins")) {
      std::vector<Account*> login(shared_accounts.begin(),
                                  shared_accounts.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                                o_.login_accounts, shared)));
      ok = logins(login) && ok;
    }
    if (o_.has("idle-memory")) ok = idle_memory(shared_accounts) && ok;
    if (offline > 0) ok = offline_queue(offline_senders, offline_receiver[0]) && ok;
    if (backlog_senders > 0) ok = backlog(backlog_from, backlog_receiver[0]) && ok;
    // After every phase of 1:1 sends: its deliveries count in delivered_, which their quiesce()
    // compares with their own sends.
    if (group_senders > 0) ok = group(group_from, group_to) && ok;
    // Last: its thousands of short connections would move the server's memory under the
    // idle-memory phase's baseline.
    if (o_.has("tls-handshakes")) ok = tls_handshakes() && ok;
    if (o_.has("attachment")) ok = attachment() && ok;
    ok = verify() && ok;
    return finish(ok);
  }

 private:
  // --- plumbing ------------------------------------------------------------------------------

  void log(const std::string& line) {
    if (!o_.json_output) std::fprintf(stderr, "sotto-load: %s\n", line.c_str());
  }
  void error(const std::string& what) {
    errors_.push_back(what);
    std::fprintf(stderr, "sotto-load: error: %s\n", what.c_str());
  }
  static double secs(Clock::time_point since) {
    return std::chrono::duration<double>(Clock::now() - since).count();
  }
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", v);
    return b;
  }
  static double round1(double v) { return std::round(v * 10) / 10; }
  static double round3(double v) { return std::round(v * 1000) / 1000; }

  void raise_fd_limit() {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
      r.rlim_cur = r.rlim_max;
      (void)::setrlimit(RLIMIT_NOFILE, &r);
    }
    if (::getrlimit(RLIMIT_NOFILE, &r) == 0) results_["fd_limit"] = r.rlim_cur;
  }

  net::ClientOptions client_options(std::size_t i = 0) const {
    net::ClientOptions c;
    c.host = ep_.host;
    c.port = ep_.port;
    c.fingerprint = ep_.fingerprint;
    c.connect_timeout = 20s;
    const std::size_t n = source_address_count();
    if (n > 1) c.source_address = "127.0.0." + std::to_string(1 + i % n);
    return c;
  }

  std::size_t source_address_count() const {
    if (ep_.host.rfind("127.", 0) != 0) return 1;  // only loopback has every 127.0.0.x
    if (o_.source_addresses > 0) return std::min<std::size_t>(o_.source_addresses, 250);
    return std::max<std::size_t>(1, (o_.idle_connections + 3999) / 4000);
  }

  // Destroys peers on several threads: each waits for its close handshake.
  static void destroy_parallel(std::vector<std::unique_ptr<Peer>>& peers) {
    constexpr std::size_t kThreads = 8;
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        for (std::size_t i = next++; i < peers.size(); i = next++) peers[i].reset();
      });
    }
    for (auto& th : threads) th.join();
    peers.clear();
  }

  void generate_accounts(std::size_t n) {
    accounts_.resize(n);
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&] {
        for (std::size_t i = next++; i < n; i = next++) {
          accounts_[i] = std::make_unique<Account>(make_account(
              "ld" + run_tag_ + "-" + std::to_string(i), o_.pre_keys, crypto::system_rng()));
        }
      });
    }
    for (auto& th : threads) th.join();
  }

  // Registers every account over a few connections, each with a window of requests in flight.
  bool register_accounts() {
    std::vector<std::unique_ptr<Peer>> conns;
    for (std::size_t c = 0; c < kRegistrationConnections; ++c) {
      auto p = std::make_unique<Peer>(pool_, client_options(c));
      if (!connect_blocking(*p)) return false;
      conns.push_back(std::move(p));
    }
    std::atomic<std::size_t> next{0}, done{0}, failed{0};
    std::mutex err_mu;
    std::string first_error;
    Waiter waiter;
    std::function<void(Peer&)> issue = [&](Peer& p) {
      const std::size_t i = next++;
      if (i >= accounts_.size()) return;
      Account& a = *accounts_[i];
      auto req = register_request(a, crypto::system_rng());
      const bool sent = p.call(std::move(req), [&, &acc = a, &conn = p](const svc::Response& r) {
        if (r.status().code() == svc::OK) {
          acc.device_id = r.register_().device_id();
        } else {
          ++failed;
          std::lock_guard lock(err_mu);
          if (first_error.empty()) first_error = r.status().message();
        }
        issue(conn);  // before counting: the waiting thread may return once all are done
        waiter.count(done);
      });
      if (!sent) {
        ++failed;
        waiter.count(done);
      }
    };
    for (auto& p : conns) {
      for (std::size_t w = 0; w < kRegistrationWindow; ++w) issue(*p);
    }
    const bool finished = waiter.wait([&] { return done.load() >= accounts_.size(); }, 10min);
    destroy_parallel(conns);
    if (!finished || failed > 0) {
      error("registration: " + std::to_string(failed.load()) + " failed" +
            (first_error.empty() ? std::string() : " (" + first_error + ")"));
      return false;
    }
    return true;
  }

  bool connect_blocking(Peer& p) {
    std::promise<std::string> result;
    auto f = result.get_future();
    p.connect([&result](bool ok, const std::string& e) { result.set_value(ok ? "" : e); });
    const std::string e = f.get();
    if (!e.empty()) error("connect: " + e);
    return e.empty();
  }

  // Connects and logs in every account, at most `concurrency` attempts at a time, spreading the
  // connections over the source addresses. `on_push` (may be empty) is installed before connect.
  std::vector<std::unique_ptr<Peer>> open_logged_in(
      const std::vector<Account*>& accounts, std::size_t concurrency,
      const std::function<Peer::PushFn(std::size_t)>& on_push, std::size_t* failures) {
    std::vector<std::unique_ptr<Peer>> peers(accounts.size());
    for (std::size_t i = 0; i < accounts.size(); ++i) {
      peers[i] = std::make_unique<Peer>(pool_, client_options(i));
      if (on_push) peers[i]->on_push(on_push(i));
    }
    std::atomic<std::size_t> next{0}, done{0}, failed{0};
    std::mutex err_mu;
    std::string first_error;
    Waiter waiter;
    std::function<void()> start_one = [&] {
      const std::size_t i = next++;
      if (i >= accounts.size()) return;
      Peer& p = *peers[i];
      auto finish_one = [&](bool ok, const std::string& e) {
        if (!ok) {
          ++failed;
          std::lock_guard lock(err_mu);
          if (first_error.empty()) first_error = e;
        }
        start_one();  // before counting: the waiting thread may return once all are done
        waiter.count(done);
      };
      p.connect([&, i, finish_one](bool ok, const std::string& e) {
        if (!ok) return finish_one(false, "connect: " + e);
        peers[i]->login(*accounts[i], finish_one);
      });
    };
    for (std::size_t c = 0; c < std::min(concurrency, accounts.size()); ++c) start_one();
    waiter.wait([&] { return done.load() >= accounts.size(); }, 10min);
    if (failures != nullptr) *failures = failed.load();
    if (failed > 0)
      error("open: " + std::to_string(failed.load()) + " of " + std::to_string(accounts.size()) +
            " logins failed (" + first_error + ")");
    return peers;
  }

  // --- messages ------------------------------------------------------------------------------

  // Content: sender index (4), sequence (8), send time in steady-clock ns (8), then random bytes
  // up to message_bytes. Opaque to the server, as ciphertext is.
  // `bytes`: the content's size (0: --message-bytes).
  void send_one(Sender& s, std::int64_t stamp_ns, bool refill, std::size_t bytes = 0) {
    svc::Request r;
    auto* send = r.mutable_send();
    std::uint64_t seq = 0;
    {
      std::lock_guard lock(s.mu);
      seq = s.next_seq++;
    }
    // As the client library does: the time in milliseconds first (6 bytes, big-endian; the
    // server keeps its dedup rows in that order), then what makes it unique in this run.
    const auto wall_ms =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
    std::array<std::uint8_t, contract::kIdUniqueBytes> unique{};
    std::memcpy(unique.data(), cmid_prefix_.data(), 2);
    put_u32(unique.data() + 2, s.index);
    put_u32(unique.data() + 6, static_cast<std::uint32_t>(seq));
    const contract::TimeOrderedId cmid = contract::time_ordered_id(wall_ms, unique);
    send->set_recipient(s.to->account->username);
    send->set_client_message_id(cmid.data(), cmid.size());
    send->set_timestamp(
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count()));
    auto* m = send->add_messages();
    m->set_destination(s.to->account->username);
    m->set_device_id(s.to->account->device_id);
    m->set_registration_id(s.to->account->registration_id);
    m->set_type(kMessageTypeSignal);
    std::string content(std::max(bytes > 0 ? bytes : o_.message_bytes, kMessageHeader), '\0');
    auto* c = reinterpret_cast<std::uint8_t*>(content.data());
    put_u32(c, s.index);
    put_u64(c + 4, seq);
    put_u64(c + 12, static_cast<std::uint64_t>(stamp_ns));
    const std::size_t rest = content.size() - kMessageHeader;
    const std::size_t off =
        (seq * 131) % (random_pool_.size() - std::min(rest, random_pool_.size() - 1));
    std::memcpy(c + kMessageHeader, random_pool_.data() + off,
                std::min(rest, random_pool_.size() - off));
    m->set_content(std::move(content));

    s.outstanding.fetch_add(1);
    const bool sent =
        s.peer->call(std::move(r), [this, &s, seq, refill](const svc::Response& resp) {
          if (resp.status().code() == svc::OK) {
            s.ok.fetch_add(1);
          } else {
            {
              std::lock_guard lock(s.mu);
              s.failed.push_back(seq);
            }
            note_refusal(resp.status().code(), resp.status().message());
          }
          last_send_response_ns_.store(now_ns());
          s.outstanding.fetch_sub(1);
          if (refill && s.keep_window.load()) send_one(s, now_ns(), true);
          waiter_.notify();
        });
    if (!sent) {
      std::lock_guard lock(s.mu);
      s.failed.push_back(seq);
      s.outstanding.fetch_sub(1);
      ++send_errors_;
    }
  }

  void note_refusal(int code, const std::string& message) {
    std::lock_guard lock(refusal_mu_);
    ++refusals_[std::to_string(code) + " " + message];
  }

  Peer::PushFn receiver_push(Receiver& rc) {
    return [this, &rc](const svc::Push& p) {
      if (p.has_queue_drained()) {
        rc.drained.store(true);
        flush_acks(rc);
        waiter_.notify();
        return;
      }
      if (!p.has_envelope()) return;  // keys_low and the like: nothing to measure
      const auto& env = p.envelope();
      const auto& content = env.content();
      const auto now = now_ns();
      bool flush = false;
      {
        std::lock_guard lock(rc.mu);
        rc.pending_acks.push_back(env.id());
        flush = rc.pending_acks.size() >= o_.ack_batch;
        if (content.size() < kMessageHeader || env.id().size() != 16) {
          ++rc.malformed;
        } else {
          const auto* c = reinterpret_cast<const std::uint8_t*>(content.data());
          const std::uint32_t from = get_u32(c);
          const std::uint64_t seq = get_u64(c + 4);
          const auto sent_ns = static_cast<std::int64_t>(get_u64(c + 12));
          const auto* idb = reinterpret_cast<const std::uint8_t*>(env.id().data());
          const std::uint64_t tag = (get_u64(idb) ^ get_u64(idb + 8)) | 1;
          auto& seen = rc.seen[from];
          if (seen.size() <= seq) seen.resize(std::max<std::size_t>(seq + 1, seen.size() * 2), 0);
          if (seen[seq] == 0) {
            seen[seq] = tag;
            ++rc.unique;
            delivered_.fetch_add(1, std::memory_order_relaxed);
            if (sent_ns >= record_from_ns_.load() && sent_ns < record_to_ns_.load()) {
              rc.latencies_us.push_back(static_cast<std::uint32_t>(
                  std::clamp<std::int64_t>((now - sent_ns) / 1000, 0, UINT32_MAX)));
            }
          } else if (seen[seq] == tag) {
            ++rc.redelivered;
          } else {
            ++rc.duplicates;
          }
        }
      }
      if (flush) {
        flush_acks(rc);
      } else {
        wake_flusher();
      }
    };
  }

  // The flusher sleeps until acknowledgements wait.
  void wake_flusher() {
    if (acks_waiting_.exchange(true)) return;
    std::lock_guard lock(flusher_mu_);
    flusher_cv_.notify_all();
  }

  void flush_acks(Receiver& rc) {
    std::vector<std::string> ids;
    {
      std::lock_guard lock(rc.mu);
      if (rc.pending_acks.empty()) return;
      if (!rc.peer) {  // not connected yet: they wait for the flusher's next round
        wake_flusher();
        return;
      }
      ids.swap(rc.pending_acks);
    }
    svc::Request r;
    auto* ack = r.mutable_ack();
    for (auto& id : ids) ack->add_envelope_ids(std::move(id));
    const std::size_t n = ids.size();
    rc.peer->call(std::move(r), [this, &rc, n](const svc::Response& resp) {
      if (resp.status().code() != svc::OK) {
        note_refusal(resp.status().code(), "ack: " + resp.status().message());
        return;
      }
      rc.acked.fetch_add(n);
      rc.last_ack_ns.store(now_ns());
      waiter_.notify();
    });
  }

  // Flushes acknowledgements that wait for a batch to fill, as a client would on a short timer.
  void start_flusher() {
    flusher_ = std::thread([this] {
      std::unique_lock lock(flusher_mu_);
      while (!flusher_stop_) {
        // Asleep while no acknowledgement waits (a periodic wake-up would cost the phases that
        // acknowledge nothing, the logins above all, two thread switches every period).
        flusher_cv_.wait(lock, [this] { return flusher_stop_ || acks_waiting_.load(); });
        flusher_cv_.wait_for(lock, std::chrono::duration<double, std::milli>(o_.ack_delay_ms),
                             [this] { return flusher_stop_; });
        acks_waiting_.store(false);  // before the flush: one queued after it wakes us again
        std::vector<Receiver*> rs;
        {
          std::lock_guard rl(receivers_mu_);
          for (auto& r : receivers_) rs.push_back(r.get());
        }
        lock.unlock();
        for (auto* r : rs) flush_acks(*r);
        lock.lock();
      }
    });
  }
  void stop_flusher() {
    {
      std::lock_guard lock(flusher_mu_);
      flusher_stop_ = true;
    }
    flusher_cv_.notify_all();
    if (flusher_.joinable()) flusher_.join();
  }

  Sender& add_sender(Account* a, Receiver* to) {
    auto s = std::make_unique<Sender>();
    s->index = static_cast<std::uint32_t>(senders_.size());
    s->account = a;
    s->to = to;
    senders_.push_back(std::move(s));
    return *senders_.back();
  }
  Receiver& add_receiver(Account* a) {
    auto r = std::make_unique<Receiver>();
    r->account = a;
    std::lock_guard lock(receivers_mu_);
    receivers_.push_back(std::move(r));
    return *receivers_.back();
  }

  std::uint64_t total_ok() const {
    std::uint64_t n = 0;
    for (const auto& s : senders_) n += s->ok.load();
    return n;
  }
  std::int64_t total_outstanding() const {
    std::int64_t n = 0;
    for (const auto& s : senders_) n += s->outstanding.load();
    return n;
  }

  // Until every send has its response and every accepted message has arrived. A server that
  // fell behind (a fixed rate above what it sustains) is given the time it needs as long as it
  // makes progress, so that the next phase does not measure this one's backlog.
  bool quiesce(const std::string& phase) {
    const auto done = [&] { return total_outstanding() == 0 && delivered_.load() >= total_ok(); };
    const auto started = Clock::now();
    auto progress = std::make_pair(delivered_.load(), total_ok());
    auto last_progress = Clock::now();
    while (!done()) {
      (void)waiter_.wait(done, 1s);
      const auto now_progress = std::make_pair(delivered_.load(), total_ok());
      if (now_progress != progress) {
        progress = now_progress;
        last_progress = Clock::now();
      }
      if (done()) break;
      if (Clock::now() - last_progress > kStallTimeout || Clock::now() - started > kQuiesceLimit) {
        error(phase + ": not quiescent: outstanding sends " + std::to_string(total_outstanding()) +
              ", delivered " + std::to_string(delivered_.load()) + " of " +
              std::to_string(total_ok()));
        return false;
      }
    }
    const double waited = secs(started);
    if (waited > 1) log(phase + ": the server needed " + fmt(waited) + " s to deliver its backlog");
    quiesce_s_[phase] = round1(waited);
    return true;
  }

  std::vector<std::uint32_t> take_latencies() {
    std::vector<std::uint32_t> all;
    for (auto& r : receivers_) {
      std::lock_guard lock(r->mu);
      all.insert(all.end(), r->latencies_us.begin(), r->latencies_us.end());
      r->latencies_us.clear();
    }
    return all;
  }

  // --- phases --------------------------------------------------------------------------------

  bool setup_pairs(const std::vector<Account*>& from, const std::vector<Account*>& to) {
    std::vector<Receiver*> rs;
    for (auto* a : to) rs.push_back(&add_receiver(a));
    for (std::size_t i = 0; i < from.size(); ++i)
      pair_senders_.push_back(&add_sender(from[i], rs[i]));
    std::size_t failed = 0;
    auto rpeers = open_logged_in(
        to, 32, [&](std::size_t i) { return receiver_push(*rs[i]); }, &failed);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      std::lock_guard lock(rs[i]->mu);
      rs[i]->peer = std::move(rpeers[i]);
    }
    auto speers = open_logged_in(from, 32, nullptr, &failed);
    for (std::size_t i = 0; i < from.size(); ++i) pair_senders_[i]->peer = std::move(speers[i]);
    if (failed > 0) return false;
    // Live delivery starts once a device's stored queue has been pushed once.
    return waiter_.wait(
        [&] {
          return std::all_of(rs.begin(), rs.end(), [](Receiver* r) { return r->drained.load(); });
        },
        30s);
  }

  bool saturation() {
    log("saturation: " + std::to_string(o_.pairs) + " pairs, window " + std::to_string(o_.window));
    const std::uint64_t ok_before = total_ok();
    for (auto* s : pair_senders_) s->keep_window.store(true);
    record_from_ns_.store(now_ns() + static_cast<std::int64_t>(o_.warmup_s * 1e9));
    record_to_ns_.store(INT64_MAX);
    for (auto* s : pair_senders_) {
      for (std::size_t w = 0; w < o_.window; ++w) send_one(*s, now_ns(), true);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.warmup_s));
    const auto d0 = delivered_.load();
    const auto ok0 = total_ok();
    const auto t0 = now_ns();
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.duration_s));
    const auto d1 = delivered_.load();
    const auto ok1 = total_ok();
    const auto t1 = now_ns();
    record_to_ns_.store(t1);
    for (auto* s : pair_senders_) s->keep_window.store(false);
    const bool ok = quiesce("saturation");
    const double dt = seconds_between(t0, t1);
    const auto lat = summarize(take_latencies());
    json j;
    j["pairs"] = o_.pairs;
    j["window"] = o_.window;
    j["message_bytes"] = o_.message_bytes;
    j["measured_s"] = round3(dt);
    j["delivered_msgs_per_s"] = round1(static_cast<double>(d1 - d0) / dt);
    j["accepted_msgs_per_s"] = round1(static_cast<double>(ok1 - ok0) / dt);
    j["messages_sent"] = total_ok() - ok_before;
    j["latency_p50_ms"] = round3(lat.p50_ms);
    j["latency_p99_ms"] = round3(lat.p99_ms);
    results_["saturation"] = j;
    results_["saturation_msgs_per_s"] = j["delivered_msgs_per_s"];
    log("saturation: " + fmt(j["delivered_msgs_per_s"].get<double>()) + " msg/s delivered");
    return ok;
  }

  bool fixed_rate() {
    log("fixed-rate: " + fmt(o_.rate) + " msg/s for " + fmt(o_.fixed_duration_s) + " s");
    const double warm = std::min(1.0, o_.fixed_duration_s / 4);
    const std::int64_t start = now_ns() + 10'000'000;
    const std::int64_t end = start + static_cast<std::int64_t>(o_.fixed_duration_s * 1e9);
    record_from_ns_.store(start + static_cast<std::int64_t>(warm * 1e9));
    record_to_ns_.store(end);
    const double interval_ns = 1e9 / o_.rate;
    std::uint64_t k = 0;
    // Latency counts from each message's scheduled time, not from when the pacer got to it:
    // a stalled sender must not hide the delay it caused (coordinated omission).
    for (;;) {
      const std::int64_t now = now_ns();
      if (now >= end) break;
      while (true) {
        const auto due = start + static_cast<std::int64_t>(static_cast<double>(k) * interval_ns);
        if (due > now || due >= end) break;
        send_one(*pair_senders_[k % pair_senders_.size()], due, false);
        ++k;
      }
      const auto next_due = start + static_cast<std::int64_t>(static_cast<double>(k) * interval_ns);
      std::this_thread::sleep_for(
          std::chrono::nanoseconds(std::max<std::int64_t>(0, next_due - now_ns())));
    }
    const bool ok = quiesce("fixed-rate");
    const auto lat = summarize(take_latencies());
    json j;
    j["rate"] = o_.rate;
    j["sent"] = k;
    j["sent_per_s"] = round1(static_cast<double>(k) / seconds_between(start, end));
    j["samples"] = lat.samples;
    j["p50_ms"] = round3(lat.p50_ms);
    j["p99_ms"] = round3(lat.p99_ms);
    j["max_ms"] = round3(lat.max_ms);
    results_["fixed_rate"] = j;
    log("fixed-rate: p50 " + fmt(lat.p50_ms) + " ms, p99 " + fmt(lat.p99_ms) + " ms");
    return ok;
  }

  // Logins with the TLS handshake (a fresh connection each), then logins on connections that
  // are already open (challenge + authenticate only).
  struct LoginLoop {
    double per_s = 0;
    // CPU per login over the measured interval, microseconds (0 when unknown).
    double server_cpu_us = 0;
    double tool_cpu_us = 0;
    std::uint64_t measured = 0;
    std::uint64_t resumed = 0;  // of `measured`
    std::uint64_t failed = 0;
    std::string first_error;
  };

  // Logins one after another on login_concurrency slots, each a new connection (TCP and TLS
  // handshakes, then the WebSocket upgrade carrying the login proof, answered by the server's
  // login result), closed once logged in. With `resume`, each
  // account keeps the TLS session of its previous connection (as the client library does).
  LoginLoop login_loop(const std::vector<Account*>& accounts, bool resume) {
    struct Slot {
      std::unique_ptr<Peer> peer;
    };
    std::vector<Slot> slots(o_.login_concurrency);
    std::atomic<std::uint64_t> completed{0}, failed{0}, in_flight{0}, resumed{0};
    std::atomic<std::size_t> next_account{0};
    std::atomic<bool> running{true};
    std::mutex reap_mu;
    std::condition_variable reap_cv;
    std::deque<std::unique_ptr<Peer>> to_reap;
    bool reaping_done = false;
    // Reapers take the whole batch at once: one lock per batch, not one per peer, so the I/O
    // threads that queue peers seldom find the lock taken. A peer whose close handshake is
    // still under way waits for the next batch (its destructor would wait for the end, a thread
    // switch each way), except at the end.
    std::size_t kept_back = 0;  // guarded by reap_mu
    std::vector<std::thread> reapers;
    for (int t = 0; t < 2; ++t) {
      reapers.emplace_back([&] {
        std::unique_lock lock(reap_mu);
        for (;;) {
          reap_cv.wait_for(lock, 20ms,
                           [&] { return reaping_done || to_reap.size() >= 64 + kept_back; });
          if (to_reap.empty()) {
            if (reaping_done) return;
            continue;
          }
          std::deque<std::unique_ptr<Peer>> batch;
          batch.swap(to_reap);
          const bool last = reaping_done;
          lock.unlock();
          std::deque<std::unique_ptr<Peer>> closing;
          if (!last) {
            for (auto& p : batch) {
              if (p->is_open()) closing.push_back(std::move(p));
            }
          }
          batch.clear();
          lock.lock();
          for (auto& p : closing) to_reap.push_back(std::move(p));
          kept_back = to_reap.size();  // the next batch waits for 64 new ones (or 20 ms)
        }
      });
    }
    std::string first_error;
    std::mutex err_mu;
    std::function<void(std::size_t)> start = [&](std::size_t slot) {
      if (!running.load()) return;
      Account* a = accounts[next_account++ % accounts.size()];
      auto options = Peer::logging_in(client_options(slot), *a);
      if (resume) options.session = a->tls_session;
      auto peer = std::make_unique<Peer>(pool_, options);
      Peer* p = peer.get();
      {
        std::lock_guard lock(reap_mu);
        if (slots[slot].peer) to_reap.push_back(std::move(slots[slot].peer));
        slots[slot].peer = std::move(peer);
        // Destroyed in batches: a wake-up per login costs the two cores more than the reaping.
        if (to_reap.size() >= 64 + kept_back) reap_cv.notify_one();
      }
      in_flight.fetch_add(1);
      auto done = [&, slot, p](bool ok, const std::string& e) {
        if (ok) {
          if (p->resumed()) resumed.fetch_add(1);
          completed.fetch_add(1);
        } else {
          failed.fetch_add(1);
          std::lock_guard lock(err_mu);
          if (first_error.empty()) first_error = e;
        }
        p->close();  // on this peer's own strand: only starts the close (a refused login too)
        // The next login first, while this one still counts as in flight (so the loop cannot
        // end and take its locals along meanwhile); the count last.
        start(slot);
        waiter_.count_down(in_flight);
      };
      p->connect([&, p, a, done](bool ok, const std::string& e) {
        if (!ok) return done(false, "connect: " + e);
        p->login(*a, done);
      });
    };
    for (std::size_t s = 0; s < slots.size(); ++s) start(s);
    const double warm = std::min(1.0, o_.login_duration_s / 4);
    std::this_thread::sleep_for(std::chrono::duration<double>(warm));
    const auto c0 = completed.load();
    const auto r0 = resumed.load();
    const auto t0 = now_ns();
    const auto server_cpu0 = ep_.pid != 0 ? cpu_seconds(ep_.pid) : std::nullopt;
    const auto tool_cpu0 = cpu_seconds(::getpid());
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.login_duration_s));
    const auto c1 = completed.load();
    const auto r1 = resumed.load();
    const auto t1 = now_ns();
    const auto server_cpu1 = ep_.pid != 0 ? cpu_seconds(ep_.pid) : std::nullopt;
    const auto tool_cpu1 = cpu_seconds(::getpid());
    running.store(false);
    // Every callback above uses this frame until its count_down: never leave before all are in.
    // A login has no deadline of its own once connected, so a server that stops answering would
    // keep one in flight; then there is no safe way on.
    if (!waiter_.wait([&] { return in_flight.load() == 0; }, 5min)) {
      error("logins: " + std::to_string(in_flight.load()) + " logins never completed");
      std::_Exit(3);
    }
    {
      std::lock_guard lock(reap_mu);
      for (auto& s : slots) {
        if (s.peer) to_reap.push_back(std::move(s.peer));
      }
      reaping_done = true;
    }
    reap_cv.notify_all();
    for (auto& th : reapers) th.join();

    LoginLoop out;
    out.per_s = static_cast<double>(c1 - c0) / seconds_between(t0, t1);
    if (c1 > c0) {
      const double n = static_cast<double>(c1 - c0);
      if (server_cpu0 && server_cpu1) out.server_cpu_us = (*server_cpu1 - *server_cpu0) * 1e6 / n;
      if (tool_cpu0 && tool_cpu1) out.tool_cpu_us = (*tool_cpu1 - *tool_cpu0) * 1e6 / n;
    }
    out.measured = c1 - c0;
    out.resumed = r1 - r0;
    out.failed = failed.load();
    out.first_error = first_error;
    return out;
  }

  bool logins(const std::vector<Account*>& accounts) {
    if (accounts.empty()) return true;
    log("logins: " + std::to_string(o_.login_concurrency) + " at a time for " +
        fmt(o_.login_duration_s) + " s, full handshakes, then as long resuming TLS sessions");
    const LoginLoop full = login_loop(accounts, false);
    const LoginLoop resumed = login_loop(accounts, true);
    json j;
    j["concurrency"] = o_.login_concurrency;
    j["accounts"] = accounts.size();
    j["with_handshake_per_s"] = round1(full.per_s);
    j["with_resumed_handshake_per_s"] = round1(resumed.per_s);
    // What a login costs each side: the server's figure is what bounds its rate once the
    // clients run elsewhere (here both share the machine's cores).
    j["server_cpu_us_per_login"] = round1(full.server_cpu_us);
    j["server_cpu_us_per_resumed_login"] = round1(resumed.server_cpu_us);
    j["load_tool_cpu_us_per_login"] = round1(full.tool_cpu_us);
    j["load_tool_cpu_us_per_resumed_login"] = round1(resumed.tool_cpu_us);
    j["resumed_fraction"] = round3(resumed.measured > 0 ? static_cast<double>(resumed.resumed) /
                                                              static_cast<double>(resumed.measured)
                                                        : 0.0);
    j["full_handshakes_resumed"] = full.resumed;  // must be 0: no session was offered
    const std::uint64_t failed = full.failed + resumed.failed;
    j["failed"] = failed;
    if (failed > 0) {
      error("logins: " + std::to_string(failed) + " failed (" +
            (full.first_error.empty() ? resumed.first_error : full.first_error) + ")");
    }

    // Authentication alone, on connections opened beforehand.
    std::vector<Account*> open_accounts(
        accounts.begin(), accounts.begin() + static_cast<std::ptrdiff_t>(
                                                 std::min<std::size_t>(accounts.size(), 1000)));
    std::vector<std::unique_ptr<Peer>> peers;
    std::atomic<std::size_t> connected{0}, conn_failed{0};
    for (std::size_t i = 0; i < open_accounts.size(); ++i) {
      peers.push_back(std::make_unique<Peer>(pool_, client_options(i)));
    }
    std::atomic<std::size_t> next_conn{0};
    std::function<void()> connect_next = [&] {
      const std::size_t i = next_conn++;
      if (i >= peers.size()) return;
      peers[i]->connect([&](bool ok, const std::string&) {
        if (!ok) ++conn_failed;
        connect_next();
        ++connected;
        waiter_.notify();
      });
    };
    for (int c = 0; c < 64; ++c) connect_next();
    waiter_.wait([&] { return connected.load() >= peers.size(); }, 60s);
    std::atomic<std::size_t> authed{0}, auth_failed{0};
    const auto a0 = now_ns();
    std::atomic<std::int64_t> a1{0};
    for (std::size_t i = 0; i < peers.size(); ++i) {
      peers[i]->login(*open_accounts[i], [&](bool ok, const std::string&) {
        if (!ok) ++auth_failed;
        if (++authed == peers.size()) a1.store(now_ns());
        waiter_.notify();
      });
    }
    waiter_.wait([&] { return authed.load() >= peers.size(); }, 60s);
    if (a1.load() > a0) {
      j["on_open_connections_per_s"] = round1(
          static_cast<double>(peers.size() - auth_failed.load()) / seconds_between(a0, a1.load()));
      j["on_open_connections"] = peers.size();
    }
    if (conn_failed > 0 || auth_failed > 0) {
      error("logins on open connections: " + std::to_string(conn_failed.load()) + " connects and " +
            std::to_string(auth_failed.load()) + " logins failed");
    }
    destroy_parallel(peers);
    results_["logins"] = j;
    results_["logins_per_s"] = j["with_handshake_per_s"];
    results_["logins_resumed_per_s"] = j["with_resumed_handshake_per_s"];
    log("logins: " + fmt(j["with_handshake_per_s"].get<double>()) +
        "/s with a full TLS handshake, " + fmt(j["with_resumed_handshake_per_s"].get<double>()) +
        "/s resuming (" + fmt(100 * j["resumed_fraction"].get<double>()) + "% resumed)");
    return failed == 0 && conn_failed == 0 && auth_failed == 0;
  }

  // The ceiling under the logins: TLS handshakes alone against the same server, as many at a
  // time and as long as the logins phase's (tls_ceiling.h).
  bool tls_handshakes() {
    log("tls-handshakes: " + std::to_string(o_.login_concurrency) + " at a time for " +
        fmt(o_.login_duration_s) + " s, full, then as long resuming");
    const TlsCeiling full =
        measure_tls_ceiling(ep_.host, ep_.port, o_.login_concurrency, o_.login_duration_s, false);
    const TlsCeiling resumed =
        measure_tls_ceiling(ep_.host, ep_.port, o_.login_concurrency, o_.login_duration_s, true);
    json j;
    j["concurrency"] = o_.login_concurrency;
    j["full_per_s"] = round1(full.per_s);
    j["resumed_per_s"] = round1(resumed.per_s);
    j["resumed_fraction"] = round3(resumed.measured > 0 ? static_cast<double>(resumed.resumed) /
                                                              static_cast<double>(resumed.measured)
                                                        : 0.0);
    j["failed"] = full.failed + resumed.failed;
    results_["tls_handshakes"] = j;
    log("tls-handshakes: " + fmt(full.per_s) + "/s full, " + fmt(resumed.per_s) + "/s resumed (" +
        fmt(100 * j["resumed_fraction"].get<double>()) + "% resumed)");
    if (full.failed + resumed.failed > 0 || full.measured == 0) {
      error("tls-handshakes: " + std::to_string(full.failed + resumed.failed) + " failed, " +
            std::to_string(full.measured) + " measured");
      return false;
    }
    return true;
  }

  // Upload and download throughput of one attachment against a plain TLS copy of the same bytes
  // on loopback (attachment_phase.h). The goal is at least half the copy's rate.
  bool attachment() {
    const std::size_t bytes = o_.attachment_mb << 20;
    log("attachment: " + std::to_string(o_.attachment_mb) + " MiB up and down");
    const AttachmentFigures f = measure_attachments(ep_.host, ep_.port, ep_.fingerprint, bytes);
    if (!f.error.empty()) {
      error("attachment: " + f.error);
      return false;
    }
    json j;
    j["bytes"] = bytes;
    j["upload_mb_s"] = round1(f.upload_mb_s);
    j["download_mb_s"] = round1(f.download_mb_s);
    j["tls_copy_mb_s"] = round1(f.tls_copy_mb_s);
    j["tls_copy_fsync_mb_s"] = round1(f.tls_copy_disk_mb_s);
    j["upload_of_tls_copy"] = round3(f.tls_copy_mb_s > 0 ? f.upload_mb_s / f.tls_copy_mb_s : 0);
    j["download_of_tls_copy"] = round3(f.tls_copy_mb_s > 0 ? f.download_mb_s / f.tls_copy_mb_s : 0);
    results_["attachment"] = j;
    log("attachment: upload " + fmt(f.upload_mb_s) + " MB/s, download " + fmt(f.download_mb_s) +
        " MB/s; plain TLS copy " + fmt(f.tls_copy_mb_s) + " MB/s (" + fmt(f.tls_copy_disk_mb_s) +
        " MB/s written and fsynced)");
    return true;
  }

  bool idle_memory(const std::vector<Account*>& accounts) {
    if (ep_.pid == 0) {
      error("idle-memory: the server's pid is unknown (--server-pid or --spawn-server)");
      return false;
    }
    log("idle-memory: " + std::to_string(accounts.size()) + " connections over " +
        std::to_string(source_address_count()) + " source addresses");
    std::this_thread::sleep_for(1s);  // connections of earlier phases finish closing
    const auto server0 = resident_bytes(ep_.pid);
    const auto self0 = resident_bytes(::getpid());
    const auto t0 = Clock::now();
    std::size_t failed = 0;
    auto peers = open_logged_in(accounts, 128, nullptr, &failed);
    const double open_s = secs(t0);
    // Idle: nothing in flight any more.
    std::this_thread::sleep_for(std::chrono::duration<double>(o_.idle_hold_s));
    const auto server1 = resident_bytes(ep_.pid);
    const auto self1 = resident_bytes(::getpid());
    std::size_t open = 0;
    for (auto& p : peers) open += p->is_open() ? 1 : 0;
    json j;
    j["connections"] = accounts.size();
    j["open_at_measurement"] = open;
    j["source_addresses"] = source_address_count();
    j["opened_per_s"] = round1(static_cast<double>(accounts.size()) / open_s);
    if (server0 && server1 && open > 0) {
      j["server_rss_before_bytes"] = *server0;
      j["server_rss_after_bytes"] = *server1;
      const double per = (static_cast<double>(*server1) - static_cast<double>(*server0)) /
                         static_cast<double>(open);
      j["server_bytes_per_connection"] = std::round(per);
      results_["idle_connections"] = open;
      results_["bytes_per_idle_connection"] = std::round(per);
    }
    if (self0 && self1 && open > 0) {
      j["load_tool_bytes_per_connection"] = std::round(
          (static_cast<double>(*self1) - static_cast<double>(*self0)) / static_cast<double>(open));
    }
    destroy_parallel(peers);
    std::this_thread::sleep_for(1s);
    if (auto server2 = resident_bytes(ep_.pid)) j["server_rss_after_close_bytes"] = *server2;
    results_["idle_memory"] = j;
    log("idle-memory: " + std::to_string(open) + " open, " +
        fmt(j.value("server_bytes_per_connection", 0.0)) + " bytes each");
    if (open != accounts.size()) {
      error("idle-memory: only " + std::to_string(open) + " of " + std::to_string(accounts.size()) +
            " connections open at measurement");
    }
    return failed == 0 && open == accounts.size();
  }

  bool offline_queue(const std::vector<Account*>& from, Account* to) {
    log("offline: " + std::to_string(o_.offline_messages) + " messages from " +
        std::to_string(from.size()) + " senders");
    Receiver& rc = add_receiver(to);
    std::vector<Sender*> ss;
    for (auto* a : from) ss.push_back(&add_sender(a, &rc));
    std::size_t failed = 0;
    auto speers = open_logged_in(from, 32, nullptr, &failed);
    for (std::size_t i = 0; i < ss.size(); ++i) ss[i]->peer = std::move(speers[i]);
    if (failed > 0) return false;

    // Store: each sender keeps a window of sends in flight until its share is sent.
    const std::uint64_t ok_before = total_ok();
    const std::size_t per = o_.offline_messages / ss.size();
    std::vector<std::size_t> share(ss.size(), per);
    share[0] += o_.offline_messages - per * ss.size();
    std::vector<std::unique_ptr<std::atomic<std::size_t>>> issued;
    for (std::size_t i = 0; i < ss.size(); ++i)
      issued.push_back(std::make_unique<std::atomic<std::size_t>>(0));
    const auto t0 = now_ns();
    // Windowed by hand: send_one's refill is for the saturation phase's open-ended stream.
    std::vector<std::thread> drivers;
    for (std::size_t i = 0; i < ss.size(); ++i) {
      drivers.emplace_back([&, i] {
        Sender& s = *ss[i];
        while (issued[i]->load() < share[i]) {
          if (s.outstanding.load() >= static_cast<std::int64_t>(o_.offline_window)) {
            waiter_.wait(
                [&] { return s.outstanding.load() < static_cast<std::int64_t>(o_.offline_window); },
                10s);
            continue;
          }
          send_one(s, now_ns(), false);
          issued[i]->fetch_add(1);
        }
      });
    }
    for (auto& d : drivers) d.join();
    const bool stored = waiter_.wait([&] { return total_outstanding() == 0; }, kQuiesceTimeout);
    const auto t1 = last_send_response_ns_.load();
    const std::uint64_t accepted = total_ok() - ok_before;
    json j;
    j["messages"] = o_.offline_messages;
    j["senders"] = ss.size();
    j["window"] = o_.offline_window;
    j["accepted"] = accepted;
    j["stored_per_s"] = round1(static_cast<double>(accepted) / seconds_between(t0, t1));
    results_["offline_stored_per_s"] = j["stored_per_s"];
    if (!stored || accepted != o_.offline_messages) {
      error("offline: " + std::to_string(accepted) + " of " + std::to_string(o_.offline_messages) +
            " sends accepted");
      results_["offline"] = j;
      return false;
    }

    // Drain: the device comes online, gets every stored message and acknowledges it.
    auto peer = std::make_unique<Peer>(pool_, client_options(0));
    peer->on_push(receiver_push(rc));
    if (!connect_blocking(*peer)) return false;
    Peer* p = peer.get();
    {
      std::lock_guard lock(rc.mu);
      rc.peer = std::move(peer);
    }
    std::promise<std::string> login_result;
    const auto t2 = now_ns();
    p->login(*to, [&](bool ok, const std::string& e) { login_result.set_value(ok ? "" : e); });
    if (auto e = login_result.get_future().get(); !e.empty()) {
      error("offline: login " + e);
      return false;
    }
    const bool drained = waiter_.wait(
        [&] {
          std::lock_guard lock(rc.mu);
          return rc.unique >= accepted && rc.acked.load() >= rc.unique + rc.redelivered;
        },
        kQuiesceTimeout);
    const auto t3 = rc.last_ack_ns.load();
    j["drained"] = rc.acked.load();
    j["drained_per_s"] = round1(static_cast<double>(accepted) / seconds_between(t2, t3));
    results_["offline"] = j;
    results_["offline_drained_per_s"] = j["drained_per_s"];
    log("offline: stored " + fmt(j["stored_per_s"].get<double>()) + "/s, drained " +
        fmt(j["drained_per_s"].get<double>()) + "/s");
    if (!drained) error("offline: the queue did not drain");
    return drained;
  }

  // Group messages (service.proto MultiSendRequest): `from` senders each keep a window of
  // multi-recipient sends in flight to the same members, every one of them online, acknowledging
  // what arrives as the other phases' receivers do. One round per group size (members: the
  // senders' recipients plus the sender; the first `size - 1` of `members` are the recipients).
  // Measures envelopes/s the server fans out and delivers, and what a send costs its sender:
  // request bytes, the time to its answer (durable), and the server's CPU per envelope. Checks
  // that every accepted send reached every recipient exactly once.
  bool group(const std::vector<Account*>& from, const std::vector<Account*>& members) {
    log("group: " + std::to_string(from.size()) + " senders, window " +
        std::to_string(o_.group_window) + ", members online: " + std::to_string(members.size()));
    std::vector<Receiver*> rs;
    for (auto* a : members) rs.push_back(&add_receiver(a));
    std::size_t failed = 0;
    auto rpeers = open_logged_in(
        members, 32, [&](std::size_t i) { return receiver_push(*rs[i]); }, &failed);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      std::lock_guard lock(rs[i]->mu);
      rs[i]->peer = std::move(rpeers[i]);
    }
    if (failed > 0) return false;
    auto speers = open_logged_in(from, 32, nullptr, &failed);
    if (failed > 0) return false;
    // Their own Sender records, outside senders_: they have no single recipient (verify() pairs
    // each of senders_ with one receiver), and indices of their own.
    std::vector<std::unique_ptr<Sender>> ss;
    for (std::size_t i = 0; i < from.size(); ++i) {
      auto s = std::make_unique<Sender>();
      s->index = kGroupSenderIndex + static_cast<std::uint32_t>(i);
      s->account = from[i];
      s->peer = std::move(speers[i]);
      ss.push_back(std::move(s));
    }
    // Wait for every member's (empty) queue to be pushed: from then on pushes are live.
    if (!waiter_.wait(
            [&] {
              return std::all_of(rs.begin(), rs.end(),
                                 [](Receiver* r) { return r->drained.load(); });
            },
            kQuiesceTimeout)) {
      error("group: members did not drain");
      return false;
    }

    bool ok = true;
    json rounds = json::array();
    for (std::size_t size : o_.group_sizes) {
      const std::size_t recipients = std::min(size - 1, members.size());
      // The recipients part of every request, built once.
      svc::MultiSendRequest base;
      base.set_shared_type(kMessageTypeSenderKey);
      for (std::size_t i = 0; i < recipients; ++i) {
        auto* r = base.add_recipients();
        r->set_username(members[i]->username);
        auto* d = r->add_devices();
        d->set_device_id(members[i]->device_id);
        d->set_registration_id(members[i]->registration_id);
      }
      std::vector<std::uint64_t> unique_before(recipients);
      for (std::size_t i = 0; i < recipients; ++i) {
        std::lock_guard lock(rs[i]->mu);
        unique_before[i] = rs[i]->unique;
      }
      std::atomic<std::uint64_t> accepted{0}, refused{0}, request_bytes{0};
      std::atomic<bool> keep{true};
      std::mutex lat_mu;
      std::vector<std::uint32_t> answer_us;
      std::function<void(Sender&)> send = [&](Sender& s) {
        svc::Request r;
        auto* m = r.mutable_multi_send();
        *m = base;
        std::uint64_t seq = 0;
        {
          std::lock_guard lock(s.mu);
          seq = s.next_seq++;
        }
        const auto wall_ms =
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
        std::array<std::uint8_t, 16> cmid{};
        for (std::size_t i = 0; i < 6; ++i)
          cmid[i] = static_cast<std::uint8_t>(wall_ms >> (8 * (5 - i)));
        std::memcpy(cmid.data() + 6, cmid_prefix_.data(), 2);
        put_u32(cmid.data() + 8, s.index);
        put_u32(cmid.data() + 12, static_cast<std::uint32_t>(seq));
        m->set_client_message_id(cmid.data(), cmid.size());
        m->set_timestamp(wall_ms);
        const std::int64_t stamp = now_ns();
        std::string content(std::max(o_.message_bytes, kMessageHeader), '\0');
        auto* c = reinterpret_cast<std::uint8_t*>(content.data());
        put_u32(c, s.index);
        put_u64(c + 4, seq);
        put_u64(c + 12, static_cast<std::uint64_t>(stamp));
        const std::size_t rest = content.size() - kMessageHeader;
        std::memcpy(c + kMessageHeader, random_pool_.data(), std::min(rest, random_pool_.size()));
        m->set_shared_content(std::move(content));
        request_bytes.fetch_add(r.ByteSizeLong(), std::memory_order_relaxed);
        s.outstanding.fetch_add(1);
        const bool sent = s.peer->call(std::move(r), [&, stamp](const svc::Response& resp) {
          if (resp.status().code() == svc::OK) {
            accepted.fetch_add(1);
            const auto us = (now_ns() - stamp) / 1000;
            std::lock_guard lock(lat_mu);
            answer_us.push_back(
                static_cast<std::uint32_t>(std::clamp<std::int64_t>(us, 0, UINT32_MAX)));
          } else {
            refused.fetch_add(1);
            note_refusal(resp.status().code(), "group: " + resp.status().message());
          }
          if (keep.load()) send(s);
          waiter_.count_down(s.outstanding);
        });
        if (!sent) {
          refused.fetch_add(1);
          waiter_.count_down(s.outstanding);
        }
      };

      log("group: " + std::to_string(size) + " members (" + std::to_string(recipients) +
          " recipients per message)");
      record_from_ns_.store(now_ns() + static_cast<std::int64_t>(o_.warmup_s * 1e9));
      record_to_ns_.store(INT64_MAX);
      for (auto& s : ss) {
        for (std::size_t w = 0; w < o_.group_window; ++w) send(*s);
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(o_.warmup_s));
      const auto d0 = delivered_.load();
      const auto a0 = accepted.load();
      const auto b0 = request_bytes.load();
      const auto server_cpu0 = ep_.pid != 0 ? cpu_seconds(ep_.pid) : std::nullopt;
      const auto tool_cpu0 = cpu_seconds(::getpid());
      {
        std::lock_guard lock(lat_mu);
        answer_us.clear();
      }
      const auto t0 = now_ns();
      std::this_thread::sleep_for(std::chrono::duration<double>(o_.duration_s));
      const auto d1 = delivered_.load();
      const auto a1 = accepted.load();
      const auto b1 = request_bytes.load();
      const auto t1 = now_ns();
      const auto server_cpu1 = ep_.pid != 0 ? cpu_seconds(ep_.pid) : std::nullopt;
      const auto tool_cpu1 = cpu_seconds(::getpid());
      record_to_ns_.store(t1);
      keep.store(false);
      const bool answered = waiter_.wait(
          [&] {
            return std::all_of(ss.begin(), ss.end(),
                               [](const auto& s) { return s->outstanding.load() == 0; });
          },
          kQuiesceTimeout);
      // Every accepted send to every recipient, once.
      const std::uint64_t expected = accepted.load();
      const bool delivered = waiter_.wait(
          [&] {
            for (std::size_t i = 0; i < recipients; ++i) {
              std::lock_guard lock(rs[i]->mu);
              if (rs[i]->unique - unique_before[i] < expected) return false;
            }
            return true;
          },
          kQuiesceTimeout);
      std::uint64_t got = 0, duplicates = 0;
      for (std::size_t i = 0; i < recipients; ++i) {
        std::lock_guard lock(rs[i]->mu);
        got += rs[i]->unique - unique_before[i];
        duplicates += rs[i]->duplicates;
      }
      const double dt = seconds_between(t0, t1);
      const auto answer = [&] {
        std::lock_guard lock(lat_mu);
        return summarize(answer_us);
      }();
      const auto delivery_latency = summarize(take_latencies());
      const double sends = static_cast<double>(a1 - a0);
      const double envelopes = static_cast<double>(d1 - d0);
      json j;
      j["members"] = size;
      j["recipients_per_message"] = recipients;
      j["senders"] = ss.size();
      j["window"] = o_.group_window;
      j["message_bytes"] = o_.message_bytes;
      j["measured_s"] = round3(dt);
      j["sends_per_s"] = round1(sends / dt);
      j["delivered_envelopes_per_s"] = round1(envelopes / dt);
      j["request_bytes"] = a1 > a0 ? static_cast<std::uint64_t>((b1 - b0) / (a1 - a0)) : 0;
      j["answer_p50_ms"] = round3(answer.p50_ms);
      j["answer_p99_ms"] = round3(answer.p99_ms);
      j["delivery_p50_ms"] = round3(delivery_latency.p50_ms);
      j["delivery_p99_ms"] = round3(delivery_latency.p99_ms);
      // value_or: GCC 12 sees the optionals as maybe uninitialized under has_value() checks.
      const double server_cpu_s =
          server_cpu0 && server_cpu1 ? server_cpu1.value_or(0) - server_cpu0.value_or(0) : -1;
      if (server_cpu_s >= 0 && envelopes > 0) {
        j["server_cpu_us_per_envelope"] = round3(server_cpu_s * 1e6 / envelopes);
        j["server_cpu_us_per_send"] = round1(server_cpu_s * 1e6 / sends);
        // What the server does per second of its own CPU: the figure that does not move with what
        // else the cores run (the tool's receivers, other processes), unlike envelopes/s.
        if (server_cpu_s > 0) j["server_envelopes_per_cpu_s"] = round1(envelopes / server_cpu_s);
        j["server_cpu_share"] = round3(server_cpu_s / dt);
      }
      if (const auto load = load_average()) j["load_average"] = round3(*load);
      if (tool_cpu0 && tool_cpu1)
        j["tool_cpu_share"] = round3((tool_cpu1.value_or(0) - tool_cpu0.value_or(0)) / dt);
      j["accepted"] = expected;
      j["refused"] = refused.load();
      j["envelopes_expected"] = expected * recipients;
      j["envelopes_delivered"] = got;
      j["duplicates"] = duplicates;
      const bool exact = answered && delivered && got == expected * recipients && duplicates == 0 &&
                         refused.load() == 0;
      j["exactly_once"] = exact;
      rounds.push_back(j);
      log("group " + std::to_string(size) + ": " +
          fmt(j["delivered_envelopes_per_s"].get<double>()) + " envelopes/s delivered, " +
          fmt(j["sends_per_s"].get<double>()) + " sends/s, answer p50 " + fmt(answer.p50_ms) +
          " ms");
      if (!exact) {
        error("group " + std::to_string(size) + ": " + std::to_string(got) + " of " +
              std::to_string(expected * recipients) + " envelopes, " + std::to_string(duplicates) +
              " duplicates, " + std::to_string(refused.load()) + " refused");
        ok = false;
      }
    }
    results_["group"] = rounds;
    for (const auto& r : rounds) {
      results_["group_" + std::to_string(r["members"].get<std::size_t>()) + "_envelopes_per_s"] =
          r["delivered_envelopes_per_s"];
    }
    // Closed here: the members' connections would otherwise count in later phases.
    std::vector<std::unique_ptr<Peer>> peers;
    for (auto& s : ss) peers.push_back(std::move(s->peer));
    for (auto* r : rs) {
      std::lock_guard lock(r->mu);
      peers.push_back(std::move(r->peer));
    }
    destroy_parallel(peers);
    return ok;
  }

  // A device away while several senders store a large backlog of maximum-size messages for it
  // (issue 16: ~33 of them used to lock an inbox for good); then it logs in and drains it,
  // acknowledging each. Measures MB/s drained and the server's RSS, sampled while it drains:
  // delivery is paced by bytes, so the peak must not grow with the backlog.
  bool backlog(const std::vector<Account*>& from, Account* to) {
    const std::size_t bytes = std::max(o_.backlog_message_bytes, kMessageHeader);
    const std::size_t count = std::max<std::size_t>(1, o_.backlog_mb * 1'000'000 / bytes);
    const double mb = static_cast<double>(count * bytes) / 1e6;
    log("backlog: " + std::to_string(count) + " messages of " + std::to_string(bytes) + " bytes (" +
        fmt(mb) + " MB) from " + std::to_string(from.size()) + " senders");
    Receiver& rc = add_receiver(to);
    std::vector<Sender*> ss;
    for (auto* a : from) ss.push_back(&add_sender(a, &rc));
    std::size_t failed = 0;
    auto speers = open_logged_in(from, 32, nullptr, &failed);
    for (std::size_t i = 0; i < ss.size(); ++i) ss[i]->peer = std::move(speers[i]);
    if (failed > 0) return false;

    // Store, each sender with a window of sends in flight.
    const std::uint64_t ok_before = total_ok();
    std::atomic<std::size_t> issued{0};
    const auto t0 = now_ns();
    std::vector<std::thread> drivers;
    for (Sender* s : ss) {
      drivers.emplace_back([&, s] {
        while (issued.fetch_add(1) < count) {
          if (!waiter_.wait(
                  [&] {
                    return s->outstanding.load() < static_cast<std::int64_t>(o_.backlog_window);
                  },
                  kStallTimeout))
            return;
          send_one(*s, now_ns(), false, bytes);
        }
      });
    }
    for (auto& d : drivers) d.join();
    const bool stored = waiter_.wait([&] { return total_outstanding() == 0; }, kQuiesceTimeout);
    const auto t1 = last_send_response_ns_.load();
    const std::uint64_t accepted = total_ok() - ok_before;
    json j;
    j["messages"] = count;
    j["message_bytes"] = bytes;
    j["mb"] = round1(mb);
    j["senders"] = ss.size();
    j["window"] = o_.backlog_window;
    j["accepted"] = accepted;
    j["stored_mb_per_s"] = round1(static_cast<double>(accepted * bytes) / 1e6 /
                                  seconds_between(t0, std::max(t1, t0 + 1)));
    if (!stored || accepted != count) {
      error("backlog: " + std::to_string(accepted) + " of " + std::to_string(count) +
            " sends accepted");
      results_["backlog"] = j;
      return false;
    }

    // Drain, with the server's RSS sampled meanwhile.
    std::this_thread::sleep_for(500ms);  // the store's writes settle
    std::uint64_t rss0 = 0;              // 0: unknown
    if (ep_.pid != 0) rss0 = resident_bytes(ep_.pid).value_or(0);
    std::atomic<bool> sampling{true};
    std::atomic<std::uint64_t> peak{rss0};
    std::thread sampler([&] {
      while (sampling.load() && ep_.pid != 0) {
        if (auto r = resident_bytes(ep_.pid); r && *r > peak.load()) peak.store(*r);
        std::this_thread::sleep_for(20ms);
      }
    });
    auto peer = std::make_unique<Peer>(pool_, client_options(0));
    peer->on_push(receiver_push(rc));
    bool drained = false;
    std::int64_t t2 = 0;
    if (connect_blocking(*peer)) {
      Peer* p = peer.get();
      {
        std::lock_guard lock(rc.mu);
        rc.peer = std::move(peer);
      }
      std::promise<std::string> login_result;
      t2 = now_ns();
      p->login(*to, [&](bool ok, const std::string& e) { login_result.set_value(ok ? "" : e); });
      if (auto e = login_result.get_future().get(); !e.empty()) {
        error("backlog: login " + e);
      } else {
        // As long as it makes progress (a slow machine drains 500 MB slowly, not never).
        const auto done = [&] {
          std::lock_guard lock(rc.mu);
          return rc.unique >= accepted && rc.acked.load() >= rc.unique + rc.redelivered;
        };
        std::uint64_t seen = 0;
        auto last_progress = Clock::now();
        while (!(drained = done())) {
          (void)waiter_.wait(done, 1s);
          const std::uint64_t now_seen = rc.acked.load();
          if (now_seen != seen) {
            seen = now_seen;
            last_progress = Clock::now();
          } else if (Clock::now() - last_progress > kStallTimeout) {
            break;
          }
        }
      }
    }
    const auto t3 = rc.last_ack_ns.load();
    sampling.store(false);
    sampler.join();
    const double drain_s = t3 > t2 && t2 != 0 ? seconds_between(t2, t3) : 0;
    j["drained"] = rc.acked.load();
    j["drain_s"] = round3(drain_s);
    j["drained_mb_per_s"] = drain_s > 0 ? round1(mb / drain_s) : 0.0;
    if (rss0 != 0) {
      j["server_rss_before_bytes"] = rss0;
      j["server_rss_peak_bytes"] = peak.load();
      j["server_rss_growth_bytes"] =
          static_cast<std::int64_t>(peak.load()) - static_cast<std::int64_t>(rss0);
    }
    results_["backlog"] = j;
    results_["backlog_drained_mb_per_s"] = j["drained_mb_per_s"];
    log("backlog: stored " + fmt(j["stored_mb_per_s"].get<double>()) + " MB/s, drained " +
        fmt(j["drained_mb_per_s"].get<double>()) + " MB/s in " + fmt(drain_s) +
        " s; server RSS peak " +
        fmt(static_cast<double>(j.value("server_rss_peak_bytes", std::uint64_t{0})) / 1e6) +
        " MB (" +
        fmt(static_cast<double>(j.value("server_rss_growth_bytes", std::int64_t{0})) / 1e6) +
        " MB over its start)");
    if (!drained) {
      error("backlog: the queue did not drain (" + std::to_string(rc.unique) + " of " +
            std::to_string(accepted) + " received)");
    }
    return drained;
  }

  // Every message the server accepted arrived exactly once; refused ones never arrived.
  bool verify() {
    std::uint64_t expected = 0, missing = 0, unexpected = 0, duplicates = 0, redelivered = 0,
                  malformed = 0, failed_sends = 0;
    std::map<Receiver*, std::vector<Sender*>> by_receiver;
    for (auto& s : senders_) by_receiver[s->to].push_back(s.get());
    for (auto& [rc, ss] : by_receiver) {
      std::lock_guard rl(rc->mu);
      duplicates += rc->duplicates;
      redelivered += rc->redelivered;
      malformed += rc->malformed;
      std::uint64_t matched = 0;
      for (Sender* s : ss) {
        std::lock_guard sl(s->mu);
        std::vector<bool> refused(s->next_seq, false);
        for (auto q : s->failed) refused[q] = true;
        failed_sends += s->failed.size();
        auto it = rc->seen.find(s->index);
        for (std::uint64_t q = 0; q < s->next_seq; ++q) {
          const bool got = it != rc->seen.end() && q < it->second.size() && it->second[q] != 0;
          if (refused[q]) {
            unexpected += got ? 1 : 0;
          } else {
            ++expected;
            missing += got ? 0 : 1;
            matched += got ? 1 : 0;
          }
        }
      }
      // Deliveries from a sender this receiver never heard of.
      if (rc->unique > matched + unexpected) unexpected += rc->unique - matched;
    }
    json j;
    j["messages_accepted"] = expected;
    j["missing"] = missing;
    j["duplicates"] = duplicates;
    j["redelivered_same_envelope"] = redelivered;
    j["unexpected"] = unexpected;
    j["malformed"] = malformed;
    j["refused_sends"] = failed_sends + send_errors_.load();
    {
      std::lock_guard lock(refusal_mu_);
      if (!refusals_.empty()) j["refusals"] = refusals_;
    }
    const bool ok = missing == 0 && duplicates == 0 && unexpected == 0 && malformed == 0 &&
                    failed_sends == 0 && send_errors_ == 0;
    j["exactly_once"] = ok;
    results_["delivery"] = j;
    results_["all_delivered_exactly_once"] = ok;
    if (!ok) error("delivery check failed: " + j.dump());
    return ok;
  }

  int finish(bool ok) {
    if (!quiesce_s_.empty()) results_["backlog_drain_s"] = quiesce_s_;
    results_["ok"] = ok && errors_.empty();
    if (!errors_.empty()) results_["errors"] = errors_;
    if (o_.json_output) {
      std::cout << results_.dump() << std::endl;
    } else {
      print_table();
    }
    return results_["ok"].get<bool>() ? 0 : 1;
  }

  void print_table() {
    struct Row {
      const char* name;
      std::string measured;
      const char* target;
      const char* ejabberd;
    };
    const auto num = [&](const json& v, const char* unit) -> std::string {
      if (v.is_null()) return "-";
      char b[64];
      std::snprintf(b, sizeof b, "%.0f%s", v.get<double>(), unit);
      return b;
    };
    const auto ms = [&](const json& v) -> std::string {
      if (v.is_null()) return "-";
      char b[64];
      std::snprintf(b, sizeof b, "%.2f ms", v.get<double>());
      return b;
    };
    const json none;
    const auto get = [&](std::initializer_list<const char*> path) -> const json& {
      const json* cur = &results_;
      for (const char* k : path) {
        if (!cur->is_object() || !cur->contains(k)) return none;
        cur = &(*cur)[k];
      }
      return *cur;
    };
    std::vector<Row> rows = {
        {"delivered msg/s at saturation", num(get({"saturation_msgs_per_s"}), ""), ">= 50,000",
         "10,000"},
        {"p50 latency at fixed rate", ms(get({"fixed_rate", "p50_ms"})), "", ""},
        {"p99 latency at fixed rate", ms(get({"fixed_rate", "p99_ms"})), "< 5 ms", "8 ms"},
        {"logins/s (full TLS handshake)", num(get({"logins_per_s"}), ""), ">= 2,000", "60-110"},
        {"logins/s (resumed TLS handshake)", num(get({"logins_resumed_per_s"}), ""), ">= 2,000",
         ""},
        {"logins/s (open connections)", num(get({"logins", "on_open_connections_per_s"}), ""), "",
         ""},
        {"server CPU per login (full)", num(get({"logins", "server_cpu_us_per_login"}), " us"), "",
         ""},
        {"server CPU per login (resumed)",
         num(get({"logins", "server_cpu_us_per_resumed_login"}), " us"), "", ""},
        {"TLS handshakes alone/s (full)", num(get({"tls_handshakes", "full_per_s"}), ""), "", ""},
        {"TLS handshakes alone/s (resumed)", num(get({"tls_handshakes", "resumed_per_s"}), ""), "",
         ""},
        {"server bytes per idle connection", num(get({"bytes_per_idle_connection"}), " B"),
         "<= 8 KB", "210 KB"},
        {"offline messages stored/s", num(get({"offline_stored_per_s"}), ""), ">= 20,000", "419"},
        {"offline messages drained/s", num(get({"offline_drained_per_s"}), ""), ">= 50,000",
         "6,800"},
        {"backlog of 256 KB messages, MB/s", num(get({"backlog_drained_mb_per_s"}), ""), "", ""},
        {"server RSS growth draining it", num(get({"backlog", "server_rss_growth_bytes"}), " B"),
         "bounded", ""},
        {"group of 100: envelopes/s", num(get({"group_100_envelopes_per_s"}), ""), ">= 200,000",
         ""},
        {"group of 1,024: envelopes/s", num(get({"group_1024_envelopes_per_s"}), ""), ">= 200,000",
         ""},
    };
    std::printf("%-34s %16s %12s %10s\n", "figure", "measured", "target", "ejabberd");
    for (const auto& r : rows) {
      std::printf("%-34s %16s %12s %10s\n", r.name, r.measured.c_str(), r.target, r.ejabberd);
    }
    if (results_.contains("fixed_rate")) {
      std::printf("(fixed rate %.0f msg/s; saturation p99 %s)\n", o_.rate,
                  ms(get({"saturation", "latency_p99_ms"})).c_str());
    }
    std::printf("delivery: %s\n", get({"delivery"}).dump().c_str());
    std::printf("%s\n", results_["ok"].get<bool>() ? "OK" : "FAILED");
  }

  Options o_;
  ServerEndpoint ep_;
  std::shared_ptr<net::IoPool> pool_;
  std::vector<std::uint8_t> random_pool_ = std::vector<std::uint8_t>(kRandomPoolBytes);
  std::string run_tag_;
  std::array<std::uint8_t, 4> cmid_prefix_{};
  std::vector<std::unique_ptr<Account>> accounts_;

  std::vector<std::unique_ptr<Sender>> senders_;
  std::vector<Sender*> pair_senders_;
  std::mutex receivers_mu_;
  std::deque<std::unique_ptr<Receiver>> receivers_;  // guarded by receivers_mu_ (growth only)

  Waiter waiter_;
  std::atomic<std::uint64_t> delivered_{0};
  std::atomic<std::uint64_t> send_errors_{0};
  std::atomic<std::int64_t> record_from_ns_{INT64_MAX};
  std::atomic<std::int64_t> record_to_ns_{0};
  std::atomic<std::int64_t> last_send_response_ns_{0};
  std::mutex refusal_mu_;
  std::map<std::string, std::uint64_t> refusals_;

  std::thread flusher_;
  std::mutex flusher_mu_;
  std::condition_variable flusher_cv_;
  bool flusher_stop_ = false;              // guarded by flusher_mu_
  std::atomic<bool> acks_waiting_{false};  // a partial batch waits for the flusher

  json quiesce_s_ = json::object();  // per phase: time to deliver the backlog after sending
  json results_ = json::object();
  std::vector<std::string> errors_;
};

}  // namespace
}  // namespace sotto::load

int main(int argc, char** argv) {
  using namespace sotto::load;
  CLI::App app{
      "sotto-load: load generator for sotto-server over the real protocol (TLS 1.3, pinned\n"
      "certificate, registered accounts, challenge/authenticate logins, acknowledged delivery)."};
  Options o;
  std::string phases;
  app.add_option("--spawn-server", o.spawn_server,
                 "Start this sotto-server binary on free ports with a temporary data directory");
  app.add_flag("--keep-data", o.keep_data, "Keep the spawned server's temporary directory");
  app.add_option("--server", o.server, "HOST:PORT of a running server (instead of --spawn-server)");
  app.add_option("--server-fingerprint", o.fingerprint,
                 "Its key's fingerprint (SHA-256 of its public key, as sotto-server prints it)");
  app.add_option("--server-pid", o.server_pid, "Its process id (for the memory figures)");
  app.add_option("--phases", phases,
                 "Comma-separated: saturation,fixed-rate,logins,idle-memory,offline,backlog,"
                 "tls-handshakes,group (default all but group)");
  app.add_flag("--json", o.json_output, "Print every figure as one JSON object");
  app.add_option("--threads", o.threads, "I/O threads of the load tool")->check(CLI::Range(1, 64));
  app.add_option("--pairs", o.pairs, "Sender->recipient pairs (saturation, fixed-rate)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--window", o.window, "Sends in flight per sender at saturation")
      ->check(CLI::Range(1, 4096));
  app.add_option("--message-bytes", o.message_bytes, "Ciphertext bytes per message")
      ->check(CLI::Range(20, 256 * 1024));
  app.add_option(
         "--ack-batch", o.ack_batch,
         "Envelope ids per acknowledgement (1: one request per envelope, as the client library)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--ack-delay-ms", o.ack_delay_ms, "A partial batch is acknowledged after this")
      ->check(CLI::Range(0.1, 10000.0));
  app.add_option("--warmup", o.warmup_s, "Saturation warm-up, seconds")
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--duration", o.duration_s, "Saturation measured interval, seconds")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--rate", o.rate, "Fixed rate, messages/s in total")->check(CLI::Range(1.0, 1e7));
  app.add_option("--fixed-duration", o.fixed_duration_s, "Fixed-rate run, seconds")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--login-accounts", o.login_accounts, "Accounts the logins phase cycles through")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--login-concurrency", o.login_concurrency, "Logins in flight")
      ->check(CLI::Range(1, 4096));
  app.add_option("--login-duration", o.login_duration_s, "Logins measured interval, seconds")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--idle-connections", o.idle_connections, "Authenticated idle connections to hold")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--source-addresses", o.source_addresses,
                 "127.0.0.x source addresses to spread connections over (default: one per 4000)")
      ->check(CLI::Range(1, 250));
  app.add_option("--idle-hold", o.idle_hold_s,
                 "Seconds the idle connections are held before the server's memory is read")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--offline-messages", o.offline_messages, "Messages queued for an offline device")
      ->check(CLI::Range(1, 10000000));
  app.add_option("--offline-senders", o.offline_senders, "Senders filling the offline queue")
      ->check(CLI::Range(1, 1024));
  app.add_option("--offline-window", o.offline_window, "Sends in flight per offline sender")
      ->check(CLI::Range(1, 4096));
  app.add_option("--backlog-mb", o.backlog_mb,
                 "Megabytes (10^6 bytes) stored for a device that is away, then drained (backlog)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--backlog-message-bytes", o.backlog_message_bytes,
                 "Bytes per backlog message (the server's max_message_bytes by default)")
      ->check(CLI::Range(20, 16 * 1024 * 1024));
  app.add_option("--backlog-senders", o.backlog_senders, "Senders filling the backlog")
      ->check(CLI::Range(1, 1024));
  app.add_option("--backlog-window", o.backlog_window, "Sends in flight per backlog sender")
      ->check(CLI::Range(1, 4096));
  app.add_option("--group-sizes", o.group_sizes,
                 "Members per group in the group phase, one round each (default 100 1024)")
      ->check(CLI::Range(2, 8192));
  app.add_option("--group-senders", o.group_senders, "Members sending in the group phase")
      ->check(CLI::Range(1, 64));
  app.add_option("--group-window", o.group_window,
                 "Multi-recipient sends in flight per group sender")
      ->check(CLI::Range(1, 4096));
  app.add_option("--pre-keys", o.pre_keys, "One-time prekeys uploaded with each registration")
      ->check(CLI::Range(0, 200));
  app.add_option("--attachment-mb", o.attachment_mb,
                 "MiB of the file the attachment phase uploads and downloads (phase not run by "
                 "default: --phases attachment)")
      ->check(CLI::Range(1, 4096));
  app.add_flag("--provider-key-methods", o.provider_key_methods,
               "Run the tool's own X25519 and EC work through OpenSSL 3's providers instead of its "
               "built-in methods (which cost the tool less per handshake)");
  CLI11_PARSE(app, argc, argv);

  if (!phases.empty()) {
    o.phases.clear();
    std::stringstream ss(phases);
    std::string p;
    while (std::getline(ss, p, ',')) {
      static const std::vector<std::string> kKnown = {"saturation",     "fixed-rate", "logins",
                                                      "idle-memory",    "offline",    "backlog",
                                                      "tls-handshakes", "group",      "attachment"};
      if (std::find(kKnown.begin(), kKnown.end(), p) == kKnown.end()) {
        std::fprintf(stderr, "sotto-load: unknown phase '%s'\n", p.c_str());
        return 2;
      }
      o.phases.push_back(p);
    }
  }
  if (o.spawn_server.empty() == o.server.empty()) {
    std::fprintf(stderr, "sotto-load: give either --spawn-server PATH or --server HOST:PORT\n");
    return 2;
  }

  // The spawned server inherits the raised descriptor limit.
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &r);
  }
  std::signal(SIGPIPE, SIG_IGN);
  // Before the first handshake; every handshake of the tool then uses the same methods.
  // The attachment phase's plain TLS copy plays a TLS server with a P-256 key, which the built-in
  // methods cannot sign with: that phase runs on the providers.
  o.builtin_key_methods =
      !o.provider_key_methods && !o.has("attachment") && use_builtin_key_methods();

  try {
    std::unique_ptr<SpawnedServer> spawned;
    ServerEndpoint ep;
    if (!o.spawn_server.empty()) {
      spawned = std::make_unique<SpawnedServer>(o.spawn_server, o.keep_data);
      ep = spawned->endpoint();
      set_tls_identity_dir(spawned->directory() / "data");
    } else {
      const auto colon = o.server.rfind(':');
      if (colon == std::string::npos) {
        std::fprintf(stderr, "sotto-load: --server must be HOST:PORT\n");
        return 2;
      }
      ep.host = o.server.substr(0, colon);
      ep.port = static_cast<std::uint16_t>(std::stoi(o.server.substr(colon + 1)));
      ep.fingerprint = o.fingerprint;
      ep.pid = o.server_pid;
      if (ep.fingerprint.empty()) {
        std::fprintf(stderr, "sotto-load: --server-fingerprint is required with --server\n");
        return 2;
      }
    }
    int rc = 0;
    {
      LoadTool tool(o, ep);
      rc = tool.run();
    }
    if (spawned && !spawned->stop()) {
      std::fprintf(stderr, "sotto-load: the spawned server did not shut down cleanly (see %s)\n",
                   spawned->directory().c_str());
      rc = rc == 0 ? 1 : rc;
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sotto-load: %s\n", e.what());
    return 1;
  }
}
