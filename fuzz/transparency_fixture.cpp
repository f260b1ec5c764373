#include "transparency_fixture.h"

#include <algorithm>

#include "crypto/rng.h"

namespace sotto::fuzz {

using namespace sotto::transparency;

namespace {

AccountValue value_for(crypto::Rng& rng, std::uint32_t devices) {
  AccountValue v;
  v.identity_key[0] = 0x05;
  rng.fill(std::span(v.identity_key).subspan(1));
  for (std::uint32_t i = 1; i <= devices; ++i) {
    DeviceEntry d;
    d.device_id = i;
    d.registration_id = rng.next_u32() & 0x3fff;
    rng.fill(d.auth_key);
    d.name = Bytes{'d', static_cast<std::uint8_t>('0' + i)};
    v.devices.push_back(std::move(d));
  }
  return v;
}

TransparencyFixture build() {
  TransparencyFixture f;
  crypto::DeterministicRng key_rng(0x6b74);
  crypto::DeterministicRng rng(0x6b75);
  MemoryTransparencyStore store;
  // One key after the other: arguments' evaluation order differs between compilers.
  VrfKeyPair vrf = VrfKeyPair::generate(key_rng);
  crypto::Ed25519KeyPair signer = crypto::Ed25519KeyPair::generate(key_rng);
  TransparencyLog log(store, std::move(vrf), std::move(signer), rng);
  if (!log.open(1'700'000'000'000)) std::abort();
  f.labels = {"alice", "bob", "carol", "dave"};
  std::uint64_t now = 1'700'000'000'000;
  for (int round = 0; round < 3; ++round) {
    for (std::size_t i = 0; i + 1 < f.labels.size(); ++i) {
      if (round == 2 && i == 2) continue;  // carol has two versions, the others three
      const AccountValue v = value_for(rng, static_cast<std::uint32_t>(1 + round));
      f.versions[f.labels[i]].push_back(v);
      now += 1000;
      if (!log.append(std::vector<TransparencyLog::Update>{{f.labels[i], v}}, now)) std::abort();
    }
  }
  f.keys = log.public_keys();
  const std::uint64_t size = log.head().head.size;
  for (std::uint64_t s = 1; s <= size; ++s) {
    f.heads.push_back(*log.head_at(s));
    f.consistency.push_back(*log.consistency(s, size));
    f.records.push_back(*log.audit_record(s - 1));
  }
  for (const std::string& l : f.labels) {
    f.search.push_back(*log.search(l));
    f.monitor.push_back(*log.monitor(l));
    const VrfOutput beta = *vrf_proof_to_hash(f.search.back().leaf.vrf_proof);
    Index idx{};
    std::copy_n(beta.begin(), idx.size(), idx.begin());
    f.indices.push_back(idx);
  }
  f.prefix_root = f.search[0].leaf.entry.prefix_root;
  f.vrf_proof = f.search[0].leaf.vrf_proof;
  return f;
}

}  // namespace

const TransparencyFixture& transparency_fixture() {
  static const TransparencyFixture f = build();
  return f;
}

}  // namespace sotto::fuzz
