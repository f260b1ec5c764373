// Named limits of the protocol layer, with the reason for each. docs/protocol.md explains them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sotto::protocol {

// Message version 3 (X3DH + Double Ratchet, AES-256-CBC + HMAC-SHA256, 8-byte MAC) as
// libsignal-protocol-c speaks it. Version byte = (3 << 4) | 3.
inline constexpr std::uint8_t kMessageVersion = 3;
inline constexpr std::uint8_t kVersionByte = (kMessageVersion << 4) | kMessageVersion;

inline constexpr std::size_t kMacSize = 8;  // truncated HMAC-SHA256
inline constexpr std::size_t kSignatureSize = 64;

// A counter may run at most this far ahead of the receiving chain; a higher counter is rejected
// before any derivation, which bounds the work a forged message can cause.
inline constexpr std::uint32_t kMaxForwardJumps = 2000;
// Skipped message keys kept per receiver chain; the oldest are dropped first.
inline constexpr std::size_t kMaxMessageKeys = 2000;
// Receiver chains kept per session state (older chains only serve late messages).
inline constexpr std::size_t kMaxReceiverChains = 5;
// Archived session states per record (simultaneous initiation, re-installed peers).
inline constexpr std::size_t kMaxArchivedStates = 40;
// Skipped keys older than this are deleted: the server expires undelivered messages after 30 days
// (docs/architecture.md section 1), so no message can still arrive for them.
inline constexpr std::uint64_t kMaxSkippedKeyAgeSeconds = 30ull * 24 * 3600;

// Sender Keys.
inline constexpr std::uint32_t kMaxSenderKeyForwardJumps = 2000;
inline constexpr std::size_t kMaxSenderMessageKeys = 2000;
inline constexpr std::size_t kMaxSenderKeyStates = 5;

// Sizes of untrusted input, checked before parsing.
inline constexpr std::size_t kMaxMessageBytes = 256 * 1024;
inline constexpr std::size_t kMaxBundleBytes = 1024;
inline constexpr std::size_t kMaxSessionRecordBytes = 32 * 1024 * 1024;
inline constexpr std::size_t kMaxSenderKeyRecordBytes = 2 * 1024 * 1024;

// Safety numbers.
inline constexpr int kFingerprintIterations = 5200;

}  // namespace sotto::protocol
