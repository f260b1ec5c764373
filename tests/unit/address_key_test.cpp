// net::address_key: the key of every per-address limit (an IPv4 address, an IPv6 /64).
#include "net/address_key.h"

#include <gtest/gtest.h>

namespace sotto::net {
namespace {

TEST(AddressKey, AnIpv4AddressIsItsOwnKey) {
  EXPECT_EQ(address_key("192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(address_key("127.0.0.1"), "127.0.0.1");
  EXPECT_NE(address_key("192.0.2.7"), address_key("192.0.2.8"));
}

TEST(AddressKey, Ipv6IsKeyedByItsSlash64InAnyWrittenForm) {
  const std::string key = address_key("2001:db8:1:2::1");
  EXPECT_EQ(key, "2001:db8:1:2::/64");
  // Full, upper-case and zero-padded forms of the same address.
  EXPECT_EQ(address_key("2001:0DB8:0001:0002:0000:0000:0000:0001"), key);
  // Another address of the same /64 (another privacy address of the same host).
  EXPECT_EQ(address_key("2001:db8:1:2:a1b2:c3d4:e5f6:789"), key);
  EXPECT_EQ(address_key("2001:db8:1:2:ffff:ffff:ffff:ffff"), key);
  // A zone names an interface, not another host.
  EXPECT_EQ(address_key("fe80::1%eth0"), address_key("fe80::2"));
  // The next /64 is another key.
  EXPECT_NE(address_key("2001:db8:1:3::1"), key);
  EXPECT_EQ(address_key("2001:db8:1:3::1"), "2001:db8:1:3::/64");
  // A prefix with zeros of its own.
  EXPECT_EQ(address_key("2001:db8::5"), "2001:db8::/64");
  EXPECT_EQ(address_key("::1"), "::/64");
}

TEST(AddressKey, AnIpv4MappedIpv6AddressIsTheIpv4Address) {
  EXPECT_EQ(address_key("::ffff:192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(address_key("::FFFF:c000:0207"), "192.0.2.7");
  EXPECT_NE(address_key("::ffff:192.0.2.7"), address_key("::ffff:192.0.2.8"));
}

TEST(AddressKey, WhatIsNotAnAddressIsKeptAsItIs) {
  EXPECT_EQ(address_key("loopback"), "loopback");
  EXPECT_EQ(address_key(""), "");
  EXPECT_EQ(address_key("1.2.3.4.5"), "1.2.3.4.5");
  const std::string long_text(200, '1');
  EXPECT_EQ(address_key(long_text), long_text);
}

}  // namespace
}  // namespace sotto::net
