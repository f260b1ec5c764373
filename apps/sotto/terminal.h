// Terminal helpers of the sotto CLI: QR codes drawn with Unicode half blocks, text made safe for
// a terminal, time formatting, a progress bar and hidden input on the terminal, and the
// interactive line editor of `sotto chat` (incoming lines are printed above the line being typed,
// which is then redrawn).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sotto::cli {

// A QR code (error correction M) of `data` as lines of half-block characters, two modules per
// character cell, with a quiet zone. Light modules are drawn (so it scans on a dark terminal
// background, as `qrencode -t UTF8` does). Empty when the data does not fit a QR code.
[[nodiscard]] std::string render_qr(const std::vector<std::uint8_t>& data);
[[nodiscard]] std::string render_qr_text(const std::string& text);

// Replaces control characters (escape sequences could rewrite the screen) and invalid UTF-8
// with U+FFFD; keeps newlines and tabs when `keep_newlines`.
[[nodiscard]] std::string sanitize(std::string_view text, bool keep_newlines = true);

// "2024-05-01 12:03:04" in local time, from milliseconds since the epoch.
[[nodiscard]] std::string format_time(std::uint64_t ms);
// "2024-05-01" from days since the epoch.
[[nodiscard]] std::string format_day(std::uint64_t days);

// A one-line progress bar on standard error, drawn only when standard error is a terminal (a
// pipe or a log file gets nothing from it). update() may be called from any thread (the client
// library reports progress from its listener thread); it redraws at most every 100 ms or when the
// percentage changes. finish() (or the destructor) ends the line.
class ProgressBar {
 public:
  // `unit` names what is counted ("messages", "bytes").
  ProgressBar(std::string label, std::string unit);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(std::uint64_t done, std::uint64_t total);
  void finish();

 private:
  void draw_locked(std::uint64_t done, std::uint64_t total);
  std::mutex mu_;
  std::string label_;
  std::string unit_;
  bool enabled_ = false;
  bool drawn_ = false;
  int last_permille_ = -1;
  std::chrono::steady_clock::time_point last_draw_{};
};

// Reads one line typed on the terminal (standard input) without echoing it, after writing
// `prompt` to standard error. nullopt when standard input is not a terminal, or at end of input.
[[nodiscard]] std::optional<std::string> read_hidden_line(const std::string& prompt);

// Reads lines from standard input while another thread prints. On a terminal it switches to raw
// mode and edits the line itself (backspace, Ctrl-U, Ctrl-W; Ctrl-C or Ctrl-D on an empty line
// quit); otherwise it reads plain lines. interrupt() makes read_line() return nullopt from any
// thread (and from a signal-handling thread). Thread-safe.
class LineEditor {
 public:
  explicit LineEditor(std::string prompt);
  ~LineEditor();
  LineEditor(const LineEditor&) = delete;
  LineEditor& operator=(const LineEditor&) = delete;

  // nullopt at end of input, on Ctrl-C / Ctrl-D, or after interrupt().
  [[nodiscard]] std::optional<std::string> read_line();
  // Prints one line (or several) above the line being edited.
  void print(const std::string& text);
  void interrupt();
  // Called on the reading thread, without the editor's lock, when the line being edited becomes
  // non-empty (true) or empty again (false) while the user types (typing indicators). Set it
  // before read_line().
  void on_typing(std::function<void(bool)> callback) { on_typing_ = std::move(callback); }

 private:
  void redraw_locked();
  std::function<void(bool)> on_typing_;
  bool typing_ = false;
  std::string prompt_;
  bool raw_ = false;
  int wake_[2] = {-1, -1};
  std::mutex mu_;  // guards buffer_ and the screen
  std::string buffer_;
  std::string pending_;  // bytes read past a newline (plain mode)
  std::atomic<bool> interrupted_{false};
  struct Saved;
  Saved* saved_ = nullptr;
};

// SIGINT, SIGTERM and SIGHUP turned into a callback on a dedicated thread (so that a chat or
// daemon shuts down cleanly: terminal restored, socket removed). Construct it before any other
// thread starts: it blocks those signals in the constructing thread, and threads inherit that.
class ShutdownSignals {
 public:
  ShutdownSignals();
  ~ShutdownSignals();
  ShutdownSignals(const ShutdownSignals&) = delete;
  ShutdownSignals& operator=(const ShutdownSignals&) = delete;
  // Runs on the signal thread for each signal that arrives. on_signal(nullptr) before the
  // callback's target is destroyed: it waits for a running call to finish.
  void on_signal(std::function<void()> fn);

 private:
  std::mutex mu_;
  std::function<void()> fn_;
  std::thread thread_;
};

}  // namespace sotto::cli
