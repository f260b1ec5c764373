#include "attachment_phase.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "net/tls.h"
#include "net/tls_internal.h"
#include "sotto/client.h"

namespace sotto::load {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct SslFree {
  void operator()(SSL* s) const noexcept { SSL_free(s); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;

double mb_s(std::size_t bytes, Clock::time_point since) {
  const double s = std::chrono::duration<double>(Clock::now() - since).count();
  return s > 0 ? static_cast<double>(bytes) / 1e6 / s : 0;
}

fs::path& identity_dir() {
  static fs::path dir;
  return dir;
}

// Copies `bytes` one way over a loopback TLS connection; MB/s, or 0 when it failed.
double tls_copy(const fs::path& dir, std::size_t bytes, bool to_disk) {
  // The spawned server's key when there is one: with the tool's built-in key methods in place
  // (key_methods.h) a new P-256 key cannot be made.
  std::error_code ec;
  fs::create_directories(dir / "tls-copy", ec);
  auto identity = identity_dir().empty() ? net::load_or_create_identity(dir / "tls-copy")
                                         : net::load_identity(identity_dir() / "tls" / "cert.pem",
                                                              identity_dir() / "tls" / "key.pem");
  if (!identity) {
    std::fprintf(stderr, "sotto-load: attachment: no TLS key for the plain copy\n");
    return 0;
  }
  auto server_ctx = net::detail::make_server_context(*identity, false);
  net::detail::SslCtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_min_proto_version(client_ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_NONE, nullptr);
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return 0;
  }
  std::thread server([&] {
    const int fd = ::accept(listener, nullptr, nullptr);
    SslPtr ssl(SSL_new(server_ctx.get()));
    SSL_set_fd(ssl.get(), fd);
    if (SSL_accept(ssl.get()) == 1) {
      const fs::path file = dir / "tls-copy.bin";
      const int out = to_disk ? ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
      std::vector<char> buf(1 << 20);
      std::size_t got = 0;
      while (got < bytes) {
        const int n = SSL_read(ssl.get(), buf.data(), static_cast<int>(buf.size()));
        if (n <= 0) break;
        if (out >= 0 && ::write(out, buf.data(), static_cast<std::size_t>(n)) != n) break;
        got += static_cast<std::size_t>(n);
      }
      if (out >= 0) {
        (void)::fsync(out);
        ::close(out);
        std::error_code rec;
        fs::remove(file, rec);
      }
      const char ack = 1;
      (void)SSL_write(ssl.get(), &ack, 1);
    }
    ::close(fd);
  });
  double result = 0;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    SslPtr ssl(SSL_new(client_ctx.get()));
    SSL_set_fd(ssl.get(), fd);
    if (SSL_connect(ssl.get()) != 1) {
      std::fprintf(stderr, "sotto-load: attachment: the plain copy's TLS handshake failed\n");
    } else {
      std::vector<char> block(1 << 20, 'x');
      const auto t0 = Clock::now();
      bool ok = true;
      for (std::size_t done = 0; done < bytes && ok; done += block.size()) {
        const int n = static_cast<int>(std::min(block.size(), bytes - done));
        ok = SSL_write(ssl.get(), block.data(), n) == n;
      }
      char ack = 0;
      if (ok && SSL_read(ssl.get(), &ack, 1) == 1) result = mb_s(bytes, t0);
      SSL_shutdown(ssl.get());
    }
  }
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  server.join();
  ::close(listener);
  return result;
}

}  // namespace

void set_tls_identity_dir(const std::filesystem::path& data_dir) {
  identity_dir() = data_dir;
}

AttachmentFigures measure_attachments(const std::string& host, std::uint16_t port,
                                      const std::string& fingerprint, std::size_t bytes) {
  AttachmentFigures f;
  char tmpl[] = "/tmp/sotto-load-attachment-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    f.error = "mkdtemp failed";
    return f;
  }
  const fs::path dir = tmpl;
  struct Remove {
    fs::path p;
    ~Remove() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } remove{dir};

  const fs::path file = dir / "payload.bin";
  {
    std::ofstream out(file, std::ios::binary);
    std::mt19937_64 gen(42);
    std::vector<std::uint64_t> block((1 << 20) / 8);
    for (std::size_t done = 0; done < bytes; done += block.size() * 8) {
      for (auto& w : block) w = gen();
      out.write(reinterpret_cast<const char*>(block.data()),
                static_cast<std::streamsize>(std::min(block.size() * 8, bytes - done)));
    }
  }
  Options o;
  o.data_dir = dir / "client";
  std::random_device rd;
  const std::string name = "attach" + std::to_string(rd() % 1'000'000'000);
  auto client = Client::register_account(o, name, {host, port, fingerprint, {}});
  if (!client) {
    f.error = "register: " + client.error().message;
    return f;
  }
  auto t0 = Clock::now();
  auto a = (*client)->upload_attachment(file);
  if (!a) {
    f.error = "upload: " + a.error().message;
    return f;
  }
  f.upload_mb_s = mb_s(bytes, t0);
  t0 = Clock::now();
  auto saved = (*client)->save_attachment(*a, dir / "downloads");
  if (!saved) {
    f.error = "download: " + saved.error().message;
    return f;
  }
  f.download_mb_s = mb_s(bytes, t0);
  f.tls_copy_mb_s = tls_copy(dir, bytes, false);
  f.tls_copy_disk_mb_s = tls_copy(dir, bytes, true);
  return f;
}

}  // namespace sotto::load
