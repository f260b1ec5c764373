#include "transparency/account_value.h"

#include "crypto/hash.h"
#include "transparency/codec.h"

namespace sotto::transparency {

namespace {

constexpr std::uint8_t kValueFormat = 1;
constexpr std::uint8_t kChainPrefix = 0x03;

// The commitment's HMAC key: fixed and public (SHA-256 of this string, computed once).
const Hash& commitment_key() {
  static const Hash key = crypto::sha256({as_bytes("sotto key transparency commitment v1")});
  return key;
}

}  // namespace

bool valid(const AccountValue& value) {
  if (value.devices.size() > kMaxDevices) return false;
  for (std::size_t i = 0; i < value.devices.size(); ++i) {
    if (value.devices[i].name.size() > kMaxDeviceName) return false;
    if (i > 0 && value.devices[i].device_id <= value.devices[i - 1].device_id) return false;
  }
  return true;
}

Bytes encode_account_value(const AccountValue& value) {
  Bytes out;
  codec::put_u8(out, kValueFormat);
  codec::put(out, value.identity_key);
  codec::put_u8(out, static_cast<std::uint8_t>(value.devices.size()));
  for (const DeviceEntry& d : value.devices) {
    codec::put_u32(out, d.device_id);
    codec::put_u32(out, d.registration_id);
    codec::put(out, d.auth_key);
    codec::put_u16(out, static_cast<std::uint16_t>(d.name.size()));
    codec::put(out, d.name);
  }
  return out;
}

tl::expected<AccountValue, Error> decode_account_value(ByteView bytes) {
  codec::Reader r(bytes);
  AccountValue v;
  if (r.u8() != kValueFormat) return tl::unexpected(Error::malformed);
  v.identity_key = r.fixed<kIdentityKeySize>();
  const std::size_t n = r.u8();
  if (!r.ok() || n > kMaxDevices) return tl::unexpected(Error::malformed);
  for (std::size_t i = 0; i < n && r.ok(); ++i) {
    DeviceEntry d;
    d.device_id = r.u32();
    d.registration_id = r.u32();
    d.auth_key = r.fixed<kAuthKeySize>();
    const std::size_t len = r.u16();
    if (len > kMaxDeviceName) return tl::unexpected(Error::malformed);
    const ByteView name = r.bytes(len);
    d.name.assign(name.begin(), name.end());
    v.devices.push_back(std::move(d));
  }
  if (!r.done() || !valid(v)) return tl::unexpected(Error::malformed);
  return v;
}

Hash commit(const Opening& opening, std::string_view label, ByteView encoded_value) {
  const auto label_len = static_cast<std::uint8_t>(label.size());
  const auto mac = crypto::hmac_sha256(
      commitment_key(), {opening, ByteView(&label_len, 1), as_bytes(label), encoded_value});
  Hash out{};
  std::copy_n(mac.data(), out.size(), out.begin());
  return out;
}

Hash chain_next(const Hash& previous, const VersionLink& link) {
  Bytes buf;
  buf.reserve(1 + 32 + 4 + 8 + 32);
  codec::put_u8(buf, kChainPrefix);
  codec::put(buf, previous);
  codec::put_u32(buf, link.version);
  codec::put_u64(buf, link.entry);
  codec::put(buf, link.commitment);
  return crypto::sha256({buf});
}

}  // namespace sotto::transparency
