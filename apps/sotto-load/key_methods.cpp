// ENGINE_* and EVP_PKEY_meth_find are deprecated in OpenSSL 3 and supported throughout 3.x
// (key_methods.h says why the load tool uses them).
#define OPENSSL_SUPPRESS_DEPRECATED
#include "key_methods.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/opensslconf.h>

#ifndef OPENSSL_NO_ENGINE
#include <openssl/engine.h>
#endif

#include <iterator>
#include <mutex>

namespace sotto::load {

#ifndef OPENSSL_NO_ENGINE
namespace {

// The server certificate's key type (and its CertificateVerify), and the key share's.
constexpr int kNids[] = {NID_X9_62_id_ecPublicKey, NID_X25519};

// ENGINE_PKEY_METHS_PTR: with `meth` null, lists the key types; otherwise gives one's methods.
int builtin_pkey_methods(ENGINE*, EVP_PKEY_METHOD** meth, const int** nids, int nid) {
  if (meth == nullptr) {
    *nids = kNids;
    return static_cast<int>(std::size(kNids));
  }
  // OpenSSL's own method table; libcrypto only reads it.
  *meth = const_cast<EVP_PKEY_METHOD*>(EVP_PKEY_meth_find(nid));
  return *meth != nullptr ? 1 : 0;
}

bool register_engine() {
  ENGINE* e = ENGINE_new();
  if (e == nullptr) return false;
  const bool ok = ENGINE_set_id(e, "sotto-load-builtin") == 1 &&
                  ENGINE_set_name(e, "OpenSSL's built-in X25519 and EC key methods") == 1 &&
                  ENGINE_set_pkey_meths(e, builtin_pkey_methods) == 1 && ENGINE_init(e) == 1;
  // The default tables take their own references; ours go either way.
  const bool set = ok && ENGINE_set_default_pkey_meths(e) == 1;
  if (ok && !set) ENGINE_unregister_pkey_meths(e);  // a key type registered before the failure
  if (ok) ENGINE_finish(e);
  ENGINE_free(e);
  if (!set) ERR_clear_error();  // the tool goes on with the providers
  return set;
}

}  // namespace

bool use_builtin_key_methods() {
  static std::once_flag once;
  static bool registered = false;
  std::call_once(once, [] { registered = register_engine(); });
  return registered;
}
#else
bool use_builtin_key_methods() {
  return false;
}
#endif

}  // namespace sotto::load
