// Account set-up flows of the engine: registering, recovering with the recovery code, linking a
// new device, and opening an account of the data directory.
#include <algorithm>
#include <cstring>

#include "client/device_name.h"
#include "client/engine.h"
#include "client/errors.h"
#include "client/provisioning.h"
#include "client/recovery_code.h"
#include "content.pb.h"
#include "contract/signatures.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

Result<void> check_server(const sotto::Server& server) {
  if (server.host.empty() || server.port == 0) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "the server must be given as HOST:PORT"));
  }
  if (!server.fingerprint.empty() &&
      (server.fingerprint.size() != 64 || !from_hex(server.fingerprint))) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the server fingerprint must be 64 hex digits (SHA-256)"));
  }
  return {};
}

Result<void> check_policy(const Options& options) {
  if (options.trust_policy && !parse_trust_policy(*options.trust_policy)) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the trust policy is on-first-use, always or never"));
  }
  return {};
}

Endpoint endpoint_of(const sotto::Server& server) {
  Endpoint e{server.host, server.port, {}};
  if (!server.fingerprint.empty()) e.pins.push_back(server.fingerprint);
  return e;
}

store::AccountSettings new_settings(const std::string& username, const sotto::Server& server,
                                    const std::string& pin,
                                    const protocol::IdentityKeyPair& identity,
                                    const DeviceKeys& keys, const Options& options) {
  store::AccountSettings s;
  s.username = username;
  s.device_id = 0;  // set once the server has registered the device
  s.server_host = server.host;
  s.server_port = server.port;
  s.server_fingerprint = pin;
  s.auth_key = keys.auth_key.clone();
  s.identity = identity.clone();
  s.registration_id = keys.registration_id;
  s.next_pre_key_id = next_pre_key_id(1, kPreKeyBatch);
  s.next_signed_pre_key_id = 2;
  s.trust_policy = options.trust_policy.value_or(kTrustOnFirstUse);
  return s;
}

// A new account store in the data directory, removed again (with the lock file) unless kept.
class NewStore {
 public:
  NewStore(const Options& options, std::string username)
      : options_(options), username_(std::move(username)) {}
  ~NewStore() {
    if (kept_) return;
    store_.reset();
    if (created_) remove_store_files(options_.data_dir, username_);
    lock_.remove_file();
  }

  // Takes the account's lock; fails when the data directory already holds the account.
  Result<void> lock(const std::string& exists_message) {
    auto lock = AccountLock::acquire(options_.data_dir, username_, options_.lock_wait);
    if (!lock) return tl::unexpected(lock.error());
    lock_ = std::move(*lock);
    const auto existing = store::ClientStore::accounts(options_.data_dir);
    if (std::find(existing.begin(), existing.end(), username_) != existing.end()) {
      existing_ = true;
      return tl::unexpected(make_error(ErrorCode::account_exists, exists_message));
    }
    return {};
  }

  Result<void> create(const store::AccountSettings& settings, const DeviceKeys& keys) {
    auto created = store::ClientStore::create(options_.data_dir, settings, options_.passphrase);
    if (!created) return tl::unexpected(from_store(created.error()));
    created_ = true;
    store_ = std::move(*created);
    return save_device_keys(*store_, keys);
  }

  store::ClientStore& store() { return *store_; }

  // The account is set up: hands the store and lock to it.
  std::unique_ptr<Engine> keep(Environment env,
                               const std::function<Engine*(std::unique_ptr<Account>)>& make) {
    kept_ = true;
    return std::unique_ptr<Engine>(
        make(std::make_unique<Account>(options_, std::move(store_), std::move(lock_), env)));
  }

  bool existing() const { return existing_; }

 private:
  const Options& options_;
  std::string username_;
  AccountLock lock_;
  std::unique_ptr<store::ClientStore> store_;
  bool created_ = false;
  bool kept_ = false;
  bool existing_ = false;
};

