#include "crypto/pwhash.h"

#include <sodium.h>

#include <cstdlib>
#include <string_view>

#include "crypto/rng.h"

namespace sotto::crypto {

Argon2Params Argon2Params::interactive() {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}

Argon2Params Argon2Params::moderate() {
  return {crypto_pwhash_OPSLIMIT_MODERATE, crypto_pwhash_MEMLIMIT_MODERATE};
}

Argon2Params Argon2Params::for_new_secret() {
  const char* fast = std::getenv("SOTTO_TEST_FAST_KDF");
  if (fast != nullptr && std::string_view(fast) == "1") return {1, 64 * 1024};
  return moderate();
}

tl::expected<Secret<32>, Error> argon2id_derive(
    std::string_view passphrase, const std::array<std::uint8_t, kArgon2SaltSize>& salt,
    Argon2Params params) {
  ensure_sodium_initialized();
  Secret<32> key;
  // libsodium declares the passphrase pointer non-null, and an empty view may hold nullptr.
  const char* bytes = passphrase.empty() ? "" : passphrase.data();
  if (crypto_pwhash(key.data(), key.size(), bytes, passphrase.size(), salt.data(), params.ops_limit,
                    params.mem_limit, crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return tl::unexpected(Error::library_failure);
  }
  return key;
}

}  // namespace sotto::crypto
