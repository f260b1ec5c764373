// Encryption at rest for the client store (internal to src/store/client), and the small binary
// codec of the records the store seals itself (settings, contact trust state, prekeys).
//
// A sealed column holds nonce (24 random bytes) || XChaCha20-Poly1305 ciphertext || tag, with
// associated data "table/column/row-key" (row_aad), so that a value moved to another row, column
// or table fails to open. The row key is a list of length-prefixed parts ("5:alice3:17"), so no
// two different keys give the same associated data.
//
// Packer writes into wiped-on-release memory whose size is computed up front (it never grows, so
// it never leaves an unwiped copy); Unpacker reads strictly (no short fields, no trailing bytes).
// Thread-compatible.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "crypto/bytes.h"
#include "crypto/rng.h"
#include "crypto/secret.h"
#include "store/client/client_store.h"

namespace sotto::store::detail {

inline constexpr std::size_t kSealNonceSize = 24;
inline constexpr std::size_t kSealTagSize = 16;
inline constexpr std::size_t kSealOverhead = kSealNonceSize + kSealTagSize;

// "table/column/" followed by each part as "<length>:<bytes>".
[[nodiscard]] std::string row_aad(std::string_view table, std::string_view column,
                                  std::initializer_list<std::string_view> key_parts);

[[nodiscard]] Bytes seal(const crypto::Secret<32>& key, crypto::Rng& rng, std::string_view aad,
                         ByteView plaintext);
// nullopt when the value is too short to hold a nonce and a tag, or fails authentication.
[[nodiscard]] std::optional<crypto::SecretBuffer> open_sealed(const crypto::Secret<32>& key,
                                                              std::string_view aad,
                                                              ByteView sealed);

class Packer {
 public:
  // Sizes of the fields, for computing the capacity before packing.
  static constexpr std::size_t kU8 = 1, kU16 = 2, kU32 = 4, kU64 = 8;
  static constexpr std::size_t str_size(std::string_view s) { return kU32 + s.size(); }

  explicit Packer(std::size_t capacity) : out_(capacity) {}
  void u8(std::uint8_t v);
  void u16(std::uint16_t v);
  void u32(std::uint32_t v);
  void u64(std::uint64_t v);
  void raw(ByteView bytes);      // fixed-size field: no length prefix
  void str(std::string_view s);  // u32 length || bytes
  // REQUIRES: exactly `capacity` bytes were packed (a broken invariant throws).
  [[nodiscard]] crypto::SecretBuffer finish();

 private:
  void put(const std::uint8_t* p, std::size_t n);
  crypto::SecretBuffer out_;
  std::size_t pos_ = 0;
};

class Unpacker {
 public:
  explicit Unpacker(ByteView in) : in_(in) {}
  [[nodiscard]] std::optional<std::uint8_t> u8();
  [[nodiscard]] std::optional<std::uint16_t> u16();
  [[nodiscard]] std::optional<std::uint32_t> u32();
  [[nodiscard]] std::optional<std::uint64_t> u64();
  // A view into the input of exactly n bytes.
  [[nodiscard]] std::optional<ByteView> raw(std::size_t n);
  // A length-prefixed string of at most max_size bytes (for non-secret text only).
  [[nodiscard]] std::optional<std::string> str(std::size_t max_size);
  [[nodiscard]] bool done() const { return pos_ == in_.size(); }

 private:
  ByteView in_;
  std::size_t pos_ = 0;
};

// The records the store seals itself, as plaintext. Decoding is strict (a version byte, fixed
// sizes, no trailing bytes; nullopt for anything else) and a decoded record encodes to the same
// bytes. The settings rebuild the authentication key pair from its seed: a record whose stored
// public key is not the seed's own is refused like any malformed one.
[[nodiscard]] crypto::SecretBuffer encode_settings(const AccountSettings& s);
[[nodiscard]] std::optional<AccountSettings> decode_settings(ByteView bytes);

// A contact's trust state (`contacts.state`). Version 1 records (before `accepted` existed)
// decode with accepted = the key never changed or was verified, which is what they meant; the
// store writes version 2.
struct ContactState {
  std::optional<protocol::PublicKey> key;
  bool accepted = false;
  bool verified = false;
  std::uint64_t changed_at = 0;
};
[[nodiscard]] crypto::SecretBuffer encode_contact(const ContactState& c);
[[nodiscard]] std::optional<ContactState> decode_contact(ByteView bytes);

// A message held back until its sender's key is accepted (`held.record`); the peer is the row's.
[[nodiscard]] crypto::SecretBuffer encode_held_message(const StoredMessage& m);
[[nodiscard]] std::optional<StoredMessage> decode_held_message(ByteView bytes);

[[nodiscard]] crypto::SecretBuffer encode_pre_key(const protocol::PreKeyRecord& r);
[[nodiscard]] std::optional<protocol::PreKeyRecord> decode_pre_key(protocol::PreKeyId id,
                                                                   ByteView bytes);
[[nodiscard]] crypto::SecretBuffer encode_signed_pre_key(const protocol::SignedPreKeyRecord& r);
[[nodiscard]] std::optional<protocol::SignedPreKeyRecord> decode_signed_pre_key(
    protocol::SignedPreKeyId id, ByteView bytes);

}  // namespace sotto::store::detail
