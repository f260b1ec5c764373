#include "rpc_peer.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>

namespace sotto::cli {

std::optional<nlohmann::json> request_id_from_prefix(std::string_view s) {
  std::size_t i = 0;
  const auto space = [&] {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  };
  // From just after an opening quote: the index of the closing one, or npos.
  const auto string_end = [&](std::size_t from) {
    for (std::size_t j = from; j < s.size(); ++j) {
      if (s[j] == '\\') {
        ++j;
      } else if (s[j] == '"') {
        return j;
      }
    }
    return std::string_view::npos;
  };
  space();
  if (i >= s.size() || s[i] != '{') return std::nullopt;
  ++i;
  for (;;) {
    space();
    if (i >= s.size() || s[i] != '"') return std::nullopt;
    std::size_t end = string_end(i + 1);
    if (end == std::string_view::npos) return std::nullopt;
    const std::string_view key = s.substr(i + 1, end - i - 1);
    i = end + 1;
    space();
    if (i >= s.size() || s[i] != ':') return std::nullopt;
    ++i;
    space();
    if (i >= s.size()) return std::nullopt;
    const std::size_t start = i;
    if (s[i] == '"') {
      end = string_end(i + 1);
      if (end == std::string_view::npos) return std::nullopt;
      i = end + 1;
    } else if (s[i] == '{' || s[i] == '[') {
      std::size_t depth = 0;
      for (;; ++i) {
        if (i >= s.size()) return std::nullopt;
        if (s[i] == '"') {
          end = string_end(i + 1);
          if (end == std::string_view::npos) return std::nullopt;
          i = end;
        } else if (s[i] == '{' || s[i] == '[') {
          ++depth;
        } else if ((s[i] == '}' || s[i] == ']') && --depth == 0) {
          ++i;
          break;
        }
      }
    } else {
      while (i < s.size() && s[i] != ',' && s[i] != '}' &&
             !std::isspace(static_cast<unsigned char>(s[i]))) {
        ++i;
      }
      if (i >= s.size()) return std::nullopt;  // a number may go on past the prefix
    }
    if (key == "id") {
      auto id = nlohmann::json::parse(s.substr(start, i - start), nullptr, false);
      if (id.is_string() || id.is_number() || id.is_null()) return id;
      return std::nullopt;
    }
    space();
    if (i >= s.size() || s[i] != ',') return std::nullopt;
    ++i;
  }
}

Peer::~Peer() {
  stop_writer(std::chrono::seconds(0));
  if (socket_) ::close(in_);
}

void Peer::start_writer(Written written) {
  writer_ = std::thread([this, written = std::move(written)] { write_loop(written); });
}

bool Peer::send(std::string line, std::uint64_t cursor) {
  std::lock_guard lock(mu_);
  if (dead_ || closing_) return false;
  queued_bytes_ += line.size() + 1;
  if (queued_bytes_ > kMaxQueuedOutputBytes) {
    fail_locked();
    return false;
  }
  queue_.push_back(Line{std::move(line), cursor});
  cv_.notify_all();
  return true;
}

void Peer::stop_writer(std::chrono::milliseconds grace) {
  {
    std::unique_lock lock(mu_);
    closing_ = true;
    cv_.notify_all();
    cv_.wait_for(lock, grace, [&] { return dead_ || (queue_.empty() && !writing_); });
    abandon_ = true;
    cv_.notify_all();
  }
  if (writer_.joinable()) writer_.join();
}

bool Peer::begin_request(const std::atomic<bool>& stop) {
  std::unique_lock lock(mu_);
  while (pending_ >= kMaxPendingPerPeer) {
    if (stop || dead_) return false;
    cv_.wait_for(lock, std::chrono::milliseconds(100));
  }
  ++pending_;
  return true;
}

void Peer::add_request() {
  std::lock_guard lock(mu_);
  ++pending_;
}

void Peer::end_request() {
  std::lock_guard lock(mu_);
  --pending_;
  cv_.notify_all();
}

void Peer::wait_idle() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return pending_ == 0; });
}

void Peer::write_loop(const Written& written) {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return !queue_.empty() || closing_ || dead_; });
    if (dead_ || queue_.empty()) return;  // dead, or closing with nothing left
    Line line = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    line.text += '\n';
    const bool ok = write_all(line.text);
    if (ok && line.cursor != 0) written(line.cursor);
    lock.lock();
    writing_ = false;
    queued_bytes_ -= line.text.size();
    if (!ok) fail_locked();
    cv_.notify_all();
  }
}

bool Peer::write_all(std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = socket_ ? ::send(out_, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT)
                              : ::write(out_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return false;
      if (abandon_) return false;
      pollfd p{out_, POLLOUT, 0};
      (void)::poll(&p, 1, 200);
      continue;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// The peer cannot be written to: its output is dropped and its connection ended (its reader then
// sees the end of input).
void Peer::fail_locked() {
  dead_ = true;
  queue_.clear();
  queued_bytes_ = 0;
  if (socket_) ::shutdown(in_, SHUT_RDWR);
  cv_.notify_all();
}

WorkerPool::WorkerPool(std::size_t threads, std::size_t reserved)
    : max_slow_(threads > reserved ? threads - reserved : 1) {
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() {
  stop();
}

void WorkerPool::submit(std::function<void()> task, bool slow, std::string key) {
  std::lock_guard lock(mu_);
  tasks_.push_back(Task{std::move(task), slow, std::move(key)});
  cv_.notify_one();
}

void WorkerPool::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

// Tasks of one key are queued in submission order and are all held back or all free to start,
// so taking the first that may start keeps their order.
std::deque<WorkerPool::Task>::iterator WorkerPool::next_locked() {
  for (auto it = tasks_.begin(); it != tasks_.end(); ++it) {
    if (!it->slow) return it;
    if (slow_running_ >= max_slow_) continue;
    if (it->key.empty() ||
        std::find(keys_running_.begin(), keys_running_.end(), it->key) == keys_running_.end()) {
      return it;
    }
  }
  return tasks_.end();
}

void WorkerPool::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    auto next = tasks_.end();
    cv_.wait(lock, [&] {
      next = next_locked();
      return next != tasks_.end() || (stopping_ && tasks_.empty());
    });
    if (next == tasks_.end()) return;
    Task task = std::move(*next);
    tasks_.erase(next);
    if (task.slow) ++slow_running_;
    if (!task.key.empty()) keys_running_.push_back(task.key);
    lock.unlock();
    task.run();
    lock.lock();
    if (task.slow) --slow_running_;
    if (!task.key.empty()) {
      keys_running_.erase(std::find(keys_running_.begin(), keys_running_.end(), task.key));
    }
    cv_.notify_all();  // a task held back may start now
  }
}

}  // namespace sotto::cli
