// Key transparency (src/transparency, docs/transparency.md): the RFC 9381 VRF against its
// Appendix B vectors and malformed proofs, the edwards25519 group wrapper on points with a
// torsion component, the log tree against RFC 9162's definition, the prefix tree against a map,
// and the log end to end: every proof from thousands of random updates verifies and returns the
// latest value, every single-byte change to a proof is caught, forks and rollbacks are refused,
// and a failed store append changes nothing.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "crypto/ed25519_group.h"
#include "crypto/rng.h"
#include "transparency/audit.h"
#include "transparency/codec.h"
#include "transparency/log.h"
#include "transparency/sqlite_store.h"

namespace sotto::transparency {
namespace {

namespace g = crypto::ed25519_group;

Bytes hex(std::string_view s) {
  Bytes out;
  for (std::size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16)));
  return out;
}

template <std::size_t N>
std::array<std::uint8_t, N> arr(std::string_view s) {
  const Bytes b = hex(s);
  std::array<std::uint8_t, N> out{};
  std::copy_n(b.begin(), N, out.begin());
  return out;
}

template <typename A>
Bytes bytes_of(const A& a) {
  return Bytes(a.begin(), a.end());
}

// ---------------------------------------------------------------------------------------------
// RFC 9381 Appendix B.3, examples 16-18 (ECVRF-EDWARDS25519-SHA512-TAI).
struct VrfVector {
  const char* sk;
  const char* pk;
  const char* alpha;
  const char* pi;
  const char* beta;
};
constexpr VrfVector kVrfVectors[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f26f8a57ccaed74ee1b190bed1f4"
     "79d9727d2d0f9b005a6e456a35d4fb0daab1268a1b0db10836d9826a528ca76567805",
     "90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff66b71dda49d2de59d03450451af"
     "026798e8f81cd2e333de5cdf4f3e140fdd8ae"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed5933bf0864a62558b3ed7f2fea45c9"
     "2a465301b3bbf5e3e54ddf2d935be3b67926da3ef39226bbc355bdc9850112c8f4b02",
     "eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb5e33821bc613efb94db5e5b54c7"
     "0a848a0bef4553a41befc57663b56373a5031"},
    {"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf8096bb474e53895c362d8628ee9f9"
     "ea3c0e52c7a5c691b6c18c9979866568add7a2d41b00b05081ed0f58ee5e31b3a970e",
     "645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c452118fec1219202a0edcf038bb63"
     "73241578be7217ba85a2687f7a0310b2df19f"},
};

VrfKeyPair vrf_from_hex(const char* sk) {
  return VrfKeyPair::from_secret(crypto::Secret<32>(hex(sk)));
}

TEST(Vrf, Rfc9381AppendixBVectors) {
  for (const VrfVector& v : kVrfVectors) {
    SCOPED_TRACE(v.pk);
    const VrfKeyPair kp = vrf_from_hex(v.sk);
    EXPECT_EQ(bytes_of(kp.public_key()), hex(v.pk));
    const Bytes alpha = hex(v.alpha);
    const VrfProof pi = kp.prove(alpha);
    EXPECT_EQ(bytes_of(pi), hex(v.pi));
    EXPECT_EQ(bytes_of(kp.evaluate(alpha)), hex(v.beta));
    const auto beta = vrf_verify(kp.public_key(), alpha, hex(v.pi));
    ASSERT_TRUE(beta.has_value());
    EXPECT_EQ(bytes_of(*beta), hex(v.beta));
    EXPECT_EQ(bytes_of(*vrf_proof_to_hash(hex(v.pi))), hex(v.beta));
  }
}

TEST(Vrf, VerifyRefusesOtherInputsAndEveryChangedBit) {
  for (const VrfVector& v : kVrfVectors) {
    const Bytes pk = hex(v.pk);
    const Bytes alpha = hex(v.alpha);
    const Bytes pi = hex(v.pi);
    Bytes other_alpha = alpha;
    other_alpha.push_back(0);
    EXPECT_FALSE(vrf_verify(pk, other_alpha, pi).has_value());
    for (std::size_t i = 0; i < pi.size(); ++i) {
      for (std::uint8_t flip : {0x01, 0x80}) {
        Bytes bad = pi;
        bad[i] ^= flip;
        EXPECT_FALSE(vrf_verify(pk, alpha, bad).has_value()) << "byte " << i;
      }
    }
    // Another vector's key.
    const Bytes other_pk = hex(kVrfVectors[(&v - kVrfVectors + 1) % 3].pk);
    EXPECT_FALSE(vrf_verify(other_pk, alpha, pi).has_value());
    // Wrong sizes.
    EXPECT_EQ(vrf_verify(pk, alpha, ByteView(pi).first(79)).error(), Error::malformed);
    EXPECT_EQ(vrf_verify(ByteView(pk).first(31), alpha, pi).error(), Error::invalid_key);
  }
}

// L, the order of the prime subgroup, little-endian.
const g::Scalar kOrder =
    arr<32>("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");

TEST(Vrf, RefusesNonCanonicalS) {
  const VrfVector& v = kVrfVectors[0];
  Bytes pi = hex(v.pi);
  // s + L: the same value mod L, but not the canonical encoding RFC 9381 requires.
  unsigned carry = 0;
  for (std::size_t i = 0; i < 32; ++i) {
    const unsigned sum = pi[48 + i] + kOrder[i] + carry;
    pi[48 + i] = static_cast<std::uint8_t>(sum);
    carry = sum >> 8;
  }
  ASSERT_EQ(carry, 0u);
  EXPECT_EQ(vrf_verify(hex(v.pk), hex(v.alpha), pi).error(), Error::bad_vrf_proof);
}

// Points of small order (their encodings as libsodium lists them) and encodings that are not
// points at all.
constexpr const char* kSmallOrder[] = {
    "0100000000000000000000000000000000000000000000000000000000000000",  // identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  // order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  // order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  // order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  // order 8
};
constexpr const char* kNotPoints[] = {
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // y = p + 1, not < p
    "0100000000000000000000000000000000000000000000000000000000000080",  // x = 0 with sign set
    "0200000000000000000000000000000000000000000000000000000000000000",  // x^2 not a square
};

