// TLS material for the server: a certificate and key loaded from files, or a self-signed one
// generated on first start and kept under the data directory (docs/architecture.md section 5), and
// the next key an operator rotates to (`sotto-server key`). Clients pin the SHA-256 of the server
// key's DER SubjectPublicKeyInfo (hex, lower case), so that a renewed certificate for the same key
// is still the pinned server; older clients pinned the certificate's own SHA-256, which still
// matches (net/ws_client.h). Functions here are thread-safe; the rotation ones are for one
// operator command at a time on a data directory.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <tl/expected.hpp>

#include "crypto/bytes.h"

namespace sotto::net {

enum class TlsError {
  io,
  bad_certificate,
  generation_failed,
  already_exists,  // a next key is waiting already
  not_found,       // no next key to activate
};

struct TlsIdentity {
  std::string certificate_pem;
  std::string private_key_pem;  // secret: the server's TLS key, never logged
  std::string fingerprint;      // SHA-256 of the DER certificate, 64 hex digits (legacy pins)
  std::string key_fingerprint;  // SHA-256 of public_key, 64 hex digits: what clients pin
  Bytes public_key;             // the certificate's DER SubjectPublicKeyInfo
};

// Loads DIR/tls/cert.pem and DIR/tls/key.pem, or creates them (key file mode 0600) when absent.
[[nodiscard]] tl::expected<TlsIdentity, TlsError> load_or_create_identity(
    const std::filesystem::path& data_dir, const std::string& common_name = "sotto-server");
// Loads an operator-provided certificate chain and key.
[[nodiscard]] tl::expected<TlsIdentity, TlsError> load_identity(const std::filesystem::path& cert,
                                                                const std::filesystem::path& key);
// Fingerprint of the first certificate in a PEM string (SHA-256 of the certificate).
[[nodiscard]] tl::expected<std::string, TlsError> fingerprint_of_pem(const std::string& pem);
// SHA-256 of a DER SubjectPublicKeyInfo, 64 lower-case hex digits: a key fingerprint.
[[nodiscard]] std::string key_fingerprint(ByteView public_key_der);
// The DER SubjectPublicKeyInfo of a PEM file holding a certificate (its first), a public key or a
// private key (what the `tls_next_key` option names). bad_certificate when it holds none.
[[nodiscard]] tl::expected<Bytes, TlsError> load_public_key(const std::filesystem::path& pem_file);

// --- rotation of the data directory's key (sotto-server key rotate | activate | show) ---------
//
// DIR/tls/next-key.pem and next-cert.pem hold the next key and a self-signed certificate for it.
// While they exist the server announces the next key to every device (signed by the current
// one); activating makes them the current pair and keeps the old one as previous-key.pem and
// previous-cert.pem.

// The next identity, or nullopt when there is none (no next-cert.pem).
[[nodiscard]] tl::expected<std::optional<TlsIdentity>, TlsError> load_next_identity(
    const std::filesystem::path& data_dir);
// Generates the next key (P-256) and its certificate, written as load_or_create_identity writes
// the current ones. already_exists when a next key is waiting.
[[nodiscard]] tl::expected<TlsIdentity, TlsError> create_next_identity(
    const std::filesystem::path& data_dir, const std::string& common_name = "sotto-server");
// Makes the next identity the current one and returns it; not_found when there is none. Each
// file is replaced atomically; an activation interrupted between the key and the certificate
// leaves a pair that does not load (the server refuses to start, never makes a new key) and is
// finished by running it again.
[[nodiscard]] tl::expected<TlsIdentity, TlsError> activate_next_identity(
    const std::filesystem::path& data_dir);

}  // namespace sotto::net
