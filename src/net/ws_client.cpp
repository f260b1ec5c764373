#include "net/ws_client.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <condition_variable>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "net/batch.h"
#include "net/outbound_queue.h"
#include "net/tls_internal.h"
#include "net/tls_stream.h"

namespace sotto::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr const char* kWebSocketPath = "/v1/websocket";
constexpr std::size_t kSplitSlotsKept = 64;
// As on the server (ws_server.cpp): frames queued behind a write in flight go out as one batch.
static_assert(kMaxBatchBytes + 16 <= detail::TlsStream::kMaxRecordPlaintext);
constexpr std::size_t kIdleReadLimit = 256;
constexpr std::chrono::seconds kCloseWaitMargin{1};

struct IoPool::Impl {
  explicit Impl(int n) : work(ioc.get_executor()) {
    for (int i = 0; i < std::max(1, n); ++i) threads.emplace_back([this] { ioc.run(); });
  }
  ~Impl() {
    work.reset();
    ioc.stop();
    for (auto& t : threads) {
      // The last owner may let go from one of the pool's own threads; it cannot join itself.
      if (t.get_id() == std::this_thread::get_id()) {
        t.detach();
      } else {
        t.join();
      }
    }
  }
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::vector<std::thread> threads;
};

IoPool::IoPool(int threads) : impl_(std::make_unique<Impl>(threads)) {}
IoPool::~IoPool() = default;

namespace {

std::string describe_close(const websocket::close_reason& cr) {
  if (!cr.reason.empty()) return std::string(cr.reason.data(), cr.reason.size());
  switch (cr.code) {
    case websocket::close_code::normal:
      return "normal closure";
    case websocket::close_code::going_away:
      return "going away";
    case websocket::close_code::protocol_error:
      return "protocol error";
    case websocket::close_code::bad_payload:
      return "bad payload";
    case websocket::close_code::policy_error:
      return "policy violation";
    case websocket::close_code::too_big:
      return "message too big";
    case websocket::close_code::internal_error:
      return "internal server error";
    case websocket::close_code::try_again_later:
      return "try again later";
    default:
      return "close code " + std::to_string(static_cast<unsigned>(cr.code));
  }
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  (void)asio::ip::make_address(host, ec);
  return !ec;
}

// One connection attempt and, if it succeeds, the open connection. Runs on its strand; handlers
// keep it alive, so it may outlive the WsClient that made it (it then calls nobody back).
class ClientConnection : public std::enable_shared_from_this<ClientConnection> {
 public:
  using Result = tl::expected<void, ClientError>;

  ClientConnection(asio::io_context& ioc, const ClientOptions& options,
                   WsClient::FrameHandler on_frame, WsClient::CloseHandler on_close)
      : options_(options),
        strand_(asio::make_strand(ioc)),
        ws_(tcp::socket(strand_), detail::client_context()),
        timer_(strand_),
        on_frame_(std::move(on_frame)),
        on_close_(std::move(on_close)) {}

  // Starts the attempt; `done` runs on the strand once it succeeded or failed.
  void connect(std::function<void(Result)> done) {
    on_connected_ = std::move(done);
    asio::dispatch(strand_, [self = shared_from_this()] { self->start(); });
  }

  const std::string& observed_fingerprint() const { return observed_; }  // after connect()
  const std::string& observed_certificate_fingerprint() const { return observed_certificate_; }
  const Bytes& peer_public_key() const { return peer_public_key_; }
  bool resumed() const { return resumed_; }                              // after connect()
  std::optional<std::array<std::uint8_t, 32>> channel_binding() const {  // after connect()
    if (!has_binding_) return std::nullopt;
    return binding_;
  }
  bool is_open() const { return open_.load(std::memory_order_acquire); }

  bool send(Bytes frame) {
    if (!is_open()) return false;
    if (out_.push(std::move(frame))) {
      asio::post(strand_, [self = shared_from_this()] { self->take_inbox(); });
    }
    return true;
  }

  // Flushes queued frames, sends a close frame and waits until the connection ended (bounded).
  void close() {
    if (finished()) return;  // nothing to close: no post, no wait
    asio::post(strand_, [self = shared_from_this()] { self->begin_close(); });
    if (running_here()) return;
    const auto limit = options_.connect_timeout + kCloseWaitMargin;
    if (!wait_finished(limit)) {
      asio::post(strand_, [self = shared_from_this()] { self->hard_close(); });
      (void)wait_finished(limit);
    }
  }

