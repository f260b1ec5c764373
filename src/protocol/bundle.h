// A device's prekey bundle: what an initiator needs to start an X3DH session with it (X3DH spec,
// section 3.2). Its wire form is proto/keys.proto PreKeyBundle. Plain value; thread-compatible.
#pragma once

#include <optional>

#include <tl/expected.hpp>

#include "crypto/signature.h"
#include "protocol/error.h"
#include "protocol/keys.h"
#include "protocol/types.h"

namespace sotto::protocol {

struct PreKeyBundle {
  RegistrationId registration_id;
  DeviceId device_id;
  std::optional<PreKeyId> pre_key_id;
  std::optional<PublicKey> pre_key;
  SignedPreKeyId signed_pre_key_id;
  PublicKey signed_pre_key;
  crypto::Curve25519Signature signed_pre_key_signature{};
  PublicKey identity_key;

  // The identity key's signature over the 33-byte serialized signed prekey.
  [[nodiscard]] tl::expected<void, Error> verify_signature() const;

  [[nodiscard]] Bytes encode() const;
  [[nodiscard]] static tl::expected<PreKeyBundle, Error> decode(ByteView bytes);
};

}  // namespace sotto::protocol
