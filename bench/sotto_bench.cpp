// Google Benchmark cases for Sotto, named "<case>/sotto" so that they line up with the
// "<case>/libsignal_c" and "<case>/olm" cases of libsignal_c_bench.cpp and olm_bench.cpp.
//
// Two paths per messaging case:
//  - in memory: the SessionRecord / SenderKeyRecord objects are held directly and the record
//    functions are called (the receiver still decodes the wire bytes, as it must);
//  - "_store": the store functions with the InMemory*Store classes, which keep every record in
//    its encoded storage form, so each message loads (decodes) and saves (encodes) the record on
//    both sides, as a client with a persistent store does.
// Plus the primitive floor: Sotto's crypto wrappers alone, and floor_one_direction, exactly the
// primitive calls one 64-byte message costs its sender and its receiver.
//
// Randomness: crypto::system_rng() (libsodium's CSPRNG) everywhere, as an app would pass it;
// libolm's cases draw from libsodium too and libsignal-protocol-c's from OpenSSL. Time: a fixed
// ManualClock (the protocol layer never reads a clock itself).
//
// Every operation's result is checked (plaintexts compared byte for byte); a failure ends the
// case through SkipWithError, so a broken case never reports a time. BENCHMARK_MAIN lives in
// main.cpp.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crypto/cipher.h"
#include "crypto/ed25519.h"
#include "crypto/hash.h"
#include "crypto/rng.h"
#include "crypto/secret.h"
#include "crypto/x25519.h"
#include "protocol/bundle.h"
#include "protocol/clock.h"
#include "protocol/in_memory_stores.h"
#include "protocol/keys.h"
#include "protocol/messages.h"
#include "protocol/sender_keys.h"
#include "protocol/session.h"
#include "protocol/session_state.h"

namespace {

namespace crypto = sotto::crypto;
namespace protocol = sotto::protocol;
using sotto::Bytes;
using sotto::ByteView;

constexpr std::size_t kPayloadSize = 64;

const Bytes& payload64() {
  static const Bytes p(kPayloadSize, 0x5a);
  return p;
}

crypto::Rng& rng() {
  return crypto::system_rng();
}

const protocol::ManualClock& bench_clock() {
  static const protocol::ManualClock c;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Failure handling: any unexpected result throws Failure, which the case turns into
// SkipWithError (run_case below).

class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(std::string_view what, protocol::Error e) {
  throw Failure(std::string(what) + ": " + std::string(protocol::to_string(e)));
}

void check(bool ok, const char* what) {
  if (!ok) throw Failure(what);
}

template <typename T>
T value_or_fail(tl::expected<T, protocol::Error> r, std::string_view what) {
  if (!r) fail(what, r.error());
  return std::move(*r);
}

void ok_or_fail(const tl::expected<void, protocol::Error>& r, std::string_view what) {
  if (!r) fail(what, r.error());
}

void check_plaintext(const crypto::SecretBuffer& pt) {
  check(pt.size() == kPayloadSize && std::memcmp(pt.data(), payload64().data(), kPayloadSize) == 0,
        "plaintext mismatch");
}

template <typename Body>
void run_case(benchmark::State& state, std::size_t bytes_per_op, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  state.SetItemsProcessed(state.iterations());
  if (bytes_per_op != 0) {
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes_per_op));
  }
}

// ---------------------------------------------------------------------------------------------
// A device with in-memory stores: identity, a signed prekey and `one_time_pre_keys` one-time
// prekeys handed out in order by bundle().

