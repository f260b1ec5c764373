#include "net/tls_stream.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include "crypto/secret.h"
#include "net/handover/record_handover.h"
#include "net/tls_internal.h"

namespace sotto::net::detail {

// OpenSSL's BIO callbacks, given access to the stream they serve.
struct BioAccess {
  static TlsStream* stream(BIO* b) { return static_cast<TlsStream*>(BIO_get_data(b)); }

  // Sends what the handshake has queued. 1 when it is all gone; otherwise 0, with the BIO's
  // retry-write flag set when the socket is full, or errno set on an error.
  static int flush_queued(BIO* b, TlsStream* s) {
    const int err = s->hs_out_.send_to(s->socket_.native_handle());
    if (err == 0) return 1;
    if (err == EAGAIN) BIO_set_retry_write(b);
    errno = err;
    return 0;
  }

  // recv/send on the socket the stream owns right now; a closed socket fails with EBADF, so a
  // descriptor number reused by another connection is never touched.
  //
  // During the handshake writes are queued and leave together when OpenSSL flushes or next
  // reads (one segment per flight instead of one per handshake message), and a server stream
  // that will hand over reads ahead here rather than in OpenSSL: what OpenSSL has not asked for
  // yet stays in hs_in_, where the record layer finds it.
  static int read_ex(BIO* b, char* data, std::size_t size, std::size_t* done) {
    BIO_clear_retry_flags(b);
    TlsStream* s = stream(b);
    if (s == nullptr || !s->socket_.is_open()) {
      errno = EBADF;
      return 0;
    }
    if (size == 0) return 0;
    // Whatever was queued must be on its way before waiting for the peer's answer to it.
    if (!s->hs_out_.empty() && flush_queued(b, s) != 1) return 0;
    if (!s->hs_in_.empty()) {
      const std::size_t n = std::min(size, s->hs_in_.size());
      std::memcpy(data, s->hs_in_.front(), n);
      s->hs_in_.consume(n);
      *done = n;
      return 1;
    }
    std::uint8_t ahead[4096];
    const bool read_ahead = s->handoff_ != nullptr && size < sizeof ahead;
    for (;;) {
      const ssize_t n = read_ahead ? ::recv(s->socket_.native_handle(), ahead, sizeof ahead, 0)
                                   : ::recv(s->socket_.native_handle(), data, size, 0);
      if (n > 0) {
        std::size_t got = static_cast<std::size_t>(n);
        if (read_ahead) {
          const std::size_t k = std::min(size, got);
          std::memcpy(data, ahead, k);
          s->hs_in_.assign(ahead + k, got - k);
          got = k;
        }
        *done = got;
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
    if (s->coalesce_) {
      s->hs_out_.append(reinterpret_cast<const std::uint8_t*>(data), size);
      *done = size;
      return 1;
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
    TlsStream* s = stream(b);
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        BIO_clear_retry_flags(b);
        if (s == nullptr || s->hs_out_.empty()) return 1;
        if (last_flight(s)) return 1;  // it leaves with the first write (see try_handshake)
        if (!s->socket_.is_open()) {
          errno = EBADF;
          return 0;
        }
        return flush_queued(b, s);
      case BIO_CTRL_EOF:
        return (s != nullptr && s->eof_ && s->hs_in_.empty()) ? 1 : 0;
      default:
        return 0;
    }
  }

  // The flush OpenSSL asks for after the last flight of the handshake: a client's Finished,
  // a server's session tickets (TLS 1.3 only; post-handshake messages are never held back).
  static bool last_flight(const TlsStream* s) {
    if (!s->first_handshake_ || s->ssl_ == nullptr) return false;
    const OSSL_HANDSHAKE_STATE st = SSL_get_state(s->ssl_);
    return st == TLS_ST_CW_FINISHED || st == TLS_ST_SW_SESSION_TICKET || st == TLS_ST_OK;
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
        step.ec =
            boost::system::error_code(static_cast<int>(e), boost::asio::error::get_ssl_category());
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
        step.ec =
            boost::system::error_code(static_cast<int>(e), boost::asio::error::get_ssl_category());
      }
      break;
    }
  }
  ERR_clear_error();
  return step;
}

TlsStep error_step(boost::system::error_code ec) {
  TlsStep step;
  step.ec = ec;
  return step;
}

TlsStep closed_step() {
  return error_step(boost::asio::error::bad_descriptor);
}

TlsStep bytes_step(std::size_t n) {
  TlsStep step;
  step.bytes = n;
  return step;
}

// Sends [p, p + n) on `fd` until all of it is gone (0) or the socket stops it: the errno, EAGAIN
// when the socket is full. `sent` says how far it got. `flags` are added to send's.
int send_all(int fd, const std::uint8_t* p, std::size_t n, std::size_t& sent,
             int flags = 0) noexcept {
  sent = 0;
  while (sent < n) {
    // MSG_NOSIGNAL: a peer that went away must not raise SIGPIPE in the whole process.
    const ssize_t k = ::send(fd, p + sent, n - sent, MSG_NOSIGNAL | flags);
    if (k >= 0) {
      sent += static_cast<std::size_t>(k);
      continue;
    }
    if (errno == EINTR) continue;
    return errno == EWOULDBLOCK ? EAGAIN : errno;
  }
  return 0;
}

TlsStep wait_step(TlsStep::Kind kind) {
  TlsStep step;
  step.kind = kind;
  return step;
}

// Per-thread scratch space for records on their way in and out: a connection keeps only what a
// read or write leaves over.
constexpr std::size_t kReadScratch = 4 * TlsRecordLayer::kMaxRecord;
constexpr std::size_t kWriteScratch =
    TlsRecordLayer::kMaxPlaintext + 2 * TlsRecordLayer::kMaxSealExpansion;

std::uint8_t* read_scratch() {
  thread_local std::unique_ptr<std::uint8_t[]> buffer(new std::uint8_t[kReadScratch]);
  return buffer.get();
}

std::uint8_t* write_scratch() {
  thread_local std::unique_ptr<std::uint8_t[]> buffer(new std::uint8_t[kWriteScratch]);
  return buffer.get();
}

}  // namespace

