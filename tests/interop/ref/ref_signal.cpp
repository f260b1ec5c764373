// Reference wrapper around libsignal-protocol-c 2.3.3 (see ref_signal.h).
#include "ref_signal.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <utility>

// libsignal-protocol-c headers (pkg-config adds -I/usr/include/signal).
#include <curve.h>
#include <fingerprint.h>
#include <group_cipher.h>
#include <group_session_builder.h>
#include <key_helper.h>
#include <protocol.h>
#include <ratchet.h>
#include <session_builder.h>
#include <session_cipher.h>
#include <session_pre_key.h>
#include <signal_protocol.h>

namespace sotto::testing::ref {
namespace {

// ---------------------------------------------------------------------------------------
// Small RAII helpers for libsignal objects.

// Owns one reference to a libsignal ref-counted object.
template <class T>
class SigRef {
 public:
  SigRef() = default;
  ~SigRef() { reset(); }
  SigRef(const SigRef&) = delete;
  SigRef& operator=(const SigRef&) = delete;
  T** out() {
    reset();
    return &ptr_;
  }
  T* get() const { return ptr_; }
  void reset() {
    if (ptr_ != nullptr) {
      SIGNAL_UNREF(ptr_);
    }
  }

 private:
  T* ptr_ = nullptr;
};

class SigBuf {
 public:
  SigBuf() = default;
  explicit SigBuf(signal_buffer* b) : buf_(b) {}
  ~SigBuf() { signal_buffer_free(buf_); }
  SigBuf(const SigBuf&) = delete;
  SigBuf& operator=(const SigBuf&) = delete;
  signal_buffer** out() {
    signal_buffer_free(buf_);
    buf_ = nullptr;
    return &buf_;
  }
  signal_buffer* get() const { return buf_; }

 private:
  signal_buffer* buf_ = nullptr;
};

struct SessionCipherDeleter {
  void operator()(session_cipher* c) const { session_cipher_free(c); }
};
struct SessionBuilderDeleter {
  void operator()(session_builder* b) const { session_builder_free(b); }
};
struct GroupCipherDeleter {
  void operator()(group_cipher* c) const { group_cipher_free(c); }
};
struct GroupBuilderDeleter {
  void operator()(group_session_builder* b) const { group_session_builder_free(b); }
};
struct FingerprintGeneratorDeleter {
  void operator()(fingerprint_generator* g) const { fingerprint_generator_free(g); }
};

Bytes to_bytes(const signal_buffer* b) {
  if (b == nullptr) {
    return {};
  }
  const std::uint8_t* p = signal_buffer_const_data(b);
  return Bytes(p, p + signal_buffer_len(b));
}

Bytes to_bytes(const std::uint8_t* p, std::size_t n) {
  if (p == nullptr || n == 0) {
    return {};
  }
  return Bytes(p, p + n);
}

// signal_buffer copy of a byte vector (never calls memcpy with a null source).
signal_buffer* make_buffer(const Bytes& b) {
  static const std::uint8_t kEmpty = 0;
  return signal_buffer_create(b.empty() ? &kEmpty : b.data(), b.size());
}

[[noreturn]] void fail(const char* what, int code) {
  std::string msg = "libsignal-protocol-c: ";
  msg += what;
  msg += " failed: ";
  msg += ref_error_name(code);
  msg += " (";
  msg += std::to_string(code);
  msg += ")";
  throw RefError(msg, code);
}

void check(int code, const char* what) {
  if (code < 0) {
    fail(what, code);
  }
}

// ---------------------------------------------------------------------------------------
// Crypto provider on OpenSSL 3 (EVP API only).  Algorithm objects are fetched once.

struct OsslAlgorithms {
  EVP_MAC* hmac = nullptr;
  EVP_MD* sha512 = nullptr;
  EVP_CIPHER* aes_cbc[3] = {nullptr, nullptr, nullptr};  // 128, 192, 256
  EVP_CIPHER* aes_ctr[3] = {nullptr, nullptr, nullptr};

  OsslAlgorithms() {
    hmac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
    sha512 = EVP_MD_fetch(nullptr, "SHA512", nullptr);
    aes_cbc[0] = EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr);
    aes_cbc[1] = EVP_CIPHER_fetch(nullptr, "AES-192-CBC", nullptr);
    aes_cbc[2] = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    aes_ctr[0] = EVP_CIPHER_fetch(nullptr, "AES-128-CTR", nullptr);
    aes_ctr[1] = EVP_CIPHER_fetch(nullptr, "AES-192-CTR", nullptr);
    aes_ctr[2] = EVP_CIPHER_fetch(nullptr, "AES-256-CTR", nullptr);
    bool ok = hmac != nullptr && sha512 != nullptr;
    for (int i = 0; i < 3; ++i) {
      ok = ok && aes_cbc[i] != nullptr && aes_ctr[i] != nullptr;
    }
    if (!ok) {
      release();
      throw std::runtime_error("ref_signal: OpenSSL algorithm fetch failed");
    }
  }
  ~OsslAlgorithms() { release(); }
  OsslAlgorithms(const OsslAlgorithms&) = delete;
  OsslAlgorithms& operator=(const OsslAlgorithms&) = delete;

  void release() {
    EVP_MAC_free(hmac);
    EVP_MD_free(sha512);
    for (int i = 0; i < 3; ++i) {
      EVP_CIPHER_free(aes_cbc[i]);
      EVP_CIPHER_free(aes_ctr[i]);
      aes_cbc[i] = nullptr;
      aes_ctr[i] = nullptr;
    }
    hmac = nullptr;
    sha512 = nullptr;
  }

