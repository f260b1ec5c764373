#include "protocol/ratchet_kdf.h"

#include <cstring>

#include "crypto/hash.h"

namespace sotto::protocol {
namespace {

constexpr std::uint8_t kMessageKeySeed[1] = {0x01};
constexpr std::uint8_t kChainKeySeed[1] = {0x02};

ByteView info(const char* s) {
  return as_bytes(s);
}

}  // namespace

MessageKeys MessageKeys::derive(const crypto::Secret<32>& seed, std::uint32_t counter) {
  crypto::Secret<80> okm;
  crypto::hkdf_sha256(seed.view(), {}, info("WhisperMessageKeys"), okm.span());
  MessageKeys keys;
  std::memcpy(keys.cipher_key.data(), okm.data(), 32);
  std::memcpy(keys.mac_key.data(), okm.data() + 32, 32);
  std::memcpy(keys.iv.data(), okm.data() + 64, 16);
  keys.counter = counter;
  return keys;
}

crypto::Secret<32> ChainKey::message_seed() const {
  return crypto::hmac_sha256(key.view(), {ByteView(kMessageKeySeed)});
}

ChainKey ChainKey::next() const {
  return {crypto::hmac_sha256(key.view(), {ByteView(kChainKeySeed)}), index + 1};
}

ChainStep ChainKey::step() const {
  ChainStep out;
  out.next.index = index + 1;
  crypto::hmac_sha256_pair(key.view(), ByteView(kMessageKeySeed), out.seed, ByteView(kChainKeySeed),
                           out.next.key);
  return out;
}

RootStep kdf_root(const crypto::Secret<32>& root_key, const crypto::Secret<32>& dh_output) {
  crypto::Secret<64> okm;
  crypto::hkdf_sha256(dh_output.view(), root_key.view(), info("WhisperRatchet"), okm.span());
  RootStep step;
  std::memcpy(step.root_key.data(), okm.data(), 32);
  std::memcpy(step.chain_key.key.data(), okm.data() + 32, 32);
  step.chain_key.index = 0;
  return step;
}

SenderMessageKeys SenderMessageKeys::derive(const crypto::Secret<32>& seed,
                                            std::uint32_t iteration) {
  crypto::Secret<48> okm;
  crypto::hkdf_sha256(seed.view(), {}, info("WhisperGroup"), okm.span());
  SenderMessageKeys keys;
  std::memcpy(keys.iv.data(), okm.data(), 16);
  std::memcpy(keys.cipher_key.data(), okm.data() + 16, 32);
  keys.iteration = iteration;
  return keys;
}

}  // namespace sotto::protocol