  // No callback runs after this returns (unless called from a callback, which is then the last).
  // Callbacks run holding callback_mu_, so this waits only for one that is running right now
  // (elsewhere): no round trip through the strand, no thread switch when none is.
  void detach() {
    if (running_here()) {  // from a callback (which holds the lock) or another strand handler
      detached_ = true;
      return;
    }
    std::lock_guard lock(callback_mu_);
    detached_ = true;
  }

 private:
  bool running_here() const { return strand_.running_in_this_thread(); }

  bool finished() {
    std::lock_guard lock(mu_);
    return finished_flag_;
  }

  bool wait_finished(std::chrono::steady_clock::duration limit) {
    std::unique_lock lock(mu_);
    return finished_cv_.wait_for(lock, limit, [this] { return finished_flag_; });
  }

  void start() {
    timer_.expires_after(options_.connect_timeout);
    timer_.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec && !self->connect_done_) {
        self->timed_out_ = true;
        if (self->resolver_) self->resolver_->cancel();
        self->hard_close();
      }
    });
    error_code literal;
    const auto address = asio::ip::make_address(options_.host, literal);
    if (!literal) {  // nothing to resolve (and no trip through the resolver's thread)
      endpoints_.assign(1, tcp::endpoint(address, options_.port));
      try_endpoint(0);
      return;
    }
    resolver_.emplace(strand_);
    resolver_->async_resolve(
        options_.host, std::to_string(options_.port),
        [self = shared_from_this()](error_code ec, tcp::resolver::results_type results) {
          self->on_resolve(ec, std::move(results));
        });
  }

  void on_resolve(error_code ec, tcp::resolver::results_type results) {
    resolver_.reset();
    if (timed_out_) return fail(ClientError::timeout);
    if (ec || results.empty()) return fail(ClientError::resolve_failed);
    endpoints_.clear();
    for (const auto& r : results) endpoints_.push_back(r.endpoint());
    try_endpoint(0);
  }

  void try_endpoint(std::size_t i) {
    if (timed_out_) return fail(ClientError::timeout);
    if (i >= endpoints_.size()) return fail(ClientError::connect_failed);
    tcp::socket& sock = ws_.next_layer().next_layer();
    error_code ec;
    if (sock.is_open()) sock.close(ec);
    sock.open(endpoints_[i].protocol(), ec);
    if (!ec && !options_.source_address.empty()) {
      const auto local = asio::ip::make_address(options_.source_address, ec);
      if (!ec) sock.bind(tcp::endpoint(local, 0), ec);
    }
    if (ec) return try_endpoint(i + 1);
    // Delayed, the ACK of the server's SYN-ACK leaves with the ClientHello.
    detail::delay_acks(sock.native_handle());
    sock.async_connect(endpoints_[i], [self = shared_from_this(), i](error_code e) {
      if (e) return self->try_endpoint(i + 1);
      self->on_connected();
    });
  }

  void on_connected() {
    error_code ec;
    ws_.next_layer().next_layer().set_option(tcp::no_delay(true), ec);
    // Connecting turned quick ACKs back on: off again, so the server's handshake flight is
    // acknowledged by the client's answer to it.
    detail::delay_acks(ws_.next_layer().next_layer().native_handle());
    ws_.next_layer().start(false, is_ip_literal(options_.host) ? std::string() : options_.host, ec);
    if (ec) return fail(ClientError::tls_failed);
    if (options_.session) {
      SSL* ssl = ws_.next_layer().native_handle();
      sink_.slot = options_.session;
      detail::attach_session_sink(ssl, &sink_);
      if (SSL_SESSION* s = options_.session->impl().get()) {
        (void)SSL_set_session(ssl, s);  // a session it cannot use means a full handshake
        SSL_SESSION_free(s);
      }
    }
    ws_.next_layer().async_handshake(
        [self = shared_from_this()](error_code e, std::size_t) { self->on_tls_handshake(e); });
  }

  void on_tls_handshake(error_code ec) {
    if (timed_out_) return fail(ClientError::timeout);
    if (ec) return fail(ClientError::tls_failed);
    // A resumed session carries the certificate of the full handshake it came from (which was
    // checked then), and is checked against the pin again here all the same.
    X509* peer = SSL_get0_peer_certificate(ws_.next_layer().native_handle());
    peer_public_key_ = detail::public_key_of(peer);
    observed_certificate_ = detail::fingerprint_of(peer);
    if (peer_public_key_.empty() || observed_certificate_.empty())
      return fail(ClientError::tls_failed);
    observed_ = key_fingerprint(peer_public_key_);
    if (!options_.fingerprint.empty()) {
      const std::string pin = detail::normalize_fingerprint(options_.fingerprint);
      if (pin != observed_ && pin != observed_certificate_) {
        if (options_.session) options_.session->clear();
        return fail(ClientError::fingerprint_mismatch);
      }
    }
    // Tickets arrive after the handshake; only now may they be kept. Trust on first use pins
    // nothing yet, so nothing is kept then either.
    sink_.pinned = !options_.fingerprint.empty();
    resumed_ = SSL_session_reused(ws_.next_layer().native_handle()) == 1;
    has_binding_ = ws_.next_layer().channel_binding(binding_);
    ws_.set_option(websocket::stream_base::timeout{websocket::stream_base::none(),
                                                   websocket::stream_base::none(), false});
    std::string authorization;
    if (options_.authorization && has_binding_) authorization = options_.authorization(binding_);
    ws_.set_option(websocket::stream_base::decorator(
        [authorization = std::move(authorization)](websocket::request_type& req) {
          req.set(beast::http::field::user_agent, "sotto");
          if (!authorization.empty()) req.set(beast::http::field::authorization, authorization);
        }));
    ws_.read_message_max(options_.max_frame_bytes);
    ws_.binary(true);
    ws_.auto_fragment(false);
    std::string host = options_.host;
    if (host.find(':') != std::string::npos) host = "[" + host + "]";  // an IPv6 literal
    host += ":" + std::to_string(options_.port);
    ws_.async_handshake(host, kWebSocketPath,
                        [self = shared_from_this()](error_code e) { self->on_ws_handshake(e); });
  }

  void on_ws_handshake(error_code ec) {
    if (timed_out_) return fail(ClientError::timeout);
    if (ec) return fail(ClientError::connect_failed);
    connect_done_ = true;
    timer_.cancel();
    websocket::stream_base::timeout t{};
    t.handshake_timeout = options_.connect_timeout;  // bounds the close handshake
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws_.set_option(t);
    open_.store(true, std::memory_order_release);
    complete_connect({});
    read_next();
  }

  void fail(ClientError e) {
    connect_done_ = true;
    timer_.cancel();
    hard_close();
    mark_finished();
    complete_connect(tl::unexpected(e));
  }

  void complete_connect(Result r) {
    auto done = std::move(on_connected_);
    on_connected_ = nullptr;
    std::lock_guard lock(callback_mu_);
    if (done && !detached_) done(std::move(r));
  }

  void read_next() {
    // As on the server: an idle connection's pending read allocates only a small limit.
    const std::size_t limit = rd_buf_.size() == 0 ? kIdleReadLimit : 0;
    ws_.async_read_some(rd_buf_, limit, [self = shared_from_this()](error_code ec, std::size_t) {
      self->on_read(ec);
    });
  }

  // Hands a message's frames to on_frame_ (a batch frame by frame). REQUIRES: callback_mu_ held.
  void deliver(ByteView message) {
    if (!split_batch(message, split_)) {
      on_frame_(message);
      return;
    }
    for (const ByteView frame : split_) {
      if (detached_) break;  // a frame's handler let go of its client
      on_frame_(frame);
    }
    split_.clear();
    if (split_.capacity() > kSplitSlotsKept) split_.shrink_to_fit();
  }

  void on_read(error_code ec) {
    if (ec) return finish(ec);
    if (!ws_.is_message_done()) return read_next();
    const auto data = rd_buf_.cdata();
    const ByteView message(static_cast<const std::uint8_t*>(data.data()), data.size());
    if (on_frame_) {
      std::lock_guard lock(callback_mu_);
      if (!detached_) deliver(message);
    }
    rd_buf_.clear();
    rd_buf_.shrink_to_fit();
    read_next();
  }

  void take_inbox() {
    (void)out_.take(open_.load() && !close_started_);
    if (!writing_ && out_.has_unsent()) write_next();
  }

  // Writes the next frame, or as many queued frames as fit one batch.
  void write_next() {
    writing_ = true;
    const ByteView bytes = out_.next_write();
    ws_.async_write(
        asio::buffer(bytes.data(), bytes.size()),
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(error_code ec) {
    writing_ = false;
    (void)out_.written();
    if (ec) return hard_close();
    if (out_.has_unsent()) {
      write_next();
    } else if (close_started_ && !close_sent_ && !finished_) {
      send_close_frame();
    }
  }

  void begin_close() {
    user_closed_ = true;
    if (finished_ || close_started_) return;
    close_started_ = true;
    if (!connect_done_ || !open_.load()) {
      hard_close();
      return;
    }
    timer_.expires_after(options_.connect_timeout);
    timer_.async_wait([self = shared_from_this()](error_code e) {
      if (!e) self->hard_close();
    });
    if (!writing_) send_close_frame();
  }

  void send_close_frame() {
    close_sent_ = true;
    ws_.async_close(websocket::close_code::normal, [self = shared_from_this()](error_code ec) {
      if (ec) self->hard_close();
    });
  }

  void hard_close() { ws_.next_layer().close_socket(); }

  void finish(error_code ec) {
    if (finished_) return;
    finished_ = true;
    open_.store(false, std::memory_order_release);
    timer_.cancel();
    hard_close();
    std::string reason;
    if (ws_.reason().code != websocket::close_code::none) {
      reason = describe_close(ws_.reason());
    } else if (user_closed_) {
      reason = "closed by client";
    } else {
      reason = ec.message();
    }
    {
      std::lock_guard lock(callback_mu_);
      if (!detached_ && on_close_) on_close_(reason);
    }
    mark_finished();
  }

  void mark_finished() {
    finished_ = true;
    open_.store(false, std::memory_order_release);
    std::lock_guard lock(mu_);
    finished_flag_ = true;
    finished_cv_.notify_all();
  }

  const ClientOptions options_;
  const asio::strand<asio::io_context::executor_type> strand_;
  // Before ws_, so destroyed after it: the SSL object inside ws_ points at it.
  detail::SessionSink sink_;
  websocket::stream<detail::TlsStream> ws_;
  asio::steady_timer timer_;  // connect deadline, then close deadline
  std::optional<tcp::resolver> resolver_;
  std::vector<tcp::endpoint> endpoints_;
  beast::flat_buffer rd_buf_;
  std::function<void(Result)> on_connected_;  // runs once, then cleared
  std::string observed_;
  std::string observed_certificate_;
  Bytes peer_public_key_;
  bool resumed_ = false;
  bool has_binding_ = false;
  std::array<std::uint8_t, 32> binding_{};

  WsClient::FrameHandler on_frame_;
  WsClient::CloseHandler on_close_;

  detail::OutboundQueue out_;
  std::vector<ByteView> split_;
  std::atomic<bool> open_{false};
  bool connect_done_ = false;
  bool timed_out_ = false;
  bool writing_ = false;
  bool close_started_ = false;
  bool close_sent_ = false;
  bool user_closed_ = false;
  bool finished_ = false;
  // Set by detach(); read by the callbacks' runs, which hold callback_mu_ (detach() from the
  // strand itself sets it without: nothing else runs then).
  bool detached_ = false;
  std::mutex callback_mu_;

  std::mutex mu_;
  std::condition_variable finished_cv_;
  bool finished_flag_ = false;  // guarded by mu_
};

// A client without a pool runs one I/O thread of its own.
struct OwnIo {
  OwnIo() : work(ioc.get_executor()), thread([this] { ioc.run(); }) {}
  ~OwnIo() {
    work.reset();
    ioc.stop();
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();
    } else {
      thread.join();
    }
  }
  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
};

}  // namespace

