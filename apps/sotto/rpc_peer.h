// The plumbing under `sotto daemon` (daemon.h): request lines cut from a byte stream with a size
// limit, one peer's output queue with its writer thread, and a fixed pool of worker threads.
// Nothing here knows a method; request_id_from_prefix() knows just enough JSON to find an id.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sotto::cli {

// A request line holds at most one message body and its envelope: 1 MiB is far above that, and
// bounds what one peer makes the daemon hold.
inline constexpr std::size_t kMaxRequestBytes = 1 << 20;
// Requests of one peer queued or running (long polls included); its reader waits beyond that, so
// a peer that floods the daemon is slowed down by its own socket.
inline constexpr std::size_t kMaxPendingPerPeer = 64;
// Output waiting for a peer that does not read; beyond it the peer is disconnected.
inline constexpr std::size_t kMaxQueuedOutputBytes = 64 << 20;

// The id of a request too large to parse, read from the start of its line: the value of a
// top-level "id" member, when it is a string, a number or null and lies within `prefix`. The
// members before it are skipped without being decoded.
[[nodiscard]] std::optional<nlohmann::json> request_id_from_prefix(std::string_view prefix);

// Splits a byte stream into lines of at most kMaxRequestBytes. A longer line is reported once,
// with its first kMaxRequestBytes bytes, and the rest of it is skipped. Not thread-safe.
class LineSplitter {
 public:
  template <typename OnLine, typename OnTooLarge>
  void feed(std::string_view data, const OnLine& on_line, const OnTooLarge& on_too_large) {
    while (!data.empty()) {
      const std::size_t nl = data.find('\n');
      const std::string_view part = data.substr(0, nl);
      if (!skipping_) {
        const std::size_t room = kMaxRequestBytes - line_.size();
        if (part.size() > room) {
          line_.append(part.substr(0, room));
          on_too_large(std::string_view(line_));
          line_.clear();
          skipping_ = true;
        } else {
          line_.append(part);
        }
      }
      if (nl == std::string_view::npos) return;
      if (!skipping_) on_line(std::string_view(line_));
      line_.clear();
      skipping_ = false;
      data.remove_prefix(nl + 1);
    }
  }
  // At the end of the input: the last line, when it had no newline.
  template <typename OnLine>
  void finish(const OnLine& on_line) {
    if (!skipping_ && !line_.empty()) on_line(std::string_view(line_));
    line_.clear();
    skipping_ = false;
  }

 private:
  std::string line_;
  bool skipping_ = false;
};

// One JSON-RPC peer: stdin/stdout, or one accepted socket connection (whose descriptor it owns).
// Lines for it go through a queue and its writer thread, so a peer that reads slowly holds up
// nobody else and lines never interleave. Thread-safe, except for the subscription fields.
class Peer {
 public:
  // Called on the writer thread once a line that carries a journal cursor is written in full.
  using Written = std::function<void(std::uint64_t cursor)>;

  Peer(int in, int out, bool socket) : in_(in), out_(out), socket_(socket) {}
  ~Peer();
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  [[nodiscard]] int in() const { return in_; }

  void start_writer(Written written);
  // Queues one line; `cursor` (a journal event's, 0 for none) goes to the Written callback once
  // the line is out. False when the peer is gone or closing.
  bool send(std::string line, std::uint64_t cursor = 0);
  // Writes what is queued (giving a peer that does not read at most `grace`), then stops the
  // writer. Later send() calls return false.
  void stop_writer(std::chrono::milliseconds grace);

  // Requests queued or running for this peer. begin_request() waits while there are
  // kMaxPendingPerPeer; false when `stop` became true meanwhile, or the peer is gone.
  [[nodiscard]] bool begin_request(const std::atomic<bool>& stop);
  // For a long poll parked by a running request: counted, never waited for.
  void add_request();
  void end_request();
  void wait_idle();

  // The daemon's state of the peer, guarded by the daemon's locks. Under its lock on the peers:
  // whether journal events are pushed to this peer, and the last cursor pushed in this
  // connection (never pushed twice). Under its lock on the long polls: whether the peer's input
  // ended (it then waits for its last answers, and a poll of it does not wait).
  bool subscribed = false;
  std::uint64_t last_cursor = 0;
  bool input_ended = false;

 private:
  struct Line {
    std::string text;
    std::uint64_t cursor = 0;
  };

  void write_loop(const Written& written);
  [[nodiscard]] bool write_all(std::string_view data);
  void fail_locked();

  const int in_;
  const int out_;
  const bool socket_;
  std::thread writer_;
  std::atomic<bool> abandon_{false};

  std::mutex mu_;  // guards what follows
  std::condition_variable cv_;
  std::deque<Line> queue_;
  std::size_t queued_bytes_ = 0;
  bool writing_ = false;
  bool closing_ = false;
  bool dead_ = false;
  std::size_t pending_ = 0;
};

// A fixed set of threads running queued tasks in order of arrival, with two rules for tasks that
// may wait long (on a server): they hold at most `threads - reserved` threads at a time, so the
// quick ones always find a thread; and tasks that share a key run one at a time, in the order
// they were submitted. Thread-safe.
class WorkerPool {
 public:
  WorkerPool(std::size_t threads, std::size_t reserved);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // `slow`: the task may wait long. `key`: tasks with the same non-empty key (slow ones) run one
  // after the other.
  void submit(std::function<void()> task, bool slow = false, std::string key = {});
  // Runs what is queued, then joins the threads.
  void stop();

 private:
  struct Task {
    std::function<void()> run;
    bool slow = false;
    std::string key;
  };

  void run();
  // The first queued task that may start now; tasks_.end() when none.
  std::deque<Task>::iterator next_locked();

  const std::size_t max_slow_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  std::size_t slow_running_ = 0;
  std::vector<std::string> keys_running_;
  bool stopping_ = false;
};

}  // namespace sotto::cli
