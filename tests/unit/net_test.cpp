// Tests of src/net over real TLS 1.3 on loopback, no mocks: the server's self-signed identity,
// WsServer and WsClient end to end (echo, pinning, limits, timeouts, graceful stop, many
// clients on a shared pool) and the operator HTTP server. Misbehaving peers (one that never
// reads, one that never answers a ping, one that never says hello) are raw OpenSSL clients.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "net/batch.h"
#include "net/handover/record_handover.h"
#include "net/http_server.h"
#include "net/tls.h"
#include "net/ws_client.h"
#include "net/ws_server.h"
#include "net_test_support.h"
#include "tcp_segments.h"

namespace sotto::net {
namespace {

using test_support::pattern;
using test_support::TempDir;

using namespace std::chrono_literals;
namespace fs = std::filesystem;

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

Bytes bytes_of(std::string_view s) {
  return Bytes(s.begin(), s.end());
}

// Server side: records connections, echoes frames unless told otherwise.
class TestHandler : public ConnectionHandler {
 public:
  using FrameFn = std::function<void(const ConnectionPtr&, ByteView)>;

  using OpenFn = std::function<void(const ConnectionPtr&, std::string_view)>;

  void on_open(const ConnectionPtr& c, std::string_view authorization) override {
    OpenFn fn;
    {
      std::lock_guard lock(mu_);
      live_.push_back(c);
      ++opened;
      fn = open_fn_;
    }
    if (fn) fn(c, authorization);
  }
  void set_open_fn(OpenFn fn) {
    std::lock_guard lock(mu_);
    open_fn_ = std::move(fn);
  }
  void on_frame(const ConnectionPtr& c, ByteView frame) override {
    ++frames;
    FrameFn fn;
    {
      std::lock_guard lock(mu_);
      fn = frame_fn_;
    }
    if (fn) {
      fn(c, frame);
    } else {
      c->send(Bytes(frame.begin(), frame.end()));
    }
  }
  void on_close(const ConnectionPtr& c) override {
    std::lock_guard lock(mu_);
    live_.erase(std::remove(live_.begin(), live_.end(), c), live_.end());
    ++closed;
  }
  void set_frame_fn(FrameFn fn) {
    std::lock_guard lock(mu_);
    frame_fn_ = std::move(fn);
  }
  ConnectionPtr first_live() {
    std::lock_guard lock(mu_);
    return live_.empty() ? nullptr : live_.front();
  }

  std::atomic<int> opened{0};
  std::atomic<int> closed{0};
  std::atomic<int> frames{0};

 private:
  std::mutex mu_;
  std::vector<ConnectionPtr> live_;
  FrameFn frame_fn_;
  OpenFn open_fn_;
};

// Client side: records frames and the close reason.
class Recorder {
 public:
  WsClient::FrameHandler frame_fn() {
    return [this](ByteView f) {
      std::lock_guard lock(mu_);
      frames_.emplace_back(f.begin(), f.end());
      cv_.notify_all();
    };
  }
  WsClient::CloseHandler close_fn() {
    return [this](const std::string& reason) {
      std::lock_guard lock(mu_);
      closed_ = true;
      reason_ = reason;
      ++close_calls_;
      cv_.notify_all();
    };
  }
  bool wait_frames(std::size_t n, std::chrono::milliseconds timeout = 20s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return frames_.size() >= n; });
  }
  bool wait_closed(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return closed_; });
  }
  std::vector<Bytes> frames() {
    std::lock_guard lock(mu_);
    return frames_;
  }
  std::string reason() {
    std::lock_guard lock(mu_);
    return reason_;
  }
  int close_calls() {
    std::lock_guard lock(mu_);
    return close_calls_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Bytes> frames_;
  bool closed_ = false;
  std::string reason_;
  int close_calls_ = 0;
};

int connect_tcp(std::uint16_t port, int rcvbuf = 0) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// True when the peer closes the socket (EOF or reset) within `timeout`, discarding what it sends.
bool tcp_closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    if (::recv(fd, buf, sizeof buf, 0) <= 0) return true;
  }
}

// A blocking TLS client that speaks just enough WebSocket to misbehave on purpose.
class RawTlsClient {
 public:
  RawTlsClient() = default;
  RawTlsClient(const RawTlsClient&) = delete;
  RawTlsClient& operator=(const RawTlsClient&) = delete;
  ~RawTlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }

  bool connect(std::uint16_t port, int rcvbuf = 0) {
    fd_ = connect_tcp(port, rcvbuf);
    if (fd_ < 0) return false;
    ctx_ = SSL_CTX_new(TLS_client_method());
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    return SSL_connect(ssl_) == 1;
  }

  // `extra_headers`: whole lines, each ending in CRLF.
  bool upgrade(const std::string& extra_headers = {}) {
    const std::string req =
        "GET /v1/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n" +
        extra_headers + "\r\n";
    return exchange(req).rfind("HTTP/1.1 101", 0) == 0;
  }

  // Sends one masked client frame (RFC 6455 section 5.2); payloads under 126 bytes only.
  bool send_frame(std::uint8_t opcode, std::string_view payload) {
    std::string frame;
    frame.push_back(static_cast<char>(0x80 | opcode));
    frame.push_back(static_cast<char>(0x80 | payload.size()));
    const char mask[4] = {0x11, 0x22, 0x33, 0x44};
    frame.append(mask, 4);
    for (std::size_t i = 0; i < payload.size(); ++i) frame.push_back(payload[i] ^ mask[i % 4]);
    return SSL_write(ssl_, frame.data(), static_cast<int>(frame.size())) ==
           static_cast<int>(frame.size());
  }

  // Reads one unmasked server frame with a payload under 64 KB; false on error.
  bool read_frame(std::uint8_t& opcode, std::string& payload) {
    unsigned char head[2];
    if (!read_exact(head, 2) || (head[1] & 0x80) != 0 || (head[1] & 0x7f) == 127) return false;
    opcode = head[0] & 0x0f;
    std::size_t size = head[1] & 0x7fu;
    if (size == 126) {
      unsigned char ext[2];
      if (!read_exact(ext, 2)) return false;
      size = (std::size_t{ext[0]} << 8) | ext[1];
    }
    payload.assign(size, '\0');
    return read_exact(payload.data(), payload.size());
  }

  int fd() const { return fd_; }

  // Sends `request` as is and returns the response's head (through the blank line), or "".
  std::string exchange(const std::string& request) {
    if (SSL_write(ssl_, request.data(), static_cast<int>(request.size())) !=
        static_cast<int>(request.size())) {
      return {};
    }
    std::string resp;
    while (resp.find("\r\n\r\n") == std::string::npos) {
      char c;
      if (SSL_read(ssl_, &c, 1) != 1) return {};
      resp.push_back(c);
    }
    return resp;
  }

  // Reads and discards until the server ends the connection; false on timeout.
  bool closed_by_peer(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (SSL_pending(ssl_) == 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      }
      char buf[16384];
      if (SSL_read(ssl_, buf, sizeof buf) <= 0) {
        ERR_clear_error();
        return true;
      }
    }
  }

 private:
  bool read_exact(void* data, std::size_t size) {
    auto* p = static_cast<char*>(data);
    while (size > 0) {
      const int n = SSL_read(ssl_, p, static_cast<int>(size));
      if (n <= 0) return false;
      p += n;
      size -= static_cast<std::size_t>(n);
    }
    return true;
  }

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

class NetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto id = load_or_create_identity(dir_.path());
    ASSERT_TRUE(id);
    identity_ = *id;
  }

  ServerOptions server_options() const {
    ServerOptions o;
    o.port = 0;
    o.threads = 2;
    o.tls_record_handover = record_handover_;
    return o;
  }

  ClientOptions client_options(std::uint16_t port) const {
    ClientOptions o;
    o.port = port;
    o.fingerprint = identity_.key_fingerprint;
    o.connect_timeout = 5s;
    return o;
  }

  TempDir dir_;
  TlsIdentity identity_;
  bool record_handover_ = true;  // ServerOptions::tls_record_handover of server_options()
};

// The transport's tests run on both record paths of the server: handed over to its own record
// layer after the handshake, and kept by OpenSSL (tls_record_handover = false).
class NetTestBothPaths : public NetTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    record_handover_ = GetParam();
    NetTest::SetUp();
  }
};

// --- TLS identity -------------------------------------------------------------------------------

bool is_lower_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

TEST(TlsIdentity, CreatedOnceThenReloadedWithTheSameFingerprint) {
  TempDir dir;
  auto first = load_or_create_identity(dir.path(), "test-server");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->fingerprint.size(), 64u);
  EXPECT_TRUE(is_lower_hex(first->fingerprint));

  auto second = load_or_create_identity(dir.path(), "other-name");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->fingerprint, first->fingerprint);
  EXPECT_EQ(second->certificate_pem, first->certificate_pem);
  EXPECT_EQ(second->private_key_pem, first->private_key_pem);

  auto fp = fingerprint_of_pem(first->certificate_pem);
  ASSERT_TRUE(fp);
  EXPECT_EQ(*fp, first->fingerprint);

  struct stat st {};
  ASSERT_EQ(::stat((dir.path() / "tls" / "key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((dir.path() / "tls").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  auto loaded = load_identity(dir.path() / "tls" / "cert.pem", dir.path() / "tls" / "key.pem");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->fingerprint, first->fingerprint);
  EXPECT_EQ(loaded->key_fingerprint, first->key_fingerprint);
  EXPECT_EQ(loaded->public_key, first->public_key);
}

// The certificate's SubjectPublicKeyInfo, DER, as OpenSSL encodes it on its own.
Bytes spki_of_certificate_pem(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return {};
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
  Bytes out(der, der + std::max(len, 0));
  OPENSSL_free(der);
  X509_free(cert);
  return out;
}

// A new self-signed certificate for the key of `id` (a renewal), PEM.
std::string renewed_certificate(const TlsIdentity& id) {
  BIO* bio =
      BIO_new_mem_buf(id.private_key_pem.data(), static_cast<int>(id.private_key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  X509* cert = X509_new();
  X509_set_version(cert, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 4242);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("renewed"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(out, cert);
  char* data = nullptr;
  const long len = BIO_get_mem_data(out, &data);
  std::string pem(data, static_cast<std::size_t>(len));
  BIO_free(out);
  X509_free(cert);
  EVP_PKEY_free(key);
  return pem;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(TlsIdentity, TheKeyFingerprintIsTheSha256OfTheSubjectPublicKeyInfoAndSurvivesRenewal) {
  TempDir dir;
  auto id = load_or_create_identity(dir.path());
  ASSERT_TRUE(id);
  const Bytes spki = spki_of_certificate_pem(id->certificate_pem);
  ASSERT_FALSE(spki.empty());
  EXPECT_EQ(id->public_key, spki);
  EXPECT_EQ(id->key_fingerprint, key_fingerprint(spki));
  EXPECT_EQ(id->key_fingerprint.size(), 64u);
  EXPECT_TRUE(is_lower_hex(id->key_fingerprint));
  EXPECT_NE(id->key_fingerprint, id->fingerprint);
  // SHA-256("abc"), FIPS 180-2 appendix B.1: the hash and its hex are the usual ones.
  EXPECT_EQ(key_fingerprint(as_bytes("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  // A renewed certificate for the same key: a new certificate fingerprint, the same key one.
  write_text(dir.path() / "renewed.pem", renewed_certificate(*id));
  auto renewed = load_identity(dir.path() / "renewed.pem", dir.path() / "tls" / "key.pem");
  ASSERT_TRUE(renewed);
  EXPECT_NE(renewed->fingerprint, id->fingerprint);
  EXPECT_EQ(renewed->key_fingerprint, id->key_fingerprint);
  EXPECT_EQ(renewed->public_key, id->public_key);
}

TEST(TlsIdentity, LoadsThePublicKeyOfACertificateAPublicKeyOrAPrivateKey) {
  TempDir dir;
  auto id = load_or_create_identity(dir.path());
  ASSERT_TRUE(id);
  EXPECT_EQ(load_public_key(dir.path() / "tls" / "cert.pem").value(), id->public_key);
  EXPECT_EQ(load_public_key(dir.path() / "tls" / "key.pem").value(), id->public_key);
  {
    BIO* bio =
        BIO_new_mem_buf(id->private_key_pem.data(), static_cast<int>(id->private_key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    BIO* out = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(out, key);
    char* data = nullptr;
    const long len = BIO_get_mem_data(out, &data);
    write_text(dir.path() / "pub.pem", std::string(data, static_cast<std::size_t>(len)));
    BIO_free(out);
    EVP_PKEY_free(key);
  }
  EXPECT_EQ(load_public_key(dir.path() / "pub.pem").value(), id->public_key);

  // Malformed files: refused, never a crash.
  write_text(dir.path() / "garbage.pem",
             "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  EXPECT_EQ(load_public_key(dir.path() / "garbage.pem").error(), TlsError::bad_certificate);
  write_text(dir.path() / "empty.pem", "");
  EXPECT_EQ(load_public_key(dir.path() / "empty.pem").error(), TlsError::bad_certificate);
  write_text(dir.path() / "big.pem", std::string((1 << 20) + 10, 'A'));
  EXPECT_FALSE(load_public_key(dir.path() / "big.pem").has_value());
  EXPECT_EQ(load_public_key(dir.path() / "missing.pem").error(), TlsError::io);
}

TEST(TlsIdentity, TheNextKeyIsMadeAnnouncedFromItsFilesAndActivated) {
  TempDir dir;
  auto current = load_or_create_identity(dir.path());
  ASSERT_TRUE(current);
  ASSERT_FALSE(load_next_identity(dir.path()).value().has_value());
  EXPECT_EQ(activate_next_identity(dir.path()).error(), TlsError::not_found);

  auto next = create_next_identity(dir.path());
  ASSERT_TRUE(next);
  EXPECT_NE(next->key_fingerprint, current->key_fingerprint);
  EXPECT_EQ(create_next_identity(dir.path()).error(), TlsError::already_exists);
  auto loaded = load_next_identity(dir.path());
  ASSERT_TRUE(loaded && loaded->has_value());
  EXPECT_EQ((*loaded)->key_fingerprint, next->key_fingerprint);
  struct stat st {};
  ASSERT_EQ(::stat((dir.path() / "tls" / "next-key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The current identity is untouched until activation.
  EXPECT_EQ(load_or_create_identity(dir.path())->key_fingerprint, current->key_fingerprint);

  auto active = activate_next_identity(dir.path());
  ASSERT_TRUE(active);
  EXPECT_EQ(active->key_fingerprint, next->key_fingerprint);
  EXPECT_EQ(load_or_create_identity(dir.path())->key_fingerprint, next->key_fingerprint);
  auto previous = load_identity(dir.path() / "tls" / "previous-cert.pem",
                                dir.path() / "tls" / "previous-key.pem");
  ASSERT_TRUE(previous);
  EXPECT_EQ(previous->key_fingerprint, current->key_fingerprint);
  ASSERT_EQ(::stat((dir.path() / "tls" / "previous-key.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(fs::exists(dir.path() / "tls" / "next-key.pem"));
  EXPECT_FALSE(fs::exists(dir.path() / "tls" / "next-cert.pem"));
  EXPECT_FALSE(load_next_identity(dir.path()).value().has_value());
  EXPECT_EQ(activate_next_identity(dir.path()).error(), TlsError::not_found);
}

TEST(TlsIdentity, AnInterruptedActivationIsFinishedByRunningItAgain) {
  TempDir dir;
  auto first = load_or_create_identity(dir.path());
  ASSERT_TRUE(first);
  auto next = create_next_identity(dir.path());
  ASSERT_TRUE(next);
  // What a crash between key.pem and cert.pem leaves: the previous pair kept, key.pem new,
  // cert.pem old. The server refuses that pair rather than make a new key.
  fs::copy_file(dir.path() / "tls" / "key.pem", dir.path() / "tls" / "previous-key.pem");
  fs::copy_file(dir.path() / "tls" / "cert.pem", dir.path() / "tls" / "previous-cert.pem");
  fs::copy_file(dir.path() / "tls" / "next-key.pem", dir.path() / "tls" / "key.pem",
                fs::copy_options::overwrite_existing);
  EXPECT_EQ(load_or_create_identity(dir.path()).error(), TlsError::bad_certificate);

  auto active = activate_next_identity(dir.path());
  ASSERT_TRUE(active) << static_cast<int>(active.error());
  EXPECT_EQ(load_or_create_identity(dir.path())->key_fingerprint, next->key_fingerprint);
  EXPECT_EQ(load_identity(dir.path() / "tls" / "previous-cert.pem",
                          dir.path() / "tls" / "previous-key.pem")
                ->key_fingerprint,
            first->key_fingerprint);

  // A pair broken some other way is left for the operator.
  ASSERT_TRUE(create_next_identity(dir.path()));
  TempDir other;
  ASSERT_TRUE(load_or_create_identity(other.path()));
  fs::copy_file(other.path() / "tls" / "key.pem", dir.path() / "tls" / "key.pem",
                fs::copy_options::overwrite_existing);
  EXPECT_EQ(activate_next_identity(dir.path()).error(), TlsError::bad_certificate);
  EXPECT_TRUE(fs::exists(dir.path() / "tls" / "next-cert.pem"));
}

TEST(TlsIdentity, CertificateIsSelfSignedV3WithLoopbackNamesForTenYears) {
  TempDir dir;
  auto id = load_or_create_identity(dir.path(), "sotto-test");
  ASSERT_TRUE(id);
  BIO* bio =
      BIO_new_mem_buf(id->certificate_pem.data(), static_cast<int>(id->certificate_pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(cert, nullptr);

  EXPECT_EQ(X509_get_version(cert), X509_VERSION_3);
  char cn[128] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  EXPECT_STREQ(cn, "sotto-test");
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);
  EVP_PKEY* pub = X509_get0_pubkey(cert);
  EXPECT_EQ(X509_verify(cert, pub), 1);  // self-signed

  bool has_ip = false;
  bool has_dns = false;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  ASSERT_NE(names, nullptr);
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type == GEN_IPADD) {
      const unsigned char loopback[4] = {127, 0, 0, 1};
      has_ip = ASN1_STRING_length(n->d.iPAddress) == 4 &&
               std::equal(loopback, loopback + 4, ASN1_STRING_get0_data(n->d.iPAddress));
    }
    if (n->type == GEN_DNS) {
      has_dns =
          std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.dNSName)),
                      static_cast<std::size_t>(ASN1_STRING_length(n->d.dNSName))) == "localhost";
    }
  }
  GENERAL_NAMES_free(names);
  EXPECT_TRUE(has_ip);
  EXPECT_TRUE(has_dns);

  int days = 0;
  int secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert)), 1);
  EXPECT_GE(days, 3640);
  X509_free(cert);
}

TEST(TlsIdentity, RejectsBadInput) {
  EXPECT_EQ(fingerprint_of_pem("not a certificate").error(), TlsError::bad_certificate);

  TempDir a;
  TempDir b;
  auto id_a = load_or_create_identity(a.path());
  auto id_b = load_or_create_identity(b.path());
  ASSERT_TRUE(id_a && id_b);
  EXPECT_NE(id_a->fingerprint, id_b->fingerprint);
  // Certificate of one, key of the other.
  auto mixed = load_identity(a.path() / "tls" / "cert.pem", b.path() / "tls" / "key.pem");
  ASSERT_FALSE(mixed);
  EXPECT_EQ(mixed.error(), TlsError::bad_certificate);

  auto missing = load_identity(a.path() / "nope.pem", a.path() / "tls" / "key.pem");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), TlsError::io);

  // A pinned certificate whose key vanished is an error, never silently replaced.
  fs::remove(a.path() / "tls" / "key.pem");
  auto again = load_or_create_identity(a.path());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), TlsError::io);

  TempDir c;
  EXPECT_EQ(load_or_create_identity(c.path(), "").error(), TlsError::generation_failed);
}

// --- WebSocket server and client
// ------------------------------------------------------------------

TEST_P(NetTestBothPaths, EchoesFrames) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  Recorder rec;
  WsClient client(client_options(server.port()), rec.frame_fn(), rec.close_fn());
  auto r = client.connect();
  ASSERT_TRUE(r) << to_string(r.error());
  EXPECT_TRUE(client.is_open());
  EXPECT_EQ(client.observed_fingerprint(), identity_.key_fingerprint);
  EXPECT_TRUE(eventually([&] { return handler.opened == 1; }));
  EXPECT_EQ(server.connection_count(), 1u);

  ASSERT_TRUE(client.send(bytes_of("hello")));
  ASSERT_TRUE(client.send(Bytes{}));
  ASSERT_TRUE(rec.wait_frames(2));
  EXPECT_EQ(rec.frames()[0], bytes_of("hello"));
  EXPECT_TRUE(rec.frames()[1].empty());

  auto conn = handler.first_live();
  ASSERT_NE(conn, nullptr);
  EXPECT_EQ(conn->remote_address(), "127.0.0.1");

  client.close();
  EXPECT_FALSE(client.is_open());
  EXPECT_TRUE(rec.wait_closed());
  EXPECT_EQ(rec.close_calls(), 1);
  EXPECT_FALSE(client.send(bytes_of("late")));
  EXPECT_TRUE(eventually([&] { return handler.closed == 1; }));
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 0; }));
}

TEST_P(NetTestBothPaths, ManyFramesBothWaysArriveIntactAndInOrder) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  Recorder rec;
  WsClient client(client_options(server.port()), rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(client.connect());

  std::mt19937 rng(7);
  std::uniform_int_distribution<std::size_t> size(0, 70000);
  constexpr int kFrames = 400;
  std::vector<Bytes> sent;
  for (int i = 0; i < kFrames; ++i) {
    std::size_t n = (i % 10 == 0) ? size(rng) : size(rng) % 600;  // mostly small, some large
    if (i == 1) n = 16384;                                        // exactly one record
    if (i == 2) n = 16384 - 2;  // header + payload fill one record exactly
    sent.push_back(pattern(n, static_cast<std::uint32_t>(i)));
    ASSERT_TRUE(client.send(sent.back()));
  }
  ASSERT_TRUE(rec.wait_frames(kFrames, 60s));
  const auto got = rec.frames();
  ASSERT_EQ(got.size(), sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) EXPECT_EQ(got[i], sent[i]) << "frame " << i;
  EXPECT_EQ(handler.frames, kFrames);
}

// Frames queued behind a write in flight leave as batches (net/batch.h): fewer WebSocket messages
// than frames, every frame intact and in order once split.
TEST_P(NetTestBothPaths, ServerBatchesFramesQueuedBehindAWrite) {
  constexpr int kFrames = 300;
  TestHandler handler;
  handler.set_frame_fn([](const ConnectionPtr& c, ByteView) {
    for (int i = 0; i < kFrames; ++i) c->send(pattern(40 + i % 50, static_cast<std::uint32_t>(i)));
  });
  WsServer server(identity_, server_options(), handler);
  server.start();
  RawTlsClient raw;
  ASSERT_TRUE(raw.connect(server.port()));
  ASSERT_TRUE(raw.upgrade());
  ASSERT_TRUE(raw.send_frame(0x2, "go"));
  std::vector<Bytes> got;
  int messages = 0;
  while (got.size() < static_cast<std::size_t>(kFrames)) {
    std::uint8_t opcode = 0;
    std::string payload;
    ASSERT_TRUE(raw.read_frame(opcode, payload)) << "after " << got.size() << " frames";
    ASSERT_EQ(opcode, 0x2);
    ++messages;
    const ByteView message(reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size());
    std::vector<ByteView> frames;
    if (split_batch(message, frames)) {
      for (auto f : frames) got.emplace_back(f.begin(), f.end());
    } else {
      got.emplace_back(message.begin(), message.end());
    }
  }
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i)
    EXPECT_EQ(got[i], pattern(40 + i % 50, static_cast<std::uint32_t>(i))) << "frame " << i;
  EXPECT_LT(messages, kFrames / 4);  // all were queued at once: most share a message
}

// A batch from the peer reaches the handler as its frames, in order; a malformed one as it came.
TEST_P(NetTestBothPaths, ServerSplitsABatchFromThePeerAndPassesAMalformedOneWhole) {
  TestHandler handler;
  std::mutex mu;
  std::vector<Bytes> seen;
  handler.set_frame_fn([&](const ConnectionPtr&, ByteView f) {
    std::lock_guard lock(mu);
    seen.emplace_back(f.begin(), f.end());
  });
  WsServer server(identity_, server_options(), handler);
  server.start();
  RawTlsClient raw;
  ASSERT_TRUE(raw.connect(server.port()));
  ASSERT_TRUE(raw.upgrade());
  const std::vector<Bytes> frames = {bytes_of("one"), bytes_of("two"), bytes_of("three")};
  Bytes batch;
  encode_batch(frames, batch);
  ASSERT_TRUE(raw.send_frame(0x2, std::string(batch.begin(), batch.end())));
  const Bytes malformed = {0x22, 0x05, 0x0a, 0x01, 0x08};
  ASSERT_TRUE(raw.send_frame(0x2, std::string(malformed.begin(), malformed.end())));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return seen.size() == 4;
  }));
  std::lock_guard lock(mu);
  EXPECT_EQ(seen[0], frames[0]);
  EXPECT_EQ(seen[1], frames[1]);
  EXPECT_EQ(seen[2], frames[2]);
  EXPECT_EQ(seen[3], malformed);
}