TEST(Vrf, RefusesSmallOrderAndInvalidPublicKeys) {
  const VrfVector& v = kVrfVectors[0];
  for (const char* k : kSmallOrder) {
    EXPECT_EQ(vrf_verify(hex(k), hex(v.alpha), hex(v.pi)).error(), Error::invalid_key) << k;
  }
  for (const char* k : kNotPoints) {
    EXPECT_EQ(vrf_verify(hex(k), hex(v.alpha), hex(v.pi)).error(), Error::invalid_key) << k;
  }
}

TEST(Vrf, RefusesGammaThatIsNoPoint) {
  const VrfVector& v = kVrfVectors[1];
  for (const char* k : kNotPoints) {
    Bytes pi = hex(v.pi);
    const Bytes gamma = hex(k);
    std::copy(gamma.begin(), gamma.end(), pi.begin());
    EXPECT_EQ(vrf_verify(hex(v.pk), hex(v.alpha), pi).error(), Error::bad_vrf_proof);
    EXPECT_EQ(vrf_proof_to_hash(pi).error(), Error::bad_vrf_proof);
  }
}

TEST(Vrf, RandomKeysProveAndVerify) {
  crypto::DeterministicRng rng(7);
  for (int i = 0; i < 50; ++i) {
    const VrfKeyPair kp = VrfKeyPair::generate(rng);
    const std::string alpha = "user" + std::to_string(i);
    const VrfProof pi = kp.prove(as_bytes(alpha));
    const auto beta = vrf_verify(kp.public_key(), as_bytes(alpha), pi);
    ASSERT_TRUE(beta.has_value());
    EXPECT_EQ(*beta, kp.evaluate(as_bytes(alpha)));
  }
}

// ---------------------------------------------------------------------------------------------
TEST(Ed25519Group, DecodeFollowsRfc8032) {
  for (const char* k : kNotPoints) EXPECT_FALSE(g::decode_point(hex(k)).has_value()) << k;
  for (const char* k : kSmallOrder) EXPECT_TRUE(g::decode_point(hex(k)).has_value()) << k;
  EXPECT_FALSE(g::decode_point(Bytes(31, 0)).has_value());
}

TEST(Ed25519Group, MultipliesPointsWithATorsionComponent) {
  crypto::DeterministicRng rng(3);
  const g::Point t8 = *g::decode_point(hex(kSmallOrder[4]));
  for (int i = 0; i < 20; ++i) {
    g::Scalar a{};
    rng.fill(a);
    const g::Point q = g::mul_base(a);  // in the prime-order subgroup
    const g::Point p = g::add(q, t8);   // with an order-8 component
    EXPECT_EQ(g::mul_cofactor(p), g::mul_cofactor(q));
    g::Scalar n{};
    rng.fill(n);
    g::Scalar n1 = n;  // n + 1, n's low byte below 255 so it does not carry
    n1[0] = static_cast<std::uint8_t>(n1[0] & 0xfe);
    n[0] = n1[0];
    n1[0] |= 1;
    EXPECT_EQ(g::mul(n1, p), g::add(g::mul(n, p), p));
    g::Scalar eight{};
    eight[0] = 8;
    EXPECT_EQ(g::mul(eight, p), g::mul_cofactor(p));
    EXPECT_EQ(g::mul(kOrder, q), g::identity());
    // L * p = L * t8 = 5 * t8, since L = 5 mod 8.
    g::Point five_t8 = g::identity();
    for (int k = 0; k < 5; ++k) five_t8 = g::add(five_t8, t8);
    EXPECT_EQ(g::mul(kOrder, p), five_t8);
  }
}

// ---------------------------------------------------------------------------------------------
// RFC 9162's MTH, computed the slow way the RFC states it.
Hash reference_root(const std::vector<Hash>& leaves, std::size_t begin, std::size_t end) {
  const std::size_t n = end - begin;
  if (n == 0) return empty_log_root();
  if (n == 1) return leaves[begin];
  std::size_t k = 1;
  while (k * 2 < n) k *= 2;
  return log_node_hash(reference_root(leaves, begin, begin + k),
                       reference_root(leaves, begin + k, end));
}

