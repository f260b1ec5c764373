#include "crypto/base64.h"

#include <sodium.h>

namespace sotto::crypto {

namespace {
constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
}  // namespace

std::string base64url_encode(ByteView bytes) {
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), kVariant);
  out.resize(out.size() - 1);  // the encoder's terminating NUL
  return out;
}

std::optional<Bytes> base64url_decode(std::string_view text, std::size_t max_bytes) {
  // Every 4 characters are 3 bytes; a longer text cannot fit (and is not worth decoding).
  if (text.size() > (max_bytes / 3) * 4 + (max_bytes % 3 == 0 ? 0 : max_bytes % 3 + 1)) {
    return std::nullopt;
  }
  Bytes out(max_bytes);
  std::size_t n = 0;
  const char* end = nullptr;
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &n, &end,
                        kVariant) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(n);
  return out;
}

}  // namespace sotto::crypto
