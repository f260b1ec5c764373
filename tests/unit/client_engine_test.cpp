// Unit tests of the client engine's pure parts: text encodings, link codes, provisioning
// envelopes, content padding, reconnect backoff and username rules. The flows that need a server
// (send, receive, linking) are covered end to end by tests/e2e.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "client/provisioning.h"
#include "client/stored_values.h"
#include "client/util.h"
#include "content.pb.h"
#include "crypto/rng.h"
#include "sotto/client.h"

namespace sotto::client {
namespace {

TEST(ClientHex, RoundTripsAndRejectsBadInput) {
  const Bytes b{0x00, 0x01, 0xab, 0xff};
  EXPECT_EQ(to_hex(b), "0001abff");
  EXPECT_EQ(from_hex("0001ABff"), b);
  EXPECT_FALSE(from_hex("abc"));
  EXPECT_FALSE(from_hex("zz"));
}

// RFC 4648 section 10, without padding.
TEST(ClientBase32, Rfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {{"", ""},
                                                         {"f", "MY"},
                                                         {"fo", "MZXQ"},
                                                         {"foo", "MZXW6"},
                                                         {"foob", "MZXW6YQ"},
                                                         {"fooba", "MZXW6YTB"},
                                                         {"foobar", "MZXW6YTBOI"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base32_encode(as_bytes(plain)), encoded);
    auto decoded = base32_decode(encoded);
    ASSERT_TRUE(decoded) << encoded;
    EXPECT_EQ(std::string(decoded->begin(), decoded->end()), plain);
    auto lower = encoded;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_TRUE(base32_decode(lower));
  }
  EXPECT_FALSE(base32_decode("MZ"));  // non-zero leftover bits
  EXPECT_FALSE(base32_decode("M0"));  // outside the alphabet
  EXPECT_FALSE(base32_decode("MZXW6Y1B"));
}

TEST(ClientLinkCode, RoundTripsInGroupsOfFour) {
  crypto::DeterministicRng rng(7);
  LinkCode code;
  rng.fill(code.address);
  rng.fill(code.public_key);
  const std::string text = encode_link_code(code);
  ASSERT_EQ(text.size(), 80u + 19u);
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (i % 5 == 4) {
      EXPECT_EQ(text[i], '-');
    }
  }
  auto decoded = decode_link_code(text);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->address, code.address);
  EXPECT_EQ(decoded->public_key, code.public_key);

  // Case and dashes do not matter.
  std::string loose;
  for (char c : text) {
    if (c != '-') loose += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  EXPECT_TRUE(decode_link_code(loose));
}

TEST(ClientLinkCode, RejectsTyposAndWrongLengths) {
  crypto::DeterministicRng rng(8);
  LinkCode code;
  rng.fill(code.address);
  rng.fill(code.public_key);
  const std::string text = encode_link_code(code);
  int detected = 0, total = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '-') continue;
    std::string typo = text;
    typo[i] = typo[i] == 'A' ? 'B' : 'A';
    ++total;
    auto r = decode_link_code(typo);
    if (!r) {
      ++detected;
      EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    }
  }
  // A 16-bit check misses about one typo in 65536; none of these.
  EXPECT_EQ(detected, total);
  EXPECT_FALSE(decode_link_code(text.substr(0, text.size() - 1)));
  EXPECT_FALSE(decode_link_code(text + "AAAA"));
  EXPECT_FALSE(decode_link_code("not a code"));
}

TEST(ClientProvisioning, SealOpenRoundTrip) {
  crypto::DeterministicRng rng(9);
  const crypto::X25519KeyPair device = crypto::x25519_generate(rng);
  wire::content::ProvisionMessage message;
  message.set_username("alice");
  message.set_identity_private(std::string(32, '\x42'));
  message.set_link_token(std::string(32, '\x07'));
  const std::string plain = message.SerializeAsString();

  const Bytes sealed = seal_provision(as_bytes(plain), device.public_key, rng);
  auto opened = open_provision(sealed, device);
  ASSERT_TRUE(opened);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(opened->data()), opened->size()), plain);

  // Another device's key does not open it.
  const crypto::X25519KeyPair other = crypto::x25519_generate(rng);
  EXPECT_FALSE(open_provision(sealed, other));

  // Any change to the ciphertext is detected.
  wire::content::ProvisionEnvelope envelope;
  ASSERT_TRUE(envelope.ParseFromArray(sealed.data(), static_cast<int>(sealed.size())));
  std::string ct = envelope.ciphertext();
  ct[ct.size() / 2] ^= 1;
  envelope.set_ciphertext(ct);
  const std::string tampered = envelope.SerializeAsString();
  EXPECT_FALSE(open_provision(as_bytes(tampered), device));
  EXPECT_FALSE(open_provision(as_bytes(std::string("garbage")), device));
}