TEST(LogTree, CertificateTransparencyReferenceRoots) {
  // The eight leaves of the Certificate Transparency reference test and its roots.
  const char* leaves[] = {"",
                          "00",
                          "10",
                          "2021",
                          "3031",
                          "40414243",
                          "5051525354555657",
                          "606162636465666768696a6b6c6d6e6f"};
  const char* roots[] = {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
                         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
                         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
                         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
                         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  LogTree t;
  for (int i = 0; i < 8; ++i) {
    t.append_leaf_hash(log_leaf_hash(hex(leaves[i])));
    EXPECT_EQ(bytes_of(t.root(static_cast<std::uint64_t>(i + 1))), hex(roots[i])) << i + 1;
  }
  EXPECT_EQ(bytes_of(empty_log_root()),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
}

TEST(LogTree, EveryInclusionAndConsistencyProofVerifiesAndEveryTamperFails) {
  LogTree t;
  std::vector<Hash> leaves;
  constexpr std::uint64_t kMax = 70;
  for (std::uint64_t i = 0; i < kMax; ++i) {
    const std::string s = "entry" + std::to_string(i);
    leaves.push_back(log_leaf_hash(as_bytes(s)));
    t.append_leaf_hash(leaves.back());
  }
  for (std::uint64_t n = 1; n <= kMax; ++n) {
    const Hash root = t.root(n);
    ASSERT_EQ(root, reference_root(leaves, 0, n)) << n;
    for (std::uint64_t m = 0; m < n; ++m) {
      HashPath p = t.inclusion_proof(m, n);
      ASSERT_TRUE(verify_inclusion(leaves[m], m, n, p, root)) << m << "/" << n;
      EXPECT_FALSE(verify_inclusion(leaves[(m + 1) % n], m, n, p, root) && n > 1);
      for (std::size_t j = 0; j < p.size(); ++j) {
        HashPath bad = p;
        bad[j][0] ^= 1;
        EXPECT_FALSE(verify_inclusion(leaves[m], m, n, bad, root));
      }
      HashPath longer = p;
      longer.push_back(root);
      EXPECT_FALSE(verify_inclusion(leaves[m], m, n, longer, root));
    }
    for (std::uint64_t m = 0; m <= n; ++m) {
      const Hash old_root = t.root(m);
      HashPath p = t.consistency_proof(m, n);
      ASSERT_TRUE(verify_consistency(m, n, old_root, root, p)) << m << "/" << n;
      if (m == 0 || m == n) continue;
      for (std::size_t j = 0; j < p.size(); ++j) {
        HashPath bad = p;
        bad[j][31] ^= 0x80;
        EXPECT_FALSE(verify_consistency(m, n, old_root, root, bad));
      }
      Hash forked = old_root;
      forked[5] ^= 1;
      EXPECT_FALSE(verify_consistency(m, n, forked, root, p));
      EXPECT_FALSE(verify_consistency(m, n, old_root, forked, p));
      EXPECT_FALSE(verify_consistency(m, n, old_root, root, {}));
    }
  }
}

// ---------------------------------------------------------------------------------------------
Index random_index(crypto::Rng& rng) {
  Index i{};
  rng.fill(i);
  return i;
}

TEST(PrefixTree, MatchesAMapAndProvesMembershipAndAbsence) {
  crypto::DeterministicRng rng(11);
  PrefixTree tree;
  std::map<Index, Hash> model;
  EXPECT_EQ(tree.root(), empty_prefix_root());
  auto empty_proof = tree.prove(random_index(rng));
  EXPECT_EQ(verify_prefix_proof(tree.root(), random_index(rng), empty_proof).value(), std::nullopt);
  std::vector<Index> keys;
  for (int i = 0; i < 3000; ++i) {
    Index idx =
        (i % 5 == 4 && !keys.empty()) ? keys[rng.next_u32() % keys.size()] : random_index(rng);
    // Some indices share long prefixes, to force deep paths.
    if (i % 7 == 3 && !keys.empty()) {
      idx = keys.back();
      idx[31] ^= static_cast<std::uint8_t>(1 + rng.next_u32() % 255);
    }
    Hash v{};
    rng.fill(v);
    tree.set(idx, v);
    if (model.emplace(idx, v).second) keys.push_back(idx);
    model[idx] = v;
  }
  EXPECT_EQ(tree.size(), model.size());
  const Hash root = tree.root();
  for (const auto& [idx, v] : model) {
    const PrefixProof p = tree.prove(idx);
    const auto got = verify_prefix_proof(root, idx, p);
    ASSERT_TRUE(got.has_value());
    ASSERT_EQ(*got, std::optional<Hash>(v));
    Bytes enc;
    encode_prefix_proof(p, enc);
    ASSERT_EQ(decode_prefix_proof(enc).value(), p);
  }
  for (int i = 0; i < 500; ++i) {
    const Index idx = random_index(rng);
    const auto got = verify_prefix_proof(root, idx, tree.prove(idx));
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, std::nullopt);
  }
  // Removing an index gives the root of the tree that never had it.
  PrefixTree without;
  const Index gone = keys[17];
  for (const auto& [idx, v] : model)
    if (idx != gone) without.set(idx, v);
  tree.erase(gone);
  EXPECT_EQ(tree.root(), without.root());
  EXPECT_EQ(tree.get(gone), std::nullopt);
}

TEST(PrefixTree, EveryTamperedProofFails) {
  crypto::DeterministicRng rng(12);
  PrefixTree tree;
  std::vector<Index> keys;
  for (int i = 0; i < 200; ++i) {
    keys.push_back(random_index(rng));
    Hash v{};
    rng.fill(v);
    tree.set(keys.back(), v);
  }
  const Hash root = tree.root();
  for (int k = 0; k < 20; ++k) {
    const Index idx = k % 2 == 0 ? keys[static_cast<std::size_t>(k)] : random_index(rng);
    const PrefixProof p = tree.prove(idx);
    const auto honest = verify_prefix_proof(root, idx, p).value();
    Bytes enc;
    encode_prefix_proof(p, enc);
    for (std::size_t i = 0; i < enc.size(); ++i) {
      Bytes bad = enc;
      bad[i] ^= 0x04;
      auto decoded = decode_prefix_proof(bad);
      if (!decoded) continue;
      const auto got = verify_prefix_proof(root, idx, *decoded);
      EXPECT_TRUE(!got.has_value() || *got == honest) << "byte " << i;
      // A changed proof that still verifies must say the same thing (a changed other leaf's
      // index bit that the walk never looks at is harmless).
    }
  }
}

TEST(PrefixTree, DecodeRefusesMalformedProofs) {
  Bytes ok;
  PrefixProof p;
  p.ends_in_leaf = true;
  p.steps = {{3, {}}, {9, {}}};
  encode_prefix_proof(p, ok);
  ASSERT_TRUE(decode_prefix_proof(ok).has_value());
  for (std::size_t n = 0; n < ok.size(); ++n)
    EXPECT_FALSE(decode_prefix_proof(ByteView(ok).first(n)).has_value());
  Bytes trailing = ok;
  trailing.push_back(0);
  EXPECT_FALSE(decode_prefix_proof(trailing).has_value());
  p.steps = {{9, {}}, {9, {}}};  // depths must increase
  Bytes same;
  encode_prefix_proof(p, same);
  EXPECT_FALSE(decode_prefix_proof(same).has_value());
  Bytes kind = ok;
  kind[0] = 2;
  EXPECT_FALSE(decode_prefix_proof(kind).has_value());
  // 257 steps: deeper than any index.
  Bytes deep;
  codec::put_u8(deep, 1);
  deep.resize(deep.size() + 64);
  codec::put_u16(deep, 257);
  for (int i = 0; i < 257; ++i) {
    codec::put_u8(deep, static_cast<std::uint8_t>(i));
    deep.resize(deep.size() + 32);
  }
  EXPECT_FALSE(decode_prefix_proof(deep).has_value());
  // Steps under an empty tree.
  Bytes empty_with_steps = {0, 0, 1, 0};
  empty_with_steps.resize(empty_with_steps.size() + 32);
  EXPECT_FALSE(decode_prefix_proof(empty_with_steps).has_value());
}

// ---------------------------------------------------------------------------------------------
AccountValue random_value(crypto::Rng& rng, int devices) {
  AccountValue v;
  v.identity_key[0] = 0x05;
  rng.fill(std::span(v.identity_key).subspan(1));
  std::uint32_t id = 0;
  for (int i = 0; i < devices; ++i) {
    DeviceEntry d;
    id += 1 + rng.next_u32() % 3;
    d.device_id = id;
    d.registration_id = rng.next_u32() & 0x3fff;
    rng.fill(d.auth_key);
    d.name.resize(rng.next_u32() % 40);
    rng.fill(d.name);
    v.devices.push_back(std::move(d));
  }
  return v;
}

TEST(AccountValue, CanonicalEncoding) {
  crypto::DeterministicRng rng(5);
  const AccountValue v = random_value(rng, 3);
  const Bytes enc = encode_account_value(v);
  EXPECT_EQ(decode_account_value(enc).value(), v);
  for (std::size_t n = 0; n < enc.size(); ++n)
    EXPECT_FALSE(decode_account_value(ByteView(enc).first(n)).has_value());
  Bytes trailing = enc;
  trailing.push_back(0);
  EXPECT_FALSE(decode_account_value(trailing).has_value());
  AccountValue unsorted = v;
  std::swap(unsorted.devices[0], unsorted.devices[1]);
  EXPECT_FALSE(valid(unsorted));
  // The same encoding with the devices swapped is refused.
  AccountValue two = random_value(rng, 2);
  Bytes swapped;
  codec::put_u8(swapped, 1);
  codec::put(swapped, two.identity_key);
  codec::put_u8(swapped, 2);
  for (int i : {1, 0}) {
    const DeviceEntry& d = two.devices[static_cast<std::size_t>(i)];
    codec::put_u32(swapped, d.device_id);
    codec::put_u32(swapped, d.registration_id);
    codec::put(swapped, d.auth_key);
    codec::put_u16(swapped, static_cast<std::uint16_t>(d.name.size()));
    codec::put(swapped, d.name);
  }
  EXPECT_FALSE(decode_account_value(swapped).has_value());
  AccountValue long_name = v;
  long_name.devices[0].name.assign(kMaxDeviceName + 1, 'x');
  EXPECT_FALSE(valid(long_name));
}

// ---------------------------------------------------------------------------------------------
// The log's keys come from key_seed, the VRF key first: a log over the same store with the same
// seed is the same log.
TransparencyLog make_log(TransparencyStore& store, std::uint64_t key_seed, crypto::Rng& rng) {
  crypto::DeterministicRng key_rng(key_seed);
  VrfKeyPair vrf = VrfKeyPair::generate(key_rng);
  crypto::Ed25519KeyPair signer = crypto::Ed25519KeyPair::generate(key_rng);
  return TransparencyLog(store, std::move(vrf), std::move(signer), rng);
}

crypto::Ed25519KeyPair signing_key_of(std::uint64_t key_seed) {
  crypto::DeterministicRng key_rng(key_seed);
  (void)VrfKeyPair::generate(key_rng);
  return crypto::Ed25519KeyPair::generate(key_rng);
}

struct LogFixture {
  explicit LogFixture(std::uint64_t seed, std::uint64_t key_seed = 99)
      : rng(seed), log(make_log(store, key_seed, rng)) {
    EXPECT_TRUE(log.open(1000).has_value());
  }
  crypto::DeterministicRng rng;
  MemoryTransparencyStore store;
  TransparencyLog log;
};

TEST(TransparencyLog, ThousandsOfRandomUpdatesAllProveTheirLatestValue) {
  LogFixture f(21);
  const LogPublicKeys keys = f.log.public_keys();
  crypto::DeterministicRng rng(22);
  std::map<std::string, std::vector<AccountValue>> model;
  TreeHeadTracker tracker(keys);
  ASSERT_TRUE(tracker.advance(f.log.head(), {}).has_value());
  std::vector<SignedTreeHead> heads{f.log.head()};
  std::uint64_t now = 1000;
  for (int batch = 0; batch < 150; ++batch) {
    std::vector<TransparencyLog::Update> updates;
    const int n = 1 + static_cast<int>(rng.next_u32() % 20);
    for (int i = 0; i < n; ++i) {
      const std::string label = "user" + std::to_string(rng.next_u32() % 400);
      updates.push_back({label, random_value(rng, 1 + static_cast<int>(rng.next_u32() % 4))});
      model[label].push_back(updates.back().value);
    }
    now += rng.next_u32() % 5000;
    const auto head = f.log.append(updates, now);
    ASSERT_TRUE(head.has_value());
    ASSERT_TRUE(verify_tree_head(*head, keys.signing_key).has_value());
    const auto proof = f.log.consistency(tracker.current()->head.size, head->head.size);
    ASSERT_TRUE(tracker.advance(*head, *proof).has_value());
    heads.push_back(*head);
  }
  const TreeHead head = f.log.head().head;
  EXPECT_EQ(head.size, 151u);
  for (const auto& [label, versions] : model) {
    const auto sp = f.log.search(label);
    ASSERT_TRUE(sp.has_value());
    const Bytes enc = encode_search_proof(*sp);
    const auto decoded = decode_search_proof(enc);
    ASSERT_TRUE(decoded.has_value());
    ASSERT_EQ(*decoded, *sp);
    const auto got = verify_search(keys, head, label, *decoded);
    ASSERT_TRUE(got.has_value()) << label << ": " << to_string(got.error());
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->version, versions.size());
    EXPECT_EQ((*got)->value, versions.back());

    const auto mp = f.log.monitor(label);
    ASSERT_TRUE(mp.has_value());
    const auto mdec = decode_monitor_proof(encode_monitor_proof(*mp));
    ASSERT_TRUE(mdec.has_value());
    const auto all = verify_monitor(keys, head, label, *mdec);
    ASSERT_TRUE(all.has_value());
    ASSERT_EQ(all->size(), versions.size());
    for (std::size_t i = 0; i < versions.size(); ++i) EXPECT_EQ((*all)[i].value, versions[i]);
    // A proof for one label says nothing about another.
    EXPECT_FALSE(verify_search(keys, head, label + "x", *sp).has_value());
  }
  // Labels never logged are proven absent.
  for (int i = 0; i < 50; ++i) {
    const std::string label = "nobody" + std::to_string(i);
    const auto sp = f.log.search(label);
    const auto got = verify_search(keys, head, label, *sp);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, std::nullopt);
    const auto mp = f.log.monitor(label);
    EXPECT_TRUE(verify_monitor(keys, head, label, *mp).value().empty());
  }
  // Consistency between every pair of a sample of heads.
  for (std::size_t a = 0; a < heads.size(); a += 7) {
    for (std::size_t b = a; b < heads.size(); b += 11) {
      const auto p = f.log.consistency(heads[a].head.size, heads[b].head.size);
      ASSERT_TRUE(verify_consistency_proof(heads[a].head, heads[b].head, *p).has_value());
      if (a != b) {
        EXPECT_EQ(verify_consistency_proof(heads[b].head, heads[a].head, *p).error(),
                  Error::rollback);
      }
    }
  }
}