Result<std::unique_ptr<Connection>> open_unauthenticated(
    const Environment& env, const sotto::Server& server, Connection::PushHandler on_push = nullptr,
    Connection::CloseHandler on_close = nullptr) {
  return Connection::open(*env.connector, endpoint_of(server), std::move(on_push),
                          std::move(on_close));
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::register_account(const Options& options,
                                                         const std::string& username_in,
                                                         const sotto::Server& server,
                                                         const std::string& invite_code,
                                                         Environment env) {
  auto username = normalize_username(username_in);
  if (!username) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "a username has 3-32 characters of a-z, 0-9, '.', '_' or '-' "
                                     "and starts with a letter or digit"));
  }
  if (auto ok = check_server(server); !ok) return tl::unexpected(ok.error());
  if (auto ok = check_policy(options); !ok) return tl::unexpected(ok.error());
  NewStore fresh(options, *username);
  if (auto ok = fresh.lock("an account with this name already exists in the data directory"); !ok) {
    return tl::unexpected(ok.error());
  }
  auto conn = open_unauthenticated(env, server);
  if (!conn) return tl::unexpected(conn.error());

  crypto::Rng& rng = *env.rng;
  const protocol::IdentityKeyPair identity = protocol::KeyPair::generate(rng);
  const DeviceKeys keys = generate_device_keys(rng, identity, env.clock->now_ms() / 1000);
  const RecoveryCode code = RecoveryCode::generate(rng);
  const crypto::Ed25519KeyPair recovery_key = derive_recovery_auth_key(code);
  store::AccountSettings settings =
      new_settings(*username, server, (*conn)->server_pin(), identity, keys, options);
  if (auto ok = fresh.create(settings, keys); !ok) return tl::unexpected(ok.error());

  svc::Request request;
  auto* reg = request.mutable_register_();
  reg->set_username(*username);
  reg->set_identity_key(bytes_string(identity.public_key.serialize()));
  reg->set_invite_code(invite_code);
  reg->set_recovery_key(bytes_string(recovery_key.public_key()));
  fill_new_device(*reg->mutable_device(), *username, identity, keys, rng, {});
  auto response = (*conn)->call(std::move(request), options.request_timeout);
  if (!response) return tl::unexpected(response.error());
  switch (response->status().code()) {
    case svc::OK:
      break;
    case svc::CONFLICT:
      return tl::unexpected(make_error(ErrorCode::account_exists,
                                       "that username is taken on the server (if it is yours, "
                                       "take it back with its recovery code)"));
    case svc::INVITE_REQUIRED:
      return tl::unexpected(make_error(ErrorCode::server,
                                       "the server is invite-only: a valid, unused invite code "
                                       "is needed"));
    default:
      return tl::unexpected(status_error(*response));
  }
  settings.device_id = response->register_().device_id();
  if (auto ok = fresh.store().save_settings(settings); !ok) {
    return tl::unexpected(from_store(ok.error()));
  }
  (void)fresh.store().save_value(kRecoveryVerifierValue, recovery_key.public_key());
  (*conn)->close();
  auto engine = fresh.keep(std::move(env),
                           [](std::unique_ptr<Account> a) { return new Engine(std::move(a)); });
  crypto::SecretBuffer text = code.text();
  engine->recovery_code_ = bytes_string(text.view());
  return engine;
}

