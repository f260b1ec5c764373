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
// Auditors (sotto-audit): audit answers and co-signatures per source address. An auditor catching
// up on a log of a million entries asks about a thousand times (kMaxAuditRecordsPerAnswer).
inline constexpr std::uint32_t kKtAuditsPerAddressPerMinute = 1200;
inline constexpr std::uint32_t kKtAuditsBurst = 200;
// The least burst of the per-account login bucket (config logins_per_account_per_minute): ten
// devices of one account reconnecting at once, a few times over.
inline constexpr std::uint32_t kMinLoginsPerAccountBurst = 30;

// The multi-recipient send (service.proto MultiSendRequest; docs/abuse.md, "Group sends").
// Recipients (accounts) in one request: a group of 1,024 members needs 1,023 plus our own
// account; twice that leaves room for larger groups without letting one request look up
// arbitrarily many accounts (each is a lookup, and the request is held in memory until durable).
inline constexpr std::size_t kMaxMultiSendRecipients = 2048;
// Devices (envelopes) in one request: 1,024 members with 8 devices each. One request's work (a
// row per offline device, a push per online one) is bounded by this; the frame limit
// (max_frame_bytes, 2 MiB) bounds its bytes, per-device contents included.
inline constexpr std::size_t kMaxMultiSendDevices = 8192;
// Devices listed for one recipient: as many as a SendRequest may address.
inline constexpr std::size_t kMaxMultiSendDevicesPerRecipient = kMaxMessagesPerSend;
// A multi-send takes one token of the per-account send bucket (sends_per_minute) per this many
// envelopes, rounded up: the most a SendRequest can create with its one token. A bucket then
// bounds the envelopes an account makes per minute whichever request it uses, while a group
// message to 10 members costs what a 1:1 message does, and one to 1,024 members with two devices
// each costs 32 (a burst of 300 holds nine of those, then one every 1.6 s).
inline constexpr std::size_t kEnvelopesPerSendToken = kMaxMessagesPerSend;

}  // namespace sotto::server
