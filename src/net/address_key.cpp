#include "net/address_key.h"

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <cstring>

namespace sotto::net {

std::string address_key(std::string_view ip) {
  // inet_pton wants a NUL-terminated string; longer input than any address is no address.
  std::array<char, INET6_ADDRSTRLEN + 1> text{};
  std::string_view bare = ip.substr(0, ip.find('%'));  // a zone names an interface, not a host
  if (bare.empty() || bare.size() >= text.size()) return std::string(ip);
  std::memcpy(text.data(), bare.data(), bare.size());

  std::array<std::uint8_t, 16> bytes{};
  std::array<char, INET6_ADDRSTRLEN> out{};
  if (inet_pton(AF_INET, text.data(), bytes.data()) == 1) {
    if (inet_ntop(AF_INET, bytes.data(), out.data(), out.size()) == nullptr) return std::string(ip);
    return out.data();
  }
  if (inet_pton(AF_INET6, text.data(), bytes.data()) != 1) return std::string(ip);
  static constexpr std::array<std::uint8_t, 12> kMappedPrefix{0, 0, 0, 0, 0,    0,
                                                              0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(bytes.data(), kMappedPrefix.data(), kMappedPrefix.size()) == 0) {
    if (inet_ntop(AF_INET, bytes.data() + 12, out.data(), out.size()) == nullptr)
      return std::string(ip);
    return out.data();
  }
  std::memset(bytes.data() + 8, 0, 8);  // the interface identifier: the /64 is what counts
  if (inet_ntop(AF_INET6, bytes.data(), out.data(), out.size()) == nullptr) return std::string(ip);
  std::string key = out.data();
  // inet_ntop ends a /64 with "::" (the zeroed half), unless the prefix itself has zeros to
  // compress; either way the key names the prefix.
  return key + "/64";
}

}  // namespace sotto::net
