// Symmetric ciphers: AES-256-CBC with PKCS#7 padding and AES-256-GCM over OpenSSL, and
// XChaCha20-Poly1305 over libsodium. Outputs are plain Bytes for ciphertext; decryption returns
// a SecretBuffer because the plaintext is the secret being protected. Thread-safe.
#pragma once

#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "crypto/error.h"
#include "crypto/secret.h"

namespace sotto::crypto {

inline constexpr std::size_t kAes256KeySize = 32;
inline constexpr std::size_t kAesBlockSize = 16;
inline constexpr std::size_t kAesGcmNonceSize = 12;
inline constexpr std::size_t kAesGcmTagSize = 16;
inline constexpr std::size_t kXChaChaKeySize = 32;
inline constexpr std::size_t kXChaChaNonceSize = 24;
inline constexpr std::size_t kXChaChaTagSize = 16;

// AES-256-CBC, PKCS#7 padding (Signal's message body cipher).
[[nodiscard]] Bytes aes256_cbc_seal(const Secret<32>& key, std::span<const std::uint8_t, 16> iv,
                                    ByteView plaintext);
[[nodiscard]] tl::expected<SecretBuffer, Error> aes256_cbc_open(
    const Secret<32>& key, std::span<const std::uint8_t, 16> iv, ByteView ciphertext);

// AES-256-GCM: output is ciphertext || 16-byte tag.
[[nodiscard]] Bytes aes256_gcm_seal(const Secret<32>& key, std::span<const std::uint8_t, 12> nonce,
                                    ByteView aad, ByteView plaintext);
[[nodiscard]] tl::expected<SecretBuffer, Error> aes256_gcm_open(
    const Secret<32>& key, std::span<const std::uint8_t, 12> nonce, ByteView aad,
    ByteView sealed);

// XChaCha20-Poly1305 (IETF): output is ciphertext || 16-byte tag. Random nonces are safe.
[[nodiscard]] Bytes xchacha20poly1305_seal(const Secret<32>& key,
                                           std::span<const std::uint8_t, 24> nonce, ByteView aad,
                                           ByteView plaintext);
[[nodiscard]] tl::expected<SecretBuffer, Error> xchacha20poly1305_open(
    const Secret<32>& key, std::span<const std::uint8_t, 24> nonce, ByteView aad,
    ByteView sealed);

}  // namespace sotto::crypto
