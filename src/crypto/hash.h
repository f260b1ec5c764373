// Hashes, MACs and key derivation over OpenSSL libcrypto 3: SHA-256, SHA-512, HMAC-SHA256 and
// HKDF-SHA256 (RFC 5869). The hashes are OpenSSL's; HMAC (RFC 2104) and HKDF are composed here over
// them (hash.cpp says why), with every intermediate state on the stack and wiped. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <utility>

#include "crypto/bytes.h"
#include "crypto/secret.h"

namespace sotto::crypto {

inline constexpr std::size_t kSha256Size = 32;
inline constexpr std::size_t kSha512Size = 64;
inline constexpr std::size_t kHmacSha256Size = 32;

using Sha256Digest = std::array<std::uint8_t, kSha256Size>;
using Sha512Digest = std::array<std::uint8_t, kSha512Size>;

Sha256Digest sha256(std::initializer_list<ByteView> parts);
Sha512Digest sha512(std::initializer_list<ByteView> parts);

// HMAC-SHA256 over the concatenation of `parts`. The result is secret when the key is (a chain
// key step, a message MAC before comparison), so it is returned as a Secret.
Secret<kHmacSha256Size> hmac_sha256(ByteView key, std::initializer_list<ByteView> parts);

// Two HMAC-SHA256 values under one key (the key pads are hashed once): a chain step's message
// seed and next chain key.
std::pair<Secret<kHmacSha256Size>, Secret<kHmacSha256Size>> hmac_sha256_pair(ByteView key,
                                                                             ByteView first,
                                                                             ByteView second);
// The same, written into the caller's secrets (no temporaries to move and wipe).
void hmac_sha256_pair(ByteView key, ByteView first, Secret<kHmacSha256Size>& first_out,
                      ByteView second, Secret<kHmacSha256Size>& second_out);

// HKDF-SHA256, RFC 5869: extract with `salt` (empty means HashLen zero bytes) then expand to
// out.size() bytes with `info`. REQUIRES: out.size() <= 255 * 32.
void hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out);

// Incremental SHA-512, for callers that hash in many steps (safety-number iterations).
class Sha512 {
 public:
  Sha512();
  ~Sha512();
  Sha512(const Sha512&) = delete;
  Sha512& operator=(const Sha512&) = delete;
  void update(ByteView data);
  Sha512Digest finish();  // also resets, ready for the next hash

 private:
  void* ctx_;
};

// Incremental SHA-256, for data that never sits in memory at once (attachments, hashed as they
// stream).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(ByteView data);
  Sha256Digest finish();  // also resets, ready for the next hash

 private:
  void* ctx_;
};

}  // namespace sotto::crypto
