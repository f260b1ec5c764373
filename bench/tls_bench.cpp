// sotto_tls_bench: the CPU one TLS 1.3 handshake costs each end with OpenSSL 3.0, in memory (no
// sockets, no kernel, no event loop), with the server's real context (its certificate, P-256,
// X25519, one ticket per connection) and a client configured as the client library's. This is
// the floor under a login: whatever Sotto adds (TCP, the WebSocket upgrade, the login proof,
// the event loops) comes on top. bench/README.md ("Where login time goes") uses it to bound the
// logins a machine can do: with client and server on the same C cores, at most
// C * 1e6 / (client_us + server_us) handshakes per second.
#include <benchmark/benchmark.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "net/tls.h"
#include "net/tls_internal.h"

namespace {

using sotto::net::detail::SslCtxPtr;

double thread_cpu_us() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

struct SslFree {
  void operator()(SSL* s) const noexcept { SSL_free(s); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;

SSL_SESSION*& kept_session() {
  static SSL_SESSION* s = nullptr;
  return s;
}

int keep_session(SSL*, SSL_SESSION* session) {
  if (kept_session() != nullptr) SSL_SESSION_free(kept_session());
  kept_session() = session;
  return 1;
}

struct Contexts {
  SslCtxPtr server;
  SslCtxPtr client;

  Contexts() {
    char tmpl[] = "/tmp/sotto-tls-bench-XXXXXX";
    const char* dir = mkdtemp(tmpl);
    if (dir == nullptr) throw std::runtime_error("mkdtemp");
    auto identity = sotto::net::load_or_create_identity(dir);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (!identity) throw std::runtime_error("no identity");
    server = sotto::net::detail::make_server_context(*identity);
    // The server's key log callback feeds its record layer from a TlsStream; here a callback
    // that only receives the lines keeps OpenSSL's cost of writing them.
    SSL_CTX_set_keylog_callback(server.get(), [](const SSL*, const char*) {});
    client.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_min_proto_version(client.get(), TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(client.get(), TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(client.get(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(client.get(), keep_session);
    SSL_CTX_set_verify(client.get(), SSL_VERIFY_NONE, nullptr);
  }
};

Contexts& contexts() {
  static Contexts c;
  return c;
}

// One handshake over a BIO pair, the ticket read by the client, then close_notify both ways;
// adds each end's CPU time.
bool handshake(bool resume, double& client_us, double& server_us, bool& resumed) {
  Contexts& cx = contexts();
  double t0 = thread_cpu_us();
  SslPtr client(SSL_new(cx.client.get()));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  BIO_new_bio_pair(&client_bio, 1 << 15, &server_bio, 1 << 15);
  SSL_set_bio(client.get(), client_bio, client_bio);
  SSL_set_connect_state(client.get());
  if (resume && kept_session() != nullptr) SSL_set_session(client.get(), kept_session());
  double t1 = thread_cpu_us();
  client_us += t1 - t0;
  SslPtr server(SSL_new(cx.server.get()));
  SSL_set_bio(server.get(), server_bio, server_bio);
  SSL_set_accept_state(server.get());
  t0 = thread_cpu_us();
  server_us += t0 - t1;

  bool client_done = false;
  bool server_done = false;
  for (int round = 0; round < 8 && !(client_done && server_done); ++round) {
    t0 = thread_cpu_us();
    if (!client_done) client_done = SSL_do_handshake(client.get()) == 1;
    t1 = thread_cpu_us();
    client_us += t1 - t0;
    if (!server_done) server_done = SSL_do_handshake(server.get()) == 1;
    t0 = thread_cpu_us();
    server_us += t0 - t1;
  }
  // The ticket the server wrote behind its handshake.
  char byte = 0;
  t0 = thread_cpu_us();
  (void)SSL_read(client.get(), &byte, 1);
  resumed = SSL_session_reused(client.get()) == 1;
  // Both ends close with close_notify, as Sotto's do (without it OpenSSL marks the client's
  // session not resumable).
  (void)SSL_shutdown(client.get());
  client.reset();
  t1 = thread_cpu_us();
  client_us += t1 - t0;
  (void)SSL_shutdown(server.get());
  server.reset();
  server_us += thread_cpu_us() - t1;
  ERR_clear_error();
  return client_done && server_done;
}

void run(benchmark::State& state, bool resume) {
  double client_us = 0;
  double server_us = 0;
  std::int64_t resumed_count = 0;
  bool resumed = false;
  if (resume) handshake(false, client_us, server_us, resumed);  // a session to resume
  client_us = server_us = 0;
  for (auto _ : state) {
    if (!handshake(resume, client_us, server_us, resumed)) {
      state.SkipWithError("handshake failed");
      return;
    }
    resumed_count += resumed ? 1 : 0;
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["client_us"] = client_us / n;
  state.counters["server_us"] = server_us / n;
  state.counters["resumed"] = static_cast<double>(resumed_count) / n;
  // Both ends on two cores, nothing else: the most handshakes per second there can be.
  state.counters["two_core_ceiling_per_s"] = 2e6 / ((client_us + server_us) / n);
}

void BM_tls13_handshake_full(benchmark::State& state) {
  run(state, false);
}
void BM_tls13_handshake_resumed(benchmark::State& state) {
  run(state, true);
}

}  // namespace

BENCHMARK(BM_tls13_handshake_full)->Name("tls13_handshake_full/openssl")->MinTime(2.0);
BENCHMARK(BM_tls13_handshake_resumed)->Name("tls13_handshake_resumed/openssl")->MinTime(2.0);

BENCHMARK_MAIN();
