// Values the client engine reads back from its own store's `state` table (client/stored_values.h):
// the block list's copy and the times one-time prekeys were first seen missing. A damaged or
// foreign file must read as something valid: usernames normalised, and decoding what was encoded
// gives it back. The first byte picks the reader.
#include <cstddef>
#include <cstdint>

#include "client/stored_values.h"
#include "fuzz_check.h"
#include "sotto/client.h"

using namespace sotto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const ByteView input(data + 1, size - 1);
  if (data[0] % 3 == 2) {
    const auto versions = client::decode_versions(input);
    for (const auto& [n, v] : versions) {
      fuzz::require(normalize_username(n) == n, "a stored version with a name not normalised");
    }
    fuzz::require(client::decode_versions(client::encode_versions(versions)) == versions,
                  "the contacts' log versions do not survive encoding");
  } else if (data[0] % 2 == 0) {
    const auto names = client::decode_names(input);
    for (const auto& n : names) {
      fuzz::require(normalize_username(n) == n,
                    "a stored block with a name that is not normalised");
    }
    fuzz::require(client::decode_names(client::encode_names(names)) == names,
                  "the block list does not survive encoding");
  } else {
    const auto missing = client::decode_missing(input);
    fuzz::require(missing.size() * 12 <= input.size(), "more prekey records than bytes");
    fuzz::require(client::decode_missing(client::encode_missing(missing)) == missing,
                  "the missing prekeys do not survive encoding");
  }
  return 0;
}
