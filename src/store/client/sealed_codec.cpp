#include "store/client/sealed_codec.h"

#include <array>
#include <cstring>
#include <span>
#include <stdexcept>

#include "crypto/cipher.h"

namespace sotto::store::detail {

std::string row_aad(std::string_view table, std::string_view column,
                    std::initializer_list<std::string_view> key_parts) {
  std::string out;
  out.append(table).append("/").append(column).append("/");
  for (std::string_view part : key_parts) {
    out.append(std::to_string(part.size())).append(":").append(part);
  }
  return out;
}

Bytes seal(const crypto::Secret<32>& key, crypto::Rng& rng, std::string_view aad,
           ByteView plaintext) {
  std::array<std::uint8_t, kSealNonceSize> nonce{};
  rng.fill(nonce);
  Bytes sealed = crypto::xchacha20poly1305_seal(key, nonce, as_bytes(aad), plaintext);
  Bytes out(nonce.size() + sealed.size());
  std::memcpy(out.data(), nonce.data(), nonce.size());
  if (!sealed.empty()) std::memcpy(out.data() + nonce.size(), sealed.data(), sealed.size());
  return out;
}

std::optional<crypto::SecretBuffer> open_sealed(const crypto::Secret<32>& key, std::string_view aad,
                                                ByteView sealed) {
  if (sealed.size() < kSealOverhead) return std::nullopt;
  const std::span<const std::uint8_t, kSealNonceSize> nonce(sealed.data(), kSealNonceSize);
  auto opened =
      crypto::xchacha20poly1305_open(key, nonce, as_bytes(aad), sealed.subspan(kSealNonceSize));
  if (!opened) return std::nullopt;
  return std::move(*opened);
}

void Packer::put(const std::uint8_t* p, std::size_t n) {
  if (n > out_.size() - pos_) throw std::logic_error("Packer: capacity exceeded");
  if (n != 0) std::memcpy(out_.data() + pos_, p, n);
  pos_ += n;
}

void Packer::u8(std::uint8_t v) {
  put(&v, 1);
}

void Packer::u16(std::uint16_t v) {
  const std::uint8_t b[2] = {static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
  put(b, 2);
}

void Packer::u32(std::uint32_t v) {
  std::uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
  put(b, 4);
}

void Packer::u64(std::uint64_t v) {
  std::uint8_t b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::uint8_t>(v >> (56 - 8 * i));
  put(b, 8);
}

void Packer::raw(ByteView bytes) {
  put(bytes.data(), bytes.size());
}

void Packer::str(std::string_view s) {
  if (s.size() > 0xFFFFFFFFu) throw std::logic_error("Packer: string too long");
  u32(static_cast<std::uint32_t>(s.size()));
  put(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

crypto::SecretBuffer Packer::finish() {
  if (pos_ != out_.size()) throw std::logic_error("Packer: size mismatch");
  pos_ = 0;
  return std::move(out_);
}

std::optional<ByteView> Unpacker::raw(std::size_t n) {
  if (n > in_.size() - pos_) return std::nullopt;
  ByteView v = in_.subspan(pos_, n);
  pos_ += n;
  return v;
}

std::optional<std::uint8_t> Unpacker::u8() {
  auto b = raw(1);
  if (!b) return std::nullopt;
  return (*b)[0];
}

std::optional<std::uint16_t> Unpacker::u16() {
  auto b = raw(2);
  if (!b) return std::nullopt;
  return static_cast<std::uint16_t>(((*b)[0] << 8) | (*b)[1]);
}

std::optional<std::uint32_t> Unpacker::u32() {
  auto b = raw(4);
  if (!b) return std::nullopt;
  std::uint32_t v = 0;
  for (std::uint8_t x : *b) v = (v << 8) | x;
  return v;
}

std::optional<std::uint64_t> Unpacker::u64() {
  auto b = raw(8);
  if (!b) return std::nullopt;
  std::uint64_t v = 0;
  for (std::uint8_t x : *b) v = (v << 8) | x;
  return v;
}

std::optional<std::string> Unpacker::str(std::size_t max_size) {
  auto n = u32();
  if (!n || *n > max_size) return std::nullopt;
  auto b = raw(*n);
  if (!b) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(b->data()), b->size());
}

}  // namespace sotto::store::detail
