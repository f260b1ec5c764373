// Tests of src/contract, what client, server and load tool must build alike: the username rule,
// the exact bytes each signature covers (a change here is a wire change: old clients could no
// longer log in), time-ordered ids, and the text encodings of crypto/encoding.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "contract/ids.h"
#include "contract/limits.h"
#include "contract/signatures.h"
#include "contract/username.h"
#include "crypto/encoding.h"
#include "crypto/rng.h"

namespace sotto::contract {
namespace {

Bytes bytes_of(std::string_view s) {
  return Bytes(s.begin(), s.end());
}

TEST(ContractUsername, NormalizesCaseAndAcceptsTheAllowedCharacters) {
  EXPECT_EQ(normalize_username("Alice"), "alice");
  EXPECT_EQ(normalize_username("bob.smith_2-x"), "bob.smith_2-x");
  EXPECT_EQ(normalize_username("9lives"), "9lives");
  EXPECT_EQ(normalize_username(std::string(kMaxUsernameLength, 'a')),
            std::string(kMaxUsernameLength, 'a'));
  EXPECT_EQ(normalize_username("abc"), "abc");
}

TEST(ContractUsername, RefusesWhatTheRuleExcludes) {
  EXPECT_FALSE(normalize_username("ab"));
  EXPECT_FALSE(normalize_username(""));
  EXPECT_FALSE(normalize_username(std::string(kMaxUsernameLength + 1, 'a')));
  EXPECT_FALSE(normalize_username("-bob"));
  EXPECT_FALSE(normalize_username(".bob"));
  EXPECT_FALSE(normalize_username("_bob"));
  EXPECT_FALSE(normalize_username("bob smith"));
  EXPECT_FALSE(normalize_username("bob@x"));
  EXPECT_FALSE(normalize_username("b\xc3\xb6rk"));  // no letters outside ASCII
  EXPECT_FALSE(normalize_username(std::string("bo\0b", 4)));
}

TEST(ContractSignatures, TheContextsAreTheOnesOnTheWire) {
  // Changing one of these locks every existing client out: they are part of the wire.
  EXPECT_EQ(kAuthContext, "sotto-auth-v1");
  EXPECT_EQ(kBoundAuthContext, "sotto-auth-tls-v1");
  EXPECT_EQ(kDeviceContext, "sotto-device-v1");
  EXPECT_EQ(kRecoverContext, "sotto-recover-v1");
}

TEST(ContractSignatures, ALoginCoversItsContextThenTheNonce) {
  const Bytes nonce(kChallengeSize, 0xAB);
  Bytes expected = bytes_of("sotto-auth-v1");
  expected.insert(expected.end(), nonce.begin(), nonce.end());
  EXPECT_EQ(login_message(false, nonce), expected);
  expected = bytes_of("sotto-auth-tls-v1");
  expected.insert(expected.end(), nonce.begin(), nonce.end());
  EXPECT_EQ(login_message(true, nonce), expected);
  // A signature over one can never pass for the other.
  EXPECT_NE(login_message(true, nonce), login_message(false, nonce));
}

TEST(ContractSignatures, ADeviceBindingCoversTheUsernameThenTheAuthKey) {
  const Bytes auth_key(32, 0x11);
  Bytes expected = bytes_of("sotto-device-v1alice");
  expected.insert(expected.end(), auth_key.begin(), auth_key.end());
  EXPECT_EQ(device_binding("alice", auth_key), expected);
}

TEST(ContractSignatures, ARecoveryCoversEveryKeyItInstalls) {
  const Bytes nonce(32, 1), identity(33, 2), auth(32, 3), next(32, 4);
  Bytes expected = bytes_of("sotto-recover-v1");
  for (const Bytes* part : {&nonce}) expected.insert(expected.end(), part->begin(), part->end());
  const Bytes name = bytes_of("bob");
  expected.insert(expected.end(), name.begin(), name.end());
  for (const Bytes* part : {&identity, &auth, &next})
    expected.insert(expected.end(), part->begin(), part->end());
  EXPECT_EQ(recovery_message(nonce, "bob", identity, auth, next), expected);
}

TEST(ContractIds, TheTimeComesFirstBigEndianThenTheUniqueBytes) {
  std::array<std::uint8_t, kIdUniqueBytes> unique{};
  for (std::size_t i = 0; i < unique.size(); ++i) unique[i] = static_cast<std::uint8_t>(0xA0 + i);
  const TimeOrderedId id = time_ordered_id(0x0000'0102'0304'0506ULL, unique);
  const TimeOrderedId expected = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0xA0, 0xA1,
                                  0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9};
  EXPECT_EQ(id, expected);
  EXPECT_EQ(id_time_ms(id), 0x0102'0304'0506ULL);
  EXPECT_EQ(id_time_ms(ByteView(id.data(), 5)), 0u);
}

TEST(ContractIds, LaterIdsSortAfterEarlierOnes) {
  crypto::DeterministicRng rng(7);
  TimeOrderedId previous = time_ordered_id(1'700'000'000'000ULL, rng);
  for (std::uint64_t t = 1'700'000'000'001ULL; t < 1'700'000'000'300ULL; t += 7) {
    const TimeOrderedId id = time_ordered_id(t, rng);
    EXPECT_TRUE(
        std::lexicographical_compare(previous.begin(), previous.end(), id.begin(), id.end()));
    EXPECT_EQ(id_time_ms(id), t);
    previous = id;
  }
}

TEST(ContractIds, RandomIdsDrawSixteenBytesAndKeepTheLastTen) {
  // The draw clients have always made: 16 random bytes, the first 6 then replaced by the time.
  crypto::DeterministicRng a(42), b(42);
  std::array<std::uint8_t, kIdSize> drawn{};
  b.fill(drawn);
  const TimeOrderedId id = time_ordered_id(5, a);
  EXPECT_TRUE(std::equal(id.begin() + kIdTimeBytes, id.end(), drawn.begin() + kIdTimeBytes));
  EXPECT_EQ(id_time_ms(id), 5u);
}

TEST(ContractLimits, SizesAgreeWithTheIds) {
  EXPECT_EQ(kClientMessageIdSize, kIdSize);
  EXPECT_EQ(kEnvelopeIdSize, kIdSize);
}

}  // namespace
}  // namespace sotto::contract

