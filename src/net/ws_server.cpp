#include "net/ws_server.h"

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

#include "net/address_key.h"
#include "net/batch.h"
#include "net/handover/record_handover.h"
#include "net/outbound_queue.h"
#include "net/tls_internal.h"
#include "net/tls_stream.h"

namespace sotto::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using WsStream = websocket::stream<detail::TlsStream>;

constexpr std::size_t kMaxCloseReasonBytes = 123;  // RFC 6455 section 5.5: 125 minus the code
constexpr std::chrono::seconds kSlowReaderCloseDeadline{2};
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};
constexpr std::chrono::seconds kForcedCloseWait{2};
// How much longer Beast's close-handshake timer runs than the server's own close deadline.
constexpr std::chrono::seconds kBeastCloseMargin{5};
// What an idle connection's pending read may allocate ahead of data; most frames fit.
constexpr std::size_t kIdleReadLimit = 256;
// Frames queued behind a write in flight go out as one batch (net/batch.h) of at most
// kMaxBatchBytes, so that a batch with its WebSocket header fits one TLS record; a larger frame
// goes alone.
static_assert(kMaxBatchBytes + 16 <= detail::TlsStream::kMaxRecordPlaintext);
// The frames of a received batch are handed over through a vector kept per connection; one that
// grew past this many slots is given back afterwards.
constexpr std::size_t kSplitSlotsKept = 64;

class ServerConnection;

// Keep-alive (docs/architecture.md section 5): a connection silent for ping_interval is pinged, and
// one silent for idle_timeout is closed. Anything received counts, pongs included. The check runs
// every tick, so a ping goes out within 1.5 x ping_interval of silence and a silent peer is closed
// within idle_timeout + tick. The ping interval is capped at idle_timeout / 2 so that a live peer
// always gets a ping before it would be closed. A connection not logged in yet has its own (short)
// idle timeout. The same tick closes a slow reader: a write that has not completed for
// slow_reader_timeout (checked every quarter of it at most).
struct Keepalive {
  Keepalive(std::chrono::seconds idle_timeout, std::chrono::seconds ping_interval,
            std::chrono::seconds slow_reader_timeout) {
    idle = std::chrono::duration_cast<Clock::duration>(idle_timeout);
    ping = std::chrono::duration_cast<Clock::duration>(ping_interval);
    slow = std::chrono::duration_cast<Clock::duration>(slow_reader_timeout);
    if (slow.count() > 0) tick = std::max<Clock::duration>(slow / 4, std::chrono::milliseconds(10));
    if (idle.count() <= 0) return;  // disabled
    if (ping.count() <= 0 || ping > idle / 2) ping = idle / 2;
    const auto t = std::max<Clock::duration>(ping / 2, std::chrono::milliseconds(10));
    tick = tick.count() > 0 ? std::min(tick, t) : t;
  }
  bool enabled() const { return tick.count() > 0; }
  bool idle_enabled() const { return idle.count() > 0; }
  Clock::duration idle{};
  Clock::duration ping{};
  Clock::duration slow{};
  Clock::duration tick{};
};

// Why the acceptor turns a connection away (it then closes the socket at once: no TLS handshake,
// no memory, no descriptor kept for a connection that will not be served).
enum class Refusal { none, server_full, address_full, address_prelogin_full };

// What the acceptor and every connection share. Owned by WsServer::Impl; connections hold a
// reference, and stop() ends every connection before the state goes away.
struct ServerState {
  ServerState(ServerOptions o, ConnectionHandler& h, detail::SslCtxPtr c)
      : options(std::move(o)),
        keepalive(options.idle_timeout, options.ping_interval, options.slow_reader_timeout),
        prelogin_keepalive(options.prelogin_idle_timeout.count() > 0 ? options.prelogin_idle_timeout
                                                                     : options.idle_timeout,
                           options.ping_interval, options.slow_reader_timeout),
        prelogin_frame_limit(
            options.prelogin_max_frame_bytes > 0
                ? std::min(options.prelogin_max_frame_bytes, options.max_frame_bytes)
                : options.max_frame_bytes),
        handler(h),
        ctx_(std::move(c)) {}

  // The TLS context new connections take. Each connection's SSL object holds its own reference
  // to the context it was made with, so replacing this one never disturbs open connections.
  std::shared_ptr<SSL_CTX> context() {
    std::lock_guard lock(ctx_mu_);
    return ctx_;
  }
  void replace_context(std::shared_ptr<SSL_CTX> c) {
    std::lock_guard lock(ctx_mu_);
    ctx_.swap(c);
  }

