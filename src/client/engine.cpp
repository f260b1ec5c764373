#include "client/engine.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

#include "client/provisioning.h"
#include "crypto/ed25519.h"
#include "keys.pb.h"
#include "net/device_authorization.h"
#include "protocol/fingerprint.h"
#include "protocol/keys.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kAuthContext = "sotto-auth-v1";
constexpr std::string_view kBoundAuthContext = "sotto-auth-tls-v1";
constexpr std::string_view kDeviceContext = "sotto-device-v1";
constexpr std::uint32_t kMaxPreKeyId = 0xFFFFFE;

std::string str(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Wipes a std::string that held plaintext or a key before it is freed.
void wipe(std::string& s) {
  if (!s.empty()) crypto::secure_wipe(s.data(), s.size());
  s.clear();
}

Error from_store(store::ClientError e) {
  switch (e) {
    case store::ClientError::wrong_passphrase:
      return make_error(ErrorCode::wrong_passphrase,
                        "the passphrase does not open the account's store (or the store is "
                        "protected by a passphrase and none was given)");
    case store::ClientError::not_found:
      return make_error(ErrorCode::no_account, "no such account in the data directory");
    case store::ClientError::exists:
      return make_error(ErrorCode::account_exists,
                        "an account with this name already exists in the data directory");
    case store::ClientError::invalid_argument:
      return make_error(ErrorCode::invalid_argument, std::string(store::to_string(e)));
    case store::ClientError::corrupt:
    case store::ClientError::io:
      break;
  }
  return make_error(ErrorCode::store, "local store: " + std::string(store::to_string(e)));
}

Error from_protocol(protocol::Error e) {
  if (e == protocol::Error::untrusted_identity) {
    return make_error(ErrorCode::untrusted_identity,
                      "the contact's safety number changed; compare it with `sotto "
                      "safety-number USER` and accept the new key with `sotto trust USER`");
  }
  if (e == protocol::Error::store_failure) {
    return make_error(ErrorCode::store, "local store failure");
  }
  return make_error(ErrorCode::protocol,
                    "encryption failed: " + std::string(protocol::to_string(e)));
}

store::AccountSettings clone_settings(const store::AccountSettings& s) {
  store::AccountSettings c;
  c.username = s.username;
  c.device_id = s.device_id;
  c.server_host = s.server_host;
  c.server_port = s.server_port;
  c.server_fingerprint = s.server_fingerprint;
  c.auth_key = s.auth_key.clone();
  c.identity = s.identity.clone();
  c.registration_id = s.registration_id;
  c.next_pre_key_id = s.next_pre_key_id;
  c.next_signed_pre_key_id = s.next_signed_pre_key_id;
  c.trust_policy = s.trust_policy;
  return c;
}

bool valid_policy(const std::string& p) {
  return p == kTrustOnFirstUse || p == kTrustAlways || p == kTrustNever;
}

std::uint32_t next_pre_key_id(std::uint32_t start, std::size_t count) {
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(start) - 1 + count) %
                                    kMaxPreKeyId) +
         1;
}

// Keys of a device being added (registration or linking).
struct DeviceKeys {
  protocol::RegistrationId registration_id;
  crypto::Ed25519KeyPair auth_key;
  protocol::SignedPreKeyRecord signed_pre_key;
  std::vector<protocol::PreKeyRecord> pre_keys;
};

DeviceKeys generate_device_keys(crypto::Rng& rng, const protocol::IdentityKeyPair& identity,
                                std::uint64_t now_s) {
  DeviceKeys k{protocol::generate_registration_id(rng), crypto::Ed25519KeyPair::generate(rng),
               protocol::generate_signed_pre_key(rng, identity, protocol::SignedPreKeyId(1), now_s),
               protocol::generate_pre_keys(rng, protocol::PreKeyId(1), kPreKeyBatch)};
  return k;
}

void add_signed_pre_key(svc::DeviceKeys& out, const protocol::SignedPreKeyRecord& spk) {
  auto* s = out.mutable_signed_pre_key();
  s->set_id(spk.id.value);
  s->set_public_key(str(spk.key_pair.public_key.serialize()));
  s->set_signature(str(spk.signature));
}

void add_pre_keys(svc::DeviceKeys& out, const std::vector<protocol::PreKeyRecord>& keys) {
  for (const auto& pk : keys) {
    auto* p = out.add_pre_keys();
    p->set_id(pk.id.value);
    p->set_public_key(str(pk.key_pair.public_key.serialize()));
  }
}

// NewDevice with the identity's signature binding the auth key to the account (server.cpp
// checks "sotto-device-v1" || username || auth_key).
void fill_new_device(svc::NewDevice& d, const std::string& username,
                     const protocol::IdentityKeyPair& identity, const DeviceKeys& keys,
                     crypto::Rng& rng) {
  d.set_registration_id(keys.registration_id.value);
  d.set_auth_key(str(keys.auth_key.public_key()));
  add_signed_pre_key(*d.mutable_keys(), keys.signed_pre_key);
  add_pre_keys(*d.mutable_keys(), keys.pre_keys);
  Bytes binding(kDeviceContext.begin(), kDeviceContext.end());
  binding.insert(binding.end(), username.begin(), username.end());
  binding.insert(binding.end(), keys.auth_key.public_key().begin(),
                 keys.auth_key.public_key().end());
  d.set_identity_signature(str(identity.sign(binding, rng)));
}

Result<void> save_device_keys(store::ClientStore& store, const DeviceKeys& keys) {
  bool failed = false;
  auto ok = store.transaction([&] {
    if (!store.save_signed_pre_key(keys.signed_pre_key)) return !(failed = true);
    for (const auto& pk : keys.pre_keys) {
      if (!store.save_pre_key(pk)) return !(failed = true);
    }
    return true;
  });
  if (!ok) return tl::unexpected(from_store(ok.error()));
  if (failed || !*ok)
    return tl::unexpected(make_error(ErrorCode::store, "cannot save the device's keys"));
  return {};
}

store::AccountSettings new_settings(const std::string& username, const sotto::Server& server,
                                    const std::string& fingerprint,
                                    const protocol::IdentityKeyPair& identity,
                                    const DeviceKeys& keys, const Options& options) {
  store::AccountSettings s;
  s.username = username;
  s.device_id = 0;  // set once the server has registered the device
  s.server_host = server.host;
  s.server_port = server.port;
  s.server_fingerprint = fingerprint;
  s.auth_key = keys.auth_key.clone();
  s.identity = identity.clone();
  s.registration_id = keys.registration_id;
  s.next_pre_key_id = next_pre_key_id(1, kPreKeyBatch);
  s.next_signed_pre_key_id = 2;
  s.trust_policy = options.trust_policy.value_or(kTrustOnFirstUse);
  return s;
}

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

// Whether an error is worth retrying after a reconnect.
bool transient(const Error& e) {
  return e.code == ErrorCode::network || e.code == ErrorCode::timeout ||
         (e.code == ErrorCode::server);
}

