// Google Benchmark cases for Debian's libsignal-protocol-c 2.3.3, driven through the
// reference wrapper in tests/interop/ref (sotto_ref_signal_c).  Every case measures one
// operation per iteration; the "<case>/libsignal_c" names line up with Sotto's own cases.
//
// BENCHMARK_MAIN lives in another translation unit of the benchmark binary.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ref_signal.h"

namespace {

namespace ref = sotto::testing::ref;

const ref::Bytes& payload64() {
  static const ref::Bytes p(64, 0x5a);
  return p;
}

// alice processes bob's bundle and sends the first (PreKey) message, bob answers and alice
// reads the answer, so every later alice -> bob message is a plain SignalMessage.
// Returns an empty string on success, otherwise a description of the failure.
std::string establish(ref::RefParty& alice, ref::RefParty& bob) {
  if (int r = alice.process_bundle(bob.name(), bob.device_id(), bob.bundle(true)); r != 0) {
    return std::string("process_bundle: ") + ref::ref_error_name(r);
  }
  const ref::RefCiphertext first = alice.encrypt(bob.name(), bob.device_id(), payload64());
  if (ref::RefResult r = bob.decrypt(alice.name(), alice.device_id(), first); r.error != 0) {
    return std::string("decrypt PreKeySignalMessage: ") + ref::ref_error_name(r.error);
  }
  const ref::RefCiphertext answer = bob.encrypt(alice.name(), alice.device_id(), payload64());
  if (ref::RefResult r = alice.decrypt(bob.name(), bob.device_id(), answer); r.error != 0) {
    return std::string("decrypt answer: ") + ref::ref_error_name(r.error);
  }
  return {};
}

void report(benchmark::State& state, std::size_t bytes_per_op) {
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes_per_op));
}

// Note on the *_store variants: libsignal-protocol-c has no in-memory session object.
// session_cipher_encrypt / session_cipher_decrypt_* and group_cipher_* always load the
// serialized record from the store callbacks, deserialize it, and serialize + store it
// again around every message.  So the plain cases already include the full store round
// trip, and the *_store cases run exactly the same code (registered under both names so
// the table lines up with implementations where the store path is optional).

