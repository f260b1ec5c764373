// Reference benchmarks against Debian's libolm (3.2.x): Olm 1:1 sessions and
// Megolm group sessions, with and without per-message persistence (pickling).
//
// Every case does one logical operation per iteration (one encrypt plus the
// matching decrypt). All olm return values are checked against olm_error();
// any failure aborts the process with the olm error text so that a broken
// benchmark can never silently measure nothing.
//
// Notes on libolm's C API that shape this file:
//  * olm objects are placement-initialised into caller-owned memory of
//    olm_*_size() bytes and torn down with olm_clear_*().
//  * olm_decrypt, olm_group_decrypt, olm_create_inbound_session and all
//    olm_unpickle_* functions base64-decode their input in place, destroying
//    it. Message buffers are therefore produced fresh every iteration, and the
//    pre-key message is copied before the inbound session is created from it.
//  * libolm draws no randomness itself; callers supply it. We use libsodium's
//    randombytes_buf for every random buffer, inside the timed region where a
//    real client would need it (ratchet steps, session creation).

#include <benchmark/benchmark.h>
#include <olm/olm.h>
#include <olm/inbound_group_session.h>
#include <olm/outbound_group_session.h>
#include <sodium.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

// ---------------------------------------------------------------------------
// Failure handling

[[noreturn]] void die(const char* what, const char* detail) {
  std::fprintf(stderr, "olm_bench: %s failed: %s\n", what, detail ? detail : "(no detail)");
  std::fflush(stderr);
  std::abort();
}

void require(bool ok, const char* what, const char* detail) {
  if (!ok) die(what, detail);
}

// One overload per olm object type, so the matching *_last_error is used.
size_t check(size_t r, const OlmAccount* a, const char* what) {
  if (r == olm_error()) die(what, olm_account_last_error(a));
  return r;
}
size_t check(size_t r, const OlmSession* s, const char* what) {
  if (r == olm_error()) die(what, olm_session_last_error(s));
  return r;
}
size_t check(size_t r, const OlmOutboundGroupSession* s, const char* what) {
  if (r == olm_error()) die(what, olm_outbound_group_session_last_error(s));
  return r;
}
size_t check(size_t r, const OlmInboundGroupSession* s, const char* what) {
  if (r == olm_error()) die(what, olm_inbound_group_session_last_error(s));
  return r;
}

void init_sodium() {
  if (sodium_init() < 0) die("sodium_init", "libsodium could not be initialised");
}

// ---------------------------------------------------------------------------
// Owning wrapper for an olm object living in a heap buffer of olm_*_size().

template <typename T, size_t (*SizeFn)(), T* (*InitFn)(void*), size_t (*ClearFn)(T*)>
class OlmObject {
 public:
  OlmObject() : mem_(std::make_unique<std::byte[]>(SizeFn())) { init(); }
  ~OlmObject() { clear(); }
  OlmObject(const OlmObject&) = delete;
  OlmObject& operator=(const OlmObject&) = delete;

  // (Re)initialise the object in place, wiping any previous state.
  T* init() {
    clear();
    ptr_ = InitFn(mem_.get());
    return ptr_;
  }
  // Wipe the object; get() is null until the next init().
  void clear() {
    if (ptr_ != nullptr) {
      ClearFn(ptr_);
      ptr_ = nullptr;
    }
  }
  T* get() const { return ptr_; }

 private:
  std::unique_ptr<std::byte[]> mem_;
  T* ptr_ = nullptr;
};

using Account = OlmObject<OlmAccount, olm_account_size, olm_account, olm_clear_account>;
using Session = OlmObject<OlmSession, olm_session_size, olm_session, olm_clear_session>;
using OutboundGroup = OlmObject<OlmOutboundGroupSession, olm_outbound_group_session_size,
                                olm_outbound_group_session, olm_clear_outbound_group_session>;
using InboundGroup = OlmObject<OlmInboundGroupSession, olm_inbound_group_session_size,
                               olm_inbound_group_session, olm_clear_inbound_group_session>;

// ---------------------------------------------------------------------------
// Small buffers

