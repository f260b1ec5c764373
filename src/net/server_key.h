// The server's announcement of its next TLS key (service.proto ServerKeyAnnouncement): the
// current key signs the next one, so that a client that pinned the current key can pin the next
// without anyone comparing fingerprints again. The signed message is
//   "sotto-server-next-key-v1" || SHA-256(current SubjectPublicKeyInfo) || next
//   SubjectPublicKeyInfo
// (both DER), signed with the current key's own algorithm: ECDSA with SHA-256 (DER signature) for
// an EC key, pure Ed25519 for an Ed25519 key. Other key types (RSA) are refused: announcing needs
// an EC or Ed25519 key. Thread-safe; no state.
#pragma once

#include <cstddef>
#include <string_view>
#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "net/tls.h"

namespace sotto::net {

inline constexpr std::string_view kNextKeyContext = "sotto-server-next-key-v1";
// A DER SubjectPublicKeyInfo of any key type the server uses is far below this (P-256: 91
// bytes, RSA-4096: 550); anything longer is refused before it is parsed.
inline constexpr std::size_t kMaxPublicKeyDerSize = 2048;
inline constexpr std::size_t kMaxNextKeySignatureSize = 256;

enum class ServerKeyError {
  unsupported_key,  // not an EC or Ed25519 key
  malformed,        // a public key that does not parse, or is not exactly one DER structure
  bad_signature,
  failed,  // OpenSSL could not sign (or the identity's private key does not parse)
};

std::string_view to_string(ServerKeyError e);

// The current identity's signature over its next key (`next_public_key`: DER
// SubjectPublicKeyInfo). REQUIRES: `current` comes from load_identity or its kin.
[[nodiscard]] tl::expected<Bytes, ServerKeyError> sign_next_key(const TlsIdentity& current,
                                                                ByteView next_public_key);

// Checks a ServerKeyAnnouncement against the key of the connection it came on
// (WsClient::peer_public_key()). Every input is untrusted.
[[nodiscard]] tl::expected<void, ServerKeyError> verify_next_key(ByteView current_public_key,
                                                                 ByteView next_public_key,
                                                                 ByteView signature);

}  // namespace sotto::net
