// Small helpers shared by the protocol layer's protobuf codecs (internal).
#pragma once

#include <string>

#include "crypto/bytes.h"
#include "crypto/secret.h"

namespace sotto::protocol::detail {

inline std::string to_pb_bytes(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

inline ByteView pb_view(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Protobuf keeps secret fields in std::string; wipe them before the message is freed.
inline void wipe(std::string* s) {
  if (s != nullptr && !s->empty()) crypto::secure_wipe(s->data(), s->size());
}

template <typename Proto>
bool parse_strict(Proto& msg, ByteView bytes) {
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  return msg.unknown_fields().empty();
}

// Serializes a message holding secrets straight into wiped-on-release memory.
template <typename Proto>
crypto::SecretBuffer serialize_secret(const Proto& msg) {
  crypto::SecretBuffer out(msg.ByteSizeLong());
  msg.SerializeWithCachedSizesToArray(out.data());
  return out;
}

}  // namespace sotto::protocol::detail
