// Fuzzes an owner's monitoring proof (transparency/proofs.h): the first byte picks a label of
// the fixed log, the rest is the proof. A proof that decodes re-encodes to the same bytes; one
// that verifies lists exactly the versions the log holds for the label, none left out or added.
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
  const auto proof = decode_monitor_proof(in);
  if (!proof) return 0;
  fuzz::require(fuzz::same_bytes(encode_monitor_proof(*proof), in), "monitor proof re-encodes");
  const auto got = verify_monitor(f.keys, f.heads.back().head, label, *proof);
  if (!got) return 0;
  const auto it = f.versions.find(label);
  const std::size_t n = it == f.versions.end() ? 0 : it->second.size();
  fuzz::require(got->size() == n, "a verified monitor proof has every version");
  for (std::size_t i = 0; i < n; ++i) {
    fuzz::require((*got)[i].version == i + 1 && (*got)[i].value == it->second[i],
                  "a verified monitor proof has the logged values in order");
  }
  return 0;
}