  const EVP_CIPHER* cipher(int mode, std::size_t key_len) const {
    int idx = 0;
    switch (key_len) {
      case 16: idx = 0; break;
      case 24: idx = 1; break;
      case 32: idx = 2; break;
      default: return nullptr;
    }
    if (mode == SG_CIPHER_AES_CBC_PKCS5) {
      return aes_cbc[idx];
    }
    if (mode == SG_CIPHER_AES_CTR_NOPADDING) {
      return aes_ctr[idx];
    }
    return nullptr;
  }
};

OsslAlgorithms& ossl() {
  static OsslAlgorithms algorithms;  // thread-safe one-time fetch
  return algorithms;
}

// HMAC contexts are recycled per thread: creating an EVP_MAC_CTX and setting its digest
// parameter costs a provider lookup every time, whereas EVP_MAC_init() on an existing
// context with a new key fully re-keys it.
class HmacPool {
 public:
  HmacPool() = default;
  ~HmacPool() {
    for (EVP_MAC_CTX* c : free_) {
      EVP_MAC_CTX_free(c);
    }
  }
  HmacPool(const HmacPool&) = delete;
  HmacPool& operator=(const HmacPool&) = delete;

  EVP_MAC_CTX* acquire() {
    if (!free_.empty()) {
      EVP_MAC_CTX* c = free_.back();
      free_.pop_back();
      return c;
    }
    EVP_MAC_CTX* c = EVP_MAC_CTX_new(ossl().hmac);
    if (c == nullptr) {
      return nullptr;
    }
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(c, params) != 1) {
      EVP_MAC_CTX_free(c);
      return nullptr;
    }
    return c;
  }

  void release(EVP_MAC_CTX* c) {
    if (c == nullptr) {
      return;
    }
    if (free_.size() < kMaxPooled) {
      try {
        free_.push_back(c);
        return;
      } catch (...) {
      }
    }
    EVP_MAC_CTX_free(c);
  }

 private:
  static constexpr std::size_t kMaxPooled = 16;
  std::vector<EVP_MAC_CTX*> free_;
};

HmacPool& hmac_pool() {
  thread_local HmacPool pool;
  return pool;
}

int cp_random(std::uint8_t* data, std::size_t len, void* /*user_data*/) {
  while (len > 0) {
    const int chunk = len > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(len);
    if (RAND_bytes(data, chunk) != 1) {
      return SG_ERR_UNKNOWN;
    }
    data += chunk;
    len -= static_cast<std::size_t>(chunk);
  }
  return SG_SUCCESS;
}

int cp_hmac_init(void** hmac_context, const std::uint8_t* key, std::size_t key_len, void* /*user_data*/) {
  static const std::uint8_t kEmptyKey = 0;
  EVP_MAC_CTX* c = nullptr;
  try {
    c = hmac_pool().acquire();
  } catch (...) {
    return SG_ERR_NOMEM;
  }
  if (c == nullptr) {
    return SG_ERR_NOMEM;
  }
  if (EVP_MAC_init(c, key_len == 0 ? &kEmptyKey : key, key_len, nullptr) != 1) {
    EVP_MAC_CTX_free(c);
    return SG_ERR_UNKNOWN;
  }
  *hmac_context = c;
  return SG_SUCCESS;
}

int cp_hmac_update(void* hmac_context, const std::uint8_t* data, std::size_t data_len, void* /*user_data*/) {
  if (data_len == 0) {
    return SG_SUCCESS;
  }
  return EVP_MAC_update(static_cast<EVP_MAC_CTX*>(hmac_context), data, data_len) == 1 ? SG_SUCCESS
                                                                                       : SG_ERR_UNKNOWN;
}

int cp_hmac_final(void* hmac_context, signal_buffer** output, void* /*user_data*/) {
  std::uint8_t mac[EVP_MAX_MD_SIZE];
  std::size_t mac_len = 0;
  if (EVP_MAC_final(static_cast<EVP_MAC_CTX*>(hmac_context), mac, &mac_len, sizeof(mac)) != 1) {
    return SG_ERR_UNKNOWN;
  }
  signal_buffer* out = signal_buffer_create(mac, mac_len);
  OPENSSL_cleanse(mac, sizeof(mac));
  if (out == nullptr) {
    return SG_ERR_NOMEM;
  }
  *output = out;
  return SG_SUCCESS;
}

void cp_hmac_cleanup(void* hmac_context, void* /*user_data*/) {
  hmac_pool().release(static_cast<EVP_MAC_CTX*>(hmac_context));
}

int cp_sha512_init(void** digest_context, void* /*user_data*/) {
  EVP_MD_CTX* c = EVP_MD_CTX_new();
  if (c == nullptr) {
    return SG_ERR_NOMEM;
  }
  if (EVP_DigestInit_ex2(c, ossl().sha512, nullptr) != 1) {
    EVP_MD_CTX_free(c);
    return SG_ERR_UNKNOWN;
  }
  *digest_context = c;
  return SG_SUCCESS;
}

int cp_sha512_update(void* digest_context, const std::uint8_t* data, std::size_t data_len, void* /*user_data*/) {
  if (data_len == 0) {
    return SG_SUCCESS;
  }
  return EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(digest_context), data, data_len) == 1 ? SG_SUCCESS
                                                                                          : SG_ERR_UNKNOWN;
}

// Finalizes and re-initializes the context: the fingerprint code keeps using the same
// context across iterations ("prepare the context for reuse").
int cp_sha512_final(void* digest_context, signal_buffer** output, void* /*user_data*/) {
  auto* c = static_cast<EVP_MD_CTX*>(digest_context);
  std::uint8_t md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_DigestFinal_ex(c, md, &md_len) != 1) {
    return SG_ERR_UNKNOWN;
  }
  if (EVP_DigestInit_ex2(c, ossl().sha512, nullptr) != 1) {
    return SG_ERR_UNKNOWN;
  }
  signal_buffer* out = signal_buffer_create(md, md_len);
  if (out == nullptr) {
    return SG_ERR_NOMEM;
  }
  *output = out;
  return SG_SUCCESS;
}

void cp_sha512_cleanup(void* digest_context, void* /*user_data*/) {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(digest_context));
}