Message from_stored(const store::StoredMessage& m) {
  Message out;
  out.id = m.envelope_id;
  out.from = m.sender;
  out.device = m.sender_device;
  out.timestamp = m.timestamp;
  out.body = m.body;
  out.conversation = m.peer;
  out.outgoing = m.outgoing;
  return out;
}

// Serializes a Content padded to a multiple of kPaddingBlock bytes.
std::string encode_padded(content::Content& c) {
  c.clear_padding();
  const std::size_t pad = padding_length(c.ByteSizeLong());
  c.set_padding(std::string(pad, '\0'));
  return c.SerializeAsString();
}

std::string describe(protocol::Error e) {
  switch (e) {
    case protocol::Error::untrusted_identity:
      return "the sender's safety number changed and the new identity key is not trusted";
    case protocol::Error::no_session:
      return "no session with the sending device (it may have been re-installed)";
    case protocol::Error::unknown_pre_key:
    case protocol::Error::unknown_signed_pre_key:
      return "the message uses a prekey this device no longer has";
    default:
      return "the message does not decrypt (" + std::string(protocol::to_string(e)) + ")";
  }
}

}  // namespace

// --- construction ------------------------------------------------------------------------------

Engine::Engine(Options options, std::unique_ptr<store::ClientStore> store, AccountLock lock)
    : options_(std::move(options)),
      store_(std::move(store)),
      lock_(std::move(lock)),
      username_(store_->settings().username),
      device_id_(store_->settings().device_id),
      server_{store_->settings().server_host, store_->settings().server_port,
              store_->settings().server_fingerprint},
      identity_public_(store_->settings().identity.public_key),
      auth_key_(store_->settings().auth_key.clone()),
      trust_policy_(store_->settings().trust_policy),
      rng_(crypto::system_rng()) {}

Engine::~Engine() {
  stop();
  ConnectionPtr c;
  {
    std::lock_guard lock(conn_mu_);
    c = std::move(conn_);
  }
  c.reset();
}

Result<std::unique_ptr<Engine>> Engine::register_account(const Options& options,
                                                         const std::string& username_in,
                                                         const sotto::Server& server,
                                                         const std::string& invite_code) {
  auto username = normalize_username(username_in);
  if (!username) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "a username has 3-32 characters of a-z, 0-9, '.', '_' or '-' "
                                     "and starts with a letter or digit"));
  }
  if (auto ok = check_server(server); !ok) return tl::unexpected(ok.error());
  if (options.trust_policy && !valid_policy(*options.trust_policy)) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the trust policy is on-first-use, always or never"));
  }
  auto lock = AccountLock::acquire(options.data_dir, *username, options.lock_wait);
  if (!lock) return tl::unexpected(lock.error());
  const auto existing = store::ClientStore::accounts(options.data_dir);
  if (std::find(existing.begin(), existing.end(), *username) != existing.end()) {
    return tl::unexpected(
        make_error(ErrorCode::account_exists,
                   "an account with this name already exists in the data directory"));
  }

  auto conn =
      Connection::open({server.host, server.port, server.fingerprint, nullptr}, nullptr, nullptr);
  if (!conn) return tl::unexpected(conn.error());
  const std::string fingerprint = (*conn)->fingerprint();

  crypto::Rng& rng = crypto::system_rng();
  SystemClock clock;
  const protocol::IdentityKeyPair identity = protocol::KeyPair::generate(rng);
  const DeviceKeys keys = generate_device_keys(rng, identity, clock.now_seconds());
  store::AccountSettings settings =
      new_settings(*username, server, fingerprint, identity, keys, options);

  auto created = store::ClientStore::create(options.data_dir, settings, options.passphrase);
  if (!created) return tl::unexpected(from_store(created.error()));
  std::unique_ptr<store::ClientStore> store = std::move(*created);
  const auto abandon = [&](Error e) -> Result<std::unique_ptr<Engine>> {
    store.reset();
    remove_store_files(options.data_dir, *username);
    return tl::unexpected(std::move(e));
  };
  if (auto ok = save_device_keys(*store, keys); !ok) return abandon(ok.error());

  svc::Request request;
  auto* reg = request.mutable_register_();
  reg->set_username(*username);
  reg->set_identity_key(str(identity.public_key.serialize()));
  reg->set_invite_code(invite_code);
  fill_new_device(*reg->mutable_device(), *username, identity, keys, rng);
  auto response = (*conn)->call(std::move(request), options.request_timeout);
  if (!response) return abandon(response.error());
  if (response->status().code() != svc::OK) {
    switch (response->status().code()) {
      case svc::CONFLICT:
        return abandon(
            make_error(ErrorCode::account_exists, "that username is taken on the server"));
      case svc::INVITE_REQUIRED:
        return abandon(
            make_error(ErrorCode::server,
                       "the server is invite-only: pass a valid, unused code with --invite"));
      default:
        return abandon(status_error(*response));
    }
  }
  settings.device_id = response->register_().device_id();
  if (auto ok = store->save_settings(settings); !ok) return abandon(from_store(ok.error()));
  (*conn)->close();
  return std::unique_ptr<Engine>(new Engine(options, std::move(store), std::move(*lock)));
}

Result<std::unique_ptr<Engine>> Engine::open(const Options& options,
                                             const std::string& username_in) {
  std::string username;
  if (username_in.empty()) {
    const auto names = store::ClientStore::accounts(options.data_dir);
    if (names.empty()) {
      return tl::unexpected(make_error(ErrorCode::no_account,
                                       "no account in the data directory; create one with `sotto "
                                       "register` or `sotto link`"));
    }
    if (names.size() > 1) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      return tl::unexpected(
          make_error(ErrorCode::ambiguous_account,
                     "several accounts (" + list + "); choose one with --account"));
    }
    username = names.front();
  } else {
    auto n = normalize_username(username_in);
    if (!n) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid account name"));
    username = *n;
  }
  if (options.trust_policy && !valid_policy(*options.trust_policy)) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the trust policy is on-first-use, always or never"));
  }
  auto lock = AccountLock::acquire(options.data_dir, username, options.lock_wait);
  if (!lock) return tl::unexpected(lock.error());
  auto opened = store::ClientStore::open(options.data_dir, username, options.passphrase);
  if (!opened) return tl::unexpected(from_store(opened.error()));
  std::unique_ptr<store::ClientStore> store = std::move(*opened);
  if (store->settings().device_id == 0) {
    return tl::unexpected(make_error(ErrorCode::store,
                                     "the account's registration never completed; delete its files "
                                     "from the data directory and register again"));
  }
  if (options.trust_policy && *options.trust_policy != store->settings().trust_policy) {
    auto s = clone_settings(store->settings());
    s.trust_policy = *options.trust_policy;
    if (auto ok = store->save_settings(s); !ok) return tl::unexpected(from_store(ok.error()));
  }
  return std::unique_ptr<Engine>(new Engine(options, std::move(store), std::move(*lock)));
}