using Bytes = std::vector<std::uint8_t>;

// Grow-only buffer, so that steady-state iterations do not allocate.
std::uint8_t* ensure(Bytes& b, size_t n) {
  if (b.size() < n) b.resize(n);
  return b.data();
}

Bytes random_bytes(size_t n) {
  Bytes b(n);
  if (n != 0) randombytes_buf(b.data(), n);
  return b;
}

// An encoded olm message (base64, as produced by olm_encrypt/olm_group_encrypt).
struct Message {
  size_t type = 0;
  Bytes buf;
  size_t len = 0;
};

// A persisted (pickled) object.
struct Pickle {
  Bytes buf;
  size_t len = 0;
};

constexpr size_t kPayload = 64;
constexpr size_t kPickleKeyLen = 32;

// ---------------------------------------------------------------------------
// Minimal parsing of olm's JSON key listings. libolm emits them compactly:
//   identity keys:  {"curve25519":"<b64>","ed25519":"<b64>"}
//   one-time keys:  {"curve25519":{"<id>":"<b64>",...}}
// Base64 strings contain no escapes, so a tiny scanner is enough.

// Reads a quoted string starting at or after `pos`; advances `pos` past it.
std::string read_quoted(std::string_view json, size_t& pos) {
  size_t open = json.find('"', pos);
  require(open != std::string_view::npos, "parse olm JSON", "expected string");
  size_t close = json.find('"', open + 1);
  require(close != std::string_view::npos, "parse olm JSON", "unterminated string");
  pos = close + 1;
  return std::string(json.substr(open + 1, close - open - 1));
}

size_t after_key(std::string_view json, std::string_view key) {
  // Built by appending: GCC 12 at -O3 reports a false -Wrestrict (GCC bug 105329) for
  // `"\"" + std::string(key)`, which -Werror turns into a build failure.
  std::string needle;
  needle.reserve(key.size() + 2);
  needle.push_back('"');
  needle.append(key);
  needle.push_back('"');
  size_t k = json.find(needle);
  require(k != std::string_view::npos, "parse olm JSON", "key not found");
  size_t colon = json.find(':', k + needle.size());
  require(colon != std::string_view::npos, "parse olm JSON", "missing ':'");
  return colon + 1;
}

std::string identity_curve25519(Account& acct) {
  OlmAccount* a = acct.get();
  Bytes buf(olm_account_identity_keys_length(a));
  size_t n = check(olm_account_identity_keys(a, buf.data(), buf.size()), a,
                   "olm_account_identity_keys");
  std::string_view json(reinterpret_cast<const char*>(buf.data()), n);
  size_t pos = after_key(json, "curve25519");
  std::string key = read_quoted(json, pos);
  require(!key.empty(), "parse identity keys", "empty curve25519 key");
  return key;
}

// Public halves of all currently unpublished one-time keys, in id order.
std::vector<std::string> unpublished_one_time_keys(Account& acct) {
  OlmAccount* a = acct.get();
  Bytes buf(olm_account_one_time_keys_length(a));
  size_t n = check(olm_account_one_time_keys(a, buf.data(), buf.size()), a,
                   "olm_account_one_time_keys");
  std::string_view json(reinterpret_cast<const char*>(buf.data()), n);
  size_t pos = after_key(json, "curve25519");
  size_t brace = json.find('{', pos);
  require(brace != std::string_view::npos, "parse one-time keys", "missing '{'");
  pos = brace + 1;
  std::vector<std::string> keys;
  for (;;) {
    size_t next = json.find_first_not_of(" \t\r\n,", pos);
    require(next != std::string_view::npos, "parse one-time keys", "unterminated object");
    if (json[next] == '}') break;
    pos = next;
    (void)read_quoted(json, pos);  // key id, not needed by the API
    size_t colon = json.find(':', pos);
    require(colon != std::string_view::npos, "parse one-time keys", "missing ':'");
    pos = colon + 1;
    keys.push_back(read_quoted(json, pos));
  }
  return keys;
}

// ---------------------------------------------------------------------------
// Account / key helpers