  // Admission, by the acceptor (the only one that adds, so what it decides here still holds when
  // it adds): whether a connection from `key` may come in, and which pre-login connection it
  // displaces when they are at their ceiling (`evict`, no longer counted as pre-login).
  Refusal admit(const std::string& key, std::shared_ptr<ServerConnection>& evict) {
    std::lock_guard lock(mu);
    if (live.size() >= options.max_connections) return Refusal::server_full;
    if (const auto it = by_address.find(key); it != by_address.end()) {
      const std::size_t cap = options.max_connections_per_address;
      const std::size_t prelogin_cap = options.max_prelogin_per_address;
      if (cap > 0 && it->second.total >= cap) return Refusal::address_full;
      if (prelogin_cap > 0 && it->second.prelogin >= prelogin_cap) {
        return Refusal::address_prelogin_full;
      }
    }
    const std::size_t ceiling = options.max_prelogin_connections;
    while (ceiling > 0 && prelogin.size() >= ceiling && !evict) {
      const auto oldest = prelogin.begin();
      evict = oldest->second.connection.lock();
      leave_prelogin_locked(oldest);
    }
    return Refusal::none;
  }
  void add(std::uint64_t id, const std::string& key, const std::shared_ptr<ServerConnection>& c) {
    std::lock_guard lock(mu);
    live.emplace(id, c);
    prelogin.emplace(id, Prelogin{c, key});
    auto& load = by_address[key];
    ++load.total;
    ++load.prelogin;
    count.store(live.size());
  }
  // The connection logged in (or was displaced): no longer pre-login. Idempotent.
  void leave_prelogin(std::uint64_t id) {
    std::lock_guard lock(mu);
    if (const auto it = prelogin.find(id); it != prelogin.end()) leave_prelogin_locked(it);
  }
  void remove(std::uint64_t id, const std::string& key) {
    std::lock_guard lock(mu);
    if (const auto it = prelogin.find(id); it != prelogin.end()) leave_prelogin_locked(it);
    if (live.erase(id) > 0) {
      if (const auto it = by_address.find(key); it != by_address.end() && --it->second.total == 0) {
        by_address.erase(it);
      }
    }
    count.store(live.size());
    if (live.empty()) drained.notify_all();
  }
  std::vector<std::shared_ptr<ServerConnection>> snapshot() {
    std::lock_guard lock(mu);
    std::vector<std::shared_ptr<ServerConnection>> out;
    out.reserve(live.size());
    for (auto& [id, weak] : live) {
      if (auto c = weak.lock()) out.push_back(std::move(c));
    }
    return out;
  }
  // Waits until no connection is left or `deadline` passes; true when none is left.
  bool wait_drained(Clock::time_point deadline) {
    std::unique_lock lock(mu);
    return drained.wait_until(lock, deadline, [this] { return live.empty(); });
  }

  // Every connection's unsent bytes together, against options.max_buffered_bytes.
  bool over_budget() const { return buffered.load() >= options.max_buffered_bytes; }
  // `n` buffered bytes are gone (written or dropped); wakes the connections waiting for the
  // budget once it has room. Defined after ServerConnection.
  void release(std::size_t n);
  // `c` waits for the budget to have room (ServerConnection::check_room puts it here once).
  void wait_for_budget(std::weak_ptr<ServerConnection> c) {
    std::lock_guard lock(budget_mu);
    budget_waiters.push_back(std::move(c));
    budget_waiting.store(true);
  }

  const ServerOptions options;
  const Keepalive keepalive;           // logged in
  const Keepalive prelogin_keepalive;  // not yet
  const std::size_t prelogin_frame_limit;
  ConnectionHandler& handler;
  std::atomic<std::size_t> count{0};
  std::atomic<std::size_t> buffered{0};
  // Set (seq_cst) after a waiter is added and read after every release: a waiter that rechecks
  // the budget after adding itself is either seen by the release or sees its bytes gone.
  std::atomic<bool> budget_waiting{false};
  std::mutex budget_mu;
  std::vector<std::weak_ptr<ServerConnection>> budget_waiters;  // guarded by budget_mu
  std::uint64_t next_id = 1;  // used by the acceptor's strand only

