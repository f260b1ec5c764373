// Passphrase-based key derivation: Argon2id (libsodium crypto_pwhash). Used by clients to encrypt
// their stores at rest and their backup files. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
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
  // What a new store or backup uses: moderate(), or {1 pass, 64 KiB} when the environment sets
  // SOTTO_TEST_FAST_KDF=1 (tests only: the passphrase is then cheap to guess).
  static Argon2Params for_new_secret();
};

// Bounds on Argon2id parameters read back from storage (a store's meta table, a backup file's
// header): damaged or hostile bytes must not make a reader allocate or compute without limit.
// libsodium's own minimums are 1 pass and 8 KiB.
inline constexpr std::uint64_t kArgon2MinOpsLimit = 1, kArgon2MaxOpsLimit = 64;
inline constexpr std::uint64_t kArgon2MinMemLimit = 8192;
inline constexpr std::uint64_t kArgon2MaxMemLimit = std::uint64_t{4} << 30;
[[nodiscard]] constexpr bool argon2_params_in_bounds(std::uint64_t ops, std::uint64_t mem) {
  return ops >= kArgon2MinOpsLimit && ops <= kArgon2MaxOpsLimit && mem >= kArgon2MinMemLimit &&
         mem <= kArgon2MaxMemLimit;
}

[[nodiscard]] tl::expected<Secret<32>, Error> argon2id_derive(
    std::string_view passphrase, const std::array<std::uint8_t, kArgon2SaltSize>& salt,
    Argon2Params params);

}  // namespace sotto::crypto