Result<std::unique_ptr<Engine>> Engine::link(const Options& options, const sotto::Server& server,
                                             const std::function<void(const LinkPrompt&)>& show,
                                             std::chrono::seconds timeout) {
  if (auto ok = check_server(server); !ok) return tl::unexpected(ok.error());
  if (options.trust_policy && !valid_policy(*options.trust_policy)) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "the trust policy is on-first-use, always or never"));
  }
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<std::string> ciphertext;
    bool closed = false;
  };
  auto waiter = std::make_shared<Waiter>();
  auto conn = Connection::open(
      {server.host, server.port, server.fingerprint, nullptr},
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
  crypto::Rng& rng = crypto::system_rng();
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
      return tl::unexpected(
          make_error(ErrorCode::timeout,
                     "no device sent the account in time; run `sotto add-device "
                     "CODE` on a device of the account while `sotto link` waits"));
    }
    if (!waiter->ciphertext) {
      return tl::unexpected(make_error(ErrorCode::network,
                                       "the connection to the server was lost while waiting; run "
                                       "`sotto link` again (the code changes)"));
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
  if (!claimed || *claimed != identity.public_key || !username || message.link_token().empty()) {
    return malformed();
  }
  if (!message.server_fingerprint().empty() && message.server_fingerprint() != c.fingerprint()) {
    return tl::unexpected(make_error(
        ErrorCode::fingerprint_mismatch,
        "this device reached a server whose certificate (" + c.fingerprint() +
            ") is not the one the account's other device pinned (" + message.server_fingerprint() +
            "); refusing to link: this can be an interception attempt"));
  }

  auto lock = AccountLock::acquire(options.data_dir, *username, options.lock_wait);
  if (!lock) return tl::unexpected(lock.error());
  const auto existing = store::ClientStore::accounts(options.data_dir);
  if (std::find(existing.begin(), existing.end(), *username) != existing.end()) {
    return tl::unexpected(make_error(ErrorCode::account_exists,
                                     "this data directory already holds the account; use another "
                                     "--data directory for the new device"));
  }
  SystemClock clock;
  const DeviceKeys keys = generate_device_keys(rng, identity, clock.now_seconds());
  store::AccountSettings settings =
      new_settings(*username, server, c.fingerprint(), identity, keys, options);
  auto created = store::ClientStore::create(options.data_dir, settings, options.passphrase);
  if (!created) return tl::unexpected(from_store(created.error()));
  std::unique_ptr<store::ClientStore> store = std::move(*created);
  const auto abandon = [&](Error e) -> Result<std::unique_ptr<Engine>> {
    store.reset();
    remove_store_files(options.data_dir, *username);
    return tl::unexpected(std::move(e));
  };
  if (auto ok = save_device_keys(*store, keys); !ok) return abandon(ok.error());

  svc::Request link_request;
  auto* req = link_request.mutable_link_device();
  req->set_username(*username);
  req->set_token(message.link_token());
  fill_new_device(*req->mutable_device(), *username, identity, keys, rng);
  auto linked = c.call(std::move(link_request), options.request_timeout);
  if (!linked) return abandon(linked.error());
  if (linked->status().code() != svc::OK) return abandon(status_error(*linked));
  settings.device_id = linked->link_device().device_id();
  if (auto ok = store->save_settings(settings); !ok) return abandon(from_store(ok.error()));
  c.close();
  return std::unique_ptr<Engine>(new Engine(options, std::move(store), std::move(*lock)));
}

// --- accessors ---------------------------------------------------------------------------------

std::string Engine::username() const {
  return username_;
}
std::uint32_t Engine::device_id() const {
  return device_id_;
}
std::string Engine::trust_policy() const {
  return trust_policy_;
}
sotto::Server Engine::server() const {
  return server_;
}

protocol::SessionStores Engine::stores() {
  return {*store_, *store_, *store_, *store_};
}

// --- connection --------------------------------------------------------------------------------

Result<Engine::Connected> Engine::connect_once() {
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(conn_mu_);
    generation = ++generation_;
  }
  // The login rides in the upgrade request: a signature over the connection's TLS channel
  // binding, good for this connection only, so the device is logged in when the WebSocket opens
  // (no round trip of its own). A challenge is the fallback for a connection without a binding.
  auto opened = Connection::open(
      {server_.host, server_.port, server_.fingerprint, tls_session_},
      [this, generation](svc::Push&& p) {
        std::lock_guard lock(inbound_mu_);
        inbound_.push_back(Inbound{generation, false, std::move(p), {}});
        inbound_cv_.notify_all();
      },
      [this, generation](const std::string& reason) {
        std::lock_guard lock(inbound_mu_);
        inbound_.push_back(Inbound{generation, true, {}, reason});
        inbound_cv_.notify_all();
      },
      [this](const std::array<std::uint8_t, 32>& binding) {
        Bytes signed_message(kBoundAuthContext.begin(), kBoundAuthContext.end());
        append(signed_message, ByteView(binding));
        svc::AuthenticateRequest proof;
        proof.set_username(username_);
        proof.set_device_id(device_id_);
        proof.set_signature(str(auth_key_.sign(signed_message)));
        proof.set_channel_binding(true);
        return net::device_authorization(as_bytes(proof.SerializeAsString()));
      });
  if (!opened) return tl::unexpected(opened.error());
  ConnectionPtr c(std::move(*opened));

  Result<void> done;
  if (c->channel_binding()) {
    done = c->await_login(options_.request_timeout);
  } else {
    svc::Request challenge;
    challenge.mutable_challenge();
    auto nonce = call_ok(c, std::move(challenge));
    if (!nonce) return tl::unexpected(nonce.error());
    Bytes signed_message(kAuthContext.begin(), kAuthContext.end());
    append(signed_message, as_bytes(nonce->challenge().nonce()));
    svc::Request authenticate;
    auto* auth = authenticate.mutable_authenticate();
    auth->set_username(username_);
    auth->set_device_id(device_id_);
    auth->set_signature(str(auth_key_.sign(signed_message)));
    auto answered = call_ok(c, std::move(authenticate));
    if (!answered) done = tl::unexpected(answered.error());
  }
  if (!done) {
    if (done.error().code == ErrorCode::unauthenticated) {
      return tl::unexpected(make_error(
          ErrorCode::unauthenticated,
          "the server does not accept this device: it may have been removed from the account "
          "(another device lists the account's devices with `sotto devices`)"));
    }
    return tl::unexpected(done.error());
  }
  return Connected{std::move(c), generation};
}

