// Segment counters of a TCP socket (Linux TCP_INFO). Its own file: <linux/tcp.h>, which has
// the counters, and glibc's <netinet/tcp.h>, which Asio includes, cannot share a translation
// unit.
#include "tcp_segments.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace sotto::net::test_support {

std::optional<TcpSegments> tcp_segments(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
      len < offsetof(tcp_info, tcpi_data_segs_out) + sizeof info.tcpi_data_segs_out) {
    return std::nullopt;
  }
  return TcpSegments{info.tcpi_data_segs_in, info.tcpi_data_segs_out, info.tcpi_segs_in,
                     info.tcpi_segs_out};
}

}  // namespace sotto::net::test_support
