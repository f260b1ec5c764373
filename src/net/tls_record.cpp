#include "net/tls_record.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <array>
#include <cstring>
#include <memory>
#include <string>

namespace sotto::net::detail {

namespace {

// Boost's error_category has a protected non-virtual destructor; categories are never deleted.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class RecordCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "tls record"; }
  std::string message(int ev) const override {
    switch (static_cast<TlsRecordError>(ev)) {
      case TlsRecordError::bad_record_mac:
        return "TLS record failed authentication";
      case TlsRecordError::record_overflow:
        return "TLS record too long";
      case TlsRecordError::unexpected_message:
        return "unexpected TLS record or message after the handshake";
      case TlsRecordError::decode_error:
        return "malformed TLS alert or KeyUpdate";
      case TlsRecordError::illegal_parameter:
        return "TLS KeyUpdate with an illegal request value";
      case TlsRecordError::peer_alert:
        return "the TLS peer sent an error alert";
      case TlsRecordError::sequence_exhausted:
        return "TLS record sequence numbers exhausted";
      case TlsRecordError::internal_error:
        return "TLS key derivation failed";
    }
    return "unknown TLS record error";
  }
};
#pragma GCC diagnostic pop

constexpr std::uint8_t kTypeAlert = 21;
constexpr std::uint8_t kTypeHandshake = 22;
constexpr std::uint8_t kTypeApplicationData = 23;
constexpr std::uint8_t kHandshakeKeyUpdate = 24;

struct CipherFree {
  void operator()(EVP_CIPHER* p) const noexcept { EVP_CIPHER_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const noexcept { EVP_CIPHER_CTX_free(p); }
};
struct KdfFree {
  void operator()(EVP_KDF* p) const noexcept { EVP_KDF_free(p); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* p) const noexcept { EVP_KDF_CTX_free(p); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

// The AEAD of each suite, fetched once for the process.
const EVP_CIPHER* cipher_of(std::uint16_t suite) {
  static const std::array<std::unique_ptr<EVP_CIPHER, CipherFree>, 3> ciphers = {
      std::unique_ptr<EVP_CIPHER, CipherFree>(EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr)),
      std::unique_ptr<EVP_CIPHER, CipherFree>(EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr)),
      std::unique_ptr<EVP_CIPHER, CipherFree>(
          EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr))};
  switch (suite) {
    case TlsRecordLayer::kAes128GcmSha256:
      return ciphers[0].get();
    case TlsRecordLayer::kAes256GcmSha384:
      return ciphers[1].get();
    case TlsRecordLayer::kChaCha20Poly1305Sha256:
      return ciphers[2].get();
    default:
      return nullptr;
  }
}

// A cipher context per thread, suite and direction, made once with its cipher and then given a
// new key and nonce for each record: no per-connection cipher state. Null if OpenSSL cannot make
// one.
EVP_CIPHER_CTX* thread_context(std::uint16_t suite, bool encrypt) {
  thread_local std::array<CipherCtx, 6> contexts;
  const std::size_t index =
      static_cast<std::size_t>(suite - TlsRecordLayer::kAes128GcmSha256) * 2 + (encrypt ? 1 : 0);
  CipherCtx& slot = contexts.at(index);
  if (!slot) {
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    if (!ctx || EVP_CipherInit_ex2(ctx.get(), cipher_of(suite), nullptr, nullptr, encrypt ? 1 : 0,
                                   nullptr) != 1) {
      return nullptr;
    }
    slot = std::move(ctx);
  }
  return slot.get();
}

// HKDF-Expand-Label(secret, label, "", out.size()) of RFC 8446 section 7.1.
bool expand_label(std::size_t hash_len, ByteView secret, const char* label, std::uint8_t* out,
                  std::size_t out_len) {
  static const std::unique_ptr<EVP_KDF, KdfFree> hkdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!hkdf) return false;
  // HkdfLabel: uint16 length, opaque label<7..255> = "tls13 " + label, opaque context<0..255>.
  std::array<std::uint8_t, 2 + 1 + 255 + 1> info{};
  const std::size_t label_len = std::strlen(label);
  const std::string full = std::string("tls13 ") + label;
  if (full.size() > 255 || label_len == 0) return false;
  std::size_t i = 0;
  info[i++] = static_cast<std::uint8_t>(out_len >> 8);
  info[i++] = static_cast<std::uint8_t>(out_len);
  info[i++] = static_cast<std::uint8_t>(full.size());
  std::memcpy(info.data() + i, full.data(), full.size());
  i += full.size();
  info[i++] = 0;  // empty context