namespace sotto::crypto {
namespace {

TEST(Encoding, HexRoundTripsAndReadsEitherCase) {
  const Bytes b = {0x00, 0x01, 0xab, 0xff, 0x7f};
  EXPECT_EQ(to_hex(b), "0001abff7f");
  EXPECT_EQ(from_hex("0001abff7f"), b);
  EXPECT_EQ(from_hex("0001ABFF7F"), b);
  EXPECT_EQ(from_hex(""), Bytes{});
  EXPECT_EQ(to_hex(Bytes{}), "");
}

TEST(Encoding, HexRefusesOddLengthsAndOtherCharacters) {
  EXPECT_FALSE(from_hex("abc"));
  EXPECT_FALSE(from_hex("zz"));
  EXPECT_FALSE(from_hex("0 "));
  EXPECT_FALSE(from_hex("0x00"));
}

TEST(Encoding, Base32MatchesRfc4648WithoutPadding) {
  // RFC 4648 section 10, padding removed.
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},
      {"f", "MY"},
      {"fo", "MZXQ"},
      {"foo", "MZXW6"},
      {"foob", "MZXW6YQ"},
      {"fooba", "MZXW6YTB"},
      {"foobar", "MZXW6YTBOI"},
  };
  for (const auto& [plain, encoded] : vectors) {
    const Bytes p(plain.begin(), plain.end());
    EXPECT_EQ(base32_encode(p), encoded);
    EXPECT_EQ(base32_decode(encoded), p);
    std::string lower(encoded);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](char c) { return static_cast<char>(std::tolower(c)); });
    EXPECT_EQ(base32_decode(lower), p) << lower;
  }
}

TEST(Encoding, Base32RefusesOtherCharactersAndStrayBits) {
  EXPECT_FALSE(base32_decode("MY="));
  EXPECT_FALSE(base32_decode("M1"));      // 1 is not in the alphabet
  EXPECT_FALSE(base32_decode("MZ"));      // leftover bits that are not zero
  EXPECT_FALSE(base32_decode("MZXW6Y"));  // six characters cannot end a whole byte string
}

}  // namespace
}  // namespace sotto::crypto
