// Encrypted device names (src/client/device_name.h).
#include "client/device_name.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "crypto/cipher.h"
#include "crypto/hash.h"
#include "crypto/x25519.h"

namespace sotto::client {
namespace {

struct Account {
  explicit Account(std::uint64_t seed) : rng(seed), identity(protocol::KeyPair::generate(rng)) {}
  crypto::DeterministicRng rng;
  protocol::IdentityKeyPair identity;
};

TEST(DeviceName, RoundTripWithTheAccountsIdentityKey) {
  Account account(1);
  for (const std::string& name :
       std::vector<std::string>{"Alice's laptop", "x", "Büro-PC 🖥", std::string(64, 'n')}) {
    const auto blob = seal_device_name(name, account.identity.public_key, account.rng);
    ASSERT_TRUE(blob) << name;
    EXPECT_EQ(blob->size(), kDeviceNameOverhead + name.size());
    EXPECT_LE(blob->size(), kMaxDeviceNameBlobSize);
    // Another device of the account holds the same identity key pair.
    const protocol::IdentityKeyPair other_device = account.identity.clone();
    const auto opened = open_device_name(*blob, other_device);
    ASSERT_TRUE(opened) << name;
    EXPECT_EQ(*opened, name);
  }
}

TEST(DeviceName, SealingIsRandomisedAndTheServerSeesNoName) {
  Account account(2);
  const auto a = seal_device_name("phone", account.identity.public_key, account.rng);
  const auto b = seal_device_name("phone", account.identity.public_key, account.rng);
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);  // fresh ephemeral key and nonce each time
  EXPECT_EQ(std::string(a->begin(), a->end()).find("phone"), std::string::npos);
}

// The blob is exactly the documented construction, rebuilt here from the primitives.
TEST(DeviceName, BlobIsTheDocumentedConstruction) {
  Account account(3);
  const auto blob = seal_device_name("desk", account.identity.public_key, account.rng);
  ASSERT_TRUE(blob);
  crypto::X25519PublicBytes ephemeral{};
  std::copy_n(blob->begin(), 32, ephemeral.begin());
  std::array<std::uint8_t, 24> nonce{};
  std::copy_n(blob->begin() + 32, 24, nonce.begin());
  const auto shared = crypto::x25519_agree(account.identity.private_key, ephemeral);
  ASSERT_TRUE(shared);
  crypto::Secret<32> key;
  crypto::hkdf_sha256(shared->view(), {}, as_bytes("sotto-device-name-v1"), key.span());
  const auto plain =
      crypto::xchacha20poly1305_open(key, nonce, ephemeral, ByteView(*blob).subspan(56));
  ASSERT_TRUE(plain);
  EXPECT_EQ(std::string(plain->view().begin(), plain->view().end()), "desk");
}

TEST(DeviceName, AnotherAccountsKeyDoesNotOpenIt) {
  Account alice(4);
  Account bob(5);
  const auto blob = seal_device_name("alice's phone", alice.identity.public_key, alice.rng);
  ASSERT_TRUE(blob);
  EXPECT_EQ(open_device_name(*blob, bob.identity).error(), DeviceNameError::does_not_open);
}

TEST(DeviceName, EveryAlteredByteIsDetected) {
  Account account(6);
  const auto blob = seal_device_name("tablet", account.identity.public_key, account.rng);
  ASSERT_TRUE(blob);
  for (std::size_t i = 0; i < blob->size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      Bytes bad = *blob;
      bad[i] ^= static_cast<std::uint8_t>(1 << bit);
      const auto opened = open_device_name(bad, account.identity);
      ASSERT_FALSE(opened) << i << " " << bit;
      // Flipping the ephemeral key's top bit changes nothing for X25519 (RFC 7748 masks it), but
      // the key is also the associated data, so the tag still fails.
      EXPECT_TRUE(opened.error() == DeviceNameError::does_not_open ||
                  opened.error() == DeviceNameError::invalid_key)
          << i << " " << bit;
    }
  }
  // Cut short, extended, empty.
  EXPECT_EQ(open_device_name(ByteView(*blob).first(blob->size() - 1), account.identity).error(),
            DeviceNameError::does_not_open);
  Bytes longer = *blob;
  longer.push_back(0);
  EXPECT_EQ(open_device_name(longer, account.identity).error(), DeviceNameError::does_not_open);
  EXPECT_EQ(open_device_name({}, account.identity).error(), DeviceNameError::malformed);
  EXPECT_EQ(open_device_name(ByteView(*blob).first(kDeviceNameOverhead), account.identity).error(),
            DeviceNameError::malformed);
  EXPECT_EQ(open_device_name(Bytes(kMaxDeviceNameBlobSize + 1), account.identity).error(),
            DeviceNameError::malformed);
}