Result<Engine::Connected> Engine::ensure_connected(Deadline deadline,
                                                   const RetryHandler& on_retry) {
  std::unique_lock lock(conn_mu_);
  for (;;) {
    if (stopping_ && listener_running_) {
      return tl::unexpected(make_error(ErrorCode::network, "stopped"));
    }
    if (conn_ && conn_->is_open()) return Connected{conn_, conn_generation_};
    if (connecting_) {
      const auto ready = [&] { return !connecting_ || stopping_.load(); };
      if (deadline) {
        if (!conn_cv_.wait_until(lock, *deadline, ready)) {
          return tl::unexpected(
              make_error(ErrorCode::timeout, "timed out connecting to the server"));
        }
      } else {
        conn_cv_.wait(lock, ready);
      }
      continue;
    }
    connecting_ = true;
    lock.unlock();
    auto attempt = connect_once();
    lock.lock();
    connecting_ = false;
    conn_cv_.notify_all();
    if (attempt) {
      conn_ = attempt->connection;
      conn_generation_ = attempt->generation;
      backoff_.reset();
      return *attempt;
    }
    const Error& e = attempt.error();
    if (e.code == ErrorCode::fingerprint_mismatch || e.code == ErrorCode::unauthenticated) {
      return tl::unexpected(e);
    }
    const auto delay = backoff_.next(rng_);
    if (deadline && Clock::now() + delay > *deadline) return tl::unexpected(e);
    if (on_retry) {
      lock.unlock();
      on_retry(e, delay);
      lock.lock();
    }
    conn_cv_.wait_for(lock, delay, [&] { return stopping_.load() && listener_running_; });
  }
}

Engine::ConnectionPtr Engine::current_connection() {
  std::lock_guard lock(conn_mu_);
  if (conn_ && conn_->is_open()) return conn_;
  return nullptr;
}

std::uint64_t Engine::current_generation() {
  std::lock_guard lock(conn_mu_);
  return conn_generation_;
}

Result<svc::Response> Engine::call_ok(const ConnectionPtr& c, svc::Request request) {
  auto r = c->call(std::move(request), options_.request_timeout);
  if (!r) return r;
  if (r->status().code() != svc::OK) return tl::unexpected(status_error(*r));
  return r;
}

std::optional<Engine::Inbound> Engine::next_inbound(Deadline deadline) {
  std::unique_lock lock(inbound_mu_);
  const auto ready = [&] { return !inbound_.empty() || stopping_.load(); };
  if (deadline) {
    if (!inbound_cv_.wait_until(lock, *deadline, ready)) return std::nullopt;
  } else {
    inbound_cv_.wait(lock, ready);
  }
  if (inbound_.empty()) return std::nullopt;
  Inbound in = std::move(inbound_.front());
  inbound_.pop_front();
  return in;
}

Result<void> Engine::connect() {
  auto c = ensure_connected(Clock::now() + options_.send_timeout);
  if (!c) return tl::unexpected(c.error());
  return {};
}

// --- keys --------------------------------------------------------------------------------------

Result<void> Engine::maintain_keys(const ConnectionPtr& c) {
  std::lock_guard crypto_lock(crypto_mu_);
  svc::Request count_request;
  count_request.mutable_key_count();
  auto count = call_ok(c, std::move(count_request));
  if (!count) return tl::unexpected(count.error());

  svc::Request upload;
  auto* keys = upload.mutable_upload_keys()->mutable_keys();
  store::AccountSettings settings = clone_settings(store_->settings());
  bool changed = false;
  if (count->key_count().count() < kPreKeyLowWater) {
    auto fresh = protocol::generate_pre_keys(rng_, protocol::PreKeyId(settings.next_pre_key_id),
                                             kPreKeyBatch);
    settings.next_pre_key_id = next_pre_key_id(settings.next_pre_key_id, kPreKeyBatch);
    add_pre_keys(*keys, fresh);
    bool failed = false;
    auto ok = store_->transaction([&] {
      for (const auto& pk : fresh) {
        if (!store_->save_pre_key(pk)) return !(failed = true);
      }
      return static_cast<bool>(store_->save_settings(settings));
    });
    if (!ok || !*ok || failed)
      return tl::unexpected(make_error(ErrorCode::store, "cannot save new prekeys"));
    changed = true;
  }
  const std::uint64_t now = clock_.now_seconds();
  const protocol::SignedPreKeyId current(settings.next_signed_pre_key_id - 1);
  auto spk = store_->load_signed_pre_key(current);
  if (!spk) return tl::unexpected(from_protocol(spk.error()));
  if (!spk->has_value() || now > (*spk)->timestamp + kSignedPreKeyMaxAgeSeconds) {
    auto fresh = protocol::generate_signed_pre_key(
        rng_, settings.identity, protocol::SignedPreKeyId(settings.next_signed_pre_key_id), now);
    settings.next_signed_pre_key_id = settings.next_signed_pre_key_id % kMaxPreKeyId + 1;
    add_signed_pre_key(*keys, fresh);
    // The previous signed prekey stays in the store: messages in flight may still use it.
    auto ok = store_->transaction([&] {
      return static_cast<bool>(store_->save_signed_pre_key(fresh)) &&
             static_cast<bool>(store_->save_settings(settings));
    });
    if (!ok || !*ok)
      return tl::unexpected(make_error(ErrorCode::store, "cannot save the new signed prekey"));
    changed = true;
  }
  if (!changed) return {};
  auto uploaded = call_ok(c, std::move(upload));
  if (!uploaded) return tl::unexpected(uploaded.error());
  return {};
}

void Engine::maintain_keys_if_due(const ConnectionPtr& c) {
  {
    std::lock_guard lock(listener_mu_);
    if (listener_.joinable()) return;  // the listener handles KeysLow itself
  }
  bool low = false;
  {
    // The server pushes KeysLow right after authenticating, before it answers anything else,
    // so a send-only client finds it queued here.
    std::lock_guard lock(inbound_mu_);
    for (auto it = inbound_.begin(); it != inbound_.end();) {
      if (!it->closed && it->push.has_keys_low()) {
        low = true;
        it = inbound_.erase(it);
      } else {
        ++it;
      }
    }
  }
  bool expired = false;
  {
    std::lock_guard crypto_lock(crypto_mu_);
    const protocol::SignedPreKeyId current(store_->settings().next_signed_pre_key_id - 1);
    auto spk = store_->load_signed_pre_key(current);
    expired = spk && (!spk->has_value() ||
                      clock_.now_seconds() > (*spk)->timestamp + kSignedPreKeyMaxAgeSeconds);
  }
  if (low || expired) (void)maintain_keys(c);
}

// --- sessions ----------------------------------------------------------------------------------

Result<std::vector<protocol::PreKeyBundle>> Engine::fetch_bundles(
    const ConnectionPtr& c, const std::string& user, const std::vector<std::uint32_t>& devices) {
  svc::Request request;
  auto* fetch = request.mutable_fetch_bundles();
  fetch->set_username(user);
  for (auto d : devices) fetch->add_device_ids(d);
  auto response = c->call(std::move(request), options_.request_timeout);
  if (!response) return tl::unexpected(response.error());
  std::vector<protocol::PreKeyBundle> out;
  if (response->status().code() == svc::NOT_FOUND) {
    if (devices.empty()) return tl::unexpected(make_error(ErrorCode::not_found, "no such user"));
    return out;  // those devices are gone; the next send says so
  }
  if (response->status().code() != svc::OK) return tl::unexpected(status_error(*response));
  for (const auto& b : response->fetch_bundles().bundles()) {
    const std::string bytes = b.SerializeAsString();
    auto bundle = protocol::PreKeyBundle::decode(as_bytes(bytes));
    if (!bundle) continue;  // a malformed bundle: that device stays without a session
    out.push_back(std::move(*bundle));
  }
  return out;
}

