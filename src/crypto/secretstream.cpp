#include "crypto/secretstream.h"

#include <sodium.h>

#include <stdexcept>

namespace sotto::crypto {
namespace {

using State = crypto_secretstream_xchacha20poly1305_state;

// The state is three byte arrays, so it can live in a Secret's bytes (which wipe themselves).
static_assert(sizeof(State) == kSecretStreamStateSize && alignof(State) == 1);
static_assert(crypto_secretstream_xchacha20poly1305_KEYBYTES == kSecretStreamKeySize);
static_assert(crypto_secretstream_xchacha20poly1305_HEADERBYTES == kSecretStreamHeaderSize);
static_assert(crypto_secretstream_xchacha20poly1305_ABYTES == kSecretStreamOverhead);

State* as_state(Secret<kSecretStreamStateSize>& s) {
  return reinterpret_cast<State*>(s.data());
}

unsigned char sodium_tag(SecretStreamTag tag) {
  return tag == SecretStreamTag::final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                                       : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
}

// libsodium aborts the process on a message above its maximum (about 256 GiB); refuse first.
bool too_long(std::size_t n) {
  return n > crypto_secretstream_xchacha20poly1305_MESSAGEBYTES_MAX;
}

}  // namespace

SecretStreamPush::SecretStreamPush(const Secret<kSecretStreamKeySize>& key, Rng& rng) {
  ensure_sodium_initialized();
  rng.fill(header_);
  crypto_secretstream_xchacha20poly1305_init_pull(as_state(state_), header_.data(), key.data());
}

SecretStreamPush::SecretStreamPush(SecretStreamPush&& other) noexcept
    : state_(std::move(other.state_)), header_(other.header_), closed_(other.closed_) {
  other.closed_ = true;
}

SecretStreamPush& SecretStreamPush::operator=(SecretStreamPush&& other) noexcept {
  if (this != &other) {
    state_ = std::move(other.state_);
    header_ = other.header_;
    closed_ = other.closed_;
    other.closed_ = true;
  }
  return *this;
}

void SecretStreamPush::push(ByteView plaintext, ByteView ad, SecretStreamTag tag,
                            std::span<std::uint8_t> out) {
  if (closed_) throw std::logic_error("secretstream: push after the final message");
  if (too_long(plaintext.size()) || out.size() != plaintext.size() + kSecretStreamOverhead) {
    throw std::logic_error("secretstream: output size does not match the message");
  }
  unsigned long long out_len = 0;
  if (crypto_secretstream_xchacha20poly1305_push(as_state(state_), out.data(), &out_len,
                                                 plaintext.data(), plaintext.size(), ad.data(),
                                                 ad.size(), sodium_tag(tag)) != 0 ||
      out_len != out.size()) {
    throw std::runtime_error("secretstream: libsodium push failed");
  }
  if (tag == SecretStreamTag::final) closed_ = true;
}

Bytes SecretStreamPush::push(ByteView plaintext, ByteView ad, SecretStreamTag tag) {
  Bytes out(plaintext.size() + kSecretStreamOverhead);
  push(plaintext, ad, tag, out);
  return out;
}

SecretStreamPull::SecretStreamPull(const Secret<kSecretStreamKeySize>& key,
                                   const SecretStreamHeader& header) {
  ensure_sodium_initialized();
  crypto_secretstream_xchacha20poly1305_init_pull(as_state(state_), header.data(), key.data());
}

SecretStreamPull::SecretStreamPull(SecretStreamPull&& other) noexcept
    : state_(std::move(other.state_)),
      final_seen_(other.final_seen_),
      failed_(other.failed_),
      failure_(other.failure_) {
  other.failed_ = true;
  other.failure_ = Error::stream_closed;
}

SecretStreamPull& SecretStreamPull::operator=(SecretStreamPull&& other) noexcept {
  if (this != &other) {
    state_ = std::move(other.state_);
    final_seen_ = other.final_seen_;
    failed_ = other.failed_;
    failure_ = other.failure_;
    other.failed_ = true;
    other.failure_ = Error::stream_closed;
  }
  return *this;
}

tl::expected<SecretStreamTag, Error> SecretStreamPull::pull(ByteView ciphertext, ByteView ad,
                                                            std::span<std::uint8_t> out) {
  if (failed_ || final_seen_) return tl::unexpected(Error::stream_closed);
  const auto fail = [this](Error e) {
    failed_ = true;
    failure_ = e;
    return tl::unexpected(e);
  };
  if (ciphertext.size() < kSecretStreamOverhead ||
      out.size() != ciphertext.size() - kSecretStreamOverhead || too_long(out.size())) {
    return fail(Error::invalid_length);
  }
  unsigned long long out_len = 0;
  unsigned char tag = 0;
  // libsodium checks the Poly1305 tag before it writes any plaintext or advances the state.
  if (crypto_secretstream_xchacha20poly1305_pull(as_state(state_), out.data(), &out_len, &tag,
                                                 ciphertext.data(), ciphertext.size(), ad.data(),
                                                 ad.size()) != 0) {
    return fail(Error::bad_mac);
  }
  if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
    final_seen_ = true;
    return SecretStreamTag::final;
  }
  if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) {
    // PUSH or REKEY: authentic, but no writer of ours makes them.
    secure_wipe(out.data(), out.size());
    return fail(Error::unexpected_tag);
  }
  return SecretStreamTag::message;
}

tl::expected<std::pair<SecretBuffer, SecretStreamTag>, Error> SecretStreamPull::pull(
    ByteView ciphertext, ByteView ad) {
  if (failed_ || final_seen_) return tl::unexpected(Error::stream_closed);
  if (ciphertext.size() < kSecretStreamOverhead) {
    failed_ = true;
    failure_ = Error::invalid_length;
    return tl::unexpected(Error::invalid_length);
  }
  SecretBuffer out(ciphertext.size() - kSecretStreamOverhead);
  auto tag = pull(ciphertext, ad, out.span());
  if (!tag) return tl::unexpected(tag.error());
  return std::pair<SecretBuffer, SecretStreamTag>(std::move(out), *tag);
}

tl::expected<void, Error> SecretStreamPull::finish() const {
  if (failed_) return tl::unexpected(failure_);
  if (!final_seen_) return tl::unexpected(Error::stream_truncated);
  return {};
}

}  // namespace sotto::crypto
