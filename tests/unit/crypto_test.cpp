// Known-answer and behaviour tests of src/crypto: RFC 7748, RFC 5869, RFC 4231 and the reference
// library's signature vector, plus the secret-memory guarantees.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <sodium.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>
#include <utility>

#include "crypto/base64.h"
#include "crypto/cipher.h"
#include "crypto/ed25519.h"
#include "crypto/hash.h"
#include "crypto/pwhash.h"
#include "crypto/rng.h"
#include "crypto/secret.h"
#include "crypto/secretstream.h"
#include "crypto/signature.h"
#include "crypto/x25519.h"
#include "util/test_util.h"

namespace sotto::crypto {
namespace {

using sotto::testing::from_hex;
using sotto::testing::load_vectors;
using sotto::testing::to_hex;

Secret<32> secret32(std::string_view hex) {
  return Secret<32>(from_hex(hex));
}

X25519PublicBytes pub32(ByteView b) {
  X25519PublicBytes out{};
  std::copy(b.begin(), b.end(), out.begin());
  return out;
}

TEST(X25519, Rfc7748ScalarMultiplicationVectors) {
  const auto v = load_vectors("rfc7748_x25519.json");
  ASSERT_EQ(v["scalarmult"].size(), 2u);
  for (const auto& t : v["scalarmult"]) {
    auto shared = x25519_agree(secret32(t["scalar"].get<std::string>()),
                               pub32(from_hex(t["u"].get<std::string>())));
    ASSERT_TRUE(shared);
    EXPECT_EQ(to_hex(shared->view()), t["output"].get<std::string>());
  }
}

TEST(X25519, Rfc7748DiffieHellmanExample) {
  const auto dh = load_vectors("rfc7748_x25519.json")["dh"];
  auto alice = secret32(dh["alice_private"].get<std::string>());
  auto bob = secret32(dh["bob_private"].get<std::string>());
  EXPECT_EQ(to_hex(x25519_public_from_private(alice)), dh["alice_public"].get<std::string>());
  EXPECT_EQ(to_hex(x25519_public_from_private(bob)), dh["bob_public"].get<std::string>());
  auto s1 = x25519_agree(alice, pub32(from_hex(dh["bob_public"].get<std::string>())));
  auto s2 = x25519_agree(bob, pub32(from_hex(dh["alice_public"].get<std::string>())));
  ASSERT_TRUE(s1 && s2);
  EXPECT_EQ(to_hex(s1->view()), dh["shared"].get<std::string>());
  EXPECT_TRUE(*s1 == *s2);
}

TEST(X25519, LowOrderPointIsRejected) {
  DeterministicRng rng(1);
  auto kp = x25519_generate(rng);
  X25519PublicBytes zero{};
  auto r = x25519_agree(kp.private_key, zero);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), Error::invalid_key);
}

TEST(X25519, GeneratedKeysAreClamped) {
  DeterministicRng rng(2);
  for (int i = 0; i < 16; ++i) {
    auto kp = x25519_generate(rng);
    EXPECT_EQ(kp.private_key.data()[0] & 7, 0);
    EXPECT_EQ(kp.private_key.data()[31] & 0xC0, 0x40);
  }
}

TEST(Hkdf, Rfc5869Vectors) {
  const auto v = load_vectors("rfc5869_hkdf_sha256.json");
  ASSERT_EQ(v["vectors"].size(), 3u);
  for (const auto& t : v["vectors"]) {
    Bytes out(t["length"].get<std::size_t>());
    hkdf_sha256(from_hex(t["ikm"].get<std::string>()), from_hex(t["salt"].get<std::string>()),
                from_hex(t["info"].get<std::string>()), out);
    EXPECT_EQ(to_hex(out), t["okm"].get<std::string>());
  }
}

TEST(Hkdf, RepeatedCallsDoNotLeakStateBetweenCalls) {
  Bytes a(32), b(32), c(32);
  hkdf_sha256(as_bytes("ikm"), {}, as_bytes("one"), a);
  hkdf_sha256(as_bytes("ikm"), {}, as_bytes("two"), b);
  hkdf_sha256(as_bytes("ikm"), {}, as_bytes("one"), c);
  EXPECT_EQ(a, c);
  EXPECT_NE(a, b);
}

