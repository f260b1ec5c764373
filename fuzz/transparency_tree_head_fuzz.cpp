// Fuzzes signed tree heads and consistency proofs (transparency/proofs.h). The first byte picks
// what the rest is: even, a signed tree head; odd, a consistency proof from the fixed log's head
// of size (byte / 2) mod size + 1 to its latest. A head that decodes re-encodes to the same
// bytes, and verifies under the log's key only if the log signed it; a consistency proof that
// decodes re-encodes the same, and one that verifies between the honest heads verifies for no
// other new root (which would be a fork both sides accept).
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
    const auto sth = decode_signed_tree_head(in);
    if (!sth) return 0;
    fuzz::require(fuzz::same_bytes(encode_signed_tree_head(*sth), in), "tree head re-encodes");
    if (verify_tree_head(*sth, f.keys.signing_key)) {
      fuzz::require(sth->head.size >= 1 && sth->head.size <= f.heads.size() &&
                        f.heads[sth->head.size - 1] == *sth,
                    "only heads the log signed verify");
    }
    TreeHeadTracker tracker(f.keys);
    if (!tracker.advance(f.heads.front(), {})) fuzz::require(false, "first head accepted");
    (void)tracker.advance(*sth, {});
    return 0;
  }
  const auto proof = decode_consistency_proof(in);
  if (!proof) return 0;
  fuzz::require(fuzz::same_bytes(encode_consistency_proof(*proof), in), "proof re-encodes");
  const TreeHead& old_head = f.heads[(data[0] / 2) % f.heads.size()].head;
  const TreeHead& new_head = f.heads.back().head;
  if (verify_consistency_proof(old_head, new_head, *proof)) {
    TreeHead forked = new_head;
    forked.root[0] ^= 1;
    fuzz::require(!verify_consistency_proof(old_head, forked, *proof),
                  "a consistency proof fits one new root");
  }
  return 0;
}