Result<void> Engine::process_bundles(const std::string& user,
                                     const std::vector<protocol::PreKeyBundle>& bundles) {
  auto st = stores();
  for (const auto& bundle : bundles) {
    if (user == username() && bundle.device_id.value == device_id()) continue;
    const protocol::Address address{user, bundle.device_id};
    auto ok = protocol::process_pre_key_bundle(address, bundle, st, rng_, clock_);
    if (!ok) {
      if (ok.error() == protocol::Error::untrusted_identity ||
          ok.error() == protocol::Error::store_failure) {
        return tl::unexpected(from_protocol(ok.error()));
      }
      // A bundle whose signature fails: no session with that device; the server keeps
      // reporting it missing and the send eventually fails with a clear error.
      continue;
    }
  }
  return {};
}

Result<void> Engine::repair_devices(const ConnectionPtr& c, const svc::SendResponse& response) {
  for (const auto& mismatch : response.mismatch()) {
    auto user = normalize_username(mismatch.username());
    if (!user) continue;
    std::vector<std::uint32_t> fetch(mismatch.missing().begin(), mismatch.missing().end());
    {
      std::lock_guard crypto_lock(crypto_mu_);
      for (auto d : mismatch.extra()) {
        (void)store_->delete_session({*user, protocol::DeviceId(d)});
      }
      for (auto d : mismatch.stale()) {
        (void)store_->delete_session({*user, protocol::DeviceId(d)});
        fetch.push_back(d);
      }
    }
    if (fetch.empty()) continue;
    auto bundles = fetch_bundles(c, *user, fetch);
    if (!bundles) return tl::unexpected(bundles.error());
    std::lock_guard crypto_lock(crypto_mu_);
    if (auto ok = process_bundles(*user, *bundles); !ok) return ok;
  }
  return {};
}

Result<void> Engine::encrypt_for_user(const ConnectionPtr& c, const std::string& user,
                                      ByteView plaintext, bool fetch_if_none,
                                      svc::SendRequest& out) {
  const bool self = user == username();
  const auto own_device = device_id();
  const auto list = [&]() -> Result<std::vector<std::uint32_t>> {
    auto devices = store_->session_devices(user);
    if (!devices) return tl::unexpected(from_store(devices.error()));
    if (self) std::erase(*devices, own_device);
    return *devices;
  };
  auto devices = list();
  if (!devices) return tl::unexpected(devices.error());
  if (devices->empty() && fetch_if_none) {
    std::vector<std::uint32_t> wanted;
    if (self) {
      // Our other devices: ask which exist, so a note to self reaches them.
      svc::Request request;
      request.mutable_list_devices();
      auto listed = call_ok(c, std::move(request));
      if (!listed) return tl::unexpected(listed.error());
      for (const auto& d : listed->list_devices().devices()) {
        if (d.id() != own_device) wanted.push_back(d.id());
      }
    }
    if (!self || !wanted.empty()) {
      auto bundles = fetch_bundles(c, user, wanted);
      if (!bundles) return tl::unexpected(bundles.error());
      if (auto ok = process_bundles(user, *bundles); !ok) return ok;
      devices = list();
      if (!devices) return tl::unexpected(devices.error());
    }
  }
  auto st = stores();
  for (auto d : *devices) {
    const protocol::Address address{user, protocol::DeviceId(d)};
    auto ct = protocol::encrypt(address, plaintext, st);
    if (!ct) {
      if (ct.error() == protocol::Error::no_session) {
        // A record without a usable state: drop it; the server reports the device missing
        // and the retry builds a fresh session.
        (void)store_->delete_session(address);
        continue;
      }
      return tl::unexpected(from_protocol(ct.error()));
    }
    auto record = store_->load_session(address);
    if (!record || !record->has_value() || !(*record)->has_current()) {
      return tl::unexpected(make_error(ErrorCode::store, "a session vanished while sending"));
    }
    auto* m = out.add_messages();
    m->set_destination(user);
    m->set_device_id(d);
    m->set_registration_id((*record)->current().remote_registration_id.value);
    m->set_type(static_cast<std::uint32_t>(ct->type));
    m->set_content(str(ct->serialized));
  }
  return {};
}

// --- sending -----------------------------------------------------------------------------------

