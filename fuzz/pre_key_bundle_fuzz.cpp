// PreKeyBundle::decode on untrusted bytes (a bundle comes from the server). A bundle that decodes
// has its signature checked, and its encoding must decode again and re-encode to the same bytes.
#include <cstddef>
#include <cstdint>

#include "fuzz_check.h"
#include "protocol/bundle.h"

using namespace sotto;
using namespace sotto::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto bundle = PreKeyBundle::decode(ByteView(data, size));
  if (!bundle) return 0;
  (void)bundle->verify_signature();

  const Bytes encoded = bundle->encode();
  auto again = PreKeyBundle::decode(encoded);
  fuzz::require(again.has_value(), "an encoded bundle does not decode");
  fuzz::require(again->encode() == encoded, "a bundle re-encodes differently");
  fuzz::require(again->verify_signature().has_value() == bundle->verify_signature().has_value(),
                "re-encoding changed whether the signature verifies");
  return 0;
}
