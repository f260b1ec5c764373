// SHA256_* are deprecated in OpenSSL 3 (see HmacKey below on why they are used here).
#define OPENSSL_SUPPRESS_DEPRECATED

#include "crypto/hash.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "crypto/openssl_util.h"

namespace sotto::crypto {
namespace detail {

[[noreturn]] void fail(const char* what) {
  ERR_clear_error();
  throw std::runtime_error(std::string("OpenSSL failure: ") + what);
}

namespace {
template <typename T, typename Fetch>
T* fetch_once(Fetch fetch, const char* name) {
  T* p = fetch(nullptr, name, nullptr);
  if (p == nullptr) fail(name);
  return p;
}
}  // namespace

const EVP_MD* md_sha256() {
  static EVP_MD* md = fetch_once<EVP_MD>(EVP_MD_fetch, "SHA256");
  return md;
}
const EVP_MD* md_sha512() {
  static EVP_MD* md = fetch_once<EVP_MD>(EVP_MD_fetch, "SHA512");
  return md;
}
const EVP_CIPHER* cipher_aes256_cbc() {
  static EVP_CIPHER* c = fetch_once<EVP_CIPHER>(EVP_CIPHER_fetch, "AES-256-CBC");
  return c;
}
const EVP_CIPHER* cipher_aes256_gcm() {
  static EVP_CIPHER* c = fetch_once<EVP_CIPHER>(EVP_CIPHER_fetch, "AES-256-GCM");
  return c;
}
const EVP_CIPHER* cipher_aes256_ctr() {
  static EVP_CIPHER* c = fetch_once<EVP_CIPHER>(EVP_CIPHER_fetch, "AES-256-CTR");
  return c;
}

}  // namespace detail

namespace {

using detail::fail;

// HMAC-SHA256 (RFC 2104) composed over OpenSSL's SHA-256. OpenSSL 3.0's own HMAC (EVP_MAC, and
// HMAC_Init_ex under it) duplicates a provider digest context, with a heap allocation and a
// cleanse, at every init and every final; on the per-message path that cost more than the
// hashing. Here a key's inner and outer states (the key pads hashed once) are plain SHA256_CTX
// values on the stack, and each MAC under the key starts from a copy of them. SHA-256 itself is
// OpenSSL's (SHA256_Update runs its SHA-NI / AVX2 block function); the low-level SHA256_* calls
// are deprecated in OpenSSL 3 but supported throughout 3.x. Tested against RFC 4231 and against
// OpenSSL's HMAC on random keys and messages (tests/unit/crypto_test.cpp).
class HmacKey {
 public:
  explicit HmacKey(ByteView key) {
    std::uint8_t block[kSha256BlockSize] = {};
    if (key.size() > kSha256BlockSize) {
      SHA256_CTX c;
      SHA256_Init(&c);
      SHA256_Update(&c, key.data(), key.size());
      SHA256_Final(block, &c);
      secure_wipe(&c, sizeof c);
    } else if (!key.empty()) {
      std::memcpy(block, key.data(), key.size());
    }
    for (auto& b : block) b ^= 0x36;
    SHA256_Init(&pads_.inner);
    SHA256_Update(&pads_.inner, block, sizeof block);
    for (auto& b : block) b ^= 0x36 ^ 0x5c;
    SHA256_Init(&pads_.outer);
    SHA256_Update(&pads_.outer, block, sizeof block);
    secure_wipe(block, sizeof block);
  }
  ~HmacKey() { secure_wipe(&pads_, sizeof pads_); }
  HmacKey(const HmacKey&) = delete;
  HmacKey& operator=(const HmacKey&) = delete;

  // HMAC of the concatenation of `parts` under this key. The key state is left as it was.
  template <typename Parts>
  void mac(const Parts& parts, std::uint8_t out[kHmacSha256Size]) const {
    struct {
      SHA256_CTX c;
      std::uint8_t inner_hash[kSha256Size];
    } t;  // one wipe for both
    t.c = pads_.inner;
    for (ByteView p : parts) {
      if (!p.empty()) SHA256_Update(&t.c, p.data(), p.size());
    }
    SHA256_Final(t.inner_hash, &t.c);
    t.c = pads_.outer;
    SHA256_Update(&t.c, t.inner_hash, sizeof t.inner_hash);
    SHA256_Final(out, &t.c);
    secure_wipe(&t, sizeof t);
  }
  void mac(ByteView part, std::uint8_t out[kHmacSha256Size]) const {
    const ByteView parts[1] = {part};
    mac(parts, out);
  }

