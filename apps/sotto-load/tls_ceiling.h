// The ceiling a login cannot beat on this machine: TLS 1.3 handshakes alone against the server
// (TCP, handshake, close_notify; no WebSocket, no authentication), with OpenSSL on both ends as
// in a login. Blocking threads, one connection each at a time, so the tool itself spends as
// little as it can besides OpenSSL. The server answers each with a session ticket and closes
// when the connection ends before its WebSocket upgrade.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sotto::load {

struct TlsCeiling {
  double per_s = 0;
  std::uint64_t measured = 0;
  std::uint64_t resumed = 0;  // of `measured`
  std::uint64_t failed = 0;
};

// `resume`: each thread resumes the session of its previous connection (the first is full).
// `host` is an IPv4 literal.
TlsCeiling measure_tls_ceiling(const std::string& host, std::uint16_t port, std::size_t concurrency,
                               double seconds, bool resume);

}  // namespace sotto::load