// TLS session resumption (TlsSessionSlot): the second connection resumes, the pin still holds,
// and a server that cannot resume (restarted, or another server) gets a full handshake.
TEST_P(NetTestBothPaths, ASecondConnectionResumesTheTlsSessionAndThePinStillHolds) {
  TestHandler handler;
  auto slot = std::make_shared<TlsSessionSlot>();
  auto connect_echo = [&](std::uint16_t port, std::shared_ptr<TlsSessionSlot> s,
                          const std::string& pin,
                          bool& resumed) -> tl::expected<void, ClientError> {
    ClientOptions o = client_options(port);
    o.fingerprint = pin;
    o.session = std::move(s);
    Recorder rec;
    WsClient client(o, rec.frame_fn(), rec.close_fn());
    auto r = client.connect();
    if (!r) return r;
    resumed = client.resumed();
    // The ticket comes after the handshake: an echo makes sure it has been read.
    EXPECT_TRUE(client.send(bytes_of("ping")));
    EXPECT_TRUE(rec.wait_frames(1));
    EXPECT_EQ(client.observed_fingerprint(), identity_.key_fingerprint);
    client.close();
    return {};
  };
  bool resumed = true;
  {
    WsServer server(identity_, server_options(), handler);
    server.start();
    ASSERT_TRUE(connect_echo(server.port(), slot, identity_.key_fingerprint, resumed));
    EXPECT_FALSE(resumed);
    EXPECT_TRUE(slot->holds_session());
    ASSERT_TRUE(connect_echo(server.port(), slot, identity_.key_fingerprint, resumed));
    EXPECT_TRUE(resumed);

    // Trust on first use pins nothing, so it keeps no session either.
    auto tofu = std::make_shared<TlsSessionSlot>();
    ASSERT_TRUE(connect_echo(server.port(), tofu, "", resumed));
    EXPECT_FALSE(tofu->holds_session());
  }
  {
    // Same certificate, new process state: the ticket is not understood, a full handshake runs.
    WsServer restarted(identity_, server_options(), handler);
    restarted.start();
    ASSERT_TRUE(connect_echo(restarted.port(), slot, identity_.key_fingerprint, resumed));
    EXPECT_FALSE(resumed);
  }
  {
    // Another server, with its own certificate: the session is of no use and the pin refuses it.
    TempDir other_dir;
    auto other = load_or_create_identity(other_dir.path());
    ASSERT_TRUE(other);
    WsServer impostor(*other, server_options(), handler);
    impostor.start();
    ASSERT_TRUE(slot->holds_session());
    auto r = connect_echo(impostor.port(), slot, identity_.key_fingerprint, resumed);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), ClientError::fingerprint_mismatch);
    EXPECT_FALSE(slot->holds_session());
  }
}

