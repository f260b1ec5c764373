// The Authorization header of a device's WebSocket upgrade request (docs/wire-format.md section
// 14): "SottoDevice ", then the login proof (a serialized AuthenticateRequest) in base64url
// without padding. The transport only carries it (ClientOptions::authorization on the way out,
// ConnectionHandler::on_open on the way in); what the proof says is the server's business.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "crypto/bytes.h"

namespace sotto::net {

[[nodiscard]] std::string device_authorization(ByteView proof);
// The proof's bytes, or nullopt when `header` is not one: another scheme, anything but the
// base64url alphabet after it (padding, spaces), or a proof over `max_proof_bytes`.
[[nodiscard]] std::optional<Bytes> parse_device_authorization(std::string_view header,
                                                              std::size_t max_proof_bytes);

}  // namespace sotto::net