  std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(EVP_KDF_CTX_new(hkdf.get()));
  if (!ctx) return false;
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  char digest[] = "SHA256";
  char digest384[] = "SHA384";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, hash_len == 48 ? digest384 : digest,
                                       0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<std::uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), i),
      OSSL_PARAM_construct_end()};
  return EVP_KDF_derive(ctx.get(), out, out_len, params) == 1;
}

// Leaves no connection's key schedule in a thread's context: it is keyed with zeros after each
// record, so a connection's keys are gone from memory once its layer is destroyed.
void forget_key(EVP_CIPHER_CTX* ctx) {
  static const std::array<std::uint8_t, 32> kZero{};
  (void)EVP_CipherInit_ex2(ctx, nullptr, kZero.data(), nullptr, -1, nullptr);
}

// The per-record nonce (RFC 8446 section 5.3): the IV XOR the 64-bit sequence number, big-endian
// and left-padded to the IV's length.
std::array<std::uint8_t, 12> nonce_of(const crypto::Secret<12>& iv, std::uint64_t seq) {
  std::array<std::uint8_t, 12> nonce{};
  std::memcpy(nonce.data(), iv.data(), nonce.size());
  for (int i = 0; i < 8; ++i) {
    nonce[11 - i] ^= static_cast<std::uint8_t>(seq >> (8 * i));
  }
  return nonce;
}

}  // namespace

const boost::system::error_category& tls_record_category() noexcept {
  static const RecordCategory category;
  return category;
}

boost::system::error_code make_error_code(TlsRecordError e) noexcept {
  return {static_cast<int>(e), tls_record_category()};
}

std::optional<TlsRecordLayer> TlsRecordLayer::create(std::uint16_t suite, ByteView read_secret,
                                                     std::uint64_t read_seq, ByteView write_secret,
                                                     std::uint64_t write_seq) {
  TlsRecordLayer layer;
  layer.suite_ = suite;
  switch (suite) {
    case kAes128GcmSha256:
      layer.hash_len_ = 32;
      layer.key_len_ = 16;
      break;
    case kAes256GcmSha384:
      layer.hash_len_ = 48;
      layer.key_len_ = 32;
      break;
    case kChaCha20Poly1305Sha256:
      layer.hash_len_ = 32;
      layer.key_len_ = 32;
      break;
    default:
      return std::nullopt;
  }
  if (cipher_of(suite) == nullptr) return std::nullopt;
  if (read_secret.size() != layer.hash_len_ || write_secret.size() != layer.hash_len_) {
    return std::nullopt;
  }
  if (!layer.set_keys(layer.read_, read_secret) || !layer.set_keys(layer.write_, write_secret)) {
    return std::nullopt;
  }
  layer.read_.seq = read_seq;
  layer.write_.seq = write_seq;
  return layer;
}

// Derives into temporaries and changes `d` only once everything succeeded: a half-changed
// direction (a new key with the old IV, or the old key with its sequence reset) reuses nonces.
bool TlsRecordLayer::set_keys(Direction& d, ByteView secret) {
  crypto::Secret<48> copy(secret);  // `secret` may be d.secret itself
  crypto::Secret<32> key;
  crypto::Secret<12> iv;
  if (!expand_label(hash_len_, {copy.data(), hash_len_}, "key", key.data(), key_len_) ||
      !expand_label(hash_len_, {copy.data(), hash_len_}, "iv", iv.data(), iv.size())) {
    return false;
  }
  d.secret = std::move(copy);
  d.key = std::move(key);
  d.iv = std::move(iv);
  d.seq = 0;
  return true;
}

bool TlsRecordLayer::update(Direction& d) {
  crypto::Secret<48> next;
  if (!expand_label(hash_len_, {d.secret.data(), hash_len_}, "traffic upd", next.data(),
                    hash_len_)) {
    return false;
  }
  return set_keys(d, {next.data(), hash_len_});
}