TEST_P(NetTestBothPaths, ServerPushesToClientWithoutARequest) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  Recorder rec;
  WsClient client(client_options(server.port()), rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(client.connect());
  ASSERT_TRUE(eventually([&] { return handler.first_live() != nullptr; }));
  auto conn = handler.first_live();
  // From a thread that is not the connection's (as the store's commit thread would).
  std::thread pusher([&] {
    for (int i = 0; i < 50; ++i)
      EXPECT_TRUE(conn->send(pattern(1000, static_cast<std::uint32_t>(i))));
  });
  pusher.join();
  ASSERT_TRUE(rec.wait_frames(50));
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(rec.frames()[static_cast<std::size_t>(i)],
              pattern(1000, static_cast<std::uint32_t>(i)));
  EXPECT_TRUE(eventually([&] { return conn->outbound_bytes() == 0; }));
  conn.reset();
}

TEST_P(NetTestBothPaths, FingerprintMismatchIsRefused) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto opts = client_options(server.port());
  opts.fingerprint = std::string(64, '0');
  Recorder rec;
  WsClient client(opts, rec.frame_fn(), rec.close_fn());
  auto r = client.connect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::fingerprint_mismatch);
  EXPECT_EQ(client.observed_fingerprint(), identity_.key_fingerprint);
  EXPECT_FALSE(client.is_open());
  EXPECT_FALSE(client.send(bytes_of("x")));
  EXPECT_EQ(handler.opened, 0);
  EXPECT_EQ(rec.close_calls(), 0);
}

