#include "crypto/cipher.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <limits>

#include "crypto/openssl_util.h"
#include "crypto/rng.h"

namespace sotto::crypto {
namespace {

using detail::fail;

EVP_CIPHER_CTX* thread_cipher_ctx() {
  thread_local detail::CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) fail("EVP_CIPHER_CTX_new");
  return ctx.get();
}

// What to pass as the cipher to EVP_*Init_ex2: nothing when the context already runs `cipher`.
// Given a cipher, OpenSSL resets the context and frees and re-allocates its provider state on
// every call; given none, it only sets the new key and IV (and the direction), which is all a
// fresh message needs.
const EVP_CIPHER* unless_set(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher) {
  return EVP_CIPHER_CTX_get0_cipher(ctx) == cipher ? nullptr : cipher;
}

int checked_int(std::size_t n) {
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max() - 64)) {
    throw std::length_error("cipher input too long");
  }
  return static_cast<int>(n);
}

}  // namespace

Bytes aes256_cbc_seal(const Secret<32>& key, std::span<const std::uint8_t, 16> iv,
                      ByteView plaintext) {
  EVP_CIPHER_CTX* ctx = thread_cipher_ctx();
  if (EVP_EncryptInit_ex2(ctx, unless_set(ctx, detail::cipher_aes256_cbc()), key.data(), iv.data(),
                          nullptr) != 1) {
    fail("EVP_EncryptInit_ex2");
  }
  Bytes out(plaintext.size() + kAesBlockSize);
  int len1 = 0;
  int len2 = 0;
  if (EVP_EncryptUpdate(ctx, out.data(), &len1, plaintext.data(), checked_int(plaintext.size())) !=
          1 ||
      EVP_EncryptFinal_ex(ctx, out.data() + len1, &len2) != 1) {
    fail("AES-256-CBC encrypt");
  }
  out.resize(static_cast<std::size_t>(len1 + len2));
  return out;
}

tl::expected<SecretBuffer, Error> aes256_cbc_open(const Secret<32>& key,
                                                  std::span<const std::uint8_t, 16> iv,
                                                  ByteView ciphertext) {
  if (ciphertext.empty() || ciphertext.size() % kAesBlockSize != 0) {
    return tl::unexpected(Error::invalid_length);
  }
  EVP_CIPHER_CTX* ctx = thread_cipher_ctx();
  if (EVP_DecryptInit_ex2(ctx, unless_set(ctx, detail::cipher_aes256_cbc()), key.data(), iv.data(),
                          nullptr) != 1) {
    fail("EVP_DecryptInit_ex2");
  }
  SecretBuffer out(ciphertext.size() + kAesBlockSize);
  int len1 = 0;
  int len2 = 0;
  if (EVP_DecryptUpdate(ctx, out.data(), &len1, ciphertext.data(),
                        checked_int(ciphertext.size())) != 1) {
    fail("EVP_DecryptUpdate");
  }
  if (EVP_DecryptFinal_ex(ctx, out.data() + len1, &len2) != 1) {
    return tl::unexpected(Error::bad_padding);
  }
  out.resize(static_cast<std::size_t>(len1 + len2));
  return out;
}

Bytes aes256_gcm_seal(const Secret<32>& key, std::span<const std::uint8_t, 12> nonce, ByteView aad,
                      ByteView plaintext) {
  EVP_CIPHER_CTX* ctx = thread_cipher_ctx();
  if (EVP_EncryptInit_ex2(ctx, unless_set(ctx, detail::cipher_aes256_gcm()), key.data(),
                          nonce.data(), nullptr) != 1) {
    fail("EVP_EncryptInit_ex2(GCM)");
  }
  int len = 0;
  if (!aad.empty() &&
      EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), checked_int(aad.size())) != 1) {
    fail("GCM aad");
  }
  Bytes out(plaintext.size() + kAesGcmTagSize);
  int len1 = 0;
  int len2 = 0;
  if (EVP_EncryptUpdate(ctx, out.data(), &len1, plaintext.data(), checked_int(plaintext.size())) !=
          1 ||
      EVP_EncryptFinal_ex(ctx, out.data() + len1, &len2) != 1) {
    fail("GCM encrypt");
  }
  const auto ct_len = static_cast<std::size_t>(len1 + len2);
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kAesGcmTagSize, out.data() + ct_len) != 1) {
    fail("GCM tag");
  }
  out.resize(ct_len + kAesGcmTagSize);
  return out;
}

tl::expected<SecretBuffer, Error> aes256_gcm_open(const Secret<32>& key,
                                                  std::span<const std::uint8_t, 12> nonce,
                                                  ByteView aad, ByteView sealed) {
  if (sealed.size() < kAesGcmTagSize) return tl::unexpected(Error::invalid_length);
  const std::size_t ct_len = sealed.size() - kAesGcmTagSize;
  EVP_CIPHER_CTX* ctx = thread_cipher_ctx();
  if (EVP_DecryptInit_ex2(ctx, unless_set(ctx, detail::cipher_aes256_gcm()), key.data(),
                          nonce.data(), nullptr) != 1) {
    fail("EVP_DecryptInit_ex2(GCM)");
  }
  int len = 0;
  if (!aad.empty() &&
      EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(), checked_int(aad.size())) != 1) {
    fail("GCM aad");
  }
  SecretBuffer out(ct_len + kAesBlockSize);
  int len1 = 0;
  if (ct_len != 0 &&
      EVP_DecryptUpdate(ctx, out.data(), &len1, sealed.data(), checked_int(ct_len)) != 1) {
    fail("GCM decrypt");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kAesGcmTagSize,
                          const_cast<std::uint8_t*>(sealed.data() + ct_len)) != 1) {
    fail("GCM set tag");
  }
  int len2 = 0;
  if (EVP_DecryptFinal_ex(ctx, out.data() + len1, &len2) != 1)
    return tl::unexpected(Error::bad_mac);
  out.resize(static_cast<std::size_t>(len1 + len2));
  return out;
}

Bytes xchacha20poly1305_seal(const Secret<32>& key, std::span<const std::uint8_t, 24> nonce,
                             ByteView aad, ByteView plaintext) {
  ensure_sodium_initialized();
  Bytes out(plaintext.size() + kXChaChaTagSize);
  unsigned long long out_len = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out.data(), &out_len, plaintext.data(),
                                             plaintext.size(), aad.data(), aad.size(), nullptr,
                                             nonce.data(), key.data());
  out.resize(static_cast<std::size_t>(out_len));
  return out;
}

tl::expected<SecretBuffer, Error> xchacha20poly1305_open(const Secret<32>& key,
                                                         std::span<const std::uint8_t, 24> nonce,
                                                         ByteView aad, ByteView sealed) {
  ensure_sodium_initialized();
  if (sealed.size() < kXChaChaTagSize) return tl::unexpected(Error::invalid_length);
  SecretBuffer out(sealed.size() - kXChaChaTagSize);
  unsigned long long out_len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(out.data(), &out_len, nullptr, sealed.data(),
                                                 sealed.size(), aad.data(), aad.size(),
                                                 nonce.data(), key.data()) != 0) {
    return tl::unexpected(Error::bad_mac);
  }
  out.resize(static_cast<std::size_t>(out_len));
  return out;
}

}  // namespace sotto::crypto