struct WsClient::Impl {
  ClientOptions options;
  FrameHandler on_frame;
  CloseHandler on_close;
  std::shared_ptr<IoPool> pool;
  std::unique_ptr<OwnIo> own;  // declared before conn: destroyed after it
  std::shared_ptr<ClientConnection> conn;
  std::string observed;
  std::string observed_certificate;
  Bytes peer_public_key;
  std::optional<std::array<std::uint8_t, 32>> binding;

  void take_observations(const ClientConnection& c) {
    observed = c.observed_fingerprint();
    observed_certificate = c.observed_certificate_fingerprint();
    peer_public_key = c.peer_public_key();
    resumed = c.resumed();
    binding = c.channel_binding();
  }
  void clear_observations() {
    observed.clear();
    observed_certificate.clear();
    peer_public_key.clear();
    resumed = false;
    binding.reset();
  }
  bool resumed = false;

  asio::io_context& ioc() { return pool ? pool->impl().ioc : own->ioc; }
};

WsClient::WsClient(ClientOptions options, FrameHandler on_frame, CloseHandler on_close,
                   std::shared_ptr<IoPool> pool)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->on_frame = std::move(on_frame);
  impl_->on_close = std::move(on_close);
  impl_->pool = std::move(pool);
  if (!impl_->pool) impl_->own = std::make_unique<OwnIo>();
}

