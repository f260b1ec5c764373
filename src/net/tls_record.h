// TlsRecordLayer: TLS 1.3 record protection for a connection whose handshake is over (RFC 8446
// sections 5.1-5.5, 7.1-7.3, and 4.6.3 for KeyUpdate). Internal to src/net.
//
// Why: OpenSSL 3.0 keeps about 13 KB per connection for as long as it is open (the `SSL` object,
// its session, two cipher contexts), while an established TLS 1.3 connection needs only two
// traffic secrets, keys, IVs and sequence numbers. The server lets OpenSSL run the handshake, then
// takes the application traffic secrets and protects records here; an idle connection then holds
// about 250 bytes of TLS state (bench/README.md, "Memory per idle connection").
//
// Primitives are OpenSSL's: HKDF (EVP_KDF "HKDF", expand only) and the AEADs (EVP_CIPHER, one
// context per thread, keyed for each record and keyed with zeros after it, so that no key of a
// closed connection stays in memory). What is ours is the composition: HKDF-Expand-Label, the
// per-record nonce, the record and inner-plaintext formats, KeyUpdate. It is checked against
// RFC 8448's traces and against OpenSSL's own TLS stack (tests/unit/tls_record_test.cpp).
//
// Not thread-safe; one instance per connection. Secrets are wiped when replaced or destroyed.
#pragma once

#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "crypto/bytes.h"
#include "crypto/secret.h"

namespace sotto::net::detail {

// Why a record stream failed; messages name the rule broken, never any bytes.
enum class TlsRecordError {
  bad_record_mac = 1,  // authentication failed (wrong key, tampering, or a wrong sequence)
  record_overflow,     // a record longer than RFC 8446 allows
  unexpected_message,  // a record type or handshake message not allowed after the handshake
  decode_error,        // a malformed alert or KeyUpdate
  illegal_parameter,   // a KeyUpdate whose request is neither 0 nor 1
  peer_alert,          // the peer sent an error alert
  sequence_exhausted,  // 2^64 records under one key
  internal_error,      // key derivation failed (OpenSSL broken)
};
const boost::system::error_category& tls_record_category() noexcept;
boost::system::error_code make_error_code(TlsRecordError e) noexcept;

class TlsRecordLayer {
 public:
  static constexpr std::size_t kHeaderSize = 5;
  static constexpr std::size_t kTagSize = 16;
  static constexpr std::size_t kMaxPlaintext = 16384;                 // 2^14
  static constexpr std::size_t kMaxCiphertext = kMaxPlaintext + 256;  // the length field's limit
  static constexpr std::size_t kMaxRecord = kHeaderSize + kMaxCiphertext;
  // Bytes a sealed record adds to its content: header, inner content type, tag.
  static constexpr std::size_t kSealOverhead = kHeaderSize + 1 + kTagSize;
  // A KeyUpdate record: 4-byte handshake header and 1-byte body, sealed.
  static constexpr std::size_t kKeyUpdateRecordSize = 5 + kSealOverhead;
  // seal_data() may write this much more than its input: a KeyUpdate record, then the data's.
  static constexpr std::size_t kMaxSealExpansion = kKeyUpdateRecordSize + kSealOverhead;
  // Records protected by one write key before it is updated: RFC 8446 section 5.5 allows about
  // 2^24.5 full-size records under one AES-GCM key; half of 2^24 leaves a wide margin.
  static constexpr std::uint64_t kDefaultKeyUpdateAfter = std::uint64_t{1} << 23;

  // The TLS 1.3 cipher suites (their IANA code points).
  static constexpr std::uint16_t kAes128GcmSha256 = 0x1301;
  static constexpr std::uint16_t kAes256GcmSha384 = 0x1302;
  static constexpr std::uint16_t kChaCha20Poly1305Sha256 = 0x1303;

  // The layer for `suite` whose peer protects with `read_secret` (its next record numbered
  // `read_seq`) and which protects with `write_secret` (next record `write_seq`). Nullopt for
  // an unknown suite or a secret whose size is not the suite's hash length.
  static std::optional<TlsRecordLayer> create(std::uint16_t suite, ByteView read_secret,
                                              std::uint64_t read_seq, ByteView write_secret,
                                              std::uint64_t write_seq);

  TlsRecordLayer(TlsRecordLayer&&) noexcept = default;
  TlsRecordLayer& operator=(TlsRecordLayer&&) noexcept = default;

