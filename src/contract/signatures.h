// What a device signs, and with which context string, so that the client's signature and the
// server's check are built from one definition (docs/wire-format.md, "Logging in";
// docs/architecture.md section 4). Each context names its purpose and version, so a signature
// made for one purpose never verifies for another. Pure; thread-safe.
#pragma once

#include <string_view>

#include "crypto/bytes.h"

namespace sotto::contract {

// A login over a challenge nonce (ChallengeRequest, then AuthenticateRequest).
inline constexpr std::string_view kAuthContext = "sotto-auth-v1";
// A login over the connection's TLS channel binding (the proof in the upgrade request).
inline constexpr std::string_view kBoundAuthContext = "sotto-auth-tls-v1";
// The identity key's signature binding a device's authentication key to the account.
inline constexpr std::string_view kDeviceContext = "sotto-device-v1";
// The recovery key's signature over a recovery.
inline constexpr std::string_view kRecoverContext = "sotto-recover-v1";

// What a device's authentication key (Ed25519) signs to log in: the context for a challenge or
// for a channel binding, then the 32 bytes.
[[nodiscard]] Bytes login_message(bool channel_binding, ByteView nonce);
// What the account's identity key signs for a device (NewDevice.identity_signature).
[[nodiscard]] Bytes device_binding(std::string_view username, ByteView auth_key);
// What the recovery key signs in a RecoverRequest: the challenge, the username, the new identity
// key, the new device's authentication key and the new recovery key.
[[nodiscard]] Bytes recovery_message(ByteView nonce, std::string_view username,
                                     ByteView identity_key, ByteView auth_key,
                                     ByteView next_recovery_key);

}  // namespace sotto::contract