TEST(TransparencyLog, EverySingleByteChangeToASearchOrMonitorProofIsCaught) {
  LogFixture f(31);
  crypto::DeterministicRng rng(32);
  for (int i = 0; i < 40; ++i) {
    const std::vector<TransparencyLog::Update> u{
        {"user" + std::to_string(i % 15), random_value(rng, 2)}};
    ASSERT_TRUE(f.log.append(u, 2000 + static_cast<std::uint64_t>(i)).has_value());
  }
  const LogPublicKeys keys = f.log.public_keys();
  const TreeHead head = f.log.head().head;
  for (const std::string label : {"user3", "absent"}) {
    const Bytes enc = encode_search_proof(*f.log.search(label));
    const auto honest = verify_search(keys, head, label, *decode_search_proof(enc));
    ASSERT_TRUE(honest.has_value());
    for (std::size_t i = 0; i < enc.size(); ++i) {
      Bytes bad = enc;
      bad[i] ^= 0x10;
      const auto d = decode_search_proof(bad);
      if (!d) continue;
      const auto got = verify_search(keys, head, label, *d);
      // The other leaf ending an absent label's walk may differ in bits the walk never reads.
      EXPECT_TRUE(!got.has_value() || (label == "absent" && *got == *honest)) << "byte " << i;
    }
  }
  const Bytes menc = encode_monitor_proof(*f.log.monitor("user4"));
  ASSERT_TRUE(verify_monitor(keys, head, "user4", *decode_monitor_proof(menc)).has_value());
  for (std::size_t i = 0; i < menc.size(); ++i) {
    Bytes bad = menc;
    bad[i] ^= 0x01;
    const auto d = decode_monitor_proof(bad);
    if (!d) continue;
    EXPECT_FALSE(verify_monitor(keys, head, "user4", *d).has_value()) << "byte " << i;
  }
  // The right proof against the wrong head, and with the wrong keys.
  const SearchProof sp = *f.log.search("user3");
  TreeHead other = head;
  other.root[0] ^= 1;
  EXPECT_EQ(verify_search(keys, other, "user3", sp).error(), Error::bad_inclusion_proof);
  other = head;
  other.size += 1;
  EXPECT_FALSE(verify_search(keys, other, "user3", sp).has_value());
  LogPublicKeys wrong = keys;
  wrong.vrf_key = vrf_from_hex(kVrfVectors[0].sk).public_key();
  EXPECT_EQ(verify_search(wrong, head, "user3", sp).error(), Error::bad_vrf_proof);
}

