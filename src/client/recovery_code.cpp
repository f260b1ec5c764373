#include "client/recovery_code.h"

#include <string_view>

#include "crypto/hash.h"

namespace sotto::client {
namespace {

// RFC 4648 base32 over exactly 15 bytes (three 40-bit quanta of eight characters, so no padding).
// The code is a secret, so its characters are mapped arithmetically, without table lookups or
// branches on their values (as libsodium's own hex and base64 codecs do); util.h's base32 is
// neither secret-safe nor in this library.
constexpr std::size_t kQuantumBytes = 5;
constexpr std::size_t kQuantumChars = 8;

// -1 (all bits) when a <= x <= b, else 0; x, a, b in [0, 255].
int in_range(int x, int a, int b) {
  return ((a - 1 - x) & (x - b - 1)) >> 8;
}
int equal(int x, int a) {
  return in_range(x, a, a);
}

// 0..31 -> 'A'..'Z', '2'..'7'.
char encode_char(int v) {
  return static_cast<char>('A' + v + (in_range(v, 26, 31) & ('2' - 26 - 'A')));
}

// One typed character -> its 5-bit value; `invalid` gets all bits set for a character outside the
// alphabet. Lower case folds to upper case and the look-alikes 0, 1, 8 to O, I, B first.
int decode_char(int c, int& invalid) {
  c -= in_range(c, 'a', 'z') & ('a' - 'A');
  c ^= equal(c, '0') & ('0' ^ 'O');
  c ^= equal(c, '1') & ('1' ^ 'I');
  c ^= equal(c, '8') & ('8' ^ 'B');
  const int letter = in_range(c, 'A', 'Z');
  const int digit = in_range(c, '2', '7');
  invalid |= ~(letter | digit);
  return ((letter & (c - 'A')) | (digit & (c - '2' + 26))) & 0x1F;
}

bool separator(char c) {
  return c == '-' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

}  // namespace

std::string_view to_string(RecoveryCodeError e) {
  switch (e) {
    case RecoveryCodeError::wrong_length:
      return "a recovery code has 24 characters (six groups of four)";
    case RecoveryCodeError::invalid_character:
      return "a recovery code has only the letters A-Z and the digits 2-7";
  }
  return "not a recovery code";
}

RecoveryCode RecoveryCode::generate(crypto::Rng& rng) {
  return RecoveryCode(rng.secret<kRecoveryCodeSize>());
}

RecoveryCode RecoveryCode::from_bytes(const crypto::Secret<kRecoveryCodeSize>& bytes) {
  return RecoveryCode(bytes.clone());
}

tl::expected<RecoveryCode, RecoveryCodeError> RecoveryCode::parse(std::string_view text) {
  if (text.size() > kMaxRecoveryCodeInput) {
    return tl::unexpected(RecoveryCodeError::wrong_length);
  }
  crypto::Secret<kRecoveryCodeChars> values;
  std::size_t count = 0;
  int invalid = 0;
  for (char c : text) {
    if (separator(c)) continue;
    const int v = decode_char(static_cast<unsigned char>(c), invalid);
    if (count < kRecoveryCodeChars) values.data()[count] = static_cast<std::uint8_t>(v);
    ++count;
  }
  if (invalid != 0) return tl::unexpected(RecoveryCodeError::invalid_character);
  if (count != kRecoveryCodeChars) return tl::unexpected(RecoveryCodeError::wrong_length);

  crypto::Secret<kRecoveryCodeSize> bytes;
  for (std::size_t q = 0; q < kRecoveryCodeSize / kQuantumBytes; ++q) {
    std::uint64_t bits = 0;
    for (std::size_t i = 0; i < kQuantumChars; ++i) {
      bits = (bits << 5) | values.data()[q * kQuantumChars + i];
    }
    for (std::size_t i = 0; i < kQuantumBytes; ++i) {
      bytes.data()[q * kQuantumBytes + i] =
          static_cast<std::uint8_t>(bits >> (8 * (kQuantumBytes - 1 - i)));
    }
    crypto::secure_wipe(&bits, sizeof bits);
  }
  return RecoveryCode(std::move(bytes));
}

crypto::SecretBuffer RecoveryCode::text() const {
  crypto::SecretBuffer out(kRecoveryCodeTextSize);
  std::size_t pos = 0;
  for (std::size_t q = 0; q < kRecoveryCodeSize / kQuantumBytes; ++q) {
    std::uint64_t bits = 0;
    for (std::size_t i = 0; i < kQuantumBytes; ++i) {
      bits = (bits << 8) | bytes_.data()[q * kQuantumBytes + i];
    }
    for (std::size_t i = 0; i < kQuantumChars; ++i) {
      const std::size_t index = q * kQuantumChars + i;
      if (index > 0 && index % kRecoveryCodeGroup == 0) out.data()[pos++] = '-';
      const int v = static_cast<int>((bits >> (5 * (kQuantumChars - 1 - i))) & 0x1F);
      out.data()[pos++] = static_cast<std::uint8_t>(encode_char(v));
    }
    crypto::secure_wipe(&bits, sizeof bits);
  }
  return out;
}

crypto::Ed25519KeyPair derive_recovery_auth_key(const RecoveryCode& code) {
  crypto::Secret<crypto::kEd25519SeedSize> seed;
  crypto::hkdf_sha256(code.bytes().view(), {}, as_bytes(kRecoveryAuthInfo), seed.span());
  return crypto::Ed25519KeyPair::from_seed(seed);
}

tl::expected<crypto::Secret<32>, crypto::Error> derive_backup_key(
    const RecoveryCode& code, const std::array<std::uint8_t, crypto::kArgon2SaltSize>& salt,
    crypto::Argon2Params params) {
  const crypto::SecretBuffer text = code.text();
  return crypto::argon2id_derive(
      std::string_view(reinterpret_cast<const char*>(text.data()), text.size()), salt, params);
}

}  // namespace sotto::client