// Cross-check of the HKDF composition against OpenSSL's own HKDF on random inputs, including
// empty salt, empty info and outputs that are not a multiple of the hash size.
TEST(Hkdf, MatchesOpenSslHkdfOnRandomInputs) {
  DeterministicRng rng(11);
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  ASSERT_NE(kdf, nullptr);
  for (int i = 0; i < 200; ++i) {
    Bytes ikm(1 + rng.next_u32() % 100),
        salt(rng.next_u32() % 3 == 0 ? 0 : 1 + rng.next_u32() % 80),
        info(rng.next_u32() % 3 == 0 ? 0 : 1 + rng.next_u32() % 40), ours(1 + rng.next_u32() % 200);
    rng.fill(ikm);
    rng.fill(salt);
    rng.fill(info);
    hkdf_sha256(ikm, salt, info, ours);
    // Fresh OpenSSL context per derivation (see hash.cpp on why contexts are not reused).
    EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
    char digest[] = "SHA256";
    static std::uint8_t zero[32] = {};
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm.data(), ikm.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt.empty() ? zero : salt.data(),
                                          salt.empty() ? 32 : salt.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.empty() ? zero : info.data(),
                                          info.size()),
        OSSL_PARAM_construct_end()};
    Bytes theirs(ours.size());
    ASSERT_EQ(EVP_KDF_derive(ctx, theirs.data(), theirs.size(), params), 1);
    EVP_KDF_CTX_free(ctx);
    ASSERT_EQ(ours, theirs) << "case " << i;
  }
  EVP_KDF_free(kdf);
}

TEST(Hmac, PairEqualsTwoSingleMacsAndKeysDoNotLeak) {
  auto [a, b] = hmac_sha256_pair(as_bytes("key one"), as_bytes("x"), as_bytes("y"));
  EXPECT_TRUE(a == hmac_sha256(as_bytes("key one"), {as_bytes("x")}));
  EXPECT_TRUE(b == hmac_sha256(as_bytes("key one"), {as_bytes("y")}));
  // A one-shot under another key in between must not be affected by the earlier key.
  EXPECT_FALSE(hmac_sha256(as_bytes("key two"), {as_bytes("y")}) == b);
  EXPECT_TRUE(hmac_sha256({}, {as_bytes("m")}) == hmac_sha256(Bytes{}, {as_bytes("m")}));
}