class Party {
 public:
  Party(std::string name, std::size_t one_time_pre_keys)
      : address_{std::move(name), protocol::DeviceId(1)},
        registration_id_(protocol::generate_registration_id(rng())) {
    protocol::IdentityKeyPair identity = protocol::KeyPair::generate(rng());
    signed_pre_key_ =
        protocol::generate_signed_pre_key(rng(), identity, protocol::SignedPreKeyId(1), 0);
    identity_public_ = identity.public_key;
    identities_ =
        std::make_unique<protocol::InMemoryIdentityKeyStore>(std::move(identity), registration_id_);
    ok_or_fail(signed_pre_keys_.save_signed_pre_key(signed_pre_key_), "save_signed_pre_key");
    for (auto& pk : protocol::generate_pre_keys(rng(), protocol::PreKeyId(1), one_time_pre_keys)) {
      ok_or_fail(pre_keys_.save_pre_key(pk), "save_pre_key");
    }
    pre_key_count_ = one_time_pre_keys;
  }
  Party(const Party&) = delete;
  Party& operator=(const Party&) = delete;

  const protocol::Address& address() const { return address_; }
  protocol::SessionStores stores() {
    return {*identities_, sessions_, pre_keys_, signed_pre_keys_};
  }
  protocol::InMemorySessionStore& sessions() { return sessions_; }

  // The bundle a server would hand out, with the next unused one-time prekey.
  protocol::PreKeyBundle bundle() {
    check(next_pre_key_ <= pre_key_count_, "party ran out of one-time prekeys");
    auto pk = value_or_fail(
        pre_keys_.load_pre_key(protocol::PreKeyId(static_cast<std::uint32_t>(next_pre_key_))),
        "load_pre_key");
    check(pk.has_value(), "one-time prekey missing");
    ++next_pre_key_;
    protocol::PreKeyBundle b;
    b.registration_id = registration_id_;
    b.device_id = address_.device;
    b.pre_key_id = pk->id;
    b.pre_key = pk->key_pair.public_key;
    b.signed_pre_key_id = signed_pre_key_.id;
    b.signed_pre_key = signed_pre_key_.key_pair.public_key;
    b.signed_pre_key_signature = signed_pre_key_.signature;
    b.identity_key = identity_public_;
    return b;
  }

 private:
  protocol::Address address_;
  protocol::RegistrationId registration_id_;
  protocol::PublicKey identity_public_;
  protocol::SignedPreKeyRecord signed_pre_key_;
  std::unique_ptr<protocol::InMemoryIdentityKeyStore> identities_;
  protocol::InMemorySessionStore sessions_;
  protocol::InMemoryPreKeyStore pre_keys_;
  protocol::InMemorySignedPreKeyStore signed_pre_keys_;
  std::size_t pre_key_count_ = 0;
  std::size_t next_pre_key_ = 1;
};

// One message through the store functions: `from` encrypts (load, encrypt, save), `to`
// decrypts (decode, load, decrypt, save).
void send_store(Party& from, Party& to, protocol::MessageType expected_type) {
  auto from_stores = from.stores();
  auto c = value_or_fail(protocol::encrypt(to.address(), payload64(), from_stores), "encrypt");
  check(c.type == expected_type, "unexpected message type");
  auto to_stores = to.stores();
  auto pt = expected_type == protocol::MessageType::pre_key
                ? protocol::decrypt_pre_key_message(from.address(), c.serialized, to_stores, rng(),
                                                    bench_clock())
                : protocol::decrypt_signal_message(from.address(), c.serialized, to_stores, rng(),
                                                   bench_clock());
  check_plaintext(value_or_fail(std::move(pt), "decrypt").plaintext);
}

// alice processes bob's bundle and sends the first (PreKeySignalMessage), bob answers and
// alice reads the answer, so every later message is a plain SignalMessage.
void establish(Party& alice, Party& bob) {
  auto stores = alice.stores();
  ok_or_fail(
      protocol::process_pre_key_bundle(bob.address(), bob.bundle(), stores, rng(), bench_clock()),
      "process_pre_key_bundle");
  send_store(alice, bob, protocol::MessageType::pre_key);
  send_store(bob, alice, protocol::MessageType::signal);
}

protocol::SessionRecord load_record(Party& owner, const Party& peer) {
  auto loaded = value_or_fail(owner.sessions().load_session(peer.address()), "load_session");
  check(loaded.has_value(), "no session record");
  return std::move(*loaded);
}

