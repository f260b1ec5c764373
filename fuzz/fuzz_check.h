// What a fuzz target does when an invariant it checks does not hold: say which one and abort, so
// that libFuzzer records the input as a crash (and the replay test fails).
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "crypto/bytes.h"

namespace sotto::fuzz {

inline void require(bool ok, const char* invariant) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant violated: %s\n", invariant);
    std::abort();
  }
}

inline bool same_bytes(ByteView a, ByteView b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace sotto::fuzz