WsClient::~WsClient() {
  if (impl_->conn) {
    impl_->conn->close();
    impl_->conn->detach();
    impl_->conn.reset();
  }
}

tl::expected<void, ClientError> WsClient::connect() {
  if (impl_->conn) {  // a new attempt replaces the previous connection
    impl_->conn->close();
    impl_->conn->detach();
    impl_->conn.reset();
  }
  impl_->clear_observations();
  impl_->conn = std::make_shared<ClientConnection>(impl_->ioc(), impl_->options, impl_->on_frame,
                                                   impl_->on_close);
  auto promise = std::make_shared<std::promise<tl::expected<void, ClientError>>>();
  auto future = promise->get_future();
  impl_->conn->connect([promise](tl::expected<void, ClientError> r) { promise->set_value(r); });
  // The connection's own deadline normally decides; this only guards against a stopped pool.
  if (future.wait_for(impl_->options.connect_timeout + kCloseWaitMargin) !=
      std::future_status::ready) {
    return tl::unexpected(ClientError::timeout);
  }
  auto result = future.get();
  impl_->take_observations(*impl_->conn);
  return result;
}

void WsClient::async_connect(ConnectHandler done) {
  if (impl_->conn) throw std::logic_error("WsClient::async_connect: already connected once");
  impl_->clear_observations();
  impl_->conn = std::make_shared<ClientConnection>(impl_->ioc(), impl_->options, impl_->on_frame,
                                                   impl_->on_close);
  // The completion runs on the connection's strand, before any frame: observed is written
  // there and read by the caller only after `done` ran.
  impl_->conn->connect([impl = impl_.get(), conn = std::weak_ptr<ClientConnection>(impl_->conn),
                        done = std::move(done)](tl::expected<void, ClientError> r) {
    if (auto c = conn.lock()) impl->take_observations(*c);
    if (done) done(r);
  });
}