void create_account(Account& acct) {
  OlmAccount* a = acct.get();
  Bytes rnd = random_bytes(olm_create_account_random_length(a));
  check(olm_create_account(a, rnd.data(), rnd.size()), a, "olm_create_account");
}

// Generates `count` one-time keys, returns their public halves and marks them
// as published (they are now "on the server").
std::vector<std::string> publish_one_time_keys(Account& acct, size_t count) {
  OlmAccount* a = acct.get();
  Bytes rnd = random_bytes(olm_account_generate_one_time_keys_random_length(a, count));
  check(olm_account_generate_one_time_keys(a, count, rnd.data(), rnd.size()), a,
        "olm_account_generate_one_time_keys");
  std::vector<std::string> keys = unpublished_one_time_keys(acct);
  require(keys.size() == count, "publish one-time keys", "unexpected number of keys");
  check(olm_account_mark_keys_as_published(a), a, "olm_account_mark_keys_as_published");
  return keys;
}

// ---------------------------------------------------------------------------
// Olm 1:1 message helpers

// Encrypts `pt` into `out`. Returns the number of random bytes olm asked for
// (non-zero exactly when this message carries a new ratchet key).
size_t olm_encrypt_msg(OlmSession* s, const Bytes& pt, Message& out, Bytes& rnd) {
  out.type = check(olm_encrypt_message_type(s), s, "olm_encrypt_message_type");
  size_t rlen = check(olm_encrypt_random_length(s), s, "olm_encrypt_random_length");
  std::uint8_t* r = ensure(rnd, rlen > 0 ? rlen : 1);
  if (rlen != 0) randombytes_buf(r, rlen);
  size_t mlen = check(olm_encrypt_message_length(s, pt.size()), s, "olm_encrypt_message_length");
  std::uint8_t* m = ensure(out.buf, mlen);
  out.len = check(olm_encrypt(s, pt.data(), pt.size(), r, rlen, m, mlen), s, "olm_encrypt");
  return rlen;
}

// Decrypts `msg` (destroying its buffer) and verifies it equals `expect`.
void olm_decrypt_msg(OlmSession* s, Message& msg, Bytes& pt, const Bytes& expect) {
  // The base64 message is always longer than the plaintext it carries, so its
  // length is a safe capacity; this avoids olm_decrypt_max_plaintext_length,
  // which would destroy the message buffer.
  std::uint8_t* p = ensure(pt, msg.len);
  size_t n = check(olm_decrypt(s, msg.type, msg.buf.data(), msg.len, p, msg.len), s, "olm_decrypt");
  require(n == expect.size() && std::memcmp(p, expect.data(), n) == 0, "olm_decrypt",
          "plaintext mismatch");
}

// ---------------------------------------------------------------------------
// Persistence helpers: "load" = fresh object + unpickle, "save" = pickle + wipe.
// olm_unpickle_* destroys the pickle buffer, which is fine because each load
// is always followed by a save that rewrites it.

template <typename Obj, typename T>
void load_generic(Obj& obj, Pickle& p, const Bytes& key,
                  size_t (*unpickle)(T*, const void*, size_t, void*, size_t), const char* what) {
  T* s = obj.init();
  check(unpickle(s, key.data(), key.size(), p.buf.data(), p.len), s, what);
}

template <typename Obj, typename T>
void save_generic(Obj& obj, Pickle& p, const Bytes& key, size_t (*length)(const T*),
                  size_t (*pickle)(T*, const void*, size_t, void*, size_t), const char* what) {
  T* s = obj.get();
  size_t need = check(length(s), s, what);
  std::uint8_t* out = ensure(p.buf, need);
  p.len = check(pickle(s, key.data(), key.size(), out, need), s, what);
  obj.clear();
}

