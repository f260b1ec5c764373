// Bridges between Sotto's protocol types and the reference wrapper's, for the interop tests.
#pragma once

#include <string>

#include "protocol/bundle.h"
#include "protocol/messages.h"
#include "ref_signal.h"
#include "util/party.h"

namespace sotto::testing {

inline protocol::PreKeyBundle from_ref(const ref::RefBundle& r) {
  protocol::PreKeyBundle b;
  b.registration_id = protocol::RegistrationId(r.registration_id);
  b.device_id = protocol::DeviceId(r.device_id);
  if (r.prekey_id) {
    b.pre_key_id = protocol::PreKeyId(*r.prekey_id);
    b.pre_key = *protocol::PublicKey::decode(r.prekey_public);
  }
  b.signed_pre_key_id = protocol::SignedPreKeyId(r.signed_prekey_id);
  b.signed_pre_key = *protocol::PublicKey::decode(r.signed_prekey_public);
  std::copy(r.signed_prekey_signature.begin(), r.signed_prekey_signature.end(),
            b.signed_pre_key_signature.begin());
  b.identity_key = *protocol::PublicKey::decode(r.identity_key);
  return b;
}

inline ref::RefBundle to_ref(const protocol::PreKeyBundle& b) {
  auto ser = [](const protocol::PublicKey& k) {
    auto s = k.serialize();
    return ref::Bytes(s.begin(), s.end());
  };
  ref::RefBundle r;
  r.registration_id = b.registration_id.value;
  r.device_id = b.device_id.value;
  if (b.pre_key_id) {
    r.prekey_id = b.pre_key_id->value;
    r.prekey_public = ser(*b.pre_key);
  }
  r.signed_prekey_id = b.signed_pre_key_id.value;
  r.signed_prekey_public = ser(b.signed_pre_key);
  r.signed_prekey_signature.assign(b.signed_pre_key_signature.begin(), b.signed_pre_key_signature.end());
  r.identity_key = ser(b.identity_key);
  return r;
}

inline ref::RefCiphertext to_ref(const protocol::CiphertextMessage& m) {
  return {static_cast<int>(m.type), m.serialized};
}

inline protocol::CiphertextMessage from_ref(const ref::RefCiphertext& c) {
  return {static_cast<protocol::MessageType>(c.type), c.bytes};
}

inline ref::Bytes bytes_of(std::string_view s) { return ref::Bytes(s.begin(), s.end()); }
inline std::string string_of(const ref::Bytes& b) { return std::string(b.begin(), b.end()); }

}  // namespace sotto::testing