TEST_P(NetTestBothPaths, ALegacyCertificatePinStillMatchesAndTheClientLearnsTheKeyPin) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto opts = client_options(server.port());
  opts.fingerprint = identity_.fingerprint;  // what clients pinned before
  Recorder rec;
  WsClient client(opts, rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(client.connect());
  EXPECT_EQ(client.observed_fingerprint(), identity_.key_fingerprint);
  EXPECT_EQ(client.observed_certificate_fingerprint(), identity_.fingerprint);
  EXPECT_EQ(client.peer_public_key(), identity_.public_key);
  ASSERT_TRUE(client.send(bytes_of("legacy")));
  ASSERT_TRUE(rec.wait_frames(1));
}

TEST_P(NetTestBothPaths, ARenewedCertificateForThePinnedKeyIsTheSameServer) {
  write_text(dir_.path() / "renewed.pem", renewed_certificate(identity_));
  auto renewed = load_identity(dir_.path() / "renewed.pem", dir_.path() / "tls" / "key.pem");
  ASSERT_TRUE(renewed);
  TestHandler handler;
  WsServer server(*renewed, server_options(), handler);
  server.start();
  // Pinned by key: accepted. Pinned by the old certificate: that certificate is gone.
  WsClient by_key(client_options(server.port()), nullptr, nullptr);
  EXPECT_TRUE(by_key.connect());
  EXPECT_EQ(by_key.observed_certificate_fingerprint(), renewed->fingerprint);
  auto opts = client_options(server.port());
  opts.fingerprint = identity_.fingerprint;
  WsClient by_certificate(opts, nullptr, nullptr);
  auto r = by_certificate.connect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::fingerprint_mismatch);
}

TEST_P(NetTestBothPaths, AResumedSessionIsCheckedAgainstThePinAndALegacyPinResumesToo) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto slot = std::make_shared<TlsSessionSlot>();
  const auto connect = [&](const std::string& pin) -> tl::expected<bool, ClientError> {
    auto o = client_options(server.port());
    o.fingerprint = pin;
    o.session = slot;
    Recorder rec;
    WsClient client(o, rec.frame_fn(), rec.close_fn());
    auto r = client.connect();
    if (!r) return tl::unexpected(r.error());
    EXPECT_EQ(client.observed_fingerprint(), identity_.key_fingerprint);
    EXPECT_EQ(client.peer_public_key(), identity_.public_key);
    EXPECT_TRUE(client.send(bytes_of("ticket")));  // the ticket comes after the handshake
    EXPECT_TRUE(rec.wait_frames(1));
    return client.resumed();
  };
  EXPECT_EQ(connect(identity_.fingerprint).value(), false);
  EXPECT_EQ(connect(identity_.fingerprint).value(), true);  // legacy pin, resumed
  EXPECT_EQ(connect(identity_.key_fingerprint).value(), true);
  // The session would resume, but the pin names another key: refused, and the session dropped.
  TempDir other_dir;
  auto other = load_or_create_identity(other_dir.path());
  ASSERT_TRUE(other);
  ASSERT_TRUE(slot->holds_session());
  EXPECT_EQ(connect(other->key_fingerprint).error(), ClientError::fingerprint_mismatch);
  EXPECT_FALSE(slot->holds_session());
}

TEST_P(NetTestBothPaths, ANewIdentityServesNewConnectionsAndLeavesOpenOnesAlone) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto slot = std::make_shared<TlsSessionSlot>();
  auto old_opts = client_options(server.port());
  old_opts.session = slot;
  Recorder old_rec;
  WsClient before(old_opts, old_rec.frame_fn(), old_rec.close_fn());
  ASSERT_TRUE(before.connect());
  ASSERT_TRUE(before.send(bytes_of("before")));
  ASSERT_TRUE(old_rec.wait_frames(1));
  ASSERT_TRUE(slot->holds_session());

  TempDir next_dir;
  auto next = load_or_create_identity(next_dir.path());
  ASSERT_TRUE(next);
  server.set_identity(*next);

  // New connections present the new key, also to a client holding a ticket of the old one.
  auto new_opts = client_options(server.port());
  new_opts.fingerprint = next->key_fingerprint;
  WsClient after(new_opts, nullptr, nullptr);
  ASSERT_TRUE(after.connect());
  EXPECT_EQ(after.observed_fingerprint(), next->key_fingerprint);
  WsClient with_ticket(old_opts, nullptr, nullptr);
  auto r = with_ticket.connect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::fingerprint_mismatch);
  EXPECT_EQ(with_ticket.observed_fingerprint(), next->key_fingerprint);
  EXPECT_FALSE(with_ticket.resumed());

  // The connection made before keeps working.
  EXPECT_TRUE(before.is_open());
  ASSERT_TRUE(before.send(bytes_of("still here")));
  ASSERT_TRUE(old_rec.wait_frames(2));

  // An unusable identity is refused and changes nothing.
  TlsIdentity broken = *next;
  broken.private_key_pem = "not a key";
  EXPECT_THROW(server.set_identity(broken), std::runtime_error);
  WsClient again(new_opts, nullptr, nullptr);
  EXPECT_TRUE(again.connect());
}

TEST_P(NetTestBothPaths, PinAcceptsUpperCaseAndColons) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  std::string pin;
  for (std::size_t i = 0; i < identity_.key_fingerprint.size(); i += 2) {
    if (!pin.empty()) pin += ':';
    pin += identity_.key_fingerprint.substr(i, 2);
  }
  std::transform(pin.begin(), pin.end(), pin.begin(),
                 [](char c) { return static_cast<char>(std::toupper(c)); });
  auto opts = client_options(server.port());
  opts.fingerprint = pin;
  WsClient client(opts, nullptr, nullptr);
  EXPECT_TRUE(client.connect());
}

TEST_P(NetTestBothPaths, TrustOnFirstUseReportsTheServersFingerprint) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto opts = client_options(server.port());
  opts.fingerprint.clear();
  Recorder rec;
  WsClient client(opts, rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(client.connect());
  EXPECT_EQ(client.observed_fingerprint(), identity_.key_fingerprint);
  ASSERT_TRUE(client.send(bytes_of("tofu")));
  ASSERT_TRUE(rec.wait_frames(1));
}

TEST_F(NetTest, ConnectFailuresAreReported) {
  // Nothing listens on this port any more.
  std::uint16_t port = 0;
  {
    TestHandler handler;
    WsServer server(identity_, server_options(), handler);
    server.start();
    port = server.port();
  }
  WsClient refused(client_options(port), nullptr, nullptr);
  auto r = refused.connect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::connect_failed);

  auto opts = client_options(port);
  opts.host = "no-such-host.invalid";
  WsClient unresolvable(opts, nullptr, nullptr);
  auto u = unresolvable.connect();
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error(), ClientError::resolve_failed);
}

