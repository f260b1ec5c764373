// The device's keys on the server: generating them for a new device (registration, linking,
// recovery), and keeping them fresh: one-time prekeys replenished when the server runs low, the
// signed prekey rotated weekly, and everything replaced when this copy of the device's data is
// not the one that last used it (a data directory restored from a backup or copied): the server
// may then hold prekeys whose private halves only the other copy has, and every session a
// contact built on one would fail.
//
// And pruning: the private half of a one-time prekey the server has handed out is needed only
// until the message that uses it arrives, and a message waits on the server for its TTL at most.
// So each maintenance asks the server which ids it still holds (and its TTL), notes when each
// other id was first seen missing, and deletes the private halves missing for longer than the
// TTL. A signed prekey is deleted once the TTL has passed since the one after it replaced it.
#pragma once

#include <chrono>
#include <vector>

#include "client/account.h"
#include "client/server_link.h"
#include "contract/limits.h"
#include "protocol/keys.h"

namespace sotto::client {

inline constexpr std::size_t kPreKeyBatch = 100;  // one-time prekeys per upload
// Replenish below this: the low-water mark at which the server pushes KeysLow (src/contract).
inline constexpr std::uint32_t kPreKeyLowWater = contract::kPreKeysLowThreshold;
inline constexpr std::uint64_t kSignedPreKeyMaxAgeSeconds = 7 * 24 * 3600;  // rotate weekly
inline constexpr std::uint32_t kMaxPreKeyId = 0xFFFFFE;
// The copy of the data (ServerLink::instance_of) that last refreshed the device's keys.
inline constexpr std::string_view kKeysInstanceValue = "instance.keys";
// One-time prekeys whose private halves we hold and the server no longer does, with the time
// (seconds) this device first saw each missing: (id, since) pairs, 4 + 8 bytes big-endian.
inline constexpr std::string_view kMissingPreKeysValue = "pre_keys.missing";
// The least message TTL pruning assumes, whatever the server says (its config allows >= 1 day).
inline constexpr std::uint64_t kMinPruneTtlSeconds = 24 * 3600;

// Keys of a device being added.
struct DeviceKeys {
  protocol::RegistrationId registration_id;
  crypto::Ed25519KeyPair auth_key;
  protocol::SignedPreKeyRecord signed_pre_key;
  std::vector<protocol::PreKeyRecord> pre_keys;
};

[[nodiscard]] DeviceKeys generate_device_keys(crypto::Rng& rng,
                                              const protocol::IdentityKeyPair& identity,
                                              std::uint64_t now_s);
// A NewDevice with the identity's signature binding the auth key to the account (the server
// checks "sotto-device-v1" || username || auth_key); `name` is the sealed device name or empty.
void fill_new_device(svc::NewDevice& d, const std::string& username,
                     const protocol::IdentityKeyPair& identity, const DeviceKeys& keys,
                     crypto::Rng& rng, ByteView name);
[[nodiscard]] Result<void> save_device_keys(store::ClientStore& store, const DeviceKeys& keys);
[[nodiscard]] std::uint32_t next_pre_key_id(std::uint32_t start, std::size_t count);

class KeyMaintenance {
 public:
  KeyMaintenance(Account& account, ServerLink& link) : account_(account), link_(link) {}

  // Replenishes, rotates or replaces as described above; one request when nothing is due.
  [[nodiscard]] Result<void> maintain(const ConnectionPtr& c);
  // After a one-shot command: maintain() when the server said KeysLow, the signed prekey is due
  // or this copy of the data has not refreshed the keys yet.
  void maintain_if_due(const ConnectionPtr& c);

 private:
  // Whether this copy of the data must replace the device's keys on the server.
  [[nodiscard]] Result<bool> copy_changed(Bytes& instance);
  // Deletes the private prekeys no message can use any more (see above), given the server's
  // answer to a KeyCountRequest with list_ids. REQUIRES: account_.crypto_mu held.
  [[nodiscard]] Result<void> prune(const svc::KeyCountResponse& held, std::uint64_t now);

  Account& account_;
  ServerLink& link_;
};

}  // namespace sotto::client
