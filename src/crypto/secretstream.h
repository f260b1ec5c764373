// Authenticated encryption of a stream of messages: libsodium's
// crypto_secretstream_xchacha20poly1305 behind typed push and pull objects. Each message is
// encrypted with its own key and nonce (derived by libsodium) and authenticated together with its
// position in the stream, so a reader detects a dropped, repeated or reordered message; the last
// message carries the FINAL tag, so a reader also detects a stream cut at a message boundary.
//
// Only two tags are used: message and final. A puller refuses any other tag, and becomes closed
// after a message that fails (every later pull fails too) and after the final message; finish()
// tells whether the stream ended properly. The state (a key and a nonce) is wiped on destruction
// and when moved from. Neither class is thread-safe; both are move-only.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <tl/expected.hpp>
#include <utility>

#include "crypto/bytes.h"
#include "crypto/error.h"
#include "crypto/rng.h"
#include "crypto/secret.h"

namespace sotto::crypto {

inline constexpr std::size_t kSecretStreamKeySize = 32;
inline constexpr std::size_t kSecretStreamHeaderSize = 24;
// Per message: one encrypted tag byte and a 16-byte Poly1305 tag.
inline constexpr std::size_t kSecretStreamOverhead = 17;
// libsodium's state: key (32), nonce (12), padding (8).
inline constexpr std::size_t kSecretStreamStateSize = 52;

using SecretStreamHeader = std::array<std::uint8_t, kSecretStreamHeaderSize>;

enum class SecretStreamTag : std::uint8_t {
  message,  // more messages follow
  final,    // the last message of the stream
};

class SecretStreamPush {
 public:
  // A new stream under `key`. The header (which the reader needs first) is drawn from `rng`:
  // libsodium's init_push would draw it from its own generator, so the state is set up with
  // init_pull instead, which derives the same state from a given header (a test checks this
  // against init_push on the linked libsodium).
  SecretStreamPush(const Secret<kSecretStreamKeySize>& key, Rng& rng);
  SecretStreamPush(SecretStreamPush&& other) noexcept;
  SecretStreamPush& operator=(SecretStreamPush&& other) noexcept;
  SecretStreamPush(const SecretStreamPush&) = delete;
  SecretStreamPush& operator=(const SecretStreamPush&) = delete;
  ~SecretStreamPush() = default;  // state_ wipes itself

  const SecretStreamHeader& header() const noexcept { return header_; }

  // Encrypts the next message into `out`, which must hold exactly
  // plaintext.size() + kSecretStreamOverhead bytes; `ad` is authenticated, not sent. After the
  // final message the stream is closed.
  // REQUIRES: !closed() and the size of `out` as above (otherwise std::logic_error).
  void push(ByteView plaintext, ByteView ad, SecretStreamTag tag, std::span<std::uint8_t> out);
  [[nodiscard]] Bytes push(ByteView plaintext, ByteView ad, SecretStreamTag tag);

  // True after the final message (or when moved from).
  [[nodiscard]] bool closed() const noexcept { return closed_; }

 private:
  Secret<kSecretStreamStateSize> state_;
  SecretStreamHeader header_{};
  bool closed_ = false;
};

class SecretStreamPull {
 public:
  SecretStreamPull(const Secret<kSecretStreamKeySize>& key, const SecretStreamHeader& header);
  SecretStreamPull(SecretStreamPull&& other) noexcept;
  SecretStreamPull& operator=(SecretStreamPull&& other) noexcept;
  SecretStreamPull(const SecretStreamPull&) = delete;
  SecretStreamPull& operator=(const SecretStreamPull&) = delete;
  ~SecretStreamPull() = default;

  // Decrypts the next message into `out`, which must hold exactly
  // ciphertext.size() - kSecretStreamOverhead bytes, and returns its tag. Errors: invalid_length
  // (shorter than the overhead, or `out` of the wrong size), bad_mac (not authentic: a wrong key,
  // altered bytes, or a message out of its place), unexpected_tag (authentic, but tagged neither
  // message nor final), stream_closed (after the final message or a failure). Nothing is written
  // to `out` unless the message authenticates. Any failure but stream_closed closes the stream.
  [[nodiscard]] tl::expected<SecretStreamTag, Error> pull(ByteView ciphertext, ByteView ad,
                                                          std::span<std::uint8_t> out);
  [[nodiscard]] tl::expected<std::pair<SecretBuffer, SecretStreamTag>, Error> pull(
      ByteView ciphertext, ByteView ad);

  // Call when the input ends: succeeds only if the final message was pulled (stream_truncated
  // otherwise, or bad_mac / unexpected_tag if a message failed).
  [[nodiscard]] tl::expected<void, Error> finish() const;

  [[nodiscard]] bool final_seen() const noexcept { return final_seen_; }

 private:
  Secret<kSecretStreamStateSize> state_;
  bool final_seen_ = false;
  bool failed_ = false;
  Error failure_ = Error::bad_mac;
};

}  // namespace sotto::crypto
