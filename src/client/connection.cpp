#include "client/connection.h"

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>

#include "client/util.h"

namespace sotto::client {

namespace {
// The connection state whose handler this thread is running (see State::enter).
thread_local const void* t_in_handler = nullptr;
}  // namespace

struct Connection::State {
  std::mutex mu;
  std::condition_variable cv;
  // Handlers (on_push, on_close) running now, on any thread; once `detached`, none starts.
  int running = 0;
  bool detached = false;
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, std::optional<svc::Response>> pending;
  bool closed = false;
  bool close_reported = false;
  std::string close_reason;
  PushHandler on_push;
  CloseHandler on_close;
  std::optional<svc::Status> login;  // the answer to the upgrade request's login proof

  void frame(ByteView bytes) {
    svc::Frame frame;
    if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
    if (frame.has_response()) {
      std::lock_guard lock(mu);
      auto it = pending.find(frame.response().id());
      if (it == pending.end()) return;  // a call that timed out meanwhile
      it->second = std::move(*frame.mutable_response());
      cv.notify_all();
      return;
    }
    if (frame.has_push() && frame.push().has_login_result()) {
      std::lock_guard lock(mu);
      login = std::move(*frame.mutable_push()->mutable_login_result()->mutable_status());
      cv.notify_all();
      return;
    }
    if (frame.has_push() && on_push)
      run_handler([&] { on_push(std::move(*frame.mutable_push())); });
  }

  // Runs a handler (on_push, on_close) unless the owner detached; it counts as running, on this
  // thread, until it returns or throws.
  template <class F>
  void run_handler(F&& handler) {
    {
      std::lock_guard lock(mu);
      if (detached) return;
      ++running;
    }
    struct Running {
      State& state;
      const void* outer = t_in_handler;
      ~Running() {
        t_in_handler = outer;
        std::lock_guard lock(state.mu);
        --state.running;
        state.cv.notify_all();
      }
    } guard{*this};
    t_in_handler = this;
    handler();
  }
  // No handler starts from now on, and none runs once this returns: the owner of what the
  // handlers touch may go. A handler that closes its own connection does not wait for itself.
  void detach() {
    std::unique_lock lock(mu);
    detached = true;
    const int self = t_in_handler == this ? 1 : 0;
    cv.wait(lock, [&] { return running <= self; });
  }

