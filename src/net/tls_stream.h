// TlsStream: TLS 1.3 over a non-blocking TCP socket, driven by OpenSSL directly, shaped as an
// Asio AsyncStream so Beast's websocket::stream can sit on top of it (internal to src/net).
//
// Why not beast::ssl_stream<tcp_stream>: Asio's ssl::stream keeps two 17 KB buffers per
// connection (zero-filled at construction) plus a 2 x 17 KB BIO pair, and Beast's flat_stream
// keeps a coalescing buffer on top; that is 40-80 KB per connection whether it is busy or idle.
// Here OpenSSL reads and writes the socket itself through a small BIO, and with
// SSL_MODE_RELEASE_BUFFERS an idle connection holds no record buffers at all.
//
// A server stream goes further: once the handshake is over it takes the application traffic
// secrets (OpenSSL's key log callback), frees the SSL object (about 13 KB) and protects records
// with TlsRecordLayer. A client stream keeps OpenSSL, which reads the server's session tickets.
//
// Threading: like any Asio stream, not thread-safe. Every call, and every completion, happens on
// the socket's executor (a strand in this project), which also serializes all SSL_* calls on the
// connection. At most one read, one write and one handshake or teardown may be outstanding.
// Once the socket is closed no SSL call touches its (possibly reused) descriptor again.
#pragma once

#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/role.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "net/tls_record.h"

namespace sotto::net::handover {
class Capture;
}

namespace sotto::net::detail {

// The outcome of one non-blocking attempt at a TLS operation.
struct TlsStep {
  enum Kind { done, want_read, want_write };
  Kind kind = done;
  boost::system::error_code ec;
  std::size_t bytes = 0;
};

class TlsStream {
 public:
  using socket_type = boost::asio::ip::tcp::socket;
  using executor_type = socket_type::executor_type;
  using next_layer_type = socket_type;
  using lowest_layer_type = socket_type;

  // The largest plaintext of one TLS record; small multi-buffer writes are coalesced up to it.
  static constexpr std::size_t kMaxRecordPlaintext = 16384;

  // Throws std::runtime_error if OpenSSL cannot allocate the connection.
  TlsStream(socket_type socket, SSL_CTX* ctx);
  ~TlsStream();
  // Not movable: OpenSSL's BIO points at this object.
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  socket_type& next_layer() noexcept { return socket_; }
  const socket_type& next_layer() const noexcept { return socket_; }
  // Null on a server stream once the handshake is over (records are protected here then).
  SSL* native_handle() noexcept { return ssl_; }
  // True once this stream protects records itself (a server stream after its handshake).
  bool own_records() const noexcept { return records_.has_value(); }
  // For tests: the record layer, or null.
  TlsRecordLayer* record_layer() noexcept { return records_ ? &*records_ : nullptr; }

  // The connection's channel binding (RFC 9266 "tls-exporter": 32 bytes exported with the label
  // "EXPORTER-Channel-Binding" and no context), once the handshake is done: a value both ends
  // share and nobody else knows, fresh for every connection, resumed or not. A device signs it to
  // log in without asking the server for a challenge first. False when there is none (handshake
  // not done, or forgotten). A server stream exports it before freeing OpenSSL's object.
  bool channel_binding(std::array<std::uint8_t, 32>& out) const;
  // Wipes and frees the copy a server stream keeps (a login uses it once).
  void forget_channel_binding() noexcept;

  // REQUIRES: the socket is connected. Makes it non-blocking and selects the side; `sni` is the
  // server name a client sends (empty: none).
  void start(bool server, const std::string& sni, boost::system::error_code& ec);

  // One attempt each, never blocking; see TlsStep.
  TlsStep try_handshake();
  TlsStep try_read(void* data, std::size_t size);
  TlsStep try_write(const void* data, std::size_t size);
  // Sends close_notify once; done when it is on the wire. `fin_follows`: the caller calls
  // shutdown_send() right after a done step (not close_socket, which may reset the connection
  // and drop what the kernel still holds), so the last bytes may wait in the kernel for the FIN.
  TlsStep try_shutdown(bool fin_follows = false);
  // Sends sealed bytes that no write owns (held or deferred output, below); done when gone.
  TlsStep try_flush();

