// sotto_transparency_bench: what key transparency costs (docs/transparency.md, bench/README.md
// "Key transparency"): the RFC 9381 VRF, a prefix-tree update and a log append at 100,000 labels,
// search-proof generation and client verification at 100,000 labels with the proof's size, an
// owner's monitoring proof, and consistency proofs in a log of 1,000,000 entries. Everything is
// in memory (MemoryTransparencyStore) with deterministic keys; run it from the release preset.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "crypto/rng.h"
#include "transparency/log.h"

namespace {

using namespace sotto;
using namespace sotto::transparency;

constexpr std::size_t kLabels = 100'000;

AccountValue value_for(crypto::Rng& rng, std::uint32_t devices) {
  AccountValue v;
  v.identity_key[0] = 0x05;
  rng.fill(std::span(v.identity_key).subspan(1));
  for (std::uint32_t i = 1; i <= devices; ++i) {
    DeviceEntry d;
    d.device_id = i;
    d.registration_id = rng.next_u32() & 0x3fff;
    rng.fill(d.auth_key);
    d.name.assign(28, 0x5a);  // a sealed name of a short plaintext
    v.devices.push_back(std::move(d));
  }
  return v;
}

std::string label(std::size_t i) {
  return "user" + std::to_string(i);
}

// A log of kLabels accounts, two devices each, appended in batches of 1,000 (100 entries).
struct BigLog {
  BigLog()
      : key_rng(1),
        rng(2),
        vrf(VrfKeyPair::generate(key_rng)),
        signer(crypto::Ed25519KeyPair::generate(key_rng)),
        log(store, std::move(vrf), std::move(signer), rng) {
    if (!log.open(1)) std::abort();
    std::vector<TransparencyLog::Update> batch;
    for (std::size_t i = 0; i < kLabels; ++i) {
      batch.push_back({label(i), value_for(rng, 2)});
      if (batch.size() == 1000) {
        if (!log.append(batch, 2 + i)) std::abort();
        batch.clear();
      }
    }
  }
  crypto::DeterministicRng key_rng;
  crypto::DeterministicRng rng;
  MemoryTransparencyStore store;
  VrfKeyPair vrf;  // moved into the log
  crypto::Ed25519KeyPair signer;
  TransparencyLog log;
};

BigLog& big_log() {
  static BigLog* b = new BigLog();  // built once, on first use, for every case below
  return *b;
}

void BM_vrf_prove(benchmark::State& state) {
  crypto::DeterministicRng rng(3);
  const VrfKeyPair kp = VrfKeyPair::generate(rng);
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(kp.prove(as_bytes(label(i++))));
}
BENCHMARK(BM_vrf_prove);

void BM_vrf_verify(benchmark::State& state) {
  crypto::DeterministicRng rng(4);
  const VrfKeyPair kp = VrfKeyPair::generate(rng);
  const VrfProof pi = kp.prove(as_bytes("alice"));
  for (auto _ : state) {
    auto beta = vrf_verify(kp.public_key(), as_bytes("alice"), pi);
    if (!beta) state.SkipWithError("verify failed");
    benchmark::DoNotOptimize(beta);
  }
}
BENCHMARK(BM_vrf_verify);

void BM_prefix_tree_update_100k(benchmark::State& state) {
  crypto::DeterministicRng rng(5);
  PrefixTree tree;
  std::vector<Index> keys(kLabels);
  for (Index& k : keys) {
    rng.fill(k);
    Hash v{};
    rng.fill(v);
    tree.set(k, v);
  }
  std::size_t i = 0;
  Hash v{};
  for (auto _ : state) {
    v[0] = static_cast<std::uint8_t>(i);
    tree.set(keys[(i++ * 7919) % kLabels], v);
    benchmark::DoNotOptimize(tree.root());
  }
}
BENCHMARK(BM_prefix_tree_update_100k);

// One log entry changing one existing account (a device linked), at 100,000 labels: prefix
// update, commitment, log append and the new head's signature.
void BM_log_append_one_update_100k(benchmark::State& state) {
  BigLog& b = big_log();
  crypto::DeterministicRng rng(6);
  const AccountValue v = value_for(rng, 3);
  std::size_t i = 0;
  std::uint64_t now = 10'000'000;
  for (auto _ : state) {
    const std::vector<TransparencyLog::Update> u{{label((i++ * 7919) % kLabels), v}};
    if (!b.log.append(u, ++now)) state.SkipWithError("append failed");
  }
}
BENCHMARK(BM_log_append_one_update_100k);

// One entry with 100 updates: the per-update cost when appends are batched.
void BM_log_append_batch_of_100_100k(benchmark::State& state) {
  BigLog& b = big_log();
  crypto::DeterministicRng rng(7);
  const AccountValue v = value_for(rng, 3);
  std::size_t i = 0;
  std::uint64_t now = 20'000'000;
  for (auto _ : state) {
    std::vector<TransparencyLog::Update> u;
    for (int k = 0; k < 100; ++k) u.push_back({label((i++ * 7919) % kLabels), v});
    if (!b.log.append(u, ++now)) state.SkipWithError("append failed");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 100);
}
BENCHMARK(BM_log_append_batch_of_100_100k);

void BM_search_proof_generate_100k(benchmark::State& state) {
  BigLog& b = big_log();
  std::size_t i = 0;
  std::size_t bytes = 0;
  for (auto _ : state) {
    const auto p = b.log.search(label((i++ * 7919) % kLabels));
    bytes = encode_search_proof(*p).size();
    benchmark::DoNotOptimize(bytes);
  }
  state.counters["proof_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_search_proof_generate_100k);

// What a client does per lookup: decode the proof, verify VRF, inclusion, prefix path and
// commitment, decode the value.
void BM_search_proof_verify_100k(benchmark::State& state) {
  BigLog& b = big_log();
  const TreeHead head = b.log.head().head;
  const LogPublicKeys keys = b.log.public_keys();
  std::vector<Bytes> proofs;
  std::size_t total = 0;
  for (std::size_t k = 0; k < 64; ++k) {
    proofs.push_back(encode_search_proof(*b.log.search(label(k * 1543))));
    total += proofs.back().size();
  }
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t k = i++ % proofs.size();
    const auto p = decode_search_proof(proofs[k]);
    const auto r = verify_search(keys, head, label(k * 1543), *p);
    if (!r || !r->has_value()) state.SkipWithError("verify failed");
    benchmark::DoNotOptimize(r);
  }
  state.counters["proof_bytes"] = static_cast<double>(total) / static_cast<double>(proofs.size());
}
BENCHMARK(BM_search_proof_verify_100k);

void BM_monitor_verify_100k(benchmark::State& state) {
  BigLog& b = big_log();
  const TreeHead head = b.log.head().head;
  const LogPublicKeys keys = b.log.public_keys();
  const Bytes proof = encode_monitor_proof(*b.log.monitor(label(12345)));
  for (auto _ : state) {
    const auto r = verify_monitor(keys, head, label(12345), *decode_monitor_proof(proof));
    if (!r) state.SkipWithError("verify failed");
    benchmark::DoNotOptimize(r);
  }
  state.counters["proof_bytes"] = static_cast<double>(proof.size());
}
BENCHMARK(BM_monitor_verify_100k);

struct MillionEntries {
  MillionEntries() {
    for (std::uint64_t i = 0; i < 1'000'000; ++i) {
      const LogEntry e{i, Hash{static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i >> 8),
                               static_cast<std::uint8_t>(i >> 16)}};
      tree.append_leaf_hash(log_entry_hash(e));
    }
  }
  LogTree tree;
};

MillionEntries& million() {
  static MillionEntries* m = new MillionEntries();
  return *m;
}

void BM_consistency_proof_generate_1m(benchmark::State& state) {
  LogTree& t = million().tree;
  std::uint64_t i = 0;
  for (auto _ : state) {
    const std::uint64_t old_size = 1 + (i++ * 104729) % 999'000;
    benchmark::DoNotOptimize(t.consistency_proof(old_size, 1'000'000));
  }
}
BENCHMARK(BM_consistency_proof_generate_1m);

void BM_consistency_proof_verify_1m(benchmark::State& state) {
  LogTree& t = million().tree;
  const Hash new_root = t.root(1'000'000);
  std::vector<std::pair<std::uint64_t, ConsistencyProof>> proofs;
  std::vector<Hash> old_roots;
  for (std::uint64_t k = 0; k < 64; ++k) {
    const std::uint64_t old_size = 1 + (k * 104729) % 999'000;
    proofs.emplace_back(old_size, ConsistencyProof{t.consistency_proof(old_size, 1'000'000)});
    old_roots.push_back(t.root(old_size));
  }
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t k = i++ % proofs.size();
    const TreeHead old_head{proofs[k].first, 0, old_roots[k]};
    const TreeHead new_head{1'000'000, 0, new_root};
    if (!verify_consistency_proof(old_head, new_head, proofs[k].second))
      state.SkipWithError("verify failed");
  }
  state.counters["proof_bytes"] =
      static_cast<double>(encode_consistency_proof(proofs[1].second).size());
}
BENCHMARK(BM_consistency_proof_verify_1m);

}  // namespace

BENCHMARK_MAIN();
