// Strong identifier types of the protocol layer, so that a device id cannot be passed where a
// prekey id is meant. All are plain values; thread-compatible.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>

namespace sotto::protocol {

template <typename Tag>
struct StrongId {
  std::uint32_t value = 0;
  constexpr StrongId() = default;
  constexpr explicit StrongId(std::uint32_t v) : value(v) {}
  friend constexpr auto operator<=>(StrongId, StrongId) = default;
};

using DeviceId = StrongId<struct DeviceIdTag>;
using RegistrationId = StrongId<struct RegistrationIdTag>;
using PreKeyId = StrongId<struct PreKeyIdTag>;
using SignedPreKeyId = StrongId<struct SignedPreKeyIdTag>;
using SenderKeyId = StrongId<struct SenderKeyIdTag>;

// One device of one account: the unit a session is held with.
struct Address {
  std::string name;
  DeviceId device;
  friend auto operator<=>(const Address&, const Address&) = default;
};

// A Sender Key is held per (sender device, distribution): the distribution id names the group
// (or the group's sending chain) in which the sender uses it.
struct SenderKeyName {
  std::string distribution_id;
  Address sender;
  friend auto operator<=>(const SenderKeyName&, const SenderKeyName&) = default;
};

}  // namespace sotto::protocol