  // What open() found at the start of its input.
  struct Opened {
    enum Kind {
      incomplete,  // not a whole record yet: read more (nothing consumed, nothing changed)
      data,        // application data at [bytes, bytes + size), possibly empty
      control,  // a KeyUpdate, part of one, or a user_canceled alert: handled, nothing to deliver
      closed,   // close_notify: the peer sends nothing more
      failed,   // the stream is broken (error says why); send `alert` and close
    };
    Kind kind = incomplete;
    std::size_t consumed = 0;  // bytes of input used
    std::uint8_t* bytes = nullptr;
    std::size_t size = 0;
    boost::system::error_code error;
    int alert = -1;  // the alert description to send on failure; -1: none (the peer's alert)
  };

  // Opens the record at the start of [in, in + size), decrypting it in place. After `failed`
  // or `closed`, every further call returns the same.
  Opened open(std::uint8_t* in, std::size_t size);

  // Seals `n` <= kMaxPlaintext bytes of application data into `out`, which has room for
  // n + kMaxSealExpansion bytes; returns the bytes written. When a KeyUpdate is owed (the peer
  // asked for one, or the key has protected key_update_after() records), a KeyUpdate record
  // comes first and the data goes under the new key. Returns 0 if OpenSSL failed (then the layer
  // seals nothing more: the connection must end).
  std::size_t seal_data(const std::uint8_t* in, std::size_t n, std::uint8_t* out);
  // Seals an alert (level fatal, except close_notify, which is a warning) into `out`, which has
  // room for kMaxSealExpansion bytes; returns the bytes written, 0 as seal_data.
  std::size_t seal_alert(std::uint8_t description, std::uint8_t* out);

  std::uint16_t suite() const noexcept { return suite_; }
  std::uint64_t read_sequence() const noexcept { return read_.seq; }
  std::uint64_t write_sequence() const noexcept { return write_.seq; }
  bool key_update_owed() const noexcept { return update_owed_; }
  // For tests: update the write key after this many records instead of the default.
  void set_key_update_after(std::uint64_t records) noexcept { update_after_ = records; }

  // Alert descriptions (RFC 8446 section 6).
  static constexpr std::uint8_t kCloseNotify = 0;
  static constexpr std::uint8_t kUnexpectedMessage = 10;
  static constexpr std::uint8_t kBadRecordMac = 20;
  static constexpr std::uint8_t kRecordOverflow = 22;
  static constexpr std::uint8_t kIllegalParameter = 47;
  static constexpr std::uint8_t kDecodeError = 50;
  static constexpr std::uint8_t kInternalError = 80;
  static constexpr std::uint8_t kUserCanceled = 90;

 private:
  // One direction's keys. The secret is kept for KeyUpdate.
  struct Direction {
    crypto::Secret<48> secret;  // the current application traffic secret (hash_len bytes)
    crypto::Secret<32> key;
    crypto::Secret<12> iv;
    std::uint64_t seq = 0;
  };

  TlsRecordLayer() = default;
  bool set_keys(Direction& d, ByteView secret);
  bool update(Direction& d);  // secret <- HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)
  std::size_t seal(std::uint8_t type, const std::uint8_t* in, std::size_t n, std::uint8_t* out);
  Opened fail(TlsRecordError e, int alert, std::size_t consumed);
  Opened handshake(std::uint8_t* p, std::size_t n, std::size_t consumed);

  std::uint16_t suite_ = 0;
  std::size_t hash_len_ = 0;
  std::size_t key_len_ = 0;
  Direction read_;
  Direction write_;
  std::uint64_t update_after_ = kDefaultKeyUpdateAfter;
  bool update_owed_ = false;  // send a KeyUpdate before the next application data
  bool broken_ = false;       // sealing failed once: nothing more is sealed
  // A handshake message split across records (only KeyUpdate is accepted, so at most 4 bytes wait).
  std::uint8_t hs_buf_[4] = {};
  std::uint8_t hs_len_ = 0;
  // Sticky outcome once the stream failed or was closed.
  Opened::Kind final_ = Opened::incomplete;
  boost::system::error_code final_error_;
  int final_alert_ = -1;
};

}  // namespace sotto::net::detail

namespace boost::system {
template <>
struct is_error_code_enum<sotto::net::detail::TlsRecordError> : std::true_type {};
}  // namespace boost::system
