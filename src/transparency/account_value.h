// What the log says about one account (a label): its identity key and its device list, in one
// canonical encoding, hidden behind a commitment; and the chain of a label's versions whose head
// is the label's leaf in the prefix tree (docs/transparency.md, "Data structures").
// Plain values and pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <tl/expected.hpp>
#include <vector>

#include "contract/limits.h"
#include "crypto/bytes.h"
#include "transparency/error.h"
#include "transparency/log_tree.h"

namespace sotto::transparency {

inline constexpr std::size_t kIdentityKeySize = 33;  // 0x05 || X25519 public key
inline constexpr std::size_t kAuthKeySize = 32;      // the device's Ed25519 public key
inline constexpr std::size_t kMaxDevices = contract::kMaxMessagesPerSend;
inline constexpr std::size_t kMaxDeviceName = contract::kMaxDeviceNameBytes;
inline constexpr std::size_t kOpeningSize = 32;
inline constexpr std::size_t kMaxLabelSize = 255;

struct DeviceEntry {
  std::uint32_t device_id = 0;
  std::uint32_t registration_id = 0;
  std::array<std::uint8_t, kAuthKeySize> auth_key{};
  Bytes name;  // the name as the server holds it (sealed by the account), at most 256 bytes
  friend bool operator==(const DeviceEntry&, const DeviceEntry&) = default;
};

struct AccountValue {
  std::array<std::uint8_t, kIdentityKeySize> identity_key{};
  std::vector<DeviceEntry> devices;  // strictly increasing device_id
  friend bool operator==(const AccountValue&, const AccountValue&) = default;
};

// u8 format (1) || identity_key[33] || u8 device count ||
//   (u32 device_id || u32 registration_id || auth_key[32] || u16 name length || name)*
// REQUIRES for encode: valid(value). decode refuses unsorted or repeated device ids, too many
// devices, over-long names and trailing bytes, so each value has exactly one encoding.
[[nodiscard]] bool valid(const AccountValue& value);
Bytes encode_account_value(const AccountValue& value);
[[nodiscard]] tl::expected<AccountValue, Error> decode_account_value(ByteView bytes);

using Opening = std::array<std::uint8_t, kOpeningSize>;

// HMAC-SHA-256 keyed with a fixed public key over opening || u8 label length || label ||
// encoded value: hiding while the opening is unknown, binding like SHA-256.
Hash commit(const Opening& opening, std::string_view label, ByteView encoded_value);

// One version of a label as the chain records it.
struct VersionLink {
  std::uint32_t version = 0;  // 1, 2, ...
  std::uint64_t entry = 0;    // the log entry that added it
  Hash commitment{};
  friend bool operator==(const VersionLink&, const VersionLink&) = default;
};

// chain_0 = 32 zero bytes; chain_v = SHA-256(0x03 || chain_{v-1} || u32 version || u64 entry ||
// commitment). The prefix tree leaf of a label is the chain after its latest version.
Hash chain_next(const Hash& previous, const VersionLink& link);

}  // namespace sotto::transparency