void TlsStream::ByteQueue::assign(const std::uint8_t* p, std::size_t n) {
  if (n == 0) {
    clear();
    return;
  }
  std::unique_ptr<std::uint8_t[]> fresh(new std::uint8_t[n]);
  std::memcpy(fresh.get(), p, n);
  data_ = std::move(fresh);
  begin_ = 0;
  end_ = n;
}

void TlsStream::ByteQueue::append(const std::uint8_t* p, std::size_t n) {
  if (n == 0) return;
  const std::size_t have = size();
  std::unique_ptr<std::uint8_t[]> fresh(new std::uint8_t[have + n]);
  if (have != 0) std::memcpy(fresh.get(), front(), have);
  std::memcpy(fresh.get() + have, p, n);
  data_ = std::move(fresh);
  begin_ = 0;
  end_ = have + n;
}

void TlsStream::ByteQueue::consume(std::size_t n) noexcept {
  begin_ += n;
  if (begin_ >= end_) clear();
}

int TlsStream::ByteQueue::send_to(int fd, int flags) noexcept {
  if (empty()) return 0;
  std::size_t sent = 0;
  const int err = send_all(fd, front(), size(), sent, flags);
  consume(sent);
  return err;
}

void TlsStream::ByteQueue::clear() noexcept {
  data_.reset();
  begin_ = 0;
  end_ = 0;
}

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

namespace {

constexpr char kChannelBindingLabel[] = "EXPORTER-Channel-Binding";  // RFC 9266 section 2

bool export_channel_binding(SSL* ssl, std::array<std::uint8_t, 32>& out) {
  if (SSL_is_init_finished(ssl) != 1 ||
      SSL_export_keying_material(ssl, out.data(), out.size(), kChannelBindingLabel,
                                 sizeof kChannelBindingLabel - 1, nullptr, 0, 0) != 1) {
    ERR_clear_error();
    OPENSSL_cleanse(out.data(), out.size());
    return false;
  }
  return true;
}

}  // namespace

bool TlsStream::channel_binding(std::array<std::uint8_t, 32>& out) const {
  if (binding_forgotten_) return false;
  if (ssl_ != nullptr) return export_channel_binding(ssl_, out);
  if (!binding_) return false;
  out = *binding_;
  return true;
}

