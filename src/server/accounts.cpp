#include "server/accounts.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "contract/signatures.h"
#include "crypto/ed25519.h"
#include "net/address_key.h"
#include "net/device_authorization.h"
#include "server/keys.h"
#include "server/kt.h"
#include "server/limits.h"
#include "server/router.h"

namespace sotto::server {

namespace svc = sotto::wire::service;
using store::AccountId;
using store::DeviceId;

namespace {

// An AuthenticateRequest: a 32-character username, a device id and a 64-byte signature take
// about 110 bytes; anything much larger is not one.
constexpr std::size_t kMaxAuthorizationProofBytes = 256;
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

std::string check_new_device(const svc::NewDevice& d, const std::string& username,
                             const std::string& identity_key) {
  if (d.registration_id() == 0 || d.registration_id() > 0x7FFFFFFF)
    return "registration id out of range";
  if (d.auth_key().size() != crypto::kEd25519PublicKeySize) return "auth key must be 32 bytes";
  if (d.name().size() > kMaxDeviceNameBytes) return "device name above 256 bytes";
  if (!identity_signed(identity_key, contract::device_binding(username, view(d.auth_key())),
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

}  // namespace

AccountsService::AccountsService(Context& ctx) : ctx_(ctx) {}

void AccountsService::add_routes(Router& router) {
  router_ = &router;
  using Access = Router::Access;
  // Registrations, device links and recoveries share one bucket per source address; the
  // recovery takes its token inside (after spending the challenge).
  router.route(svc::Request::kRegister, Access::open,
               [this](Call& c) {
                 on_register(c.session, c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_address(ctx_.limits.registrations, "",
                                         "too many registrations from this address")});
  router.route(svc::Request::kChallenge, Access::open, [this](Call& c) {
    on_challenge(c.session, c.out);
    return Outcome::reply;
  });
  router.route(svc::Request::kAuthenticate, Access::open,
               [this](Call& c) {
                 on_authenticate(c.session, c.request, c.out);
                 return c.out.status().code() == svc::OK ? Outcome::logged_in : Outcome::reply;
               },
               {router.limit_per_address(ctx_.limits.logins, "",
                                         "too many login attempts from this address")});
  router.on_upgrade_login([this](const SessionPtr& s, std::string_view authorization) {
    return login_in_upgrade(s, authorization);
  });
  router.route(svc::Request::kRecover, Access::open, [this](Call& c) {
    on_recover(c.session, c.request, c.out);
    return Outcome::reply;
  });
  router.route(svc::Request::kListDevices, Access::logged_in, [this](Call& c) {
    on_list_devices(c.session, c.request, c.out);
    return Outcome::reply;
  });
  router.route(svc::Request::kRemoveDevice, Access::logged_in, [this](Call& c) {
    on_remove_device(c.session, c.request, c.out);
    return Outcome::reply;
  });
  router.route(svc::Request::kLinkToken, Access::logged_in,
               [this](Call& c) {
                 on_link_token(c.session, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_account(ctx_.limits.link_tokens, "",
                                         "too many link tokens asked for by this account")});
  router.route(svc::Request::kLinkDevice, Access::open,
               [this](Call& c) {
                 on_link_device(c.session, c.request, c.out);
                 return Outcome::reply;
               },
               {router.limit_per_address(ctx_.limits.registrations, "",
                                         "too many device links from this address")});
}

// The login proof a client put in its upgrade request (service.proto, LoginResult): the same
// checks as an AuthenticateRequest frame, answered by a push before anything else.
bool AccountsService::login_in_upgrade(const SessionPtr& s, std::string_view authorization) {
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
    ctx_.metrics.login_failures.fetch_add(1, std::memory_order_relaxed);
    fail(out, svc::BAD_REQUEST,
         "malformed Authorization header: expected \"SottoDevice \" and an AuthenticateRequest "
         "with channel_binding, in base64url without padding");
  } else {
    // The route's filters too (the per-address bucket), as for an AuthenticateRequest frame.
    Call call{s, r, out};
    (void)router_->run(call);
  }
  const bool ok = out.status().code() == svc::OK;
  svc::Push p;
  *p.mutable_login_result()->mutable_status() = std::move(*out.mutable_status());
  send_push(*s, std::move(p));
  return ok;
}

// First of what a device gets once logged in (the delivery and keys services follow): the
// server's next key while one is announced.
void AccountsService::after_login(const SessionPtr& s) {
  std::shared_ptr<const svc::Push> next_key;
  {
    std::lock_guard lock(next_key_mutex_);
    next_key = next_key_;
    if (next_key) {
      told_next_key_.emplace(s->account, s->device);
      ctx_.metrics.next_key_devices_told.store(static_cast<std::int64_t>(told_next_key_.size()),
                                               std::memory_order_relaxed);
    }
  }
  if (next_key) send_push(*s, svc::Push(*next_key));
}

void AccountsService::on_register(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  const auto& req = r.register_();
  auto username =
      check_new_account(req.username(), req.identity_key(), req.recovery_key(), req.device(), out);
  if (!username) return;
  if (auto existing = ctx_.store.accounts().find_account(*username); existing) {
    fail(out, svc::CONFLICT, "username taken");
    return;
  }
  const std::uint64_t now_s = ctx_.now_ms() / 1000;
  if (ctx_.config.invite_only) {
    if (req.invite_code().empty()) {
      fail(out, svc::INVITE_REQUIRED, "this server is invite-only: an invite code is required");
      return;
    }
    const std::string code = req.invite_code().size() <= kMaxInviteInput
                                 ? normalize_invite(req.invite_code())
                                 : std::string();
    if (code.empty() || !ctx_.store.tokens().use_invite(code, now_s)) {
      fail(out, svc::INVITE_REQUIRED, "the invite code is unknown, used or expired");
      return;
    }
  }
  // The name's VRF proof for the transparency log, before the store's write lock is taken.
  if (ctx_.kt != nullptr) ctx_.kt->log().warm(*username);
  auto id = ctx_.store.accounts().create_account(
      *username, view(req.identity_key()), device_record(req.device(), 1, now_s),
      signed_record(req.device().keys().signed_pre_key()), pre_key_records(req.device().keys()),
      view(req.recovery_key()));
  if (!id) {
    fail(out, code_of(id.error()),
         id.error() == store::Error::conflict ? "username taken" : "store failure");
    return;
  }
  ctx_.metrics.registrations.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("event=register account={} device=1", *id);
  // Progress before login: the new device now has the whole deadline again to log in.
  s->connection->extend_login_deadline(std::chrono::seconds(ctx_.config.login_deadline_seconds));
  out.mutable_register_()->set_device_id(1);
}

void AccountsService::on_challenge(const SessionPtr& s, svc::Response& out) {
  std::array<std::uint8_t, kChallengeSize> nonce{};
  ctx_.rng.fill(nonce);
  {
    std::lock_guard lock(s->mutex);
    s->challenge = nonce;
    s->challenge_at = ctx_.now_ms() / 1000;
  }
  out.mutable_challenge()->set_nonce(str(nonce));
}

void AccountsService::on_authenticate(const SessionPtr& s, svc::Request& r, svc::Response& out) {
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
    ctx_.metrics.login_failures.fetch_add(1, std::memory_order_relaxed);
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
  } else if (!nonce || ctx_.now_ms() / 1000 > issued + kChallengeLifetimeSeconds) {
    login_failed("request a fresh challenge first");
    return;
  }
  auto username = normalize_username(req.username());
  auto account = username ? ctx_.store.accounts().find_account(*username)
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
  const Bytes signed_message = contract::login_message(req.channel_binding(), *nonce);
  if (!crypto::ed25519_verify(device->auth_key, signed_message, view(req.signature()))) {
    login_failed("signature does not verify");
    return;
  }
  // Per account too, and only once the proof holds: the per-address limit is generous because a
  // NAT's users share it, and counting failed proofs here would let anyone lock an account out.
  if (const auto wait = ctx_.limits.account_logins.take(std::to_string(account->id), 1)) {
    ctx_.metrics.login_failures.fetch_add(1, std::memory_order_relaxed);
    ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many logins for this account", wait);
    return;
  }
  // Two copies of one device's data would fork its ratchets: while one copy is online, another
  // is refused (SessionRegistry::sign_in).
  const auto [replaced, in_use] =
      ctx_.registry.sign_in(s, account->id, device->id, account->username, req.instance());
  if (in_use) {
    login_failed("this device is connected from another copy of its data", svc::DEVICE_IN_USE);
    return;
  }
  if (replaced) replaced->connection->close("replaced by a newer connection of this device");
  // Logged in: the transport lifts the limits it keeps on connections that are not.
  s->connection->promote();
  ctx_.metrics.logins.fetch_add(1, std::memory_order_relaxed);
  ctx_.metrics.authenticated_connections.fetch_add(1, std::memory_order_relaxed);
}

void AccountsService::on_list_devices(const SessionPtr& s, svc::Request& r, svc::Response& out) {
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
    account = ctx_.store.accounts().find_account(s->account);
  } else {
    // Another account's list: one token whether the name is valid, unknown or taken, taken
    // before the lookup, so that testing names for existence costs what fetching lists does.
    if (const auto wait = ctx_.limits.device_lists.take(std::to_string(s->account), 1)) {
      ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
      fail_retry(out, svc::RATE_LIMITED, "too many device lists asked for by this account", wait);
      return;
    }
    account = ctx_.store.accounts().find_account(name.value_or(std::string()));
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
  if (ctx_.kt != nullptr) {
    (void)fill_kt_proof(*ctx_.kt, account->username, r.list_devices().kt_known_size(),
                        *out.mutable_list_devices()->mutable_kt(), out);
  }
}

void AccountsService::on_remove_device(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  const DeviceId target = r.remove_device().device_id();
  if (target == s->device) {
    fail(out, svc::BAD_REQUEST, "a device cannot remove itself; remove it from another device");
    return;
  }
  if (target == 1) {
    fail(out, svc::FORBIDDEN, "a linked device cannot remove the account's primary device");
    return;
  }
  auto removed = ctx_.store.accounts().remove_device(s->account, target);
  if (!removed) {
    fail(out, code_of(removed.error()), "no such device");
    return;
  }
  ctx_.metrics.queue_depth.fetch_sub(static_cast<std::int64_t>(*removed),
                                     std::memory_order_relaxed);
  ctx_.update_stored_bytes_gauge();
  spdlog::info("event=remove_device account={} device={}", s->account, target);
  if (SessionPtr victim = ctx_.registry.online(s->account, target)) {
    ctx_.registry.sign_out(victim, "device removed from the account", true);
  }
  notify_devices_changed(s->account, target);
}

void AccountsService::notify_devices_changed(AccountId account, DeviceId changed) {
  auto record = ctx_.store.accounts().find_account(account);
  if (!record) return;
  std::vector<DeviceId> others;
  for (const auto& d : record->devices) {
    if (d.id != changed) others.push_back(d.id);
  }
  svc::Push p;
  p.mutable_devices_changed();
  ctx_.registry.broadcast(account, others, p);
}

void AccountsService::on_link_token(const SessionPtr& s, svc::Response& out) {
  std::array<std::uint8_t, kLinkTokenSize> token{};
  ctx_.rng.fill(token);
  if (auto ok = ctx_.store.tokens().create_link_token(
          token, s->account, ctx_.now_ms() / 1000 + kLinkTokenLifetimeSeconds);
      !ok) {
    fail(out, code_of(ok.error()), "store failure");
    return;
  }
  out.mutable_link_token()->set_token(str(token));
}

void AccountsService::on_link_device(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  const auto& req = r.link_device();
  auto username = normalize_username(req.username());
  if (!username || req.token().size() != kLinkTokenSize) {
    fail(out, svc::BAD_REQUEST, "bad username or token");
    return;
  }
  auto account = ctx_.store.accounts().find_account(*username);
  if (!account) {
    fail(out, svc::FORBIDDEN, "invalid link token");
    return;
  }
  if (auto e = check_new_device(req.device(), *username, str(account->identity_key)); !e.empty()) {
    fail(out, svc::BAD_REQUEST, e);
    return;
  }
  auto token_account = ctx_.store.tokens().use_link_token(view(req.token()), ctx_.now_ms() / 1000);
  if (!token_account || *token_account != account->id) {
    fail(out, svc::FORBIDDEN, "invalid link token");
    return;
  }
  auto id = ctx_.store.accounts().add_device(
      account->id, device_record(req.device(), 0, ctx_.now_ms() / 1000),
      signed_record(req.device().keys().signed_pre_key()), pre_key_records(req.device().keys()));
  if (!id) {
    fail(out, code_of(id.error()), "store failure");
    return;
  }
  spdlog::info("event=link_device account={} device={}", account->id, *id);
  s->connection->extend_login_deadline(std::chrono::seconds(ctx_.config.login_deadline_seconds));
  out.mutable_link_device()->set_device_id(*id);
  notify_devices_changed(account->id, *id);
}

void AccountsService::on_recover(const SessionPtr& s, svc::Request& r, svc::Response& out) {
  // A challenge is good for one attempt, whatever becomes of it.
  std::optional<std::array<std::uint8_t, kChallengeSize>> nonce;
  std::uint64_t issued = 0;
  {
    std::lock_guard lock(s->mutex);
    nonce = s->challenge;
    issued = s->challenge_at;
    s->challenge.reset();
  }
  if (const auto wait =
          ctx_.limits.registrations.take(net::address_key(s->connection->remote_address()), 1)) {
    ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
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
  if (!nonce || ctx_.now_ms() / 1000 > issued + kChallengeLifetimeSeconds) {
    fail(out, svc::BAD_REQUEST, "request a fresh challenge first");
    return;
  }
  // Counted by name before the account is looked up: names without an account are limited alike.
  if (const auto wait = ctx_.limits.recoveries.take(*username, 1)) {
    ctx_.metrics.rate_limited.fetch_add(1, std::memory_order_relaxed);
    fail_retry(out, svc::RATE_LIMITED, "too many recovery attempts for this account", wait);
    return;
  }
  auto account = ctx_.store.accounts().find_account(*username);
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
  const Bytes message =
      contract::recovery_message(*nonce, *username, view(req.identity_key()),
                                 view(req.device().auth_key()), view(req.recovery_key()));
  if (!crypto::ed25519_verify(account->recovery_key, message, view(req.signature()))) {
    return refuse(account->id);
  }
  auto removed = ctx_.store.accounts().recover_account(
      account->id, account->recovery_key, view(req.identity_key()),
      device_record(req.device(), 1, ctx_.now_ms() / 1000),
      signed_record(req.device().keys().signed_pre_key()), pre_key_records(req.device().keys()),
      view(req.recovery_key()));
  if (!removed) {
    // conflict: another recovery with the same code came first; this one's key is spent.
    if (removed.error() == store::Error::conflict) return refuse(account->id);
    fail(out, code_of(removed.error()), "store failure");
    return;
  }
  ctx_.metrics.queue_depth.fetch_sub(static_cast<std::int64_t>(*removed),
                                     std::memory_order_relaxed);
  ctx_.update_stored_bytes_gauge();
  // The old devices are out: logged out at once, their connections closed. (This connection,
  // if one of them, stays open for the answer and the new device's login.)
  for (const auto& d : account->devices) {
    if (SessionPtr old = ctx_.registry.online(account->id, d.id)) {
      ctx_.registry.sign_out(old, "account recovered on another device", old != s);
    }
  }
  spdlog::info("event=recover account={} result=ok devices_removed={} envelopes_removed={}",
               account->id, account->devices.size(), *removed);
  out.mutable_recover()->set_device_id(1);
  s->connection->extend_login_deadline(std::chrono::seconds(ctx_.config.login_deadline_seconds));
}

void AccountsService::announce_next_key(std::optional<NextServerKey> next) {
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
    ctx_.metrics.next_key_devices_told.store(0, std::memory_order_relaxed);
  }
  next_key_ = std::move(push);
}

std::vector<std::string> AccountsService::create_invites(std::size_t count, std::uint64_t days) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < count; ++i) {
    std::array<std::uint8_t, kInviteChars> raw{};
    ctx_.rng.fill(raw);
    std::string code;
    for (std::size_t j = 0; j < raw.size(); ++j) {
      if (j > 0 && j % kInviteGroup == 0) code += '-';
      code += kInviteAlphabet[raw[j] % kInviteAlphabet.size()];
    }
    if (ctx_.store.tokens().create_invite(code, ctx_.now_ms() / 1000 + days * 86400))
      out.push_back(code);
  }
  return out;
}

}  // namespace sotto::server