void load(Session& s, Pickle& p, const Bytes& key) {
  load_generic(s, p, key, olm_unpickle_session, "olm_unpickle_session");
}
void save(Session& s, Pickle& p, const Bytes& key) {
  save_generic(s, p, key, olm_pickle_session_length, olm_pickle_session, "olm_pickle_session");
}
void load(OutboundGroup& s, Pickle& p, const Bytes& key) {
  load_generic(s, p, key, olm_unpickle_outbound_group_session,
               "olm_unpickle_outbound_group_session");
}
void save(OutboundGroup& s, Pickle& p, const Bytes& key) {
  save_generic(s, p, key, olm_pickle_outbound_group_session_length,
               olm_pickle_outbound_group_session, "olm_pickle_outbound_group_session");
}
void load(InboundGroup& s, Pickle& p, const Bytes& key) {
  load_generic(s, p, key, olm_unpickle_inbound_group_session,
               "olm_unpickle_inbound_group_session");
}
void save(InboundGroup& s, Pickle& p, const Bytes& key) {
  save_generic(s, p, key, olm_pickle_inbound_group_session_length,
               olm_pickle_inbound_group_session, "olm_pickle_inbound_group_session");
}

// ---------------------------------------------------------------------------
// An established alice <-> bob Olm session: alice sent the pre-key message,
// bob created the inbound session and replied, alice decrypted the reply. From
// here on both sides send normal (type 1) messages.

struct OlmPair {
  Account alice_acct;
  Account bob_acct;
  Session alice;
  Session bob;
  Bytes payload = random_bytes(kPayload);
  Message msg;
  Bytes rnd;
  Bytes pt;

  OlmPair() {
    init_sodium();
    create_account(alice_acct);
    create_account(bob_acct);
    std::string bob_identity = identity_curve25519(bob_acct);
    std::string bob_otk = publish_one_time_keys(bob_acct, 1).at(0);

    OlmSession* a = alice.get();
    Bytes rnd_out = random_bytes(olm_create_outbound_session_random_length(a));
    check(olm_create_outbound_session(a, alice_acct.get(), bob_identity.data(), bob_identity.size(),
                                      bob_otk.data(), bob_otk.size(), rnd_out.data(),
                                      rnd_out.size()),
          a, "olm_create_outbound_session");

    olm_encrypt_msg(a, payload, msg, rnd);
    require(msg.type == OLM_MESSAGE_TYPE_PRE_KEY, "pair setup", "first message is not a pre-key message");
    Bytes copy(msg.buf.begin(), msg.buf.begin() + static_cast<std::ptrdiff_t>(msg.len));
    OlmSession* b = bob.get();
    check(olm_create_inbound_session(b, bob_acct.get(), copy.data(), copy.size()), b,
          "olm_create_inbound_session");
    check(olm_remove_one_time_keys(bob_acct.get(), b), bob_acct.get(), "olm_remove_one_time_keys");
    olm_decrypt_msg(b, msg, pt, payload);

    olm_encrypt_msg(b, payload, msg, rnd);
    require(msg.type == OLM_MESSAGE_TYPE_MESSAGE, "pair setup", "bob's reply is not a normal message");
    olm_decrypt_msg(a, msg, pt, payload);
    require(olm_encrypt_message_type(a) == OLM_MESSAGE_TYPE_MESSAGE, "pair setup",
            "alice still sends pre-key messages after bob's reply");
  }

  // One message sender -> receiver, fully checked.
  size_t send(OlmSession* from, OlmSession* to) {
    size_t rlen = olm_encrypt_msg(from, payload, msg, rnd);
    require(msg.type == OLM_MESSAGE_TYPE_MESSAGE, "send", "unexpected pre-key message");
    olm_decrypt_msg(to, msg, pt, payload);
    return rlen;
  }
};

// ---------------------------------------------------------------------------
// Olm 1:1 benchmarks

void BM_encrypt_decrypt_64B(benchmark::State& state) {
  OlmPair p;
  // Warm-up: alice's first message after bob's reply performs a DH ratchet
  // step; afterwards the same-direction messages only advance the chain.
  p.send(p.alice.get(), p.bob.get());
  for (auto _ : state) {
    size_t rlen = p.send(p.alice.get(), p.bob.get());
    require(rlen == 0, "encrypt_decrypt_64B", "unexpected ratchet step");
  }
}