int cp_cipher(signal_buffer** output, int mode, const std::uint8_t* key, std::size_t key_len,
              const std::uint8_t* iv, std::size_t iv_len, const std::uint8_t* in, std::size_t in_len,
              bool encrypt) {
  const EVP_CIPHER* cipher = ossl().cipher(mode, key_len);
  if (cipher == nullptr || iv == nullptr || key == nullptr || iv_len != 16 ||
      in_len > static_cast<std::size_t>(INT_MAX) - 32) {
    return SG_ERR_UNKNOWN;
  }
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) {
    return SG_ERR_NOMEM;
  }
  int result = SG_ERR_UNKNOWN;
  signal_buffer* out = nullptr;
  do {
    if (EVP_CipherInit_ex2(ctx, cipher, key, iv, encrypt ? 1 : 0, nullptr) != 1) {
      break;
    }
    // Exact output size where it is known up front (CTR: same length; CBC encrypt: next
    // multiple of 16 with at least one padding byte).  CBC decrypt gets one block of slack
    // as EVP_DecryptUpdate requires and is trimmed afterwards.
    const bool cbc = mode == SG_CIPHER_AES_CBC_PKCS5;
    const std::size_t cap = !cbc ? in_len : (encrypt ? (in_len / 16 + 1) * 16 : in_len + 16);
    out = signal_buffer_alloc(cap);
    if (out == nullptr) {
      result = SG_ERR_NOMEM;
      break;
    }
    std::uint8_t* p = signal_buffer_data(out);
    int len1 = 0;
    int len2 = 0;
    if (in_len > 0 && EVP_CipherUpdate(ctx, p, &len1, in, static_cast<int>(in_len)) != 1) {
      break;
    }
    if (EVP_CipherFinal_ex(ctx, p + len1, &len2) != 1) {
      break;  // e.g. bad PKCS#7 padding on decrypt
    }
    const auto total = static_cast<std::size_t>(len1) + static_cast<std::size_t>(len2);
    if (total == cap) {
      *output = out;
    } else {
      signal_buffer* exact = signal_buffer_create(p, total);
      if (exact == nullptr) {
        result = SG_ERR_NOMEM;
        break;
      }
      signal_buffer_bzero_free(out);
      *output = exact;
    }
    out = nullptr;
    result = SG_SUCCESS;
  } while (false);
  signal_buffer_bzero_free(out);
  EVP_CIPHER_CTX_free(ctx);
  return result;
}

int cp_encrypt(signal_buffer** output, int cipher, const std::uint8_t* key, std::size_t key_len,
               const std::uint8_t* iv, std::size_t iv_len, const std::uint8_t* plaintext,
               std::size_t plaintext_len, void* /*user_data*/) {
  return cp_cipher(output, cipher, key, key_len, iv, iv_len, plaintext, plaintext_len, true);
}

int cp_decrypt(signal_buffer** output, int cipher, const std::uint8_t* key, std::size_t key_len,
               const std::uint8_t* iv, std::size_t iv_len, const std::uint8_t* ciphertext,
               std::size_t ciphertext_len, void* /*user_data*/) {
  return cp_cipher(output, cipher, key, key_len, iv, iv_len, ciphertext, ciphertext_len, false);
}

const signal_crypto_provider& crypto_provider() {
  static const signal_crypto_provider provider = [] {
    signal_crypto_provider p{};
    p.random_func = cp_random;
    p.hmac_sha256_init_func = cp_hmac_init;
    p.hmac_sha256_update_func = cp_hmac_update;
    p.hmac_sha256_final_func = cp_hmac_final;
    p.hmac_sha256_cleanup_func = cp_hmac_cleanup;
    p.sha512_digest_init_func = cp_sha512_init;
    p.sha512_digest_update_func = cp_sha512_update;
    p.sha512_digest_final_func = cp_sha512_final;
    p.sha512_digest_cleanup_func = cp_sha512_cleanup;
    p.encrypt_func = cp_encrypt;
    p.decrypt_func = cp_decrypt;
    p.user_data = nullptr;
    return p;
  }();
  (void)ossl();  // fetch the algorithms up front (throws if OpenSSL lacks them)
  return provider;
}

// Context used by the free helpers (key decoding only logs through it).
signal_context* helper_context() {
  struct Holder {
    signal_context* ctx = nullptr;
    Holder() {
      check(signal_context_create(&ctx, nullptr), "signal_context_create");
      const int r = signal_context_set_crypto_provider(ctx, &crypto_provider());
      if (r < 0) {
        signal_context_destroy(ctx);
        fail("signal_context_set_crypto_provider", r);
      }
    }
    ~Holder() { signal_context_destroy(ctx); }
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
  };
  static Holder holder;
  return holder.ctx;
}

bool log_enabled() {
  static const bool enabled = std::getenv("SOTTO_REF_SIGNAL_LOG") != nullptr;
  return enabled;
}

using AddrKey = std::pair<std::string, std::int32_t>;
using SenderKeyKey = std::tuple<std::string, std::string, std::int32_t>;

AddrKey addr_key(const signal_protocol_address* a) {
  return {std::string(a->name, a->name_len), a->device_id};
}

SenderKeyKey sender_key_key(const signal_protocol_sender_key_name* n) {
  return {std::string(n->group_id, n->group_id_len), std::string(n->sender.name, n->sender.name_len),
          n->sender.device_id};
}

struct StoredRecord {
  Bytes record;
  Bytes user_record;
};

}  // namespace

// ---------------------------------------------------------------------------------------

struct RefParty::Impl {
  std::string name;
  std::uint32_t device_id = 1;
  std::recursive_mutex mu;  // libsignal nests signal_lock() calls

  signal_context* ctx = nullptr;
  signal_protocol_store_context* store = nullptr;
  ratchet_identity_key_pair* identity = nullptr;
  Bytes identity_pub;
  Bytes identity_priv;
  std::uint32_t registration_id = 0;
  bool trust_changed = false;

  // Stores: serialized bytes exactly as libsignal hands them over.
  std::map<AddrKey, StoredRecord> sessions;
  std::map<std::uint32_t, Bytes> pre_keys;
  std::map<std::uint32_t, Bytes> signed_pre_keys;
  std::map<AddrKey, Bytes> identities;
  std::map<SenderKeyKey, StoredRecord> sender_keys;