// encrypt_decrypt_64B: alice -> bob, same direction every iteration (symmetric-key
// ratchet steps only; no DH ratchet).
void BM_encrypt_decrypt_64B(benchmark::State& state) {
  try {
    ref::RefParty alice("alice");
    ref::RefParty bob("bob");
    if (std::string err = establish(alice, bob); !err.empty()) {
      state.SkipWithError(err.c_str());
      return;
    }
    for (auto _ : state) {
      ref::RefCiphertext c = alice.encrypt("bob", 1, payload64());
      ref::RefResult r = bob.decrypt("alice", 1, c);
      if (r.error != 0 || r.plaintext.size() != 64) {
        state.SkipWithError("decrypt failed");
        break;
      }
      benchmark::DoNotOptimize(r.plaintext.data());
    }
    report(state, 64);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ping_pong: the direction alternates every iteration, so every message carries a new
// ratchet key and the receiver performs a DH ratchet step (and the next sender generates
// a fresh ratchet key pair).  One iteration = one message encrypted + decrypted.
void BM_ping_pong(benchmark::State& state) {
  try {
    ref::RefParty alice("alice");
    ref::RefParty bob("bob");
    if (std::string err = establish(alice, bob); !err.empty()) {
      state.SkipWithError(err.c_str());
      return;
    }
    bool alice_sends = true;
    for (auto _ : state) {
      ref::RefParty& sender = alice_sends ? alice : bob;
      ref::RefParty& receiver = alice_sends ? bob : alice;
      ref::RefCiphertext c = sender.encrypt(receiver.name(), receiver.device_id(), payload64());
      ref::RefResult r = receiver.decrypt(sender.name(), sender.device_id(), c);
      if (r.error != 0 || r.plaintext.size() != 64) {
        state.SkipWithError("decrypt failed");
        break;
      }
      benchmark::DoNotOptimize(r.plaintext.data());
      alice_sends = !alice_sends;
    }
    report(state, 64);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// Pool of never-before-paired parties for session_setup.  Creating a RefParty costs
// ~100 key generations, far more than one session setup, so the pool is built with the
// timer paused and each (alice_i, bob_j) pair is used exactly once: neither side has an
// earlier record for the other, so no archived session states skew the measurement.
class FreshPairs {
 public:
  explicit FreshPairs(std::int64_t expected_setups) {
    // k*k pairs per pool; each bob hands out k one-time prekeys (<= 100 generated ones).
    const auto root = static_cast<std::int64_t>(std::ceil(std::sqrt(static_cast<double>(expected_setups))));
    k_ = static_cast<std::size_t>(root < 1 ? 1 : (root > kMaxK ? kMaxK : root));
  }

  // Call with the timer paused.
  std::pair<ref::RefParty*, ref::RefParty*> next() {
    if (used_ == k_ * k_ || alices_.empty()) {
      refill();
    }
    const std::size_t i = used_ / k_;
    const std::size_t j = used_ % k_;
    ++used_;
    return {alices_[i].get(), bobs_[j].get()};
  }

 private:
  static constexpr std::int64_t kMaxK = 32;

  void refill() {
    alices_.clear();
    bobs_.clear();
    ++generation_;
    for (std::size_t i = 0; i < k_; ++i) {
      const std::string suffix = std::to_string(generation_) + "." + std::to_string(i);
      alices_.push_back(std::make_unique<ref::RefParty>("alice" + suffix));
      bobs_.push_back(std::make_unique<ref::RefParty>("bob" + suffix));
    }
    used_ = 0;
  }

  std::size_t k_ = 1;
  std::size_t used_ = 0;
  std::uint64_t generation_ = 0;
  std::vector<std::unique_ptr<ref::RefParty>> alices_;
  std::vector<std::unique_ptr<ref::RefParty>> bobs_;
};

// session_setup: alice processes a fresh bob bundle (with one-time prekey), encrypts
// 64 B, bob decrypts the PreKeySignalMessage.  One op = one complete setup.
void BM_session_setup(benchmark::State& state) {
  try {
    FreshPairs pool(state.max_iterations);
    for (auto _ : state) {
      state.PauseTiming();
      auto [alice, bob] = pool.next();
      const ref::RefBundle bundle = bob->bundle(true);
      state.ResumeTiming();

      if (alice->process_bundle(bob->name(), bob->device_id(), bundle) != 0) {
        state.SkipWithError("process_bundle failed");
        break;
      }
      ref::RefCiphertext c = alice->encrypt(bob->name(), bob->device_id(), payload64());
      ref::RefResult r = bob->decrypt(alice->name(), alice->device_id(), c);
      if (c.type != 3 || r.error != 0 || r.plaintext.size() != 64) {
        state.SkipWithError("PreKeySignalMessage decrypt failed");
        break;
      }
      benchmark::DoNotOptimize(r.plaintext.data());
    }
    state.SetItemsProcessed(state.iterations());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// sender_key_64B: one group sender encrypts 64 B, one receiver decrypts.
void BM_sender_key_64B(benchmark::State& state) {
  try {
    const std::string group = "bench-group";
    ref::RefParty sender("alice");
    ref::RefParty receiver("bob");
    const ref::Bytes skdm = sender.create_sender_key_distribution(group);
    if (int r = receiver.process_sender_key_distribution(group, sender.name(), sender.device_id(), skdm); r != 0) {
      state.SkipWithError(ref::ref_error_name(r));
      return;
    }
    for (auto _ : state) {
      ref::Bytes m = sender.group_encrypt(group, payload64());
      ref::RefResult r = receiver.group_decrypt(group, "alice", 1, m);
      if (r.error != 0 || r.plaintext.size() != 64) {
        state.SkipWithError("group_decrypt failed");
        break;
      }
      benchmark::DoNotOptimize(r.plaintext.data());
    }
    report(state, 64);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// x25519: one curve_calculate_agreement (curve25519-donna inside libsignal-protocol-c);
// the wrapper's key decoding and 32-byte copy are included and negligible.
void BM_x25519(benchmark::State& state) {
  try {
    ref::RefParty a("alice");
    ref::RefParty b("bob");
    const ref::Bytes their_public = b.identity_public();
    const ref::Bytes our_private = a.identity_private();
    for (auto _ : state) {
      ref::Bytes k = ref::ref_calculate_agreement(their_public, our_private);
      benchmark::DoNotOptimize(k.data());
    }
    state.SetItemsProcessed(state.iterations());
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

BENCHMARK(BM_encrypt_decrypt_64B)->Name("encrypt_decrypt_64B/libsignal_c");
BENCHMARK(BM_ping_pong)->Name("ping_pong/libsignal_c");
BENCHMARK(BM_session_setup)->Name("session_setup/libsignal_c");
BENCHMARK(BM_sender_key_64B)->Name("sender_key_64B/libsignal_c");
BENCHMARK(BM_x25519)->Name("x25519/libsignal_c");

// Same code as above: libsignal-protocol-c's normal path already loads, deserializes,
// serializes and stores the record around every message (see the note further up).
BENCHMARK(BM_encrypt_decrypt_64B)->Name("encrypt_decrypt_64B_store/libsignal_c");
BENCHMARK(BM_ping_pong)->Name("ping_pong_store/libsignal_c");
BENCHMARK(BM_sender_key_64B)->Name("sender_key_64B_store/libsignal_c");