void BM_ping_pong(benchmark::State& state) {
  OlmPair p;
  bool alice_turn = true;
  for (auto _ : state) {
    size_t rlen = alice_turn ? p.send(p.alice.get(), p.bob.get()) : p.send(p.bob.get(), p.alice.get());
    require(rlen != 0, "ping_pong", "message did not carry a ratchet step");
    alice_turn = !alice_turn;
  }
}

void BM_encrypt_decrypt_64B_store(benchmark::State& state) {
  OlmPair p;
  p.send(p.alice.get(), p.bob.get());  // warm-up, as in the in-memory case
  Bytes key = random_bytes(kPickleKeyLen);
  Pickle alice_state;
  Pickle bob_state;
  save(p.alice, alice_state, key);
  save(p.bob, bob_state, key);
  for (auto _ : state) {
    load(p.alice, alice_state, key);
    size_t rlen = olm_encrypt_msg(p.alice.get(), p.payload, p.msg, p.rnd);
    save(p.alice, alice_state, key);
    require(rlen == 0 && p.msg.type == OLM_MESSAGE_TYPE_MESSAGE, "encrypt_decrypt_64B_store",
            "unexpected message kind");

    load(p.bob, bob_state, key);
    olm_decrypt_msg(p.bob.get(), p.msg, p.pt, p.payload);
    save(p.bob, bob_state, key);
  }
}

void BM_ping_pong_store(benchmark::State& state) {
  OlmPair p;
  Bytes key = random_bytes(kPickleKeyLen);
  Pickle alice_state;
  Pickle bob_state;
  save(p.alice, alice_state, key);
  save(p.bob, bob_state, key);
  bool alice_turn = true;
  for (auto _ : state) {
    Session& from = alice_turn ? p.alice : p.bob;
    Session& to = alice_turn ? p.bob : p.alice;
    Pickle& from_state = alice_turn ? alice_state : bob_state;
    Pickle& to_state = alice_turn ? bob_state : alice_state;

    load(from, from_state, key);
    size_t rlen = olm_encrypt_msg(from.get(), p.payload, p.msg, p.rnd);
    save(from, from_state, key);
    require(rlen != 0 && p.msg.type == OLM_MESSAGE_TYPE_MESSAGE, "ping_pong_store",
            "unexpected message kind");

    load(to, to_state, key);
    olm_decrypt_msg(to.get(), p.msg, p.pt, p.payload);
    save(to, to_state, key);
    alice_turn = !alice_turn;
  }
}

// Full X3DH-style setup per iteration: alice builds an outbound session from
// bob's identity key and a fresh published one-time key, sends a 64 B pre-key
// message, bob builds the inbound session from it, consumes the one-time key
// and decrypts. One-time keys are generated and published in batches of the
// account maximum outside the timed region.
void BM_session_setup(benchmark::State& state) {
  init_sodium();
  Account alice_acct;
  Account bob_acct;
  create_account(alice_acct);
  create_account(bob_acct);
  const std::string bob_identity = identity_curve25519(bob_acct);
  const size_t batch = olm_account_max_number_of_one_time_keys(bob_acct.get());
  require(batch > 0, "session_setup", "account cannot hold one-time keys");

  std::vector<std::string> pool;
  size_t next = 0;
  Session alice;
  Session bob;
  const Bytes payload = random_bytes(kPayload);
  Message msg;
  Bytes copy;
  Bytes rnd;
  Bytes pt;

  for (auto _ : state) {
    if (next == pool.size()) {
      state.PauseTiming();
      pool = publish_one_time_keys(bob_acct, batch);
      next = 0;
      state.ResumeTiming();
    }
    const std::string& otk = pool[next++];

    OlmSession* a = alice.init();
    size_t rlen = olm_create_outbound_session_random_length(a);
    std::uint8_t* r = ensure(rnd, rlen);
    randombytes_buf(r, rlen);
    check(olm_create_outbound_session(a, alice_acct.get(), bob_identity.data(), bob_identity.size(),
                                      otk.data(), otk.size(), r, rlen),
          a, "olm_create_outbound_session");
    olm_encrypt_msg(a, payload, msg, rnd);
    require(msg.type == OLM_MESSAGE_TYPE_PRE_KEY, "session_setup", "expected a pre-key message");

    // olm_create_inbound_session decodes the message in place; keep a copy
    // for olm_decrypt.
    std::uint8_t* c = ensure(copy, msg.len);
    std::memcpy(c, msg.buf.data(), msg.len);
    OlmSession* b = bob.init();
    check(olm_create_inbound_session(b, bob_acct.get(), c, msg.len), b,
          "olm_create_inbound_session");
    check(olm_remove_one_time_keys(bob_acct.get(), b), bob_acct.get(), "olm_remove_one_time_keys");
    olm_decrypt_msg(b, msg, pt, payload);

    alice.clear();
    bob.clear();
  }
}