// An established alice <-> bob session, both as stores and as records taken out of them.
struct SessionPair {
  Party alice{"alice", 1};
  Party bob{"bob", 1};
  protocol::SessionRecord alice_record;
  protocol::SessionRecord bob_record;

  SessionPair() {
    establish(alice, bob);
    alice_record = load_record(alice, bob);
    bob_record = load_record(bob, alice);
  }
};

// One message through the record functions. Returns the ratchet key it carried.
protocol::PublicKey send_record(protocol::SessionRecord& from, protocol::SessionRecord& to) {
  auto c = value_or_fail(protocol::encrypt(from, payload64()), "encrypt");
  check(c.type == protocol::MessageType::signal, "unexpected message type");
  auto message = value_or_fail(protocol::SignalMessage::decode(c.serialized), "decode");
  auto pt =
      value_or_fail(protocol::decrypt(to, message, rng(), bench_clock().now_seconds()), "decrypt");
  check_plaintext(pt.plaintext);
  return message.ratchet_key;
}

// ---------------------------------------------------------------------------------------------
// 1:1, in memory

// encrypt_decrypt_64B: alice -> bob every iteration; only symmetric chain steps (the first
// message after bob's answer carries alice's new ratchet key and is sent before timing).
void BM_encrypt_decrypt_64B(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    SessionPair p;
    const protocol::PublicKey ratchet = send_record(p.alice_record, p.bob_record);
    for (auto _ : state) {
      const protocol::PublicKey used = send_record(p.alice_record, p.bob_record);
      check(used == ratchet, "unexpected ratchet step");
    }
  });
}

// ping_pong: the direction alternates, so every message carries a new ratchet key: the receiver
// takes a DH ratchet step (two agreements, one key generation, two root KDFs).
void BM_ping_pong(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    SessionPair p;
    bool alice_sends = true;
    protocol::PublicKey last[2];  // last ratchet key sent by alice, by bob
    for (auto _ : state) {
      protocol::PublicKey used = alice_sends ? send_record(p.alice_record, p.bob_record)
                                             : send_record(p.bob_record, p.alice_record);
      protocol::PublicKey& previous = last[alice_sends ? 0 : 1];
      check(used != previous, "message did not carry a new ratchet key");
      previous = used;
      alice_sends = !alice_sends;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// 1:1, through the stores

void BM_encrypt_decrypt_64B_store(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    Party alice("alice", 1);
    Party bob("bob", 1);
    establish(alice, bob);
    send_store(alice, bob, protocol::MessageType::signal);  // alice's ratchet step, untimed
    for (auto _ : state) send_store(alice, bob, protocol::MessageType::signal);
  });
}

