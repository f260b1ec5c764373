// A Sotto protocol participant with in-memory stores, for tests and benchmarks.
#pragma once

#include <memory>
#include <string>

#include "crypto/rng.h"
#include "protocol/bundle.h"
#include "protocol/clock.h"
#include "protocol/in_memory_stores.h"
#include "protocol/session.h"

namespace sotto::testing {

struct Party {
  Party(std::string name, std::uint32_t device, std::uint64_t seed);

  // Hands out the next one-time prekey when `with_one_time_pre_key`.
  protocol::PreKeyBundle bundle(bool with_one_time_pre_key);
  protocol::Address address() const { return {name, protocol::DeviceId(device)}; }
  protocol::SessionStores stores() { return {*identities, sessions, pre_keys, signed_pre_keys}; }

  tl::expected<protocol::CiphertextMessage, protocol::Error> encrypt(const protocol::Address& to,
                                                                      std::string_view text);
  // Decrypts by message type; returns the plaintext as a string.
  tl::expected<std::string, protocol::Error> decrypt(const protocol::Address& from,
                                                     const protocol::CiphertextMessage& m);

  std::string name;
  std::uint32_t device;
  crypto::DeterministicRng rng;
  protocol::ManualClock clock;
  protocol::IdentityKeyPair identity;
  protocol::RegistrationId registration_id;
  std::unique_ptr<protocol::InMemoryIdentityKeyStore> identities;
  protocol::InMemorySessionStore sessions;
  protocol::InMemoryPreKeyStore pre_keys;
  protocol::InMemorySignedPreKeyStore signed_pre_keys;
  protocol::InMemorySenderKeyStore sender_keys;
  protocol::SignedPreKeyRecord signed_pre_key;
  std::uint32_t next_pre_key = 1;
  std::uint32_t pre_key_count = 100;
};

}  // namespace sotto::testing