// ---------------------------------------------------------------------------
// Megolm (sender keys)

struct GroupPair {
  OutboundGroup out;
  InboundGroup in;
  Bytes payload = random_bytes(kPayload);
  Message msg;
  Bytes pt;
  std::uint32_t expected_index = 0;

  GroupPair() {
    init_sodium();
    OlmOutboundGroupSession* o = out.get();
    Bytes rnd = random_bytes(olm_init_outbound_group_session_random_length(o));
    check(olm_init_outbound_group_session(o, rnd.data(), rnd.size()), o,
          "olm_init_outbound_group_session");
    Bytes session_key(olm_outbound_group_session_key_length(o));
    size_t klen = check(olm_outbound_group_session_key(o, session_key.data(), session_key.size()), o,
                        "olm_outbound_group_session_key");
    OlmInboundGroupSession* i = in.get();
    check(olm_init_inbound_group_session(i, session_key.data(), klen), i,
          "olm_init_inbound_group_session");
    expected_index = olm_outbound_group_session_message_index(o);
  }

  void encrypt() {
    OlmOutboundGroupSession* o = out.get();
    size_t mlen = check(olm_group_encrypt_message_length(o, payload.size()), o,
                        "olm_group_encrypt_message_length");
    std::uint8_t* m = ensure(msg.buf, mlen);
    msg.len = check(olm_group_encrypt(o, payload.data(), payload.size(), m, mlen), o,
                    "olm_group_encrypt");
  }

  void decrypt() {
    OlmInboundGroupSession* i = in.get();
    std::uint8_t* p = ensure(pt, msg.len);  // base64 message length bounds the plaintext
    std::uint32_t index = 0;
    size_t n = check(olm_group_decrypt(i, msg.buf.data(), msg.len, p, msg.len, &index), i,
                     "olm_group_decrypt");
    require(n == payload.size() && std::memcmp(p, payload.data(), n) == 0, "olm_group_decrypt",
            "plaintext mismatch");
    require(index == expected_index, "olm_group_decrypt", "unexpected message index");
    ++expected_index;
  }
};

void BM_sender_key_64B(benchmark::State& state) {
  GroupPair g;
  for (auto _ : state) {
    g.encrypt();
    g.decrypt();
  }
}

void BM_sender_key_64B_store(benchmark::State& state) {
  GroupPair g;
  Bytes key = random_bytes(kPickleKeyLen);
  Pickle out_state;
  Pickle in_state;
  save(g.out, out_state, key);
  save(g.in, in_state, key);
  for (auto _ : state) {
    load(g.out, out_state, key);
    g.encrypt();
    save(g.out, out_state, key);

    load(g.in, in_state, key);
    g.decrypt();
    save(g.in, in_state, key);
  }
}

}  // namespace

BENCHMARK(BM_encrypt_decrypt_64B)->Name("encrypt_decrypt_64B/olm");
BENCHMARK(BM_ping_pong)->Name("ping_pong/olm");
BENCHMARK(BM_session_setup)->Name("session_setup/olm");
BENCHMARK(BM_sender_key_64B)->Name("sender_key_64B/olm");
BENCHMARK(BM_encrypt_decrypt_64B_store)->Name("encrypt_decrypt_64B_store/olm");
BENCHMARK(BM_ping_pong_store)->Name("ping_pong_store/olm");
BENCHMARK(BM_sender_key_64B_store)->Name("sender_key_64B_store/olm");
