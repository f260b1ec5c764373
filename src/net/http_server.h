// A tiny plain-HTTP/1.1 server for operators (docs/architecture.md section 5): the server app
// answers /healthz and Prometheus /metrics with it, on a port of their own, bound to loopback
// unless configured otherwise. GET and HEAD only (anything else gets 405), no request bodies, small
// header limits and a per-connection deadline, one I/O thread of its own.
// Thread-safety: start() and stop() from one owning thread. The handler runs on the I/O thread,
// one request at a time; it must be quick and must not throw (a throw becomes a 500).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace sotto::net {

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Called with the request's path, without the query string ("/metrics").
using HttpHandler = std::function<HttpResponse(std::string_view path)>;

struct HttpOptions {
  std::string address = "127.0.0.1";
  std::uint16_t port = 9090;         // 0 picks a free port (tests)
  std::chrono::seconds timeout{10};  // to read a request and write its response
  std::size_t max_connections = 64;
};

class HttpServer {
 public:
  HttpServer(HttpOptions options, HttpHandler handler);
  ~HttpServer();  // stops
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts the I/O thread. Throws std::runtime_error if it cannot bind.
  void start();
  // Stops accepting, drops open connections and joins the thread. Idempotent.
  void stop();
  std::uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sotto::net
