#include "tls_ceiling.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace sotto::load {
namespace {

struct CtxFree {
  void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const noexcept { SSL_free(s); }
};
struct SessionFree {
  void operator()(SSL_SESSION* s) const noexcept { SSL_SESSION_free(s); }
};

// One connection: TCP, the TLS 1.3 handshake (resuming `session` when given), close_notify, then
// reading until the server closes (its session ticket is read on the way, as a client's is).
// Returns the session the server sent, or null.
SSL_SESSION* one_handshake(SSL_CTX* ctx, const sockaddr_in& to, SSL_SESSION* session, bool& ok,
                           bool& resumed) {
  ok = false;
  resumed = false;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  SSL_SESSION* received = nullptr;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
    std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx));
    if (ssl && SSL_set_fd(ssl.get(), fd) == 1 &&
        (session == nullptr || SSL_set_session(ssl.get(), session) == 1) &&
        SSL_connect(ssl.get()) == 1) {
      resumed = SSL_session_reused(ssl.get()) == 1;
      (void)SSL_shutdown(ssl.get());
      char sink[256];
      while (SSL_read(ssl.get(), sink, sizeof sink) > 0) {
      }
      ok = true;
      received = SSL_get1_session(ssl.get());
    }
  }
  ERR_clear_error();
  ::close(fd);
  return received;
}

}  // namespace

TlsCeiling measure_tls_ceiling(const std::string& host, std::uint16_t port, std::size_t concurrency,
                               double seconds, bool resume) {
  TlsCeiling out;
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &to.sin_addr) != 1) return out;
  // As the client library's context (src/net/tls.cpp): TLS 1.3 only, the certificate pinned by
  // fingerprint rather than verified against a CA (so no chain building here either).
  std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return out;
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);

  std::atomic<bool> running{true};
  std::atomic<std::uint64_t> completed{0}, failed{0}, resumed_count{0};
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < concurrency; ++i) {
    threads.emplace_back([&] {
      std::unique_ptr<SSL_SESSION, SessionFree> session;
      while (running.load(std::memory_order_relaxed)) {
        bool ok = false;
        bool resumed = false;
        SSL_SESSION* next =
            one_handshake(ctx.get(), to, resume ? session.get() : nullptr, ok, resumed);
        if (resume && next != nullptr) {
          session.reset(next);
        } else if (next != nullptr) {
          SSL_SESSION_free(next);
        }
        if (!ok) {
          failed.fetch_add(1);
          continue;
        }
        completed.fetch_add(1);
        if (resumed) resumed_count.fetch_add(1);
      }
    });
  }
  const double warm = std::min(1.0, seconds / 4);
  std::this_thread::sleep_for(std::chrono::duration<double>(warm));
  const auto c0 = completed.load();
  const auto r0 = resumed_count.load();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const auto c1 = completed.load();
  const auto r1 = resumed_count.load();
  const auto t1 = std::chrono::steady_clock::now();
  running.store(false);
  for (auto& t : threads) t.join();
  const double s = std::chrono::duration<double>(t1 - t0).count();
  out.per_s = static_cast<double>(c1 - c0) / s;
  out.measured = c1 - c0;
  out.resumed = r1 - r0;
  out.failed = failed.load();
  return out;
}

}  // namespace sotto::load