TEST_F(NetTest, ClientBindsTheSourceAddress) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto opts = client_options(server.port());
  opts.source_address = "127.0.0.2";
  WsClient client(opts, nullptr, nullptr);
  ASSERT_TRUE(client.connect());
  ASSERT_TRUE(eventually([&] { return handler.first_live() != nullptr; }));
  EXPECT_EQ(handler.first_live()->remote_address(), "127.0.0.2");
}

TEST_P(NetTestBothPaths, OversizedFrameClosesTheConnection) {
  TestHandler handler;
  auto so = server_options();
  so.max_frame_bytes = 1024;
  WsServer server(identity_, so, handler);
  server.start();
  Recorder rec;
  WsClient client(client_options(server.port()), rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(client.connect());
  ASSERT_TRUE(client.send(pattern(1024, 1)));  // at the limit: fine
  ASSERT_TRUE(rec.wait_frames(1));
  ASSERT_TRUE(client.send(pattern(1025, 2)));
  ASSERT_TRUE(rec.wait_closed());
  EXPECT_EQ(rec.reason(), "message too big");
  EXPECT_EQ(rec.frames().size(), 1u);
  EXPECT_TRUE(eventually([&] { return handler.closed == 1; }));
  EXPECT_EQ(handler.frames, 1);
}

TEST_P(NetTestBothPaths, TextFramesAreRefusedWithUnsupportedData) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  RawTlsClient raw;
  ASSERT_TRUE(raw.connect(server.port()));
  ASSERT_TRUE(raw.upgrade());
  ASSERT_TRUE(raw.send_frame(0x1, "text is not a Frame"));
  std::uint8_t opcode = 0;
  std::string payload;
  ASSERT_TRUE(raw.read_frame(opcode, payload));
  EXPECT_EQ(opcode, 0x8);  // close
  ASSERT_GE(payload.size(), 2u);
  EXPECT_EQ((static_cast<unsigned char>(payload[0]) << 8) | static_cast<unsigned char>(payload[1]),
            1003);  // RFC 6455 section 7.4.1: unsupported data
  EXPECT_EQ(payload.substr(2), "binary frames only");
  ASSERT_TRUE(raw.send_frame(0x8, payload.substr(0, 2)));  // answer the close
  EXPECT_TRUE(raw.closed_by_peer(5s));
  EXPECT_TRUE(eventually([&] { return handler.closed == 1; }, 5s));
  EXPECT_EQ(handler.frames, 0);
}

// Held output (TlsStream::hold_output) is the record handover's: with OpenSSL's records each
// record leaves as it is made, so this one runs on the handover path only.
TEST_F(NetTest, ALoginUpgradesAnswerLeavesInOneSegmentAndSoDoesTheCloseReply) {
  TestHandler handler;
  handler.set_open_fn([](const ConnectionPtr& c, std::string_view authorization) {
    if (!authorization.empty()) c->send(bytes_of(authorization));  // as a login result would
  });
  WsServer server(identity_, server_options(), handler);
  server.start();
  RawTlsClient raw;
  ASSERT_TRUE(raw.connect(server.port()));
  std::this_thread::sleep_for(100ms);  // the server waits for the request (its ticket left then)
  const auto before = test_support::tcp_segments(raw.fd());
  ASSERT_TRUE(before);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(raw.upgrade("Authorization: SottoDevice proof\r\n"));
  std::uint8_t opcode = 0;
  std::string payload;
  ASSERT_TRUE(raw.read_frame(opcode, payload));
  auto slowest = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(opcode, 0x2);
  EXPECT_EQ(payload, "SottoDevice proof");
  // The 101 waited for the frame on_open() queued: one segment for both.
  EXPECT_EQ(test_support::tcp_segments(raw.fd())->data_in - before->data_in, 1u);

  const auto mid = test_support::tcp_segments(raw.fd());
  t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(raw.send_frame(0x8, std::string("\x03\xe8", 2)));
  ASSERT_TRUE(raw.read_frame(opcode, payload));
  slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
  EXPECT_EQ(opcode, 0x8);
  EXPECT_TRUE(raw.closed_by_peer(5s));
  // The close frame and the close_notify behind it, together, and the FIN with them.
  const auto end = test_support::tcp_segments(raw.fd());
  EXPECT_EQ(end->data_in - mid->data_in, 1u);
  // The ACK of the client's close frame rode in that segment too, if the server answered each
  // request within the delayed-ACK time (40 ms, less a timer tick): a later answer lets an ACK
  // go alone, and the kernel acknowledges at once for a while after that.
  if (slowest < 30ms) {
    EXPECT_EQ(end->all_in - mid->all_in, 1u);
  } else {
    EXPECT_LE(end->all_in - mid->all_in, 2u);
  }
  EXPECT_TRUE(eventually([&] { return handler.closed == 1; }, 5s));
}

// The server's listener delays ACKs (net::detail::delay_acks, after listen()), so the
// ClientHello is acknowledged by the server's first flight, not by a segment of its own.
TEST_P(NetTestBothPaths, TheServersFirstFlightAcknowledgesTheClientHello) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  RawTlsClient raw;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(raw.connect(server.port()));
  const auto seen = test_support::tcp_segments(raw.fd());
  ASSERT_TRUE(seen);
  // A delayed ACK goes alone after 40 ms (Linux's TCP_DELACK_MIN, less a timer tick): later
  // than that, the ACK of the client's Finished may have come too, and the count says nothing.
  if (std::chrono::steady_clock::now() - start >= 30ms) {
    GTEST_SKIP() << "the handshake took 30 ms or more: a delayed ACK may have gone alone";
  }
  // Besides the data (the flight, and the ticket if the server already waits for the upgrade
  // request), only the SYN-ACK: no bare ACK.
  EXPECT_EQ(seen->all_in - seen->data_in, 1u);
}

// A client delays the ACK of the server's SYN-ACK until its ClientHello, which carries it.
TEST_F(NetTest, TheClientHelloCarriesTheAckOfTheSynAck) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  auto opts = client_options(ntohs(addr.sin_port));
  opts.connect_timeout = 2s;
  WsClient client(opts, nullptr, nullptr);
  auto connected = std::async(std::launch::async, [&] { return client.connect(); });
  pollfd incoming{listener, POLLIN, 0};
  ASSERT_EQ(::poll(&incoming, 1, 5000), 1);
  const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(fd, 0);
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  const auto seen = test_support::tcp_segments(fd);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->all_in, 2u);  // the SYN, then the ClientHello: no bare ACK between them
  EXPECT_EQ(seen->data_in, 1u);
  ::close(fd);
  ::close(listener);
  EXPECT_FALSE(connected.get());  // nobody answered it
}

TEST_P(NetTestBothPaths, ARefusedUpgradeCarryingALoginStillGetsItsAnswer) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  RawTlsClient raw;
  ASSERT_TRUE(raw.connect(server.port()));
  // No Sec-WebSocket-Key: Beast refuses; the answer was held for a login result that never comes.
  const std::string head = raw.exchange(
      "GET /v1/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Authorization: SottoDevice proof\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 400", 0), 0u) << head;
  EXPECT_TRUE(raw.closed_by_peer(5s));
  EXPECT_EQ(handler.opened, 0);
}

