#include "net/server_key.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <optional>

#include "crypto/hash.h"

namespace sotto::net {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const noexcept { BIO_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

tl::unexpected<ServerKeyError> fail(ServerKeyError e) {
  ERR_clear_error();
  return tl::unexpected(e);
}

// The digest EVP_DigestSign/Verify take for this key: SHA-256 for EC, none for Ed25519 (it hashes
// internally); nullopt for any other key type.
std::optional<const EVP_MD*> digest_for(const EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC:
      return EVP_sha256();
    case EVP_PKEY_ED25519:
      return nullptr;
    default:
      return std::nullopt;
  }
}

// Exactly one DER SubjectPublicKeyInfo, nothing after it.
PkeyPtr parse_public_key(ByteView der) {
  if (der.empty() || der.size() > kMaxPublicKeyDerSize) return nullptr;
  const unsigned char* p = der.data();
  PkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!key || p != der.data() + der.size()) return nullptr;
  return key;
}

Bytes signed_message(ByteView current_public_key, ByteView next_public_key) {
  Bytes m(kNextKeyContext.begin(), kNextKeyContext.end());
  const crypto::Sha256Digest current = crypto::sha256({current_public_key});
  m.insert(m.end(), current.begin(), current.end());
  m.insert(m.end(), next_public_key.begin(), next_public_key.end());
  return m;
}

int no_passphrase(char*, int, int, void*) {
  return 0;
}

}  // namespace

std::string_view to_string(ServerKeyError e) {
  switch (e) {
    case ServerKeyError::unsupported_key:
      return "the current TLS key must be an EC or Ed25519 key to sign the next one";
    case ServerKeyError::malformed:
      return "malformed public key";
    case ServerKeyError::bad_signature:
      return "the signature does not verify";
    case ServerKeyError::failed:
      return "signing failed";
  }
  return "unknown";
}

tl::expected<Bytes, ServerKeyError> sign_next_key(const TlsIdentity& current,
                                                  ByteView next_public_key) {
  if (!parse_public_key(next_public_key)) return fail(ServerKeyError::malformed);
  PkeyPtr key;
  {
    BioPtr bio(BIO_new_mem_buf(current.private_key_pem.data(),
                               static_cast<int>(current.private_key_pem.size())));
    if (bio) key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  }
  if (!key) return fail(ServerKeyError::failed);
  const auto md = digest_for(key.get());
  if (!md) return fail(ServerKeyError::unsupported_key);

  // Over the certificate's own encoding of the current key: what clients hash.
  const Bytes message = signed_message(current.public_key, next_public_key);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  std::size_t size = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, *md, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &size, message.data(), message.size()) != 1) {
    return fail(ServerKeyError::failed);
  }
  Bytes signature(size);
  if (EVP_DigestSign(ctx.get(), signature.data(), &size, message.data(), message.size()) != 1) {
    return fail(ServerKeyError::failed);
  }
  signature.resize(size);  // an ECDSA signature's DER length varies
  return signature;
}

tl::expected<void, ServerKeyError> verify_next_key(ByteView current_public_key,
                                                   ByteView next_public_key, ByteView signature) {
  PkeyPtr key = parse_public_key(current_public_key);
  if (!key || !parse_public_key(next_public_key)) return fail(ServerKeyError::malformed);
  const auto md = digest_for(key.get());
  if (!md) return fail(ServerKeyError::unsupported_key);
  if (signature.empty() || signature.size() > kMaxNextKeySignatureSize)
    return fail(ServerKeyError::bad_signature);
  const Bytes message = signed_message(current_public_key, next_public_key);
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, *md, nullptr, key.get()) != 1)
    return fail(ServerKeyError::failed);
  // 1: good; 0 or a negative value (a malformed DER signature): not good.
  if (EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                       message.size()) != 1) {
    return fail(ServerKeyError::bad_signature);
  }
  ERR_clear_error();
  return {};
}

}  // namespace sotto::net
