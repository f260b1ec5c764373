#include <algorithm>

#include "contract/ids.h"
#include "contract/signatures.h"
#include "contract/username.h"

namespace sotto::contract {

std::optional<std::string> normalize_username(std::string_view name) {
  if (name.size() < kMinUsernameLength || name.size() > kMaxUsernameLength) return std::nullopt;
  std::string out;
  out.reserve(name.size());
  for (char ch : name) {
    const char c = (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return std::nullopt;
    out += c;
  }
  if (out[0] == '.' || out[0] == '_' || out[0] == '-') return std::nullopt;
  return out;
}

namespace {

void append(Bytes& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
}
void append(Bytes& out, ByteView b) {
  out.insert(out.end(), b.begin(), b.end());
}

}  // namespace

Bytes login_message(bool channel_binding, ByteView nonce) {
  Bytes m;
  append(m, channel_binding ? kBoundAuthContext : kAuthContext);
  append(m, nonce);
  return m;
}

Bytes device_binding(std::string_view username, ByteView auth_key) {
  Bytes m;
  append(m, kDeviceContext);
  append(m, username);
  append(m, auth_key);
  return m;
}

Bytes recovery_message(ByteView nonce, std::string_view username, ByteView identity_key,
                       ByteView auth_key, ByteView next_recovery_key) {
  Bytes m;
  append(m, kRecoverContext);
  append(m, nonce);
  append(m, username);
  append(m, identity_key);
  append(m, auth_key);
  append(m, next_recovery_key);
  return m;
}

TimeOrderedId time_ordered_id(std::uint64_t now_ms,
                              std::span<const std::uint8_t, kIdUniqueBytes> unique) {
  TimeOrderedId id{};
  for (std::size_t i = 0; i < kIdTimeBytes; ++i)
    id[i] = static_cast<std::uint8_t>(now_ms >> (8 * (kIdTimeBytes - 1 - i)));
  std::copy(unique.begin(), unique.end(), id.begin() + kIdTimeBytes);
  return id;
}

TimeOrderedId time_ordered_id(std::uint64_t now_ms, crypto::Rng& rng) {
  // All 16 bytes drawn, the first 6 then overwritten: the draw a client has always made.
  TimeOrderedId id{};
  rng.fill(id);
  return time_ordered_id(now_ms, std::span<const std::uint8_t, kIdUniqueBytes>(
                                     id.data() + kIdTimeBytes, kIdUniqueBytes));
}

std::uint64_t id_time_ms(ByteView id) {
  if (id.size() < kIdTimeBytes) return 0;
  std::uint64_t t = 0;
  for (std::size_t i = 0; i < kIdTimeBytes; ++i) t = (t << 8) | id[i];
  return t;
}

}  // namespace sotto::contract