void TlsStream::forget_channel_binding() noexcept {
  binding_forgotten_ = true;
  if (!binding_) return;
  OPENSSL_cleanse(binding_->data(), binding_->size());
  binding_.reset();
}

TlsStream::~TlsStream() {
  forget_channel_binding();  // wipes the copy
  if (ssl_ != nullptr) {
    BIO_set_data(SSL_get_rbio(ssl_), nullptr);
    SSL_free(ssl_);
  }
}

void TlsStream::start(bool server, const std::string& sni, boost::system::error_code& ec) {
  ec = {};
  socket_.non_blocking(true, ec);
  if (ec) return;
  coalesce_ = true;
  if (server) {
    SSL_set_accept_state(ssl_);
    if (handover::enabled(SSL_get_SSL_CTX(ssl_))) {
      // Hand over after the handshake (net/handover/record_handover.h). OpenSSL must then hold
      // no record it has read and not processed, so it reads record by record until then (no
      // read-ahead; the BIO reads ahead instead, into hs_in_).
      handoff_ = std::make_unique<handover::Capture>();
      handoff_->attach(ssl_);
    }
  } else {
    SSL_set_connect_state(ssl_);
    if (!sni.empty() && SSL_set_tlsext_host_name(ssl_, sni.c_str()) != 1) {
      ERR_clear_error();
      ec = boost::asio::error::invalid_argument;
    }
  }
}

TlsStep TlsStream::try_handshake() {
  if (records_) return {};  // handed over: the handshake is long done
  if (!socket_.is_open()) return closed_step();
  ERR_clear_error();
  errno = 0;
  const int ret = SSL_do_handshake(ssl_);
  const int saved = errno;
  if (ret == 1) {
    first_handshake_ = false;
    if (handoff_) {
      hand_off();
      if (records_) {
        // The session tickets wait for the first write (see hold_output()).
        out_ = std::move(hs_out_);
        hs_out_.clear();
        coalesce_ = false;
        return {};
      }
    } else if (SSL_is_server(ssl_) == 0) {
      // The Finished leaves with the client's first bytes (the upgrade request follows at once).
      finished_deferred_ = true;
      return {};
    }
    // The last flight (and a server's tickets) may still be queued.
    const int err = hs_out_.send_to(socket_.native_handle());
    // Called again once writable: SSL_do_handshake returns 1 at once then.
    if (err == EAGAIN) return wait_step(TlsStep::want_write);
    if (err != 0) {
      return error_step(boost::system::error_code(err, boost::system::system_category()));
    }
    coalesce_ = false;
    return {};
  }
  return step_of(ssl_, ret, saved);
}

// Sends the client's deferred Finished and what OpenSSL queued behind it; coalescing ends once
// all of it is gone (until then OpenSSL's writes keep queueing behind it, in order).
TlsStep TlsStream::flush_deferred_finished() {
  const int err = hs_out_.send_to(socket_.native_handle());
  if (err == EAGAIN) return wait_step(TlsStep::want_write);
  if (err != 0) return error_step(boost::system::error_code(err, boost::system::system_category()));
  coalesce_ = false;
  finished_deferred_ = false;
  return {};
}

TlsStep TlsStream::try_flush() {
  if (!socket_.is_open()) return closed_step();
  if (finished_deferred_) return flush_deferred_finished();
  if (write_error_) return error_step(write_error_);
  if (!records_ || !has_unowned_output()) return {};
  return flush_out();
}

void TlsStream::hand_off() {
  const std::unique_ptr<handover::Capture> capture = std::move(handoff_);
  std::optional<TlsRecordLayer> layer = capture->finish(ssl_);
  if (!layer) {
    // Not expected (OpenSSL gave no secrets, or a suite this layer does not know): OpenSSL
    // keeps the connection, as a client's (the BIO still serves what it read ahead first).
    SSL_set_read_ahead(ssl_, 1);
    return;
  }
  records_.emplace(std::move(*layer));
  auto binding = std::make_unique<std::array<std::uint8_t, 32>>();
  if (export_channel_binding(ssl_, *binding)) binding_ = std::move(binding);
  // What the peer sent after its Finished and the BIO read ahead is the record layer's now.
  in_.assign(hs_in_.front(), hs_in_.size());
  hs_in_.clear();
  BIO_set_data(SSL_get_rbio(ssl_), nullptr);
  SSL_free(ssl_);
  ssl_ = nullptr;
}

