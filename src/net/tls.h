// TLS material for the server: a certificate and key loaded from files, or a self-signed one
// generated on first start and kept under the data directory (DESIGN.md section 5). Clients pin
// the SHA-256 fingerprint of the certificate (hex, lower case) on first use or from config.
#pragma once

#include <filesystem>
#include <string>

#include <tl/expected.hpp>

namespace sotto::net {

enum class TlsError { io, bad_certificate, generation_failed };

struct TlsIdentity {
  std::string certificate_pem;
  std::string private_key_pem;   // secret: the server's TLS key, never logged
  std::string fingerprint;       // SHA-256 of the DER certificate, 64 hex digits
};

// Loads DIR/tls/cert.pem and DIR/tls/key.pem, or creates them (key file mode 0600) when absent.
[[nodiscard]] tl::expected<TlsIdentity, TlsError> load_or_create_identity(
    const std::filesystem::path& data_dir, const std::string& common_name = "sotto-server");
// Loads an operator-provided certificate chain and key.
[[nodiscard]] tl::expected<TlsIdentity, TlsError> load_identity(const std::filesystem::path& cert,
                                                                const std::filesystem::path& key);
// Fingerprint of the first certificate in a PEM string.
[[nodiscard]] tl::expected<std::string, TlsError> fingerprint_of_pem(const std::string& pem);

}  // namespace sotto::net
