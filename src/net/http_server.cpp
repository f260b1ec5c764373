#include "net/http_server.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <atomic>
#include <optional>
#include <stdexcept>
#include <thread>

namespace sotto::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr std::uint32_t kMaxHeaderBytes = 8 * 1024;
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};

struct Shared {
  HttpOptions options;
  HttpHandler handler;
  std::atomic<std::size_t> connections{0};
};

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Shared& shared, tcp::socket socket) : shared_(shared), stream_(std::move(socket)) {
    ++shared_.connections;
  }
  ~HttpSession() { --shared_.connections; }

  void start() { read_next(); }

 private:
  void read_next() {
    parser_.emplace();
    parser_->header_limit(kMaxHeaderBytes);
    parser_->body_limit(0);
    stream_.expires_after(shared_.options.timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void on_read(error_code ec) {
    if (ec) {  // end of stream, timeout, or a malformed / oversized request: just hang up
      error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      return;
    }
    const auto& req = parser_->get();
    response_ = {};
    response_.version(req.version());
    response_.keep_alive(req.keep_alive());
    response_.set(http::field::server, "sotto");
    response_.set(http::field::cache_control, "no-store");
    const bool head = req.method() == http::verb::head;
    if (req.method() != http::verb::get && !head) {
      response_.result(http::status::method_not_allowed);
      response_.set(http::field::allow, "GET, HEAD");
      response_.set(http::field::content_type, "text/plain; charset=utf-8");
      response_.body() = "method not allowed\n";
    } else {
      std::string_view target = req.target();
      target = target.substr(0, target.find('?'));
      HttpResponse r;
      try {
        r = shared_.handler(target);
      } catch (const std::exception&) {
        r = HttpResponse{500, "text/plain; charset=utf-8", "internal error\n"};
      }
      response_.result(r.status);
      response_.set(http::field::content_type, r.content_type);
      response_.body() = std::move(r.body);
    }
    response_.prepare_payload();
    if (head) response_.body().clear();  // Content-Length still announces the GET body's size
    http::async_write(stream_, response_,
                      [self = shared_from_this()](error_code e, std::size_t) { self->on_write(e); });
  }

  void on_write(error_code ec) {
    if (ec || !response_.keep_alive()) {
      error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      return;
    }
    read_next();
  }

  Shared& shared_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> parser_;
  http::response<http::string_body> response_;
};

}  // namespace

struct HttpServer::Impl {
  Impl(HttpOptions options, HttpHandler handler)
      : shared{std::move(options), std::move(handler), {}}, acceptor(ioc), retry_timer(ioc) {}

  void accept_next() {
    acceptor.async_accept([this](error_code ec, tcp::socket socket) {
      if (!acceptor.is_open() || ec == asio::error::operation_aborted) return;
      if (ec) {
        retry_timer.expires_after(kAcceptRetryDelay);
        retry_timer.async_wait([this](error_code e) {
          if (!e) accept_next();
        });
        return;
      }
      if (shared.connections.load() < shared.options.max_connections) {
        std::make_shared<HttpSession>(shared, std::move(socket))->start();
      }
      accept_next();
    });
  }

  Shared shared;
  asio::io_context ioc;
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  std::uint16_t port = 0;
  bool started = false;
  bool stopped = false;
};

HttpServer::HttpServer(HttpOptions options, HttpHandler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  Impl& m = *impl_;
  if (m.started) throw std::logic_error("HttpServer::start called twice");
  const HttpOptions& o = m.shared.options;
  error_code ec;
  const auto address = asio::ip::make_address(o.address, ec);
  if (ec) throw std::runtime_error("HttpServer: bad listen address " + o.address);
  const tcp::endpoint endpoint(address, o.port);
  m.acceptor.open(endpoint.protocol(), ec);
  if (!ec) m.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(endpoint, ec);
  if (!ec) m.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    m.acceptor.close(ignored);
    throw std::runtime_error("HttpServer: cannot listen on " + o.address + ":" +
                             std::to_string(o.port) + ": " + ec.message());
  }
  m.port = m.acceptor.local_endpoint().port();
  m.started = true;
  m.work.emplace(m.ioc.get_executor());
  m.accept_next();
  m.thread = std::thread([&m] { m.ioc.run(); });
}

void HttpServer::stop() {
  Impl& m = *impl_;
  if (!m.started || m.stopped) return;
  m.stopped = true;
  m.work.reset();
  m.ioc.stop();  // open connections are dropped with the io_context
  m.thread.join();
  error_code ignored;
  m.acceptor.close(ignored);  // the I/O thread is gone: no race with the accept handler
}

std::uint16_t HttpServer::port() const { return impl_->port; }

}  // namespace sotto::net