TEST_P(NetTestBothPaths, HandlerCloseSendsItsReasonAfterQueuedFrames) {
  TestHandler handler;
  handler.set_frame_fn([](const ConnectionPtr& c, ByteView) {
    c->send(bytes_of("last words"));
    c->close("bye now");
    EXPECT_FALSE(c->send(bytes_of("too late")));
  });
  WsServer server(identity_, server_options(), handler);
  server.start();
  Recorder rec;
  WsClient client(client_options(server.port()), rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(client.connect());
  ASSERT_TRUE(client.send(bytes_of("hi")));
  ASSERT_TRUE(rec.wait_closed());
  EXPECT_EQ(rec.reason(), "bye now");
  ASSERT_EQ(rec.frames().size(), 1u);
  EXPECT_EQ(rec.frames()[0], bytes_of("last words"));
}

TEST_P(NetTestBothPaths, SlowReaderIsClosedInsteadOfBuffering) {
  TestHandler handler;
  auto so = server_options();
  so.max_outbound_bytes = 1 << 20;
  WsServer server(identity_, so, handler);
  server.start();

  RawTlsClient raw;
  ASSERT_TRUE(raw.connect(server.port(), 4096));
  ASSERT_TRUE(raw.upgrade());
  ASSERT_TRUE(eventually([&] { return handler.first_live() != nullptr; }));
  auto conn = handler.first_live();

  // The client never reads: once the kernel's buffers are full, the queue grows to the limit.
  const Bytes chunk = pattern(64 * 1024, 3);
  std::size_t sent = 0;
  bool refused = false;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!conn->send(chunk)) {
      refused = true;
      break;
    }
    sent += chunk.size();
    if (conn->outbound_bytes() > (1u << 20) - chunk.size()) std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(refused) << "sent " << sent << " bytes without hitting the limit";
  EXPECT_LE(conn->outbound_bytes(), so.max_outbound_bytes);
  EXPECT_FALSE(conn->send(bytes_of("x")));
  EXPECT_TRUE(eventually([&] { return handler.closed == 1; }, 10s));
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 0; }));
  EXPECT_TRUE(raw.closed_by_peer(10s));
  conn.reset();
}

TEST_P(NetTestBothPaths, SilentPeerIsClosedAfterIdleTimeoutButAPingingClientStays) {
  TestHandler handler;
  auto so = server_options();
  so.idle_timeout = 1s;
  so.ping_interval = 1s;
  WsServer server(identity_, so, handler);
  server.start();

  Recorder rec;
  WsClient healthy(client_options(server.port()), rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(healthy.connect());

  RawTlsClient silent;  // never reads, so never answers the server's ping
  ASSERT_TRUE(silent.connect(server.port()));
  ASSERT_TRUE(silent.upgrade());
  ASSERT_TRUE(eventually([&] { return handler.opened == 2; }));

  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return handler.closed == 1; }, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_TRUE(silent.closed_by_peer(5s));

  // The WsClient answers pings by itself: still open well past the idle timeout.
  std::this_thread::sleep_for(2500ms);
  EXPECT_TRUE(healthy.is_open());
  EXPECT_EQ(handler.closed, 1);
  ASSERT_TRUE(healthy.send(bytes_of("still here")));
  ASSERT_TRUE(rec.wait_frames(1));
}

TEST_P(NetTestBothPaths, HandshakeTimeoutClosesAPeerThatNeverSpeaksTls) {
  TestHandler handler;
  auto so = server_options();
  so.handshake_timeout = 1s;
  WsServer server(identity_, so, handler);
  server.start();
  const int fd = connect_tcp(server.port());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 1; }));
  EXPECT_TRUE(tcp_closed_by_peer(fd, 5s));
  ::close(fd);
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 0; }));
  EXPECT_EQ(handler.opened, 0);
  EXPECT_EQ(handler.closed, 0);  // on_close only follows on_open
}

TEST_P(NetTestBothPaths, ConnectionsBeyondTheLimitAreRefused) {
  TestHandler handler;
  auto so = server_options();
  so.max_connections = 2;
  WsServer server(identity_, so, handler);
  server.start();
  auto a = std::make_unique<WsClient>(client_options(server.port()), nullptr, nullptr);
  WsClient b(client_options(server.port()), nullptr, nullptr);
  ASSERT_TRUE(a->connect());
  ASSERT_TRUE(b.connect());
  WsClient c(client_options(server.port()), nullptr, nullptr);
  EXPECT_FALSE(c.connect());
  a.reset();
  ASSERT_TRUE(eventually([&] { return server.connection_count() == 1; }));
  EXPECT_TRUE(c.connect());
}

TEST_P(NetTestBothPaths, GracefulStopFlushesQueuedFramesThenClosesWithTheReason) {
  TestHandler handler;
  std::promise<void> queued;
  constexpr int kBurst = 50;
  handler.set_frame_fn([&](const ConnectionPtr& c, ByteView) {
    for (int i = 0; i < kBurst; ++i) c->send(pattern(20000, static_cast<std::uint32_t>(i)));
    queued.set_value();
  });
  WsServer server(identity_, server_options(), handler);
  server.start();

  Recorder burst_rec;
  Recorder idle_rec;
  WsClient burst(client_options(server.port()), burst_rec.frame_fn(), burst_rec.close_fn());
  WsClient idle(client_options(server.port()), idle_rec.frame_fn(), idle_rec.close_fn());
  ASSERT_TRUE(burst.connect());
  ASSERT_TRUE(idle.connect());
  ASSERT_TRUE(burst.send(bytes_of("burst please")));
  queued.get_future().wait();

  server.stop(std::chrono::milliseconds(5000));
  EXPECT_EQ(server.connection_count(), 0u);
  EXPECT_EQ(handler.closed, 2);

  ASSERT_TRUE(burst_rec.wait_closed());
  EXPECT_EQ(burst_rec.reason(), "server shutting down");
  const auto got = burst_rec.frames();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kBurst));
  for (int i = 0; i < kBurst; ++i) {
    EXPECT_EQ(got[static_cast<std::size_t>(i)], pattern(20000, static_cast<std::uint32_t>(i)));
  }
  ASSERT_TRUE(idle_rec.wait_closed());
  EXPECT_EQ(idle_rec.reason(), "server shutting down");
  EXPECT_FALSE(idle.is_open());
}

TEST_P(NetTestBothPaths, TwoHundredClientsOnATwoThreadPoolAllEcho) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto pool = std::make_shared<IoPool>(2);

  constexpr int kClients = 200;
  constexpr int kFramesEach = 5;
  std::vector<std::unique_ptr<Recorder>> recs;
  std::vector<std::unique_ptr<WsClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    recs.push_back(std::make_unique<Recorder>());
    clients.push_back(std::make_unique<WsClient>(
        client_options(server.port()), recs.back()->frame_fn(), recs.back()->close_fn(), pool));
  }
  // Connect from four threads at once.
  std::atomic<int> failures{0};
  std::vector<std::thread> connectors;
  for (int t = 0; t < 4; ++t) {
    connectors.emplace_back([&, t] {
      for (int i = t; i < kClients; i += 4) {
        if (!clients[static_cast<std::size_t>(i)]->connect()) ++failures;
      }
    });
  }
  for (auto& t : connectors) t.join();
  ASSERT_EQ(failures, 0);
  EXPECT_TRUE(eventually([&] { return server.connection_count() == kClients; }));

  for (int f = 0; f < kFramesEach; ++f) {
    for (int i = 0; i < kClients; ++i) {
      ASSERT_TRUE(clients[static_cast<std::size_t>(i)]->send(pattern(
          100 + static_cast<std::size_t>(f) * 37, static_cast<std::uint32_t>(i * 100 + f))));
    }
  }
  for (int i = 0; i < kClients; ++i) {
    auto& rec = *recs[static_cast<std::size_t>(i)];
    ASSERT_TRUE(rec.wait_frames(kFramesEach)) << "client " << i;
    const auto got = rec.frames();
    for (int f = 0; f < kFramesEach; ++f) {
      EXPECT_EQ(got[static_cast<std::size_t>(f)], pattern(100 + static_cast<std::size_t>(f) * 37,
                                                          static_cast<std::uint32_t>(i * 100 + f)));
    }
  }
  clients.clear();
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 0; }));
}