  std::mutex mu;
  std::condition_variable drained;
  std::unordered_map<std::uint64_t, std::weak_ptr<ServerConnection>> live;  // guarded by mu
  // Connections of one address key, and how many of them are pre-login; guarded by mu.
  struct AddressLoad {
    std::size_t total = 0;
    std::size_t prelogin = 0;
  };
  std::unordered_map<std::string, AddressLoad> by_address;
  // The pre-login connections by id, so oldest first (ids grow with each accept); guarded by mu.
  struct Prelogin {
    std::weak_ptr<ServerConnection> connection;
    std::string key;
  };
  std::map<std::uint64_t, Prelogin> prelogin;
  void leave_prelogin_locked(std::map<std::uint64_t, Prelogin>::iterator it) {
    if (const auto a = by_address.find(it->second.key); a != by_address.end()) --a->second.prelogin;
    prelogin.erase(it);
  }
  std::mutex ctx_mu_;
  std::shared_ptr<SSL_CTX> ctx_;  // guarded by ctx_mu_: use context() and replace_context()

  asio::io_context ioc;  // last: destroyed first, with any handler still holding a connection
};

std::string truncate_reason(const std::string& reason) {
  return reason.size() <= kMaxCloseReasonBytes ? reason : reason.substr(0, kMaxCloseReasonBytes);
}