void BM_ping_pong_store(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    Party alice("alice", 1);
    Party bob("bob", 1);
    establish(alice, bob);
    bool alice_sends = true;
    for (auto _ : state) {
      if (alice_sends) {
        send_store(alice, bob, protocol::MessageType::signal);
      } else {
        send_store(bob, alice, protocol::MessageType::signal);
      }
      alice_sends = !alice_sends;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// session_setup

// Never-before-paired parties: k alices x k bobs, each pair used once, so neither side holds an
// earlier record or identity for the other. Built with the timer paused (like the peers' pools).
class FreshPairs {
 public:
  explicit FreshPairs(std::int64_t expected_setups) {
    const double root = std::ceil(std::sqrt(static_cast<double>(expected_setups)));
    k_ = static_cast<std::size_t>(std::clamp(root, 1.0, static_cast<double>(kMaxK)));
  }

  // REQUIRES: the timer is paused.
  std::pair<Party*, Party*> next() {
    if (alices_.empty() || used_ == k_ * k_) refill();
    const std::size_t i = used_ / k_;
    const std::size_t j = used_ % k_;
    ++used_;
    return {alices_[i].get(), bobs_[j].get()};
  }

 private:
  static constexpr std::size_t kMaxK = 32;

  void refill() {
    alices_.clear();
    bobs_.clear();
    ++generation_;
    for (std::size_t i = 0; i < k_; ++i) {
      const std::string suffix = std::to_string(generation_) + "." + std::to_string(i);
      alices_.push_back(std::make_unique<Party>("alice" + suffix, 0));
      bobs_.push_back(std::make_unique<Party>("bob" + suffix, k_));  // one prekey per alice
    }
    used_ = 0;
  }

  std::size_t k_ = 1;
  std::size_t used_ = 0;
  std::uint64_t generation_ = 0;
  std::vector<std::unique_ptr<Party>> alices_;
  std::vector<std::unique_ptr<Party>> bobs_;
};

// One op: alice verifies and processes bob's bundle (X3DH, with a one-time prekey), encrypts
// 64 B, bob builds the session from the PreKeySignalMessage and decrypts it; records, identities
// and the consumed prekey are saved and removed through the stores as a client does.
void BM_session_setup(benchmark::State& state) {
  run_case(state, 0, [&] {
    FreshPairs pool(state.max_iterations);
    for (auto _ : state) {
      state.PauseTiming();
      auto [alice, bob] = pool.next();
      const protocol::PreKeyBundle bundle = bob->bundle();
      state.ResumeTiming();

      auto alice_stores = alice->stores();
      ok_or_fail(protocol::process_pre_key_bundle(bob->address(), bundle, alice_stores, rng(),
                                                  bench_clock()),
                 "process_pre_key_bundle");
      send_store(*alice, *bob, protocol::MessageType::pre_key);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Sender Keys

const std::string& group_id() {
  static const std::string g = "bench-group";
  return g;
}

// sender_key_64B: the sender encrypts (and signs) 64 B, one receiver verifies and decrypts.
void BM_sender_key_64B(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    protocol::SenderKeyRecord own;
    const auto skdm = protocol::sender_key_distribution(own, rng());
    protocol::SenderKeyRecord theirs;
    protocol::process_sender_key_distribution(
        theirs, value_or_fail(protocol::SenderKeyDistributionMessage::decode(skdm.serialized),
                              "decode SenderKeyDistributionMessage"));
    const std::uint64_t now = bench_clock().now_seconds();
    for (auto _ : state) {
      const Bytes m =
          value_or_fail(protocol::group_encrypt(own, payload64(), rng()), "group_encrypt");
      check_plaintext(value_or_fail(protocol::group_decrypt(theirs, m, now), "group_decrypt"));
    }
  });
}

void BM_sender_key_64B_store(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    const protocol::SenderKeyName name{group_id(), {"alice", protocol::DeviceId(1)}};
    protocol::InMemorySenderKeyStore sender_store;
    protocol::InMemorySenderKeyStore receiver_store;
    const Bytes skdm =
        value_or_fail(protocol::create_sender_key_distribution(name, sender_store, rng()),
                      "create_sender_key_distribution");
    ok_or_fail(protocol::process_sender_key_distribution(name, skdm, receiver_store),
               "process_sender_key_distribution");
    const std::uint64_t now = bench_clock().now_seconds();
    for (auto _ : state) {
      const Bytes m = value_or_fail(protocol::group_encrypt(name, payload64(), sender_store, rng()),
                                    "group_encrypt");
      check_plaintext(
          value_or_fail(protocol::group_decrypt(name, m, receiver_store, now), "group_decrypt"));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Primitive floor: Sotto's crypto wrappers.

void BM_x25519(benchmark::State& state) {
  run_case(state, 0, [&] {
    const crypto::X25519KeyPair ours = crypto::x25519_generate(rng());
    const crypto::X25519KeyPair theirs = crypto::x25519_generate(rng());
    for (auto _ : state) {
      auto shared = crypto::x25519_agree(ours.private_key, theirs.public_key);
      check(shared.has_value(), "x25519_agree");
      benchmark::DoNotOptimize(shared->data());
    }
  });
}

// A login proof: "sotto-auth-tls-v1" and the 32-byte channel binding, signed with the device's
// authentication key as the client library holds it (expanded once, when loaded).
void BM_ed25519_sign_login(benchmark::State& state) {
  run_case(state, 49, [&] {
    const auto key = crypto::Ed25519KeyPair::generate(rng());
    std::array<std::uint8_t, 49> proof{};
    rng().fill(proof);
    for (auto _ : state) {
      auto sig = key.sign(proof);
      benchmark::DoNotOptimize(sig.data());
    }
  });
}

// The same signature when the pair is derived from its seed for each one (what every login paid
// before session 8): the ratio of the two is what keeping the expanded key saves.
void BM_ed25519_expand_and_sign_login(benchmark::State& state) {
  run_case(state, 49, [&] {
    const auto seed = rng().secret<crypto::kEd25519SeedSize>();
    std::array<std::uint8_t, 49> proof{};
    rng().fill(proof);
    for (auto _ : state) {
      auto sig = crypto::Ed25519KeyPair::from_seed(seed).sign(proof);
      benchmark::DoNotOptimize(sig.data());
    }
  });
}

void BM_hmac_sha256_32B(benchmark::State& state) {
  run_case(state, 32, [&] {
    const auto key = rng().secret<32>();
    std::array<std::uint8_t, 32> data{};
    rng().fill(data);
    for (auto _ : state) {
      auto mac = crypto::hmac_sha256(key.view(), {ByteView(data)});
      benchmark::DoNotOptimize(mac.data());
    }
  });
}

void BM_hkdf_sha256_80B(benchmark::State& state) {
  run_case(state, 0, [&] {
    const auto seed = rng().secret<32>();
    for (auto _ : state) {
      crypto::Secret<80> okm;
      crypto::hkdf_sha256(seed.view(), {}, sotto::as_bytes("WhisperMessageKeys"), okm.span());
      benchmark::DoNotOptimize(okm.data());
    }
  });
}

void BM_aes256_cbc_64B(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    const auto key = rng().secret<32>();
    std::array<std::uint8_t, 16> iv{};
    rng().fill(iv);
    for (auto _ : state) {
      Bytes c = crypto::aes256_cbc_seal(key, iv, payload64());
      benchmark::DoNotOptimize(c.data());
    }
  });
}

// The message keys of one chain step, derived exactly as the Double Ratchet does
// (protocol/ratchet_kdf.h): seed = HMAC(chain, 0x01), chain' = HMAC(chain, 0x02),
// HKDF(seed, 0^32, "WhisperMessageKeys", 80) -> cipher key, MAC key, IV.
struct FloorKeys {
  crypto::Secret<32> next_chain;
  crypto::Secret<32> cipher_key;
  crypto::Secret<32> mac_key;
  crypto::Secret<16> iv;
};

FloorKeys floor_chain_step(const crypto::Secret<32>& chain) {
  static constexpr std::uint8_t kMessageKeySeed[1] = {0x01};
  static constexpr std::uint8_t kChainKeySeed[1] = {0x02};
  const auto seed = crypto::hmac_sha256(chain.view(), {ByteView(kMessageKeySeed)});
  FloorKeys k{crypto::hmac_sha256(chain.view(), {ByteView(kChainKeySeed)}), {}, {}, {}};
  crypto::Secret<80> okm;
  crypto::hkdf_sha256(seed.view(), {}, sotto::as_bytes("WhisperMessageKeys"), okm.span());
  k.cipher_key = crypto::Secret<32>(ByteView(okm.data(), 32));
  k.mac_key = crypto::Secret<32>(ByteView(okm.data() + 32, 32));
  k.iv = crypto::Secret<16>(ByteView(okm.data() + 64, 16));
  return k;
}

// floor_one_direction: the primitive calls of one 64-byte SignalMessage, sender and receiver,
// and nothing else (no protobuf, no record, no message objects):
//   sender:   chain step (2 HMAC), HKDF-80, AES-256-CBC encrypt 64 B -> 80 B,
//             HMAC over sender identity (33) || receiver identity (33) || framed message (122)
//   receiver: the same chain step and HKDF, the same MAC + 8-byte constant-time compare,
//             AES-256-CBC decrypt.
// The framed message is the version byte plus the protobuf header of a v3 SignalMessage
// (ratchet key, counter, previous counter, ciphertext tag/length), then the ciphertext.
void BM_floor_one_direction(benchmark::State& state) {
  run_case(state, kPayloadSize, [&] {
    crypto::Secret<32> sender_chain = rng().secret<32>();
    crypto::Secret<32> receiver_chain = sender_chain.clone();
    std::array<std::uint8_t, 33> sender_identity{};
    std::array<std::uint8_t, 33> receiver_identity{};
    rng().fill(sender_identity);
    rng().fill(receiver_identity);
    sender_identity[0] = receiver_identity[0] = 0x05;
    // 1 version + (2 + 33) ratchet key + 2 counter + 2 previous counter + 2 ciphertext header.
    std::array<std::uint8_t, 42> header{};
    rng().fill(header);
    constexpr std::size_t kMacBytes = 8;

    for (auto _ : state) {
      // Sender.
      FloorKeys s = floor_chain_step(sender_chain);
      const Bytes ciphertext = crypto::aes256_cbc_seal(
          s.cipher_key, std::span<const std::uint8_t, 16>(s.iv.data(), 16), payload64());
      const auto mac = crypto::hmac_sha256(
          s.mac_key.view(),
          {ByteView(sender_identity), ByteView(receiver_identity), ByteView(header), ciphertext});
      sender_chain = std::move(s.next_chain);

      // Receiver.
      FloorKeys r = floor_chain_step(receiver_chain);
      const auto expected = crypto::hmac_sha256(
          r.mac_key.view(),
          {ByteView(sender_identity), ByteView(receiver_identity), ByteView(header), ciphertext});
      check(crypto::constant_time_equal(ByteView(expected.data(), kMacBytes),
                                        ByteView(mac.data(), kMacBytes)),
            "MAC mismatch");
      auto plaintext = crypto::aes256_cbc_open(
          r.cipher_key, std::span<const std::uint8_t, 16>(r.iv.data(), 16), ciphertext);
      check(plaintext.has_value(), "aes256_cbc_open");
      check_plaintext(*plaintext);
      receiver_chain = std::move(r.next_chain);
    }
  });
}

}  // namespace

BENCHMARK(BM_encrypt_decrypt_64B)->Name("encrypt_decrypt_64B/sotto");
BENCHMARK(BM_ping_pong)->Name("ping_pong/sotto");
BENCHMARK(BM_session_setup)->Name("session_setup/sotto");
BENCHMARK(BM_sender_key_64B)->Name("sender_key_64B/sotto");
BENCHMARK(BM_encrypt_decrypt_64B_store)->Name("encrypt_decrypt_64B_store/sotto");
BENCHMARK(BM_ping_pong_store)->Name("ping_pong_store/sotto");
BENCHMARK(BM_sender_key_64B_store)->Name("sender_key_64B_store/sotto");

BENCHMARK(BM_x25519)->Name("x25519/sotto");
BENCHMARK(BM_ed25519_sign_login)->Name("ed25519_sign_login/sotto");
BENCHMARK(BM_ed25519_expand_and_sign_login)->Name("ed25519_expand_and_sign_login/sotto");
BENCHMARK(BM_hmac_sha256_32B)->Name("hmac_sha256_32B/sotto");
BENCHMARK(BM_hkdf_sha256_80B)->Name("hkdf_sha256_80B/sotto");
BENCHMARK(BM_aes256_cbc_64B)->Name("aes256_cbc_64B/sotto");
BENCHMARK(BM_floor_one_direction)->Name("floor_one_direction/sotto");