Result<SendResult> Engine::send(const std::string& to, const std::string& body) {
  auto user = normalize_username(to);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  if (body.empty()) return tl::unexpected(make_error(ErrorCode::invalid_argument, "empty message"));
  if (body.size() > kMaxBodyBytes) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "message too long (at most 64 KiB)"));
  }
  const std::string self = username();
  const bool note_to_self = *user == self;
  const std::uint64_t timestamp = now_ms();

  content::Content data_content;
  data_content.mutable_data()->set_body(body);
  data_content.mutable_data()->set_timestamp(timestamp);
  content::Content sync_content;
  auto* sent = sync_content.mutable_sync()->mutable_sent();
  sent->set_destination(*user);
  sent->set_timestamp(timestamp);
  *sent->mutable_message() = data_content.data();
  std::string data_plain = encode_padded(data_content);
  std::string sync_plain = encode_padded(sync_content);
  wipe(*data_content.mutable_data()->mutable_body());
  wipe(*sent->mutable_message()->mutable_body());
  struct Wiper {
    std::string& a;
    std::string& b;
    ~Wiper() {
      wipe(a);
      wipe(b);
    }
  } wiper{data_plain, sync_plain};

  // A UUIDv7-like id: the time in milliseconds (6 bytes, big-endian), then random bytes. The
  // server keeps its dedup entries in that order (store.h), so ids should start with the time.
  std::array<std::uint8_t, 16> message_id{};
  rng_.fill(message_id);
  for (std::size_t i = 0; i < 6; ++i)
    message_id[i] = static_cast<std::uint8_t>(timestamp >> (8 * (5 - i)));
  const auto deadline = Clock::now() + options_.send_timeout;
  std::optional<svc::SendRequest> built;
  int stale_rounds = 0;
  Backoff retry_backoff(kBackoffInitial, std::chrono::milliseconds(5000));
  std::optional<Error> last_error;

  const auto give_up = [&](Error e) -> Result<SendResult> {
    if (e.code == ErrorCode::network || e.code == ErrorCode::timeout) {
      e.message = "not sent: " + e.message;
    }
    return tl::unexpected(std::move(e));
  };
  const auto pause = [&]() -> bool {
    const auto delay = retry_backoff.next(rng_);
    if (Clock::now() + delay > deadline) return false;
    std::this_thread::sleep_for(delay);
    return true;
  };

  for (;;) {
    if (Clock::now() > deadline) {
      return give_up(last_error.value_or(make_error(ErrorCode::timeout, "the send timed out")));
    }
    auto connected = ensure_connected(deadline);
    if (!connected) return give_up(connected.error());
    const ConnectionPtr c = connected->connection;

    if (!built) {
      svc::SendRequest request;
      request.set_recipient(*user);
      request.set_client_message_id(str(message_id));
      request.set_timestamp(timestamp);
      Result<void> ok;
      {
        std::lock_guard crypto_lock(crypto_mu_);
        if (!note_to_self) ok = encrypt_for_user(c, *user, as_bytes(data_plain), true, request);
        if (ok) ok = encrypt_for_user(c, self, as_bytes(sync_plain), note_to_self, request);
      }
      if (!ok) {
        if (transient(ok.error())) {
          last_error = ok.error();
          if (!pause()) return give_up(ok.error());
          continue;
        }
        return tl::unexpected(ok.error());
      }
      if (request.messages_size() == 0) {
        if (!note_to_self) {
          return tl::unexpected(
              make_error(ErrorCode::not_found, "the user has no device to send to"));
        }
        // A note to self and no other device: history only.
        store::StoredMessage m{
            "local-" + to_hex(message_id), *user, self, device_id(), timestamp, body, true};
        if (auto saved = store_->add_message(m); !saved)
          return tl::unexpected(from_store(saved.error()));
        return SendResult{timestamp, 0};
      }
      built = std::move(request);
    }

    svc::Request request;
    *request.mutable_send() = *built;
    auto response = c->call(std::move(request), options_.request_timeout);
    if (!response) {
      // Lost connection or no answer: the server may or may not have stored the message;
      // resending the same request with the same id is stored at most once.
      last_error = response.error();
      continue;
    }
    switch (response->status().code()) {
      case svc::OK: {
        store::StoredMessage m{
            "local-" + to_hex(message_id), *user, self, device_id(), timestamp, body, true};
        (void)store_->add_message(
            m);  // the message is sent; a history failure must not say otherwise
        maintain_keys_if_due(c);
        return SendResult{timestamp, static_cast<std::size_t>(built->messages_size())};
      }
      case svc::STALE_DEVICES: {
        if (++stale_rounds > kMaxStaleRetries) {
          return tl::unexpected(make_error(
              ErrorCode::server, "the recipient's device list keeps changing; try again"));
        }
        auto repaired = repair_devices(c, response->send());
        if (!repaired) {
          if (!transient(repaired.error())) return tl::unexpected(repaired.error());
          last_error = repaired.error();
        }
        built.reset();
        continue;
      }
      case svc::NOT_FOUND:
        return tl::unexpected(make_error(ErrorCode::not_found, "no such user"));
      case svc::RATE_LIMITED:
      case svc::UNAVAILABLE:
      case svc::INTERNAL:
      case svc::QUEUE_FULL:
        last_error = status_error(*response);
        if (!pause()) return give_up(*last_error);
        continue;
      default:
        return tl::unexpected(status_error(*response));
    }
  }
}

// --- receiving ---------------------------------------------------------------------------------

void Engine::acknowledge(const std::string& envelope_id) {
  auto c = current_connection();
  if (!c) return;  // not acknowledged: the server delivers it again and we drop the copy
  svc::Request request;
  request.mutable_ack()->add_envelope_ids(envelope_id);
  (void)c->call(std::move(request), options_.request_timeout);
}

std::vector<Event> Engine::handle_envelope(const svc::Envelope& envelope) {
  std::vector<Event> events;
  const std::string id = to_hex(as_bytes(envelope.id()));
  Message base;
  base.id = id;
  base.from = envelope.source();
  base.device = envelope.source_device();
  base.timestamp = envelope.client_timestamp();
  base.server_timestamp = envelope.server_timestamp();
  base.conversation = envelope.source();

  const auto store_failed = [&](const char* what) {
    Event e;
    e.kind = Event::Kind::decrypt_failed;
    e.message = base;
    e.detail = std::string("local store failure (") + what + "); the message will be fetched again";
    events.push_back(std::move(e));
    return events;
  };
  auto seen = store_->seen_envelope(id);
  if (!seen) return store_failed("checking for duplicates");
  if (*seen) {
    acknowledge(envelope.id());
    return events;
  }

  const std::string self = username();
  std::unique_lock crypto_lock(crypto_mu_);
  const auto source = normalize_username(envelope.source());
  const protocol::Address address{source.value_or(std::string{}),
                                  protocol::DeviceId(envelope.source_device())};
  std::optional<protocol::PublicKey> prior;
  if (source) {
    if (auto p = store_->load_identity(address); p) prior = *p;
  }

  std::optional<protocol::Error> decrypt_error;
  std::string failure;  // a decrypted message we cannot use
  std::optional<Message> shown;
  bool store_error = false;
  auto st = stores();
  auto committed = store_->transaction([&] {
    if (!source) {
      failure = "a message without a valid sender";
    } else {
      tl::expected<protocol::Decrypted, protocol::Error> plain =
          tl::unexpected(protocol::Error::malformed);
      if (envelope.type() == static_cast<std::uint32_t>(protocol::MessageType::pre_key)) {
        plain = protocol::decrypt_pre_key_message(address, as_bytes(envelope.content()), st, rng_,
                                                  clock_);
      } else if (envelope.type() == static_cast<std::uint32_t>(protocol::MessageType::signal)) {
        plain = protocol::decrypt_signal_message(address, as_bytes(envelope.content()), st, rng_,
                                                 clock_);
      }
      if (!plain) {
        decrypt_error = plain.error();
        return false;  // nothing was written; the failure is recorded below
      }
      content::Content c;
      if (!c.ParseFromArray(plain->plaintext.data(), static_cast<int>(plain->plaintext.size()))) {
        failure = "a message whose content is malformed";
      } else if (c.has_data()) {
        Message m = base;
        m.body = c.data().body();
        m.timestamp = c.data().timestamp();
        m.outgoing = *source == self;
        shown = std::move(m);
        wipe(*c.mutable_data()->mutable_body());
      } else if (c.has_sync() && c.sync().has_sent()) {
        auto destination = normalize_username(c.sync().sent().destination());
        if (*source != self) {
          failure = "a sync message from another account (ignored)";
        } else if (!destination) {
          failure = "a sync message without a valid destination";
        } else {
          Message m = base;
          m.body = c.sync().sent().message().body();
          m.timestamp = c.sync().sent().timestamp();
          m.conversation = *destination;
          m.outgoing = true;
          shown = std::move(m);
          wipe(*c.mutable_sync()->mutable_sent()->mutable_message()->mutable_body());
        }
      }
      // Receipts and unknown content: nothing to show; the envelope is still consumed.
    }
    if (shown) {
      store::StoredMessage m{
          id,          shown->conversation, shown->from, shown->device, shown->timestamp,
          shown->body, shown->outgoing};
      if (!store_->add_message(m)) return !(store_error = true);
    }
    if (!failure.empty()) {
      store::StoredMessage m{id,          base.conversation, base.from,
                             base.device, base.timestamp,    "[not shown: " + failure + "]",
                             false};
      if (!store_->add_message(m)) return !(store_error = true);
    }
    if (!store_->mark_envelope(id)) return !(store_error = true);
    return true;
  });
  if (!committed || store_error) return store_failed("saving the message");

  if (decrypt_error) {
    // Recorded and acknowledged, so one bad message never blocks the queue.
    if (*decrypt_error != protocol::Error::duplicate_message) {
      Event e;
      e.kind = Event::Kind::decrypt_failed;
      e.message = base;
      e.detail = describe(*decrypt_error);
      e.untrusted_identity = *decrypt_error == protocol::Error::untrusted_identity;
      store::StoredMessage m{
          id,          base.conversation, base.from,
          base.device, base.timestamp,    "[message could not be decrypted: " + e.detail + "]",
          false};
      bool saved = false;
      auto ok = store_->transaction([&] {
        saved = store_->add_message(m) && store_->mark_envelope(id);
        return saved;
      });
      if (!ok || !saved) return store_failed("recording an undecryptable message");
      events.push_back(std::move(e));
    } else if (!store_->mark_envelope(id)) {
      return store_failed("marking a duplicate");
    }
  } else {
    if (prior && source) {
      auto now_key = store_->load_identity(address);
      if (now_key && *now_key && **now_key != *prior) {
        Event e;
        e.kind = Event::Kind::identity_changed;
        e.message = base;
        e.detail = "the sender's safety number changed";
        events.push_back(std::move(e));
      }
    }
    if (!failure.empty()) {
      Event e;
      e.kind = Event::Kind::decrypt_failed;
      e.message = base;
      e.detail = failure;
      events.push_back(std::move(e));
    }
    if (shown) {
      Event e;
      e.kind = Event::Kind::message;
      e.message = std::move(*shown);
      events.push_back(std::move(e));
    }
  }
  crypto_lock.unlock();  // the acknowledgement's round trip must not hold up senders
  acknowledge(envelope.id());
  return events;
}