std::size_t TlsRecordLayer::seal(std::uint8_t type, const std::uint8_t* in, std::size_t n,
                                 std::uint8_t* out) {
  if (broken_ || write_.seq == UINT64_MAX) {
    broken_ = true;
    return 0;
  }
  const std::size_t inner = n + 1;
  const std::size_t len = inner + kTagSize;
  out[0] = kTypeApplicationData;  // every protected record says application_data outside
  out[1] = 0x03;
  out[2] = 0x03;
  out[3] = static_cast<std::uint8_t>(len >> 8);
  out[4] = static_cast<std::uint8_t>(len);
  std::uint8_t* body = out + kHeaderSize;
  if (n != 0) std::memmove(body, in, n);
  body[n] = type;

  auto nonce = nonce_of(write_.iv, write_.seq);
  EVP_CIPHER_CTX* ctx = thread_context(suite_, true);
  int outl = 0;
  int finl = 0;
  const bool ok =
      ctx != nullptr &&
      EVP_CipherInit_ex2(ctx, nullptr, write_.key.data(), nonce.data(), 1, nullptr) == 1 &&
      EVP_CipherUpdate(ctx, nullptr, &outl, out, static_cast<int>(kHeaderSize)) == 1 &&
      EVP_CipherUpdate(ctx, body, &outl, body, static_cast<int>(inner)) == 1 &&
      EVP_CipherFinal_ex(ctx, body + outl, &finl) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kTagSize), body + inner) ==
          1;
  if (ctx != nullptr) forget_key(ctx);
  crypto::secure_wipe(nonce.data(), nonce.size());
  if (!ok) {
    broken_ = true;
    return 0;
  }
  ++write_.seq;
  return kHeaderSize + len;
}

std::size_t TlsRecordLayer::seal_data(const std::uint8_t* in, std::size_t n, std::uint8_t* out) {
  std::size_t written = 0;
  if (update_owed_ || write_.seq >= update_after_) {
    const std::uint8_t key_update[5] = {kHandshakeKeyUpdate, 0, 0, 1, 0};  // update_not_requested
    written = seal(kTypeHandshake, key_update, sizeof key_update, out);
    if (written == 0 || !update(write_)) {
      broken_ = true;  // the KeyUpdate record must not go out without the key change
      return 0;
    }
    update_owed_ = false;
  }
  const std::size_t data = seal(kTypeApplicationData, in, n, out + written);
  return data == 0 ? 0 : written + data;
}

std::size_t TlsRecordLayer::seal_alert(std::uint8_t description, std::uint8_t* out) {
  const std::uint8_t level = description == kCloseNotify || description == kUserCanceled ? 1 : 2;
  const std::uint8_t alert[2] = {level, description};
  return seal(kTypeAlert, alert, sizeof alert, out);
}

TlsRecordLayer::Opened TlsRecordLayer::fail(TlsRecordError e, int alert, std::size_t consumed) {
  final_ = Opened::failed;
  final_error_ = make_error_code(e);
  final_alert_ = alert;
  Opened r;
  r.kind = Opened::failed;
  r.consumed = consumed;
  r.error = final_error_;
  r.alert = alert;
  return r;
}