// async_connect: one thread starts many attempts without blocking; each completes once, on the
// pool, with the fingerprint observed; a wrong pin fails there too.
TEST_P(NetTestBothPaths, AsyncConnectCompletesOnThePoolAndPinsTheCertificate) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  auto pool = std::make_shared<IoPool>(2);

  constexpr int kClients = 50;
  std::vector<std::unique_ptr<Recorder>> recs;
  std::vector<std::unique_ptr<WsClient>> clients;
  std::atomic<int> ok{0}, failed{0}, completions{0};
  for (int i = 0; i < kClients; ++i) {
    recs.push_back(std::make_unique<Recorder>());
    clients.push_back(std::make_unique<WsClient>(
        client_options(server.port()), recs.back()->frame_fn(), recs.back()->close_fn(), pool));
  }
  for (auto& c : clients) {
    c->async_connect([&](tl::expected<void, ClientError> r) {
      ++(r ? ok : failed);
      ++completions;
    });
  }
  ASSERT_TRUE(eventually([&] { return completions.load() == kClients; }));
  EXPECT_EQ(ok, kClients);
  EXPECT_EQ(failed, 0);
  for (int i = 0; i < kClients; ++i) {
    auto& c = *clients[static_cast<std::size_t>(i)];
    EXPECT_EQ(c.observed_fingerprint(), identity_.key_fingerprint);
    ASSERT_TRUE(c.send(pattern(64, static_cast<std::uint32_t>(i))));
  }
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(recs[static_cast<std::size_t>(i)]->wait_frames(1)) << "client " << i;
  }
  EXPECT_THROW(clients[0]->async_connect(nullptr), std::logic_error);

  ClientOptions wrong = client_options(server.port());
  wrong.fingerprint = std::string(64, '0');
  std::promise<tl::expected<void, ClientError>> result;
  WsClient pinned(
      wrong, [](ByteView) {}, [](const std::string&) {}, pool);
  pinned.async_connect([&](tl::expected<void, ClientError> r) { result.set_value(r); });
  auto f = result.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  const auto r = f.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::fingerprint_mismatch);

  clients.clear();
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 0; }));
}

TEST_P(NetTestBothPaths, ClientCanBeDestroyedFromItsOwnCallback) {
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  server.start();
  std::promise<void> done;
  std::unique_ptr<WsClient> client;
  client = std::make_unique<WsClient>(
      client_options(server.port()), [&](ByteView) {}, [&](const std::string&) {});
  ASSERT_TRUE(client->connect());
  auto pool = std::make_shared<IoPool>(1);
  Recorder rec;
  std::unique_ptr<WsClient> self_destroying;
  self_destroying = std::make_unique<WsClient>(
      client_options(server.port()),
      [&](ByteView) {
        self_destroying.reset();  // runs on the pool's thread, inside the callback
        done.set_value();
      },
      nullptr, pool);
  ASSERT_TRUE(self_destroying->connect());
  ASSERT_TRUE(self_destroying->send(bytes_of("x")));
  EXPECT_EQ(done.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(eventually([&] { return server.connection_count() == 1; }));
}

// --- Operator HTTP ------------------------------------------------------------------------------

std::string http_exchange(std::uint16_t port, const std::string& request) {
  const int fd = connect_tcp(port);
  if (fd < 0) return {};
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

TEST_F(NetTest, TheServerSaysWhichRecordPathItUses) {
  TestHandler handler;
  {
    WsServer server(identity_, server_options(), handler);
    EXPECT_TRUE(server.record_handover().in_use) << server.record_handover().reason;
    EXPECT_NE(server.record_handover().reason.find("self-check passed"), std::string::npos);
  }
  auto off = server_options();
  off.tls_record_handover = false;
  WsServer server(identity_, off, handler);
  EXPECT_FALSE(server.record_handover().in_use);
  EXPECT_NE(server.record_handover().reason.find("turned off"), std::string::npos);
}

// The handover's self-check fails (a miscounted write sequence, injected): the server falls back
// to OpenSSL's records, says why, and serves as well.
TEST_F(NetTest, AServerWhoseHandoverFailsItsSelfCheckFallsBackAndStillServes) {
  struct ResetOffset {
    ~ResetOffset() { handover::testing::set_write_sequence_offset(0); }
  } reset;
  handover::testing::set_write_sequence_offset(1);
  TestHandler handler;
  WsServer server(identity_, server_options(), handler);
  handover::testing::set_write_sequence_offset(0);
  EXPECT_FALSE(server.record_handover().in_use);
  EXPECT_NE(server.record_handover().reason.find("self-check failed"), std::string::npos)
      << server.record_handover().reason;
  server.start();
  Recorder rec;
  WsClient client(client_options(server.port()), rec.frame_fn(), rec.close_fn());
  ASSERT_TRUE(client.connect());
  ASSERT_TRUE(client.send(bytes_of("still served")));
  ASSERT_TRUE(rec.wait_frames(1));
  EXPECT_EQ(rec.frames()[0], bytes_of("still served"));
  client.close();
}

INSTANTIATE_TEST_SUITE_P(RecordPaths, NetTestBothPaths, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return std::string(p.param ? "Handover" : "OpenSslRecords");
                         });

TEST(HttpServer, ServesHealthzAndMetricsOnLoopback) {
  HttpOptions o;
  o.port = 0;
  HttpServer http(o, [](std::string_view path) {
    if (path == "/healthz") return HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
    if (path == "/metrics") {
      return HttpResponse{200, "text/plain; version=0.0.4", "sotto_connections 0\n"};
    }
    return HttpResponse{404, "text/plain; charset=utf-8", "not found\n"};
  });
  http.start();
  ASSERT_NE(http.port(), 0);

  const std::string ok = http_exchange(
      http.port(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
  EXPECT_NE(ok.find("\r\n\r\nok\n"), std::string::npos) << ok;

  const std::string query = http_exchange(
      http.port(), "GET /metrics?x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(query.rfind("HTTP/1.1 200", 0), 0u) << query;
  EXPECT_NE(query.find("sotto_connections 0"), std::string::npos);
  EXPECT_NE(query.find("version=0.0.4"), std::string::npos);

  const std::string missing = http_exchange(
      http.port(), "GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(missing.rfind("HTTP/1.1 404", 0), 0u) << missing;

  const std::string post =
      http_exchange(http.port(),
                    "POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: "
                    "close\r\n\r\n");
  EXPECT_EQ(post.rfind("HTTP/1.1 405", 0), 0u) << post;

  // Two requests on one keep-alive connection.
  const std::string two =
      http_exchange(http.port(),
                    "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_NE(two.find("HTTP/1.1 200", 1), std::string::npos) << two;

  http.stop();
  EXPECT_EQ(connect_tcp(http.port()), -1);
}

}  // namespace
}  // namespace sotto::net
