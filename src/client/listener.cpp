#include "client/listener.h"

#include <algorithm>

#include "client/errors.h"

namespace sotto::client {

namespace {
using SteadyClock = std::chrono::steady_clock;
// The listener's periodic key transparency checks are at least this far apart.
constexpr std::chrono::milliseconds kMinCheckPause{100};
}  // namespace

std::size_t Listener::deliver(const EventHandler& handler) {
  std::lock_guard lock(deliver_mu_);
  std::size_t count = 0;
  for (;;) {
    auto events = journal_.after(delivered_, 256);
    if (!events || events->empty()) return count;
    for (const Event& e : *events) {
      if (handler) handler(e);
      delivered_ = e.cursor;
      ++count;
      if (!account_.options.manual_ack) (void)journal_.acknowledge(e.cursor);
    }
  }
}

void Listener::notify() {
  if (running()) link_.wake();  // the loop delivers after every item, this empty one too
}

bool Listener::running() {
  std::lock_guard lock(mu_);
  return thread_.joinable();
}

bool Listener::dispatch(const Inbound& in) {
  const svc::Push& push = in.push;
  if (push.has_envelope()) {
    (void)inbox_.handle(push.envelope());  // left with the server when it could not finish
    return false;
  }
  if (push.has_keys_low()) {
    if (auto c = link_.current()) (void)keys_.maintain(c);
    return false;
  }
  if (push.has_devices_changed()) {
    if (auto c = link_.current()) {
      (void)devices_.refresh(c);
      // Key transparency: once the stored queue is handled (before, the check at its end
      // comes), so that what the account's other devices said of their links is known.
      if (link_.drained()) (void)devices_.monitor(c, true);
    }
    return false;
  }
  if (push.has_queue_drained() && in.generation == link_.generation()) {
    link_.mark_drained(in.generation);
    // Key transparency: devices the account did not add, checked after the queue the server
    // kept for this device (another device's word of a link it made comes before the link).
    if (auto c = link_.current()) (void)devices_.monitor(c, true);
    next_check_ = SteadyClock::now() + account_.options.kt_check_interval;
    return true;
  }
  return false;
}

bool Listener::idle(const ConnectionPtr& c) {
  if (!devices_.recheck_pending() || !c) return false;
  (void)devices_.recheck(c);
  return true;
}

void Listener::after_connect(const ConnectionPtr& c) {
  (void)keys_.maintain(c);
  (void)devices_.refresh(c);
  // Before the queue pushed since the login is handled (dispatch comes after this): a block made
  // on another device drops what that account had queued here.
  (void)blocks_.refresh(c);
}

Result<std::size_t> Listener::receive(std::chrono::milliseconds timeout,
                                      const EventHandler& handler) {
  if (running()) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "the listener is running"));
  }
  std::size_t count = deliver(handler);  // what earlier runs recorded and did not hand over
  const auto deadline = SteadyClock::now() + timeout;
  auto connected = link_.ensure_connected(deadline);
  if (!connected) return tl::unexpected(connected.error());
  after_connect(connected->connection);
  count += deliver(handler);
  // Once the server has pushed the stored queue (QueueDrained), what is already here is taken
  // and nothing more is waited for: a connection kept open from an earlier call has drained.
  bool drained = link_.drained();
  if (drained && SteadyClock::now() >= next_check_) {
    // A connection kept open from an earlier call gets no QueueDrained again: the periodic key
    // transparency check runs here when it is due.
    (void)devices_.monitor(connected->connection, true);
    next_check_ = SteadyClock::now() + account_.options.kt_check_interval;
  }
  for (;;) {
    auto in = link_.next_inbound(drained ? std::optional(SteadyClock::now()) : Deadline(deadline));
    if (!in) {
      if (drained && idle(link_.current())) {
        count += deliver(handler);
        continue;
      }
      if (drained) return count;
      return tl::unexpected(
          make_error(ErrorCode::timeout, "timed out before the server's queue was drained"));
    }
    if (in->closed) {
      if (in->generation != link_.generation()) continue;
      auto again = link_.ensure_connected(deadline);
      if (!again) return tl::unexpected(again.error());
      drained = false;
      continue;
    }
    if (dispatch(*in)) drained = true;
    count += deliver(handler);
  }
}

Result<bool> Listener::pump(SteadyClock::time_point deadline, const std::function<bool()>& done) {
  EventHandler handler;
  if (running()) {
    // The listener's thread receives; wait for it to get there.
    while (!done()) {
      if (SteadyClock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return true;
  }
  auto connected = link_.ensure_connected(deadline);
  if (!connected) return tl::unexpected(connected.error());
  while (!done()) {
    auto in = link_.next_inbound(deadline);
    if (!in) return false;
    if (in->closed) {
      if (in->generation != link_.generation()) continue;
      auto again = link_.ensure_connected(deadline);
      if (!again) return tl::unexpected(again.error());
      continue;
    }
    (void)dispatch(*in);
  }
  (void)idle(link_.current());
  return true;
}

void Listener::loop(const EventHandler& handler) {
  const auto connection_event = [&](Event::Kind kind, std::string detail) {
    Event e;
    e.kind = kind;
    e.detail = std::move(detail);
    handler(e);
  };
  (void)deliver(handler);
  while (!link_.stopping()) {
    auto connected =
        link_.ensure_connected(std::nullopt, [&](const Error& error, std::chrono::milliseconds d) {
          connection_event(
              Event::Kind::disconnected,
              error.message + "; retrying in " + std::to_string((d.count() + 999) / 1000) + " s");
        });
    if (!connected) {
      if (link_.stopping()) break;
      Event e;
      e.kind = Event::Kind::fatal;
      e.error = connected.error();
      e.detail = connected.error().message;
      handler(e);
      break;
    }
    connection_event(Event::Kind::connected, {});
    after_connect(connected->connection);
    (void)deliver(handler);
    next_check_ = SteadyClock::now() + account_.options.kt_check_interval;
    for (;;) {
      auto in = link_.next_inbound(SteadyClock::now());
      if (!in && !link_.stopping()) {
        // Nothing waiting: a held key transparency check first, then wait for the next item
        // or the periodic check (docs/transparency.md, "Monitoring").
        if (idle(connected->connection)) {
          (void)deliver(handler);
          continue;
        }
        // (At most one check per kMinCheckPause, however short the interval.)
        in = link_.next_inbound(std::max(next_check_, SteadyClock::now() + kMinCheckPause));
        if (!in && !link_.stopping()) {
          (void)devices_.monitor(connected->connection, true);
          next_check_ = SteadyClock::now() + account_.options.kt_check_interval;
          (void)deliver(handler);
          continue;
        }
      }
      if (!in) break;  // stopping
      if (in->closed) {
        if (in->generation != connected->generation) continue;
        if (link_.stopping()) break;  // closed because the app stops listening: nothing to tell
        connection_event(
            Event::Kind::disconnected,
            (in->reason.empty() ? std::string("connection lost") : in->reason) + "; reconnecting");
        break;
      }
      (void)dispatch(*in);
      (void)deliver(handler);
    }
  }
}

Result<void> Listener::start(EventHandler handler) {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "the listener is already running"));
  }
  link_.listener_started();
  // The handler goes with the thread: stop() holds mu_ while it joins, so the loop must never
  // need it.
  thread_ = std::thread([this, h = std::move(handler)] { loop(h); });
  return {};
}

void Listener::stop() {
  std::lock_guard lock(mu_);
  if (!thread_.joinable()) return;
  link_.stop();
  thread_.join();
  link_.listener_stopped();
}

}  // namespace sotto::client