// One accepted connection. Everything below runs on the connection's strand (the socket's
// executor) except send(), close() and outbound_bytes(), which only post to it or read atomics.
class ServerConnection final : public Connection,
                               public std::enable_shared_from_this<ServerConnection> {
 public:
  ServerConnection(ServerState& server, std::uint64_t id, tcp::socket socket, std::string remote,
                   std::string key)
      : server_(server),
        id_(id),
        remote_(std::move(remote)),
        key_(std::move(key)),
        strand_(socket.get_executor()),
        ws_(std::move(socket), server.context().get()),
        timer_(strand_) {}

  void start() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->start_tls(); });
  }

  ~ServerConnection() override {
    // Whatever never got written (a stop that did not wait) leaves the server's count too.
    server_.buffered.fetch_sub(outbound_.load());
  }

  bool send(Bytes frame) override {
    if (closed_.load(std::memory_order_acquire)) return false;
    const std::size_t n = detail::OutboundQueue::cost(frame);
    const std::size_t total = outbound_.fetch_add(n) + n;
    if (total > server_.options.max_outbound_bytes) {
      // A backstop: handlers pace pushes by writable() and requests are not read above twice the
      // low-water mark, so only a peer that reads nothing while its answers pile up gets here.
      outbound_.fetch_sub(n);
      begin_close_async(websocket::close_code::policy_error, "slow reader", false,
                        kSlowReaderCloseDeadline);
      return false;
    }
    server_.buffered.fetch_add(n);
    if (out_.push(std::move(frame))) {
      asio::post(strand_, [self = shared_from_this()] { self->take_inbox(); });
    }
    return true;
  }

  void close(const std::string& reason) override {
    begin_close_async(websocket::close_code::normal, reason, true,
                      server_.options.handshake_timeout);
  }

  std::uint64_t id() const override { return id_; }
  const std::string& remote_address() const override { return remote_; }
  std::size_t outbound_bytes() const override { return outbound_.load(); }
  bool writable() override {
    if (closed_.load(std::memory_order_acquire)) return false;
    if (push_room()) return true;
    // Set before looking again: a write completing meanwhile either is seen here or sees this.
    handler_waiting_.store(true);
    if (push_room()) return true;  // the flag may stay: a spurious on_writable is harmless
    // Only the server's budget is short: no write of ours need complete, so wait for it there.
    if (outbound_.load() < server_.options.outbound_low_water) {
      asio::post(strand_, [self = shared_from_this()] { self->check_room(); });
    }
    return false;
  }
  bool take_channel_binding(std::array<std::uint8_t, 32>& out) override {
    const bool ok = ws_.next_layer().channel_binding(out);
    ws_.next_layer().forget_channel_binding();
    return ok;
  }

  void promote() override {
    asio::dispatch(strand_, [self = shared_from_this()] { self->on_promote(); });
  }

  void extend_login_deadline(std::chrono::seconds time) override {
    asio::dispatch(strand_, [self = shared_from_this(), time] {
      if (self->logged_in_ || !self->deadline_active_) return;
      self->login_deadline_ = Clock::now() + time;
    });
  }

  // A newer connection took this one's pre-login slot (ServerOptions::max_prelogin_connections).
  void displace() {
    begin_close_async(websocket::close_code::try_again_later,
                      "server busy: too many connections are not logged in; try again", false,
                      server_.options.handshake_timeout);
  }

  // WsServer::stop: flush what is queued, then close; hard close when `grace` runs out.
  void shut_down(std::chrono::milliseconds grace) {
    begin_close_async(websocket::close_code::going_away, "server shutting down", true, grace);
  }

  void abort() {
    asio::dispatch(strand_, [self = shared_from_this()] { self->hard_close(); });
  }

  // The server's budget has room again (ServerState::release): look on the strand.
  void budget_room() {
    in_budget_list_.store(false);
    asio::post(strand_, [self = shared_from_this()] { self->check_room(); });
  }

 private:
  void start_tls() {
    error_code ec;
    ws_.next_layer().start(true, {}, ec);
    if (ec) {
      finish();
      return;
    }
    // One deadline for the TLS and the WebSocket handshakes together.
    timer_.expires_after(server_.options.handshake_timeout);
    timer_.async_wait([self = shared_from_this()](error_code e) {
      if (!e && !self->opened_) self->hard_close();
    });
    ws_.next_layer().async_handshake(
        [self = shared_from_this()](error_code e, std::size_t) { self->on_tls_handshake(e); });
  }

  void on_tls_handshake(error_code ec) {
    if (ec || close_started_) {
      finish();
      return;
    }
    ws_.set_option(websocket::stream_base::timeout{websocket::stream_base::none(),
                                                   websocket::stream_base::none(), false});
    ws_.read_message_max(logged_in_ ? server_.options.max_frame_bytes
                                    : server_.prelogin_frame_limit);
    ws_.binary(true);
    ws_.auto_fragment(false);
    // The upgrade request is read here rather than inside Beast's accept, for its Authorization
    // header (a login proof, handed to on_open).
    upgrade_ = std::make_unique<Upgrade>();
    upgrade_->parser.header_limit(kMaxUpgradeRequestBytes);
    http::async_read(
        ws_.next_layer(), upgrade_->buffer, upgrade_->parser,
        [self = shared_from_this()](error_code e, std::size_t) { self->on_upgrade_request(e); });
  }

  void on_upgrade_request(error_code ec) {
    // A client sends nothing more before the server's answer (RFC 6455 section 4.1).
    if (ec || close_started_ || upgrade_->buffer.size() != 0) {
      finish();
      return;
    }
    const auto& request = upgrade_->parser.get();
    if (const auto it = request.find(http::field::authorization); it != request.end()) {
      upgrade_->authorization.assign(it->value().data(), it->value().size());
      // The 101 waits for the login result on_open() queues: one segment for both (and the
      // session tickets before them).
      ws_.next_layer().hold_output(true);
    }
    // Beast answers 400 (and the accept fails) unless it is a valid WebSocket upgrade.
    ws_.async_accept(request, [self = shared_from_this()](error_code e) { self->on_accept(e); });
  }

  void on_accept(error_code ec) {
    timer_.cancel();
    if (ec || close_started_) {
      // Beast's refusal (a 400) may be held: best effort, as the connection ends here.
      ws_.next_layer().hold_output(false);
      (void)ws_.next_layer().try_flush();
      finish();
      return;
    }
    const std::string authorization = std::move(upgrade_->authorization);
    upgrade_.reset();
    // Beast's own timer only bounds the close handshake; keep-alive is ours (see Keepalive).
    // It runs a little longer than the close deadline begin_close() sets: when it fires, Beast
    // closes the TCP socket under the TLS stream (no close_notify), while ours ends the
    // connection through hard_close(), which says close_notify. Beast's still bounds the closes
    // Beast starts itself (a protocol error).
    ws_.set_option(
        websocket::stream_base::timeout{server_.options.handshake_timeout + kBeastCloseMargin,
                                        websocket::stream_base::none(), false});
    ws_.control_callback([this](websocket::frame_type kind, beast::string_view) {
      note_activity();
      // Beast answers a close frame and then tears down: its close frame and the close_notify
      // behind it leave in one segment.
      if (kind == websocket::frame_type::close) ws_.next_layer().hold_output(true);
    });
    opened_ = true;
    note_activity();
    if (!logged_in_ && server_.options.login_deadline.count() > 0) {
      deadline_active_ = true;
      login_deadline_ = Clock::now() + server_.options.login_deadline;
    }
    arm_keepalive();
    auto self = shared_from_this();
    server_.handler.on_open(self, authorization);
    if (!finished_) read_next();
    // Held output leaves with the first write on_open() queued (posted before this), or here.
    if (ws_.next_layer().holding_output()) {
      asio::post(strand_, [self = std::move(self)] { self->release_output(); });
    }
  }

  void release_output() {
    auto& stream = ws_.next_layer();
    stream.hold_output(false);
    if (writing_ || close_sent_ || finished_ || !stream.has_unowned_output()) return;
    stream.async_flush([self = shared_from_this()](error_code ec, std::size_t) {
      if (ec) self->hard_close();
    });
  }

  void note_activity() {
    last_activity_ = Clock::now();
    pinged_ = false;
  }

  const Keepalive& keepalive() const {
    return logged_in_ ? server_.keepalive : server_.prelogin_keepalive;
  }

  void on_promote() {
    if (logged_in_ || finished_) return;
    logged_in_ = true;
    deadline_active_ = false;
    server_.leave_prelogin(id_);
    ws_.read_message_max(server_.options.max_frame_bytes);  // from the next message on
    // The timer keeps its pre-login tick until it next fires, then takes the new keep-alive's.
    if (opened_ && !close_started_ && !ticking_) arm_keepalive();
  }

  // The keep-alive ticks, which also watch the login deadline; not armed when there is neither.
  void arm_keepalive() {
    const Keepalive& k = keepalive();
    if (!k.enabled() && !deadline_active_) {
      ticking_ = false;
      return;
    }
    Clock::duration next = k.enabled() ? k.tick : Clock::duration::max();
    if (deadline_active_) {
      const auto left =
          std::max<Clock::duration>(login_deadline_ - Clock::now(), std::chrono::milliseconds(10));
      // Checked at least a few times over the deadline, so a later one (extend_login_deadline)
      // never waits for an earlier tick than it should.
      next = std::min({next, left, Clock::duration(std::chrono::seconds(1))});
    }
    ticking_ = true;
    timer_.expires_after(next);
    timer_.async_wait([self = shared_from_this()](error_code e) {
      if (!e) self->keepalive_tick();
    });
  }

  void keepalive_tick() {
    ticking_ = false;
    if (close_started_ || finished_) return;  // the timer now guards the close instead
    const auto now = Clock::now();
    if (deadline_active_ && !logged_in_ && now >= login_deadline_) {
      // Pings and pongs never count here: only logging in, registering or opening a
      // provisioning address (which the handler reports) does.
      begin_close(websocket::close_code::policy_error,
                  "login deadline: log in, register or start linking sooner after connecting",
                  false, server_.options.handshake_timeout);
      return;
    }
    if (writing_ && server_.keepalive.slow.count() > 0 &&
        now - write_started_ >= server_.keepalive.slow) {
      // No progress: not one write completed for slow_reader_timeout (a backlog the server keeps
      // within its marks is not this; a peer that stopped reading is).
      begin_close(websocket::close_code::policy_error, "slow reader", false,
                  kSlowReaderCloseDeadline);
      return;
    }
    const Keepalive& k = keepalive();
    if (!k.idle_enabled()) {
      arm_keepalive();
      return;
    }
    // While the server does not read (back-pressure), it cannot hear the peer: that is no
    // silence of the peer's (one that stopped reading is closed by the rule above).
    if (read_paused_) last_activity_ = now;
    const auto silent = now - last_activity_;
    if (silent >= k.idle) {
      hard_close();  // silent peers do not answer close frames either; the read now fails
      return;
    }
    if (silent >= k.ping && !pinged_ && !ping_in_flight_) {
      pinged_ = true;
      ping_in_flight_ = true;
      ws_.async_ping({}, [self = shared_from_this()](error_code ec) {
        self->ping_in_flight_ = false;
        if (ec) self->hard_close();
      });
    }
    arm_keepalive();
  }

  void read_next() {
    // A pending read makes Beast allocate its limit in rd_buf_ before any byte arrives, so an
    // idle connection waits with a small limit; the rest of a message is read with Beast's own.
    const std::size_t limit = rd_buf_.size() == 0 ? kIdleReadLimit : 0;
    ws_.async_read_some(rd_buf_, limit, [self = shared_from_this()](error_code ec, std::size_t) {
      self->on_read(ec);
    });
  }

  void on_read(error_code ec) {
    if (ec) {
      finish();
      return;
    }
    note_activity();
    if (!ws_.is_message_done()) {
      read_next();
      return;
    }
    if (!ws_.got_binary()) {
      begin_close(websocket::close_code::unknown_data, "binary frames only", false,
                  server_.options.handshake_timeout);
    } else {
      const auto data = rd_buf_.cdata();
      const ByteView message(static_cast<const std::uint8_t*>(data.data()), data.size());
      auto self = shared_from_this();
      if (split_batch(message, split_)) {
        for (const ByteView frame : split_) {
          if (closed_.load(std::memory_order_acquire)) break;  // closing: the rest is moot
          server_.handler.on_frame(self, frame);
        }
        split_.clear();
        if (split_.capacity() > kSplitSlotsKept) split_.shrink_to_fit();
      } else {
        server_.handler.on_frame(self, message);
      }
    }
    // Idle connections must not keep the last message's buffer: free it.
    rd_buf_.clear();
    rd_buf_.shrink_to_fit();
    if (finished_) return;
    if (!close_started_ && !read_room()) {
      // Back-pressure: the answers to what was read are not leaving (or the server is over its
      // budget). The next request waits in the kernel, and TCP holds the peer back; a write
      // completion (or the budget) resumes reading.
      read_paused_ = true;
      check_room();
      return;
    }
    read_next();
  }

  bool push_room() const {
    return outbound_.load() < server_.options.outbound_low_water && !server_.over_budget();
  }
  bool read_room() const {
    return outbound_.load() <= 2 * server_.options.outbound_low_water && !server_.over_budget();
  }

  // Unsent bytes went down (or the budget has room): resumes a paused read and tells a handler
  // that waits for writable(). On the strand.
  void check_room() {
    if (finished_ || (!read_paused_ && !handler_waiting_.load())) return;
    if (server_.over_budget()) {
      if (!in_budget_list_.exchange(true)) server_.wait_for_budget(weak_from_this());
      if (server_.over_budget()) return;  // woken by ServerState::release
    }
    if (read_paused_ && read_room()) resume_reading();
    if (handler_waiting_.load() && push_room() && handler_waiting_.exchange(false)) {
      server_.handler.on_writable(shared_from_this());
    }
  }

  void resume_reading() {
    if (!read_paused_ || finished_) return;
    read_paused_ = false;
    read_next();
  }

  void release(std::size_t n) {
    if (n == 0) return;
    outbound_.fetch_sub(n);
    server_.release(n);
  }

  void take_inbox() {
    release(out_.take(!finished_ && !close_started_));
    if (!writing_ && out_.has_unsent()) write_next();
  }

  // Writes the next frame, or as many queued frames as fit one batch.
  void write_next() {
    writing_ = true;
    write_started_ = Clock::now();
    ws_.next_layer().hold_output(false);  // this write takes the held output along
    const ByteView bytes = out_.next_write();
    ws_.async_write(
        asio::buffer(bytes.data(), bytes.size()),
        [self = shared_from_this()](error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(error_code ec) {
    writing_ = false;
    release(out_.written());
    if (ec) {
      hard_close();  // the pending read fails next and finishes the connection
      return;
    }
    if (out_.has_unsent()) {
      write_next();
    } else if (close_started_ && !close_sent_ && !finished_) {
      send_close_frame();
    }
    check_room();
  }

  // Drops every queued frame except those being written (their buffers are in use).
  void drop_queued() { release(out_.drop_unsent()); }

  void begin_close_async(websocket::close_code code, const std::string& reason, bool flush,
                         Clock::duration deadline) {
    closed_.store(true, std::memory_order_release);
    // Posted, never run inline: frames sent before the close must be queued before it.
    asio::post(strand_, [self = shared_from_this(), code, r = truncate_reason(reason), flush,
                         deadline] { self->begin_close(code, r, flush, deadline); });
  }

  void begin_close(websocket::close_code code, const std::string& reason, bool flush,
                   Clock::duration deadline) {
    closed_.store(true, std::memory_order_release);
    if (finished_ || close_started_) return;
    close_started_ = true;
    if (!opened_) {  // still handshaking: nothing to say goodbye to
      hard_close();
      return;
    }
    close_code_ = code;
    close_reason_ = truncate_reason(reason);
    if (!flush) drop_queued();
    resume_reading();  // the peer's close frame comes by the read; memory is no concern any more
    timer_.expires_after(deadline);
    timer_.async_wait([self = shared_from_this()](error_code e) {
      if (!e) self->hard_close();
    });
    if (!writing_) send_close_frame();
  }

  void send_close_frame() {
    close_sent_ = true;
    ws_.next_layer().hold_output(false);
    ws_.async_close(websocket::close_reason(close_code_, close_reason_),
                    [self = shared_from_this()](error_code ec) {
                      if (ec) self->hard_close();
                    });
  }

  // Every way a connection ends short of the WebSocket close handshake (refused upgrades, the
  // handshake, idle and close deadlines, write errors, a stop's grace running out) comes here:
  // close_notify when the TLS handshake is done, never waiting for the peer (tls_stream.h).
  void hard_close() {
    ws_.next_layer().close_with_notify();
    resume_reading();  // a paused connection has no read pending to fail and finish it
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    closed_.store(true, std::memory_order_release);
    timer_.cancel();
    hard_close();
    drop_queued();
    if (opened_) {
      auto self = shared_from_this();
      server_.handler.on_close(self);
    }
    server_.remove(id_, key_);
  }

  ServerState& server_;
  const std::uint64_t id_;
  const std::string remote_;
  const std::string key_;  // address_key(remote_): what the per-address caps count under
  const asio::any_io_executor strand_;
  WsStream ws_;
  asio::steady_timer timer_;  // handshake deadline, then keep-alive ticks, then close deadline
  beast::flat_buffer rd_buf_;
  Clock::time_point last_activity_{};

  // The upgrade request while it is read and answered; freed once the WebSocket is open.
  static constexpr std::size_t kMaxUpgradeRequestBytes = 4096;
  struct Upgrade {
    beast::flat_buffer buffer{kMaxUpgradeRequestBytes};
    http::request_parser<http::empty_body> parser;
    std::string authorization;
  };
  std::unique_ptr<Upgrade> upgrade_;

  detail::OutboundQueue out_;
  std::vector<ByteView> split_;  // the frames of the batch being handled
  std::atomic<std::size_t> outbound_{0};
  std::atomic<bool> closed_{false};  // no more sends accepted

  bool opened_ = false;
  bool logged_in_ = false;        // promoted: the full limits, no deadline
  bool deadline_active_ = false;  // login_deadline_ applies
  bool ticking_ = false;          // a keep-alive tick is armed
  Clock::time_point login_deadline_{};
  bool pinged_ = false;          // a ping went out since the peer was last heard
  bool ping_in_flight_ = false;  // Beast allows one ping operation at a time
  bool writing_ = false;
  Clock::time_point write_started_{};         // of the write in flight (the slow-reader rule)
  bool read_paused_ = false;                  // back-pressure: no read pending until there is room
  std::atomic<bool> handler_waiting_{false};  // writable() said no: on_writable() is owed
  std::atomic<bool> in_budget_list_{false};   // in ServerState::budget_waiters
  bool close_started_ = false;
  bool close_sent_ = false;
  bool finished_ = false;
  websocket::close_code close_code_ = websocket::close_code::normal;
  std::string close_reason_;
};

void ServerState::release(std::size_t n) {
  buffered.fetch_sub(n);
  if (!budget_waiting.load() || over_budget()) return;
  std::vector<std::weak_ptr<ServerConnection>> waiters;
  {
    std::lock_guard lock(budget_mu);
    waiters.swap(budget_waiters);
    budget_waiting.store(false);
  }
  for (auto& w : waiters) {
    if (auto c = w.lock()) c->budget_room();
  }
}

}  // namespace

// The server's TLS context, handing over when the options ask for it and the handover passes
// its checks (net/handover/record_handover.h); `state` says which.
detail::SslCtxPtr initial_context(const TlsIdentity& identity, const ServerOptions& options,
                                  RecordHandoverState& state) {
  if (!options.tls_record_handover) {
    state = {false, "turned off by the configuration (tls_record_handover = false)"};
    return detail::make_server_context(identity, false);
  }
  detail::SslCtxPtr ctx = detail::make_server_context(identity, true);
  const handover::Verdict verdict = handover::decide(ctx.get(), OpenSSL_version_num());
  state = {verdict.enabled, verdict.reason};
  if (verdict.enabled) return ctx;
  return detail::make_server_context(identity, false);
}

struct WsServer::Impl {
  Impl(const TlsIdentity& identity, ServerOptions options, ConnectionHandler& handler)
      : state(std::make_unique<ServerState>(std::move(options), handler,
                                            initial_context(identity, options, handover))),
        acceptor(asio::make_strand(state->ioc)),
        retry_timer(acceptor.get_executor()) {}

  RecordHandoverState handover;  // before state: its initializer fills it

  void accept_next() {
    // The peer's address comes with the accepted socket (no getpeername afterwards).
    acceptor.async_accept(
        asio::make_strand(state->ioc), peer,
        [this](error_code ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
  }

  void on_accept(error_code ec, tcp::socket socket) {
    if (!acceptor.is_open() || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors or memory: back off instead of spinning.
      retry_timer.expires_after(kAcceptRetryDelay);
      retry_timer.async_wait([this](error_code e) {
        if (!e && acceptor.is_open()) accept_next();
      });
      return;
    }
    admit(std::move(socket), peer);
    accept_next();
  }

  void admit(tcp::socket socket, const tcp::endpoint& remote) {
    error_code ec;
    std::string address = remote.address().to_string();
    std::string key = address_key(address);
    std::shared_ptr<ServerConnection> displaced;
    if (state->admit(key, displaced) != Refusal::none) {
      // Refused at once (the client sees the connection end during its TLS handshake): a
      // refusal costs no handshake, and descriptors are what runs out first. What already
      // arrived (a ClientHello) is read first, so that the close is a FIN and not a reset.
      std::array<std::uint8_t, 2048> discard{};
      socket.non_blocking(true, ec);
      for (int i = 0; i < 4 && !ec; ++i) {
        if (socket.available(ec) == 0 || ec) break;
        (void)socket.receive(asio::buffer(discard), 0, ec);
      }
      socket.close(ec);
      return;
    }
    if (displaced) displaced->displace();
#ifndef __linux__
    socket.set_option(tcp::no_delay(true), ec);  // elsewhere it may not come from the listener
#endif
    const std::uint64_t id = state->next_id++;
    std::shared_ptr<ServerConnection> c;
    try {
      c = std::make_shared<ServerConnection>(*state, id, std::move(socket), std::move(address),
                                             key);
    } catch (const std::exception&) {
      return;  // OpenSSL could not allocate: drop this one, keep serving the others
    }
    state->add(id, key, c);
    c->start();
  }

  void close_acceptor() {
    std::promise<void> done;
    asio::dispatch(acceptor.get_executor(), [this, &done] {
      error_code ignored;
      acceptor.close(ignored);
      retry_timer.cancel();
      done.set_value();
    });
    done.get_future().wait();
  }

  std::unique_ptr<ServerState> state;
  tcp::acceptor acceptor;
  tcp::endpoint peer;  // of the connection being accepted (one accept at a time)
  asio::steady_timer retry_timer;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::uint16_t port = 0;
  bool started = false;
  bool stopped = false;
};

WsServer::WsServer(const TlsIdentity& identity, ServerOptions options, ConnectionHandler& handler)
    : impl_(std::make_unique<Impl>(identity, std::move(options), handler)) {}

WsServer::~WsServer() {
  stop(std::chrono::milliseconds(0));
}

void WsServer::start() {
  Impl& m = *impl_;
  if (m.started) throw std::logic_error("WsServer::start called twice");
  const ServerOptions& o = m.state->options;
  error_code ec;
  const auto address = asio::ip::make_address(o.address, ec);
  if (ec) throw std::runtime_error("WsServer: bad listen address " + o.address);
  const tcp::endpoint endpoint(address, o.port);
  m.acceptor.open(endpoint.protocol(), ec);
  if (!ec) m.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  // Accepted sockets inherit it (Linux): one setsockopt for the server, not one per connection.
  if (!ec) m.acceptor.set_option(tcp::no_delay(true), ec);
  if (!ec) m.acceptor.bind(endpoint, ec);
  if (!ec) m.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  // After listen(), which resets it: accepted sockets inherit delayed ACKs (Linux), so the
  // ClientHello's ACK leaves with the server's first flight.
  if (!ec) detail::delay_acks(m.acceptor.native_handle());
  if (ec) {
    error_code ignored;
    m.acceptor.close(ignored);
    throw std::runtime_error("WsServer: cannot listen on " + o.address + ":" +
                             std::to_string(o.port) + ": " + ec.message());
  }
  m.port = m.acceptor.local_endpoint().port();
  m.started = true;
  m.work.emplace(m.state->ioc.get_executor());
  asio::dispatch(m.acceptor.get_executor(), [&m] { m.accept_next(); });
  const int n = std::max(1, o.threads);
  for (int i = 0; i < n; ++i) m.threads.emplace_back([&m] { m.state->ioc.run(); });
}

void WsServer::stop(std::chrono::milliseconds grace) {
  Impl& m = *impl_;
  if (!m.started || m.stopped) return;
  m.stopped = true;
  m.close_acceptor();

  for (auto& c : m.state->snapshot()) c->shut_down(grace);
  // Each connection hard-closes itself when `grace` runs out; allow a little for that to land.
  if (!m.state->wait_drained(Clock::now() + grace + std::chrono::milliseconds(200))) {
    for (auto& c : m.state->snapshot()) c->abort();
    (void)m.state->wait_drained(Clock::now() + kForcedCloseWait);
  }

  m.work.reset();
  m.state->ioc.stop();
  for (auto& t : m.threads) t.join();
  m.threads.clear();
}

void WsServer::set_identity(const TlsIdentity& identity) {
  // Made before anything changes: an unusable identity throws and leaves the old one in place.
  std::shared_ptr<SSL_CTX> ctx = detail::make_server_context(identity, impl_->handover.in_use);
  impl_->state->replace_context(std::move(ctx));
}

std::uint16_t WsServer::port() const {
  return impl_->port;
}

const RecordHandoverState& WsServer::record_handover() const {
  return impl_->handover;
}

std::size_t WsServer::connection_count() const {
  return impl_->state->count.load();
}

std::size_t WsServer::buffered_bytes() const {
  return impl_->state->buffered.load();
}

}  // namespace sotto::net