TEST(TransparencyLog, ASubstitutedValueOrHiddenVersionIsCaught) {
  LogFixture f(41);
  crypto::DeterministicRng rng(42);
  const AccountValue honest = random_value(rng, 2);
  ASSERT_TRUE(f.log.append(std::vector<TransparencyLog::Update>{{"bob", honest}}, 2000));
  const AccountValue ghost = random_value(rng, 3);
  ASSERT_TRUE(f.log.append(std::vector<TransparencyLog::Update>{{"bob", ghost}}, 3000));
  const LogPublicKeys keys = f.log.public_keys();
  const TreeHead head = f.log.head().head;
  // The server answers with the honest value but the logged version's opening: refused.
  SearchProof sp = *f.log.search("bob");
  sp.latest->opening.value = encode_account_value(honest);
  EXPECT_EQ(verify_search(keys, head, "bob", sp).error(), Error::bad_commitment);
  // Bob's monitor shows both versions, the ghost one included.
  const auto all = verify_monitor(keys, head, "bob", *f.log.monitor("bob"));
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].value, ghost);
  // Leaving the ghost version out of bob's monitor proof does not verify.
  MonitorProof mp = *f.log.monitor("bob");
  mp.versions.pop_back();
  EXPECT_EQ(verify_monitor(keys, head, "bob", mp).error(), Error::bad_history);
  // Claiming bob absent with another label's path does not verify.
  SearchProof absent = *f.log.search("carol");
  EXPECT_FALSE(verify_search(keys, head, "bob", absent).has_value());
}