TEST(Hmac, Rfc4231TestCase2) {
  auto mac =
      hmac_sha256(as_bytes("Jefe"), {as_bytes("what do ya "), as_bytes("want for nothing?")});
  EXPECT_EQ(to_hex(mac.view()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Hmac, Rfc4231KeysLongerThanTheBlock) {
  // RFC 4231 test cases 6 and 7: a 131-byte key is hashed first (RFC 2104 section 2).
  const Bytes key(131, 0xaa);
  EXPECT_EQ(to_hex(hmac_sha256(key, {as_bytes("Test Using Larger Than Block-Size Key - Hash Key "
                                              "First")})
                       .view()),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_EQ(to_hex(hmac_sha256(key, {as_bytes("This is a test using a larger than block-size key "
                                              "and a larger than block-size data. The key needs "
                                              "to be hashed before being used by the HMAC "
                                              "algorithm.")})
                       .view()),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

// Cross-check of the HMAC composition (hash.cpp) against OpenSSL's HMAC on random inputs: keys of
// every length around the 64-byte block (and empty), messages split into several parts.
TEST(Hmac, MatchesOpenSslHmacOnRandomInputs) {
  DeterministicRng rng(12);
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  ASSERT_NE(mac, nullptr);
  for (int i = 0; i < 300; ++i) {
    Bytes key(i < 140 ? static_cast<std::size_t>(i) : rng.next_u32() % 300);
    Bytes a(rng.next_u32() % 3 == 0 ? 0 : rng.next_u32() % 200);
    Bytes b(rng.next_u32() % 130);
    rng.fill(key);
    rng.fill(a);
    rng.fill(b);
    const auto ours = hmac_sha256(key, {a, b});
    EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    static const std::uint8_t kEmpty[1] = {0};
    ASSERT_EQ(EVP_MAC_init(ctx, key.empty() ? kEmpty : key.data(), key.size(), params), 1);
    Bytes ab = a;
    ab.insert(ab.end(), b.begin(), b.end());
    if (!ab.empty()) {
      ASSERT_EQ(EVP_MAC_update(ctx, ab.data(), ab.size()), 1);
    }
    Bytes theirs(32);
    std::size_t len = 0;
    ASSERT_EQ(EVP_MAC_final(ctx, theirs.data(), &len, theirs.size()), 1);
    EVP_MAC_CTX_free(ctx);
    ASSERT_EQ(to_hex(ours.view()), to_hex(theirs)) << "case " << i << ", key " << key.size();
    auto [first, second] = hmac_sha256_pair(key, ab, b);
    EXPECT_TRUE(first == ours);
    EXPECT_TRUE(second == hmac_sha256(key, {b}));
  }
  EVP_MAC_free(mac);
}

TEST(Sha, KnownAnswers) {
  EXPECT_EQ(to_hex(sha256({as_bytes("abc")})),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(sha512({as_bytes("a"), as_bytes("bc")})),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
  Sha512 inc;
  inc.update(as_bytes("ab"));
  inc.update(as_bytes("c"));
  EXPECT_EQ(inc.finish(), sha512({as_bytes("abc")}));
  inc.update(as_bytes("abc"));
  EXPECT_EQ(inc.finish(), sha512({as_bytes("abc")})) << "finish() must reset";
}

// sha256 / sha512 run OpenSSL's low-level calls; cross-check them with EVP on random inputs.
TEST(Sha, MatchesOpenSslEvpOnRandomInputs) {
  DeterministicRng rng(14);
  for (int i = 0; i < 100; ++i) {
    Bytes a(rng.next_u32() % 300), b(rng.next_u32() % 200);
    rng.fill(a);
    rng.fill(b);
    Bytes ab = a;
    ab.insert(ab.end(), b.begin(), b.end());
    Bytes d256(32), d512(64);
    unsigned int len = 0;
    ASSERT_EQ(EVP_Digest(ab.data(), ab.size(), d256.data(), &len, EVP_sha256(), nullptr), 1);
    ASSERT_EQ(EVP_Digest(ab.data(), ab.size(), d512.data(), &len, EVP_sha512(), nullptr), 1);
    const auto ours256 = sha256({a, b});
    const auto ours512 = sha512({a, b});
    EXPECT_EQ(Bytes(ours256.begin(), ours256.end()), d256) << "case " << i;
    EXPECT_EQ(Bytes(ours512.begin(), ours512.end()), d512) << "case " << i;
  }
}

TEST(Signature, ReferenceLibraryVectorVerifies) {
  const auto v = load_vectors("libsignal_c.json")["curve25519"]["signature"];
  const Bytes pub = from_hex(v["identity_public"].get<std::string>());
  const Bytes msg = from_hex(v["message"].get<std::string>());
  Bytes sig = from_hex(v["signature"].get<std::string>());
  ASSERT_EQ(pub.size(), 33u);
  ASSERT_EQ(sig.size(), 64u);
  const auto key = pub32(ByteView(pub).subspan(1));
  EXPECT_TRUE(curve25519_verify(key, msg, std::span<const std::uint8_t, 64>(sig.data(), 64)));
  // As the reference test does: every flipped low bit of every byte must fail.
  for (std::size_t i = 0; i < sig.size(); ++i) {
    Bytes bad = sig;
    bad[i] ^= 0x01;
    EXPECT_FALSE(curve25519_verify(key, msg, std::span<const std::uint8_t, 64>(bad.data(), 64)))
        << "byte " << i;
  }
}

TEST(Signature, SignVerifyRoundTripForBothEdwardsSigns) {
  DeterministicRng rng(3);
  int with_sign_bit = 0;
  for (int i = 0; i < 64; ++i) {
    auto kp = x25519_generate(rng);
    const Bytes msg = {1, 2, 3, static_cast<std::uint8_t>(i)};
    auto sig = curve25519_sign(kp.private_key, msg, rng);
    with_sign_bit += (sig[63] & 0x80) ? 1 : 0;
    EXPECT_TRUE(curve25519_verify(kp.public_key, msg, sig));
    Bytes other = msg;
    other[0] ^= 1;
    EXPECT_FALSE(curve25519_verify(kp.public_key, other, sig));
    auto flipped = sig;
    flipped[63] ^= 0x80;  // the carried sign bit is part of what is verified
    EXPECT_FALSE(curve25519_verify(kp.public_key, msg, flipped));
  }
  // About half of all keys have an odd Edwards x: both paths must have been exercised.
  EXPECT_GT(with_sign_bit, 10);
  EXPECT_LT(with_sign_bit, 54);
}

TEST(Signature, SignatureFromPublicKeyThatIsNotOnTheEdwardsMapFails) {
  X25519PublicBytes minus_one{};  // u = p - 1 has no Edwards image
  minus_one.fill(0xFF);
  minus_one[0] = 0xEC;
  minus_one[31] = 0x7F;
  Curve25519Signature sig{};
  auto r = curve25519_verify(minus_one, as_bytes("x"), sig);
  ASSERT_FALSE(r);
}

TEST(Ed25519, Rfc8032TestVector1) {
  auto kp = Ed25519KeyPair::from_seed(
      secret32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
  EXPECT_EQ(to_hex(kp.public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const auto sig = kp.sign({});
  EXPECT_EQ(to_hex(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  EXPECT_TRUE(ed25519_verify(kp.public_key(), {}, sig));
  auto bad = sig;
  bad[0] ^= 1;
  EXPECT_EQ(ed25519_verify(kp.public_key(), {}, bad).error(), Error::bad_signature);
  EXPECT_EQ(ed25519_verify(ByteView(kp.public_key()).first(31), {}, sig).error(),
            Error::invalid_length);
}

TEST(Ed25519, PairsKeepTheirSeedAndSignAsOneDerivedAfresh) {
  DeterministicRng rng(31);
  const auto kp = Ed25519KeyPair::generate(rng);
  const auto again = Ed25519KeyPair::from_seed(Secret<kEd25519SeedSize>(kp.seed()));
  EXPECT_EQ(again.public_key(), kp.public_key());
  const auto copy = kp.clone();
  EXPECT_EQ(copy.public_key(), kp.public_key());
  EXPECT_TRUE(constant_time_equal(copy.seed(), kp.seed()));
  // Ed25519 signatures are deterministic: the cached secret key signs as the seed does.
  const auto msg = as_bytes("sotto-auth-tls-v1 and 32 bytes of binding");
  EXPECT_EQ(kp.sign(msg), again.sign(msg));
  EXPECT_EQ(copy.sign(msg), again.sign(msg));
  EXPECT_TRUE(ed25519_verify(kp.public_key(), msg, kp.sign(msg)));

  // A moved-from pair holds no key, so nothing of the key stays behind in it.
  auto moved = kp.clone();
  const auto taken = std::move(moved);
  EXPECT_EQ(taken.public_key(), kp.public_key());
  EXPECT_TRUE(std::all_of(moved.seed().begin(), moved.seed().end(), [](auto b) { return b == 0; }));
  EXPECT_TRUE(moved.empty());
  EXPECT_EQ(moved.public_key(), Ed25519PublicKey{});
  EXPECT_FALSE(taken.empty());
  EXPECT_TRUE(Ed25519KeyPair().empty());
  Ed25519KeyPair assigned;
  assigned = kp.clone();
  EXPECT_EQ(assigned.sign(msg), kp.sign(msg));
  Ed25519KeyPair sink;
  sink = std::move(assigned);
  EXPECT_TRUE(assigned.empty());
  EXPECT_EQ(assigned.public_key(), Ed25519PublicKey{});
  EXPECT_EQ(sink.public_key(), kp.public_key());
}

TEST(AesCbc, RoundTripAndPaddingRejection) {
  DeterministicRng rng(4);
  auto key = rng.secret<32>();
  std::array<std::uint8_t, 16> iv{};
  rng.fill(iv);
  for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 64u, 1000u}) {
    Bytes pt(n, 0x5A);
    Bytes ct = aes256_cbc_seal(key, iv, pt);
    EXPECT_EQ(ct.size(), (n / 16 + 1) * 16);
    auto back = aes256_cbc_open(key, iv, ct);
    ASSERT_TRUE(back);
    EXPECT_EQ(Bytes(back->view().begin(), back->view().end()), pt);
  }
  Bytes ct = aes256_cbc_seal(key, iv, as_bytes("hello"));
  auto other = rng.secret<32>();
  auto r = aes256_cbc_open(other, iv, ct);
  // A wrong key almost always breaks the padding (probability of valid padding ~1/256).
  if (r) {
    EXPECT_NE(std::string(r->view().begin(), r->view().end()), "hello");
  }
  EXPECT_EQ(aes256_cbc_open(key, iv, Bytes(15)).error(), Error::invalid_length);
  EXPECT_EQ(aes256_cbc_open(key, iv, Bytes{}).error(), Error::invalid_length);
}

TEST(AesCbc, NistSp800_38aVectorFirstBlock) {
  // SP 800-38A F.2.5 CBC-AES256.Encrypt, block 1 (no padding involved: compare the first block).
  Secret<32> key(from_hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"));
  auto iv = from_hex("000102030405060708090a0b0c0d0e0f");
  auto pt = from_hex("6bc1bee22e409f96e93d7e117393172a");
  Bytes ct = aes256_cbc_seal(key, std::span<const std::uint8_t, 16>(iv.data(), 16), pt);
  EXPECT_EQ(to_hex(ByteView(ct).first(16)), "f58c4c04d6e5f1ba779eabfb5f7bfbd6");
}

// The wrappers keep one cipher context per thread and re-key it without re-selecting the cipher
// (cipher.cpp). Interleaving CBC and GCM, sealing and opening, and failed opens must not carry
// state from one call into the next: every result is compared with a fresh OpenSSL context's.
TEST(AesCbc, ReusedContextMatchesFreshContextsWhenInterleaved) {
  DeterministicRng rng(13);
  for (int i = 0; i < 60; ++i) {
    auto key = rng.secret<32>();
    std::array<std::uint8_t, 16> iv{};
    rng.fill(iv);
    Bytes pt(rng.next_u32() % 70);
    rng.fill(pt);
    const Bytes ct = aes256_cbc_seal(key, iv, pt);

    EVP_CIPHER_CTX* fresh = EVP_CIPHER_CTX_new();
    ASSERT_EQ(EVP_EncryptInit_ex2(fresh, EVP_aes_256_cbc(), key.data(), iv.data(), nullptr), 1);
    Bytes expected(pt.size() + 16);
    int n1 = 0, n2 = 0;
    ASSERT_EQ(
        EVP_EncryptUpdate(fresh, expected.data(), &n1, pt.data(), static_cast<int>(pt.size())), 1);
    ASSERT_EQ(EVP_EncryptFinal_ex(fresh, expected.data() + n1, &n2), 1);
    expected.resize(static_cast<std::size_t>(n1 + n2));
    EVP_CIPHER_CTX_free(fresh);
    ASSERT_EQ(ct, expected) << "case " << i;

    switch (i % 4) {
      case 0: {  // a failed open (wrong key: padding almost surely bad) in between
        auto wrong = rng.secret<32>();
        (void)aes256_cbc_open(wrong, iv, ct);
        break;
      }
      case 1: {  // GCM on the same thread in between
        std::array<std::uint8_t, 12> nonce{};
        Bytes sealed = aes256_gcm_seal(key, nonce, {}, pt);
        sealed.back() ^= 1;
        EXPECT_FALSE(aes256_gcm_open(key, nonce, {}, sealed));
        break;
      }
      case 2:  // a seal under another key in between
        (void)aes256_cbc_seal(rng.secret<32>(), iv, pt);
        break;
      default:
        break;
    }
    auto back = aes256_cbc_open(key, iv, ct);
    ASSERT_TRUE(back) << "case " << i;
    EXPECT_EQ(Bytes(back->view().begin(), back->view().end()), pt);
  }
}

TEST(AesGcm, RoundTripAndTamper) {
  DeterministicRng rng(5);
  auto key = rng.secret<32>();
  std::array<std::uint8_t, 12> nonce{};
  Bytes sealed = aes256_gcm_seal(key, nonce, as_bytes("aad"), as_bytes("attachment"));
  auto back = aes256_gcm_open(key, nonce, as_bytes("aad"), sealed);
  ASSERT_TRUE(back);
  EXPECT_EQ(std::string(back->view().begin(), back->view().end()), "attachment");
  EXPECT_EQ(aes256_gcm_open(key, nonce, as_bytes("AAD"), sealed).error(), Error::bad_mac);
  sealed[0] ^= 1;
  EXPECT_EQ(aes256_gcm_open(key, nonce, as_bytes("aad"), sealed).error(), Error::bad_mac);
  EXPECT_EQ(aes256_gcm_open(key, nonce, {}, Bytes(3)).error(), Error::invalid_length);
}

TEST(XChaCha, RoundTripAndTamper) {
  DeterministicRng rng(6);
  auto key = rng.secret<32>();
  std::array<std::uint8_t, 24> nonce{};
  rng.fill(nonce);
  Bytes sealed = xchacha20poly1305_seal(key, nonce, {}, as_bytes("state"));
  auto back = xchacha20poly1305_open(key, nonce, {}, sealed);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->size(), 5u);
  sealed.back() ^= 1;
  EXPECT_EQ(xchacha20poly1305_open(key, nonce, {}, sealed).error(), Error::bad_mac);
}

TEST(Argon2id, DeterministicForSaltAndPassphrase) {
  std::array<std::uint8_t, kArgon2SaltSize> salt{};
  salt[0] = 1;
  const Argon2Params fast{1, 8 * 1024};
  auto a = argon2id_derive("correct horse", salt, fast);
  auto b = argon2id_derive("correct horse", salt, fast);
  auto c = argon2id_derive("correct horsf", salt, fast);
  ASSERT_TRUE(a && b && c);
  EXPECT_TRUE(*a == *b);
  EXPECT_FALSE(*a == *c);
  // An empty passphrase (whose view may hold a null pointer) is a passphrase like any other.
  auto empty = argon2id_derive(std::string_view(), salt, fast);
  auto empty_literal = argon2id_derive("", salt, fast);
  ASSERT_TRUE(empty && empty_literal);
  EXPECT_TRUE(*empty == *empty_literal);
  EXPECT_FALSE(*empty == *a);
}

TEST(Argon2id, StoredParameterBoundsAndTheFastTestSetting) {
  EXPECT_TRUE(argon2_params_in_bounds(1, 8192));
  EXPECT_TRUE(argon2_params_in_bounds(64, std::uint64_t{4} << 30));
  EXPECT_FALSE(argon2_params_in_bounds(0, 8192));
  EXPECT_FALSE(argon2_params_in_bounds(65, 8192));
  EXPECT_FALSE(argon2_params_in_bounds(1, 8191));
  EXPECT_FALSE(argon2_params_in_bounds(1, (std::uint64_t{4} << 30) + 1));
  const Argon2Params moderate = Argon2Params::moderate();
  EXPECT_TRUE(argon2_params_in_bounds(moderate.ops_limit, moderate.mem_limit));
  const char* before = std::getenv("SOTTO_TEST_FAST_KDF");
  const std::string saved = before != nullptr ? before : "";
  ::setenv("SOTTO_TEST_FAST_KDF", "1", 1);
  EXPECT_EQ(Argon2Params::for_new_secret().ops_limit, 1u);
  EXPECT_EQ(Argon2Params::for_new_secret().mem_limit, 64u * 1024);
  ::unsetenv("SOTTO_TEST_FAST_KDF");
  EXPECT_EQ(Argon2Params::for_new_secret().ops_limit, moderate.ops_limit);
  EXPECT_EQ(Argon2Params::for_new_secret().mem_limit, moderate.mem_limit);
  if (before != nullptr) ::setenv("SOTTO_TEST_FAST_KDF", saved.c_str(), 1);
}

// Hands out fixed bytes, so that a stream's header is known in advance.
class FixedRng final : public Rng {
 public:
  explicit FixedRng(ByteView bytes) : bytes_(bytes.begin(), bytes.end()) {}
  void fill(std::span<std::uint8_t> out) override {
    ASSERT_LE(out.size(), bytes_.size());
    std::copy_n(bytes_.begin(), out.size(), out.begin());
  }

 private:
  Bytes bytes_;
};

std::vector<Bytes> push_all(SecretStreamPush& push, const std::vector<std::string>& messages,
                            ByteView ad, bool last_is_final = true) {
  std::vector<Bytes> out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const bool final = last_is_final && i + 1 == messages.size();
    out.push_back(push.push(as_bytes(messages[i]), ad,
                            final ? SecretStreamTag::final : SecretStreamTag::message));
  }
  return out;
}

std::string text_of(const SecretBuffer& b) {
  return std::string(b.view().begin(), b.view().end());
}

TEST(SecretStream, RoundTripWithTagsAndAssociatedData) {
  DeterministicRng rng(20);
  const auto key = rng.secret<32>();
  SecretStreamPush push(key, rng);
  const std::vector<std::string> messages = {"first", "", std::string(70000, 'x'), "last"};
  const auto sealed = push_all(push, messages, as_bytes("header"));
  EXPECT_TRUE(push.closed());
  EXPECT_THROW(push.push(as_bytes("more"), {}, SecretStreamTag::message), std::logic_error);

  SecretStreamPull pull(key, push.header());
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    EXPECT_EQ(sealed[i].size(), messages[i].size() + kSecretStreamOverhead);
    auto opened = pull.pull(sealed[i], as_bytes("header"));
    ASSERT_TRUE(opened) << i;
    EXPECT_EQ(text_of(opened->first), messages[i]);
    const SecretStreamTag expected_tag =
        i + 1 == sealed.size() ? SecretStreamTag::final : SecretStreamTag::message;
    EXPECT_EQ(opened->second, expected_tag);
  }
  EXPECT_TRUE(pull.finish());
  // Nothing is read after the final message, not even a genuine-looking one.
  EXPECT_EQ(pull.pull(sealed[0], as_bytes("header")).error(), Error::stream_closed);
}

// The push side sets its state up with init_pull (so that the header comes from our Rng): it must
// encrypt exactly as a state from libsodium's own init_push with the same header.
TEST(SecretStream, PushStateFromAHeaderMatchesLibsodiumInitPush) {
  DeterministicRng rng(21);
  const auto key = rng.secret<32>();
  crypto_secretstream_xchacha20poly1305_state state;
  SecretStreamHeader header{};
  ASSERT_EQ(crypto_secretstream_xchacha20poly1305_init_push(&state, header.data(), key.data()), 0);
  FixedRng fixed(header);
  SecretStreamPush push(key, fixed);
  ASSERT_EQ(push.header(), header);
  for (const std::string msg : {"a", "", "message three", "last"}) {
    const bool final = msg == "last";
    Bytes expected(msg.size() + kSecretStreamOverhead);
    ASSERT_EQ(crypto_secretstream_xchacha20poly1305_push(
                  &state, expected.data(), nullptr, as_bytes(msg).data(), msg.size(),
                  as_bytes("ad").data(), 2,
                  final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                        : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE),
              0);
    EXPECT_EQ(push.push(as_bytes(msg), as_bytes("ad"),
                        final ? SecretStreamTag::final : SecretStreamTag::message),
              expected)
        << msg;
  }
  sodium_memzero(&state, sizeof state);
}

TEST(SecretStream, TamperedMessageOrAssociatedDataFailsAndClosesTheStream) {
  DeterministicRng rng(22);
  const auto key = rng.secret<32>();
  SecretStreamPush push(key, rng);
  const auto sealed = push_all(push, {"one", "two", "three"}, as_bytes("ad"));
  for (std::size_t m = 0; m < sealed.size(); ++m) {
    for (std::size_t bit = 0; bit < sealed[m].size() * 8; ++bit) {
      SecretStreamPull pull(key, push.header());
      for (std::size_t i = 0; i < m; ++i) ASSERT_TRUE(pull.pull(sealed[i], as_bytes("ad")));
      Bytes bad = sealed[m];
      bad[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
      ASSERT_EQ(pull.pull(bad, as_bytes("ad")).error(), Error::bad_mac) << m << " " << bit;
      // The genuine message no longer helps: a failed stream stays failed.
      EXPECT_EQ(pull.pull(sealed[m], as_bytes("ad")).error(), Error::stream_closed);
      EXPECT_EQ(pull.finish().error(), Error::bad_mac);
    }
  }
  SecretStreamPull other_ad(key, push.header());
  EXPECT_EQ(other_ad.pull(sealed[0], as_bytes("aD")).error(), Error::bad_mac);
  SecretStreamPull wrong_key(rng.secret<32>(), push.header());
  EXPECT_EQ(wrong_key.pull(sealed[0], as_bytes("ad")).error(), Error::bad_mac);
  SecretStreamHeader other_header = push.header();
  other_header[23] ^= 1;
  SecretStreamPull wrong_header(key, other_header);
  EXPECT_EQ(wrong_header.pull(sealed[0], as_bytes("ad")).error(), Error::bad_mac);
}

TEST(SecretStream, TruncationIsDetected) {
  DeterministicRng rng(23);
  const auto key = rng.secret<32>();
  SecretStreamPush push(key, rng);
  const auto sealed = push_all(push, {"one", "two", "three"}, {});
  // Cut at a message boundary: every message authenticates, but the final one never came.
  SecretStreamPull cut(key, push.header());
  ASSERT_TRUE(cut.pull(sealed[0], {}));
  ASSERT_TRUE(cut.pull(sealed[1], {}));
  EXPECT_EQ(cut.finish().error(), Error::stream_truncated);
  // Cut inside a message.
  SecretStreamPull inside(key, push.header());
  const Bytes& last = sealed[2];
  EXPECT_EQ(inside.pull(sealed[0], {})->second, SecretStreamTag::message);
  EXPECT_EQ(inside.pull(sealed[1], {})->second, SecretStreamTag::message);
  EXPECT_EQ(inside.pull(ByteView(last).first(last.size() - 1), {}).error(), Error::bad_mac);
  SecretStreamPull short_message(key, push.header());
  EXPECT_EQ(short_message.pull(ByteView(sealed[0]).first(kSecretStreamOverhead - 1), {}).error(),
            Error::invalid_length);
  // A caller's buffer of the wrong size is refused before any work.
  SecretStreamPull wrong_out(key, push.header());
  Bytes out(2);
  EXPECT_EQ(wrong_out.pull(sealed[0], {}, out).error(), Error::invalid_length);
}

TEST(SecretStream, ReorderedDroppedOrRepeatedMessagesFail) {
  DeterministicRng rng(24);
  const auto key = rng.secret<32>();
  SecretStreamPush push(key, rng);
  const auto sealed = push_all(push, {"one", "two", "three", "four"}, {});
  const auto fails_at = [&](const std::vector<std::size_t>& order) -> std::size_t {
    SecretStreamPull pull(key, push.header());
    for (std::size_t i = 0; i < order.size(); ++i) {
      if (!pull.pull(sealed[order[i]], {})) return i;
    }
    return order.size();
  };
  EXPECT_EQ(fails_at({0, 1, 2, 3}), 4u);
  EXPECT_EQ(fails_at({1, 0, 2, 3}), 0u);  // swapped
  EXPECT_EQ(fails_at({0, 2, 1, 3}), 1u);  // swapped in the middle
  EXPECT_EQ(fails_at({0, 2, 3}), 1u);     // dropped
  EXPECT_EQ(fails_at({0, 0, 1}), 1u);     // repeated
  EXPECT_EQ(fails_at({0, 1, 3}), 2u);     // the final one moved up
}

TEST(SecretStream, StreamWithoutFinalTagIsAnError) {
  DeterministicRng rng(25);
  const auto key = rng.secret<32>();
  SecretStreamPush push(key, rng);
  const auto sealed = push_all(push, {"one", "two"}, {}, /*last_is_final=*/false);
  EXPECT_FALSE(push.closed());
  SecretStreamPull pull(key, push.header());
  for (const Bytes& m : sealed) EXPECT_EQ(pull.pull(m, {})->second, SecretStreamTag::message);
  EXPECT_FALSE(pull.final_seen());
  EXPECT_EQ(pull.finish().error(), Error::stream_truncated);
  SecretStreamPull empty(key, push.header());
  EXPECT_EQ(empty.finish().error(), Error::stream_truncated);
}

TEST(SecretStream, TagsOtherThanMessageAndFinalAreRefused) {
  DeterministicRng rng(26);
  const auto key = rng.secret<32>();
  SecretStreamPush push(key, rng);  // only for its header
  crypto_secretstream_xchacha20poly1305_state state;
  ASSERT_EQ(
      crypto_secretstream_xchacha20poly1305_init_pull(&state, push.header().data(), key.data()), 0);
  Bytes sealed(4 + kSecretStreamOverhead);
  ASSERT_EQ(crypto_secretstream_xchacha20poly1305_push(
                &state, sealed.data(), nullptr, as_bytes("push").data(), 4, nullptr, 0,
                crypto_secretstream_xchacha20poly1305_TAG_PUSH),
            0);
  sodium_memzero(&state, sizeof state);
  SecretStreamPull pull(key, push.header());
  Bytes out(4, 0xAA);
  EXPECT_EQ(pull.pull(sealed, {}, out).error(), Error::unexpected_tag);
  EXPECT_EQ(out, Bytes(4, 0));  // the plaintext was wiped
  EXPECT_EQ(pull.finish().error(), Error::unexpected_tag);
}

TEST(SecretStream, MovedFromObjectsAreClosed) {
  DeterministicRng rng(27);
  const auto key = rng.secret<32>();
  SecretStreamPush push(key, rng);
  SecretStreamPush moved = std::move(push);
  EXPECT_TRUE(push.closed());  // NOLINT(bugprone-use-after-move): that is the point
  const Bytes sealed = moved.push(as_bytes("m"), {}, SecretStreamTag::final);
  SecretStreamPull pull(key, moved.header());
  SecretStreamPull pull2 = std::move(pull);
  EXPECT_EQ(pull.pull(sealed, {}).error(),
            Error::stream_closed);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(pull2.pull(sealed, {})->second, SecretStreamTag::final);
  EXPECT_TRUE(pull2.finish());
}

TEST(SecretMemory, MoveWipesSourceAndPrintsRedacted) {
  Secret<32> a(from_hex("0101010101010101010101010101010101010101010101010101010101010101"));
  Secret<32> b = std::move(a);
  EXPECT_EQ(to_hex(a.view()), std::string(64, '0'));  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.data()[5], 1);
  std::ostringstream os;
  os << b;
  EXPECT_EQ(os.str(), "redacted");
  Secret<32> c = b.clone();
  EXPECT_TRUE(b == c);
  c.data()[0] ^= 1;
  EXPECT_FALSE(b == c);
}

TEST(SecretMemory, SecretBufferNeverGrows) {
  SecretBuffer buf(as_bytes("abcdef"));
  buf.resize(3);
  EXPECT_EQ(buf.size(), 3u);
  EXPECT_EQ(buf.capacity(), 6u);
  buf.resize(6);
  EXPECT_EQ(buf.data()[4], 0) << "shrinking must wipe the released tail";
  EXPECT_THROW(buf.resize(7), std::length_error);
  SecretBuffer moved = std::move(buf);
  EXPECT_EQ(buf.size(), 0u);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(moved.size(), 6u);
  std::ostringstream os;
  os << moved;
  EXPECT_EQ(os.str(), "redacted");
}

TEST(Rng, DeterministicRngRepeatsAndSystemRngDoesNot) {
  DeterministicRng a(7), b(7);
  std::array<std::uint8_t, 32> x{}, y{};
  a.fill(x);
  b.fill(y);
  EXPECT_EQ(x, y);
  a.fill(x);
  EXPECT_NE(x, y);
  std::array<std::uint8_t, 32> s1{}, s2{};
  system_rng().fill(s1);
  system_rng().fill(s2);
  EXPECT_NE(s1, s2);
}

// RFC 4648 section 10's vectors, in the URL-safe alphabet without padding (section 5).
TEST(Base64Url, EncodesAndDecodesTheRfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, text] : vectors) {
    EXPECT_EQ(base64url_encode(as_bytes(plain)), text);
    const auto back = base64url_decode(text, 64);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(std::string(back->begin(), back->end()), plain);
  }
  // The URL-safe letters: 0xfb 0xff is "+/8" in the standard alphabet.
  const Bytes high = {0xfb, 0xff};
  EXPECT_EQ(base64url_encode(high), "-_8");
  EXPECT_EQ(base64url_decode("-_8", 2), high);
}

TEST(Base64Url, DecodingIsStrict) {
  for (const char* bad : {"Zg==", "Zm9v ", " Zm9v", "Zm 9v", "+/8", "Zh", "Z", "Zm9v\n", "Zm9v%"}) {
    EXPECT_FALSE(base64url_decode(bad, 64).has_value()) << bad;
  }
  // The size bound: six bytes fit in six, not in five (whatever the text's length says).
  EXPECT_TRUE(base64url_decode("Zm9vYmFy", 6).has_value());
  EXPECT_FALSE(base64url_decode("Zm9vYmFy", 5).has_value());
  EXPECT_FALSE(base64url_decode(std::string(10000, 'A'), 256).has_value());
}

}  // namespace
}  // namespace sotto::crypto
