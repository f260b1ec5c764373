#include "terminal.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <qrencode.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <memory>

namespace sotto::cli {

namespace {

constexpr int kQuietZone = 2;
constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

std::string render(const QRcode* q) {
  if (q == nullptr) return {};
  const int w = q->width;
  const auto dark = [&](int x, int y) {
    if (x < 0 || y < 0 || x >= w || y >= w) return false;
    return (q->data[y * w + x] & 1) != 0;
  };
  std::string out;
  for (int y = -kQuietZone; y < w + kQuietZone; y += 2) {
    for (int x = -kQuietZone; x < w + kQuietZone; ++x) {
      const bool top = !dark(x, y);
      const bool bottom = (y + 1 < w + kQuietZone) && !dark(x, y + 1);
      if (top && bottom)
        out += "\xE2\x96\x88";  // full block
      else if (top)
        out += "\xE2\x96\x80";  // upper half
      else if (bottom)
        out += "\xE2\x96\x84";  // lower half
      else
        out += ' ';
    }
    out += '\n';
  }
  return out;
}

void write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Length of the UTF-8 sequence starting with `lead`, 0 if it cannot start one.
std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return lead >= 0xC2 ? 2 : 0;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return lead <= 0xF4 ? 4 : 0;
  return 0;
}

}  // namespace

std::string render_qr(const std::vector<std::uint8_t>& data) {
  std::unique_ptr<QRcode, decltype(&QRcode_free)> q(
      QRcode_encodeData(static_cast<int>(data.size()), data.data(), 0, QR_ECLEVEL_M), &QRcode_free);
  return render(q.get());
}

std::string render_qr_text(const std::string& text) {
  std::unique_ptr<QRcode, decltype(&QRcode_free)> q(
      QRcode_encodeString(text.c_str(), 0, QR_ECLEVEL_M, QR_MODE_8, 1), &QRcode_free);
  return render(q.get());
}

std::string sanitize(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if ((c == '\n' || c == '\t') && keep_newlines)
        out += static_cast<char>(c);
      else if (c < 0x20 || c == 0x7F)
        out += kReplacement;
      else
        out += static_cast<char>(c);
      ++i;
      continue;
    }
    const std::size_t n = utf8_length(c);
    bool ok = n > 0 && i + n <= text.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
    }
    if (ok && n == 2) {
      // C1 control characters (U+0080..U+009F) act as escapes on some terminals.
      const unsigned cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu);
      if (cp < 0xA0) ok = false;
    }
    if (ok && n == 3) {
      const unsigned cp = ((c & 0x0Fu) << 12) |
                          ((static_cast<unsigned char>(text[i + 1]) & 0x3Fu) << 6) |
                          (static_cast<unsigned char>(text[i + 2]) & 0x3Fu);
      if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x202A && cp <= 0x202E) ||
          (cp >= 0x2066 && cp <= 0x2069)) {
        ok = false;  // overlong, surrogate, or a bidirectional override (spoofs text direction)
      }
    }
    if (ok && n == 4) {
      const unsigned cp = ((c & 0x07u) << 18) |
                          ((static_cast<unsigned char>(text[i + 1]) & 0x3Fu) << 12) |
                          ((static_cast<unsigned char>(text[i + 2]) & 0x3Fu) << 6) |
                          (static_cast<unsigned char>(text[i + 3]) & 0x3Fu);
      if (cp < 0x10000 || cp > 0x10FFFF) ok = false;
    }
    if (!ok) {
      out += kReplacement;
      ++i;
      continue;
    }
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