TEST(TransparencyLog, ForkedAndRolledBackHeadsAreRefused) {
  // Two logs with the same keys and the same first updates, then different ones: a server
  // showing alice one and bob the other.
  LogFixture a(51, 7);
  LogFixture b(51, 7);
  crypto::DeterministicRng rng(52);
  for (int i = 0; i < 5; ++i) {
    const std::vector<TransparencyLog::Update> u{
        {"user" + std::to_string(i), random_value(rng, 1)}};
    ASSERT_TRUE(a.log.append(u, 2000));
    ASSERT_TRUE(b.log.append(u, 2000));
  }
  ASSERT_EQ(a.log.head(), b.log.head());
  TreeHeadTracker alice(a.log.public_keys());
  ASSERT_TRUE(alice.advance(a.log.head(), {}));
  const std::uint64_t common = a.log.head().head.size;
  ASSERT_TRUE(
      a.log.append(std::vector<TransparencyLog::Update>{{"bob", random_value(rng, 1)}}, 3000));
  ASSERT_TRUE(
      b.log.append(std::vector<TransparencyLog::Update>{{"bob", random_value(rng, 2)}}, 3000));
  ASSERT_TRUE(
      a.log.append(std::vector<TransparencyLog::Update>{{"x", random_value(rng, 1)}}, 4000));
  ASSERT_TRUE(
      b.log.append(std::vector<TransparencyLog::Update>{{"x", random_value(rng, 1)}}, 4000));
  const SignedTreeHead head_a = a.log.head();
  const SignedTreeHead head_b = b.log.head();
  ASSERT_NE(head_a.head.root, head_b.head.root);
  ASSERT_TRUE(alice.advance(head_a, *a.log.consistency(common, head_a.head.size)));
  // Bob's view: same size, other root. No proof makes them consistent.
  EXPECT_FALSE(alice.advance(head_b, {}).has_value());
  EXPECT_FALSE(alice.advance(head_b, *b.log.consistency(common, head_b.head.size)).has_value());
  const auto mid = *b.log.head_at(common + 1);
  EXPECT_EQ(alice.advance(mid, {}).error(), Error::rollback);
  // A head signed by another key, and a changed signature.
  LogFixture other(53, 8);
  EXPECT_EQ(alice.advance(other.log.head(), {}).error(), Error::bad_signature);
  SignedTreeHead bad_sig = head_a;
  bad_sig.signature[10] ^= 1;
  EXPECT_EQ(verify_tree_head(bad_sig, a.log.public_keys().signing_key).error(),
            Error::bad_signature);
  // The same size and root signed with another time: the log equivocating.
  TreeHeadTracker carol(a.log.public_keys());
  ASSERT_TRUE(carol.advance(a.log.head(), {}));
  TreeHead later = a.log.head().head;
  later.timestamp_ms += 1;
  const auto log_key = signing_key_of(7);
  ASSERT_EQ(log_key.public_key(), a.log.public_keys().signing_key);
  EXPECT_EQ(carol.advance(sign_tree_head(later, log_key), {}).error(),
            Error::bad_consistency_proof);
  EXPECT_TRUE(carol.advance(a.log.head(), {}).has_value());  // the same head again is fine
  EXPECT_EQ(alice.current()->head, head_a.head);
}

TEST(TransparencyLog, AFailedStoreAppendChangesNothingAndReopeningRebuildsTheSameLog) {
  LogFixture f(61);
  crypto::DeterministicRng rng(62);
  ASSERT_TRUE(f.log.append(std::vector<TransparencyLog::Update>{{"alice", random_value(rng, 1)},
                                                                {"bob", random_value(rng, 2)}},
                           2000));
  const SignedTreeHead before = f.log.head();
  const Bytes search_before = encode_search_proof(*f.log.search("bob"));
  f.store.fail_next_append();
  EXPECT_EQ(f.log
                .append(std::vector<TransparencyLog::Update>{{"bob", random_value(rng, 1)},
                                                             {"carol", random_value(rng, 1)}},
                        3000)
                .error(),
            Error::storage_failure);
  EXPECT_EQ(f.log.head(), before);
  EXPECT_EQ(encode_search_proof(*f.log.search("bob")), search_before);
  EXPECT_EQ(f.log.search("carol")->latest, std::nullopt);
  EXPECT_EQ(
      verify_search(f.log.public_keys(), before.head, "carol", *f.log.search("carol")).value(),
      std::nullopt);
  // Invalid updates are refused whole.
  AccountValue unsorted = random_value(rng, 2);
  std::swap(unsorted.devices[0], unsorted.devices[1]);
  EXPECT_EQ(f.log.append(std::vector<TransparencyLog::Update>{{"dave", unsorted}}, 4000).error(),
            Error::invalid_argument);
  EXPECT_EQ(
      f.log.append(std::vector<TransparencyLog::Update>{{"", random_value(rng, 1)}}, 4000).error(),
      Error::invalid_argument);
  EXPECT_EQ(f.log.head(), before);

  // The same store and keys rebuild the same log.
  TransparencyLog reopened = make_log(f.store, 99, f.rng);
  ASSERT_TRUE(reopened.open(1).has_value());
  EXPECT_EQ(reopened.head(), before);
  EXPECT_EQ(encode_search_proof(*reopened.search("bob")), search_before);

  // A store whose history was rewritten does not open.
  f.store.entries_for_test()[1].versions[0].value[5] ^= 1;
  f.store.entries_for_test()[1].versions[0].link.commitment[0] ^= 1;
  TransparencyLog tampered = make_log(f.store, 99, f.rng);
  EXPECT_EQ(tampered.open(1).error(), Error::bad_history);
}

// ---------------------------------------------------------------------------------------------
std::vector<AuditRecord> all_records(const TransparencyLog& log) {
  std::vector<AuditRecord> out;
  for (std::uint64_t i = 0; i < log.head().head.size; ++i) out.push_back(*log.audit_record(i));
  return out;
}

