// Writes the seed corpora of the transparency fuzz targets under <dir>/<target>/ from the fixed
// log (transparency_fixture.h): every genuine proof and head with its selector byte, plus
// near-valid variants (cut short, one byte longer, a path one hash longer). Deterministic, so
// running it again writes the same bytes. Not run by the build:
//   sotto_fuzz_make_transparency_corpus fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "service.pb.h"
#include "transparency_fixture.h"

namespace {

using namespace sotto;
using namespace sotto::transparency;
namespace fs = std::filesystem;

std::size_t written = 0;

void write(const fs::path& root, const std::string& target, const std::string& name,
           std::uint8_t selector, ByteView body) {
  const fs::path dir = root / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.put(static_cast<char>(selector));
  out.write(reinterpret_cast<const char*>(body.data()), static_cast<std::streamsize>(body.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
  ++written;
}

// The genuine bytes, then cut in half, then with a trailing byte.
void write_variants(const fs::path& root, const std::string& target, const std::string& name,
                    std::uint8_t selector, const Bytes& body) {
  write(root, target, name, selector, body);
  write(root, target, name + "_cut", selector, ByteView(body).first(body.size() / 2));
  Bytes longer = body;
  longer.push_back(0);
  write(root, target, name + "_trailing", selector, longer);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const fs::path root = argv[1];
  const auto& f = fuzz::transparency_fixture();
  // The genuine seeds must verify, or the targets would never reach their checks.
  for (std::size_t i = 0; i < f.labels.size(); ++i) {
    const TreeHead& head = f.heads.back().head;
    if (!verify_search(f.keys, head, f.labels[i], f.search[i]) ||
        !verify_monitor(f.keys, head, f.labels[i], f.monitor[i])) {
      std::fprintf(stderr, "fixture proof for %s does not verify\n", f.labels[i].c_str());
      return 1;
    }
  }
  for (std::size_t i = 0; i < f.labels.size(); ++i) {
    const auto sel = static_cast<std::uint8_t>(i);
    const std::string& l = f.labels[i];
    write_variants(root, "transparency_search_fuzz", "search_" + l, sel,
                   encode_search_proof(f.search[i]));
    // Another label's proof for this label.
    write(root, "transparency_search_fuzz", "search_" + l + "_as_next",
          static_cast<std::uint8_t>((i + 1) % f.labels.size()), encode_search_proof(f.search[i]));
    write_variants(root, "transparency_monitor_fuzz", "monitor_" + l, sel,
                   encode_monitor_proof(f.monitor[i]));
    Bytes prefix;
    encode_prefix_proof(f.search[i].leaf.prefix, prefix);
    write_variants(root, "transparency_prefix_vrf_fuzz", "prefix_" + l,
                   static_cast<std::uint8_t>(sel << 1), prefix);
    Bytes vrf(f.search[i].leaf.vrf_proof.begin(), f.search[i].leaf.vrf_proof.end());
    append(vrf, as_bytes(l));
    write(root, "transparency_prefix_vrf_fuzz", "vrf_" + l, 1, vrf);
  }
  for (std::size_t s = 0; s < f.heads.size(); ++s) {
    write_variants(root, "transparency_tree_head_fuzz", "head_" + std::to_string(s + 1), 0,
                   encode_signed_tree_head(f.heads[s]));
  }
  // Consistency proofs from each earlier head to the latest; the selector names the old head.
  for (std::size_t s = 0; s + 1 < f.heads.size(); ++s) {
    write_variants(root, "transparency_tree_head_fuzz", "consistency_from_" + std::to_string(s + 1),
                   static_cast<std::uint8_t>(2 * s + 1),
                   encode_consistency_proof(f.consistency[s]));
  }
  for (std::size_t k = 0; k < f.records.size(); ++k) {
    write_variants(root, "transparency_audit_fuzz", "record_" + std::to_string(k),
                   static_cast<std::uint8_t>(k), encode_audit_record(f.records[k]));
    if (k + 1 <
        f.records.size()) {  // the next record offered in this one's place (a dropped entry)
      write(root, "transparency_audit_fuzz",
            "record_" + std::to_string(k + 1) + "_as_" + std::to_string(k),
            static_cast<std::uint8_t>(k), encode_audit_record(f.records[k + 1]));
    }
  }
  // sotto-audit's answers: the records from k on with the last head (honest), the same with entry
  // k left out (a dropped entry), and the head alone.
  const auto as_string = [](const Bytes& b) { return std::string(b.begin(), b.end()); };
  const auto serialized = [](const google::protobuf::MessageLite& m) {
    const std::string s = m.SerializeAsString();
    return Bytes(s.begin(), s.end());
  };
  for (std::size_t k = 0; k <= f.records.size(); ++k) {
    wire::service::KtAuditResponse answer;
    answer.set_tree_head(as_string(encode_signed_tree_head(f.heads.back())));
    for (std::size_t i = k; i < f.records.size(); ++i)
      *answer.add_records() = as_string(encode_audit_record(f.records[i]));
    write(root, "audit_answer_fuzz", "from_" + std::to_string(k), static_cast<std::uint8_t>(k),
          serialized(answer));
    if (k + 1 < f.records.size()) {
      wire::service::KtAuditResponse dropped;
      dropped.set_tree_head(answer.tree_head());
      for (std::size_t i = k + 1; i < f.records.size(); ++i)
        *dropped.add_records() = as_string(encode_audit_record(f.records[i]));
      write(root, "audit_answer_fuzz", "dropped_" + std::to_string(k), static_cast<std::uint8_t>(k),
            serialized(dropped));
    }
  }
  // The client's co-signature check: a fresh co-signature of each head by the fuzz target's
  // auditor, with its consistency proof to the last head; and a stale one.
  const auto auditor =
      crypto::Ed25519KeyPair::from_seed(crypto::Secret<32>{ByteView(Bytes(32, 0x5a))});
  constexpr std::uint64_t kNow = 1'800'000'000'000ull;
  for (std::size_t k = 0; k < f.heads.size(); ++k) {
    for (const std::uint64_t time : {kNow - 1000, kNow - 2 * 3600 * 1000}) {
      wire::service::KtProof proof;
      auto* c = proof.add_cosignatures();
      c->set_auditor_key(std::string(auditor.public_key().begin(), auditor.public_key().end()));
      c->set_tree_head(as_string(encode_signed_tree_head(f.heads[k])));
      c->set_time_ms(time);
      const auto sig = cosign_tree_head_at(f.heads[k].head, time, auditor);
      c->set_signature(std::string(sig.begin(), sig.end()));
      if (k + 1 < f.heads.size())
        c->set_consistency(as_string(encode_consistency_proof(f.consistency[k])));
      std::string body = proof.SerializeAsString();
      const fs::path dir = root / "kt_cosignature_fuzz";
      fs::create_directories(dir);
      std::ofstream out(dir / ("head_" + std::to_string(k) + (time == kNow - 1000 ? "" : "_stale")),
                        std::ios::binary | std::ios::trunc);
      out.write(body.data(), static_cast<std::streamsize>(body.size()));
      ++written;
    }
  }
  std::printf("wrote %zu files\n", written);
  return 0;
}