std::string format_time(std::uint64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string format_day(std::uint64_t days) {
  const std::time_t t = static_cast<std::time_t>(days * 86400);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

ProgressBar::ProgressBar(std::string label, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), enabled_(::isatty(STDERR_FILENO) != 0) {}

ProgressBar::~ProgressBar() {
  finish();
}

void ProgressBar::update(std::uint64_t done, std::uint64_t total) {
  std::lock_guard lock(mu_);
  if (!enabled_) return;
  const int permille =
      total == 0 ? -1 : static_cast<int>(std::min<std::uint64_t>(done, total) * 1000 / total);
  const auto now = std::chrono::steady_clock::now();
  const bool changed = total != 0 && permille / 10 != last_permille_ / 10;
  if (drawn_ && !changed && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_permille_ = permille;
  last_draw_ = now;
  draw_locked(done, total);
}

void ProgressBar::draw_locked(std::uint64_t done, std::uint64_t total) {
  constexpr int kWidth = 30;
  std::string line = "\r\033[K" + label_ + " ";
  if (total == 0) {
    line += std::to_string(done) + " " + unit_;
  } else {
    const std::uint64_t shown = std::min(done, total);
    const int filled = static_cast<int>(shown * kWidth / total);
    line += "[" + std::string(static_cast<std::size_t>(filled), '#') +
            std::string(static_cast<std::size_t>(kWidth - filled), '.') + "] " +
            std::to_string(shown * 100 / total) + "% (" + std::to_string(shown) + "/" +
            std::to_string(total) + " " + unit_ + ")";
  }
  write_all(STDERR_FILENO, line);
  drawn_ = true;
}

void ProgressBar::finish() {
  std::lock_guard lock(mu_);
  if (!enabled_ || !drawn_) return;
  write_all(STDERR_FILENO, "\n");
  drawn_ = false;
  enabled_ = false;
}

std::optional<std::string> read_hidden_line(const std::string& prompt) {
  if (::isatty(STDIN_FILENO) == 0) return std::nullopt;
  termios saved{};
  if (::tcgetattr(STDIN_FILENO, &saved) != 0) return std::nullopt;
  // Non-canonical and without signals, so that Ctrl-C cancels here and the terminal's echo is
  // always restored (a signal arriving with echo off would leave the shell without it).
  termios quiet = saved;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ISIG | IEXTEN);
  quiet.c_cc[VMIN] = 1;
  quiet.c_cc[VTIME] = 0;
  if (::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) != 0) return std::nullopt;
  write_all(STDERR_FILENO, prompt);
  std::optional<std::string> line = std::string();
  for (;;) {
    char c = 0;
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || c == 0x03 || (c == 0x04 && line->empty())) {
      line.reset();  // end of input, Ctrl-C, Ctrl-D
      break;
    }
    if (c == '\r' || c == '\n') break;
    if (c == 0x7F || c == 0x08) {
      while (!line->empty()) {
        const auto last = static_cast<unsigned char>(line->back());
        line->pop_back();
        if ((last & 0xC0) != 0x80) break;
      }
    } else if (c == 0x15) {
      line->clear();  // Ctrl-U
    } else if (static_cast<unsigned char>(c) >= 0x20) {
      *line += c;
    }
  }
  ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  write_all(STDERR_FILENO, "\n");
  return line;
}

struct LineEditor::Saved {
  termios attributes{};
};

LineEditor::LineEditor(std::string prompt) : prompt_(std::move(prompt)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
  if (::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO)) {
    saved_ = new Saved;
    if (::tcgetattr(STDIN_FILENO, &saved_->attributes) == 0) {
      termios raw = saved_->attributes;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO | ISIG | IEXTEN);
      raw.c_iflag &= ~static_cast<tcflag_t>(IXON | ICRNL);
      raw.c_cc[VMIN] = 1;
      raw.c_cc[VTIME] = 0;
      raw_ = ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0;
    }
    if (raw_) {
      std::lock_guard lock(mu_);
      redraw_locked();
    }
  }
}

LineEditor::~LineEditor() {
  if (raw_) {
    write_all(STDOUT_FILENO, "\r\033[K");
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_->attributes);
  }
  delete saved_;
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

void LineEditor::redraw_locked() {
  if (!raw_) return;
  write_all(STDOUT_FILENO, "\r\033[K" + prompt_ + buffer_);
}

