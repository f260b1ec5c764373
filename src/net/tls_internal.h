// OpenSSL contexts and helpers shared by the transport's implementation files (internal to
// src/net: never included by a public header). Thread-safe.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>

#include "net/tls.h"

namespace sotto::net::detail {

struct SslCtxFree {
  void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// A TLS 1.3-only server context holding the identity's certificate chain and key. No session
// tickets or session cache: every connection is a full handshake, and no per-session state is
// kept. Throws std::runtime_error when the identity is unusable (it comes from load_identity or
// load_or_create_identity, so that is a broken invariant).
SslCtxPtr make_server_context(const TlsIdentity& identity);

// The process-wide TLS 1.3-only client context. It does not verify the certificate chain: the
// server's certificate is pinned by fingerprint instead (ws_client.cpp checks it after the
// handshake).
SSL_CTX* client_context();

// SHA-256 of the certificate's DER encoding, 64 lower-case hex digits; empty if it cannot be
// encoded.
std::string fingerprint_of(X509* certificate);

// Lower-case hex with any ':' separators removed, so "AB:CD:..." pins the same as "abcd...".
std::string normalize_fingerprint(std::string_view text);

}  // namespace sotto::net::detail