TlsStep TlsStream::try_read(void* data, std::size_t size) {
  if (!socket_.is_open()) return closed_step();
  if (records_) return read_records(static_cast<std::uint8_t*>(data), size);
  if (finished_deferred_) {
    const TlsStep st = flush_deferred_finished();
    if (st.kind != TlsStep::done || st.ec) return st;
  }
  ERR_clear_error();
  errno = 0;
  std::size_t n = 0;
  const int ret = SSL_read_ex(ssl_, data, size, &n);
  const int saved = errno;
  if (ret == 1) return bytes_step(n);
  return step_of(ssl_, ret, saved);
}

TlsStep TlsStream::try_write(const void* data, std::size_t size) {
  if (!socket_.is_open()) return closed_step();
  if (records_) return write_records(static_cast<const std::uint8_t*>(data), size);
  if (deferred_owed_ != 0) {  // a retry: the bytes were taken, the flush behind them was due
    const TlsStep st = flush_deferred_finished();
    if (st.kind != TlsStep::done || st.ec) return st;
    return bytes_step(std::exchange(deferred_owed_, 0));
  }
  ERR_clear_error();
  errno = 0;
  std::size_t n = 0;
  const int ret = SSL_write_ex(ssl_, data, size, &n);
  const int saved = errno;
  if (ret != 1) return step_of(ssl_, ret, saved);
  if (finished_deferred_) {  // the record is queued behind the Finished: both leave now
    const TlsStep st = flush_deferred_finished();
    if (st.ec) return st;
    if (st.kind != TlsStep::done) {
      deferred_owed_ = n;
      return st;
    }
  }
  return bytes_step(n);
}

TlsStep TlsStream::try_shutdown(bool fin_follows) {
  if (!socket_.is_open()) return closed_step();
  if (records_) return shutdown_records(fin_follows);
  if (!SSL_is_init_finished(ssl_)) return {};  // nothing to notify before a finished handshake
  if (finished_deferred_) {
    const TlsStep st = flush_deferred_finished();
    if (st.kind != TlsStep::done || st.ec) return st;
  }
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

// Delivers opened application data first, then what earlier reads left, then reads the socket.
TlsStep TlsStream::read_records(std::uint8_t* out, std::size_t size) {
  if (size == 0) return {};
  if (!plain_.empty()) {
    const std::size_t n = std::min(size, plain_.size());
    std::memcpy(out, plain_.front(), n);
    plain_.consume(n);
    return bytes_step(n);
  }
  if (read_error_) return error_step(read_error_);
  if (peer_closed_) return peer_closed_step();
  std::size_t delivered = 0;
  for (;;) {
    std::size_t used = 0;
    Drain drain = Drain::more;
    if (!in_.empty()) {
      drain = open_records(in_.front(), in_.size(), used, out, size, delivered);
      in_.consume(used);
    }
    if (delivered != 0) return bytes_step(delivered);  // an error or close waits for the next call
    if (drain == Drain::closed) return peer_closed_step();
    if (drain == Drain::failed) return error_step(read_error_);
    // in_ holds at most the beginning of one record: read more after it.
    if (eof_) {
      read_error_ = boost::asio::ssl::error::stream_truncated;  // closed without close_notify
      // A half-closed peer may still read: what nobody owns leaves, as after close_notify.
      (void)flush_unowned();
      return error_step(read_error_);
    }
    std::uint8_t* scratch = read_scratch();
    std::size_t have = in_.size();
    if (have != 0) std::memcpy(scratch, in_.front(), have);
    ssize_t got = 0;
    for (;;) {
      got = ::recv(socket_.native_handle(), scratch + have, kReadScratch - have, 0);
      if (got >= 0 || errno != EINTR) break;
    }
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // Output nobody owns must not wait for an answer it may be the question of.
        const TlsStep st = flush_unowned();
        if (st.kind != TlsStep::done || st.ec) return st;
        return wait_step(TlsStep::want_read);
      }
      read_error_ = boost::system::error_code(errno, boost::system::system_category());
      return error_step(read_error_);
    }
    if (got == 0) {
      eof_ = true;
      continue;
    }
    in_.clear();
    have += static_cast<std::size_t>(got);
    drain = open_records(scratch, have, used, out, size, delivered);
    in_.assign(scratch + used, have - used);
    if (delivered != 0) return bytes_step(delivered);
    if (drain == Drain::closed) return peer_closed_step();
    if (drain == Drain::failed) return error_step(read_error_);
  }
}

