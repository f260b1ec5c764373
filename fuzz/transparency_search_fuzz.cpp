// Fuzzes a lookup's search proof (transparency/proofs.h): the first byte picks a label of the
// fixed log (transparency_fixture.h), the rest is the proof. A proof that decodes re-encodes to
// the same bytes; one that verifies at the log's head says what the log holds for that label
// (its latest version and value, or absence): nothing else can pass.
#include <cstdint>

#include "fuzz_check.h"
#include "transparency_fixture.h"

using namespace sotto;
using namespace sotto::transparency;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& f = fuzz::transparency_fixture();
  const std::string& label = f.labels[fuzz::pick_label(data[0])];
  const ByteView in(data + 1, size - 1);
  const auto proof = decode_search_proof(in);
  if (!proof) return 0;
  fuzz::require(fuzz::same_bytes(encode_search_proof(*proof), in), "search proof re-encodes");
  const auto got = verify_search(f.keys, f.heads.back().head, label, *proof);
  if (!got) return 0;
  const auto it = f.versions.find(label);
  if (it == f.versions.end()) {
    fuzz::require(!got->has_value(), "an unlogged label verifies only as absent");
  } else {
    fuzz::require(got->has_value() && (*got)->version == it->second.size() &&
                      (*got)->value == it->second.back(),
                  "a verified lookup returns the latest logged value");
  }
  return 0;
}
