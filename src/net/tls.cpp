#include "net/tls.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <stdexcept>
#include <system_error>

#include "crypto/bytes.h"
#include "crypto/encoding.h"
#include "crypto/hash.h"
#include "net/handover/record_handover.h"
#include "net/tls_internal.h"

namespace sotto::net {
namespace {

namespace fs = std::filesystem;

constexpr int kValidityDays = 3650;         // ten years: a pinned certificate should not expire
constexpr long kBackdateSeconds = 60 * 60;  // tolerate clients whose clock is a little behind
constexpr std::size_t kMaxCommonName = 64;  // X.520 ub-common-name
constexpr std::size_t kSerialBytes = 16;
constexpr const char* kSubjectAltName = "IP:127.0.0.1,DNS:localhost";
constexpr std::size_t kMaxPemFileBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* p) const noexcept { BIO_free(p); }
};
struct X509Free {
  void operator()(X509* p) const noexcept { X509_free(p); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
};
struct ExtFree {
  void operator()(X509_EXTENSION* p) const noexcept { X509_EXTENSION_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const noexcept { BN_free(p); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, ExtFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

tl::unexpected<TlsError> fail(TlsError e) {
  ERR_clear_error();  // leave no stale entries for the next caller on this thread
  return tl::unexpected(e);
}

// A read-only memory BIO over `text` (which must outlive it).
BioPtr memory_bio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<std::size_t>(len));
}

// Refuses to prompt on a terminal for the passphrase of an encrypted key: such a key fails to
// load instead.
int no_passphrase(char*, int, int, void*) {
  return 0;
}

X509Ptr parse_first_certificate(const std::string& pem) {
  if (pem.size() > kMaxPemFileBytes) return nullptr;
  BioPtr bio = memory_bio(pem);
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr));
}

PkeyPtr parse_private_key(const std::string& pem) {
  if (pem.size() > kMaxPemFileBytes) return nullptr;
  BioPtr bio = memory_bio(pem);
  if (!bio) return nullptr;
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
}

tl::expected<std::string, TlsError> read_file(const fs::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return fail(TlsError::io);
  std::string out;
  char chunk[4096];
  for (;;) {
    const std::size_t n = std::fread(chunk, 1, sizeof chunk, f);
    out.append(chunk, n);
    if (n < sizeof chunk || out.size() > kMaxPemFileBytes) break;
  }
  const bool bad = std::ferror(f) != 0 || out.size() > kMaxPemFileBytes;
  OPENSSL_cleanse(chunk, sizeof chunk);
  std::fclose(f);
  if (bad) {
    OPENSSL_cleanse(out.data(), out.size());
    return fail(TlsError::io);
  }
  return out;
}

// Writes `data` to `path` with exactly `mode` through a temporary file and a rename, so a crash
// leaves either the old file or the complete new one.
bool write_file_atomically(const fs::path& path, const std::string& data, mode_t mode) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return false;
  bool ok = ::fchmod(fd, mode) == 0;  // the file may have existed with looser permissions
  std::size_t done = 0;
  while (ok && done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (ok) ok = std::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) ::unlink(tmp.c_str());
  return ok;
}

void sync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

bool add_extension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

PkeyPtr generate_p256_key() {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_group_name(ctx.get(), "P-256") != 1) {
    return nullptr;
  }
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_generate(ctx.get(), &key) != 1) return nullptr;
  return PkeyPtr(key);
}

bool set_random_serial(X509* cert) {
  unsigned char serial[kSerialBytes];
  if (RAND_bytes(serial, sizeof serial) != 1) return false;
  serial[0] = static_cast<unsigned char>((serial[0] & 0x7f) | 0x40);  // positive, full length
  BnPtr bn(BN_bin2bn(serial, sizeof serial, nullptr));
  return bn && BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) != nullptr;
}

// Sets the identity's fingerprints and public key from its certificate; false if it cannot be
// encoded.
bool fill_fingerprints(TlsIdentity& id, X509* certificate) {
  id.fingerprint = detail::fingerprint_of(certificate);
  id.public_key = detail::public_key_of(certificate);
  if (id.fingerprint.empty() || id.public_key.empty()) return false;
  id.key_fingerprint = key_fingerprint(id.public_key);
  return true;
}

