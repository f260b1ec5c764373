// Passphrase-based key derivation: Argon2id (libsodium crypto_pwhash). Used by clients to encrypt
// their stores at rest. Thread-safe.
#pragma once

#include <array>
#include <string_view>

#include <tl/expected.hpp>

#include "crypto/error.h"
#include "crypto/secret.h"

namespace sotto::crypto {

inline constexpr std::size_t kArgon2SaltSize = 16;

struct Argon2Params {
  unsigned long long ops_limit;
  std::size_t mem_limit;
  static Argon2Params interactive();  // libsodium's INTERACTIVE limits
  static Argon2Params moderate();     // libsodium's MODERATE limits
};

[[nodiscard]] tl::expected<Secret<32>, Error> argon2id_derive(
    std::string_view passphrase, const std::array<std::uint8_t, kArgon2SaltSize>& salt,
    Argon2Params params);

}  // namespace sotto::crypto