 private:
  static constexpr std::size_t kSha256BlockSize = 64;
  struct {
    SHA256_CTX inner;  // after (key ^ ipad)
    SHA256_CTX outer;  // after (key ^ opad)
  } pads_;
};

// The HKDF salt of every extract that has none: HashLen zero bytes (RFC 5869 section 2.2). Its
// pads are public, so one process-wide copy is kept.
const HmacKey& zero_salt_key() {
  static const std::uint8_t kZero[kSha256Size] = {};
  static const HmacKey key(ByteView(kZero, sizeof kZero));
  return key;
}

}  // namespace

// One-shot hashes through the low-level SHA256_* / SHA512_* calls (see HmacKey): EVP_Digest*
// costs more than the hashing for the short inputs here, and the context, which may have
// absorbed secrets (curve25519_sign hashes its nonce key), lives on the stack and is wiped.
Sha256Digest sha256(std::initializer_list<ByteView> parts) {
  SHA256_CTX c;
  SHA256_Init(&c);
  for (ByteView p : parts) {
    if (!p.empty()) SHA256_Update(&c, p.data(), p.size());
  }
  Sha256Digest out{};
  SHA256_Final(out.data(), &c);
  secure_wipe(&c, sizeof c);
  return out;
}

Sha512Digest sha512(std::initializer_list<ByteView> parts) {
  SHA512_CTX c;
  SHA512_Init(&c);
  for (ByteView p : parts) {
    if (!p.empty()) SHA512_Update(&c, p.data(), p.size());
  }
  Sha512Digest out{};
  SHA512_Final(out.data(), &c);
  secure_wipe(&c, sizeof c);
  return out;
}

Secret<kHmacSha256Size> hmac_sha256(ByteView key, std::initializer_list<ByteView> parts) {
  Secret<kHmacSha256Size> out;
  HmacKey(key).mac(parts, out.data());
  return out;
}

std::pair<Secret<kHmacSha256Size>, Secret<kHmacSha256Size>> hmac_sha256_pair(ByteView key,
                                                                             ByteView first,
                                                                             ByteView second) {
  std::pair<Secret<kHmacSha256Size>, Secret<kHmacSha256Size>> out;
  hmac_sha256_pair(key, first, out.first, second, out.second);
  return out;
}

void hmac_sha256_pair(ByteView key, ByteView first, Secret<kHmacSha256Size>& first_out,
                      ByteView second, Secret<kHmacSha256Size>& second_out) {
  const HmacKey k(key);
  k.mac(first, first_out.data());
  k.mac(second, second_out.data());
}

// RFC 5869, composed over the HMAC above: section 2.2 (extract) then 2.3 (expand). The zero-salt
// extract starts from precomputed pads and the expand blocks share the PRK's key state. Tested
// against RFC 5869's vectors and against OpenSSL's HKDF on random inputs (tests/unit).
void hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out) {
  if (out.size() > 255 * kSha256Size) throw std::length_error("HKDF output too long");
  Secret<kSha256Size> prk;
  if (salt.empty()) {
    zero_salt_key().mac(ikm, prk.data());
  } else {
    HmacKey(salt).mac(ikm, prk.data());
  }
  const HmacKey expand(prk.view());
  Secret<kSha256Size> block;
  std::size_t done = 0;
  for (std::uint8_t i = 1; done < out.size(); ++i) {
    const ByteView parts[3] = {i > 1 ? block.view() : ByteView(), info, ByteView(&i, 1)};
    expand.mac(parts, block.data());
    const std::size_t n = std::min(out.size() - done, kSha256Size);
    std::memcpy(out.data() + done, block.data(), n);
    done += n;
  }
}

Sha512::Sha512() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) fail("EVP_MD_CTX_new");
  if (EVP_DigestInit_ex2(static_cast<EVP_MD_CTX*>(ctx_), detail::md_sha512(), nullptr) != 1) {
    fail("EVP_DigestInit_ex2");
  }
}

Sha512::~Sha512() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha512::update(ByteView data) {
  if (!data.empty() &&
      EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size()) != 1) {
    fail("EVP_DigestUpdate");
  }
}

Sha512Digest Sha512::finish() {
  Sha512Digest out{};
  unsigned int len = 0;
  auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
  if (EVP_DigestFinal_ex(ctx, out.data(), &len) != 1) fail("EVP_DigestFinal_ex");
  if (EVP_DigestInit_ex2(ctx, detail::md_sha512(), nullptr) != 1) fail("EVP_DigestInit_ex2");
  return out;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) fail("EVP_MD_CTX_new");
  if (EVP_DigestInit_ex2(static_cast<EVP_MD_CTX*>(ctx_), detail::md_sha256(), nullptr) != 1) {
    fail("EVP_DigestInit_ex2");
  }
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void Sha256::update(ByteView data) {
  if (!data.empty() &&
      EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size()) != 1) {
    fail("EVP_DigestUpdate");
  }
}

Sha256Digest Sha256::finish() {
  Sha256Digest out{};
  unsigned int len = 0;
  auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
  if (EVP_DigestFinal_ex(ctx, out.data(), &len) != 1) fail("EVP_DigestFinal_ex");
  if (EVP_DigestInit_ex2(ctx, detail::md_sha256(), nullptr) != 1) fail("EVP_DigestInit_ex2");
  return out;
}

}  // namespace sotto::crypto
