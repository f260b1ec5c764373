// The load tool's switch to OpenSSL's built-in X25519 and EC key methods
// (apps/sotto-load/key_methods.h). After it, the server certificate's key and X25519 keys have no
// provider behind them, and what they compute is unchanged: the certificate's key verifies a
// signature of the server's key and refuses a changed message or signature, X25519 agrees with
// libsodium, and a TLS 1.3 handshake (X25519, the server's P-256 certificate) completes with the
// client's copy of the certificate decoded by the built-in method. tests/e2e/load_smoke.py runs
// the tool's real handshakes against a server process with it.
//
// One test in its own executable: the switch is process-wide and cannot be undone.
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "crypto/rng.h"
#include "crypto/x25519.h"
#include "key_methods.h"
#include "net/tls.h"
#include "net/tls_internal.h"

namespace {

namespace fs = std::filesystem;
using sotto::load::use_builtin_key_methods;

struct Free {
  void operator()(X509* p) const noexcept { X509_free(p); }
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
  void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
  void operator()(BIO* p) const noexcept { BIO_free(p); }
  void operator()(SSL_CTX* p) const noexcept { SSL_CTX_free(p); }
  void operator()(SSL* p) const noexcept { SSL_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

Ptr<X509> parse_certificate(const std::string& pem) {
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Ptr<X509>(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
}

std::string sign(EVP_PKEY* key, const std::string& message) {
  Ptr<EVP_MD_CTX> md(EVP_MD_CTX_new());
  std::size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(message.data());
  if (!md || EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, key) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len, in, message.size()) != 1) {
    return {};
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                     message.size()) != 1) {
    return {};
  }
  sig.resize(len);
  return sig;
}

int verify(EVP_PKEY* key, const std::string& message, const std::string& sig) {
  Ptr<EVP_MD_CTX> md(EVP_MD_CTX_new());
  if (!md || EVP_DigestVerifyInit(md.get(), nullptr, EVP_sha256(), nullptr, key) != 1) return -1;
  return EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size());
}

// A TLS 1.3 server for one handshake on `fd`, in a child process forked before the switch: it
// runs as the server process does (which never makes it). The child exits 0 when its handshake
// completed.
pid_t serve_one_handshake(X509* cert, EVP_PKEY* key, int fd, int client_fd) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::close(client_fd);  // the client's close is then the end of the stream
  (void)::signal(SIGPIPE, SIG_IGN);
  // No session ticket: nothing to write after the client's Finished, which the client does not
  // wait for before it closes.
  Ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()));
  bool ok = ctx && SSL_CTX_set_num_tickets(ctx.get(), 0) == 1 &&
            SSL_CTX_use_certificate(ctx.get(), cert) == 1 &&
            SSL_CTX_use_PrivateKey(ctx.get(), key) == 1;
  Ptr<SSL> ssl(ok ? SSL_new(ctx.get()) : nullptr);
  ok = ssl && SSL_set_fd(ssl.get(), fd) == 1 && SSL_accept(ssl.get()) == 1;
  if (ok) {
    char byte = 0;  // until the client's close_notify
    (void)SSL_read(ssl.get(), &byte, 1);
  }
  ::_exit(ok ? 0 : 1);
}

// The client end of a full TLS 1.3 handshake over `fd`: X25519 only, and no check but the
// server's signature (the tool then checks the pin).
Ptr<SSL> connect_tls(int fd) {
  Ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set1_groups_list(ctx.get(), "X25519") != 1) {
    return nullptr;
  }
  Ptr<SSL> ssl(SSL_new(ctx.get()));
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1 || SSL_connect(ssl.get()) != 1) return nullptr;
  return ssl;
}

