// How many TCP segments a socket has received and sent, those carrying data and all of them
// (handshake, pure ACKs and FINs too): what tests of the transport use to check that answers
// leave together, and that ACKs and FINs ride in them, rather than one segment each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace sotto::net::test_support {

struct TcpSegments {
  std::uint32_t data_in = 0;
  std::uint32_t data_out = 0;
  std::uint32_t all_in = 0;
  std::uint32_t all_out = 0;
};

// Nullopt when the kernel does not report them.
std::optional<TcpSegments> tcp_segments(int fd);

}  // namespace sotto::net::test_support