bool WsClient::resumed() const {
  return impl_->resumed;
}

std::optional<std::array<std::uint8_t, 32>> WsClient::channel_binding() const {
  return impl_->binding;
}

TlsSessionSlot::TlsSessionSlot() : impl_(std::make_unique<Impl>()) {}
TlsSessionSlot::~TlsSessionSlot() = default;
bool TlsSessionSlot::holds_session() const {
  std::lock_guard lock(impl_->mu);
  return impl_->session != nullptr;
}
void TlsSessionSlot::clear() {
  impl_->put(nullptr);
}

const std::string& WsClient::observed_fingerprint() const {
  return impl_->observed;
}

const std::string& WsClient::observed_certificate_fingerprint() const {
  return impl_->observed_certificate;
}

const Bytes& WsClient::peer_public_key() const {
  return impl_->peer_public_key;
}

bool WsClient::send(Bytes frame) {
  return impl_->conn && impl_->conn->send(std::move(frame));
}

void WsClient::close() {
  if (impl_->conn) impl_->conn->close();
}

bool WsClient::is_open() const {
  return impl_->conn && impl_->conn->is_open();
}

std::string_view to_string(ClientError e) {
  switch (e) {
    case ClientError::resolve_failed:
      return "resolve_failed";
    case ClientError::connect_failed:
      return "connect_failed";
    case ClientError::tls_failed:
      return "tls_failed";
    case ClientError::fingerprint_mismatch:
      return "fingerprint_mismatch";
    case ClientError::closed:
      return "closed";
    case ClientError::timeout:
      return "timeout";
  }
  return "unknown";
}

}  // namespace sotto::net
