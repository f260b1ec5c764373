#include "client/device_name.h"

#include <algorithm>
#include <array>

#include "client/text.h"
#include "crypto/cipher.h"
#include "crypto/hash.h"
#include "crypto/x25519.h"

namespace sotto::client {
namespace {

static_assert(kDeviceNameOverhead ==
              crypto::kX25519KeySize + crypto::kXChaChaNonceSize + crypto::kXChaChaTagSize);
static_assert(kDeviceNameOverhead + kMaxDeviceNameSize <= kMaxDeviceNameBlobSize);

bool ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

bool forbidden(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) ||  // C0, DEL, C1
         cp == 0x2028 || cp == 0x2029 ||             // line and paragraph separators
         (cp >= 0x202A && cp <= 0x202E) ||           // bidi embeddings and overrides
         (cp >= 0x2066 && cp <= 0x2069);             // bidi isolates
}

crypto::Secret<32> name_key(const crypto::Secret<32>& shared) {
  crypto::Secret<32> key;
  crypto::hkdf_sha256(shared.view(), {}, as_bytes(kDeviceNameInfo), key.span());
  return key;
}

}  // namespace

std::string_view to_string(DeviceNameError e) {
  switch (e) {
    case DeviceNameError::empty:
      return "the device name is empty";
    case DeviceNameError::too_long:
      return "the device name is longer than 64 bytes";
    case DeviceNameError::invalid_utf8:
      return "the device name is not valid UTF-8";
    case DeviceNameError::control_character:
      return "the device name has a control or direction-changing character";
    case DeviceNameError::invalid_key:
      return "the device name's key is not usable";
    case DeviceNameError::malformed:
      return "the encrypted device name is malformed";
    case DeviceNameError::does_not_open:
      return "the device name does not decrypt with this account's identity key";
  }
  return "invalid device name";
}

tl::expected<std::string, DeviceNameError> normalize_device_name(std::string_view name) {
  while (!name.empty() && ascii_space(name.front())) name.remove_prefix(1);
  while (!name.empty() && ascii_space(name.back())) name.remove_suffix(1);
  if (name.empty()) return tl::unexpected(DeviceNameError::empty);
  if (name.size() > kMaxDeviceNameSize) return tl::unexpected(DeviceNameError::too_long);
  const auto code_points = decode_utf8(name);
  if (!code_points) return tl::unexpected(DeviceNameError::invalid_utf8);
  if (std::any_of(code_points->begin(), code_points->end(), forbidden)) {
    return tl::unexpected(DeviceNameError::control_character);
  }
  return std::string(name);
}

tl::expected<Bytes, DeviceNameError> seal_device_name(std::string_view name,
                                                      const protocol::PublicKey& identity,
                                                      crypto::Rng& rng) {
  auto normalized = normalize_device_name(name);
  if (!normalized) return tl::unexpected(normalized.error());
  const crypto::X25519KeyPair ephemeral = crypto::x25519_generate(rng);
  auto shared = crypto::x25519_agree(ephemeral.private_key, identity.span());
  if (!shared) return tl::unexpected(DeviceNameError::invalid_key);
  std::array<std::uint8_t, crypto::kXChaChaNonceSize> nonce{};
  rng.fill(nonce);
  const Bytes sealed = crypto::xchacha20poly1305_seal(name_key(*shared), nonce,
                                                      ephemeral.public_key, as_bytes(*normalized));
  Bytes blob;
  blob.reserve(kDeviceNameOverhead + normalized->size());
  append(blob, ephemeral.public_key);
  append(blob, nonce);
  append(blob, sealed);
  return blob;
}

tl::expected<std::string, DeviceNameError> open_device_name(
    ByteView blob, const protocol::IdentityKeyPair& identity) {
  if (blob.size() <= kDeviceNameOverhead || blob.size() > kMaxDeviceNameBlobSize) {
    return tl::unexpected(DeviceNameError::malformed);
  }
  crypto::X25519PublicBytes ephemeral{};
  std::copy_n(blob.begin(), ephemeral.size(), ephemeral.begin());
  std::array<std::uint8_t, crypto::kXChaChaNonceSize> nonce{};
  std::copy_n(blob.begin() + crypto::kX25519KeySize, nonce.size(), nonce.begin());
  auto shared = crypto::x25519_agree(identity.private_key, ephemeral);
  if (!shared) return tl::unexpected(DeviceNameError::invalid_key);
  auto opened = crypto::xchacha20poly1305_open(name_key(*shared), nonce, ephemeral,
                                               blob.subspan(crypto::kX25519KeySize + nonce.size()));
  if (!opened) return tl::unexpected(DeviceNameError::does_not_open);
  const std::string_view name(reinterpret_cast<const char*>(opened->data()), opened->size());
  auto normalized = normalize_device_name(name);
  if (!normalized) return tl::unexpected(normalized.error());
  // A name with white space at its ends was not sealed by seal_device_name: one stored form only.
  if (*normalized != name) return tl::unexpected(DeviceNameError::malformed);
  return normalized;
}

}  // namespace sotto::client