  void closed_by(const std::string& reason) {
    {
      std::lock_guard lock(mu);
      closed = true;
      if (close_reason.empty()) close_reason = reason;
      cv.notify_all();
      if (close_reported) return;
      close_reported = true;
    }
    if (on_close) run_handler([&] { on_close(reason); });
  }
};

Result<std::unique_ptr<Connection>> Connection::open(Connector& connector, const Endpoint& endpoint,
                                                     PushHandler on_push, CloseHandler on_close,
                                                     Authorize authorize) {
  std::unique_ptr<Connection> c(new Connection());
  c->state_ = std::make_shared<State>();
  c->state_->on_push = std::move(on_push);
  c->state_->on_close = std::move(on_close);
  std::weak_ptr<State> weak = c->state_;
  TransportHandlers handlers;
  handlers.on_frame = [weak](ByteView frame) {
    if (auto s = weak.lock()) s->frame(frame);
  };
  handlers.on_close = [weak](const std::string& reason) {
    if (auto s = weak.lock()) s->closed_by(reason);
  };
  handlers.authorize = std::move(authorize);
  auto opened = connector.open(endpoint, std::move(handlers));
  if (!opened) {
    // The close handler must not report a connection that never opened.
    std::lock_guard lock(c->state_->mu);
    c->state_->close_reported = true;
    c->state_->closed = true;
    return tl::unexpected(opened.error());
  }
  c->transport_ = std::move(*opened);
  c->server_pin_ = c->transport_->server_pin();
  return c;
}

Connection::~Connection() {
  close();
  transport_.reset();  // joins the transport's thread; handlers hold only weak references
}

void Connection::close() {
  if (transport_) transport_->close();
  if (state_) {
    state_->closed_by("closed by the client");
    // A close the transport reported on its own thread may still be in its handler: wait for it,
    // so that the caller may destroy what the handlers use as soon as close() returns.
    state_->detach();
  }
}

std::optional<ChannelBinding> Connection::channel_binding() const {
  return transport_->channel_binding();
}

Bytes Connection::server_public_key() const {
  return transport_->server_public_key();
}

Result<void> Connection::await_login(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  const bool done =
      state_->cv.wait_for(lock, timeout, [&] { return state_->login || state_->closed; });
  if (state_->login) {
    if (state_->login->code() == svc::OK) return {};
    svc::Response refused;
    *refused.mutable_status() = *state_->login;
    return tl::unexpected(status_error(refused));
  }
  if (!done) {
    return tl::unexpected(make_error(ErrorCode::timeout, "the server did not answer in time"));
  }
  return tl::unexpected(make_error(ErrorCode::network, "connection to the server lost"));
}

bool Connection::is_open() const {
  {
    std::lock_guard lock(state_->mu);
    if (state_->closed) return false;
  }
  return transport_ && transport_->is_open();
}

Result<svc::Response> Connection::call(svc::Request request, std::chrono::milliseconds timeout) {
  auto id = start(std::move(request));
  if (!id) return tl::unexpected(id.error());
  return wait(*id, timeout);
}

Result<std::uint64_t> Connection::start(svc::Request request) {
  std::uint64_t id = 0;
  {
    std::lock_guard lock(state_->mu);
    if (state_->closed) {
      return tl::unexpected(make_error(ErrorCode::network, "connection to the server lost"));
    }
    id = state_->next_id++;
    state_->pending.emplace(id, std::nullopt);
  }
  request.set_id(id);
  svc::Frame frame;
  *frame.mutable_request() = std::move(request);
  Bytes bytes(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(bytes.data());
  if (!transport_->send(std::move(bytes))) {
    std::lock_guard lock(state_->mu);
    state_->pending.erase(id);
    return tl::unexpected(make_error(ErrorCode::network, "connection to the server lost"));
  }
  return id;
}

Result<svc::Response> Connection::wait(std::uint64_t id, std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mu);
  auto it = state_->pending.find(id);
  if (it == state_->pending.end()) {
    return tl::unexpected(make_error(ErrorCode::network, "connection to the server lost"));
  }
  const bool done =
      state_->cv.wait_for(lock, timeout, [&] { return it->second.has_value() || state_->closed; });
  if (it->second.has_value()) {
    svc::Response response = std::move(*it->second);
    state_->pending.erase(it);
    return response;
  }
  state_->pending.erase(it);
  if (!done) {
    return tl::unexpected(make_error(ErrorCode::timeout, "the server did not answer in time"));
  }
  return tl::unexpected(make_error(ErrorCode::network, "connection to the server lost"));
}

namespace {

// "retry in N s" for a server's hint (rounded up), or a plain "try again later".
std::string retry_text(std::uint32_t retry_after_ms) {
  if (retry_after_ms == 0) return "try again later";
  return "retry in " + std::to_string((static_cast<std::uint64_t>(retry_after_ms) + 999) / 1000) +
         " s";
}

}  // namespace

Error status_error(const svc::Response& response) {
  const auto& status = response.status();
  std::string text = status.message().empty() ? "request refused" : status.message();
  switch (status.code()) {
    case svc::OK:
      return make_error(ErrorCode::server, "unexpected success");
    case svc::UNAUTHENTICATED:
      return make_error(ErrorCode::unauthenticated, "server: " + text);
    case svc::NOT_FOUND:
      return make_error(ErrorCode::not_found, "server: " + text);
    case svc::CONFLICT:
      return make_error(ErrorCode::account_exists, "server: " + text);
    case svc::BAD_REQUEST:
      return make_error(ErrorCode::invalid_argument, "server: " + text);
    case svc::FORBIDDEN:
      return make_error(ErrorCode::forbidden, "server: " + text);
    case svc::RATE_LIMITED: {
      // Limits before login count per address, the others per account (the server's text says
      // which).
      const bool address = text.find("address") != std::string::npos;
      return make_error(ErrorCode::rate_limited, std::string("the server is rate limiting this ") +
                                                     (address ? "address" : "account") + ": " +
                                                     text + "; " +
                                                     retry_text(status.retry_after_ms()));
    }
    case svc::UNAVAILABLE:
      return make_error(ErrorCode::server, "the server cannot take this now: " + text + "; " +
                                               retry_text(status.retry_after_ms()));
    case svc::DEVICE_IN_USE:
      return make_error(ErrorCode::device_in_use, "server: " + text);
    default:
      return make_error(ErrorCode::server, "server: " + text);
  }
}

}  // namespace sotto::client