TEST(LoadKeyMethods, CertificateKeysAndKeySharesTakeTheBuiltInPathAndComputeTheSame) {
  const fs::path dir =
      fs::temp_directory_path() / ("sotto-key-methods-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  // Made first: after the switch, EC keys cannot be made by group name (key_methods.h).
  auto identity = sotto::net::load_or_create_identity(dir);
  fs::remove_all(dir);
  ASSERT_TRUE(identity);

  // Before the switch: OpenSSL 3's provider decoders give the certificate's key.
  Ptr<X509> before = parse_certificate(identity->certificate_pem);
  ASSERT_TRUE(before);
  ASSERT_NE(EVP_PKEY_get0_provider(X509_get0_pubkey(before.get())), nullptr);
  Ptr<BIO> key_bio(BIO_new_mem_buf(identity->private_key_pem.data(),
                                   static_cast<int>(identity->private_key_pem.size())));
  Ptr<EVP_PKEY> server_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ASSERT_TRUE(server_key);
  const std::string message = "TLS 1.3, server CertificateVerify";
  const std::string sig = sign(server_key.get(), message);
  ASSERT_FALSE(sig.empty());
  int fds[2] = {-1, -1};
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const pid_t server = serve_one_handshake(before.get(), server_key.get(), fds[1], fds[0]);
  ASSERT_GT(server, 0);
  ::close(fds[1]);

  ASSERT_TRUE(use_builtin_key_methods());
  ASSERT_TRUE(use_builtin_key_methods());  // idempotent

  // After it: the built-in (legacy) method decodes it, with no provider behind the key.
  Ptr<X509> after = parse_certificate(identity->certificate_pem);
  ASSERT_TRUE(after);
  EVP_PKEY* pub = X509_get0_pubkey(after.get());
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get0_provider(pub), nullptr);
  EXPECT_TRUE(EVP_PKEY_is_a(pub, "EC"));
  EXPECT_EQ(EVP_PKEY_get_bits(pub), 256);
  EXPECT_EQ(sotto::net::detail::fingerprint_of(after.get()), identity->fingerprint);
  EXPECT_EQ(verify(pub, message, sig), 1);
  EXPECT_EQ(verify(pub, message + ".", sig), 0);
  std::string bent = sig;
  bent[bent.size() / 2] = static_cast<char>(bent[bent.size() / 2] ^ 0x01);
  EXPECT_NE(verify(pub, message, bent), 1);

  // A key share made by name as libssl makes one, and the peer's share set on a copy of its
  // parameters: neither has a provider behind it, and the secret is libsodium's.
  Ptr<EVP_PKEY_CTX> gen(EVP_PKEY_CTX_new_from_name(nullptr, "X25519", nullptr));
  ASSERT_TRUE(gen);
  ASSERT_EQ(EVP_PKEY_keygen_init(gen.get()), 1);
  EVP_PKEY* raw = nullptr;
  ASSERT_EQ(EVP_PKEY_keygen(gen.get(), &raw), 1);
  Ptr<EVP_PKEY> ours(raw);
  EXPECT_EQ(EVP_PKEY_get0_provider(ours.get()), nullptr);
  std::array<std::uint8_t, 32> our_public{};
  std::size_t len = our_public.size();
  ASSERT_EQ(EVP_PKEY_get_raw_public_key(ours.get(), our_public.data(), &len), 1);
  ASSERT_EQ(len, our_public.size());

  const auto theirs = sotto::crypto::x25519_generate(sotto::crypto::system_rng());
  Ptr<EVP_PKEY> peer(EVP_PKEY_new());
  ASSERT_TRUE(peer);
  ASSERT_EQ(EVP_PKEY_copy_parameters(peer.get(), ours.get()), 1);
  ASSERT_EQ(EVP_PKEY_set1_encoded_public_key(peer.get(), theirs.public_key.data(),
                                             theirs.public_key.size()),
            1);
  Ptr<EVP_PKEY_CTX> derive(EVP_PKEY_CTX_new_from_pkey(nullptr, ours.get(), nullptr));
  ASSERT_TRUE(derive);
  ASSERT_EQ(EVP_PKEY_derive_init(derive.get()), 1);
  EXPECT_EQ(EVP_PKEY_get0_provider(peer.get()), nullptr);
  ASSERT_EQ(EVP_PKEY_derive_set_peer(derive.get(), peer.get()), 1);
  std::array<std::uint8_t, 32> shared{};
  len = shared.size();
  ASSERT_EQ(EVP_PKEY_derive(derive.get(), shared.data(), &len), 1);
  ASSERT_EQ(len, shared.size());
  auto expected = sotto::crypto::x25519_agree(theirs.private_key, our_public);
  ASSERT_TRUE(expected);
  EXPECT_TRUE(std::equal(shared.begin(), shared.end(), expected->view().begin()));

  // libssl's own use, against a server that runs without the switch: the handshake completes
  // over X25519, and the client's copy of the server's certificate came from the built-in method.
  Ptr<SSL> client = connect_tls(fds[0]);
  ASSERT_TRUE(client);
  EXPECT_STREQ(SSL_get_version(client.get()), "TLSv1.3");
  EXPECT_EQ(SSL_get_negotiated_group(client.get()), NID_X25519);
  X509* seen = SSL_get0_peer_certificate(client.get());
  ASSERT_NE(seen, nullptr);
  EXPECT_EQ(EVP_PKEY_get0_provider(X509_get0_pubkey(seen)), nullptr);
  EXPECT_EQ(sotto::net::detail::fingerprint_of(seen), identity->fingerprint);
  EXPECT_EQ(SSL_shutdown(client.get()), 0);  // close_notify sent
  client.reset();
  ::close(fds[0]);
  int status = -1;
  ASSERT_EQ(::waitpid(server, &status, 0), server);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