TEST(ClientPadding, ContentLandsOnBlockBoundaries) {
  for (std::size_t n = 0; n < 3 * kPaddingBlock + 7; ++n) {
    const std::size_t pad = padding_length(n);
    std::size_t varint = 1;
    for (std::size_t v = pad; v >= 0x80; v >>= 7) ++varint;
    EXPECT_EQ((n + 1 + varint + pad) % kPaddingBlock, 0u) << n;
    // At most one block of padding, except where the length varint grows (then two).
    EXPECT_LT(pad, 2 * kPaddingBlock) << n;
  }
  for (std::size_t body : {0u, 1u, 100u, 150u, 158u, 159u, 160u, 1000u, 5000u}) {
    wire::content::Content c;
    c.mutable_data()->set_body(std::string(body, 'x'));
    c.mutable_data()->set_timestamp(1700000000000);
    c.set_padding(std::string(padding_length(c.ByteSizeLong()), '\0'));
    EXPECT_EQ(c.ByteSizeLong() % kPaddingBlock, 0u) << body;
    wire::content::Content parsed;
    ASSERT_TRUE(parsed.ParseFromString(c.SerializeAsString()));
    EXPECT_EQ(parsed.data().body().size(), body);
  }
}

TEST(ClientBackoff, GrowsWithJitterUpToTheCap) {
  crypto::DeterministicRng rng(10);
  Backoff b(std::chrono::milliseconds(100), std::chrono::milliseconds(3000));
  std::int64_t full = 100;
  for (int i = 0; i < 12; ++i) {
    const auto d = b.next(rng).count();
    EXPECT_GE(d, full / 2) << i;
    EXPECT_LE(d, full) << i;
    full = std::min<std::int64_t>(full * 2, 3000);
  }
  b.reset();
  EXPECT_LE(b.next(rng).count(), 100);
  // Jitter spreads clients apart.
  std::set<std::int64_t> seen;
  for (int i = 0; i < 20; ++i) {
    Backoff fresh(std::chrono::milliseconds(1000), std::chrono::milliseconds(1000));
    seen.insert(fresh.next(rng).count());
  }
  EXPECT_GT(seen.size(), 10u);
}

TEST(ClientUsername, NormalisesAsTheServerDoes) {
  EXPECT_EQ(normalize_username("Alice"), "alice");
  EXPECT_EQ(normalize_username("bob.smith_2-x"), "bob.smith_2-x");
  EXPECT_FALSE(normalize_username("ab"));
  EXPECT_FALSE(normalize_username(std::string(33, 'a')));
  EXPECT_FALSE(normalize_username("-bob"));
  EXPECT_FALSE(normalize_username("bob smith"));
  EXPECT_FALSE(
      normalize_username("b\xc3\xb6"
                         "b"));
}

// The client's own stored values (client/stored_values.h) read back from a damaged file: what
// does not decode reads as empty or is skipped, never as something else.
TEST(ClientStoredValues, DamagedValuesReadAsEmptyOrSkipped) {
  const std::set<std::string> names{"alice", "bob.smith"};
  EXPECT_EQ(decode_names(encode_names(names)), names);
  const std::string damaged = "alice\nBad Name\n\n" + std::string(500, 'x') + "\nBOB\ncarol";
  EXPECT_EQ(decode_names(as_bytes(damaged)), (std::set<std::string>{"alice", "bob"}))
      << "malformed names skipped, case folded, an unterminated last one dropped";

  const std::map<std::uint32_t, std::uint64_t> missing{{7, 1'700'000'000'000}, {0xFFFFFFFF, 1}};
  const Bytes encoded = encode_missing(missing);
  EXPECT_EQ(encoded.size(), 24u);
  EXPECT_EQ(decode_missing(encoded), missing);
  Bytes truncated(encoded.begin(), encoded.end() - 1);
  EXPECT_TRUE(decode_missing(truncated).empty()) << "a length that is not 12 x n reads as empty";
}

}  // namespace
}  // namespace sotto::client
