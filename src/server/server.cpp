#include "server/server.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <set>
#include <unordered_set>

#include "crypto/ed25519.h"
#include "crypto/hash.h"
#include "crypto/signature.h"
#include "keys.pb.h"
#include "net/address_key.h"
#include "net/device_authorization.h"
#include "server/limits.h"
#include "service.pb.h"

namespace sotto::server {

namespace svc = sotto::wire::service;
using store::AccountId;
using store::DeviceId;
using store::EnvelopeId;

struct Server::Session {
  net::ConnectionPtr connection;
  // The copy of the device's data that logged in (AuthenticateRequest.instance; empty: not
  // given). Guarded by Server::mutex_, with online_.
  std::string instance;
  std::mutex mutex;  // guards everything below
  bool authenticated = false;
  AccountId account = 0;
  DeviceId device = 0;
  std::string username;
  std::optional<std::array<std::uint8_t, kChallengeSize>> challenge;
  std::uint64_t challenge_at = 0;
  std::string provisioning_address;
  // Delivery: envelopes pushed and not yet acknowledged; the drain cursor; whether the stored
  // backlog has been pushed once (after which new envelopes are pushed as they commit).
  // Pushed and not acknowledged yet, by envelope id: each one's sender and size, which its
  // acknowledgement hands to the store (no lookup of the row before deleting it).
  std::unordered_map<std::string, store::MessageStore::Removing> inflight;
  // Acknowledged, and their deletion not yet durable: the drain must not push them again.
  std::unordered_set<std::string> acked;
  std::optional<EnvelopeId> cursor;
  bool draining = false;
  bool drained = false;
  bool missed = false;  // a live delivery was skipped while draining: drain must look again
};

namespace {

constexpr std::string_view kAuthContext = "sotto-auth-v1";
constexpr std::string_view kBoundAuthContext = "sotto-auth-tls-v1";
// An AuthenticateRequest: a 32-character username, a device id and a 64-byte signature take
// about 110 bytes; anything much larger is not one.
constexpr std::size_t kMaxAuthorizationProofBytes = 256;
constexpr std::string_view kDeviceContext = "sotto-device-v1";
constexpr std::string_view kRecoverContext = "sotto-recover-v1";
// One answer for a wrong signature, an unknown account and an account without a recovery key,
// so that a refusal does not tell whether the account exists.
constexpr std::string_view kRecoveryRefused = "recovery refused";
// Invite codes: 16 characters of this alphabet (lower case, without look-alikes) in groups of 4.
constexpr std::string_view kInviteAlphabet = "abcdefghjkmnpqrstuvwxyz23456789";
constexpr std::size_t kInviteChars = 16;
constexpr std::size_t kInviteGroup = 4;
constexpr std::size_t kMaxInviteInput = 64;

// An invite code as typed (any case, spaces or dashes anywhere) in the form create_invites()
// stores; empty when it cannot be one.
std::string normalize_invite(std::string_view typed) {
  std::string chars;
  for (char c : typed) {
    if (c == '-' || c == ' ' || c == '\t') continue;
    chars += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (chars.size() != kInviteChars) return {};
  std::string code;
  for (std::size_t i = 0; i < chars.size(); ++i) {
    if (i > 0 && i % kInviteGroup == 0) code += '-';
    code += chars[i];
  }
  return code;
}

std::string online_key(AccountId a, DeviceId d) {
  return std::to_string(a) + "/" + std::to_string(d);
}
// What an envelope's acknowledgement tells the store of it (see Session::inflight).
store::MessageStore::Removing removing(const store::QueuedEnvelope& env) {
  return {env.source, env.content.size()};
}

std::string id_key(const EnvelopeId& id) {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}
ByteView view(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
std::string str(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

void fail(svc::Response& out, svc::Code code, std::string_view message) {
  out.mutable_status()->set_code(code);
  out.mutable_status()->set_message(std::string(message));
}

// A refusal the client may retry after `retry_after_ms` (RATE_LIMITED, UNAVAILABLE).
void fail_retry(svc::Response& out, svc::Code code, std::string_view message,
                std::uint32_t retry_after_ms) {
  fail(out, code, message);
  out.mutable_status()->set_retry_after_ms(retry_after_ms);
}

// How long a client is told to wait when storage is over budget: acknowledgements and expiry
// free it, at a pace the server cannot predict.
constexpr std::uint32_t kStorageRetryMs = 30'000;

bool is_public_key(const std::string& k) {
  return k.size() == 33 && static_cast<std::uint8_t>(k[0]) == 0x05;
}

// The identity key's curve25519 signature over a serialized public key (prekeys) or a context
// string (device binding).
bool identity_signed(const std::string& identity_key, ByteView message, const std::string& sig) {
  if (!is_public_key(identity_key) || sig.size() != crypto::kCurve25519SignatureSize) return false;
  std::array<std::uint8_t, 32> pub{};
  std::memcpy(pub.data(), identity_key.data() + 1, 32);
  return crypto::curve25519_verify(pub, message,
                                   std::span<const std::uint8_t, 64>(
                                       reinterpret_cast<const std::uint8_t*>(sig.data()), 64))
      .has_value();
}

Bytes device_binding(const std::string& username, const std::string& auth_key) {
  Bytes m(kDeviceContext.begin(), kDeviceContext.end());
  m.insert(m.end(), username.begin(), username.end());
  m.insert(m.end(), auth_key.begin(), auth_key.end());
  return m;
}

// Validates the keys of an upload or a new device. Returns an error text or empty.
std::string check_keys(const svc::DeviceKeys& keys, const std::string& identity_key,
                       bool require_signed) {
  if (keys.has_signed_pre_key()) {
    const auto& spk = keys.signed_pre_key();
    if (!is_public_key(spk.public_key())) return "signed prekey must be 33 bytes starting 0x05";
    if (spk.id() == 0 || spk.id() > 0xFFFFFF) return "signed prekey id out of range";
    if (!identity_signed(identity_key, view(spk.public_key()), spk.signature())) {
      return "signed prekey signature does not verify";
    }
  } else if (require_signed) {
    return "signed prekey required";
  }
  if (static_cast<std::size_t>(keys.pre_keys_size()) > kMaxPreKeysPerUpload)
    return "too many prekeys";
  std::set<std::uint32_t> ids;
  for (const auto& pk : keys.pre_keys()) {
    if (!is_public_key(pk.public_key())) return "prekey must be 33 bytes starting 0x05";
    if (pk.id() == 0 || pk.id() > 0xFFFFFF) return "prekey id out of range";
    if (!ids.insert(pk.id()).second) return "duplicate prekey id";
  }
  return {};
}

store::SignedPreKeyRecord signed_record(const svc::SignedPreKey& k) {
  return {k.id(), Bytes(k.public_key().begin(), k.public_key().end()),
          Bytes(k.signature().begin(), k.signature().end())};
}

std::vector<store::OneTimePreKeyRecord> pre_key_records(const svc::DeviceKeys& keys) {
  std::vector<store::OneTimePreKeyRecord> out;
  for (const auto& pk : keys.pre_keys()) {
    out.push_back({pk.id(), Bytes(pk.public_key().begin(), pk.public_key().end())});
  }
  return out;
}

std::string check_new_device(const svc::NewDevice& d, const std::string& username,
                             const std::string& identity_key) {
  if (d.registration_id() == 0 || d.registration_id() > 0x7FFFFFFF)
    return "registration id out of range";
  if (d.auth_key().size() != crypto::kEd25519PublicKeySize) return "auth key must be 32 bytes";
  if (d.name().size() > kMaxDeviceNameBytes) return "device name above 256 bytes";
  if (!identity_signed(identity_key, device_binding(username, d.auth_key()),
                       d.identity_signature())) {
    return "device is not signed by the identity key";
  }
  return check_keys(d.keys(), identity_key, true);
}

store::DeviceRecord device_record(const svc::NewDevice& d, store::DeviceId id,
                                  std::uint64_t now_s) {
  store::DeviceRecord out;
  out.id = id;
  out.registration_id = d.registration_id();
  out.auth_key.assign(d.auth_key().begin(), d.auth_key().end());
  out.created_day = now_s / 86400;
  out.name.assign(d.name().begin(), d.name().end());
  return out;
}

// What a registration and a recovery share: a valid username, identity key and recovery key,
// and a first device signed by that identity key. The normalised username, or nullopt with the
// refusal in `out`.
std::optional<std::string> check_new_account(const std::string& username_in,
                                             const std::string& identity_key,
                                             const std::string& recovery_key,
                                             const svc::NewDevice& device, svc::Response& out) {
  auto username = normalize_username(username_in);
  if (!username) {
    fail(out, svc::BAD_REQUEST, "username must be 3-32 characters of a-z, 0-9, '.', '_' or '-'");
    return std::nullopt;
  }
  if (!is_public_key(identity_key)) {
    fail(out, svc::BAD_REQUEST, "identity key must be 33 bytes starting 0x05");
    return std::nullopt;
  }
  if (!recovery_key.empty() && recovery_key.size() != kRecoveryKeySize) {
    fail(out, svc::BAD_REQUEST, "recovery key must be 32 bytes (or none)");
    return std::nullopt;
  }
  if (auto e = check_new_device(device, *username, identity_key); !e.empty()) {
    fail(out, svc::BAD_REQUEST, e);
    return std::nullopt;
  }
  return username;
}

svc::Push envelope_push(const store::QueuedEnvelope& env) {
  svc::Push p;
  auto* e = p.mutable_envelope();
  e->set_id(id_key(env.id));
  e->set_source(env.source);
  e->set_source_device(env.source_device);
  e->set_type(env.type);
  e->set_content(str(env.content));
  e->set_client_timestamp(env.client_timestamp);
  e->set_server_timestamp(env.server_timestamp);
  return p;
}

// The session's account (a template: Server::Session is private to Server).
template <typename Session>
AccountId account_of(Session& s) {
  std::lock_guard lock(s.mutex);
  return s.account;
}

svc::Code code_of(store::Error e) {
  switch (e) {
    case store::Error::not_found:
      return svc::NOT_FOUND;
    case store::Error::conflict:
      return svc::CONFLICT;
    case store::Error::queue_full:
    case store::Error::queue_share_full:
      return svc::QUEUE_FULL;
    case store::Error::invalid_token:
      return svc::FORBIDDEN;
    case store::Error::io:
      return svc::INTERNAL;
  }
  return svc::INTERNAL;
}

}  // namespace

std::optional<std::string> normalize_username(std::string_view name) {
  if (name.size() < kMinUsernameLength || name.size() > kMaxUsernameLength) return std::nullopt;
  std::string out;
  out.reserve(name.size());
  for (char ch : name) {
    const char c = (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return std::nullopt;
    out += c;
  }
  if (out[0] == '.' || out[0] == '_' || out[0] == '-') return std::nullopt;
  return out;
}

Server::Server(const ServerConfig& config, store::ServerStore& store, Metrics& metrics,
               crypto::Rng& rng, NowMs now_ms)
    : config_(config),
      store_(store),
      metrics_(metrics),
      rng_(rng),
      now_ms_(std::move(now_ms)),
      registrations_(config.registrations_per_minute,
                     std::max<std::uint32_t>(5, config.registrations_per_minute / 6)),
      logins_(config.logins_per_minute, std::max<std::uint32_t>(20, config.logins_per_minute / 6)),
      account_logins_(
          config.logins_per_account_per_minute,
          std::max(kMinLoginsPerAccountBurst, config.logins_per_account_per_minute / 2)),
      bundle_fetches_(config.bundle_fetches_per_minute,
                      std::max<std::uint32_t>(10, config.bundle_fetches_per_minute / 4)),
      pre_key_handouts_(config.pre_keys_per_device_per_hour, std::chrono::hours(1),
                        config.pre_keys_per_device_per_hour),
      block_changes_(kBlockChangesPerAccountPerMinute, kBlockChangesBurst),
      recoveries_(kRecoveriesPerAccountPerHour, std::chrono::hours(1),
                  kRecoveriesPerAccountPerHour),
      sends_(config.sends_per_minute, std::max<std::uint32_t>(10, config.sends_per_minute / 4)),
      send_bytes_(RateLimiter::Rate{static_cast<double>(config.send_bytes_per_minute) / 60.0,
                                    static_cast<double>(config.send_bytes_per_minute) / 2.0}),
      acks_(RateLimiter::Rate{config.acks_per_minute / 60.0, config.acks_per_minute / 5.0}),
      device_lists_(config.device_lists_per_minute,
                    std::max<std::uint32_t>(5, config.device_lists_per_minute / 4)),
      link_tokens_(config.link_tokens_per_hour, std::chrono::hours(1),
                   std::max<std::uint32_t>(2, config.link_tokens_per_hour / 4)),
      provisioning_rate_(config.provisioning_per_minute,
                         std::max<std::uint32_t>(5, config.provisioning_per_minute / 3)),
      attachments_(config, rng, now_ms_) {
  // The gauge counts what the store holds, so it starts from there and not from zero.
  if (auto stored = store_.messages().count_all()) {
    metrics_.queue_depth.store(static_cast<std::int64_t>(*stored), std::memory_order_relaxed);
  }
  update_stored_bytes_gauge();
  // Reads the free space once now (the gauge is then right from the start), and tells the
  // operator at once when sends could not be stored.
  if (auto why = storage_refusal(0); !why.empty()) {
    spdlog::warn(
        "event=storage_full reason=\"{}\" stored_bytes={} max_stored_bytes={} disk_free_bytes={} "
        "min_free_disk_bytes={} (every send will be refused until there is room)",
        why, store_.messages().stored_bytes(), config_.max_stored_bytes,
        disk_free_bytes_.load(std::memory_order_relaxed), config_.min_free_disk_bytes);
  }
}

void Server::update_stored_bytes_gauge() {
  metrics_.stored_bytes.store(static_cast<std::int64_t>(store_.messages().stored_bytes()),
                              std::memory_order_relaxed);
}

std::string Server::reserve_storage(std::uint64_t bytes) {
  // Reserved first and checked after, so that two sends on two threads cannot both take the same
  // room; a refusal gives its reservation back.
  const std::uint64_t reserved = reserved_bytes_.fetch_add(bytes) + bytes;
  std::string why = storage_refusal(reserved);
  if (!why.empty()) {
    reserved_bytes_.fetch_sub(bytes);
    // The operator hears of it, at most once a minute (the counter on /metrics counts them all).
    const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t last = storage_warned_ms_.load(std::memory_order_relaxed);
    if ((last < 0 || now - last >= 60'000) &&
        storage_warned_ms_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
      spdlog::warn(
          "event=storage_full reason=\"{}\" stored_bytes={} max_stored_bytes={} "
          "disk_free_bytes={} min_free_disk_bytes={} (sends are refused until acknowledgements "
          "and expiry make room)",
          why, store_.messages().stored_bytes(), config_.max_stored_bytes,
          disk_free_bytes_.load(std::memory_order_relaxed), config_.min_free_disk_bytes);
    }
  }
  return why;
}

std::string Server::storage_refusal(std::uint64_t reserved) {
  const std::uint64_t stored = store_.messages().stored_bytes();
  if (stored + reserved > config_.max_stored_bytes) {
    return "server storage is full (its message budget is used up)";
  }
  if (config_.min_free_disk_bytes == 0 || config_.data_dir.empty()) return {};
  // statvfs at most once a second, whoever asks: a send costs no system call.
  const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now().time_since_epoch())
                               .count();
  std::int64_t checked = disk_checked_ms_.load(std::memory_order_relaxed);
  if ((checked < 0 || now - checked >= 1000) &&
      disk_checked_ms_.compare_exchange_strong(checked, now, std::memory_order_relaxed)) {
    struct statvfs fs {};
    if (statvfs(config_.data_dir.c_str(), &fs) == 0) {
      const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
      disk_free_bytes_.store(free_bytes, std::memory_order_relaxed);
      metrics_.disk_free_bytes.store(static_cast<std::int64_t>(free_bytes),
                                     std::memory_order_relaxed);
    }
  }
  const std::uint64_t free_bytes = disk_free_bytes_.load(std::memory_order_relaxed);
  if (free_bytes < config_.min_free_disk_bytes ||
      free_bytes - config_.min_free_disk_bytes < reserved) {
    return "server storage is full (its disk is almost full)";
  }
  return {};
}

Server::~Server() = default;

Server::SessionPtr Server::session_of(const net::ConnectionPtr& c) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(c->id());
  return it == sessions_.end() ? nullptr : it->second;
}

void Server::on_open(const net::ConnectionPtr& c, std::string_view authorization) {
  auto s = std::make_shared<Session>();
  s->connection = c;
  {
    std::lock_guard lock(mutex_);
    sessions_[c->id()] = s;
  }
  metrics_.connections.fetch_add(1, std::memory_order_relaxed);
  if (!authorization.empty()) login_in_upgrade(s, authorization);
}

// The login proof a client put in its upgrade request (service.proto, LoginResult): the same
// checks as an AuthenticateRequest frame, answered by a push before anything else.
void Server::login_in_upgrade(const SessionPtr& s, std::string_view authorization) {
  svc::Request r;
  svc::Response out;
  out.mutable_status()->set_code(svc::OK);
  const auto proof = net::parse_device_authorization(authorization, kMaxAuthorizationProofBytes);
  if (!proof ||
      !r.mutable_authenticate()->ParseFromArray(proof->data(), static_cast<int>(proof->size())) ||
      !r.authenticate().channel_binding()) {
    // Spent like any attempt's: a broken header does not leave the binding for a second try.
    std::array<std::uint8_t, kChallengeSize> spent{};
    (void)s->connection->take_channel_binding(spent);
    metrics_.login_failures.fetch_add(1, std::memory_order_relaxed);
    fail(out, svc::BAD_REQUEST,
         "malformed Authorization header: expected \"SottoDevice \" and an AuthenticateRequest "
         "with channel_binding, in base64url without padding");
  } else {
    on_authenticate(s, r, out);
  }
  const bool ok = out.status().code() == svc::OK;
  svc::Push p;
  *p.mutable_login_result()->mutable_status() = std::move(*out.mutable_status());
  push(s, std::move(p));
  if (ok) after_login(s);
}

void Server::on_close(const net::ConnectionPtr& c) {
  SessionPtr s;
  {
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(c->id());
    if (it == sessions_.end()) return;
    s = it->second;
    sessions_.erase(it);
    std::lock_guard slock(s->mutex);
    if (s->authenticated) {
      auto on = online_.find(online_key(s->account, s->device));
      if (on != online_.end() && on->second.lock() == s) online_.erase(on);
      metrics_.authenticated_connections.fetch_sub(1, std::memory_order_relaxed);
    }
    if (!s->provisioning_address.empty()) provisioning_.erase(s->provisioning_address);
  }
  metrics_.connections.fetch_sub(1, std::memory_order_relaxed);
}

void Server::on_writable(const net::ConnectionPtr& c) {
  if (SessionPtr s = session_of(c)) drain(s);
}

void Server::reply(const SessionPtr& s, svc::Response&& response) {
  svc::Frame frame;
  *frame.mutable_response() = std::move(response);
  Bytes bytes(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(bytes.data());
  s->connection->send(std::move(bytes));
}

void Server::push(const SessionPtr& s, svc::Push&& p) {
  svc::Frame frame;
  *frame.mutable_push() = std::move(p);
  Bytes bytes(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(bytes.data());
  s->connection->send(std::move(bytes));
}

void Server::on_frame(const net::ConnectionPtr& c, ByteView bytes) {
  SessionPtr s = session_of(c);
  if (!s) return;
  svc::Frame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || !frame.has_request()) {
    metrics_.bad_frames.fetch_add(1, std::memory_order_relaxed);
    svc::Response out;
    // The transport splits well-formed batches (net/batch.h): one seen here is malformed or nested.
    fail(out, svc::BAD_REQUEST,
         frame.has_batch() ? "malformed frame: a batch must hold well-formed frames, not batches"
                           : "malformed frame: expected a Request");
    reply(s, std::move(out));
    return;
  }
  handle(s, *frame.mutable_request());
}

void Server::handle(const SessionPtr& s, svc::Request& r) {
  svc::Response out;
  out.set_id(r.id());
  out.mutable_status()->set_code(svc::OK);
  const bool needs_auth = !(r.has_register_() || r.has_challenge() || r.has_authenticate() ||
                            r.has_provisioning_open() || r.has_link_device() || r.has_recover());
  if (needs_auth) {
    std::lock_guard lock(s->mutex);
    if (!s->authenticated) {
      fail(out, svc::UNAUTHENTICATED, "authenticate first");
      reply(s, std::move(out));
      return;
    }
  }
  switch (r.body_case()) {
    case svc::Request::kRegister:
      on_register(s, r, out);
      break;
    case svc::Request::kChallenge:
      on_challenge(s, out);
      break;
    case svc::Request::kAuthenticate:
      on_authenticate(s, r, out);
      break;
    case svc::Request::kUploadKeys:
      on_upload_keys(s, r, out);
      break;
    case svc::Request::kKeyCount:
      on_key_count(s, r, out);
      break;
    case svc::Request::kFetchBundles:
      on_fetch_bundles(s, r, out);
      break;
    case svc::Request::kSend:
      on_send(s, r);
      return;  // replies when durable
    case svc::Request::kAck:
      on_ack(s, r);
      return;  // replies when durable
    case svc::Request::kListDevices:
      on_list_devices(s, r, out);
      break;
    case svc::Request::kRemoveDevice:
      on_remove_device(s, r, out);
      break;
    case svc::Request::kProvisioningOpen:
      on_provisioning_open(s, out);
      break;
    case svc::Request::kProvisioningSend:
      on_provisioning_send(s, r, out);
      break;
    case svc::Request::kLinkToken:
      on_link_token(s, out);
      break;
    case svc::Request::kLinkDevice:
      on_link_device(s, r, out);
      break;
    case svc::Request::kRecover:
      on_recover(s, r, out);
      break;
    case svc::Request::kIdentityKey:
      on_identity_key(s, r, out);
      break;
    case svc::Request::kBlock:
    case svc::Request::kUnblock:
      on_block(s, r, out);
      break;
    case svc::Request::kListBlocks:
      on_list_blocks(s, out);
      break;
    case svc::Request::kAttachmentCreate:
    case svc::Request::kAttachmentWrite:
    case svc::Request::kAttachmentStatus:
    case svc::Request::kAttachmentRead:
      attachments_.handle(account_of(*s), r, out);
      break;
    case svc::Request::kMultiSend:  // the multi-recipient send lands with the delivery module
    case svc::Request::BODY_NOT_SET:
      fail(out, svc::BAD_REQUEST, "empty request");
      break;
  }
  const bool authenticated_now = r.has_authenticate() && out.status().code() == svc::OK;
  reply(s, std::move(out));
  if (authenticated_now) after_login(s);
}

// What a device gets once logged in: the server's next key while one is announced, its stored
// envelopes, and a word if its prekeys run low.
void Server::after_login(const SessionPtr& s) {
  std::shared_ptr<const svc::Push> next_key;
  {
    std::lock_guard lock(next_key_mutex_);
    next_key = next_key_;
    if (next_key) {
      told_next_key_.emplace(s->account, s->device);
      metrics_.next_key_devices_told.store(static_cast<std::int64_t>(told_next_key_.size()),
                                           std::memory_order_relaxed);
    }
  }
  if (next_key) push(s, svc::Push(*next_key));
  drain(s);
  auto count = store_.keys().count_pre_keys(s->account, s->device);
  if (count && *count < kPreKeysLowThreshold) {
    svc::Push p;
    p.mutable_keys_low()->set_count(*count);
    push(s, std::move(p));
  }
}

void Server::on_register(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (const auto wait = registrations_.take(net::address_key(s->connection->remote_address()), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many registrations from this address", wait);
    return;
  }
  const auto& req = r.register_();
  auto username =
      check_new_account(req.username(), req.identity_key(), req.recovery_key(), req.device(), out);
  if (!username) return;
  if (auto existing = store_.accounts().find_account(*username); existing) {
    fail(out, svc::CONFLICT, "username taken");
    return;
  }
  const std::uint64_t now_s = now_ms_() / 1000;
  if (config_.invite_only) {
    if (req.invite_code().empty()) {
      fail(out, svc::INVITE_REQUIRED, "this server is invite-only: an invite code is required");
      return;
    }
    const std::string code = req.invite_code().size() <= kMaxInviteInput
                                 ? normalize_invite(req.invite_code())
                                 : std::string();
    if (code.empty() || !store_.tokens().use_invite(code, now_s)) {
      fail(out, svc::INVITE_REQUIRED, "the invite code is unknown, used or expired");
      return;
    }
  }
  auto id = store_.accounts().create_account(
      *username, view(req.identity_key()), device_record(req.device(), 1, now_s),
      signed_record(req.device().keys().signed_pre_key()), pre_key_records(req.device().keys()),
      view(req.recovery_key()));
  if (!id) {
    fail(out, code_of(id.error()),
         id.error() == store::Error::conflict ? "username taken" : "store failure");
    return;
  }
  metrics_.registrations.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("event=register account={} device=1", *id);
  // Progress before login: the new device now has the whole deadline again to log in.
  s->connection->extend_login_deadline(std::chrono::seconds(config_.login_deadline_seconds));
  out.mutable_register_()->set_device_id(1);
}

void Server::on_challenge(const SessionPtr& s, svc::Response& out) {
  std::array<std::uint8_t, kChallengeSize> nonce{};
  rng_.fill(nonce);
  {
    std::lock_guard lock(s->mutex);
    s->challenge = nonce;
    s->challenge_at = now_ms_() / 1000;
  }
  out.mutable_challenge()->set_nonce(str(nonce));
}

void Server::on_authenticate(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (const auto wait = logins_.take(net::address_key(s->connection->remote_address()), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many login attempts from this address", wait);
    return;
  }
  const auto& req = r.authenticate();
  std::optional<std::array<std::uint8_t, kChallengeSize>> nonce;
  std::uint64_t issued = 0;
  {
    std::lock_guard lock(s->mutex);
    if (s->authenticated) {
      fail(out, svc::BAD_REQUEST, "already authenticated");
      return;
    }
    nonce = s->challenge;
    issued = s->challenge_at;
    s->challenge.reset();  // single use, whatever the outcome
  }
  // Also single use, whichever value this attempt signs (and the server keeps no copy after).
  std::array<std::uint8_t, kChallengeSize> binding{};
  const bool has_binding = s->connection->take_channel_binding(binding);
  const auto login_failed = [&](std::string_view why, svc::Code code = svc::UNAUTHENTICATED) {
    metrics_.login_failures.fetch_add(1, std::memory_order_relaxed);
    fail(out, code, why);
  };
  if (!req.instance().empty() && req.instance().size() != kInstanceSize) {
    login_failed("instance must be 16 bytes (or none)", svc::BAD_REQUEST);
    return;
  }
  if (req.channel_binding()) {
    if (!has_binding) {
      login_failed("this connection's channel binding was used already; request a challenge");
      return;
    }
    nonce = binding;
  } else if (!nonce || now_ms_() / 1000 > issued + kChallengeLifetimeSeconds) {
    login_failed("request a fresh challenge first");
    return;
  }
  auto username = normalize_username(req.username());
  auto account = username ? store_.accounts().find_account(*username)
                          : tl::expected<store::AccountRecord, store::Error>(
                                tl::unexpected(store::Error::not_found));
  if (!account) {
    login_failed("unknown account or device");
    return;
  }
  const auto device =
      std::find_if(account->devices.begin(), account->devices.end(),
                   [&](const store::DeviceRecord& d) { return d.id == req.device_id(); });
  if (device == account->devices.end()) {
    login_failed("unknown account or device");
    return;
  }
  const std::string_view context = req.channel_binding() ? kBoundAuthContext : kAuthContext;
  Bytes signed_message(context.begin(), context.end());
  signed_message.insert(signed_message.end(), nonce->begin(), nonce->end());
  if (!crypto::ed25519_verify(device->auth_key, signed_message, view(req.signature()))) {
    login_failed("signature does not verify");
    return;
  }
  // Per account too, and only once the proof holds: the per-address limit is generous because a
  // NAT's users share it, and counting failed proofs here would let anyone lock an account out.
  if (const auto wait = account_logins_.take(std::to_string(account->id), 1)) {
    metrics_.login_failures.fetch_add(1, std::memory_order_relaxed);
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many logins for this account", wait);
    return;
  }
  SessionPtr replaced;
  bool in_use = false;
  {
    std::lock_guard lock(mutex_);
    auto& slot = online_[online_key(account->id, device->id)];
    replaced = slot.lock();
    // Two copies of one device's data would fork its ratchets: while one copy is online, another
    // is refused. (The same copy reconnecting replaces its older connection, as does a device
    // that does not say which copy it is.)
    in_use = replaced && !replaced->instance.empty() && !req.instance().empty() &&
             replaced->instance != req.instance();
    if (!in_use) {
      std::lock_guard slock(s->mutex);
      s->authenticated = true;
      s->account = account->id;
      s->device = device->id;
      s->username = account->username;
      s->instance = req.instance();
      slot = s;
    }
  }
  if (in_use) {
    login_failed("this device is connected from another copy of its data", svc::DEVICE_IN_USE);
    return;
  }
  if (replaced) replaced->connection->close("replaced by a newer connection of this device");
  // Logged in: the transport lifts the limits it keeps on connections that are not.
  s->connection->promote();
  metrics_.logins.fetch_add(1, std::memory_order_relaxed);
  metrics_.authenticated_connections.fetch_add(1, std::memory_order_relaxed);
}

void Server::on_upload_keys(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  auto account = store_.accounts().find_account(s->account);
  if (!account) {
    fail(out, code_of(account.error()), "account not found");
    return;
  }
  const auto& keys = r.upload_keys().keys();
  if (auto e = check_keys(keys, str(account->identity_key), false); !e.empty()) {
    fail(out, svc::BAD_REQUEST, e);
    return;
  }
  if (keys.has_signed_pre_key()) {
    if (auto ok = store_.keys().set_signed_pre_key(s->account, s->device,
                                                   signed_record(keys.signed_pre_key()));
        !ok) {
      fail(out, code_of(ok.error()), "store failure");
      return;
    }
  }
  if (r.upload_keys().replace_pre_keys()) {
    if (auto ok = store_.keys().replace_pre_keys(s->account, s->device, pre_key_records(keys));
        !ok) {
      fail(out, code_of(ok.error()), "store failure");
      return;
    }
  } else if (keys.pre_keys_size() > 0) {
    if (auto ok = store_.keys().add_pre_keys(s->account, s->device, pre_key_records(keys)); !ok) {
      fail(out, code_of(ok.error()), "store failure");
      return;
    }
  }
}

void Server::on_key_count(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (r.key_count().list_ids()) {
    // The ids the device's keys still have here, as ranges (ids are handed out oldest first and
    // uploaded in runs, so a few ranges describe them): what the client may not prune yet.
    auto ids = store_.keys().pre_key_ids(s->account, s->device);
    if (!ids) {
      fail(out, code_of(ids.error()), "store failure");
      return;
    }
    auto* k = out.mutable_key_count();
    k->set_count(static_cast<std::uint32_t>(ids->size()));
    k->set_message_ttl_seconds(config_.message_ttl_days * 86400);
    svc::PreKeyIdRange* range = nullptr;
    for (const std::uint32_t id : *ids) {
      if (range != nullptr && range->last() + 1 == id) {
        range->set_last(id);
      } else {
        range = k->add_held();
        range->set_first(id);
        range->set_last(id);
      }
    }
    return;
  }
  auto count = store_.keys().count_pre_keys(s->account, s->device);
  if (!count) {
    fail(out, code_of(count.error()), "store failure");
    return;
  }
  out.mutable_key_count()->set_count(*count);
}

void Server::on_fetch_bundles(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (const auto wait = bundle_fetches_.take(std::to_string(s->account), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many bundle fetches by this account", wait);
    return;
  }
  const auto& req = r.fetch_bundles();
  auto username = normalize_username(req.username());
  auto account = username ? store_.accounts().find_account(*username)
                          : tl::expected<store::AccountRecord, store::Error>(
                                tl::unexpected(store::Error::not_found));
  if (!account) {
    fail(out, svc::NOT_FOUND, "no such user");
    return;
  }
  // A blocked requester gets bundles as anyone else, only without one-time prekeys: what it
  // would see from a busy device, so the answer does not tell it it is blocked.
  bool blocked = false;
  if (account->id != s->account) {
    auto b = store_.blocks().is_blocked(account->id, s->account);
    blocked = b && *b;
  }
  std::set<std::uint32_t> wanted(req.device_ids().begin(), req.device_ids().end());
  for (const auto& d : account->devices) {
    if (!wanted.empty() && !wanted.contains(d.id)) continue;
    auto spk = store_.keys().signed_pre_key(account->id, d.id);
    if (!spk) continue;  // a device without a signed prekey cannot be messaged yet
    auto* b = out.mutable_fetch_bundles()->add_bundles();
    b->set_registration_id(d.registration_id);
    b->set_device_id(d.id);
    b->set_signed_pre_key_id(spk->id);
    b->set_signed_pre_key(str(spk->public_key));
    b->set_signed_pre_key_signature(str(spk->signature));
    b->set_identity_key(str(account->identity_key));
    // One-time prekeys go to other accounts at a bounded rate per target device (and never to
    // an account the target blocks); beyond it the bundle has none, which X3DH allows. The
    // account's own devices are not counted.
    if (account->id != s->account &&
        (blocked || !pre_key_handouts_.allow(online_key(account->id, d.id)))) {
      continue;
    }
    auto otk = store_.keys().take_pre_key(account->id, d.id);
    if (otk && otk->has_value()) {
      b->set_pre_key_id((*otk)->id);
      b->set_pre_key(str((*otk)->public_key));
    }
    notify_keys_low(account->id, d.id);
  }
  if (out.fetch_bundles().bundles_size() == 0) fail(out, svc::NOT_FOUND, "no such device");
}

void Server::notify_keys_low(AccountId account, DeviceId device) {
  auto count = store_.keys().count_pre_keys(account, device);
  if (!count || *count >= kPreKeysLowThreshold) return;
  SessionPtr target;
  {
    std::lock_guard lock(mutex_);
    auto it = online_.find(online_key(account, device));
    if (it != online_.end()) target = it->second.lock();
  }
  if (!target) return;
  svc::Push p;
  p.mutable_keys_low()->set_count(*count);
  push(target, std::move(p));
}

void Server::on_send(const SessionPtr& s, svc::Request& r) {
  svc::Response out;
  out.set_id(r.id());
  out.mutable_status()->set_code(svc::OK);
  const auto refuse = [&](svc::Code code, std::string_view why) {
    metrics_.sends_refused.fetch_add(1, std::memory_order_relaxed);
    fail(out, code, why);
    reply(s, std::move(out));
  };
  const auto& req = r.send();
  if (req.client_message_id().size() != kClientMessageIdSize)
    return refuse(svc::BAD_REQUEST, "client message id must be 16 bytes");
  if (req.messages_size() == 0 ||
      static_cast<std::size_t>(req.messages_size()) > kMaxMessagesPerSend) {
    return refuse(svc::BAD_REQUEST, "a send carries 1 to 64 messages");
  }
  // Counted before anything is looked up or stored: one account cannot fill the disk or hold
  // the store's writer (docs/abuse.md).
  std::uint64_t request_bytes = 0;
  for (const auto& m : req.messages()) request_bytes += m.content().size();
  {
    const std::string who = std::to_string(s->account);
    std::uint32_t wait = sends_.take(who, 1);
    if (wait == 0) wait = send_bytes_.take(who, static_cast<double>(request_bytes));
    if (wait != 0) {
      metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
      fail_retry(out, svc::RATE_LIMITED, "too many messages sent by this account", wait);
      metrics_.sends_refused.fetch_add(1, std::memory_order_relaxed);
      reply(s, std::move(out));
      return;
    }
  }
  auto recipient_name = normalize_username(req.recipient());
  if (!recipient_name) return refuse(svc::BAD_REQUEST, "invalid recipient");
  auto recipient = store_.accounts().find_account(*recipient_name);
  if (!recipient) return refuse(svc::NOT_FOUND, "no such user");
  auto self = store_.accounts().find_account(s->account);
  if (!self) return refuse(svc::INTERNAL, "account not found");
  // Blocked by the recipient (service.proto BlockRequest): the send is answered as usual, and
  // nothing is stored for the recipient's devices (the sender's own devices still get theirs).
  bool blocked_by_recipient = false;
  if (recipient->id != self->id) {
    auto blocked = store_.blocks().is_blocked(recipient->id, self->id);
    if (!blocked) return refuse(svc::INTERNAL, "store failure");
    blocked_by_recipient = *blocked;
  }

  // Expected devices: every device of the recipient, and our own other devices.
  struct Expect {
    const store::AccountRecord* account;
    std::map<std::uint32_t, std::uint32_t> devices;  // id -> registration id
    std::set<std::uint32_t> given;
    svc::DeviceMismatch mismatch;
  };
  std::vector<Expect> expects;
  expects.push_back({&*recipient, {}, {}, {}});
  if (recipient->id != self->id) expects.push_back({&*self, {}, {}, {}});
  for (auto& e : expects) {
    for (const auto& d : e.account->devices) {
      if (e.account->id == self->id && d.id == s->device) continue;
      e.devices[d.id] = d.registration_id;
    }
    e.mismatch.set_username(e.account->username);
  }
  std::vector<store::QueuedEnvelope> envelopes;
  const std::uint64_t now = now_ms_();
  const std::uint64_t expires = now / 1000 + config_.message_ttl_days * 86400;
  for (const auto& m : req.messages()) {
    if (m.content().empty() || m.content().size() > config_.max_message_bytes) {
      return refuse(svc::TOO_LARGE, "message content empty or above the size limit");
    }
    auto dest = normalize_username(m.destination());
    Expect* e = nullptr;
    for (auto& x : expects) {
      if (dest && x.account->username == *dest) e = &x;
    }
    if (e == nullptr)
      return refuse(svc::BAD_REQUEST,
                    "a message is addressed outside the recipient and our own account");
    if (!e->given.insert(m.device_id()).second)
      return refuse(svc::BAD_REQUEST, "two messages for one device");
    auto it = e->devices.find(m.device_id());
    if (it == e->devices.end()) {
      e->mismatch.add_extra(m.device_id());
      continue;
    }
    if (it->second != m.registration_id()) e->mismatch.add_stale(m.device_id());
    store::QueuedEnvelope env;
    env.id = next_envelope_id(now);
    env.account = e->account->id;
    env.device = m.device_id();
    env.source = s->username;
    env.source_device = s->device;
    env.type = m.type();
    env.content.assign(m.content().begin(), m.content().end());
    env.client_timestamp = req.timestamp();
    env.server_timestamp = now;
    env.expires_at = expires;
    env.source_account = s->account;
    envelopes.push_back(std::move(env));
  }
  bool mismatched = false;
  for (auto& e : expects) {
    // A send to some devices only (a resend, a retry request) leaves the others out on purpose.
    for (const auto& [id, reg] : e.devices) {
      (void)reg;
      if (!req.device_subset() && !e.given.contains(id)) e.mismatch.add_missing(id);
    }
    if (e.mismatch.missing_size() || e.mismatch.extra_size() || e.mismatch.stale_size()) {
      mismatched = true;
      *out.mutable_send()->add_mismatch() = e.mismatch;
    }
  }
  // The client's message id first: its leading time places the row (store.h).
  Bytes dedup(kClientMessageIdSize + 8);
  std::memcpy(dedup.data(), req.client_message_id().data(), kClientMessageIdSize);
  for (int i = 0; i < 8; ++i)
    dedup[kClientMessageIdSize + static_cast<std::size_t>(i)] =
        static_cast<std::uint8_t>(static_cast<std::uint64_t>(s->account) >> (8 * i));
  if (mismatched) {
    // A retry of a send that was accepted before the device list changed is answered as the
    // original was: it is not stored (or delivered) twice.
    if (auto sent = store_.messages().was_sent(dedup); sent && *sent) {
      out.clear_send();
      out.mutable_send()->set_server_timestamp(now);
      reply(s, std::move(out));
      return;
    }
    return refuse(svc::STALE_DEVICES, "device list out of date");
  }
  // The storage budget (docs/abuse.md): refused before anything is stored, and told apart from
  // a failure so that the client retries later. Counted before a block drops the recipient's
  // envelopes, so that a blocked sender is refused exactly when anyone else would be (a send
  // accepted only because it was dropped would tell it it is blocked).
  std::uint64_t stored_bytes = 0;
  for (const auto& env : envelopes) stored_bytes += env.content.size();
  if (auto why = reserve_storage(stored_bytes); !why.empty()) {
    // A retry of a send stored before (its answer lost) is answered as the original was.
    if (auto sent = store_.messages().was_sent(dedup); sent && *sent) {
      out.mutable_send()->set_server_timestamp(now);
      reply(s, std::move(out));
      return;
    }
    metrics_.storage_refusals.fetch_add(1, std::memory_order_relaxed);
    metrics_.sends_refused.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::UNAVAILABLE, why, kStorageRetryMs);
    reply(s, std::move(out));
    return;
  }
  if (blocked_by_recipient) {
    std::erase_if(envelopes, [&](const auto& env) { return env.account == recipient->id; });
    std::uint64_t kept = 0;
    for (const auto& env : envelopes) kept += env.content.size();
    reserved_bytes_.fetch_sub(stored_bytes - kept);
    stored_bytes = kept;
    if (envelopes.empty()) {
      out.mutable_send()->set_server_timestamp(now);
      reply(s, std::move(out));
      return;
    }
  }

  // Envelopes go to recipients that are online and caught up at once, before the commit; an
  // envelope acknowledged before the writer reaches it is never written (the store cancels it).
  // The sender is answered only once the send is durable either way. Others are delivered after
  // the commit (live, or by the drain from the store), and until then no later envelope for the
  // same device overtakes them.
  const auto started = std::chrono::steady_clock::now();
  auto delivery = std::make_shared<Delivery>();
  delivery->envelopes = envelopes;
  delivery->pushed.assign(envelopes.size(), false);
  delivery->pushed_to.assign(envelopes.size(), 0);
  delivery->counted.assign(envelopes.size(), false);
  store_.messages().enqueue(
      std::move(envelopes), std::move(dedup),
      [this, s, out = std::move(out), delivery, started, now,
       stored_bytes](tl::expected<void, store::Error> stored) mutable {
        metrics_.commit_latency.observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        reserved_bytes_.fetch_sub(stored_bytes, std::memory_order_relaxed);
        update_stored_bytes_gauge();
        if (!stored) {
          metrics_.sends_refused.fetch_add(1, std::memory_order_relaxed);
          switch (stored.error()) {
            case store::Error::queue_full:
              fail(out, svc::QUEUE_FULL, "a recipient device queue is full");
              break;
            case store::Error::queue_share_full:
              metrics_.queue_share_refusals.fetch_add(1, std::memory_order_relaxed);
              fail(out, svc::QUEUE_FULL,
                   "this account holds its share of a recipient device's queue: more can be "
                   "stored once that device has received what is waiting");
              break;
            default:
              fail(out, code_of(stored.error()), "store failure");
              break;
          }
          reply(s, std::move(out));
          deliver_after_commit(*delivery, false);
          return;
        }
        metrics_.messages_in.fetch_add(delivery->envelopes.size(), std::memory_order_relaxed);
        metrics_.queue_depth.fetch_add(static_cast<std::int64_t>(delivery->envelopes.size()),
                                       std::memory_order_relaxed);
        out.mutable_send()->set_server_timestamp(now);
        reply(s, std::move(out));
        deliver_after_commit(*delivery, true);
      });
  deliver_before_commit(*delivery);
}

store::EnvelopeId Server::next_envelope_id(std::uint64_t now_ms) {
  static constexpr std::size_t kTimeBytes = 6;
  static constexpr std::size_t kRandomBytes = std::tuple_size_v<store::EnvelopeId> - kTimeBytes;
  store::EnvelopeId id{};
  for (std::size_t i = 0; i < kTimeBytes; ++i)
    id[i] = static_cast<std::uint8_t>(now_ms >> (8 * (kTimeBytes - 1 - i)));
  std::lock_guard lock(id_mutex_);
  if (id_pool_used_ + kRandomBytes > id_pool_.size()) {
    rng_.fill(id_pool_);
    id_pool_used_ = 0;
  }
  std::memcpy(id.data() + kTimeBytes, id_pool_.data() + id_pool_used_, kRandomBytes);
  std::memset(id_pool_.data() + id_pool_used_, 0, kRandomBytes);  // each byte is handed out once
  id_pool_used_ += kRandomBytes;
  return id;
}

Server::SessionPtr Server::online_session(AccountId account, DeviceId device) {
  std::lock_guard lock(mutex_);
  auto it = online_.find(online_key(account, device));
  return it == online_.end() ? nullptr : it->second.lock();
}

void Server::deliver_before_commit(Delivery& delivery) {
  for (std::size_t i = 0; i < delivery.envelopes.size(); ++i) {
    const auto& env = delivery.envelopes[i];
    const std::string key = online_key(env.account, env.device);
    SessionPtr target;
    bool pushed = false;
    {
      std::lock_guard lock(mutex_);
      if (auto it = online_.find(key); it != online_.end()) target = it->second.lock();
      if (target && !awaiting_commit_.contains(key)) {
        std::lock_guard tlock(target->mutex);
        std::lock_guard dlock(delivery.mu);
        // Paced by bytes too: a connection with enough unsent already gets it from the drain.
        if (!delivery.committed && target->drained &&
            target->inflight.size() < kMaxInflightPushes && target->connection->writable() &&
            target->inflight.try_emplace(id_key(env.id), removing(env)).second) {
          delivery.pushed[i] = true;
          delivery.pushed_to[i] = target->connection->id();
          target->cursor = env.id;
          pushed = true;
        }
      }
      if (!pushed) {
        // Delivered after the commit; until then, later envelopes for this device wait too.
        std::lock_guard dlock(delivery.mu);
        if (!delivery.committed) {
          ++awaiting_commit_[key];
          delivery.counted[i] = true;
        }
      }
    }
    if (pushed) {
      push(target, envelope_push(env));
      metrics_.messages_out.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void Server::deliver_after_commit(Delivery& delivery, bool stored) {
  {
    // The commit may even come before deliver_before_commit has run: then that pushes nothing.
    std::lock_guard dlock(delivery.mu);
    delivery.committed = true;
  }
  for (std::size_t i = 0; i < delivery.envelopes.size(); ++i) {
    const auto& env = delivery.envelopes[i];
    SessionPtr target = stored ? online_session(env.account, env.device) : nullptr;
    bool pushed = false;
    if (target) {
      std::lock_guard lock(target->mutex);
      std::lock_guard dlock(delivery.mu);
      // Until the backlog has been pushed once, the drain picks this envelope up in order; a
      // device too far behind goes back to draining, resumed by its acknowledgements (too many
      // in flight) or by its connection's on_writable (too many bytes unsent).
      if (delivery.pushed[i] && delivery.pushed_to[i] == target->connection->id()) {
        // pushed before the commit, on this very connection
      } else if (!target->drained || target->inflight.size() >= kMaxInflightPushes ||
                 !target->connection->writable()) {
        target->missed = true;
        target->drained = false;
      } else if (target->inflight.try_emplace(id_key(env.id), removing(env)).second) {
        // (Also when it went out before the commit on a connection that has closed since: the
        // device's new connection has drained without it. A copy it had already acknowledged
        // is dropped by envelope id.)
        delivery.pushed[i] = true;
        delivery.pushed_to[i] = target->connection->id();
        target->cursor = env.id;
        pushed = true;
      }
    }
    if (pushed) {
      push(target, envelope_push(env));
      metrics_.messages_out.fetch_add(1, std::memory_order_relaxed);
    }
    bool counted = false;
    {
      std::lock_guard dlock(delivery.mu);
      counted = delivery.counted[i];
      delivery.counted[i] = false;
    }
    if (counted) {
      std::lock_guard lock(mutex_);
      auto it = awaiting_commit_.find(online_key(env.account, env.device));
      if (it != awaiting_commit_.end() && --it->second == 0) awaiting_commit_.erase(it);
    }
  }
}

void Server::drain(const SessionPtr& s) {
  std::optional<EnvelopeId> cursor;
  AccountId account = 0;
  DeviceId device = 0;
  {
    std::lock_guard lock(s->mutex);
    if (!s->authenticated || s->draining || s->drained) return;
    // Refilled a page at a time: a client acknowledges each envelope, and a store read per
    // acknowledgement would cost more than the push it feeds.
    if (s->inflight.size() + kDrainBatch > kMaxInflightPushes) return;
    s->draining = true;
    cursor = s->cursor;
    account = s->account;
    device = s->device;
  }
  // Paced by bytes as well as by count: the drain stops while the connection has enough unsent
  // (net::Connection::writable) and its on_writable brings it back, so a backlog of large
  // messages leaves as fast as the device reads it, never as a burst into the outbound limit.
  bool full = false;
  while (!full) {
    std::size_t room = 0;
    {
      std::lock_guard lock(s->mutex);
      room = kMaxInflightPushes - std::min(kMaxInflightPushes, s->inflight.size());
    }
    if (room < kDrainBatch) break;
    if (!s->connection->writable()) break;
    const std::size_t want = kDrainBatch;
    auto batch = store_.messages().load(account, device, want, cursor, kDrainLoadBytes);
    if (!batch && batch.error() == store::Error::not_found) {
      // The cursor's envelope was acknowledged and deleted: continue from the head of the queue,
      // skipping what is already in flight.
      cursor.reset();
      batch = store_.messages().load(account, device, want, cursor, kDrainLoadBytes);
    }
    if (!batch) break;
    std::size_t bytes = 0;
    for (const auto& env : *batch) bytes += env.content.size();
    for (const auto& env : *batch) {
      bool pushing = false;
      {
        std::lock_guard lock(s->mutex);
        const std::string key = id_key(env.id);
        if (!s->acked.contains(key) && !s->inflight.contains(key)) {  // else pushed already
          if (!s->connection->writable()) {
            // This one and the rest wait, in order: the cursor stays before it.
            full = true;
            break;
          }
          s->inflight.try_emplace(key, removing(env));
          pushing = true;
        }
        cursor = env.id;
        s->cursor = env.id;
      }
      if (pushing) {
        push(s, envelope_push(env));
        metrics_.messages_out.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (full) break;
    if (batch->size() < want && bytes < kDrainLoadBytes) {
      std::lock_guard lock(s->mutex);
      if (s->missed) {  // a send committed during this pass: look once more
        s->missed = false;
        continue;
      }
      s->drained = true;
      s->draining = false;
      svc::Push done;
      done.mutable_queue_drained();
      push(s, std::move(done));
      return;
    }
  }
  std::lock_guard lock(s->mutex);
  s->draining = false;
}

void Server::on_ack(const SessionPtr& s, svc::Request& r) {
  svc::Response out;
  out.set_id(r.id());
  out.mutable_status()->set_code(svc::OK);
  const auto& ids = r.ack().envelope_ids();
  if (ids.size() > 4096) {
    fail(out, svc::BAD_REQUEST, "too many ids in one acknowledgement");
    reply(s, std::move(out));
    return;
  }
  std::vector<EnvelopeId> list;
  list.reserve(static_cast<std::size_t>(ids.size()));
  for (const auto& id : ids) {
    if (id.size() != 16) {
      fail(out, svc::BAD_REQUEST, "envelope ids are 16 bytes");
      reply(s, std::move(out));
      return;
    }
    EnvelopeId e{};
    std::memcpy(e.data(), id.data(), 16);
    list.push_back(e);
  }
  // The bucket counts only ids this connection was never given (or already acknowledged): those
  // are what a flood is made of. Ids of envelopes it was pushed are bounded by the pushes, and
  // refusing them would leave them in flight, holding delivery slots, for as long as the
  // connection lives (the client does not repeat an acknowledgement).
  std::size_t unknown = 0;
  {
    std::lock_guard lock(s->mutex);
    for (const auto& id : ids) unknown += s->inflight.contains(id) ? 0 : 1;
  }
  if (unknown > 0) {
    const auto wait = acks_.take(std::to_string(s->account), static_cast<double>(unknown));
    if (wait != 0 && unknown == static_cast<std::size_t>(ids.size())) {
      metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
      fail_retry(out, svc::RATE_LIMITED, "too many acknowledgements by this account", wait);
      reply(s, std::move(out));
      return;
    }
    // Refused or not, ids it was never given change nothing below.
  }
  // Only envelopes pushed on this connection (and not acknowledged yet) reach the store: an id
  // it was never given costs no write. (One pushed on an earlier connection is pushed again by
  // the drain, and its acknowledgement then counts.)
  std::vector<std::string> keys;
  std::vector<store::MessageStore::Removing> known;
  {
    std::lock_guard lock(s->mutex);
    std::size_t kept = 0;
    for (std::size_t i = 0; i < list.size(); ++i) {
      std::string key = ids[static_cast<int>(i)];
      auto it = s->inflight.find(key);
      if (it == s->inflight.end()) continue;
      known.push_back(std::move(it->second));
      s->inflight.erase(it);
      s->acked.insert(key);
      list[kept++] = list[i];
      keys.push_back(std::move(key));
    }
    list.resize(kept);
  }
  if (list.empty()) {
    reply(s, std::move(out));
    drain(s);
    return;
  }
  // Answered once the deletion is durable; the next pushes need not wait for that.
  store_.messages().remove_async(
      s->account, s->device, std::move(list),
      [this, s, keys = std::move(keys),
       out = std::move(out)](tl::expected<std::size_t, store::Error> removed) mutable {
        {
          std::lock_guard lock(s->mutex);
          for (const auto& key : keys) s->acked.erase(key);
        }
        if (!removed) {
          fail(out, code_of(removed.error()), "store failure");
        } else {
          metrics_.messages_acked.fetch_add(*removed, std::memory_order_relaxed);
          metrics_.queue_depth.fetch_sub(static_cast<std::int64_t>(*removed),
                                         std::memory_order_relaxed);
          update_stored_bytes_gauge();
        }
        reply(s, std::move(out));
      },
      std::move(known));
  drain(s);
}

void Server::on_list_devices(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  tl::expected<store::AccountRecord, store::Error> account =
      tl::unexpected(store::Error::not_found);
  const std::string& asked = r.list_devices().username();
  std::string own_name;
  {
    std::lock_guard lock(s->mutex);
    own_name = s->username;
  }
  const auto name = normalize_username(asked);
  if (asked.empty() || (name && *name == own_name)) {
    account = store_.accounts().find_account(s->account);
  } else {
    // Another account's list: one token whether the name is valid, unknown or taken, taken
    // before the lookup, so that testing names for existence costs what fetching lists does.
    if (const auto wait = device_lists_.take(std::to_string(s->account), 1)) {
      metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
      fail_retry(out, svc::RATE_LIMITED, "too many device lists asked for by this account", wait);
      return;
    }
    account = store_.accounts().find_account(name.value_or(std::string()));
  }
  if (!account) {
    fail(out, svc::NOT_FOUND, "no such user");
    return;
  }
  // Names and creation days are for the account's own devices: only they can decrypt the names,
  // and nobody else needs to know since when a device exists.
  const bool own = account->id == s->account;
  for (const auto& d : account->devices) {
    auto* info = out.mutable_list_devices()->add_devices();
    info->set_id(d.id);
    info->set_registration_id(d.registration_id);
    if (own) {
      info->set_created_day(d.created_day);
      info->set_name(str(d.name));
    }
  }
}

void Server::on_remove_device(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  const DeviceId target = r.remove_device().device_id();
  if (target == s->device) {
    fail(out, svc::BAD_REQUEST, "a device cannot remove itself; remove it from another device");
    return;
  }
  if (target == 1) {
    fail(out, svc::FORBIDDEN, "a linked device cannot remove the account's primary device");
    return;
  }
  auto removed = store_.accounts().remove_device(s->account, target);
  if (!removed) {
    fail(out, code_of(removed.error()), "no such device");
    return;
  }
  metrics_.queue_depth.fetch_sub(static_cast<std::int64_t>(*removed), std::memory_order_relaxed);
  update_stored_bytes_gauge();
  spdlog::info("event=remove_device account={} device={}", s->account, target);
  if (SessionPtr victim = online_session(s->account, target)) {
    sign_out(victim, "device removed from the account", true);
  }
  notify_devices_changed(s->account, target);
}

void Server::sign_out(const SessionPtr& target, const std::string& reason, bool close) {
  {
    std::lock_guard lock(mutex_);
    std::lock_guard slock(target->mutex);
    if (target->authenticated) {
      target->authenticated = false;
      auto on = online_.find(online_key(target->account, target->device));
      if (on != online_.end() && on->second.lock() == target) online_.erase(on);
      metrics_.authenticated_connections.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  if (close) target->connection->close(reason);
}

void Server::notify_devices_changed(AccountId account, DeviceId changed) {
  auto record = store_.accounts().find_account(account);
  if (!record) return;
  for (const auto& d : record->devices) {
    if (d.id == changed) continue;
    if (SessionPtr target = online_session(account, d.id)) {
      svc::Push p;
      p.mutable_devices_changed();
      push(target, std::move(p));
    }
  }
}

void Server::on_provisioning_open(const SessionPtr& s, svc::Response& out) {
  // Before login: counted per source address.
  if (const auto wait =
          provisioning_rate_.take("open/" + net::address_key(s->connection->remote_address()), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many provisioning addresses from this address", wait);
    return;
  }
  std::array<std::uint8_t, kProvisioningAddressSize> address{};
  rng_.fill(address);
  const std::string key = str(address);
  {
    std::lock_guard lock(mutex_);
    std::lock_guard slock(s->mutex);
    if (!s->provisioning_address.empty()) provisioning_.erase(s->provisioning_address);
    s->provisioning_address = key;
    provisioning_[key] = s;
  }
  // The new device now waits for a person to enter its code on another device: it may wait as
  // long as a link token lives (pings keep it from the idle timeout; it still counts as not
  // logged in, and its frames stay small).
  s->connection->extend_login_deadline(std::chrono::seconds(kLinkTokenLifetimeSeconds));
  out.mutable_provisioning_open()->set_address(key);
}

void Server::on_provisioning_send(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (const auto wait = provisioning_rate_.take("send/" + std::to_string(s->account), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many provisioning messages from this account", wait);
    return;
  }
  const auto& req = r.provisioning_send();
  if (req.address().size() != kProvisioningAddressSize || req.ciphertext().empty() ||
      req.ciphertext().size() > 64 * 1024) {
    fail(out, svc::BAD_REQUEST, "bad provisioning address or message size");
    return;
  }
  SessionPtr target;
  {
    std::lock_guard lock(mutex_);
    auto it = provisioning_.find(req.address());
    if (it != provisioning_.end()) target = it->second.lock();
  }
  if (!target) {
    fail(out, svc::NOT_FOUND, "no device is waiting at that provisioning address");
    return;
  }
  svc::Push p;
  p.mutable_provisioning()->set_ciphertext(req.ciphertext());
  push(target, std::move(p));
}

void Server::on_link_token(const SessionPtr& s, svc::Response& out) {
  if (const auto wait = link_tokens_.take(std::to_string(s->account), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many link tokens asked for by this account", wait);
    return;
  }
  std::array<std::uint8_t, kLinkTokenSize> token{};
  rng_.fill(token);
  if (auto ok = store_.tokens().create_link_token(token, s->account,
                                                  now_ms_() / 1000 + kLinkTokenLifetimeSeconds);
      !ok) {
    fail(out, code_of(ok.error()), "store failure");
    return;
  }
  out.mutable_link_token()->set_token(str(token));
}

void Server::on_link_device(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (const auto wait = registrations_.take(net::address_key(s->connection->remote_address()), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many device links from this address", wait);
    return;
  }
  const auto& req = r.link_device();
  auto username = normalize_username(req.username());
  if (!username || req.token().size() != kLinkTokenSize) {
    fail(out, svc::BAD_REQUEST, "bad username or token");
    return;
  }
  auto account = store_.accounts().find_account(*username);
  if (!account) {
    fail(out, svc::FORBIDDEN, "invalid link token");
    return;
  }
  if (auto e = check_new_device(req.device(), *username, str(account->identity_key)); !e.empty()) {
    fail(out, svc::BAD_REQUEST, e);
    return;
  }
  auto token_account = store_.tokens().use_link_token(view(req.token()), now_ms_() / 1000);
  if (!token_account || *token_account != account->id) {
    fail(out, svc::FORBIDDEN, "invalid link token");
    return;
  }
  auto id = store_.accounts().add_device(
      account->id, device_record(req.device(), 0, now_ms_() / 1000),
      signed_record(req.device().keys().signed_pre_key()), pre_key_records(req.device().keys()));
  if (!id) {
    fail(out, code_of(id.error()), "store failure");
    return;
  }
  spdlog::info("event=link_device account={} device={}", account->id, *id);
  s->connection->extend_login_deadline(std::chrono::seconds(config_.login_deadline_seconds));
  out.mutable_link_device()->set_device_id(*id);
  notify_devices_changed(account->id, *id);
}

void Server::on_recover(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  // A challenge is good for one attempt, whatever becomes of it.
  std::optional<std::array<std::uint8_t, kChallengeSize>> nonce;
  std::uint64_t issued = 0;
  {
    std::lock_guard lock(s->mutex);
    nonce = s->challenge;
    issued = s->challenge_at;
    s->challenge.reset();
  }
  if (const auto wait = registrations_.take(net::address_key(s->connection->remote_address()), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many recovery attempts from this address", wait);
    return;
  }
  const auto& req = r.recover();
  // The new device is signed by the new identity key, as a registration's first device is.
  auto username =
      check_new_account(req.username(), req.identity_key(), req.recovery_key(), req.device(), out);
  if (!username) return;
  if (req.signature().size() != crypto::kEd25519SignatureSize) {
    fail(out, svc::BAD_REQUEST, "signature must be 64 bytes");
    return;
  }
  if (!nonce || now_ms_() / 1000 > issued + kChallengeLifetimeSeconds) {
    fail(out, svc::BAD_REQUEST, "request a fresh challenge first");
    return;
  }
  // Counted by name before the account is looked up: names without an account are limited alike.
  if (const auto wait = recoveries_.take(*username, 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many recovery attempts for this account", wait);
    return;
  }
  auto account = store_.accounts().find_account(*username);
  if (!account && account.error() != store::Error::not_found) {
    fail(out, svc::INTERNAL, "store failure");
    return;
  }
  const auto refuse = [&](std::optional<AccountId> id) {
    if (id) {
      spdlog::info("event=recover account={} result=refused", *id);
    } else {
      spdlog::info("event=recover result=refused");
    }
    fail(out, svc::FORBIDDEN, kRecoveryRefused);
  };
  if (!account || account->recovery_key.empty()) {
    return refuse(account ? std::optional<AccountId>(account->id) : std::nullopt);
  }
  Bytes message(kRecoverContext.begin(), kRecoverContext.end());
  message.insert(message.end(), nonce->begin(), nonce->end());
  message.insert(message.end(), username->begin(), username->end());
  message.insert(message.end(), req.identity_key().begin(), req.identity_key().end());
  message.insert(message.end(), req.device().auth_key().begin(), req.device().auth_key().end());
  message.insert(message.end(), req.recovery_key().begin(), req.recovery_key().end());
  if (!crypto::ed25519_verify(account->recovery_key, message, view(req.signature()))) {
    return refuse(account->id);
  }
  auto removed = store_.accounts().recover_account(
      account->id, account->recovery_key, view(req.identity_key()),
      device_record(req.device(), 1, now_ms_() / 1000),
      signed_record(req.device().keys().signed_pre_key()), pre_key_records(req.device().keys()),
      view(req.recovery_key()));
  if (!removed) {
    // conflict: another recovery with the same code came first; this one's key is spent.
    if (removed.error() == store::Error::conflict) return refuse(account->id);
    fail(out, code_of(removed.error()), "store failure");
    return;
  }
  metrics_.queue_depth.fetch_sub(static_cast<std::int64_t>(*removed), std::memory_order_relaxed);
  update_stored_bytes_gauge();
  // The old devices are out: logged out at once, their connections closed. (This connection,
  // if one of them, stays open for the answer and the new device's login.)
  for (const auto& d : account->devices) {
    if (SessionPtr old = online_session(account->id, d.id)) {
      sign_out(old, "account recovered on another device", old != s);
    }
  }
  spdlog::info("event=recover account={} result=ok devices_removed={} envelopes_removed={}",
               account->id, account->devices.size(), *removed);
  out.mutable_recover()->set_device_id(1);
  s->connection->extend_login_deadline(std::chrono::seconds(config_.login_deadline_seconds));
}

void Server::on_identity_key(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  if (const auto wait = bundle_fetches_.take(std::to_string(s->account), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many key fetches by this account", wait);
    return;
  }
  auto username = normalize_username(r.identity_key().username());
  auto account = username ? store_.accounts().find_account(*username)
                          : tl::expected<store::AccountRecord, store::Error>(
                                tl::unexpected(store::Error::not_found));
  if (!account) {
    fail(out, account.error() == store::Error::not_found ? svc::NOT_FOUND : svc::INTERNAL,
         account.error() == store::Error::not_found ? "no such user" : "store failure");
    return;
  }
  out.mutable_identity_key()->set_identity_key(str(account->identity_key));
}

// Block or unblock (service.proto BlockRequest): the list is the account's, for every device.
// Both are idempotent; only input that names no other account is refused.
void Server::on_block(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  const bool block = r.has_block();
  auto username = normalize_username(block ? r.block().username() : r.unblock().username());
  if (!username) {
    fail(out, svc::BAD_REQUEST, "invalid username");
    return;
  }
  // The token is taken before the lookup: otherwise block and unblock would tell which usernames
  // exist, as fast as one can ask.
  if (const auto wait = block_changes_.take(std::to_string(s->account), 1)) {
    metrics_.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many block changes by this account", wait);
    return;
  }
  auto account = store_.accounts().find_account(*username);
  if (!account) {
    fail(out, account.error() == store::Error::not_found ? svc::NOT_FOUND : svc::INTERNAL,
         account.error() == store::Error::not_found ? "no such user" : "store failure");
    return;
  }
  if (account->id == s->account) {
    fail(out, svc::BAD_REQUEST,
         block ? "an account cannot block itself" : "an account cannot unblock itself");
    return;
  }
  if (block) {
    if (auto ok = store_.blocks().block(s->account, account->id); !ok) {
      if (ok.error() == store::Error::conflict) {
        fail(out, svc::BAD_REQUEST, "the block list is full");
      } else {
        fail(out, code_of(ok.error()), "store failure");
      }
    }
    return;
  }
  if (auto ok = store_.blocks().unblock(s->account, account->id); !ok)
    fail(out, code_of(ok.error()), "store failure");
}

void Server::on_list_blocks(const SessionPtr& s, svc::Response& out) {
  auto names = store_.blocks().blocked(s->account);
  if (!names) {
    fail(out, code_of(names.error()), "store failure");
    return;
  }
  auto* list = out.mutable_list_blocks();
  for (auto& n : *names) list->add_usernames(std::move(n));
}

void Server::announce_next_key(std::optional<NextServerKey> next) {
  std::shared_ptr<const svc::Push> push;
  if (next) {
    auto p = std::make_shared<svc::Push>();
    p->mutable_server_key()->set_next_public_key(str(next->public_key));
    p->mutable_server_key()->set_signature(str(next->signature));
    push = std::move(p);
  }
  std::lock_guard lock(next_key_mutex_);
  // A reload that announces the same key keeps the count of devices told.
  const bool same =
      push && next_key_ &&
      push->server_key().next_public_key() == next_key_->server_key().next_public_key();
  if (!same) {
    told_next_key_.clear();
    metrics_.next_key_devices_told.store(0, std::memory_order_relaxed);
  }
  next_key_ = std::move(push);
}

void Server::maintenance() {
  auto expired = store_.messages().expire(now_ms_() / 1000);
  if (expired && *expired > 0) {
    metrics_.queue_depth.fetch_sub(static_cast<std::int64_t>(*expired), std::memory_order_relaxed);
    spdlog::info("event=expire envelopes={}", *expired);
  }
  update_stored_bytes_gauge();
  (void)attachments_.sweep();
}

std::vector<std::string> Server::create_invites(std::size_t count, std::uint64_t days) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < count; ++i) {
    std::array<std::uint8_t, kInviteChars> raw{};
    rng_.fill(raw);
    std::string code;
    for (std::size_t j = 0; j < raw.size(); ++j) {
      if (j > 0 && j % kInviteGroup == 0) code += '-';
      code += kInviteAlphabet[raw[j] % kInviteAlphabet.size()];
    }
    if (store_.tokens().create_invite(code, now_ms_() / 1000 + days * 86400)) out.push_back(code);
  }
  return out;
}

}  // namespace sotto::server
