// The sizes and limits the client and the server must agree on (docs/wire-format.md): a client
// built with other values than the server's is refused, or wastes requests. Server-only limits,
// most of them operator settings, are in src/server/limits.h and config.h.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sotto::contract {

inline constexpr std::size_t kChallengeSize = 32;  // ChallengeResponse.nonce
inline constexpr std::size_t kInstanceSize = 16;   // AuthenticateRequest.instance
inline constexpr std::size_t kProvisioningAddressSize = 16;
inline constexpr std::size_t kMaxProvisioningMessageBytes = 64 * 1024;
inline constexpr std::size_t kLinkTokenSize = 32;
inline constexpr std::size_t kRecoveryKeySize = 32;      // Ed25519 public key
inline constexpr std::size_t kClientMessageIdSize = 16;  // SendRequest.client_message_id
inline constexpr std::size_t kEnvelopeIdSize = 16;       // Envelope.id
inline constexpr std::size_t kMaxPreKeysPerUpload = 200;
inline constexpr std::size_t kMaxMessagesPerSend = 64;   // devices of recipient + own
inline constexpr std::size_t kMaxDeviceNameBytes = 256;  // NewDevice.name, encrypted
inline constexpr std::size_t kMaxAckIds = 4096;          // ids in one AckRequest
// The prekey low-water mark: below this many one-time prekeys the server pushes KeysLow, and a
// client that counts its keys uploads more.
inline constexpr std::uint32_t kPreKeysLowThreshold = 10;

}  // namespace sotto::contract
