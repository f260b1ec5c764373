// Fuzzes the client's check of the auditors' co-signatures a lookup answer carries
// (KtClient::cosignature_problem, client/kt.h). The input is a KtProof; the answer's head is the
// fixed log's last (transparency_fixture.h), a fixed auditor is required with a one-hour age
// limit. Whatever the bytes, an accepted answer carries a co-signature by that auditor of one of
// the log's own heads, no older than the limit.
#include <cstdint>

#include "client/kt.h"
#include "fuzz_check.h"
#include "transparency_fixture.h"

using namespace sotto;
using namespace sotto::transparency;

namespace {
constexpr std::uint64_t kNow = 1'800'000'000'000ull;
constexpr std::uint64_t kHour = 3600 * 1000;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& f = fuzz::transparency_fixture();
  wire::service::KtProof proof;
  if (!proof.ParseFromArray(data, static_cast<int>(size))) return 0;
  static const auto auditor =
      crypto::Ed25519KeyPair::from_seed(crypto::Secret<32>{ByteView(Bytes(32, 0x5a))});
  const client::AuditorRequirement required{auditor.public_key(), kHour};
  const auto problem = client::KtClient::cosignature_problem(required, f.keys, f.heads.back(),
                                                             proof.cosignatures(), kNow);
  if (problem) {
    fuzz::require(!problem->empty(), "a refusal says why");
    return 0;
  }
  bool genuine = false;
  for (const auto& c : proof.cosignatures()) {
    auto head = decode_signed_tree_head(ByteView(
        reinterpret_cast<const std::uint8_t*>(c.tree_head().data()), c.tree_head().size()));
    if (!head || head->head.size == 0 || head->head.size > f.heads.size()) continue;
    const bool ours = *head == f.heads[head->head.size - 1];
    const bool fresh = c.time_ms() + kHour >= kNow;
    const bool by_auditor =
        c.auditor_key() == std::string(auditor.public_key().begin(), auditor.public_key().end());
    genuine = genuine || (ours && fresh && by_auditor);
  }
  fuzz::require(genuine, "an accepted answer carries a fresh co-signature of the log's own head");
  return 0;
}
