// OpenSSL contexts and helpers shared by the transport's implementation files (internal to
// src/net: never included by a public header). Thread-safe.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "net/tls.h"
#include "net/ws_client.h"

namespace sotto::net::detail {

struct SslCtxFree {
  void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// A TLS 1.3-only server context holding the identity's certificate chain and key. Resumption by
// stateless session tickets (one per connection), sealed with a key OpenSSL draws at random when
// the context is made and that never leaves memory: the server stores nothing per session, and a
// restart invalidates every ticket. Throws std::runtime_error when the identity is unusable (it
// comes from load_identity or load_or_create_identity, so that is a broken invariant).
// `record_handover`: connections hand their records to TlsRecordLayer once the handshake is over
// (net/handover/record_handover.h); otherwise OpenSSL keeps them for the connection's life.
SslCtxPtr make_server_context(const TlsIdentity& identity, bool record_handover = true);

// The process-wide TLS 1.3-only client context. It does not verify the certificate chain: the
// server's certificate is pinned by fingerprint instead (ws_client.cpp checks it after the
// handshake). New sessions go to the connection's SessionSink, if it has one.
SSL_CTX* client_context();

// What a client connection attaches to its SSL object for the new-session callback: the slot
// to fill, and whether the certificate was found pinned (sessions are stored only then).
struct SessionSink {
  std::shared_ptr<TlsSessionSlot> slot;
  bool pinned = false;
};
void attach_session_sink(SSL* ssl, SessionSink* sink);

// Lets the kernel delay this socket's ACKs (TCP_QUICKACK off, Linux; elsewhere nothing) so
// that an ACK rides on the answer the application is about to send instead of taking a segment
// of its own. The kernel turns quick ACKs back on when a delayed ACK has to go alone, so this
// helps exchanges where each side answers at once, as a login does.
void delay_acks(int fd) noexcept;

// SHA-256 of the certificate's DER encoding, 64 lower-case hex digits; empty if it cannot be
// encoded.
std::string fingerprint_of(X509* certificate);

// The certificate's DER SubjectPublicKeyInfo as it encodes it; empty if it cannot be encoded.
Bytes public_key_of(X509* certificate);
// SHA-256 of that, 64 lower-case hex digits (what clients pin); empty if it cannot be encoded.
std::string key_fingerprint_of(X509* certificate);

// Lower-case hex with any ':' separators removed, so "AB:CD:..." pins the same as "abcd...".
std::string normalize_fingerprint(std::string_view text);

}  // namespace sotto::net::detail

namespace sotto::net {

struct TlsSessionSlot::Impl {
  ~Impl() { SSL_SESSION_free(session); }
  // A new reference to the stored session, or null.
  SSL_SESSION* get() {
    std::lock_guard lock(mu);
    if (session != nullptr) SSL_SESSION_up_ref(session);
    return session;
  }
  // Takes ownership of `s` (one reference).
  void put(SSL_SESSION* s) {
    std::lock_guard lock(mu);
    SSL_SESSION_free(session);
    session = s;
  }
  std::mutex mu;
  SSL_SESSION* session = nullptr;  // guarded by mu
};

}  // namespace sotto::net
