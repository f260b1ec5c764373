// The storage interfaces the protocol layer reaches its state through (it never touches a file).
// Clients implement them on their own store (src/store/client); in_memory_stores.h has versions
// for tests, benchmarks and bots that keep nothing. Loads return a copy the caller owns: protocol
// operations work on that copy and save it back only when they succeed. Implementations decide
// their own thread-safety; the protocol layer calls them from one thread at a time per address.
#pragma once

#include <optional>

#include <tl/expected.hpp>

#include "protocol/error.h"
#include "protocol/keys.h"
#include "protocol/session_state.h"
#include "protocol/types.h"

namespace sotto::protocol {

class SenderKeyRecord;

enum class Direction { sending, receiving };

class IdentityKeyStore {
 public:
  virtual ~IdentityKeyStore() = default;
  [[nodiscard]] virtual tl::expected<IdentityKeyPair, Error> identity_key_pair() = 0;
  [[nodiscard]] virtual tl::expected<RegistrationId, Error> local_registration_id() = 0;
  // Records `key` as the identity of `address`'s account. Returns true when it replaced a
  // different key (the caller reports a safety-number change).
  [[nodiscard]] virtual tl::expected<bool, Error> save_identity(const Address& address,
                                                                const PublicKey& key) = 0;
  [[nodiscard]] virtual tl::expected<bool, Error> is_trusted_identity(const Address& address,
                                                                      const PublicKey& key,
                                                                      Direction direction) = 0;
  [[nodiscard]] virtual tl::expected<std::optional<PublicKey>, Error> load_identity(
      const Address& address) = 0;
};

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  [[nodiscard]] virtual tl::expected<std::optional<SessionRecord>, Error> load_session(
      const Address& address) = 0;
  [[nodiscard]] virtual tl::expected<void, Error> save_session(const Address& address,
                                                               const SessionRecord& record) = 0;
};

class PreKeyStore {
 public:
  virtual ~PreKeyStore() = default;
  [[nodiscard]] virtual tl::expected<std::optional<PreKeyRecord>, Error> load_pre_key(PreKeyId id) = 0;
  [[nodiscard]] virtual tl::expected<void, Error> save_pre_key(const PreKeyRecord& record) = 0;
  [[nodiscard]] virtual tl::expected<void, Error> remove_pre_key(PreKeyId id) = 0;
};

class SignedPreKeyStore {
 public:
  virtual ~SignedPreKeyStore() = default;
  [[nodiscard]] virtual tl::expected<std::optional<SignedPreKeyRecord>, Error> load_signed_pre_key(
      SignedPreKeyId id) = 0;
  [[nodiscard]] virtual tl::expected<void, Error> save_signed_pre_key(
      const SignedPreKeyRecord& record) = 0;
};

class SenderKeyStore {
 public:
  virtual ~SenderKeyStore() = default;
  [[nodiscard]] virtual tl::expected<std::optional<SenderKeyRecord>, Error> load_sender_key(
      const SenderKeyName& name) = 0;
  [[nodiscard]] virtual tl::expected<void, Error> save_sender_key(const SenderKeyName& name,
                                                                  const SenderKeyRecord& record) = 0;
};

}  // namespace sotto::protocol