  // A server stream's first answers leave together. Its session tickets, written by OpenSSL at
  // the end of the handshake, wait in the stream for its first write; and while output is held,
  // each write seals its record and completes without sending it. The next write, a read that
  // has to wait, a flush or the teardown sends everything in one go, in order; so does a write
  // that would hold more than kMaxHeldBytes, which ends the hold. (A client
  // stream likewise keeps its Finished back for its first write: the upgrade request.)
  void hold_output(bool on) noexcept { hold_ = on; }
  bool holding_output() const noexcept { return hold_; }
  // True when sealed bytes wait that no write operation owns.
  bool has_unowned_output() const noexcept { return !out_.empty() && out_plain_ == 0; }
  // Closes the socket (idempotent); pending waits complete with operation_aborted.
  void close_socket() noexcept;
  // Ends the connection now, without waiting for anything, but not silently (RFC 8446 section
  // 6.1): once the handshake is over and the stream can still write, close_notify goes after any
  // output already queued, in as much as the socket takes at once. What it does not take is
  // dropped, so a peer that does not read cannot hold the server. Then the FIN, then what the
  // peer sent already is discarded (a socket closed with unread input sends a reset, which may
  // destroy the close_notify on its way), then the socket is closed. Idempotent.
  void close_with_notify() noexcept;
  void shutdown_send() noexcept;

  template <class Token>
  auto async_handshake(Token&& token);
  template <class MutableBufferSequence, class Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token);
  template <class ConstBufferSequence, class Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token);
  // Sends close_notify and half-closes. With `wait_for_peer` (the WebSocket client's side, RFC 6455
  // section 7.1.1: the server closes TCP first) it then discards what the peer still sends until
  // the peer closes; otherwise it only discards what has already arrived. Then it closes the
  // socket. Completes with success: tearing down is best effort.
  template <class Token>
  auto async_teardown(bool wait_for_peer, Token&& token);
  // Completes once the output no write owns is on the wire (at once when there is none).
  template <class Token>
  auto async_flush(Token&& token);

 private:
  friend struct BioAccess;

  // Bytes waiting in one direction; the heap block is freed as soon as they are gone, so an idle
  // connection holds none.
  class ByteQueue {
   public:
    bool empty() const noexcept { return begin_ == end_; }
    std::size_t size() const noexcept { return end_ - begin_; }
    std::uint8_t* front() noexcept { return data_.get() + begin_; }
    void assign(const std::uint8_t* p, std::size_t n);
    void append(const std::uint8_t* p, std::size_t n);
    void consume(std::size_t n) noexcept;
    void clear() noexcept;
    // Sends what it holds on `fd` until it is empty (0) or the socket stops it (the errno;
    // EAGAIN when the socket is full).
    int send_to(int fd, int flags = 0) noexcept;

   private:
    std::unique_ptr<std::uint8_t[]> data_;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
  };

  enum class Drain { more, full, closed, failed };

  void hand_off();
  TlsStep read_records(std::uint8_t* out, std::size_t size);
  Drain open_records(std::uint8_t* p, std::size_t n, std::size_t& used, std::uint8_t* out,
                     std::size_t size, std::size_t& delivered);
  TlsStep write_records(const std::uint8_t* data, std::size_t size);
  TlsStep shutdown_records(bool fin_follows);
  TlsStep flush_out(int flags = 0);
  TlsStep flush_deferred_finished();
  TlsStep peer_closed_step();
  TlsStep flush_unowned();
  void fail_records(boost::system::error_code ec, int alert);

  socket_type socket_;
  SSL* ssl_ = nullptr;
  bool eof_ = false;  // the peer closed its side of the TCP connection

  // What the server's handshake leaves for the record layer (net/handover), during it.
  std::unique_ptr<handover::Capture> handoff_;
  bool coalesce_ = false;  // during the handshake: OpenSSL's writes wait in hs_out_ for a flush
  // A client stream after its handshake: the Finished waits in hs_out_ (coalescing still on)
  // until the first write, read or shutdown sends it.
  bool finished_deferred_ = false;
  std::size_t deferred_owed_ = 0;  // bytes a write took whose flush of hs_out_ is still due
  bool hold_ = false;              // see hold_output()
  static constexpr std::size_t kMaxHeldBytes = 32 * 1024;
  bool first_handshake_ = true;  // until the handshake is done (its last flight waits)
  ByteQueue hs_out_;             // handshake bytes queued for one send
  ByteQueue hs_in_;              // bytes read ahead during the handshake, not yet given to OpenSSL
  std::optional<TlsRecordLayer> records_;  // after it
  // A server stream's channel binding, exported before the SSL object is freed (null once used).
  std::unique_ptr<std::array<std::uint8_t, 32>> binding_;
  bool binding_forgotten_ = false;
  ByteQueue in_;                           // ciphertext read and not yet opened
  ByteQueue plain_;                        // opened application data not yet delivered
  ByteQueue out_;                          // sealed bytes the socket has not taken yet
  std::size_t out_plain_ = 0;              // application bytes in out_, reported when it is flushed
  boost::system::error_code read_error_;   // sticky, once the record stream failed
  boost::system::error_code write_error_;  // sticky, once sending failed
  // Records in a row that delivered nothing (empty data, KeyUpdate, user_canceled): a peer
  // may not keep the server busy with them forever (OpenSSL allows 32 empty records too).
  static constexpr std::uint32_t kMaxEmptyRecords = 32;
  std::uint32_t empty_run_ = 0;
  bool peer_closed_ = false;  // close_notify received
  bool close_sent_ = false;   // close_notify or a fatal alert sent (nothing may follow)
};