TlsRecordLayer::Opened TlsRecordLayer::open(std::uint8_t* in, std::size_t size) {
  if (final_ != Opened::incomplete) {
    Opened r;
    r.kind = final_;
    r.error = final_error_;
    r.alert = final_alert_;
    return r;
  }
  Opened r;
  if (size < kHeaderSize) return r;
  // After the handshake every record is protected, and says application_data outside; the
  // legacy version is ignored (RFC 8446 section 5.1).
  if (in[0] != kTypeApplicationData) {
    return fail(TlsRecordError::unexpected_message, kUnexpectedMessage, 0);
  }
  const std::size_t len = (std::size_t{in[3]} << 8) | in[4];
  if (len > kMaxCiphertext) return fail(TlsRecordError::record_overflow, kRecordOverflow, 0);
  if (size < kHeaderSize + len) return r;
  const std::size_t consumed = kHeaderSize + len;
  if (len < kTagSize) return fail(TlsRecordError::bad_record_mac, kBadRecordMac, consumed);
  // The inner plaintext, padding included, is at most 2^14 + 1 bytes (section 5.4).
  if (len - kTagSize > kMaxPlaintext + 1) {
    return fail(TlsRecordError::record_overflow, kRecordOverflow, consumed);
  }
  if (read_.seq == UINT64_MAX) {
    return fail(TlsRecordError::sequence_exhausted, kInternalError, consumed);
  }

  std::uint8_t* body = in + kHeaderSize;
  const std::size_t clen = len - kTagSize;
  auto nonce = nonce_of(read_.iv, read_.seq);
  EVP_CIPHER_CTX* ctx = thread_context(suite_, false);
  if (ctx == nullptr) return fail(TlsRecordError::internal_error, kInternalError, consumed);
  int outl = 0;
  int finl = 0;
  const bool ok =
      EVP_CipherInit_ex2(ctx, nullptr, read_.key.data(), nonce.data(), 0, nullptr) == 1 &&
      EVP_CipherUpdate(ctx, nullptr, &outl, in, static_cast<int>(kHeaderSize)) == 1 &&
      EVP_CipherUpdate(ctx, body, &outl, body, static_cast<int>(clen)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kTagSize), body + clen) ==
          1 &&
      EVP_CipherFinal_ex(ctx, body + outl, &finl) == 1;
  forget_key(ctx);
  crypto::secure_wipe(nonce.data(), nonce.size());
  if (!ok) return fail(TlsRecordError::bad_record_mac, kBadRecordMac, consumed);
  ++read_.seq;

  // TLSInnerPlaintext: content, the real content type, then zero padding.
  std::size_t end = clen;
  while (end > 0 && body[end - 1] == 0) --end;
  if (end == 0) return fail(TlsRecordError::unexpected_message, kUnexpectedMessage, consumed);
  const std::uint8_t type = body[end - 1];
  const std::size_t n = end - 1;
  if (n > kMaxPlaintext) return fail(TlsRecordError::record_overflow, kRecordOverflow, consumed);
  // A handshake message may span records, but nothing may come between its fragments.
  if (hs_len_ != 0 && type != kTypeHandshake) {
    return fail(TlsRecordError::unexpected_message, kUnexpectedMessage, consumed);
  }

  r.consumed = consumed;
  switch (type) {
    case kTypeApplicationData:
      r.kind = Opened::data;
      r.bytes = body;
      r.size = n;
      return r;
    case kTypeAlert:
      // One alert per record, never fragmented (RFC 8446 section 5.1).
      if (n != 2) return fail(TlsRecordError::decode_error, kDecodeError, consumed);
      if (body[1] == kCloseNotify) {
        final_ = Opened::closed;
        r.kind = Opened::closed;
        return r;
      }
      if (body[1] == kUserCanceled) {  // a close_notify should follow
        r.kind = Opened::control;
        return r;
      }
      // Any other alert is an error whatever its level (section 6.2); none is sent back.
      return fail(TlsRecordError::peer_alert, -1, consumed);
    case kTypeHandshake:
      if (n == 0) return fail(TlsRecordError::unexpected_message, kUnexpectedMessage, consumed);
      return handshake(body, n, consumed);
    default:
      return fail(TlsRecordError::unexpected_message, kUnexpectedMessage, consumed);
  }
}

// After the handshake a client may send only KeyUpdate (post-handshake authentication is never
// requested): type 24, length 1, one byte of request_update.
TlsRecordLayer::Opened TlsRecordLayer::handshake(std::uint8_t* p, std::size_t n,
                                                 std::size_t consumed) {
  for (std::size_t k = 0; k < n; ++k) {
    if (hs_len_ < sizeof hs_buf_) {
      hs_buf_[hs_len_++] = p[k];
      if (hs_buf_[0] != kHandshakeKeyUpdate) {
        return fail(TlsRecordError::unexpected_message, kUnexpectedMessage, consumed);
      }
      if (hs_len_ == sizeof hs_buf_ && (hs_buf_[1] != 0 || hs_buf_[2] != 0 || hs_buf_[3] != 1)) {
        return fail(TlsRecordError::decode_error, kDecodeError, consumed);
      }
      continue;
    }
    const std::uint8_t request = p[k];
    if (request > 1) return fail(TlsRecordError::illegal_parameter, kIllegalParameter, consumed);
    // The next record is under the new key, so a KeyUpdate must end its record (section 5.1).
    if (k + 1 != n) return fail(TlsRecordError::unexpected_message, kUnexpectedMessage, consumed);
    hs_len_ = 0;
    if (!update(read_)) return fail(TlsRecordError::internal_error, kInternalError, consumed);
    if (request == 1) update_owed_ = true;
  }
  Opened r;
  r.kind = Opened::control;
  r.consumed = consumed;
  return r;
}

}  // namespace sotto::net::detail
