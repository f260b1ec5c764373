#include "client/provisioning.h"

#include <algorithm>
#include <cstring>

#include "client/util.h"
#include "content.pb.h"
#include "crypto/cipher.h"
#include "crypto/hash.h"

namespace sotto::client {

namespace {
constexpr std::string_view kProvisionInfo = "sotto-provision-v1";
constexpr std::size_t kCodeBytes =
    kProvisioningAddressSize + crypto::kX25519KeySize + kLinkCodeChecksumSize;
constexpr std::size_t kGroup = 4;

struct SealKeys {
  crypto::Secret<32> key;
  std::array<std::uint8_t, crypto::kAesGcmNonceSize> nonce{};
};

SealKeys derive(const crypto::Secret<32>& shared) {
  crypto::Secret<44> okm;
  crypto::hkdf_sha256(shared.view(), {}, as_bytes(kProvisionInfo), okm.span());
  SealKeys out{crypto::Secret<32>(ByteView(okm.data(), 32)), {}};
  std::memcpy(out.nonce.data(), okm.data() + 32, out.nonce.size());
  return out;
}
}  // namespace

std::string encode_link_code(const LinkCode& code) {
  Bytes raw;
  raw.insert(raw.end(), code.address.begin(), code.address.end());
  raw.insert(raw.end(), code.public_key.begin(), code.public_key.end());
  const auto check = crypto::sha256({raw});
  raw.insert(raw.end(), check.begin(), check.begin() + kLinkCodeChecksumSize);
  const std::string plain = base32_encode(raw);
  std::string out;
  for (std::size_t i = 0; i < plain.size(); ++i) {
    if (i > 0 && i % kGroup == 0) out += '-';
    out += plain[i];
  }
  return out;
}

Result<LinkCode> decode_link_code(std::string_view text) {
  std::string compact;
  for (char c : text) {
    if (c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    compact += c;
  }
  auto raw = base32_decode(compact);
  if (!raw || raw->size() != kCodeBytes) {
    return tl::unexpected(make_error(
        ErrorCode::invalid_argument,
        "not a link code: it has 80 characters A-Z and 2-7 (in groups of 4); type it exactly as "
        "the new device shows it"));
  }
  const ByteView body(raw->data(), kCodeBytes - kLinkCodeChecksumSize);
  const auto check = crypto::sha256({body});
  if (!std::equal(check.begin(), check.begin() + kLinkCodeChecksumSize,
                  raw->begin() + static_cast<std::ptrdiff_t>(body.size()))) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the link code has a typo (its check digits do not match); "
                                     "type it exactly as the new device shows it"));
  }
  LinkCode code;
  std::copy_n(raw->begin(), kProvisioningAddressSize, code.address.begin());
  std::copy_n(raw->begin() + kProvisioningAddressSize, crypto::kX25519KeySize,
              code.public_key.begin());
  return code;
}

Bytes seal_provision(ByteView provision_message, const crypto::X25519PublicBytes& device_key,
                     crypto::Rng& rng) {
  const crypto::X25519KeyPair ephemeral = crypto::x25519_generate(rng);
  auto shared = crypto::x25519_agree(ephemeral.private_key, device_key);
  wire::content::ProvisionEnvelope envelope;
  envelope.set_ephemeral_public(std::string(
      reinterpret_cast<const char*>(ephemeral.public_key.data()), ephemeral.public_key.size()));
  if (shared) {
    const SealKeys keys = derive(*shared);
    const Bytes sealed =
        crypto::aes256_gcm_seal(keys.key, keys.nonce, as_bytes(kProvisionInfo), provision_message);
    envelope.set_ciphertext(std::string(sealed.begin(), sealed.end()));
  }
  // A low-order device key (no honest device shows one) leaves the ciphertext empty; the new
  // device then fails to open it.
  std::string out = envelope.SerializeAsString();
  return Bytes(out.begin(), out.end());
}

Result<crypto::SecretBuffer> open_provision(ByteView bytes,
                                            const crypto::X25519KeyPair& device_key) {
  const auto fail = [] {
    return tl::unexpected(make_error(ErrorCode::protocol,
                                     "the provisioning message does not decrypt (was it sealed to "
                                     "another code?)"));
  };
  wire::content::ProvisionEnvelope envelope;
  if (!envelope.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return fail();
  if (envelope.ephemeral_public().size() != crypto::kX25519KeySize) return fail();
  crypto::X25519PublicBytes ephemeral{};
  std::memcpy(ephemeral.data(), envelope.ephemeral_public().data(), ephemeral.size());
  auto shared = crypto::x25519_agree(device_key.private_key, ephemeral);
  if (!shared) return fail();
  const SealKeys keys = derive(*shared);
  auto opened = crypto::aes256_gcm_open(keys.key, keys.nonce, as_bytes(kProvisionInfo),
                                        as_bytes(envelope.ciphertext()));
  if (!opened) return fail();
  return std::move(*opened);
}

}  // namespace sotto::client