namespace tls_ops {

using boost::system::error_code;

// Drives one TLS operation to completion: attempt, and on want_read/want_write wait for the
// socket and attempt again. A result available at once is delivered through a post, never from
// inside the initiating call (Asio's rule, which Beast relies on).
template <class Attempt>
class DriveOp {
 public:
  DriveOp(TlsStream& stream, Attempt attempt) : stream_(stream), attempt_(std::move(attempt)) {}

  template <class Self>
  void operator()(Self& self, error_code ec = {}) {
    if (state_ == State::posted) {
      self.complete(result_.ec, result_.bytes);
      return;
    }
    if (ec) {
      self.complete(ec, std::size_t{0});
      return;
    }
    result_ = attempt_(stream_);
    if (result_.kind != TlsStep::done) {
      state_ = State::waiting;
      stream_.next_layer().async_wait(result_.kind == TlsStep::want_read
                                          ? TlsStream::socket_type::wait_read
                                          : TlsStream::socket_type::wait_write,
                                      std::move(self));
      return;
    }
    if (state_ == State::starting) {
      state_ = State::posted;
      boost::asio::post(std::move(self));
      return;
    }
    self.complete(result_.ec, result_.bytes);
  }

 private:
  enum class State { starting, waiting, posted };
  TlsStream& stream_;
  Attempt attempt_;
  State state_ = State::starting;
  TlsStep result_;
};

struct FlushAttempt {
  TlsStep operator()(TlsStream& s) const { return s.try_flush(); }
};

struct HandshakeAttempt {
  TlsStep operator()(TlsStream& s) const { return s.try_handshake(); }
};

struct ReadAttempt {
  boost::asio::mutable_buffer buffer;
  TlsStep operator()(TlsStream& s) const {
    if (buffer.size() == 0) return {};
    return s.try_read(buffer.data(), buffer.size());
  }
};

// Writes the first buffer directly when it is large or alone; otherwise copies up to one
// record's worth of the sequence (a WebSocket frame header and its payload) so that they leave
// in one TLS record. The copy lives as long as the operation, as OpenSSL's retry rules require.
struct WriteAttempt {
  boost::asio::const_buffer buffer;
  std::unique_ptr<unsigned char[]> copy;
  TlsStep operator()(TlsStream& s) const {
    if (buffer.size() == 0) return {};
    return s.try_write(buffer.data(), buffer.size());
  }
};

template <class ConstBufferSequence>
WriteAttempt make_write_attempt(const ConstBufferSequence& buffers) {
  WriteAttempt a;
  const std::size_t total = boost::asio::buffer_size(buffers);
  auto it = boost::asio::buffer_sequence_begin(buffers);
  const auto end = boost::asio::buffer_sequence_end(buffers);
  for (; it != end; ++it) {
    boost::asio::const_buffer b(*it);
    if (b.size() == 0) continue;
    if (b.size() == total || b.size() >= TlsStream::kMaxRecordPlaintext) {
      a.buffer = b;
      return a;
    }
    break;
  }
  const std::size_t n = std::min(total, TlsStream::kMaxRecordPlaintext);
  if (n == 0) return a;
  a.copy.reset(new unsigned char[n]);
  boost::asio::buffer_copy(boost::asio::buffer(a.copy.get(), n), buffers);
  a.buffer = boost::asio::const_buffer(a.copy.get(), n);
  return a;
}

class TeardownOp {
 public:
  TeardownOp(TlsStream& stream, bool wait_for_peer)
      : stream_(stream), wait_for_peer_(wait_for_peer) {}

