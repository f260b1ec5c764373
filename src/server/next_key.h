// The server's next TLS key, announced to every device after its login while the operator
// rotates the key (service.proto ServerKeyAnnouncement; net/server_key.h makes the signature).
#pragma once

#include "crypto/bytes.h"

namespace sotto::server {

struct NextServerKey {
  Bytes public_key;  // DER SubjectPublicKeyInfo
  Bytes signature;   // by the current key
};

}  // namespace sotto::server