Result<std::unique_ptr<Engine>> Engine::recover(const Options& options,
                                                const std::string& username_in,
                                                const std::string& code_text,
                                                const sotto::Server& server, Environment env) {
  auto username = normalize_username(username_in);
  if (!username) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  auto code = RecoveryCode::parse(code_text);
  if (!code) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "a recovery code has 24 letters and digits (A-Z, 2-7) in "
                                     "groups of four: " +
                                         std::string(to_string(code.error()))));
  }
  if (auto ok = check_server(server); !ok) return tl::unexpected(ok.error());
  if (auto ok = check_policy(options); !ok) return tl::unexpected(ok.error());
  NewStore fresh(options, *username);
  if (auto ok = fresh.lock("this data directory already holds the account: recover it into "
                           "another data directory");
      !ok) {
    return tl::unexpected(ok.error());
  }
  auto conn = open_unauthenticated(env, server);
  if (!conn) return tl::unexpected(conn.error());
  svc::Request challenge;
  challenge.mutable_challenge();
  auto nonce = (*conn)->call(std::move(challenge), options.request_timeout);
  if (!nonce) return tl::unexpected(nonce.error());
  if (nonce->status().code() != svc::OK) return tl::unexpected(status_error(*nonce));

  crypto::Rng& rng = *env.rng;
  const protocol::IdentityKeyPair identity = protocol::KeyPair::generate(rng);
  const DeviceKeys keys = generate_device_keys(rng, identity, env.clock->now_ms() / 1000);
  const RecoveryCode next_code = RecoveryCode::generate(rng);
  const crypto::Ed25519KeyPair next_key = derive_recovery_auth_key(next_code);
  const crypto::Ed25519KeyPair proof_key = derive_recovery_auth_key(*code);
  store::AccountSettings settings =
      new_settings(*username, server, (*conn)->server_pin(), identity, keys, options);
  if (auto ok = fresh.create(settings, keys); !ok) return tl::unexpected(ok.error());

  const auto identity_bytes = identity.public_key.serialize();
  const Bytes proof = contract::recovery_message(
      as_bytes(nonce->challenge().nonce()), *username, ByteView(identity_bytes),
      ByteView(keys.auth_key.public_key()), ByteView(next_key.public_key()));
  svc::Request request;
  auto* r = request.mutable_recover();
  r->set_username(*username);
  r->set_identity_key(bytes_string(identity_bytes));
  fill_new_device(*r->mutable_device(), *username, identity, keys, rng, {});
  r->set_recovery_key(bytes_string(next_key.public_key()));
  r->set_signature(bytes_string(proof_key.sign(proof)));
  auto response = (*conn)->call(std::move(request), options.request_timeout);
  if (!response) return tl::unexpected(response.error());
  switch (response->status().code()) {
    case svc::OK:
      break;
    case svc::FORBIDDEN:
      return tl::unexpected(make_error(ErrorCode::forbidden,
                                       "recovery refused: the code does not match the account "
                                       "(or the account cannot be recovered)"));
    case svc::RATE_LIMITED:
      return tl::unexpected(
          make_error(ErrorCode::rate_limited, "too many recovery attempts; try again later"));
    default:
      return tl::unexpected(status_error(*response));
  }
  settings.device_id = response->recover().device_id();
  if (auto ok = fresh.store().save_settings(settings); !ok) {
    return tl::unexpected(from_store(ok.error()));
  }
  (void)fresh.store().save_value(kRecoveryVerifierValue, next_key.public_key());
  (*conn)->close();
  auto engine = fresh.keep(std::move(env),
                           [](std::unique_ptr<Account> a) { return new Engine(std::move(a)); });
  crypto::SecretBuffer text = next_code.text();
  engine->recovery_code_ = bytes_string(text.view());
  return engine;
}

