// The handover's start-up self-check (record_handover.h): real handshakes in process, through
// the same TlsStream path a server connection takes, against OpenSSL's own client.
#include <fcntl.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

#include "net/handover/record_handover.h"
#include "net/tls_stream.h"

namespace sotto::net::handover {
namespace {

using detail::TlsRecordLayer;
using detail::TlsStep;
using detail::TlsStream;
using Clock = std::chrono::steady_clock;

// Generous: the check runs once at start, possibly on a loaded machine or under sanitizers.
constexpr std::chrono::seconds kDeadline{20};

constexpr std::array<const char*, 3> kSuites = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                                "TLS_CHACHA20_POLY1305_SHA256"};

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

struct SslCtxFree {
  void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
};
struct SslFree {
  void operator()(SSL* p) const noexcept { SSL_free(p); }
};

// A descriptor closed with its owner.
struct Fd {
  int fd = -1;
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// A failed step of the check: what went wrong, for the log.
struct Failure {
  std::string what;
};

// One loopback connection: the server stream on one end of a socketpair, a non-blocking OpenSSL
// client on the other, both driven from this thread.
class Loopback {
 public:
  Loopback(SSL_CTX* server_ctx, const char* suite) : deadline_(Clock::now() + kDeadline) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      throw Failure{"socketpair failed"};
    }
    client_fd_.fd = fds[1];
    boost::asio::ip::tcp::socket socket(io_);
    boost::system::error_code ec;
    socket.assign(boost::asio::ip::tcp::v4(), fds[0], ec);
    if (ec) {
      ::close(fds[0]);
      throw Failure{"cannot wrap the socket"};
    }
    server_fd_ = fds[0];
    server_ = std::make_unique<TlsStream>(std::move(socket), server_ctx);
    server_->start(true, "", ec);
    if (ec) throw Failure{"cannot start the server stream"};

    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!client_ctx_ || SSL_CTX_set_min_proto_version(client_ctx_.get(), TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(client_ctx_.get(), TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_ciphersuites(client_ctx_.get(), suite) != 1) {
      throw Failure{"cannot make the client context: " + openssl_error()};
    }
    SSL_CTX_set_verify(client_ctx_.get(), SSL_VERIFY_NONE, nullptr);
    client_.reset(SSL_new(client_ctx_.get()));
    if (!client_ || ::fcntl(client_fd_.fd, F_SETFL, O_NONBLOCK) != 0 ||
        SSL_set_fd(client_.get(), client_fd_.fd) != 1) {
      throw Failure{"cannot make the client: " + openssl_error()};
    }
    SSL_set_connect_state(client_.get());
  }
  ~Loopback() {
    client_.reset();
    server_.reset();  // closes its end
  }
  Loopback(const Loopback&) = delete;
  Loopback& operator=(const Loopback&) = delete;

  void handshake() {
    bool client_done = false;
    bool server_done = false;
    while (!client_done || !server_done) {
      if (!client_done) {
        const int r = SSL_do_handshake(client_.get());
        if (r == 1) {
          client_done = true;
        } else if (const int e = SSL_get_error(client_.get(), r);
                   e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          throw Failure{"the client's handshake failed: " + openssl_error()};
        }
      }
      if (!server_done) {
        const TlsStep st = server_->try_handshake();
        if (st.ec) throw Failure{"the server's handshake failed: " + st.ec.message()};
        server_done = st.kind == TlsStep::done;
      }
      if (client_done && server_done) break;
      pollfd p[2] = {{client_fd_.fd, POLLIN, 0}, {server_fd_, POLLIN, 0}};
      pollfd* first = client_done ? &p[1] : &p[0];
      const nfds_t n = (client_done || server_done) ? 1 : 2;
      wait(first, n, "the handshake");
    }
    if (!server_->own_records()) throw Failure{"the server stream did not hand over"};
  }

  void server_write(std::string_view text) {
    std::size_t sent = 0;
    while (sent < text.size()) {
      const TlsStep st =
          drive([&] { return server_->try_write(text.data() + sent, text.size() - sent); });
      if (st.ec) throw Failure{"the server's write failed: " + st.ec.message()};
      sent += st.bytes;
    }
  }

  std::string server_read(std::size_t n) {
    std::string out(n, '\0');
    std::size_t got = 0;
    while (got < n) {
      const TlsStep st = drive([&] { return server_->try_read(out.data() + got, n - got); });
      if (st.ec) throw Failure{"the server could not read the client's record: " + st.ec.message()};
      got += st.bytes;
    }
    return out;
  }