// The peer's close_notify ended its side. What no write owns still leaves (best effort): a
// client that says goodbye right after its Finished still gets its session ticket.
TlsStep TlsStream::peer_closed_step() {
  (void)flush_unowned();
  return error_step(boost::asio::error::eof);
}

// Sends what no write owns, unless output is held (or the stream cannot write any more).
TlsStep TlsStream::flush_unowned() {
  if (hold_ || write_error_ || !has_unowned_output()) return {};
  return flush_out();
}

// Opens the whole records at the start of [p, p + n) in place, copying application data to
// `out` until it is full (the rest of a record that does not fit waits in plain_).
TlsStream::Drain TlsStream::open_records(std::uint8_t* p, std::size_t n, std::size_t& used,
                                         std::uint8_t* out, std::size_t size,
                                         std::size_t& delivered) {
  used = 0;
  while (delivered < size) {
    const TlsRecordLayer::Opened r = records_->open(p + used, n - used);
    used += r.consumed;
    switch (r.kind) {
      case TlsRecordLayer::Opened::incomplete:
        return Drain::more;
      case TlsRecordLayer::Opened::control:
        if (++empty_run_ > kMaxEmptyRecords) {
          fail_records(TlsRecordError::unexpected_message, TlsRecordLayer::kUnexpectedMessage);
          return Drain::failed;
        }
        break;
      case TlsRecordLayer::Opened::data: {
        if (r.size == 0) {
          if (++empty_run_ > kMaxEmptyRecords) {
            fail_records(TlsRecordError::unexpected_message, TlsRecordLayer::kUnexpectedMessage);
            return Drain::failed;
          }
          break;
        }
        empty_run_ = 0;
        const std::size_t k = std::min(r.size, size - delivered);
        if (k != 0) std::memcpy(out + delivered, r.bytes, k);
        delivered += k;
        if (k < r.size) {
          plain_.assign(r.bytes + k, r.size - k);
          return Drain::full;
        }
        break;
      }
      case TlsRecordLayer::Opened::closed:
        peer_closed_ = true;
        return Drain::closed;
      case TlsRecordLayer::Opened::failed:
        fail_records(r.error, r.alert);
        return Drain::failed;
    }
  }
  return Drain::full;
}

// The record stream is broken: reads fail from now on, and so do writes after the alert (RFC 8446
// section 6.2: nothing follows a fatal alert). The alert goes after anything half sent, best
// effort and without waiting: the connection is about to close anyway. `alert` < 0: the peer's
// own alert ended it, so none is sent.
void TlsStream::fail_records(boost::system::error_code ec, int alert) {
  read_error_ = ec;
  if (alert >= 0 && !close_sent_ && !write_error_) {
    close_sent_ = true;
    std::uint8_t* w = write_scratch();
    const std::size_t len = records_->seal_alert(static_cast<std::uint8_t>(alert), w);
    if (len != 0) {
      out_.append(w, len);
      (void)flush_out();
    }
  }
  if (!write_error_) write_error_ = ec;
  out_.clear();
}

TlsStep TlsStream::flush_out(int flags) {
  const int err = out_.send_to(socket_.native_handle(), flags);
  if (err == 0) return {};
  if (err == EAGAIN) return wait_step(TlsStep::want_write);
  write_error_ = boost::system::error_code(err, boost::system::system_category());
  out_.clear();
  return error_step(write_error_);
}

