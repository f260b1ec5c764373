#include "net/device_authorization.h"

#include "crypto/base64.h"

namespace sotto::net {
namespace {
constexpr std::string_view kScheme = "SottoDevice ";
}  // namespace

std::string device_authorization(ByteView proof) {
  return std::string(kScheme) + crypto::base64url_encode(proof);
}

std::optional<Bytes> parse_device_authorization(std::string_view header,
                                                std::size_t max_proof_bytes) {
  if (!header.starts_with(kScheme)) return std::nullopt;
  return crypto::base64url_decode(header.substr(kScheme.size()), max_proof_bytes);
}

}  // namespace sotto::net