TEST(Auditor, FollowsAnHonestLogAndCosignsItsHeads) {
  LogFixture f(81);
  crypto::DeterministicRng rng(82);
  crypto::DeterministicRng auditor_rng(83);
  const auto auditor_key = crypto::Ed25519KeyPair::generate(auditor_rng);
  Auditor auditor(f.log.public_keys());
  std::uint64_t applied = 0;
  for (int i = 0; i < 60; ++i) {
    std::vector<TransparencyLog::Update> u{{"user" + std::to_string(i % 9), random_value(rng, 1)}};
    if (i % 4 == 0) u.push_back(u.front());  // one label twice in one entry
    ASSERT_TRUE(f.log.append(u, 5000 + static_cast<std::uint64_t>(i)));
    for (; applied < f.log.head().head.size; ++applied) {
      const Bytes enc = encode_audit_record(*f.log.audit_record(applied));
      const auto rec = decode_audit_record(enc);
      ASSERT_TRUE(rec.has_value());
      ASSERT_TRUE(auditor.apply(*rec).has_value()) << applied;
    }
    const SignedTreeHead head = f.log.head();
    EXPECT_EQ(auditor.head(), head.head);
    const auto sig = auditor.check_and_cosign(head, auditor_key);
    ASSERT_TRUE(sig.has_value());
    EXPECT_TRUE(verify_cosignature(head.head, auditor_key.public_key(), *sig).has_value());
    // An earlier head is co-signed too.
    EXPECT_TRUE(auditor.check_and_cosign(*f.log.head_at(1 + applied / 2), auditor_key));
  }
  EXPECT_FALSE(
      verify_cosignature(f.log.head().head, f.log.public_keys().signing_key, Bytes(64, 0)));
}

// The dated co-signature (what servers keep and clients check) binds the head and the time, and
// is not the undated one.
TEST(Auditor, DatedCosignaturesBindTheTime) {
  LogFixture f(84);
  crypto::DeterministicRng auditor_rng(85);
  const auto key = crypto::Ed25519KeyPair::generate(auditor_rng);
  const TreeHead head = f.log.head().head;
  const auto sig = cosign_tree_head_at(head, 1000, key);
  EXPECT_TRUE(verify_cosignature_at(head, 1000, key.public_key(), sig));
  EXPECT_EQ(verify_cosignature_at(head, 1001, key.public_key(), sig).error(), Error::bad_signature);
  TreeHead other = head;
  other.timestamp_ms += 1;
  EXPECT_FALSE(verify_cosignature_at(other, 1000, key.public_key(), sig));
  EXPECT_FALSE(verify_cosignature(head, key.public_key(), sig));
  EXPECT_FALSE(verify_cosignature_at(head, 1000, key.public_key(), cosign_tree_head(head, key)));
  // check() is check_and_cosign() without the signature.
  Auditor auditor(f.log.public_keys());
  ASSERT_TRUE(auditor.apply(*f.log.audit_record(0)));
  EXPECT_TRUE(auditor.check(*f.log.head_at(1)));
  SignedTreeHead unsigned_head = *f.log.head_at(1);
  unsigned_head.signature[0] ^= 1;
  EXPECT_EQ(auditor.check(unsigned_head).error(), Error::bad_signature);
}

TEST(Auditor, CatchesARewrittenDroppedOrTakenBackEntry) {
  LogFixture f(91);
  crypto::DeterministicRng rng(92);
  crypto::DeterministicRng auditor_rng(93);
  const auto auditor_key = crypto::Ed25519KeyPair::generate(auditor_rng);
  ASSERT_TRUE(
      f.log.append(std::vector<TransparencyLog::Update>{{"bob", random_value(rng, 1)}}, 2000));
  ASSERT_TRUE(f.log.append(std::vector<TransparencyLog::Update>{{"bob", random_value(rng, 2)}},
                           3000));  // the ghost device
  const std::vector<AuditRecord> honest = all_records(f.log);
  ASSERT_EQ(honest.size(), 3u);

  // Taking the ghost back: entry 3 sets bob's leaf to the chain after version 1 again, with the
  // prefix root that change really gives.
  {
    Auditor a(f.log.public_keys());
    for (const AuditRecord& r : honest) ASSERT_TRUE(a.apply(r));
    const LeafChange v1 = honest[1].changes[0];
    PrefixTree mirror;
    mirror.set(v1.index, chain_next(Hash{}, v1.link));
    const AuditRecord take_back{{4000, mirror.root()}, {{v1.index, {1, 3, v1.link.commitment}}}};
    EXPECT_EQ(a.apply(take_back).error(), Error::bad_history);
    // Nor with the version counted on but the old commitment and no new entry index.
    const AuditRecord replay{{4000, mirror.root()}, {{v1.index, {3, 2, v1.link.commitment}}}};
    EXPECT_EQ(a.apply(replay).error(), Error::bad_history);
    // A record whose root is not what its changes give.
    AuditRecord wrong_root = honest[2];
    wrong_root.changes[0].link = {3, 3, v1.link.commitment};
    EXPECT_EQ(a.apply(wrong_root).error(), Error::bad_history);
    EXPECT_EQ(a.head(), f.log.head().head);  // refused records changed nothing
    EXPECT_TRUE(a.check_and_cosign(f.log.head(), auditor_key));
  }
  // Dropping an entry: record 2 offered as record 1.
  {
    Auditor a(f.log.public_keys());
    ASSERT_TRUE(a.apply(honest[0]));
    EXPECT_EQ(a.apply(honest[2]).error(), Error::bad_history);
  }
  // Rewriting an old entry: a log with the same keys whose entry 1 differs signs heads the
  // auditor's replay of the first log does not give.
  {
    LogFixture forked(91);
    ASSERT_TRUE(forked.log.append(
        std::vector<TransparencyLog::Update>{{"bob", random_value(rng, 3)}}, 2000));
    ASSERT_TRUE(forked.log.append(
        std::vector<TransparencyLog::Update>{{"bob", random_value(rng, 2)}}, 3000));
    Auditor a(f.log.public_keys());
    for (const AuditRecord& r : honest) ASSERT_TRUE(a.apply(r));
    EXPECT_EQ(a.check_and_cosign(forked.log.head(), auditor_key).error(),
              Error::bad_consistency_proof);
    EXPECT_EQ(a.check_and_cosign(*forked.log.head_at(2), auditor_key).error(),
              Error::bad_consistency_proof);
    EXPECT_TRUE(a.check_and_cosign(*forked.log.head_at(1), auditor_key));  // the common entry
  }
  // A time that goes back.
  {
    Auditor a(f.log.public_keys());
    ASSERT_TRUE(a.apply(honest[0]));
    AuditRecord earlier = honest[1];
    earlier.entry.timestamp_ms = 0;
    EXPECT_EQ(a.apply(earlier).error(), Error::bad_history);
  }
  // Malformed records.
  const Bytes enc = encode_audit_record(honest[1]);
  for (std::size_t n = 0; n < enc.size(); ++n)
    EXPECT_FALSE(decode_audit_record(ByteView(enc).first(n)));
  Bytes trailing = enc;
  trailing.push_back(0);
  EXPECT_FALSE(decode_audit_record(trailing));
}

