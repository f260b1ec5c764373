// sotto_attachment_bench: attachment throughput against the link's (docs/attachments.md). On
// loopback, with a real sotto-server process (spawned as sotto-load spawns it):
//
//   PlainTlsCopy        the same bytes copied one way over a TLS 1.3 connection, OpenSSL on both
//                       ends with the server's own TLS context: the ceiling for this machine.
//   AttachmentUpload    Client::upload_attachment of a file that size: read, encrypted
//                       (secretstream), hashed, sent in pipelined 1 MiB chunks, written and
//                       fsynced by the server.
//   AttachmentDownload  Client::save_attachment of it: read back, hashed, decrypted into a
//                       temporary file, fsynced, moved into place.
//
// Bytes per second is the figure (SetBytesProcessed counts the plaintext). The goal is an upload
// and a download of at least half the plain copy's. Run it from the release preset:
//   build/release/bench/sotto_attachment_bench --benchmark_min_time=1
// SOTTO_BENCH_ATTACHMENT_MIB sets the file size (default 64); SOTTO_BENCH_SERVER another server
// binary than the one built with the bench.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "net/tls.h"
#include "net/tls_internal.h"
#include "server_process.h"
#include "sotto/client.h"

namespace {

namespace fs = std::filesystem;

std::size_t file_bytes() {
  const char* mib = std::getenv("SOTTO_BENCH_ATTACHMENT_MIB");
  return static_cast<std::size_t>(mib != nullptr ? std::atoi(mib) : 64) << 20;
}

// A temporary directory removed at exit.
struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/sotto-attachment-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// The server, one account on it, and the file to send: made once for every case.
struct World {
  TempDir dir;
  std::unique_ptr<sotto::load::SpawnedServer> server;
  std::unique_ptr<sotto::Client> client;
  fs::path file;
  std::size_t size = file_bytes();

  World() {
    // SOTTO_BENCH_SERVER runs another sotto-server build (an older one, to compare in one run).
    const char* other = std::getenv("SOTTO_BENCH_SERVER");
    server = std::make_unique<sotto::load::SpawnedServer>(
        other != nullptr ? other : SOTTO_SERVER_BINARY, false);
    sotto::Options o;
    o.data_dir = dir.path / "client";
    const auto& e = server->endpoint();
    auto c = sotto::Client::register_account(o, "bench", {e.host, e.port, e.fingerprint, {}});
    if (!c) throw std::runtime_error("register: " + c.error().message);
    client = std::move(*c);
    file = dir.path / "payload.bin";
    std::ofstream out(file, std::ios::binary);
    std::vector<char> block(1 << 20);
    std::uint32_t x = 12345;
    for (auto& b : block) b = static_cast<char>((x = x * 1664525u + 1013904223u) >> 24);
    for (std::size_t done = 0; done < size; done += block.size()) {
      out.write(block.data(), static_cast<std::streamsize>(std::min(block.size(), size - done)));
    }
  }
};

World& world() {
  static World w;
  return w;
}

struct SslFree {
  void operator()(SSL* s) const noexcept { SSL_free(s); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;

// One TLS connection on loopback: the server's real context on one end, a client on the other.
void BM_PlainTlsCopy(benchmark::State& state) {
  const std::size_t size = file_bytes();
  const bool to_disk = state.range(0) != 0;
  TempDir dir;
  auto identity = sotto::net::load_or_create_identity(dir.path);
  if (!identity) {
    state.SkipWithError("no TLS identity");
    return;
  }
  auto server_ctx = sotto::net::detail::make_server_context(*identity, false);
  sotto::net::detail::SslCtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_min_proto_version(client_ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_NONE, nullptr);

  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::listen(listener, 1);
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);

  std::thread server([&] {
    const int fd = ::accept(listener, nullptr, nullptr);
    SslPtr ssl(SSL_new(server_ctx.get()));
    SSL_set_fd(ssl.get(), fd);
    if (SSL_accept(ssl.get()) == 1) {
      std::vector<char> buf(1 << 20);
      for (int round = 0;; ++round) {
        const fs::path file = dir.path / ("copy" + std::to_string(round));
        const int out = to_disk ? ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
        std::size_t got = 0;
        while (got < size) {
          const int n = SSL_read(ssl.get(), buf.data(), static_cast<int>(buf.size()));
          if (n <= 0) break;
          if (out >= 0 && ::write(out, buf.data(), static_cast<std::size_t>(n)) != n) break;
          got += static_cast<std::size_t>(n);
        }
        if (out >= 0) {
          (void)::fsync(out);
          ::close(out);
          std::error_code ec;
          fs::remove(file, ec);
        }
        if (got < size) break;
        const char ack = 1;
        if (SSL_write(ssl.get(), &ack, 1) != 1) break;
      }
    }
    ::close(fd);
  });
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  SslPtr ssl(SSL_new(client_ctx.get()));
  SSL_set_fd(ssl.get(), fd);
  if (SSL_connect(ssl.get()) != 1) {
    state.SkipWithError("TLS handshake failed");
  } else {
    std::vector<char> block(1 << 20, 'x');
    for (auto _ : state) {
      for (std::size_t done = 0; done < size; done += block.size()) {
        SSL_write(ssl.get(), block.data(), static_cast<int>(std::min(block.size(), size - done)));
      }
      char ack = 0;
      SSL_read(ssl.get(), &ack, 1);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  }
  SSL_shutdown(ssl.get());
  ssl.reset();
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  server.join();
  ::close(listener);
}

void BM_AttachmentUpload(benchmark::State& state) {
  World& w = world();
  for (auto _ : state) {
    auto a = w.client->upload_attachment(w.file);
    if (!a) {
      state.SkipWithError(a.error().message.c_str());
      return;
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * w.size));
}

void BM_AttachmentDownload(benchmark::State& state) {
  World& w = world();
  auto a = w.client->upload_attachment(w.file);
  if (!a) {
    state.SkipWithError(a.error().message.c_str());
    return;
  }
  const fs::path out = w.dir.path / "downloads";
  for (auto _ : state) {
    auto saved = w.client->save_attachment(*a, out);
    if (!saved) {
      state.SkipWithError(saved.error().message.c_str());
      return;
    }
    state.PauseTiming();
    std::error_code ec;
    fs::remove(saved->path, ec);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * w.size));
}

// A few iterations each: every upload counts against the account's quota (1 GiB by default).
// Arg 0: the receiver discards the bytes; 1: it writes them to a file and fsyncs it before it
// answers, as the blob store does (the durable ceiling).
BENCHMARK(BM_PlainTlsCopy)
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(5);
BENCHMARK(BM_AttachmentUpload)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(BM_AttachmentDownload)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

}  // namespace

BENCHMARK_MAIN();