bool Engine::dispatch(const Inbound& in, const EventHandler& handler, std::size_t& count) {
  const svc::Push& push = in.push;
  if (push.has_envelope()) {
    for (const auto& e : handle_envelope(push.envelope())) {
      ++count;
      if (handler) handler(e);
    }
    return false;
  }
  if (push.has_keys_low()) {
    if (auto c = current_connection()) (void)maintain_keys(c);
    return false;
  }
  if (push.has_queue_drained()) return in.generation == current_generation();
  return false;
}

Result<std::size_t> Engine::receive(std::chrono::milliseconds timeout,
                                    const EventHandler& handler) {
  {
    std::lock_guard lock(listener_mu_);
    if (listener_.joinable()) {
      return tl::unexpected(make_error(ErrorCode::invalid_argument, "the listener is running"));
    }
  }
  const auto deadline = Clock::now() + timeout;
  auto connected = ensure_connected(deadline);
  if (!connected) return tl::unexpected(connected.error());
  (void)maintain_keys(connected->connection);
  std::size_t count = 0;
  for (;;) {
    auto in = next_inbound(deadline);
    if (!in) {
      return tl::unexpected(
          make_error(ErrorCode::timeout, "timed out before the server's queue was drained"));
    }
    if (in->closed) {
      if (in->generation != current_generation()) continue;
      auto again = ensure_connected(deadline);
      if (!again) return tl::unexpected(again.error());
      continue;
    }
    if (dispatch(*in, handler, count)) return count;
  }
}

void Engine::listen_loop() {
  std::size_t count = 0;
  while (!stopping_) {
    auto connected =
        ensure_connected(std::nullopt, [this](const Error& error, std::chrono::milliseconds delay) {
          Event e;
          e.kind = Event::Kind::disconnected;
          e.detail = error.message + "; retrying in " +
                     std::to_string((delay.count() + 999) / 1000) + " s";
          handler_(e);
        });
    if (!connected) {
      if (stopping_) break;
      Event e;
      e.kind = Event::Kind::fatal;
      e.error = connected.error();
      e.detail = connected.error().message;
      handler_(e);
      break;
    }
    {
      Event e;
      e.kind = Event::Kind::connected;
      handler_(e);
    }
    (void)maintain_keys(connected->connection);
    for (;;) {
      auto in = next_inbound(std::nullopt);
      if (!in) break;  // stopping
      if (in->closed) {
        if (in->generation != connected->generation) continue;
        Event e;
        e.kind = Event::Kind::disconnected;
        e.detail =
            (in->reason.empty() ? std::string("connection lost") : in->reason) + "; reconnecting";
        handler_(e);
        break;
      }
      dispatch(*in, handler_, count);
    }
  }
}

Result<void> Engine::start(EventHandler handler) {
  std::lock_guard lock(listener_mu_);
  if (listener_.joinable()) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "the listener is already running"));
  }
  stopping_ = false;
  {
    std::lock_guard conn_lock(conn_mu_);
    listener_running_ = true;
  }
  handler_ = std::move(handler);
  listener_ = std::thread([this] { listen_loop(); });
  return {};
}

void Engine::stop() {
  std::lock_guard lock(listener_mu_);
  if (!listener_.joinable()) return;
  stopping_ = true;
  {
    std::lock_guard conn_lock(conn_mu_);
    conn_cv_.notify_all();
  }
  {
    std::lock_guard inbound_lock(inbound_mu_);
    inbound_cv_.notify_all();
  }
  if (auto c = current_connection()) c->close();
  listener_.join();
  std::lock_guard conn_lock(conn_mu_);
  listener_running_ = false;
  stopping_ = false;  // receive() and send() work again
}

// --- devices -----------------------------------------------------------------------------------

Result<std::vector<Device>> Engine::devices() {
  auto connected = ensure_connected(Clock::now() + options_.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  svc::Request request;
  request.mutable_list_devices();
  auto r = call_ok(connected->connection, std::move(request));
  if (!r) return tl::unexpected(r.error());
  std::vector<Device> out;
  for (const auto& d : r->list_devices().devices()) {
    out.push_back(Device{d.id(), d.registration_id(), d.created_day(), d.id() == device_id()});
  }
  return out;
}

Result<void> Engine::remove_device(std::uint32_t id) {
  if (id == device_id()) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument,
                   "a device cannot remove itself; remove it from another device"));
  }
  auto connected = ensure_connected(Clock::now() + options_.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  svc::Request request;
  request.mutable_remove_device()->set_device_id(id);
  auto r = call_ok(connected->connection, std::move(request));
  if (!r) {
    if (r.error().code == ErrorCode::not_found) {
      return tl::unexpected(make_error(ErrorCode::not_found, "the account has no such device"));
    }
    return tl::unexpected(r.error());
  }
  std::lock_guard crypto_lock(crypto_mu_);
  (void)store_->delete_session({username(), protocol::DeviceId(id)});
  return {};
}

