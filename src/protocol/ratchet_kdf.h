// The key derivations of the Double Ratchet as Signal v3 defines them (Double Ratchet spec,
// sections 5.2 and 7; libsignal-protocol-c ratchet.c):
//   root step:    HKDF(ikm = DH, salt = root key, info = "WhisperRatchet", 64) -> root', chain
//   chain step:   chain' = HMAC-SHA256(chain, 0x02); message seed = HMAC-SHA256(chain, 0x01)
//   message keys: HKDF(ikm = seed, salt = 0^32, info = "WhisperMessageKeys", 80)
//                 -> cipher key [0,32), MAC key [32,64), IV [64,80)
// Pure functions; thread-safe.
#pragma once

#include <cstdint>

#include "crypto/secret.h"

namespace sotto::protocol {

struct MessageKeys {
  crypto::Secret<32> cipher_key;
  crypto::Secret<32> mac_key;
  crypto::Secret<16> iv;
  std::uint32_t counter = 0;

  [[nodiscard]] static MessageKeys derive(const crypto::Secret<32>& seed, std::uint32_t counter);
};

struct ChainKey;

// One step of a chain: the message key seed at this index and the chain key after it.
struct ChainStep;

struct ChainKey {
  crypto::Secret<32> key;
  std::uint32_t index = 0;

  // Both HMACs of a step under one key setup; equal to {message_seed(), next()}.
  [[nodiscard]] ChainStep step() const;
  [[nodiscard]] crypto::Secret<32> message_seed() const;
  [[nodiscard]] ChainKey next() const;
  [[nodiscard]] ChainKey clone() const { return {key.clone(), index}; }
};

struct ChainStep {
  crypto::Secret<32> seed;
  ChainKey next;
};

struct RootStep {
  crypto::Secret<32> root_key;
  ChainKey chain_key;
};

[[nodiscard]] RootStep kdf_root(const crypto::Secret<32>& root_key,
                                const crypto::Secret<32>& dh_output);

// Sender Keys (libsignal-protocol-c sender_key.c): HKDF(ikm = seed, salt = 0^32,
// info = "WhisperGroup", 48) -> IV [0,16), cipher key [16,48).
struct SenderMessageKeys {
  crypto::Secret<16> iv;
  crypto::Secret<32> cipher_key;
  std::uint32_t iteration = 0;

  [[nodiscard]] static SenderMessageKeys derive(const crypto::Secret<32>& seed,
                                                std::uint32_t iteration);
};

}  // namespace sotto::protocol
