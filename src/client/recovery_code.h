// An account's recovery code: 120 random bits that the user writes down when the account is
// created, shown as 24 characters of RFC 4648 base32 in six groups of four
// ("ABCD-EFGH-IJKL-MNOP-QRST-UVWX"). With it the user takes the account back on a new machine when
// every device is lost (service.proto RecoverRequest), and it can encrypt backups
// (backup_file.h).
//
// The server never sees the code: it keeps the public half of an Ed25519 key pair derived from
// it (RegisterRequest.recovery_key) and checks the signature a recovering client makes with the
// private half. 120 random bits make guessing the code hopeless even for the server, which holds
// that verifier; no passphrase stretching is needed for the authentication key.
//
// The code is a secret: it lives in crypto::Secret and crypto::SecretBuffer, and no error text
// carries it. Pure functions (randomness injected); thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <tl/expected.hpp>

#include "crypto/ed25519.h"
#include "crypto/error.h"
#include "crypto/pwhash.h"
#include "crypto/rng.h"
#include "crypto/secret.h"

namespace sotto::client {

inline constexpr std::size_t kRecoveryCodeSize = 15;      // bytes: 120 bits
inline constexpr std::size_t kRecoveryCodeChars = 24;     // base32 characters, 5 bits each
inline constexpr std::size_t kRecoveryCodeGroup = 4;      // characters per group
inline constexpr std::size_t kRecoveryCodeTextSize = 29;  // 24 characters and 5 dashes
// parse() refuses longer input before it looks at it.
inline constexpr std::size_t kMaxRecoveryCodeInput = 256;
// HKDF-SHA256 info of the authentication key's seed.
inline constexpr std::string_view kRecoveryAuthInfo = "sotto-recovery-auth-v1";

enum class RecoveryCodeError {
  wrong_length,       // not 24 characters once spaces and dashes are removed
  invalid_character,  // a character outside A-Z, 2-7 (and the look-alikes 0, 1, 8)
};
[[nodiscard]] std::string_view to_string(RecoveryCodeError e);

class RecoveryCode {
 public:
  // 120 bits from `rng`.
  [[nodiscard]] static RecoveryCode generate(crypto::Rng& rng);
  // Accepts any case and spaces or dashes anywhere, and reads '0' as 'O', '1' as 'I' and '8' as
  // 'B' (which RFC 4648's alphabet leaves out because they look alike), so that a code copied by
  // hand still parses.
  [[nodiscard]] static tl::expected<RecoveryCode, RecoveryCodeError> parse(std::string_view text);
  [[nodiscard]] static RecoveryCode from_bytes(const crypto::Secret<kRecoveryCodeSize>& bytes);

  RecoveryCode(RecoveryCode&&) noexcept = default;
  RecoveryCode& operator=(RecoveryCode&&) noexcept = default;
  RecoveryCode(const RecoveryCode&) = delete;
  RecoveryCode& operator=(const RecoveryCode&) = delete;
  [[nodiscard]] RecoveryCode clone() const { return RecoveryCode(bytes_.clone()); }

  const crypto::Secret<kRecoveryCodeSize>& bytes() const noexcept { return bytes_; }
  // The normalised text: upper case, six groups of four joined by '-' (kRecoveryCodeTextSize
  // bytes). What the user is shown, and what a backup key is derived from.
  [[nodiscard]] crypto::SecretBuffer text() const;

  friend bool operator==(const RecoveryCode& a, const RecoveryCode& b) noexcept {
    return a.bytes_ == b.bytes_;  // constant time
  }

 private:
  explicit RecoveryCode(crypto::Secret<kRecoveryCodeSize> bytes) : bytes_(std::move(bytes)) {}
  crypto::Secret<kRecoveryCodeSize> bytes_;
};

// The key pair whose public key the server keeps as the code's verifier: Ed25519 from the seed
// HKDF-SHA256(ikm = the 15 code bytes, salt = none, info = kRecoveryAuthInfo, 32 bytes).
// Deterministic: the same code always gives the same key pair.
[[nodiscard]] crypto::Ed25519KeyPair derive_recovery_auth_key(const RecoveryCode& code);

// The key of a backup encrypted with the recovery code (backup_file.h, key source 2):
// Argon2id(text(), salt, params).
[[nodiscard]] tl::expected<crypto::Secret<32>, crypto::Error> derive_backup_key(
    const RecoveryCode& code, const std::array<std::uint8_t, crypto::kArgon2SaltSize>& salt,
    crypto::Argon2Params params);

}  // namespace sotto::client
