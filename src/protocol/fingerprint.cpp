#include "protocol/fingerprint.h"

#include <array>
#include <cstdio>

#include "crypto/hash.h"
#include "protocol/codec_util.h"
#include "signal.pb.h"

namespace sotto::protocol {
namespace {

namespace pb = sotto::wire::signal;
constexpr std::size_t kMaxScannableBytes = 1024;
constexpr int kMaxIterations = 1'000'000;

crypto::Sha512Digest iterate(std::string_view stable_id, const PublicKey& key, int iterations) {
  const auto ik = key.serialize();
  crypto::Sha512 h;
  static const std::uint8_t kVersion[2] = {0, 0};
  h.update(kVersion);
  h.update(ik);
  h.update(as_bytes(stable_id));
  h.update(ik);
  crypto::Sha512Digest digest = h.finish();
  for (int i = 1; i < iterations; ++i) {
    h.update(digest);
    h.update(ik);
    digest = h.finish();
  }
  return digest;
}

std::string display_half(const crypto::Sha512Digest& hash) {
  std::string out;
  out.reserve(30);
  for (std::size_t i = 0; i < 30; i += 5) {
    std::uint64_t chunk = 0;
    for (std::size_t j = 0; j < 5; ++j) chunk = (chunk << 8) | hash[i + j];
    char digits[8];
    std::snprintf(digits, sizeof digits, "%05u", static_cast<unsigned>(chunk % 100000));
    out += digits;
  }
  return out;
}

void fill_logical(pb::LogicalFingerprint* out, std::uint32_t version, std::string_view id,
                  const PublicKey& key, const crypto::Sha512Digest& hash) {
  if (version == 0) {
    out->set_content(detail::to_pb_bytes(key.serialize()));
    out->set_identifier(std::string(id));
  } else {
    out->set_content(detail::to_pb_bytes(ByteView(hash.data(), 32)));
  }
}

}  // namespace

tl::expected<Fingerprint, Error> compute_fingerprint(std::string_view local_id,
                                                     const PublicKey& local_key,
                                                     std::string_view remote_id,
                                                     const PublicKey& remote_key, int iterations,
                                                     std::uint32_t scannable_version) {
  if (iterations < 1 || iterations > kMaxIterations || scannable_version > 1) {
    return tl::unexpected(Error::malformed);
  }
  const auto local_hash = iterate(local_id, local_key, iterations);
  const auto remote_hash = iterate(remote_id, remote_key, iterations);
  const std::string local_digits = display_half(local_hash);
  const std::string remote_digits = display_half(remote_hash);

  Fingerprint fp;
  fp.displayable = local_digits < remote_digits ? local_digits + remote_digits
                                                : remote_digits + local_digits;
  pb::CombinedFingerprints combined;
  combined.set_version(scannable_version);
  fill_logical(combined.mutable_local_fingerprint(), scannable_version, local_id, local_key,
               local_hash);
  fill_logical(combined.mutable_remote_fingerprint(), scannable_version, remote_id, remote_key,
               remote_hash);
  fp.scannable.resize(combined.ByteSizeLong());
  combined.SerializeWithCachedSizesToArray(fp.scannable.data());
  return fp;
}

tl::expected<bool, Error> compare_scannable(ByteView ours, ByteView theirs) {
  if (ours.size() > kMaxScannableBytes || theirs.size() > kMaxScannableBytes) {
    return tl::unexpected(Error::too_large);
  }
  pb::CombinedFingerprints a;
  pb::CombinedFingerprints b;
  if (!detail::parse_strict(a, ours) || !detail::parse_strict(b, theirs) || !a.has_version() ||
      !b.has_version() || !a.has_local_fingerprint() || !a.has_remote_fingerprint() ||
      !b.has_local_fingerprint() || !b.has_remote_fingerprint()) {
    return tl::unexpected(Error::malformed);
  }
  if (a.version() != b.version()) return tl::unexpected(Error::unsupported_version);
  const auto same = [](const pb::LogicalFingerprint& x, const pb::LogicalFingerprint& y) {
    return crypto::constant_time_equal(detail::pb_view(x.content()), detail::pb_view(y.content())) &&
           x.identifier() == y.identifier();
  };
  return same(a.local_fingerprint(), b.remote_fingerprint()) &&
         same(a.remote_fingerprint(), b.local_fingerprint());
}

}  // namespace sotto::protocol
