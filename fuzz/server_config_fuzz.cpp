// Fuzzes the server's TOML configuration parser: any input yields a config or an error naming
// the problem, never a crash or an exception.
#include <cstdint>
#include <string_view>

#include "server/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = sotto::server::apply_toml_text(sotto::server::ServerConfig{}, text);
  if (c && c->max_message_bytes + 4096 > c->max_frame_bytes) __builtin_trap();  // a checked invariant
  return 0;
}
