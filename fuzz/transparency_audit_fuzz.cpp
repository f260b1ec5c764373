// Fuzzes the auditor (transparency/audit.h): the first byte k picks how many of the fixed log's
// honest records the auditor replays first (k mod size); the rest is the record offered as entry
// k. A record that decodes re-encodes to the same bytes. A refused record leaves the auditor's
// head as it was. An accepted one that brings the auditor to the log's own root at that size is
// the log's own record, entry for entry (anything else would be a hash collision).
#include <cstdint>

#include "fuzz_check.h"
#include "transparency_fixture.h"

using namespace sotto;
using namespace sotto::transparency;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& f = fuzz::transparency_fixture();
  const std::size_t k = data[0] % f.records.size();
  const ByteView in(data + 1, size - 1);
  const auto rec = decode_audit_record(in);
  if (!rec) return 0;
  fuzz::require(fuzz::same_bytes(encode_audit_record(*rec), in), "audit record re-encodes");
  Auditor auditor(f.keys);
  for (std::size_t i = 0; i < k; ++i) {
    fuzz::require(auditor.apply(f.records[i]).has_value(), "honest records replay");
  }
  const std::uint64_t size_before = auditor.size();
  const TreeHead before = k > 0 ? auditor.head() : TreeHead{};
  if (!auditor.apply(*rec)) {
    fuzz::require(auditor.size() == size_before && (k == 0 || auditor.head() == before),
                  "a refused record changes nothing");
    return 0;
  }
  if (auditor.head().root == f.heads[k].head.root) {
    fuzz::require(rec->entry == f.records[k].entry, "only the log's own entry gives its root");
  }
  return 0;
}