// A self-signed X.509 v3 server certificate over a fresh P-256 key (the most widely supported
// TLS 1.3 signature algorithm), valid for ten years.
tl::expected<TlsIdentity, TlsError> generate_identity(const std::string& common_name) {
  if (common_name.empty() || common_name.size() > kMaxCommonName) {
    return fail(TlsError::generation_failed);
  }
  PkeyPtr key = generate_p256_key();
  X509Ptr cert(X509_new());
  if (!key || !cert) return fail(TlsError::generation_failed);

  X509_NAME* name = X509_get_subject_name(cert.get());
  X509V3_CTX ext_ctx;
  X509V3_set_ctx_nodb(&ext_ctx);
  bool ok =
      X509_set_version(cert.get(), X509_VERSION_3) == 1 && set_random_serial(cert.get()) &&
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) != nullptr &&
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), kValidityDays, 0, nullptr) != nullptr &&
      X509_set_pubkey(cert.get(), key.get()) == 1 && name != nullptr &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) == 1 &&
      X509_set_issuer_name(cert.get(), name) == 1;
  if (ok) {
    X509V3_set_ctx(&ext_ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
    ok = add_extension(cert.get(), &ext_ctx, NID_basic_constraints, "critical,CA:FALSE") &&
         add_extension(cert.get(), &ext_ctx, NID_key_usage, "critical,digitalSignature") &&
         add_extension(cert.get(), &ext_ctx, NID_ext_key_usage, "serverAuth") &&
         add_extension(cert.get(), &ext_ctx, NID_subject_key_identifier, "hash") &&
         add_extension(cert.get(), &ext_ctx, NID_subject_alt_name, kSubjectAltName) &&
         X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  }
  if (!ok) return fail(TlsError::generation_failed);

  BioPtr cert_bio(BIO_new(BIO_s_mem()));
  BioPtr key_bio(BIO_new(BIO_s_secmem()));  // the secure heap when the process set one up
  if (!cert_bio || !key_bio || PEM_write_bio_X509(cert_bio.get(), cert.get()) != 1 ||
      PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
          1) {
    return fail(TlsError::generation_failed);
  }
  TlsIdentity id;
  id.certificate_pem = bio_contents(cert_bio.get());
  id.private_key_pem = bio_contents(key_bio.get());
  if (id.certificate_pem.empty() || id.private_key_pem.empty() ||
      !fill_fingerprints(id, cert.get())) {
    return fail(TlsError::generation_failed);
  }
  return id;
}

}  // namespace

namespace detail {

void delay_acks(int fd) noexcept {
#ifdef TCP_QUICKACK
  const int off = 0;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &off, sizeof off);
#else
  (void)fd;
#endif
}

std::string fingerprint_of(X509* certificate) {
  if (certificate == nullptr) return {};
  const int len = i2d_X509(certificate, nullptr);
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_X509(certificate, &p) != len) return {};
  const crypto::Sha256Digest digest = crypto::sha256({ByteView(der)});
  return crypto::to_hex(digest);
}

Bytes public_key_of(X509* certificate) {
  if (certificate == nullptr) return {};
  // The certificate's own encoding of its key, byte for byte: what a client sees and hashes.
  X509_PUBKEY* key = X509_get_X509_PUBKEY(certificate);
  const int len = key != nullptr ? i2d_X509_PUBKEY(key, nullptr) : 0;
  if (len <= 0) return {};
  Bytes der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_X509_PUBKEY(key, &p) != len) return {};
  return der;
}

std::string key_fingerprint_of(X509* certificate) {
  const Bytes der = public_key_of(certificate);
  return der.empty() ? std::string() : key_fingerprint(der);
}

std::string normalize_fingerprint(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == ':') continue;
    out.push_back((c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c);
  }
  return out;
}

SslCtxPtr make_server_context(const TlsIdentity& identity, bool record_handover) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) throw std::runtime_error("TLS: cannot create a server context");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  // Stateless tickets (no server-side cache); one per connection is enough for a client that
  // reconnects with the newest.
  SSL_CTX_set_num_tickets(ctx.get(), 1);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  // Idle connections give their record buffers back; writes may be partial and retried from a
  // moved buffer (the transport's write path relies on both). The chain sent is the one the
  // certificate file holds: without NO_AUTO_CHAIN, OpenSSL would also try to build one from the
  // context's certificate store on every full handshake (an X509_verify_cert of the leaf
  // against a store that is always empty here).
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_NO_AUTO_CHAIN);
  // Read whatever the socket holds, not one record header and then its body: one recv for many
  // small records instead of two per record (syscalls dominate the per-message cost here).
  // Connections that hand their records over turn it off during the handshake.
  SSL_CTX_set_read_ahead(ctx.get(), 1);
  if (record_handover) handover::enable(ctx.get());

  BioPtr chain = memory_bio(identity.certificate_pem);
  X509Ptr leaf(chain ? PEM_read_bio_X509(chain.get(), nullptr, no_passphrase, nullptr) : nullptr);
  bool ok = leaf && SSL_CTX_use_certificate(ctx.get(), leaf.get()) == 1;
  while (ok) {
    X509* extra = PEM_read_bio_X509(chain.get(), nullptr, no_passphrase, nullptr);
    if (extra == nullptr) break;  // end of the chain
    if (SSL_CTX_add0_chain_cert(ctx.get(), extra) != 1) {
      X509_free(extra);
      ok = false;
    }
  }
  ERR_clear_error();  // the chain loop always ends on a "no start line" entry
  PkeyPtr key = ok ? parse_private_key(identity.private_key_pem) : nullptr;
  ok = ok && key && SSL_CTX_use_PrivateKey(ctx.get(), key.get()) == 1 &&
       SSL_CTX_check_private_key(ctx.get()) == 1;
  ERR_clear_error();
  if (!ok) throw std::runtime_error("TLS: the certificate or key is unusable");
  return ctx;
}