TEST(DeviceName, NamesAreTrimmedAndChecked) {
  Account account(7);
  const auto seal = [&](std::string_view name) {
    return seal_device_name(name, account.identity.public_key, account.rng);
  };
  const auto trimmed = seal("  \tkitchen tablet \n");
  ASSERT_TRUE(trimmed);
  EXPECT_EQ(*open_device_name(*trimmed, account.identity), "kitchen tablet");

  EXPECT_EQ(seal("").error(), DeviceNameError::empty);
  EXPECT_EQ(seal(" \t\r\n ").error(), DeviceNameError::empty);
  EXPECT_EQ(seal(std::string(65, 'n')).error(), DeviceNameError::too_long);
  EXPECT_TRUE(seal("  " + std::string(64, 'n') + "  "));  // 64 once trimmed
  EXPECT_EQ(seal(std::string(21, 'x') + "\xF0\x9F\x99\x82" + std::string(40, 'x')).error(),
            DeviceNameError::too_long);  // bytes, not characters: 65
  EXPECT_EQ(seal("bad \xC3(").error(), DeviceNameError::invalid_utf8);
  EXPECT_EQ(seal("overlong \xC0\xAF").error(), DeviceNameError::invalid_utf8);
  EXPECT_EQ(seal("surrogate \xED\xA0\x80").error(), DeviceNameError::invalid_utf8);
  EXPECT_EQ(seal("cut \xE2\x82").error(), DeviceNameError::invalid_utf8);
  EXPECT_EQ(seal("two\nlines").error(), DeviceNameError::control_character);
  EXPECT_EQ(seal(std::string("nul\0inside", 10)).error(), DeviceNameError::control_character);
  EXPECT_EQ(seal("bell\a").error(), DeviceNameError::control_character);
  EXPECT_EQ(seal("del\x7F").error(), DeviceNameError::control_character);
  EXPECT_EQ(seal("c1 \xC2\x85").error(), DeviceNameError::control_character);       // U+0085
  EXPECT_EQ(seal("ls \xE2\x80\xA8").error(), DeviceNameError::control_character);   // U+2028
  EXPECT_EQ(seal("rlo \xE2\x80\xAE").error(), DeviceNameError::control_character);  // U+202E
  EXPECT_EQ(seal("fsi \xE2\x81\xA8").error(), DeviceNameError::control_character);  // U+2068
  EXPECT_TRUE(seal("nbsp\xC2\xA0ok"));  // U+00A0 is printable
}

// A name sealed by something other than seal_device_name is checked as strictly when opened.
TEST(DeviceName, OpeningChecksTheDecryptedName) {
  Account account(8);
  const auto seal_raw = [&](std::string_view name) {
    const crypto::X25519KeyPair ephemeral = crypto::x25519_generate(account.rng);
    const auto shared =
        crypto::x25519_agree(ephemeral.private_key, account.identity.public_key.span());
    crypto::Secret<32> key;
    crypto::hkdf_sha256(shared->view(), {}, as_bytes(kDeviceNameInfo), key.span());
    std::array<std::uint8_t, 24> nonce{};
    account.rng.fill(nonce);
    Bytes blob(ephemeral.public_key.begin(), ephemeral.public_key.end());
    append(blob, nonce);
    append(blob, crypto::xchacha20poly1305_seal(key, nonce, ephemeral.public_key, as_bytes(name)));
    return blob;
  };
  EXPECT_EQ(*open_device_name(seal_raw("fine"), account.identity), "fine");
  EXPECT_EQ(open_device_name(seal_raw("\xFF\xFE"), account.identity).error(),
            DeviceNameError::invalid_utf8);
  EXPECT_EQ(open_device_name(seal_raw("a\x1B[31mred"), account.identity).error(),
            DeviceNameError::control_character);
  EXPECT_EQ(open_device_name(seal_raw(std::string(100, 'n')), account.identity).error(),
            DeviceNameError::too_long);
  EXPECT_EQ(open_device_name(seal_raw(" padded"), account.identity).error(),
            DeviceNameError::malformed);
}

TEST(DeviceName, LowOrderKeysAreRefused) {
  Account account(9);
  // The all-zero point: X25519 with it is all zero, which x25519_agree refuses.
  const protocol::PublicKey zero(crypto::X25519PublicBytes{});
  EXPECT_EQ(seal_device_name("name", zero, account.rng).error(), DeviceNameError::invalid_key);
  Bytes blob(kDeviceNameOverhead + 4, 0);
  EXPECT_EQ(open_device_name(blob, account.identity).error(), DeviceNameError::invalid_key);
}

}  // namespace
}  // namespace sotto::client