  void client_write(std::string_view text) {
    std::size_t sent = 0;
    while (sent < text.size()) {
      std::size_t n = 0;
      const int r = SSL_write_ex(client_.get(), text.data() + sent, text.size() - sent, &n);
      if (r == 1) {
        sent += n;
        continue;
      }
      const int e = SSL_get_error(client_.get(), r);
      if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
        throw Failure{"the client's write failed: " + openssl_error()};
      }
      pollfd p{client_fd_.fd, static_cast<short>(e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
      wait(&p, 1, "the client's write");
    }
  }

  // Reads exactly `n` bytes as the client; `what` names the record for the failure.
  std::string client_read(std::size_t n, const char* what) {
    std::string out(n, '\0');
    std::size_t got = 0;
    while (got < n) {
      std::size_t k = 0;
      const int r = SSL_read_ex(client_.get(), out.data() + got, n - got, &k);
      if (r == 1) {
        got += k;
        continue;
      }
      const int e = SSL_get_error(client_.get(), r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        throw Failure{std::string("the OpenSSL client could not read ") + what + ": " +
                      openssl_error()};
      }
      pollfd p{client_fd_.fd, static_cast<short>(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
      wait(&p, 1, what);
    }
    return out;
  }

  void client_key_update(int type) {
    if (SSL_key_update(client_.get(), type) != 1) {
      throw Failure{"the client cannot update its key: " + openssl_error()};
    }
  }

  TlsStream& server() { return *server_; }
  SSL* client() { return client_.get(); }

 private:
  template <class Attempt>
  TlsStep drive(const Attempt& attempt) {
    for (;;) {
      const TlsStep st = attempt();
      if (st.kind == TlsStep::done) return st;
      pollfd p{server_fd_, static_cast<short>(st.kind == TlsStep::want_read ? POLLIN : POLLOUT), 0};
      wait(&p, 1, "the server");
    }
  }

  void wait(pollfd* fds, nfds_t n, std::string_view what) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
      if (left.count() <= 0) throw Failure{std::string(what) + " timed out"};
      const int r = ::poll(fds, n, static_cast<int>(left.count()));
      if (r > 0) return;
      if (r < 0 && errno != EINTR) throw Failure{std::string(what) + ": poll failed"};
    }
  }

  const Clock::time_point deadline_;
  boost::asio::io_context io_;  // outlives the server stream's socket
  Fd client_fd_;                // outlives the client's SSL, which does not close it
  std::unique_ptr<TlsStream> server_;
  std::unique_ptr<SSL_CTX, SslCtxFree> client_ctx_;
  std::unique_ptr<SSL, SslFree> client_;
  int server_fd_ = -1;  // owned by server_
};

void expect(const std::string& got, std::string_view want, const char* what) {
  if (got != want) throw Failure{std::string(what) + " arrived altered"};
}

// One suite: the first handed-over record, then records after a KeyUpdate each way.
void check_suite(SSL_CTX* server_ctx, const char* suite) {
  Loopback c(server_ctx, suite);
  c.handshake();

  // The first record the server seals itself, right behind OpenSSL's session ticket: its
  // sequence number is the one counted from OpenSSL's callbacks.
  constexpr std::string_view kFirst = "sotto handover self-check: first record";
  c.server_write(kFirst);
  expect(c.client_read(kFirst.size(), "the first handed-over record"), kFirst,
         "the first handed-over record");

  // The client updates its key and asks the server to update its own: the server reads under
  // the client's new key, and its answer goes under its own new key.
  c.client_key_update(SSL_KEY_UPDATE_REQUESTED);
  constexpr std::string_view kClientAfterUpdate = "client record after its KeyUpdate";
  c.client_write(kClientAfterUpdate);
  expect(c.server_read(kClientAfterUpdate.size()), kClientAfterUpdate,
         "the client's record after its KeyUpdate");
  constexpr std::string_view kAnswer = "server record after the requested KeyUpdate";
  c.server_write(kAnswer);
  expect(c.client_read(kAnswer.size(), "the record after the requested KeyUpdate"), kAnswer,
         "the record after the requested KeyUpdate");

  // A KeyUpdate of the server's own (its scheduled one), and one of the client's without a
  // request.
  c.server().record_layer()->set_key_update_after(1);
  constexpr std::string_view kScheduled = "server record after its own KeyUpdate";
  c.server_write(kScheduled);
  expect(c.client_read(kScheduled.size(), "the record after the server's KeyUpdate"), kScheduled,
         "the record after the server's KeyUpdate");
  c.server().record_layer()->set_key_update_after(TlsRecordLayer::kDefaultKeyUpdateAfter);
  c.client_key_update(SSL_KEY_UPDATE_NOT_REQUESTED);
  constexpr std::string_view kLast = "client record after an unrequested KeyUpdate";
  c.client_write(kLast);
  expect(c.server_read(kLast.size()), kLast, "the client's record after an unrequested KeyUpdate");
}

}  // namespace

Verdict self_check(SSL_CTX* server_ctx) {
  if (!enabled(server_ctx)) return {false, "the self-check needs a context that hands over"};
  for (const char* suite : kSuites) {
    try {
      check_suite(server_ctx, suite);
    } catch (const Failure& f) {
      ERR_clear_error();
      return {false, std::string("self-check failed in ") + suite + ": " + f.what};
    } catch (const std::exception& e) {
      ERR_clear_error();
      return {false, std::string("self-check failed in ") + suite + ": " + e.what()};
    }
  }
  ERR_clear_error();
  return {true,
          "self-check passed (TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, "
          "TLS_CHACHA20_POLY1305_SHA256; first record and KeyUpdate both ways)"};
}

}  // namespace sotto::net::handover