namespace {

int session_sink_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// OpenSSL's new-session callback: 1 when the slot took the reference.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* sink = static_cast<SessionSink*>(SSL_get_ex_data(ssl, session_sink_index()));
  if (sink == nullptr || !sink->pinned || !sink->slot) return 0;
  sink->slot->impl().put(session);
  return 1;
}

}  // namespace

void attach_session_sink(SSL* ssl, SessionSink* sink) {
  SSL_set_ex_data(ssl, session_sink_index(), sink);
}

SSL_CTX* client_context() {
  static const SslCtxPtr ctx = [] {
    SslCtxPtr c(SSL_CTX_new(TLS_client_method()));
    if (!c) throw std::runtime_error("TLS: cannot create a client context");
    SSL_CTX_set_min_proto_version(c.get(), TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(c.get(), TLS1_3_VERSION);
    // Sessions are kept by the caller's TlsSessionSlot, never in OpenSSL's cache.
    SSL_CTX_set_session_cache_mode(c.get(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c.get(), on_new_session);
    SSL_CTX_set_verify(c.get(), SSL_VERIFY_NONE, nullptr);  // pinned by fingerprint instead
    SSL_CTX_set_mode(c.get(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(c.get(), 1);
    return c;
  }();
  return ctx.get();
}

}  // namespace detail

tl::expected<std::string, TlsError> fingerprint_of_pem(const std::string& pem) {
  X509Ptr cert = parse_first_certificate(pem);
  if (!cert) return fail(TlsError::bad_certificate);
  std::string fp = detail::fingerprint_of(cert.get());
  if (fp.empty()) return fail(TlsError::bad_certificate);
  return fp;
}

std::string key_fingerprint(ByteView public_key_der) {
  return crypto::to_hex(crypto::sha256({public_key_der}));
}

tl::expected<Bytes, TlsError> load_public_key(const fs::path& pem_file) {
  auto pem = read_file(pem_file);
  if (!pem) return tl::unexpected(pem.error());
  Bytes der;
  if (X509Ptr cert = parse_first_certificate(*pem)) {
    der = detail::public_key_of(cert.get());
  } else {
    PkeyPtr key;
    if (BioPtr bio = memory_bio(*pem)) {
      key.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, no_passphrase, nullptr));
    }
    if (!key) key = parse_private_key(*pem);
    const int len = key ? i2d_PUBKEY(key.get(), nullptr) : 0;
    if (len > 0) {
      der.resize(static_cast<std::size_t>(len));
      unsigned char* p = der.data();
      if (i2d_PUBKEY(key.get(), &p) != len) der.clear();
    }
  }
  OPENSSL_cleanse(pem->data(), pem->size());  // it may have held a private key
  if (der.empty()) return fail(TlsError::bad_certificate);
  ERR_clear_error();
  return der;
}

tl::expected<TlsIdentity, TlsError> load_identity(const fs::path& cert, const fs::path& key) {
  auto cert_pem = read_file(cert);
  if (!cert_pem) return tl::unexpected(cert_pem.error());
  auto key_pem = read_file(key);
  if (!key_pem) return tl::unexpected(key_pem.error());

  X509Ptr leaf = parse_first_certificate(*cert_pem);
  PkeyPtr pkey = parse_private_key(*key_pem);
  if (!leaf || !pkey || X509_check_private_key(leaf.get(), pkey.get()) != 1) {
    OPENSSL_cleanse(key_pem->data(), key_pem->size());
    return fail(TlsError::bad_certificate);
  }
  TlsIdentity id;
  if (!fill_fingerprints(id, leaf.get())) {
    OPENSSL_cleanse(key_pem->data(), key_pem->size());
    return fail(TlsError::bad_certificate);
  }
  id.certificate_pem = std::move(*cert_pem);
  id.private_key_pem = std::move(*key_pem);
  return id;
}

tl::expected<TlsIdentity, TlsError> load_or_create_identity(const fs::path& data_dir,
                                                            const std::string& common_name) {
  const fs::path dir = data_dir / "tls";
  const fs::path cert_path = dir / "cert.pem";
  const fs::path key_path = dir / "key.pem";

  std::error_code ec;
  if (fs::exists(cert_path, ec)) {
    // A certificate that clients may have pinned: never replace it behind the operator's back,
    // even when its key has gone missing.
    return load_identity(cert_path, key_path);
  }
  if (ec) return fail(TlsError::io);

  fs::create_directories(dir, ec);
  if (ec) return fail(TlsError::io);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return fail(TlsError::io);

  auto id = generate_identity(common_name);
  if (!id) return id;
  // Key first: a crash between the two renames leaves a key without a certificate, which the
  // next start simply regenerates (no certificate was ever shown for that key).
  if (!write_file_atomically(key_path, id->private_key_pem, 0600) ||
      !write_file_atomically(cert_path, id->certificate_pem, 0644)) {
    return fail(TlsError::io);
  }
  sync_directory(dir);
  return id;
}

namespace {

struct TlsPaths {
  explicit TlsPaths(const fs::path& data_dir)
      : dir(data_dir / "tls"),
        cert(dir / "cert.pem"),
        key(dir / "key.pem"),
        next_cert(dir / "next-cert.pem"),
        next_key(dir / "next-key.pem"),
        previous_cert(dir / "previous-cert.pem"),
        previous_key(dir / "previous-key.pem") {}
  fs::path dir, cert, key, next_cert, next_key, previous_cert, previous_key;
};

// Keys first: a crash between the two leaves a key without its certificate, which is never
// shown to anyone.
bool write_pair(const fs::path& key_path, const std::string& key_pem, const fs::path& cert_path,
                const std::string& cert_pem) {
  return write_file_atomically(key_path, key_pem, 0600) &&
         write_file_atomically(cert_path, cert_pem, 0644);
}

}  // namespace

tl::expected<std::optional<TlsIdentity>, TlsError> load_next_identity(const fs::path& data_dir) {
  const TlsPaths paths(data_dir);
  std::error_code ec;
  // The certificate names the pair: a key alone is what an interrupted `key rotate` left.
  if (!fs::exists(paths.next_cert, ec)) {
    if (ec) return fail(TlsError::io);
    return std::optional<TlsIdentity>();
  }
  auto next = load_identity(paths.next_cert, paths.next_key);
  if (!next) return tl::unexpected(next.error());
  return std::optional<TlsIdentity>(std::move(*next));
}

tl::expected<TlsIdentity, TlsError> create_next_identity(const fs::path& data_dir,
                                                         const std::string& common_name) {
  const TlsPaths paths(data_dir);
  std::error_code ec;
  if (fs::exists(paths.next_cert, ec)) return fail(TlsError::already_exists);
  if (ec) return fail(TlsError::io);
  fs::create_directories(paths.dir, ec);
  if (ec) return fail(TlsError::io);
  fs::permissions(paths.dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec) return fail(TlsError::io);
  auto id = generate_identity(common_name);
  if (!id) return id;
  if (!write_pair(paths.next_key, id->private_key_pem, paths.next_cert, id->certificate_pem)) {
    return fail(TlsError::io);
  }
  sync_directory(paths.dir);
  return id;
}

tl::expected<TlsIdentity, TlsError> activate_next_identity(const fs::path& data_dir) {
  const TlsPaths paths(data_dir);
  auto next = load_next_identity(data_dir);
  if (!next) return tl::unexpected(next.error());
  if (!*next) return fail(TlsError::not_found);
  TlsIdentity& incoming = **next;

  auto current = load_identity(paths.cert, paths.key);
  const bool done_already = current && current->certificate_pem == incoming.certificate_pem;
  if (!done_already) {
    if (current) {
      if (!write_pair(paths.previous_key, current->private_key_pem, paths.previous_cert,
                      current->certificate_pem)) {
        return fail(TlsError::io);
      }
    } else {
      // Not a pair: usable only if an earlier activation stopped between key.pem and cert.pem
      // (it kept the previous pair already). Anything else is for the operator to look at.
      auto key_pem = read_file(paths.key);
      const bool interrupted = key_pem && *key_pem == incoming.private_key_pem;
      if (key_pem) OPENSSL_cleanse(key_pem->data(), key_pem->size());
      if (!interrupted) return tl::unexpected(current.error());
    }
    if (!write_pair(paths.key, incoming.private_key_pem, paths.cert, incoming.certificate_pem)) {
      return fail(TlsError::io);
    }
  }
  std::error_code ec;
  fs::remove(paths.next_cert, ec);  // the certificate first: without it the key is ignored
  if (ec) return fail(TlsError::io);
  fs::remove(paths.next_key, ec);
  if (ec) return fail(TlsError::io);
  sync_directory(paths.dir);
  return std::move(incoming);
}

}  // namespace sotto::net
