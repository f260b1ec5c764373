// The load tool's switch to OpenSSL's built-in X25519 and EC key methods
// (apps/sotto-load/key_methods.h): after it, the server certificate's key and the key shares
// take the built-in path, and what they compute is unchanged: the certificate still verifies a
// signature of the server's key (and refuses a changed message), its pin is the same, and X25519
// agrees with libsodium. tests/e2e/load_smoke.py runs the tool's real handshakes with it.
//
// One test in its own executable: the switch is process-wide and cannot be undone.
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <array>
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

TEST(LoadKeyMethods, CertificateKeysAndKeySharesTakeTheBuiltInPathAndComputeTheSame) {
  const fs::path dir =
      fs::temp_directory_path() / ("sotto-key-methods-" + std::to_string(::getpid()));
  fs::remove_all(dir);
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

  // A key share as libssl makes one (by name), and the peer's share set on a copy of its
  // parameters: both built-in, and the secret is libsodium's.
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
  ASSERT_EQ(EVP_PKEY_derive_set_peer(derive.get(), peer.get()), 1);
  std::array<std::uint8_t, 32> shared{};
  len = shared.size();
  ASSERT_EQ(EVP_PKEY_derive(derive.get(), shared.data(), &len), 1);
  ASSERT_EQ(len, shared.size());
  auto expected = sotto::crypto::x25519_agree(theirs.private_key, our_public);
  ASSERT_TRUE(expected);
  EXPECT_TRUE(std::equal(shared.begin(), shared.end(), expected->view().begin()));
}

}  // namespace
