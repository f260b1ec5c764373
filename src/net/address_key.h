// The key every per-address limit counts under (connection caps in the WebSocket server, the
// relay's rate-limit buckets): one IPv4 address, or one IPv6 /64. A /64 is what one subscriber,
// one host's privacy addresses or one cloud machine gets, so keying IPv6 by its full address would
// give one attacker 2^64 buckets; an IPv4-mapped IPv6 address (::ffff:a.b.c.d, as a dual-stack
// listener reports IPv4 peers) is the IPv4 address it carries. Pure and thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace sotto::net {

// "a.b.c.d" for IPv4 (and IPv4-mapped IPv6); for IPv6 the /64 prefix in RFC 5952 text followed by
// "/64" (e.g. "2001:db8:1:2::/64"), whatever form `ip` was written in (compressed, full, with a
// zone "%eth0").
// Anything that is not an IP address (a test's made-up peer name) is returned as it is.
[[nodiscard]] std::string address_key(std::string_view ip);

}  // namespace sotto::net
