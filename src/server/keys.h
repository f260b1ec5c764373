// The keys service (service.proto UploadKeysRequest, KeyCountRequest, FetchBundlesRequest,
// IdentityKeyRequest, the KeysLow push): each device's signed prekey and one-time prekeys, the
// bundles other devices start sessions from, and an account's identity key. The checks of
// uploaded keys are here too, shared with the accounts service (a new device brings its keys).
// Thread-safe; owned by the Server.
#pragma once

#include <string>
#include <vector>

#include "server/context.h"
#include "server/service.h"

namespace sotto::server {

// A Curve25519 public key as the Signal wire carries it: 33 bytes, the first 0x05.
bool is_public_key(const std::string& k);
// The identity key's curve25519 signature over a serialized public key (prekeys) or a context
// string (device binding).
bool identity_signed(const std::string& identity_key, ByteView message, const std::string& sig);
// Validates the keys of an upload or a new device. Returns an error text or empty.
std::string check_keys(const wire::service::DeviceKeys& keys, const std::string& identity_key,
                       bool require_signed);
store::SignedPreKeyRecord signed_record(const wire::service::SignedPreKey& k);
std::vector<store::OneTimePreKeyRecord> pre_key_records(const wire::service::DeviceKeys& keys);

class KeysService final : public Service {
 public:
  explicit KeysService(Context& ctx);
  void add_routes(Router& router) override;
  // A word to a device whose prekeys run low.
  void after_login(const SessionPtr& s) override;

 private:
  void on_upload_keys(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_key_count(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_fetch_bundles(const SessionPtr& s, wire::service::Request& r,
                        wire::service::Response& out);
  void on_identity_key(wire::service::Request& r, wire::service::Response& out);
  void on_kt_keys(wire::service::Response& out);
  void on_kt_audit(wire::service::Request& r, wire::service::Response& out);
  void on_kt_cosign(wire::service::Request& r, wire::service::Response& out);
  void on_kt_monitor(const SessionPtr& s, wire::service::Request& r, wire::service::Response& out);
  void on_kt_consistency(wire::service::Request& r, wire::service::Response& out);
  // Pushes KeysLow to the device if it is online and its one-time prekeys run low.
  void notify_keys_low(store::AccountId account, store::DeviceId device);

  Context& ctx_;
};

}  // namespace sotto::server