Result<std::unique_ptr<Engine>> Engine::open(const Options& options, const std::string& username_in,
                                             Environment env) {
  std::string username;
  if (username_in.empty()) {
    const auto names = store::ClientStore::accounts(options.data_dir);
    if (names.empty()) {
      return tl::unexpected(make_error(ErrorCode::no_account, "no account in the data directory"));
    }
    if (names.size() > 1) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      return tl::unexpected(
          make_error(ErrorCode::ambiguous_account,
                     "several accounts in the data directory (" + list + "); choose one"));
    }
    username = names.front();
  } else {
    auto n = normalize_username(username_in);
    if (!n) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid account name"));
    username = *n;
  }
  if (auto ok = check_policy(options); !ok) return tl::unexpected(ok.error());
  auto lock = AccountLock::acquire(options.data_dir, username, options.lock_wait);
  if (!lock) return tl::unexpected(lock.error());
  auto opened = store::ClientStore::open(options.data_dir, username, options.passphrase);
  if (!opened) return tl::unexpected(from_store(opened.error()));
  std::unique_ptr<store::ClientStore> store = std::move(*opened);
  if (store->settings().device_id == 0) {
    return tl::unexpected(make_error(ErrorCode::store,
                                     "the account's registration never completed; delete its "
                                     "files from the data directory and register again"));
  }
  if (options.trust_policy && *options.trust_policy != store->settings().trust_policy) {
    auto s = store->settings().clone();
    s.trust_policy = *options.trust_policy;
    if (auto ok = store->save_settings(s); !ok) return tl::unexpected(from_store(ok.error()));
  }
  return std::unique_ptr<Engine>(new Engine(
      std::make_unique<Account>(options, std::move(store), std::move(*lock), std::move(env))));
}