// ---------------------------------------------------------------------------------------------
std::string temp_db(const std::string& name) {
  const std::string path =
      ::testing::TempDir() + "/sotto_kt_" + name + "_" + std::to_string(::getpid()) + ".db";
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  return path;
}

TransparencyLog log_over(TransparencyStore& store, crypto::Rng& rng) {
  return make_log(store, 99, rng);
}

TEST(SqliteTransparencyStore, AReopenedLogIsTheSameLog) {
  const std::string path = temp_db("reopen");
  crypto::DeterministicRng rng(101);
  SignedTreeHead head;
  Bytes proof;
  {
    auto store = SqliteTransparencyStore::open(path);
    ASSERT_TRUE(store.has_value());
    TransparencyLog log = log_over(**store, rng);
    ASSERT_TRUE(log.open(1000));
    for (int i = 0; i < 30; ++i) {
      std::vector<TransparencyLog::Update> u{
          {"user" + std::to_string(i % 7), random_value(rng, 2)}};
      if (i % 5 == 0) u.push_back({"empty-names", random_value(rng, 0)});
      ASSERT_TRUE(log.append(u, 2000 + static_cast<std::uint64_t>(i)));
    }
    head = log.head();
    proof = encode_search_proof(*log.search("user3"));
    // An entry out of order is refused and writes nothing.
    EXPECT_EQ((*store)->append(StoredEntry{5, {}, {}}).error(), Error::invalid_argument);
  }
  {
    auto store = SqliteTransparencyStore::open(path);
    ASSERT_TRUE(store.has_value());
    TransparencyLog log = log_over(**store, rng);
    ASSERT_TRUE(log.open(1));
    EXPECT_EQ(log.head(), head);
    EXPECT_EQ(encode_search_proof(*log.search("user3")), proof);
    ASSERT_TRUE(
        log.append(std::vector<TransparencyLog::Update>{{"user3", random_value(rng, 1)}}, 9000));
    const auto got =
        verify_search(log.public_keys(), log.head().head, "user3", *log.search("user3"));
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ((*got)->version, 5u);  // i = 3, 10, 17, 24, then this one
    ASSERT_TRUE(verify_consistency_proof(head.head, log.head().head,
                                         *log.consistency(head.head.size, log.head().head.size)));
  }
  // A row of the wrong shape, or a changed commitment, and the log does not open.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE kt_versions SET commitment = zeroblob(32) WHERE entry = 3",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  {
    auto store = SqliteTransparencyStore::open(path);
    TransparencyLog log = log_over(**store, rng);
    EXPECT_EQ(log.open(1).error(), Error::bad_history);
  }
  ASSERT_EQ(sqlite3_exec(db, "UPDATE kt_entries SET prefix_root = zeroblob(31) WHERE idx = 2",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  {
    auto store = SqliteTransparencyStore::open(path);
    TransparencyLog log = log_over(**store, rng);
    EXPECT_EQ(log.open(1).error(), Error::storage_failure);
  }
  EXPECT_FALSE(SqliteTransparencyStore::open("/nonexistent-dir/x/kt.db").has_value());
}

TEST(TransparencyFormats, ParsersRefuseTruncationTrailingBytesAndLongPaths) {
  LogFixture f(71);
  crypto::DeterministicRng rng(72);
  for (int i = 0; i < 9; ++i) {
    ASSERT_TRUE(f.log.append(
        std::vector<TransparencyLog::Update>{{"u" + std::to_string(i), random_value(rng, 1)}},
        2000));
  }
  const Bytes sth = encode_signed_tree_head(f.log.head());
  ASSERT_EQ(sth.size(), kSignedTreeHeadSize);
  EXPECT_EQ(decode_signed_tree_head(sth).value(), f.log.head());
  const Bytes search = encode_search_proof(*f.log.search("u1"));
  const Bytes monitor = encode_monitor_proof(*f.log.monitor("u1"));
  const Bytes consistency = encode_consistency_proof(*f.log.consistency(3, 10));
  EXPECT_EQ(decode_consistency_proof(consistency).value(), *f.log.consistency(3, 10));
  for (const Bytes* b : {&sth, &search, &monitor, &consistency}) {
    for (std::size_t n = 0; n < b->size(); ++n) {
      const ByteView cut = ByteView(*b).first(n);
      EXPECT_FALSE(decode_signed_tree_head(cut) && b == &sth);
      EXPECT_FALSE(decode_search_proof(cut) && b == &search);
      EXPECT_FALSE(decode_monitor_proof(cut) && b == &monitor);
      EXPECT_FALSE(decode_consistency_proof(cut) && b == &consistency);
    }
    Bytes trailing = *b;
    trailing.push_back(0);
    EXPECT_FALSE(decode_signed_tree_head(trailing));
    EXPECT_FALSE(decode_search_proof(trailing));
    EXPECT_FALSE(decode_monitor_proof(trailing));
    EXPECT_FALSE(decode_consistency_proof(trailing));
  }
  Bytes long_path;
  codec::put_u8(long_path, 65);
  long_path.resize(1 + 65 * 32);
  EXPECT_FALSE(decode_consistency_proof(long_path));
  // A search proof whose "found" flag is neither 0 nor 1.
  SearchProof absent = *f.log.search("nobody");
  Bytes flag = encode_search_proof(absent);
  flag.back() = 2;
  EXPECT_FALSE(decode_search_proof(flag));
}

}  // namespace
}  // namespace sotto::transparency
