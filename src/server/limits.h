// Named limits of the server, with their defaults. Operators override most of them in the TOML
// config (config.h); the protocol-level bounds here are fixed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/limits.h"
#include "contract/username.h"

namespace sotto::server {

// What the clients must agree with (src/contract).
using contract::kChallengeSize;
using contract::kClientMessageIdSize;
using contract::kEnvelopeIdSize;
using contract::kInstanceSize;
using contract::kLinkTokenSize;
using contract::kMaxAckIds;
using contract::kMaxDeviceNameBytes;
using contract::kMaxMessagesPerSend;
using contract::kMaxPreKeysPerUpload;
using contract::kMaxProvisioningMessageBytes;
using contract::kMaxUsernameLength;
using contract::kMinUsernameLength;
using contract::kPreKeysLowThreshold;
using contract::kProvisioningAddressSize;
using contract::kRecoveryKeySize;

inline constexpr std::uint64_t kChallengeLifetimeSeconds = 60;
inline constexpr std::uint64_t kLinkTokenLifetimeSeconds = 600;
inline constexpr std::size_t kDrainBatch = 128;         // envelopes pushed per batch
inline constexpr std::size_t kMaxInflightPushes = 512;  // unacknowledged pushes per device
// Delivery is also paced by bytes (net::Connection::writable): one read of a drain from the store
// stops at the envelope that brings its content to this many bytes (so it holds at least one),
// and a backlog of maximum-size messages is read about one at a time, each read only when the
// connection has room for it, instead of kDrainBatch at once; small envelopes still come
// kDrainBatch to a read.
inline constexpr std::size_t kDrainLoadBytes = 256 * 1024;
// Recovery attempts per account, whatever the source address: each is a guess at the account's
// recovery code. Counted in memory only (a restart forgets them).
inline constexpr std::uint32_t kRecoveriesPerAccountPerHour = 5;
// Block and unblock requests per account (each is a write): far above what a person does by hand,
// low enough that toggling a block in a loop does not load the store's writer.
inline constexpr std::uint32_t kBlockChangesPerAccountPerMinute = 30;
inline constexpr std::uint32_t kBlockChangesBurst = 20;
// The least burst of the per-account login bucket (config logins_per_account_per_minute): ten
// devices of one account reconnecting at once, a few times over.
inline constexpr std::uint32_t kMinLoginsPerAccountBurst = 30;

}  // namespace sotto::server
