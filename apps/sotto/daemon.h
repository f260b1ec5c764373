// `sotto daemon`: JSON-RPC 2.0 (one JSON value per line) over stdin/stdout or a Unix socket.
//
// Methods:  send {to, body} -> {timestamp, devices}
//           contacts -> [{username, verified, identityChangedAt, identityKey}]
//           safetyNumber {user} -> {user, digits, scannable (hex)}
//           trust {user} -> {user, digits, scannable}
//           devices -> [{id, registrationId, createdDay, current}]
//           history {user, limit?} -> [message]
//           account -> {username, device}
// Notifications (server to client, no id):
//           message {id, from, device, timestamp, body, conversation, outgoing}
//           receiveError {id, from, device, error, untrustedIdentity}
//           identityChanged {user}
//           connection {state: "connected" | "disconnected", detail?}
// Application errors use code -32000 with data {code: <ErrorCode name>}.
#pragma once

#include <optional>
#include <string>

#include "sotto/client.h"

namespace sotto::cli {

// Runs until stdin closes (stdin mode), SIGINT/SIGTERM, or a fatal listener error. Returns the
// process exit code.
int run_daemon(Client& client, const std::optional<std::string>& socket_path);

}  // namespace sotto::cli
