#include "crypto/hash.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

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

EVP_MD_CTX* thread_md_ctx() {
  thread_local detail::MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx) fail("EVP_MD_CTX_new");
  return ctx.get();
}

template <std::size_t N>
std::array<std::uint8_t, N> digest(const EVP_MD* md, std::initializer_list<ByteView> parts) {
  EVP_MD_CTX* ctx = thread_md_ctx();
  if (EVP_DigestInit_ex2(ctx, md, nullptr) != 1) fail("EVP_DigestInit_ex2");
  for (ByteView p : parts) {
    if (!p.empty() && EVP_DigestUpdate(ctx, p.data(), p.size()) != 1) fail("EVP_DigestUpdate");
  }
  std::array<std::uint8_t, N> out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != N) fail("EVP_DigestFinal_ex");
  return out;
}

// One HMAC context per thread with the digest bound once; EVP_MAC_init with a new key resets it.
EVP_MAC_CTX* thread_hmac_ctx() {
  thread_local detail::MacCtx ctx = [] {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) fail("EVP_MAC_fetch(HMAC)");
    detail::MacCtx c(EVP_MAC_CTX_new(mac));
    EVP_MAC_free(mac);  // the context holds its own reference
    if (!c) fail("EVP_MAC_CTX_new");
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(c.get(), params) != 1) fail("EVP_MAC_CTX_set_params");
    return c;
  }();
  return ctx.get();
}

detail::KdfCtx new_hkdf_ctx() {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) fail("EVP_KDF_fetch(HKDF)");
  detail::KdfCtx c(EVP_KDF_CTX_new(kdf));
  EVP_KDF_free(kdf);
  if (!c) fail("EVP_KDF_CTX_new");
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end()};
  if (EVP_KDF_CTX_set_params(c.get(), params) != 1) fail("EVP_KDF_CTX_set_params");
  return c;
}

// One context per thread with the digest bound once, reused for every derivation whose inputs
// are all non-empty (every protocol KDF). OpenSSL 3.0 mishandles an empty info or key after a
// non-empty one on a reused context (it reads freed memory) and cannot duplicate HKDF contexts,
// so derivations with an empty input get a fresh context.
EVP_KDF_CTX* thread_hkdf_ctx() {
  thread_local detail::KdfCtx ctx = new_hkdf_ctx();
  return ctx.get();
}

}  // namespace

Sha256Digest sha256(std::initializer_list<ByteView> parts) {
  return digest<kSha256Size>(detail::md_sha256(), parts);
}

Sha512Digest sha512(std::initializer_list<ByteView> parts) {
  return digest<kSha512Size>(detail::md_sha512(), parts);
}

Secret<kHmacSha256Size> hmac_sha256(ByteView key, std::initializer_list<ByteView> parts) {
  EVP_MAC_CTX* ctx = thread_hmac_ctx();
  // OpenSSL rejects a NULL key pointer even when the length is zero.
  static const std::uint8_t kEmpty[1] = {0};
  if (EVP_MAC_init(ctx, key.empty() ? kEmpty : key.data(), key.size(), nullptr) != 1) {
    fail("EVP_MAC_init");
  }
  for (ByteView p : parts) {
    if (!p.empty() && EVP_MAC_update(ctx, p.data(), p.size()) != 1) fail("EVP_MAC_update");
  }
  Secret<kHmacSha256Size> out;
  std::size_t len = 0;
  if (EVP_MAC_final(ctx, out.data(), &len, out.size()) != 1 || len != out.size()) {
    fail("EVP_MAC_final");
  }
  return out;
}

void hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out) {
  if (out.size() > 255 * kSha256Size) throw std::length_error("HKDF output too long");
  static const std::uint8_t kZeroSalt[kSha256Size] = {};
  if (salt.empty()) salt = ByteView(kZeroSalt, sizeof kZeroSalt);
  static const std::uint8_t kEmpty[1] = {0};
  detail::KdfCtx fresh;
  EVP_KDF_CTX* ctx = nullptr;
  if (ikm.empty() || info.empty()) {
    fresh = new_hkdf_ctx();
    ctx = fresh.get();
  } else {
    ctx = thread_hkdf_ctx();
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(ikm.empty() ? kEmpty : ikm.data()),
          ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                        const_cast<std::uint8_t*>(salt.data()), salt.size()),
      OSSL_PARAM_construct_octet_string(
          OSSL_KDF_PARAM_INFO, const_cast<std::uint8_t*>(info.empty() ? kEmpty : info.data()),
          info.size()),
      OSSL_PARAM_construct_end()};
  if (EVP_KDF_derive(ctx, out.data(), out.size(), params) != 1) fail("EVP_KDF_derive(HKDF)");
}

Sha512::Sha512() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) fail("EVP_MD_CTX_new");
  if (EVP_DigestInit_ex2(static_cast<EVP_MD_CTX*>(ctx_), detail::md_sha512(), nullptr) != 1) {
    fail("EVP_DigestInit_ex2");
  }
}

Sha512::~Sha512() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha512::update(ByteView data) {
  if (!data.empty() && EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size()) != 1) {
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

}  // namespace sotto::crypto
