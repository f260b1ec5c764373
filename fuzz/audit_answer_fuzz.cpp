// Fuzzes sotto-audit's handling of what a server sends it and of its own records file
// (apps/sotto-audit/audit_core.h). The first byte k picks how many of the fixed log's honest
// records (transparency_fixture.h) the auditor replayed before; the rest is a KtAuditResponse.
// Whatever the answer, an accepted head is signed by the log's key, and a head that passes
// check_head is the log's own head of that size (anything else would be a forged signature or a
// hash collision). The same bytes, read as a records file, give records whose framing is exactly
// the file's intact prefix. Read as text, they are a --pin and a --log-keys: what parses is in the
// one form sotto-audit stores, and reads back the same.
#include <cstdint>
#include <string_view>

#include "audit_core.h"
#include "fuzz_check.h"
#include "transparency_fixture.h"

using namespace sotto;
using namespace sotto::transparency;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& f = fuzz::transparency_fixture();
  const std::size_t k = data[0] % (f.records.size() + 1);
  const ByteView in(data + 1, size - 1);

  const auto stored = audit::parse_records_file(in);
  fuzz::require(stored.valid_bytes <= in.size(), "the intact prefix is inside the file");
  Bytes reframed;
  for (const Bytes& r : stored.records) {
    const Bytes framed = audit::frame_record(r);
    reframed.insert(reframed.end(), framed.begin(), framed.end());
  }
  fuzz::require(fuzz::same_bytes(reframed, in.first(stored.valid_bytes)),
                "records re-frame to the intact prefix");

  const std::string_view text(reinterpret_cast<const char*>(in.data()), in.size());
  if (auto pin = audit::normalize_pin(text)) {
    fuzz::require(pin->size() == 64 && audit::normalize_pin(*pin) == pin,
                  "a pin is stored as 64 lowercase hex digits");
  }
  if (auto keys = audit::parse_log_keys(text)) {
    const std::string printed = audit::log_keys_text(*keys);
    const auto again = audit::parse_log_keys(printed);
    fuzz::require(again && audit::log_keys_text(*again) == printed, "log keys read back");
  }

  wire::service::KtAuditResponse answer;
  if (!answer.ParseFromArray(in.data(), static_cast<int>(in.size()))) return 0;
  Auditor auditor(f.keys);
  for (std::size_t i = 0; i < k; ++i) {
    fuzz::require(auditor.apply(f.records[i]).has_value(), "honest records replay");
  }
  std::vector<Bytes> accepted;
  auto head = audit::apply_answer(auditor, f.keys, answer, accepted);
  fuzz::require(auditor.size() == k + accepted.size(), "the auditor holds what it accepted");
  if (!head) return 0;
  fuzz::require(verify_tree_head(*head, f.keys.signing_key).has_value(),
                "an accepted head is the log's");
  if (audit::check_head(auditor, *head)) {
    fuzz::require(head->head.size >= 1 && head->head.size <= f.heads.size() &&
                      *head == f.heads[head->head.size - 1],
                  "a head that matches the replay is the log's own");
  }
  return 0;
}
