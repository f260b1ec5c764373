#include "client/environment.h"

#include <chrono>

namespace sotto::client {

std::uint64_t SystemWallClock::now_ms() const {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

Environment system_environment() {
  Environment env;
  env.connector = make_tls_connector();
  env.rng = &crypto::system_rng();
  env.clock = std::make_shared<SystemWallClock>();
  return env;
}

}  // namespace sotto::client
