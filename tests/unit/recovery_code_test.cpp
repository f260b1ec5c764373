// Recovery codes (src/client/recovery_code.h). The expected texts, public keys and backup key
// were computed independently with Python's `cryptography` (base64.b32encode, HKDF-SHA256,
// Ed25519, Argon2id over OpenSSL). The generated code is pinned so that a change of generator
// or derivation under existing accounts shows up here.
#include "client/recovery_code.h"

#include <gtest/gtest.h>

#include <string>

#include "util/test_util.h"

namespace sotto::client {
namespace {

using sotto::testing::from_hex;
using sotto::testing::to_hex;

std::string text_of(const RecoveryCode& code) {
  const crypto::SecretBuffer t = code.text();
  return std::string(t.view().begin(), t.view().end());
}

RecoveryCode code_from_hex(std::string_view hex) {
  return RecoveryCode::from_bytes(crypto::Secret<kRecoveryCodeSize>(from_hex(hex)));
}

TEST(RecoveryCode, FixedCodesGiveTheIndependentlyComputedTextAndKey) {
  const RecoveryCode counting = code_from_hex("000102030405060708090a0b0c0d0e");
  EXPECT_EQ(text_of(counting), "AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO");
  EXPECT_EQ(to_hex(derive_recovery_auth_key(counting).public_key()),
            "135aa929c4b8913a0120a33cf542fce08e2ec2576baebd74bf2f49297db0c90d");
  EXPECT_EQ(to_hex(derive_recovery_auth_key(counting).seed()),
            "b60206b65388c45e9f09524eada2fb908cecc62b2c164b78d5cd376353034c22");

  const RecoveryCode ones = code_from_hex("ffffffffffffffffffffffffffffff");
  EXPECT_EQ(text_of(ones), "7777-7777-7777-7777-7777-7777");
  EXPECT_EQ(to_hex(derive_recovery_auth_key(ones).public_key()),
            "99f2011e39cf5ebe5e48fc0e53f871406d1f7aa970f4a7ecd5374aba7964452f");
}

TEST(RecoveryCode, BackupKeyIsArgon2idOfTheNormalisedText) {
  std::array<std::uint8_t, crypto::kArgon2SaltSize> salt{};
  for (std::size_t i = 0; i < salt.size(); ++i) salt[i] = static_cast<std::uint8_t>(i);
  const auto key =
      derive_backup_key(code_from_hex("000102030405060708090a0b0c0d0e"), salt, {1, 64 * 1024});
  ASSERT_TRUE(key);
  EXPECT_EQ(to_hex(key->view()),
            "48a2e44ae87568cc213be2b555b5abdea171e21d62a63ab8771d10a2507f2733");
  // Typed differently, the same code gives the same key.
  const auto typed = RecoveryCode::parse("aaaq eaye audA-OCAJ bifq ydi0");
  ASSERT_TRUE(typed);
  EXPECT_TRUE(*derive_backup_key(*typed, salt, {1, 64 * 1024}) == *key);
}

TEST(RecoveryCode, GeneratedCodeIsPinnedAndWellFormed) {
  crypto::DeterministicRng rng(2026);
  const RecoveryCode code = RecoveryCode::generate(rng);
  const std::string text = text_of(code);
  EXPECT_EQ(text, "4QVZ-BMOG-3LVN-A4PK-ODYY-EV3O");
  EXPECT_EQ(to_hex(derive_recovery_auth_key(code).public_key()),
            "af07ddaac76714a3ebd78724ad50ff689a85aa3f21093eb728728f04160bc633");

  crypto::DeterministicRng again(2026);
  EXPECT_TRUE(RecoveryCode::generate(again) == code);
  crypto::SystemRng system;
  for (int i = 0; i < 200; ++i) {
    const std::string t = text_of(RecoveryCode::generate(system));
    ASSERT_EQ(t.size(), kRecoveryCodeTextSize);
    for (std::size_t j = 0; j < t.size(); ++j) {
      if (j % 5 == 4) {
        EXPECT_EQ(t[j], '-');
      } else {
        EXPECT_TRUE((t[j] >= 'A' && t[j] <= 'Z') || (t[j] >= '2' && t[j] <= '7')) << t;
      }
    }
    const auto back = RecoveryCode::parse(t);
    ASSERT_TRUE(back);
    EXPECT_EQ(text_of(*back), t);
  }
}

TEST(RecoveryCode, ParsingAcceptsCaseSpacesDashesAndLookAlikes) {
  const RecoveryCode expected = code_from_hex("000102030405060708090a0b0c0d0e");
  for (const char* typed : {
           "AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO",
           "aaaq-eaye-auda-ocaj-bifq-ydio",
           "AAAQEAYEAUDAOCAJBIFQYDIO",
           "  AAAQ EAYE AUDA OCAJ BIFQ YDIO  ",
           "A-A-A-Q-E-A-Y-E-A-U-D-A-O-C-A-J-B-I-F-Q-Y-D-I-O",
           "aaaq-eaye-auda-0caj-bifq-yd10",  // 0 for O, 1 for I
           "AAAQ--EAYE\tAUDA\nOCAJ\r\nBIFQ-YDIO-",
       }) {
    const auto parsed = RecoveryCode::parse(typed);
    ASSERT_TRUE(parsed) << typed;
    EXPECT_TRUE(*parsed == expected) << typed;
  }
  // 8 reads as B.
  const auto with_b = RecoveryCode::parse("8888-8888-8888-8888-8888-8888");
  ASSERT_TRUE(with_b);
  EXPECT_EQ(text_of(*with_b), "BBBB-BBBB-BBBB-BBBB-BBBB-BBBB");
}

TEST(RecoveryCode, ParsingRefusesWrongLengthsAndCharacters) {
  const auto error = [](std::string_view text) {
    const auto r = RecoveryCode::parse(text);
    return r ? std::string("parsed") : std::string(to_string(r.error()));
  };
  const std::string wrong_length(to_string(RecoveryCodeError::wrong_length));
  const std::string invalid(to_string(RecoveryCodeError::invalid_character));
  EXPECT_EQ(error(""), wrong_length);
  EXPECT_EQ(error("----"), wrong_length);
  EXPECT_EQ(error("AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDI"), wrong_length);    // 23
  EXPECT_EQ(error("AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIOA"), wrong_length);  // 25
  EXPECT_EQ(error(std::string(10000, 'A')), wrong_length);           // refused unread
  EXPECT_EQ(error("AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDI9"), invalid);        // 9 is no look-alike
  EXPECT_EQ(error("AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDI="), invalid);        // no padding
  EXPECT_EQ(error("AAAQ_EAYE_AUDA_OCAJ_BIFQ_YDIO"), invalid);
  EXPECT_EQ(error("AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDI\xC3\x96"), invalid);  // Ö
  EXPECT_EQ(error(std::string("AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDI\0", 29)), invalid);
  // Every byte outside the alphabet, its look-alikes and the separators is refused.
  for (int c = 0; c < 256; ++c) {
    const char ch = static_cast<char>(c);
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '2' && ch <= '7') || ch == '0' || ch == '1' || ch == '8';
    const bool separator = ch == '-' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
    if (separator) continue;
    std::string text = "AAAQEAYEAUDAOCAJBIFQYDI";
    text.push_back(ch);
    EXPECT_EQ(RecoveryCode::parse(text).has_value(), ok) << c;
  }
  // The error text never repeats the input.
  EXPECT_EQ(error("AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDI9").find("AAAQ"), std::string::npos);
}

TEST(RecoveryCode, DifferentCodesGiveDifferentKeys) {
  const auto a = derive_recovery_auth_key(code_from_hex("000102030405060708090a0b0c0d0e"));
  const auto b = derive_recovery_auth_key(code_from_hex("000102030405060708090a0b0c0d0f"));
  EXPECT_NE(a.public_key(), b.public_key());
  // The key pair signs like any Ed25519 pair: the server verifies with the public key alone.
  const auto signature = a.sign(as_bytes("sotto-recover-v1"));
  EXPECT_TRUE(crypto::ed25519_verify(a.public_key(), as_bytes("sotto-recover-v1"), signature));
  EXPECT_FALSE(crypto::ed25519_verify(b.public_key(), as_bytes("sotto-recover-v1"), signature));
}

}  // namespace
}  // namespace sotto::client
