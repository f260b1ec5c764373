#include "net/tls_stream.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>

#include <cerrno>
#include <stdexcept>

namespace sotto::net::detail {

// OpenSSL's BIO callbacks, given access to the stream they serve.
struct BioAccess {
  static TlsStream* stream(BIO* b) { return static_cast<TlsStream*>(BIO_get_data(b)); }

  // recv/send on the socket the stream owns right now; a closed socket fails with EBADF, so a
  // descriptor number reused by another connection is never touched.
  static int read_ex(BIO* b, char* data, std::size_t size, std::size_t* done) {
    BIO_clear_retry_flags(b);
    TlsStream* s = stream(b);
    if (s == nullptr || !s->socket_.is_open()) {
      errno = EBADF;
      return 0;
    }
    if (size == 0) return 0;
    for (;;) {
      const ssize_t n = ::recv(s->socket_.native_handle(), data, size, 0);
      if (n > 0) {
        *done = static_cast<std::size_t>(n);
        return 1;
      }
      if (n == 0) {
        s->eof_ = true;
        return 0;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
      return 0;
    }
  }

  static int write_ex(BIO* b, const char* data, std::size_t size, std::size_t* done) {
    BIO_clear_retry_flags(b);
    TlsStream* s = stream(b);
    if (s == nullptr || !s->socket_.is_open()) {
      errno = EBADF;
      return 0;
    }
    for (;;) {
      // MSG_NOSIGNAL: a peer that went away must not raise SIGPIPE in the whole process.
      const ssize_t n = ::send(s->socket_.native_handle(), data, size, MSG_NOSIGNAL);
      if (n >= 0) {
        *done = static_cast<std::size_t>(n);
        return 1;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
      return 0;
    }
  }

  static long ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;
      case BIO_CTRL_EOF: {
        TlsStream* s = stream(b);
        return (s != nullptr && s->eof_) ? 1 : 0;
      }
      default:
        return 0;
    }
  }

  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }

  static int destroy(BIO* b) {
    BIO_set_data(b, nullptr);
    return 1;
  }
};

namespace {

const BIO_METHOD* socket_bio_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sotto socket");
    if (m == nullptr || BIO_meth_set_read_ex(m, BioAccess::read_ex) != 1 ||
        BIO_meth_set_write_ex(m, BioAccess::write_ex) != 1 ||
        BIO_meth_set_ctrl(m, BioAccess::ctrl) != 1 ||
        BIO_meth_set_create(m, BioAccess::create) != 1 ||
        BIO_meth_set_destroy(m, BioAccess::destroy) != 1) {
      throw std::runtime_error("TLS: cannot create the socket BIO method");
    }
    return m;
  }();
  return method;
}

// Turns the result of an SSL_* call into a step. `saved_errno` is errno right after the call.
TlsStep step_of(SSL* ssl, int ret, int saved_errno) {
  TlsStep step;
  switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_NONE:
      break;
    case SSL_ERROR_WANT_READ:
      step.kind = TlsStep::want_read;
      break;
    case SSL_ERROR_WANT_WRITE:
      step.kind = TlsStep::want_write;
      break;
    case SSL_ERROR_ZERO_RETURN:  // the peer sent close_notify
      step.ec = boost::asio::error::eof;
      break;
    case SSL_ERROR_SYSCALL: {
      const unsigned long e = ERR_get_error();
      if (e != 0) {
        step.ec = boost::system::error_code(static_cast<int>(e), boost::asio::error::get_ssl_category());
      } else if (saved_errno != 0) {
        step.ec = boost::system::error_code(saved_errno, boost::system::system_category());
      } else {
        step.ec = boost::asio::ssl::error::stream_truncated;
      }
      break;
    }
    default: {
      const unsigned long e = ERR_peek_last_error();
      if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        step.ec = boost::asio::ssl::error::stream_truncated;
      } else {
        step.ec = boost::system::error_code(static_cast<int>(e), boost::asio::error::get_ssl_category());
      }
      break;
    }
  }
  ERR_clear_error();
  return step;
}

TlsStep closed_step() {
  TlsStep step;
  step.ec = boost::asio::error::bad_descriptor;
  return step;
}

}  // namespace

TlsStream::TlsStream(socket_type socket, SSL_CTX* ctx) : socket_(std::move(socket)) {
  ssl_ = SSL_new(ctx);
  BIO* bio = ssl_ != nullptr ? BIO_new(socket_bio_method()) : nullptr;
  if (bio == nullptr) {
    SSL_free(ssl_);
    ERR_clear_error();
    throw std::runtime_error("TLS: cannot allocate a connection");
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one reference, owned by the SSL object
}

TlsStream::~TlsStream() {
  if (ssl_ != nullptr) {
    BIO_set_data(SSL_get_rbio(ssl_), nullptr);
    SSL_free(ssl_);
  }
}

void TlsStream::start(bool server, const std::string& sni, boost::system::error_code& ec) {
  ec = {};
  socket_.non_blocking(true, ec);
  if (ec) return;
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    if (!sni.empty() && SSL_set_tlsext_host_name(ssl_, sni.c_str()) != 1) {
      ERR_clear_error();
      ec = boost::asio::error::invalid_argument;
    }
  }
}

TlsStep TlsStream::try_handshake() {
  if (!socket_.is_open()) return closed_step();
  ERR_clear_error();
  errno = 0;
  const int ret = SSL_do_handshake(ssl_);
  const int saved = errno;
  if (ret == 1) return {};
  return step_of(ssl_, ret, saved);
}

TlsStep TlsStream::try_read(void* data, std::size_t size) {
  if (!socket_.is_open()) return closed_step();
  ERR_clear_error();
  errno = 0;
  std::size_t n = 0;
  const int ret = SSL_read_ex(ssl_, data, size, &n);
  const int saved = errno;
  if (ret == 1) {
    TlsStep step;
    step.bytes = n;
    return step;
  }
  return step_of(ssl_, ret, saved);
}

TlsStep TlsStream::try_write(const void* data, std::size_t size) {
  if (!socket_.is_open()) return closed_step();
  ERR_clear_error();
  errno = 0;
  std::size_t n = 0;
  const int ret = SSL_write_ex(ssl_, data, size, &n);
  const int saved = errno;
  if (ret == 1) {
    TlsStep step;
    step.bytes = n;
    return step;
  }
  return step_of(ssl_, ret, saved);
}

TlsStep TlsStream::try_shutdown() {
  if (!socket_.is_open()) return closed_step();
  if (!SSL_is_init_finished(ssl_)) return {};  // nothing to notify before a finished handshake
  ERR_clear_error();
  errno = 0;
  const int ret = SSL_shutdown(ssl_);
  const int saved = errno;
  if (ret >= 0) {
    ERR_clear_error();
    return {};
  }
  TlsStep step = step_of(ssl_, ret, saved);
  if (step.kind == TlsStep::want_read) step.kind = TlsStep::done;  // sent; no need to wait
  return step;
}

void TlsStream::close_socket() noexcept {
  boost::system::error_code ignored;
  if (socket_.is_open()) socket_.close(ignored);
}

void TlsStream::shutdown_send() noexcept {
  boost::system::error_code ignored;
  if (socket_.is_open()) socket_.shutdown(socket_type::shutdown_send, ignored);
}

}  // namespace sotto::net::detail
