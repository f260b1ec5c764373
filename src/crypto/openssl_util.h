// OpenSSL RAII handles and once-fetched algorithm objects (internal to src/crypto).
#pragma once

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <memory>

namespace sotto::crypto::detail {

struct MdCtxFree { void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); } };
struct MacCtxFree { void operator()(EVP_MAC_CTX* p) const { EVP_MAC_CTX_free(p); } };
struct CipherCtxFree { void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); } };
struct KdfCtxFree { void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); } };

using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using MacCtx = std::unique_ptr<EVP_MAC_CTX, MacCtxFree>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;
using KdfCtx = std::unique_ptr<EVP_KDF_CTX, KdfCtxFree>;

const EVP_MD* md_sha256();
const EVP_MD* md_sha512();
const EVP_CIPHER* cipher_aes256_cbc();
const EVP_CIPHER* cipher_aes256_gcm();
const EVP_CIPHER* cipher_aes256_ctr();

// Throws std::runtime_error: only for failures that mean OpenSSL itself is broken.
[[noreturn]] void fail(const char* what);

}  // namespace sotto::crypto::detail
