// The server's signed announcement of its next TLS key (net/server_key.h): what the current key
// signs verifies with it and nothing else, for EC (the generated identities) and Ed25519 keys;
// other key types are refused clearly; malformed keys and signatures are refused, not crashed on.
#include "net/server_key.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <string>

#include "crypto/hash.h"
#include "net/tls.h"
#include "net_test_support.h"

namespace sotto::net {
namespace {

using test_support::TempDir;

// An identity for a key OpenSSL makes here (only the fields signing uses: the private key and
// the public key a certificate would carry).
TlsIdentity identity_of(EVP_PKEY* key) {
  TlsIdentity id;
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(out, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long len = BIO_get_mem_data(out, &data);
  id.private_key_pem.assign(data, static_cast<std::size_t>(len));
  BIO_free(out);
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key, &der);
  id.public_key.assign(der, der + std::max(n, 0));
  OPENSSL_free(der);
  id.key_fingerprint = key_fingerprint(id.public_key);
  return id;
}

TlsIdentity generated(const char* algorithm) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, algorithm);
  EXPECT_NE(key, nullptr);
  TlsIdentity id = identity_of(key);
  EVP_PKEY_free(key);
  return id;
}

TlsIdentity generated_rsa() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(2048));
  EXPECT_NE(key, nullptr);
  TlsIdentity id = identity_of(key);
  EVP_PKEY_free(key);
  return id;
}

class ServerKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = load_or_create_identity(current_dir_.path());
    auto n = load_or_create_identity(next_dir_.path());
    auto o = load_or_create_identity(other_dir_.path());
    ASSERT_TRUE(c && n && o);
    current_ = *c;
    next_ = *n;
    other_ = *o;
  }

  TempDir current_dir_, next_dir_, other_dir_;
  TlsIdentity current_, next_, other_;
};

TEST_F(ServerKeyTest, TheCurrentKeysSignatureOverTheNextKeyVerifiesWithTheCurrentKey) {
  auto signature = sign_next_key(current_, next_.public_key);
  ASSERT_TRUE(signature) << to_string(signature.error());
  EXPECT_TRUE(verify_next_key(current_.public_key, next_.public_key, *signature));

  // The signed message is exactly the one service.proto gives: checked with OpenSSL directly.
  const auto hash = crypto::sha256({current_.public_key});
  Bytes message;
  message.reserve(kNextKeyContext.size() + hash.size() + next_.public_key.size());
  append(message, as_bytes(kNextKeyContext));
  append(message, hash);
  append(message, next_.public_key);
  const unsigned char* p = current_.public_key.data();
  EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, static_cast<long>(current_.public_key.size()));
  ASSERT_NE(key, nullptr);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ASSERT_EQ(EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key), 1);
  EXPECT_EQ(
      EVP_DigestVerify(ctx, signature->data(), signature->size(), message.data(), message.size()),
      1);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
}

TEST_F(ServerKeyTest, TamperedAnnouncementsAndOtherKeysDoNotVerify) {
  const Bytes signature = sign_next_key(current_, next_.public_key).value();
  // Another next key than the one signed.
  EXPECT_EQ(verify_next_key(current_.public_key, other_.public_key, signature).error(),
            ServerKeyError::bad_signature);
  // Verified with another key than the signer's (an impostor's connection).
  EXPECT_EQ(verify_next_key(other_.public_key, next_.public_key, signature).error(),
            ServerKeyError::bad_signature);
  // The roles swapped.
  EXPECT_FALSE(verify_next_key(next_.public_key, current_.public_key, signature));
  // Any bit of the signature flipped.
  for (std::size_t i = 0; i < signature.size(); i += 7) {
    Bytes flipped = signature;
    flipped[i] ^= 0x01;
    EXPECT_FALSE(verify_next_key(current_.public_key, next_.public_key, flipped)) << i;
  }
  // A signature by the next key over the same message is not the current key's.
  const Bytes by_next = sign_next_key(next_, next_.public_key).value();
  EXPECT_FALSE(verify_next_key(current_.public_key, next_.public_key, by_next));
  EXPECT_TRUE(verify_next_key(next_.public_key, next_.public_key, by_next));
}

TEST_F(ServerKeyTest, MalformedKeysAndSignaturesAreRefused) {
  const Bytes signature = sign_next_key(current_, next_.public_key).value();
  Bytes trailing = next_.public_key;
  trailing.push_back(0x00);
  Bytes truncated(next_.public_key.begin(), next_.public_key.end() - 1);
  Bytes flipped_tag = next_.public_key;
  flipped_tag[0] ^= 0xFF;
  const Bytes huge(kMaxPublicKeyDerSize + 1, 0x30);
  for (const Bytes& bad :
       {Bytes{}, Bytes{0x30}, Bytes(91, 0x00), trailing, truncated, flipped_tag, huge}) {
    EXPECT_EQ(verify_next_key(bad, next_.public_key, signature).error(), ServerKeyError::malformed);
    EXPECT_EQ(verify_next_key(current_.public_key, bad, signature).error(),
              ServerKeyError::malformed);
    EXPECT_EQ(sign_next_key(current_, bad).error(), ServerKeyError::malformed);
  }
  for (const Bytes& bad : {Bytes{}, Bytes{0x30, 0x00}, Bytes(64, 0x00), Bytes(300, 0x30),
                           Bytes(signature.begin(), signature.end() - 1)}) {
    EXPECT_EQ(verify_next_key(current_.public_key, next_.public_key, bad).error(),
              ServerKeyError::bad_signature);
  }
  // An identity whose private key does not parse cannot sign.
  TlsIdentity broken = current_;
  broken.private_key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  EXPECT_EQ(sign_next_key(broken, next_.public_key).error(), ServerKeyError::failed);
}

TEST_F(ServerKeyTest, AnEd25519KeySignsAndVerifiesToo) {
  const TlsIdentity ed = generated("ED25519");
  ASSERT_FALSE(ed.public_key.empty());
  auto signature = sign_next_key(ed, next_.public_key);
  ASSERT_TRUE(signature) << to_string(signature.error());
  EXPECT_EQ(signature->size(), 64u);
  EXPECT_TRUE(verify_next_key(ed.public_key, next_.public_key, *signature));
  EXPECT_FALSE(verify_next_key(ed.public_key, other_.public_key, *signature));
  // And an EC key announces an Ed25519 next key as any other.
  const Bytes to_ed = sign_next_key(current_, ed.public_key).value();
  EXPECT_TRUE(verify_next_key(current_.public_key, ed.public_key, to_ed));
}

TEST_F(ServerKeyTest, OtherKeyTypesAreRefusedClearly) {
  const TlsIdentity rsa = generated_rsa();
  ASSERT_FALSE(rsa.public_key.empty());
  const auto signed_by_rsa = sign_next_key(rsa, next_.public_key);
  ASSERT_FALSE(signed_by_rsa);
  EXPECT_EQ(signed_by_rsa.error(), ServerKeyError::unsupported_key);
  EXPECT_NE(to_string(signed_by_rsa.error()).find("EC or Ed25519"), std::string::npos);
  EXPECT_EQ(verify_next_key(rsa.public_key, next_.public_key, Bytes(256, 1)).error(),
            ServerKeyError::unsupported_key);
  // An RSA key may be the next one (only the signer's type matters).
  const Bytes to_rsa = sign_next_key(current_, rsa.public_key).value();
  EXPECT_TRUE(verify_next_key(current_.public_key, rsa.public_key, to_rsa));
}

}  // namespace
}  // namespace sotto::net