void LineEditor::print(const std::string& text) {
  std::lock_guard lock(mu_);
  if (raw_) {
    // Output processing stays on in raw mode, so "\n" still moves to the next line's start.
    std::string out = "\r\033[K" + text + "\n";
    write_all(STDOUT_FILENO, out);
    redraw_locked();
  } else {
    write_all(STDOUT_FILENO, text + "\n");
  }
}

void LineEditor::interrupt() {
  interrupted_ = true;
  if (wake_[1] >= 0) {
    const char b = 1;
    (void)!::write(wake_[1], &b, 1);
  }
}

std::optional<std::string> LineEditor::read_line() {
  for (;;) {
    if (interrupted_) return std::nullopt;
    if (!raw_) {
      const auto nl = pending_.find('\n');
      if (nl != std::string::npos) {
        std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
      }
    }
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    const int n = ::poll(fds, wake_[0] >= 0 ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (interrupted_) return std::nullopt;
    if ((fds[0].revents & POLLNVAL) != 0) return std::nullopt;  // no standard input at all
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    char chunk[512];
    const ssize_t got = ::read(STDIN_FILENO, chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (!raw_ && !pending_.empty()) {
        std::string line = std::move(pending_);
        pending_.clear();
        return line;
      }
      return std::nullopt;
    }
    if (!raw_) {
      pending_.append(chunk, static_cast<std::size_t>(got));
      continue;
    }
    std::unique_lock lock(mu_);
    for (ssize_t i = 0; i < got; ++i) {
      const auto c = static_cast<unsigned char>(chunk[i]);
      if (c == '\r' || c == '\n') {
        std::string line = std::move(buffer_);
        buffer_.clear();
        typing_ = false;  // the line sent says the typing ended
        write_all(STDOUT_FILENO, "\r\033[K");
        // Bytes typed after Enter in the same read are dropped (pasting several lines at
        // once sends only the first); typing is never that fast.
        redraw_locked();
        return line;
      }
      if (c == 0x03 || (c == 0x04 && buffer_.empty())) return std::nullopt;  // Ctrl-C, Ctrl-D
      if (c == 0x7F || c == 0x08) {
        // Remove one UTF-8 character.
        while (!buffer_.empty()) {
          const auto last = static_cast<unsigned char>(buffer_.back());
          buffer_.pop_back();
          if ((last & 0xC0) != 0x80) break;
        }
      } else if (c == 0x15) {
        buffer_.clear();  // Ctrl-U
      } else if (c == 0x17) {
        while (!buffer_.empty() && buffer_.back() == ' ') buffer_.pop_back();  // Ctrl-W
        while (!buffer_.empty() && buffer_.back() != ' ') buffer_.pop_back();
      } else if (c == 0x1B) {
        // An escape sequence (arrow keys...): skip it.
        if (i + 1 < got && (chunk[i + 1] == '[' || chunk[i + 1] == 'O')) {
          i += 2;
          while (i < got && !(chunk[i] >= 0x40 && chunk[i] <= 0x7E)) ++i;
        }
      } else if (c >= 0x20) {
        buffer_ += static_cast<char>(c);
      }
      redraw_locked();
    }
    if (on_typing_ && typing_ != !buffer_.empty()) {
      typing_ = !buffer_.empty();
      const bool now = typing_;
      lock.unlock();
      on_typing_(now);
    }
  }
}

namespace {
sigset_t shutdown_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);  // used only to wake the signal thread at destruction
  return set;
}
}  // namespace

ShutdownSignals::ShutdownSignals() {
  const sigset_t set = shutdown_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  thread_ = std::thread([this, set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGUSR1) return;
      // Called under the lock, so that on_signal(nullptr) returns only once no call is running
      // (the callback's target may be destroyed right after).
      std::lock_guard lock(mu_);
      if (fn_) fn_();
    }
  });
}

ShutdownSignals::~ShutdownSignals() {
  pthread_kill(thread_.native_handle(), SIGUSR1);
  thread_.join();
}

void ShutdownSignals::on_signal(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  fn_ = std::move(fn);
}

}  // namespace sotto::cli