Result<std::unique_ptr<Engine>> Engine::link(const Options& options, const sotto::Server& server,
                                             const std::function<void(const LinkPrompt&)>& show,
                                             std::chrono::seconds timeout,
                                             const LinkOptions& link_options, Environment env) {
  if (auto ok = check_server(server); !ok) return tl::unexpected(ok.error());
  if (auto ok = check_policy(options); !ok) return tl::unexpected(ok.error());
  std::optional<std::string> device_name;
  if (!link_options.device_name.empty()) {
    auto name = normalize_device_name(link_options.device_name);
    if (!name) {
      return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                       "a device name has 1-64 bytes of text without control "
                                       "characters: " +
                                           std::string(to_string(name.error()))));
    }
    device_name = std::move(*name);
  }
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<std::string> ciphertext;
    bool closed = false;
  };
  auto waiter = std::make_shared<Waiter>();
  auto conn = open_unauthenticated(
      env, server,
      [waiter](svc::Push&& p) {
        if (!p.has_provisioning()) return;
        std::lock_guard lock(waiter->mu);
        if (!waiter->ciphertext) waiter->ciphertext = p.provisioning().ciphertext();
        waiter->cv.notify_all();
      },
      [waiter](const std::string&) {
        std::lock_guard lock(waiter->mu);
        waiter->closed = true;
        waiter->cv.notify_all();
      });
  if (!conn) return tl::unexpected(conn.error());
  Connection& c = **conn;

  svc::Request open_request;
  open_request.mutable_provisioning_open();
  auto opened = c.call(std::move(open_request), options.request_timeout);
  if (!opened) return tl::unexpected(opened.error());
  if (opened->status().code() != svc::OK) return tl::unexpected(status_error(*opened));
  const std::string& address = opened->provisioning_open().address();
  if (address.size() != kProvisioningAddressSize) {
    return tl::unexpected(
        make_error(ErrorCode::server, "the server gave a malformed provisioning address"));
  }
  crypto::Rng& rng = *env.rng;
  const crypto::X25519KeyPair ephemeral = crypto::x25519_generate(rng);
  LinkCode code;
  std::memcpy(code.address.data(), address.data(), address.size());
  code.public_key = ephemeral.public_key;
  const std::string text = encode_link_code(code);
  show(LinkPrompt{text, text});

  std::string sealed;
  {
    std::unique_lock lock(waiter->mu);
    if (!waiter->cv.wait_for(lock, timeout, [&] { return waiter->ciphertext || waiter->closed; })) {
      return tl::unexpected(make_error(ErrorCode::timeout,
                                       "no device of the account sent it in time (the code must "
                                       "be entered on a device of the account while this waits)"));
    }
    if (!waiter->ciphertext) {
      return tl::unexpected(make_error(ErrorCode::network,
                                       "the connection to the server was lost while waiting; try "
                                       "again (the code changes)"));
    }
    sealed = std::move(*waiter->ciphertext);
  }
  auto plain = open_provision(as_bytes(sealed), ephemeral);
  if (!plain) return tl::unexpected(plain.error());
  content::ProvisionMessage message;
  const bool parsed = message.ParseFromArray(plain->data(), static_cast<int>(plain->size()));
  const auto malformed = [] {
    return tl::unexpected(make_error(ErrorCode::protocol, "the provisioning message is malformed"));
  };
  if (!parsed || message.identity_private().size() != 32) {
    wipe(*message.mutable_identity_private());
    return malformed();
  }
  protocol::IdentityKeyPair identity =
      protocol::KeyPair::from_private(protocol::PrivateKey(as_bytes(message.identity_private())));
  wipe(*message.mutable_identity_private());
  auto claimed = protocol::PublicKey::decode(as_bytes(message.identity_public()));
  auto username = normalize_username(message.username());
  if (!claimed || *claimed != identity.public_key || !username || message.link_token().empty() ||
      (!message.kt_keys().empty() && message.kt_keys().size() != 64)) {
    return malformed();
  }
  if (!message.server_fingerprint().empty() && message.server_fingerprint() != c.server_pin()) {
    return tl::unexpected(make_error(
        ErrorCode::fingerprint_mismatch,
        "this device reached a server whose key (" + c.server_pin() +
            ") is not the one the account's other device pinned (" + message.server_fingerprint() +
            "); refusing to link: this can be an interception attempt"));
  }

  NewStore fresh(options, *username);
  if (auto ok = fresh.lock("this data directory already holds the account; use another data "
                           "directory for the new device");
      !ok) {
    return tl::unexpected(ok.error());
  }
  const DeviceKeys keys = generate_device_keys(rng, identity, env.clock->now_ms() / 1000);
  store::AccountSettings settings =
      new_settings(*username, server, c.server_pin(), identity, keys, options);
  if (auto ok = fresh.create(settings, keys); !ok) return tl::unexpected(ok.error());
  Bytes name_blob;
  if (device_name) {
    auto sealed_name = seal_device_name(*device_name, identity.public_key, rng);
    if (!sealed_name) {
      return tl::unexpected(make_error(ErrorCode::invalid_argument, "the device name is invalid"));
    }
    name_blob = std::move(*sealed_name);
  }

  svc::Request link_request;
  auto* req = link_request.mutable_link_device();
  req->set_username(*username);
  req->set_token(message.link_token());
  fill_new_device(*req->mutable_device(), *username, identity, keys, rng, name_blob);
  auto linked = c.call(std::move(link_request), options.request_timeout);
  if (!linked) return tl::unexpected(linked.error());
  if (linked->status().code() != svc::OK) return tl::unexpected(status_error(*linked));
  settings.device_id = linked->link_device().device_id();
  if (auto ok = fresh.store().save_settings(settings); !ok) {
    return tl::unexpected(from_store(ok.error()));
  }
  if (message.recovery_verifier().size() == crypto::kEd25519PublicKeySize) {
    (void)fresh.store().save_value(kRecoveryVerifierValue, as_bytes(message.recovery_verifier()));
  }
  // Key transparency: the log the linking device pinned, not the server's word on first use.
  if (auto pinned = pin_log_from_link(fresh.store(), as_bytes(message.kt_keys()),
                                      as_bytes(message.kt_tree_head()));
      !pinned) {
    return tl::unexpected(pinned.error());
  }
  c.close();
  auto engine = fresh.keep(std::move(env),
                           [](std::unique_ptr<Account> a) { return new Engine(std::move(a)); });
  if (message.device_id() != 0) {
    // The device that linked this one waits to hear whether it should send the history.
    if (auto fetched = engine->fetch_history(message.device_id(), link_options); !fetched) {
      Event e;
      e.kind = Event::Kind::decrypt_failed;
      e.detail = "the history was not transferred: " + fetched.error().message;
      (void)engine->journal_.record(e);
    }
  }
  return engine;
}

}  // namespace sotto::client