Result<std::uint32_t> Engine::add_device(const std::string& code_text) {
  auto code = decode_link_code(code_text);
  if (!code) return tl::unexpected(code.error());
  auto before = devices();
  if (!before) return tl::unexpected(before.error());
  auto connected = ensure_connected(Clock::now() + options_.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  const ConnectionPtr c = connected->connection;

  svc::Request token_request;
  token_request.mutable_link_token();
  auto token = call_ok(c, std::move(token_request));
  if (!token) return tl::unexpected(token.error());

  content::ProvisionMessage message;
  {
    std::lock_guard crypto_lock(crypto_mu_);  // settings are replaced under this lock
    const auto& s = store_->settings();
    message.set_username(s.username);
    message.set_identity_public(str(s.identity.public_key.serialize()));
    message.set_identity_private(str(s.identity.private_key.view()));
    message.set_link_token(token->link_token().token());
    message.set_server_host(s.server_host);
    message.set_server_port(s.server_port);
    message.set_server_fingerprint(s.server_fingerprint);
  }
  crypto::SecretBuffer plain(message.ByteSizeLong());
  plain.resize(plain.capacity());
  message.SerializeWithCachedSizesToArray(plain.data());
  wipe(*message.mutable_identity_private());
  const Bytes sealed = seal_provision(plain.view(), code->public_key, rng_);

  svc::Request send_request;
  auto* send = send_request.mutable_provisioning_send();
  send->set_address(str(code->address));
  send->set_ciphertext(str(sealed));
  auto sent = c->call(std::move(send_request), options_.request_timeout);
  if (!sent) return tl::unexpected(sent.error());
  if (sent->status().code() == svc::NOT_FOUND) {
    return tl::unexpected(
        make_error(ErrorCode::not_found,
                   "no new device is waiting for this code: it may have stopped "
                   "waiting (run `sotto link` there again) or the code is mistyped"));
  }
  if (sent->status().code() != svc::OK) return tl::unexpected(status_error(*sent));

  std::set<std::uint32_t> known;
  for (const auto& d : *before) known.insert(d.id);
  const auto until = Clock::now() + kAddDeviceWait;
  while (Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto now = devices();
    if (!now) continue;
    for (const auto& d : *now) {
      if (!known.contains(d.id)) return d.id;
    }
  }
  return 0u;
}

// --- contacts and safety numbers ---------------------------------------------------------------

Result<std::vector<Contact>> Engine::contacts() {
  auto list = store_->contacts();
  if (!list) return tl::unexpected(from_store(list.error()));
  const std::string self = username();
  std::vector<Contact> out;
  for (const auto& c : *list) {
    if (c.username == self) continue;
    Contact contact;
    contact.username = c.username;
    contact.verified = c.verified;
    contact.identity_changed_at = c.identity_changed_at;
    if (c.identity_key) contact.identity_key_hex = to_hex(c.identity_key->serialize());
    out.push_back(std::move(contact));
  }
  return out;
}

Result<SafetyNumber> Engine::fingerprint_with(const std::string& user,
                                              const protocol::PublicKey& their_key) {
  auto fp = protocol::compute_fingerprint(username_, identity_public_, user, their_key);
  if (!fp) return tl::unexpected(from_protocol(fp.error()));
  return SafetyNumber{fp->displayable, fp->scannable};
}

Result<SafetyNumber> Engine::safety_number(const std::string& user_in) {
  auto user = normalize_username(user_in);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  if (*user == username()) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "a safety number is computed with another user"));
  }
  const protocol::Address address{*user, protocol::DeviceId(1)};
  auto key = store_->load_identity(address);
  if (!key) return tl::unexpected(from_protocol(key.error()));
  if (!*key) {
    // Never talked: learn the key from the server (and set up sessions for later).
    auto connected = ensure_connected(Clock::now() + options_.request_timeout);
    if (!connected) return tl::unexpected(connected.error());
    auto bundles = fetch_bundles(connected->connection, *user, {});
    if (!bundles) return tl::unexpected(bundles.error());
    std::lock_guard crypto_lock(crypto_mu_);
    if (auto ok = process_bundles(*user, *bundles); !ok) return tl::unexpected(ok.error());
    key = store_->load_identity(address);
    if (!key) return tl::unexpected(from_protocol(key.error()));
    if (!*key)
      return tl::unexpected(make_error(ErrorCode::not_found, "the user has no usable device"));
  }
  return fingerprint_with(*user, **key);
}

Result<SafetyNumber> Engine::trust(const std::string& user_in) {
  auto user = normalize_username(user_in);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  if (*user == username()) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "your own key needs no trust"));
  }
  auto connected = ensure_connected(Clock::now() + options_.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  auto bundles = fetch_bundles(connected->connection, *user, {});
  if (!bundles) return tl::unexpected(bundles.error());
  if (bundles->empty()) {
    return tl::unexpected(make_error(ErrorCode::not_found, "the user has no usable device"));
  }
  const protocol::PublicKey current = bundles->front().identity_key;
  std::lock_guard crypto_lock(crypto_mu_);
  const protocol::Address address{*user, protocol::DeviceId(1)};
  auto old = store_->load_identity(address);
  if (!old) return tl::unexpected(from_protocol(old.error()));
  if (auto saved = store_->save_identity(address, current); !saved) {
    return tl::unexpected(from_protocol(saved.error()));
  }
  if (auto ok = store_->set_verified(*user, true); !ok)
    return tl::unexpected(from_store(ok.error()));
  auto existing = store_->session_devices(*user);
  if (!existing) return tl::unexpected(from_store(existing.error()));
  if (*old && **old != current) {
    // Sessions built with the earlier key can never be trusted again.
    for (auto d : *existing) (void)store_->delete_session({*user, protocol::DeviceId(d)});
    existing->clear();
  }
  std::vector<protocol::PreKeyBundle> fresh;
  for (auto& b : *bundles) {
    if (b.identity_key != current) continue;
    if (std::find(existing->begin(), existing->end(), b.device_id.value) == existing->end()) {
      fresh.push_back(std::move(b));
    }
  }
  if (auto ok = process_bundles(*user, fresh); !ok) return tl::unexpected(ok.error());
  return fingerprint_with(*user, current);
}

Result<std::vector<Message>> Engine::history(const std::string& user_in, std::size_t limit) {
  auto user = normalize_username(user_in);
  if (!user) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  auto list = store_->messages(*user, limit);
  if (!list) return tl::unexpected(from_store(list.error()));
  std::vector<Message> out;
  for (const auto& m : *list) out.push_back(from_stored(m));
  return out;
}

}  // namespace sotto::client
