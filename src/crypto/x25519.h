// X25519 key pairs and Diffie-Hellman agreement (RFC 7748) over libsodium. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include <tl/expected.hpp>

#include "crypto/error.h"
#include "crypto/rng.h"
#include "crypto/secret.h"

namespace sotto::crypto {

inline constexpr std::size_t kX25519KeySize = 32;
using X25519PublicBytes = std::array<std::uint8_t, kX25519KeySize>;

struct X25519KeyPair {
  X25519PublicBytes public_key;
  Secret<kX25519KeySize> private_key;  // clamped
};

// Clamps as RFC 7748 section 5 decodes scalars, so stored private keys match what the reference
// library stores.
void x25519_clamp(Secret<kX25519KeySize>& scalar) noexcept;

[[nodiscard]] X25519KeyPair x25519_generate(Rng& rng);
[[nodiscard]] X25519PublicBytes x25519_public_from_private(const Secret<kX25519KeySize>& priv);

// Fails with invalid_key when the result is all zero (a low-order peer key), which no honest
// peer can produce.
[[nodiscard]] tl::expected<Secret<32>, Error> x25519_agree(
    const Secret<kX25519KeySize>& priv, std::span<const std::uint8_t, kX25519KeySize> their_public);

}  // namespace sotto::crypto
