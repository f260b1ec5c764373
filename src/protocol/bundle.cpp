#include "protocol/bundle.h"

#include "keys.pb.h"
#include "protocol/codec_util.h"
#include "protocol/limits.h"

namespace sotto::protocol {

using detail::pb_view;
using detail::to_pb_bytes;

tl::expected<void, Error> PreKeyBundle::verify_signature() const {
  const auto spk = signed_pre_key.serialize();
  return identity_key.verify(spk, signed_pre_key_signature);
}

Bytes PreKeyBundle::encode() const {
  sotto::wire::PreKeyBundle pb;
  pb.set_registration_id(registration_id.value);
  pb.set_device_id(device_id.value);
  if (pre_key_id && pre_key) {
    pb.set_pre_key_id(pre_key_id->value);
    pb.set_pre_key(to_pb_bytes(pre_key->serialize()));
  }
  pb.set_signed_pre_key_id(signed_pre_key_id.value);
  pb.set_signed_pre_key(to_pb_bytes(signed_pre_key.serialize()));
  pb.set_signed_pre_key_signature(to_pb_bytes(signed_pre_key_signature));
  pb.set_identity_key(to_pb_bytes(identity_key.serialize()));
  Bytes out(pb.ByteSizeLong());
  pb.SerializeWithCachedSizesToArray(out.data());
  return out;
}

tl::expected<PreKeyBundle, Error> PreKeyBundle::decode(ByteView bytes) {
  if (bytes.size() > kMaxBundleBytes) return tl::unexpected(Error::too_large);
  sotto::wire::PreKeyBundle pb;
  if (!detail::parse_strict(pb, bytes)) return tl::unexpected(Error::malformed);
  if (!pb.has_registration_id() || !pb.has_device_id() || !pb.has_signed_pre_key_id() ||
      !pb.has_signed_pre_key() || !pb.has_signed_pre_key_signature() || !pb.has_identity_key() ||
      pb.has_pre_key_id() != pb.has_pre_key() ||
      pb.signed_pre_key_signature().size() != crypto::kCurve25519SignatureSize) {
    return tl::unexpected(Error::malformed);
  }
  auto spk = PublicKey::decode(pb_view(pb.signed_pre_key()));
  auto ik = PublicKey::decode(pb_view(pb.identity_key()));
  if (!spk || !ik) return tl::unexpected(Error::invalid_key);
  PreKeyBundle b;
  b.registration_id = RegistrationId(pb.registration_id());
  b.device_id = DeviceId(pb.device_id());
  if (pb.has_pre_key_id()) {
    auto pk = PublicKey::decode(pb_view(pb.pre_key()));
    if (!pk) return tl::unexpected(Error::invalid_key);
    b.pre_key_id = PreKeyId(pb.pre_key_id());
    b.pre_key = *pk;
  }
  b.signed_pre_key_id = SignedPreKeyId(pb.signed_pre_key_id());
  b.signed_pre_key = *spk;
  std::copy(pb.signed_pre_key_signature().begin(), pb.signed_pre_key_signature().end(),
            b.signed_pre_key_signature.begin());
  b.identity_key = *ik;
  return b;
}

}  // namespace sotto::protocol