  // Bundle material.
  std::map<std::uint32_t, Bytes> unused_pre_key_publics;  // id -> 33-byte public, not yet handed out
  std::uint32_t next_pre_key_start = 1;                   // first id of the next generated batch
  std::uint32_t signed_pre_key_id = 1;
  Bytes signed_pre_key_public;
  Bytes signed_pre_key_signature;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    if (identity != nullptr) {
      SIGNAL_UNREF(identity);
    }
    signal_protocol_store_context_destroy(store);
    signal_context_destroy(ctx);
  }

  signal_protocol_address address(const std::string& peer, std::uint32_t device) const {
    signal_protocol_address a{};
    a.name = peer.c_str();
    a.name_len = peer.size();
    a.device_id = static_cast<std::int32_t>(device);
    return a;
  }

  signal_protocol_sender_key_name sender_key_name(const std::string& group_id, const std::string& sender,
                                                  std::uint32_t device) const {
    signal_protocol_sender_key_name n{};
    n.group_id = group_id.c_str();
    n.group_id_len = group_id.size();
    n.sender = address(sender, device);
    return n;
  }

  void generate_pre_keys(unsigned int count) {
    signal_protocol_key_helper_pre_key_list_node* head = nullptr;
    check(signal_protocol_key_helper_generate_pre_keys(&head, next_pre_key_start, count, ctx),
          "signal_protocol_key_helper_generate_pre_keys");
    struct ListFree {
      signal_protocol_key_helper_pre_key_list_node* h;
      ~ListFree() { signal_protocol_key_helper_key_list_free(h); }
    } list_guard{head};
    for (auto* node = head; node != nullptr; node = signal_protocol_key_helper_key_list_next(node)) {
      session_pre_key* pk = signal_protocol_key_helper_key_list_element(node);
      check(signal_protocol_pre_key_store_key(store, pk), "signal_protocol_pre_key_store_key");
      SigBuf pub;
      check(ec_public_key_serialize(pub.out(), ec_key_pair_get_public(session_pre_key_get_key_pair(pk))),
            "ec_public_key_serialize");
      unused_pre_key_publics[session_pre_key_get_id(pk)] = to_bytes(pub.get());
    }
    next_pre_key_start += count;
  }

  // -------------------------------------------------------------------------------------
  // Callbacks (C ABI: must not throw).

  static Impl* self(void* user_data) { return static_cast<Impl*>(user_data); }

  static void lock_cb(void* user_data) { self(user_data)->mu.lock(); }
  static void unlock_cb(void* user_data) { self(user_data)->mu.unlock(); }

  static void log_cb(int level, const char* message, std::size_t len, void* user_data) {
    if (log_enabled()) {
      std::fprintf(stderr, "[libsignal-c %s L%d] %.*s\n", self(user_data)->name.c_str(), level,
                   static_cast<int>(len), message);
    }
  }

  // Session store.
  static int load_session(signal_buffer** record, signal_buffer** user_record,
                          const signal_protocol_address* address, void* user_data) {
    try {
      Impl* s = self(user_data);
      auto it = s->sessions.find(addr_key(address));
      if (it == s->sessions.end()) {
        return 0;
      }
      signal_buffer* r = make_buffer(it->second.record);
      if (r == nullptr) {
        return SG_ERR_NOMEM;
      }
      if (!it->second.user_record.empty()) {
        signal_buffer* u = make_buffer(it->second.user_record);
        if (u == nullptr) {
          signal_buffer_free(r);
          return SG_ERR_NOMEM;
        }
        *user_record = u;
      }
      *record = r;
      return 1;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int get_sub_device_sessions(signal_int_list** sessions, const char* name, std::size_t name_len,
                                     void* user_data) {
    try {
      Impl* s = self(user_data);
      const std::string n(name, name_len);
      signal_int_list* list = signal_int_list_alloc();
      if (list == nullptr) {
        return SG_ERR_NOMEM;
      }
      int count = 0;
      for (auto it = s->sessions.lower_bound({n, INT32_MIN}); it != s->sessions.end() && it->first.first == n;
           ++it) {
        signal_int_list_push_back(list, it->first.second);
        ++count;
      }
      *sessions = list;
      return count;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int store_session(const signal_protocol_address* address, std::uint8_t* record, std::size_t record_len,
                           std::uint8_t* user_record, std::size_t user_record_len, void* user_data) {
    try {
      self(user_data)->sessions[addr_key(address)] =
          StoredRecord{to_bytes(record, record_len), to_bytes(user_record, user_record_len)};
      return SG_SUCCESS;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int contains_session(const signal_protocol_address* address, void* user_data) {
    try {
      return self(user_data)->sessions.count(addr_key(address)) != 0 ? 1 : 0;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int delete_session(const signal_protocol_address* address, void* user_data) {
    try {
      return self(user_data)->sessions.erase(addr_key(address)) != 0 ? 1 : 0;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int delete_all_sessions(const char* name, std::size_t name_len, void* user_data) {
    try {
      Impl* s = self(user_data);
      const std::string n(name, name_len);
      int count = 0;
      for (auto it = s->sessions.lower_bound({n, INT32_MIN}); it != s->sessions.end() && it->first.first == n;) {
        it = s->sessions.erase(it);
        ++count;
      }
      return count;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  // Pre-key store.
  static int load_pre_key(signal_buffer** record, std::uint32_t id, void* user_data) {
    Impl* s = self(user_data);
    auto it = s->pre_keys.find(id);
    if (it == s->pre_keys.end()) {
      return SG_ERR_INVALID_KEY_ID;
    }
    signal_buffer* r = make_buffer(it->second);
    if (r == nullptr) {
      return SG_ERR_NOMEM;
    }
    *record = r;
    return SG_SUCCESS;
  }

  static int store_pre_key(std::uint32_t id, std::uint8_t* record, std::size_t record_len, void* user_data) {
    try {
      self(user_data)->pre_keys[id] = to_bytes(record, record_len);
      return SG_SUCCESS;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int contains_pre_key(std::uint32_t id, void* user_data) {
    return self(user_data)->pre_keys.count(id) != 0 ? 1 : 0;
  }

  static int remove_pre_key(std::uint32_t id, void* user_data) {
    self(user_data)->pre_keys.erase(id);
    return SG_SUCCESS;
  }

  // Signed pre-key store.
  static int load_signed_pre_key(signal_buffer** record, std::uint32_t id, void* user_data) {
    Impl* s = self(user_data);
    auto it = s->signed_pre_keys.find(id);
    if (it == s->signed_pre_keys.end()) {
      return SG_ERR_INVALID_KEY_ID;
    }
    signal_buffer* r = make_buffer(it->second);
    if (r == nullptr) {
      return SG_ERR_NOMEM;
    }
    *record = r;
    return SG_SUCCESS;
  }

  static int store_signed_pre_key(std::uint32_t id, std::uint8_t* record, std::size_t record_len,
                                  void* user_data) {
    try {
      self(user_data)->signed_pre_keys[id] = to_bytes(record, record_len);
      return SG_SUCCESS;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int contains_signed_pre_key(std::uint32_t id, void* user_data) {
    return self(user_data)->signed_pre_keys.count(id) != 0 ? 1 : 0;
  }

  static int remove_signed_pre_key(std::uint32_t id, void* user_data) {
    self(user_data)->signed_pre_keys.erase(id);
    return SG_SUCCESS;
  }

  // Identity key store.
  static int get_identity_key_pair(signal_buffer** public_data, signal_buffer** private_data, void* user_data) {
    Impl* s = self(user_data);
    signal_buffer* pub = make_buffer(s->identity_pub);
    signal_buffer* priv = make_buffer(s->identity_priv);
    if (pub == nullptr || priv == nullptr) {
      signal_buffer_free(pub);
      signal_buffer_bzero_free(priv);
      return SG_ERR_NOMEM;
    }
    *public_data = pub;
    *private_data = priv;
    return SG_SUCCESS;
  }

  static int get_local_registration_id(void* user_data, std::uint32_t* registration_id) {
    *registration_id = self(user_data)->registration_id;
    return SG_SUCCESS;
  }

  static int save_identity(const signal_protocol_address* address, std::uint8_t* key_data, std::size_t key_len,
                           void* user_data) {
    try {
      Impl* s = self(user_data);
      if (key_data == nullptr) {
        s->identities.erase(addr_key(address));
      } else {
        s->identities[addr_key(address)] = to_bytes(key_data, key_len);
      }
      return SG_SUCCESS;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int is_trusted_identity(const signal_protocol_address* address, std::uint8_t* key_data,
                                 std::size_t key_len, void* user_data) {
    try {
      Impl* s = self(user_data);
      auto it = s->identities.find(addr_key(address));
      if (it == s->identities.end()) {
        return 1;  // trust on first use
      }
      const bool same = it->second.size() == key_len &&
                        (key_len == 0 || std::memcmp(it->second.data(), key_data, key_len) == 0);
      return (same || s->trust_changed) ? 1 : 0;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  // Sender key store.
  static int store_sender_key(const signal_protocol_sender_key_name* sender_key_name, std::uint8_t* record,
                              std::size_t record_len, std::uint8_t* user_record, std::size_t user_record_len,
                              void* user_data) {
    try {
      self(user_data)->sender_keys[sender_key_key(sender_key_name)] =
          StoredRecord{to_bytes(record, record_len), to_bytes(user_record, user_record_len)};
      return SG_SUCCESS;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  static int load_sender_key(signal_buffer** record, signal_buffer** user_record,
                             const signal_protocol_sender_key_name* sender_key_name, void* user_data) {
    try {
      Impl* s = self(user_data);
      auto it = s->sender_keys.find(sender_key_key(sender_key_name));
      if (it == s->sender_keys.end()) {
        return 0;
      }
      signal_buffer* r = make_buffer(it->second.record);
      if (r == nullptr) {
        return SG_ERR_NOMEM;
      }
      if (!it->second.user_record.empty()) {
        signal_buffer* u = make_buffer(it->second.user_record);
        if (u == nullptr) {
          signal_buffer_free(r);
          return SG_ERR_NOMEM;
        }
        *user_record = u;
      }
      *record = r;
      return 1;
    } catch (...) {
      return SG_ERR_NOMEM;
    }
  }

  void install_stores() {
    signal_protocol_session_store ss{};
    ss.load_session_func = load_session;
    ss.get_sub_device_sessions_func = get_sub_device_sessions;
    ss.store_session_func = store_session;
    ss.contains_session_func = contains_session;
    ss.delete_session_func = delete_session;
    ss.delete_all_sessions_func = delete_all_sessions;
    ss.destroy_func = nullptr;
    ss.user_data = this;
    check(signal_protocol_store_context_set_session_store(store, &ss), "set_session_store");

    signal_protocol_pre_key_store ps{};
    ps.load_pre_key = load_pre_key;
    ps.store_pre_key = store_pre_key;
    ps.contains_pre_key = contains_pre_key;
    ps.remove_pre_key = remove_pre_key;
    ps.destroy_func = nullptr;
    ps.user_data = this;
    check(signal_protocol_store_context_set_pre_key_store(store, &ps), "set_pre_key_store");

    signal_protocol_signed_pre_key_store sps{};
    sps.load_signed_pre_key = load_signed_pre_key;
    sps.store_signed_pre_key = store_signed_pre_key;
    sps.contains_signed_pre_key = contains_signed_pre_key;
    sps.remove_signed_pre_key = remove_signed_pre_key;
    sps.destroy_func = nullptr;
    sps.user_data = this;
    check(signal_protocol_store_context_set_signed_pre_key_store(store, &sps), "set_signed_pre_key_store");

    signal_protocol_identity_key_store is{};
    is.get_identity_key_pair = get_identity_key_pair;
    is.get_local_registration_id = get_local_registration_id;
    is.save_identity = save_identity;
    is.is_trusted_identity = is_trusted_identity;
    is.destroy_func = nullptr;
    is.user_data = this;
    check(signal_protocol_store_context_set_identity_key_store(store, &is), "set_identity_key_store");

    signal_protocol_sender_key_store sks{};
    sks.store_sender_key = store_sender_key;
    sks.load_sender_key = load_sender_key;
    sks.destroy_func = nullptr;
    sks.user_data = this;
    check(signal_protocol_store_context_set_sender_key_store(store, &sks), "set_sender_key_store");
  }

  // Builds our fingerprint; returns an SG code.
  int make_fingerprint(const std::string& local_stable_id, const std::string& remote_stable_id,
                       const Bytes& remote_identity, int iterations, int scannable_version,
                       SigRef<fingerprint>& out) const {
    fingerprint_generator* raw_gen = nullptr;
    int r = fingerprint_generator_create(&raw_gen, iterations, scannable_version, ctx);
    if (r < 0) {
      return r;
    }
    std::unique_ptr<fingerprint_generator, FingerprintGeneratorDeleter> gen(raw_gen);
    SigRef<ec_public_key> remote;
    r = curve_decode_point(remote.out(), remote_identity.data(), remote_identity.size(), ctx);
    if (r < 0) {
      return r;
    }
    return fingerprint_generator_create_for(gen.get(), local_stable_id.c_str(),
                                            ratchet_identity_key_pair_get_public(identity),
                                            remote_stable_id.c_str(), remote.get(), out.out());
  }
};

// ---------------------------------------------------------------------------------------

RefParty::RefParty(std::string name, std::uint32_t device_id) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.name = std::move(name);
  s.device_id = device_id;

  check(signal_context_create(&s.ctx, &s), "signal_context_create");
  check(signal_context_set_crypto_provider(s.ctx, &crypto_provider()), "signal_context_set_crypto_provider");
  check(signal_context_set_locking_functions(s.ctx, Impl::lock_cb, Impl::unlock_cb),
        "signal_context_set_locking_functions");
  check(signal_context_set_log_function(s.ctx, Impl::log_cb), "signal_context_set_log_function");
  check(signal_protocol_store_context_create(&s.store, s.ctx), "signal_protocol_store_context_create");
  s.install_stores();

  check(signal_protocol_key_helper_generate_identity_key_pair(&s.identity, s.ctx),
        "signal_protocol_key_helper_generate_identity_key_pair");
  {
    SigBuf pub;
    SigBuf priv;
    check(ec_public_key_serialize(pub.out(), ratchet_identity_key_pair_get_public(s.identity)),
          "ec_public_key_serialize");
    check(ec_private_key_serialize(priv.out(), ratchet_identity_key_pair_get_private(s.identity)),
          "ec_private_key_serialize");
    s.identity_pub = to_bytes(pub.get());
    s.identity_priv = to_bytes(priv.get());
  }
  check(signal_protocol_key_helper_generate_registration_id(&s.registration_id, 0, s.ctx),
        "signal_protocol_key_helper_generate_registration_id");

  s.generate_pre_keys(100);

  {
    const auto now_ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    SigRef<session_signed_pre_key> spk;
    check(signal_protocol_key_helper_generate_signed_pre_key(spk.out(), s.identity, s.signed_pre_key_id, now_ms,
                                                             s.ctx),
          "signal_protocol_key_helper_generate_signed_pre_key");
    check(signal_protocol_signed_pre_key_store_key(s.store, spk.get()), "signal_protocol_signed_pre_key_store_key");
    SigBuf pub;
    check(ec_public_key_serialize(pub.out(), ec_key_pair_get_public(session_signed_pre_key_get_key_pair(spk.get()))),
          "ec_public_key_serialize");
    s.signed_pre_key_public = to_bytes(pub.get());
    s.signed_pre_key_signature = to_bytes(session_signed_pre_key_get_signature(spk.get()),
                                          session_signed_pre_key_get_signature_len(spk.get()));
  }
}

RefParty::~RefParty() = default;
RefParty::RefParty(RefParty&&) noexcept = default;
RefParty& RefParty::operator=(RefParty&&) noexcept = default;

const std::string& RefParty::name() const { return impl_->name; }
std::uint32_t RefParty::device_id() const { return impl_->device_id; }
Bytes RefParty::identity_public() const { return impl_->identity_pub; }
Bytes RefParty::identity_private() const { return impl_->identity_priv; }
std::uint32_t RefParty::registration_id() const { return impl_->registration_id; }

RefBundle RefParty::bundle(bool with_one_time_prekey) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  RefBundle b;
  b.registration_id = s.registration_id;
  b.device_id = s.device_id;
  if (with_one_time_prekey) {
    if (s.unused_pre_key_publics.empty()) {
      s.generate_pre_keys(100);
    }
    auto it = s.unused_pre_key_publics.begin();
    b.prekey_id = it->first;
    b.prekey_public = std::move(it->second);
    s.unused_pre_key_publics.erase(it);
  }
  b.signed_prekey_id = s.signed_pre_key_id;
  b.signed_prekey_public = s.signed_pre_key_public;
  b.signed_prekey_signature = s.signed_pre_key_signature;
  b.identity_key = s.identity_pub;
  return b;
}

int RefParty::process_bundle(const std::string& peer, std::uint32_t peer_device, const RefBundle& b) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  SigRef<ec_public_key> identity;
  SigRef<ec_public_key> signed_pre_key;
  SigRef<ec_public_key> pre_key;
  int r = curve_decode_point(identity.out(), b.identity_key.data(), b.identity_key.size(), s.ctx);
  if (r < 0) {
    return r;
  }
  r = curve_decode_point(signed_pre_key.out(), b.signed_prekey_public.data(), b.signed_prekey_public.size(), s.ctx);
  if (r < 0) {
    return r;
  }
  if (b.prekey_id.has_value()) {
    r = curve_decode_point(pre_key.out(), b.prekey_public.data(), b.prekey_public.size(), s.ctx);
    if (r < 0) {
      return r;
    }
  }
  if (b.signed_prekey_signature.empty()) {
    // libsignal-protocol-c 2.3.3 would call signal_buffer_len(NULL) here and crash; a
    // wrong-length signature is reported by curve_verify_signature as SG_ERR_INVAL.
    return SG_ERR_INVAL;
  }
  SigRef<session_pre_key_bundle> bundle;
  r = session_pre_key_bundle_create(bundle.out(), b.registration_id, static_cast<int>(b.device_id),
                                    b.prekey_id.value_or(0), pre_key.get(), b.signed_prekey_id,
                                    signed_pre_key.get(), b.signed_prekey_signature.data(),
                                    b.signed_prekey_signature.size(), identity.get());
  if (r < 0) {
    return r;
  }
  const signal_protocol_address addr = s.address(peer, peer_device);
  session_builder* raw_builder = nullptr;
  r = session_builder_create(&raw_builder, s.store, &addr, s.ctx);
  if (r < 0) {
    return r;
  }
  std::unique_ptr<session_builder, SessionBuilderDeleter> builder(raw_builder);
  r = session_builder_process_pre_key_bundle(builder.get(), bundle.get());
  return r < 0 ? r : SG_SUCCESS;
}

RefCiphertext RefParty::encrypt(const std::string& peer, std::uint32_t peer_device, const Bytes& plaintext) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  static const std::uint8_t kEmpty = 0;
  const signal_protocol_address addr = s.address(peer, peer_device);
  session_cipher* raw_cipher = nullptr;
  check(session_cipher_create(&raw_cipher, s.store, &addr, s.ctx), "session_cipher_create");
  std::unique_ptr<session_cipher, SessionCipherDeleter> cipher(raw_cipher);
  SigRef<ciphertext_message> msg;
  check(session_cipher_encrypt(cipher.get(), plaintext.empty() ? &kEmpty : plaintext.data(), plaintext.size(),
                               msg.out()),
        "session_cipher_encrypt");
  RefCiphertext out;
  out.type = ciphertext_message_get_type(msg.get());
  out.bytes = to_bytes(ciphertext_message_get_serialized(msg.get()));
  return out;
}

RefResult RefParty::decrypt(const std::string& peer, std::uint32_t peer_device, const RefCiphertext& c) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  const signal_protocol_address addr = s.address(peer, peer_device);
  RefResult res;
  SigBuf plaintext;
  int r = SG_SUCCESS;
  if (c.type != CIPHERTEXT_PREKEY_TYPE && c.type != CIPHERTEXT_SIGNAL_TYPE) {
    res.error = SG_ERR_INVAL;
    return res;
  }
  session_cipher* raw_cipher = nullptr;
  r = session_cipher_create(&raw_cipher, s.store, &addr, s.ctx);
  if (r < 0) {
    res.error = r;
    return res;
  }
  std::unique_ptr<session_cipher, SessionCipherDeleter> cipher(raw_cipher);
  if (c.type == CIPHERTEXT_PREKEY_TYPE) {
    SigRef<pre_key_signal_message> msg;
    r = pre_key_signal_message_deserialize(msg.out(), c.bytes.data(), c.bytes.size(), s.ctx);
    if (r >= 0) {
      r = session_cipher_decrypt_pre_key_signal_message(cipher.get(), msg.get(), nullptr, plaintext.out());
    }
  } else {
    SigRef<signal_message> msg;
    r = signal_message_deserialize(msg.out(), c.bytes.data(), c.bytes.size(), s.ctx);
    if (r >= 0) {
      r = session_cipher_decrypt_signal_message(cipher.get(), msg.get(), nullptr, plaintext.out());
    }
  }
  if (r < 0) {
    res.error = r;
    return res;
  }
  res.plaintext = to_bytes(plaintext.get());
  return res;
}

bool RefParty::has_session(const std::string& peer, std::uint32_t peer_device) const {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return s.sessions.count({peer, static_cast<std::int32_t>(peer_device)}) != 0;
}

Bytes RefParty::session_record_bytes(const std::string& peer, std::uint32_t peer_device) const {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  auto it = s.sessions.find({peer, static_cast<std::int32_t>(peer_device)});
  return it == s.sessions.end() ? Bytes{} : it->second.record;
}

void RefParty::set_trust_changed_identities(bool trust) {
  std::lock_guard<std::recursive_mutex> lock(impl_->mu);
  impl_->trust_changed = trust;
}

Bytes RefParty::create_sender_key_distribution(const std::string& group_id) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  const signal_protocol_sender_key_name skn = s.sender_key_name(group_id, s.name, s.device_id);
  group_session_builder* raw_builder = nullptr;
  check(group_session_builder_create(&raw_builder, s.store, s.ctx), "group_session_builder_create");
  std::unique_ptr<group_session_builder, GroupBuilderDeleter> builder(raw_builder);
  SigRef<sender_key_distribution_message> skdm;
  check(group_session_builder_create_session(builder.get(), skdm.out(), &skn),
        "group_session_builder_create_session");
  // Every protocol message type starts with the ciphertext_message base.
  return to_bytes(ciphertext_message_get_serialized(reinterpret_cast<ciphertext_message*>(skdm.get())));
}

int RefParty::process_sender_key_distribution(const std::string& group_id, const std::string& sender,
                                              std::uint32_t sender_device, const Bytes& skdm) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  SigRef<sender_key_distribution_message> msg;
  int r = sender_key_distribution_message_deserialize(msg.out(), skdm.data(), skdm.size(), s.ctx);
  if (r < 0) {
    return r;
  }
  const signal_protocol_sender_key_name skn = s.sender_key_name(group_id, sender, sender_device);
  group_session_builder* raw_builder = nullptr;
  r = group_session_builder_create(&raw_builder, s.store, s.ctx);
  if (r < 0) {
    return r;
  }
  std::unique_ptr<group_session_builder, GroupBuilderDeleter> builder(raw_builder);
  r = group_session_builder_process_session(builder.get(), &skn, msg.get());
  return r < 0 ? r : SG_SUCCESS;
}

Bytes RefParty::group_encrypt(const std::string& group_id, const Bytes& plaintext) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  static const std::uint8_t kEmpty = 0;
  const signal_protocol_sender_key_name skn = s.sender_key_name(group_id, s.name, s.device_id);
  group_cipher* raw_cipher = nullptr;
  check(group_cipher_create(&raw_cipher, s.store, &skn, s.ctx), "group_cipher_create");
  std::unique_ptr<group_cipher, GroupCipherDeleter> cipher(raw_cipher);
  SigRef<ciphertext_message> msg;
  check(group_cipher_encrypt(cipher.get(), plaintext.empty() ? &kEmpty : plaintext.data(), plaintext.size(),
                             msg.out()),
        "group_cipher_encrypt");
  return to_bytes(ciphertext_message_get_serialized(msg.get()));
}

RefResult RefParty::group_decrypt(const std::string& group_id, const std::string& sender,
                                  std::uint32_t sender_device, const Bytes& message) {
  Impl& s = *impl_;
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  RefResult res;
  SigRef<sender_key_message> msg;
  int r = sender_key_message_deserialize(msg.out(), message.data(), message.size(), s.ctx);
  if (r < 0) {
    res.error = r;
    return res;
  }
  const signal_protocol_sender_key_name skn = s.sender_key_name(group_id, sender, sender_device);
  group_cipher* raw_cipher = nullptr;
  r = group_cipher_create(&raw_cipher, s.store, &skn, s.ctx);
  if (r < 0) {
    res.error = r;
    return res;
  }
  std::unique_ptr<group_cipher, GroupCipherDeleter> cipher(raw_cipher);
  SigBuf plaintext;
  r = group_cipher_decrypt(cipher.get(), msg.get(), nullptr, plaintext.out());
  if (r < 0) {
    res.error = r;
    return res;
  }
  res.plaintext = to_bytes(plaintext.get());
  return res;
}

std::string RefParty::displayable_fingerprint(const std::string& local_stable_id,
                                              const std::string& remote_stable_id, const Bytes& remote_identity,
                                              int iterations, int scannable_version) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mu);
  SigRef<fingerprint> fp;
  check(impl_->make_fingerprint(local_stable_id, remote_stable_id, remote_identity, iterations, scannable_version,
                                fp),
        "fingerprint_generator_create_for");
  const char* text = displayable_fingerprint_text(fingerprint_get_displayable(fp.get()));
  return text == nullptr ? std::string() : std::string(text);
}

Bytes RefParty::scannable_fingerprint(const std::string& local_stable_id, const std::string& remote_stable_id,
                                      const Bytes& remote_identity, int iterations, int scannable_version) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mu);
  SigRef<fingerprint> fp;
  check(impl_->make_fingerprint(local_stable_id, remote_stable_id, remote_identity, iterations, scannable_version,
                                fp),
        "fingerprint_generator_create_for");
  SigBuf serialized;
  check(scannable_fingerprint_serialize(serialized.out(), fingerprint_get_scannable(fp.get())),
        "scannable_fingerprint_serialize");
  return to_bytes(serialized.get());
}

int RefParty::compare_scannable(const std::string& local_stable_id, const std::string& remote_stable_id,
                                const Bytes& remote_identity, const Bytes& theirs, int iterations,
                                int scannable_version) const {
  std::lock_guard<std::recursive_mutex> lock(impl_->mu);
  SigRef<fingerprint> fp;
  int r = impl_->make_fingerprint(local_stable_id, remote_stable_id, remote_identity, iterations, scannable_version,
                                  fp);
  if (r < 0) {
    return r;
  }
  SigRef<::scannable_fingerprint> other;
  r = scannable_fingerprint_deserialize(other.out(), theirs.data(), theirs.size(), impl_->ctx);
  if (r < 0) {
    return r;
  }
  return scannable_fingerprint_compare(fingerprint_get_scannable(fp.get()), other.get());
}

// ---------------------------------------------------------------------------------------

Bytes ref_calculate_agreement(const Bytes& their_public33, const Bytes& our_private32) {
  signal_context* ctx = helper_context();
  SigRef<ec_public_key> pub;
  SigRef<ec_private_key> priv;
  check(curve_decode_point(pub.out(), their_public33.data(), their_public33.size(), ctx), "curve_decode_point");
  check(curve_decode_private_point(priv.out(), our_private32.data(), our_private32.size(), ctx),
        "curve_decode_private_point");
  std::uint8_t* shared = nullptr;
  const int n = curve_calculate_agreement(&shared, pub.get(), priv.get());
  if (n < 0) {
    fail("curve_calculate_agreement", n);
  }
  Bytes out(shared, shared + n);
  std::free(shared);  // allocated with malloc() by libsignal
  return out;
}

const char* ref_error_name(int code) {
  switch (code) {
    case SG_SUCCESS: return "SG_SUCCESS";
    case SG_ERR_NOMEM: return "SG_ERR_NOMEM";
    case SG_ERR_INVAL: return "SG_ERR_INVAL";
    case SG_ERR_UNKNOWN: return "SG_ERR_UNKNOWN";
    case SG_ERR_DUPLICATE_MESSAGE: return "SG_ERR_DUPLICATE_MESSAGE";
    case SG_ERR_INVALID_KEY: return "SG_ERR_INVALID_KEY";
    case SG_ERR_INVALID_KEY_ID: return "SG_ERR_INVALID_KEY_ID";
    case SG_ERR_INVALID_MAC: return "SG_ERR_INVALID_MAC";
    case SG_ERR_INVALID_MESSAGE: return "SG_ERR_INVALID_MESSAGE";
    case SG_ERR_INVALID_VERSION: return "SG_ERR_INVALID_VERSION";
    case SG_ERR_LEGACY_MESSAGE: return "SG_ERR_LEGACY_MESSAGE";
    case SG_ERR_NO_SESSION: return "SG_ERR_NO_SESSION";
    case SG_ERR_STALE_KEY_EXCHANGE: return "SG_ERR_STALE_KEY_EXCHANGE";
    case SG_ERR_UNTRUSTED_IDENTITY: return "SG_ERR_UNTRUSTED_IDENTITY";
    case SG_ERR_VRF_SIG_VERIF_FAILED: return "SG_ERR_VRF_SIG_VERIF_FAILED";
    case SG_ERR_INVALID_PROTO_BUF: return "SG_ERR_INVALID_PROTO_BUF";
    case SG_ERR_FP_VERSION_MISMATCH: return "SG_ERR_FP_VERSION_MISMATCH";
    case SG_ERR_FP_IDENT_MISMATCH: return "SG_ERR_FP_IDENT_MISMATCH";
    default: return code < 0 ? "SG_ERR_(other)" : "SG_SUCCESS(positive)";
  }
}

}  // namespace sotto::testing::ref
