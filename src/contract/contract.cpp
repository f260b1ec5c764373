#include <algorithm>
#include <cstring>
#include <initializer_list>

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

ByteView bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// The parts one after the other. Sized once and copied with memcpy: GCC 12 at -O3 reports a
// false stringop-overflow for vector::insert of a range into an empty vector.
Bytes concat(std::initializer_list<ByteView> parts) {
  std::size_t total = 0;
  for (const auto& p : parts) total += p.size();
  Bytes out(total);
  std::size_t at = 0;
  for (const auto& p : parts) {
    if (!p.empty()) std::memcpy(out.data() + at, p.data(), p.size());
    at += p.size();
  }
  return out;
}

}  // namespace

Bytes login_message(bool channel_binding, ByteView nonce) {
  return concat({bytes_of(channel_binding ? kBoundAuthContext : kAuthContext), nonce});
}

Bytes device_binding(std::string_view username, ByteView auth_key) {
  return concat({bytes_of(kDeviceContext), bytes_of(username), auth_key});
}

Bytes recovery_message(ByteView nonce, std::string_view username, ByteView identity_key,
                       ByteView auth_key, ByteView next_recovery_key) {
  return concat({bytes_of(kRecoverContext), nonce, bytes_of(username), identity_key, auth_key,
                 next_recovery_key});
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