  template <class Self>
  void operator()(Self& self, error_code ec = {}) {
    if (state_ == State::posted) {
      self.complete(error_code{});
      return;
    }
    if (ec) {  // the wait was aborted: the socket is closed already
      stream_.close_socket();
      self.complete(error_code{});
      return;
    }
    if (state_ == State::starting || state_ == State::notify) {
      const TlsStep st = stream_.try_shutdown(/*fin_follows=*/true);
      if (st.kind == TlsStep::want_write) {
        state_ = State::notify;
        stream_.next_layer().async_wait(TlsStream::socket_type::wait_write, std::move(self));
        return;
      }
      stream_.shutdown_send();
      if (state_ == State::starting) state_ = State::draining_first;
    }
    for (;;) {
      unsigned char sink[512];
      const TlsStep st = stream_.try_read(sink, sizeof sink);
      if (st.kind != TlsStep::done) {
        if (!wait_for_peer_) break;
        state_ = State::draining;
        stream_.next_layer().async_wait(st.kind == TlsStep::want_read
                                            ? TlsStream::socket_type::wait_read
                                            : TlsStream::socket_type::wait_write,
                                        std::move(self));
        return;
      }
      if (st.ec || st.bytes == 0) break;  // close_notify, EOF or an error: done either way
    }
    stream_.close_socket();
    if (state_ == State::draining_first) {
      state_ = State::posted;
      boost::asio::post(std::move(self));
      return;
    }
    self.complete(error_code{});
  }

 private:
  // draining_first: no wait has happened yet, so completion must still go through a post.
  enum class State { starting, notify, draining_first, draining, posted };
  TlsStream& stream_;
  bool wait_for_peer_;
  State state_ = State::starting;
};

}  // namespace tls_ops

template <class Token>
auto TlsStream::async_handshake(Token&& token) {
  return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
      tls_ops::DriveOp<tls_ops::HandshakeAttempt>(*this, {}), token, socket_);
}

template <class MutableBufferSequence, class Token>
auto TlsStream::async_read_some(const MutableBufferSequence& buffers, Token&& token) {
  tls_ops::ReadAttempt attempt;
  auto it = boost::asio::buffer_sequence_begin(buffers);
  const auto end = boost::asio::buffer_sequence_end(buffers);
  for (; it != end; ++it) {
    boost::asio::mutable_buffer b(*it);
    if (b.size() != 0) {
      attempt.buffer = b;
      break;
    }
  }
  return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
      tls_ops::DriveOp<tls_ops::ReadAttempt>(*this, attempt), token, socket_);
}

template <class ConstBufferSequence, class Token>
auto TlsStream::async_write_some(const ConstBufferSequence& buffers, Token&& token) {
  return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
      tls_ops::DriveOp<tls_ops::WriteAttempt>(*this, tls_ops::make_write_attempt(buffers)), token,
      socket_);
}

template <class Token>
auto TlsStream::async_teardown(bool wait_for_peer, Token&& token) {
  return boost::asio::async_compose<Token, void(boost::system::error_code)>(
      tls_ops::TeardownOp(*this, wait_for_peer), token, socket_);
}

template <class Token>
auto TlsStream::async_flush(Token&& token) {
  return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
      tls_ops::DriveOp<tls_ops::FlushAttempt>(*this, {}), token, socket_);
}

// Beast's WebSocket close handshake ends with these (found by argument-dependent lookup). The
// server does not wait for the client's FIN: a client that keeps its socket open after the close
// handshake must not hold a server connection until the close timeout.
template <class TeardownHandler>
void async_teardown(boost::beast::role_type role, TlsStream& stream, TeardownHandler&& handler) {
  stream.async_teardown(role == boost::beast::role_type::client,
                        std::forward<TeardownHandler>(handler));
}

inline void teardown(boost::beast::role_type, TlsStream& stream, boost::system::error_code& ec) {
  (void)stream.try_shutdown();
  stream.close_socket();
  ec = {};
}

}  // namespace sotto::net::detail
