// Fuzzes the prefix-tree proof parser and verifier, and VRF verification
// (transparency/prefix_tree.h, transparency/vrf.h). First byte even: the rest is a prefix proof
// for the index of the label the byte picks, checked against the fixed log's prefix root; one
// that verifies gives what the log's own proof gives. First byte odd: the rest is a VRF proof
// (80 bytes) and then alpha; a proof that verifies under the log's key gives the output the
// log's key gives for alpha (VRF uniqueness) and the output proof_to_hash reads from it.
#include <cstdint>

#include "fuzz_check.h"
#include "transparency_fixture.h"

using namespace sotto;
using namespace sotto::transparency;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& f = fuzz::transparency_fixture();
  const ByteView in(data + 1, size - 1);
  if ((data[0] & 1) == 0) {
    const std::size_t which = fuzz::pick_label(static_cast<std::uint8_t>(data[0] >> 1));
    const auto proof = decode_prefix_proof(in);
    if (!proof) return 0;
    Bytes again;
    encode_prefix_proof(*proof, again);
    fuzz::require(fuzz::same_bytes(again, in), "prefix proof re-encodes");
    const auto got = verify_prefix_proof(f.prefix_root, f.indices[which], *proof);
    if (got) {
      const auto honest =
          verify_prefix_proof(f.prefix_root, f.indices[which], f.search[which].leaf.prefix);
      fuzz::require(honest.has_value() && *got == *honest, "one answer per index and root");
    }
    return 0;
  }
  if (in.size() < kVrfProofSize) return 0;
  const ByteView proof = in.first(kVrfProofSize);
  const ByteView alpha = in.subspan(kVrfProofSize);
  const auto beta = vrf_verify(f.keys.vrf_key, alpha, proof);
  if (!beta) return 0;
  fuzz::require(*beta == *vrf_proof_to_hash(proof), "verify returns proof_to_hash");
  // The only alphas whose honest output the fixture knows are its labels.
  for (std::size_t i = 0; i < f.labels.size(); ++i) {
    if (fuzz::same_bytes(alpha, as_bytes(f.labels[i]))) {
      fuzz::require(*beta == *vrf_proof_to_hash(f.search[i].leaf.vrf_proof),
                    "one VRF output per alpha");
    }
  }
  return 0;
}