// Seals one record of up to kMaxPlaintext bytes and sends it, after any bytes held before it
// (while output is held it only queues it); what the socket does not take waits in out_, and
// the write completes (reporting the bytes sealed) once it is gone. A retry after want_write
// passes the same data (OpenSSL's rule, which DriveOp follows).
TlsStep TlsStream::write_records(const std::uint8_t* data, std::size_t size) {
  if (write_error_) return error_step(write_error_);
  if (out_plain_ != 0) {  // a retry: this write's record is (partly) still queued
    const TlsStep st = flush_out();
    if (st.kind != TlsStep::done || st.ec) return st;
    const std::size_t n = out_plain_;
    out_plain_ = 0;
    if (n != 0) return bytes_step(n);
  }
  if (close_sent_) return error_step(boost::asio::error::shut_down);
  const std::size_t n = std::min(size, TlsRecordLayer::kMaxPlaintext);
  std::uint8_t* w = write_scratch();
  const std::size_t len = records_->seal_data(data, n, w);
  if (len == 0) {
    write_error_ = make_error_code(TlsRecordError::internal_error);
    return error_step(write_error_);
  }
  // Holding is for a connection's first small answers: a large write ends it.
  if (hold_ && out_.size() + len > kMaxHeldBytes) hold_ = false;
  if (hold_ || !out_.empty()) {  // held, or behind held bytes: they leave together
    out_.append(w, len);
    if (hold_) return bytes_step(n);
    const TlsStep st = flush_out();
    if (st.ec) return st;
    if (st.kind != TlsStep::done) {
      out_plain_ = n;
      return st;
    }
    return bytes_step(n);
  }
  std::size_t sent = 0;
  const int err = send_all(socket_.native_handle(), w, len, sent);
  if (err == 0) return bytes_step(n);
  if (err != EAGAIN) {
    write_error_ = boost::system::error_code(err, boost::system::system_category());
    return error_step(write_error_);
  }
  out_.assign(w + sent, len - sent);
  out_plain_ = n;
  return wait_step(TlsStep::want_write);
}

// close_notify once, after anything still unsent; done when it is on the wire. When the FIN
// follows, the bytes go with MSG_MORE: the kernel keeps the last segment back until the FIN,
// which then rides in it (one segment less for every connection that ends).
TlsStep TlsStream::shutdown_records(bool fin_follows) {
  if (write_error_) return error_step(write_error_);
  if (!close_sent_) {
    close_sent_ = true;
    std::uint8_t* w = write_scratch();
    const std::size_t len = records_->seal_alert(TlsRecordLayer::kCloseNotify, w);
    if (len == 0) {
      write_error_ = make_error_code(TlsRecordError::internal_error);
      return error_step(write_error_);
    }
    out_.append(w, len);
  }
#ifdef MSG_MORE
  if (fin_follows) return flush_out(MSG_MORE);
#endif
  return flush_out();
}

void TlsStream::close_socket() noexcept {
  boost::system::error_code ignored;
  if (socket_.is_open()) socket_.close(ignored);
}

void TlsStream::close_with_notify() noexcept {
  if (!socket_.is_open()) return;
  const int fd = socket_.native_handle();
  if (records_) {
    // Nothing follows a fatal alert, sent or received (section 6.2).
    if (!write_error_ && read_error_ != make_error_code(TlsRecordError::peer_alert)) {
      if (!close_sent_) {
        close_sent_ = true;
        std::uint8_t* w = write_scratch();
        const std::size_t len = records_->seal_alert(TlsRecordLayer::kCloseNotify, w);
        if (len != 0) out_.append(w, len);
      }
      (void)out_.send_to(fd);  // one attempt: the socket is non-blocking
    }
    out_.clear();
    out_plain_ = 0;
  } else if (ssl_ != nullptr && SSL_is_init_finished(ssl_) == 1 &&
             (SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) == 0) {
    if (finished_deferred_) (void)hs_out_.send_to(fd);  // a client's Finished goes first
    if (hs_out_.empty()) {
      coalesce_ = false;
      ERR_clear_error();
      (void)SSL_shutdown(ssl_);  // writes through the BIO, which never blocks
      ERR_clear_error();
    }
  }
  shutdown_send();
  std::uint8_t sink[4096];
  for (int i = 0; i < 16; ++i) {  // at most 64 KB: what has arrived, not what may come
    const ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n <= 0 && !(n < 0 && errno == EINTR)) break;
  }
  close_socket();
}

void TlsStream::shutdown_send() noexcept {
  boost::system::error_code ignored;
  if (socket_.is_open()) socket_.shutdown(socket_type::shutdown_send, ignored);
}

}  // namespace sotto::net::detail
