// The record handover: a server connection's TLS records move from OpenSSL to TlsRecordLayer
// (net/tls_record.h) once the handshake is over, so that an open connection keeps about 250 bytes
// of TLS state instead of OpenSSL's 13 KB (bench/README.md, "Memory per idle connection").
// Internal to src/net.
//
// What it does. During the handshake OpenSSL's key log callback hands over the two application
// traffic secrets (CLIENT_/SERVER_TRAFFIC_SECRET_0), and its message callback counts the records
// OpenSSL protects under the server's application key before the handover (the session tickets,
// which may take more than one record each). Once SSL_do_handshake returns 1 the connection's
// record layer is built from the secrets, reading from sequence 0 and writing from that count,
// and the SSL object is freed (TlsStream::hand_off).
//
// The risk. The first write sequence number is counted from OpenSSL 3.0's callbacks, which are not
// a documented contract for this use. An OpenSSL that counted differently (a ticket written
// without a callback, a record split otherwise) would make the server seal two records with the
// same sequence number under the same key: an AES-GCM or ChaCha20-Poly1305 nonce used twice, which
// leaks the XOR of the two plaintexts and lets anyone forge records. Hence three guards:
//   - the handover is used only with the OpenSSL series it was tested with (version_tested());
//   - at start-up a loopback handshake in process goes through the very same path (self_check())
//     and an OpenSSL client must read the first handed-over record, and records after a KeyUpdate
//     each way, in every TLS 1.3 suite; otherwise the server falls back;
//   - an operator can turn it off (`tls_record_handover = false`, net::ServerOptions).
// Falling back means OpenSSL keeps each connection's records for its whole life, as a client's
// do: correct, about 13 KB more per open connection.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "crypto/secret.h"
#include "net/tls_record.h"

namespace sotto::net::handover {

// What a server connection's handshake leaves for its record layer. One per connection, from
// TlsStream::start until the handshake is done; it must outlive the SSL object's handshake.
class Capture {
 public:
  Capture() = default;
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // Installs the per-connection callbacks on a server SSL whose context has enable()d the
  // handover, and turns OpenSSL's read-ahead off (it must hold no unprocessed record at the end).
  void attach(SSL* ssl);
  // After SSL_do_handshake returned 1: the record layer that continues the connection, or
  // nullopt when it cannot (no secrets, an unknown suite, bytes OpenSSL holds unprocessed); the
  // caller then leaves the records to OpenSSL. Detaches the callbacks either way.
  std::optional<detail::TlsRecordLayer> finish(SSL* ssl);

 private:
  friend struct Callbacks;
  crypto::Secret<48> client_secret_;  // CLIENT_TRAFFIC_SECRET_0: what the server reads
  crypto::Secret<48> server_secret_;  // SERVER_TRAFFIC_SECRET_0: what it writes
  std::size_t client_len_ = 0;
  std::size_t server_len_ = 0;
  // Records the server wrote under its application key before the handover, counted per record.
  bool server_keys_logged_ = false;
  std::uint64_t app_records_ = 0;
};

// Makes a server context's connections hand over (installs the key log callback).
void enable(SSL_CTX* ctx);
// True when enable() was called on `ctx`.
bool enabled(const SSL_CTX* ctx);

// True for the OpenSSL versions (OpenSSL_version_num()) the handover was tested with: the 3.0
// series.
bool version_tested(unsigned long version_num);

// Whether the server hands its records over, and why (for the start-up log).
struct Verdict {
  bool enabled = false;
  std::string reason;
};

// Runs loopback handshakes in process over a socketpair, server side through TlsStream with
// `server_ctx` (which must have enable()d the handover), an OpenSSL client on the other end, once
// per TLS 1.3 suite. Passes when every server stream handed over and the client read the first
// handed-over record (behind the session ticket), a record after a KeyUpdate the client asked the
// server to answer and one after a KeyUpdate of the server's own, and the server read the
// client's records under each of its keys. Takes tens of milliseconds.
Verdict self_check(SSL_CTX* server_ctx);

// The start-up decision for a server that wants the handover: refused on an untested OpenSSL
// version, else the self-check's verdict.
Verdict decide(SSL_CTX* server_ctx, unsigned long version_num);

namespace testing {
// Adds `offset` to the first write sequence number of every handover from now on (0: none), to
// check that the self-check catches a miscount. Process-wide; tests only.
void set_write_sequence_offset(std::int64_t offset) noexcept;
}  // namespace testing

}  // namespace sotto::net::handover
