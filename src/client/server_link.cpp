#include "client/server_link.h"

#include "client/errors.h"
#include "contract/limits.h"
#include "contract/signatures.h"
#include "crypto/hash.h"
#include "net/device_authorization.h"
#include "net/server_key.h"

namespace sotto::client {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::string_view kInstanceContext = "sotto-instance-v1";
using contract::kInstanceSize;
constexpr std::size_t kInstanceSaltSize = 16;

std::string pin_of(ByteView spki) {
  return to_hex(crypto::sha256({spki}));
}

}  // namespace

ServerLink::ServerLink(Account& account, PinChanged on_pin_changed)
    : account_(account), on_pin_changed_(std::move(on_pin_changed)) {}

ServerLink::~ServerLink() {
  close();
}

Result<Bytes> ServerLink::instance_of(Account& account) {
  auto salt = account.store->load_value(kInstanceSaltValue);
  if (!salt) return tl::unexpected(from_store(salt.error()));
  Bytes salt_bytes;
  if (salt->has_value() && (*salt)->size() == kInstanceSaltSize) {
    salt_bytes.assign((*salt)->data(), (*salt)->data() + (*salt)->size());
  } else {
    salt_bytes.resize(kInstanceSaltSize);
    account.rng.fill(salt_bytes);
    if (auto saved = account.store->save_value(kInstanceSaltValue, salt_bytes); !saved) {
      return tl::unexpected(from_store(saved.error()));
    }
  }
  const std::string where = account.store->file_identity();
  const auto digest =
      crypto::sha256({as_bytes(kInstanceContext), ByteView(salt_bytes), as_bytes(where)});
  return Bytes(digest.begin(), digest.begin() + kInstanceSize);
}

Result<ServerLink::Connected> ServerLink::connect_once() {
  if (instance_.empty()) {
    auto instance = instance_of(account_);
    if (!instance) return tl::unexpected(instance.error());
    instance_ = std::move(*instance);
  }
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(mu_);
    generation = ++generation_;
  }
  const Server server = account_.server();
  Endpoint endpoint{server.host, server.port, {}};
  if (!server.fingerprint.empty()) endpoint.pins.push_back(server.fingerprint);
  if (!server.next_fingerprint.empty()) endpoint.pins.push_back(server.next_fingerprint);

  // The connection, once open, for the pushes that need it: a key announcement is checked with
  // the key of the connection it came on. One that comes before the login is done waits here.
  struct Slot {
    std::mutex mu;
    std::weak_ptr<Connection> connection;
    std::optional<svc::ServerKeyAnnouncement> pending;
  };
  auto slot = std::make_shared<Slot>();
  // The login rides in the upgrade request: a signature over the connection's channel binding,
  // good for this connection only, so the device is logged in when the WebSocket opens (no
  // round trip of its own). A challenge is the fallback for a connection without a binding.
  auto opened = Connection::open(
      *account_.env.connector, endpoint,
      [this, generation, slot](svc::Push&& p) {
        if (p.has_server_key()) {
          ConnectionPtr c;
          {
            std::lock_guard lock(slot->mu);
            c = slot->connection.lock();
            if (!c) {
              slot->pending = std::move(*p.mutable_server_key());
              return;
            }
          }
          on_announcement(*c, p.server_key());
          return;
        }
        on_push(generation, std::move(p));
      },
      [this, generation](const std::string& reason) {
        std::lock_guard lock(inbound_mu_);
        inbound_.push_back(Inbound{generation, true, {}, reason});
        inbound_cv_.notify_all();
      },
      [this](const ChannelBinding& binding) {
        const Bytes signed_message = contract::login_message(true, ByteView(binding));
        svc::AuthenticateRequest proof;
        proof.set_username(account_.username);
        proof.set_device_id(account_.device_id);
        proof.set_signature(bytes_string(account_.auth_key.sign(signed_message)));
        proof.set_channel_binding(true);
        proof.set_instance(bytes_string(instance_));
        return net::device_authorization(as_bytes(proof.SerializeAsString()));
      });
  if (!opened) return tl::unexpected(opened.error());
  ConnectionPtr c(std::move(*opened));

  Result<void> done;
  if (c->channel_binding()) {
    done = c->await_login(account_.options.request_timeout);
  } else {
    svc::Request challenge;
    challenge.mutable_challenge();
    auto nonce = call_ok(c, std::move(challenge));
    if (!nonce) return tl::unexpected(nonce.error());
    const Bytes signed_message =
        contract::login_message(false, as_bytes(nonce->challenge().nonce()));
    svc::Request authenticate;
    auto* auth = authenticate.mutable_authenticate();
    auth->set_username(account_.username);
    auth->set_device_id(account_.device_id);
    auth->set_signature(bytes_string(account_.auth_key.sign(signed_message)));
    auth->set_instance(bytes_string(instance_));
    auto answered = call_ok(c, std::move(authenticate));
    if (!answered) done = tl::unexpected(answered.error());
  }
  if (!done) {
    if (done.error().code == ErrorCode::unauthenticated) {
      return tl::unexpected(make_error(
          ErrorCode::unauthenticated,
          "the server does not accept this device: it may have been removed from the account, "
          "or the account was recovered on another device"));
    }
    if (done.error().code == ErrorCode::device_in_use) {
      return tl::unexpected(make_error(
          ErrorCode::device_in_use,
          "this device is connected to the server from another copy of its data (another "
          "machine, or a copied data directory); two copies would corrupt its encryption "
          "sessions, so this one stays offline. Stop the other copy, or link this machine as "
          "a new device of the account"));
    }
    return tl::unexpected(done.error());
  }
  std::optional<svc::ServerKeyAnnouncement> pending;
  {
    std::lock_guard lock(slot->mu);
    slot->connection = c;
    pending = std::move(slot->pending);
  }
  after_login(*c);
  if (pending) on_announcement(*c, *pending);
  return Connected{std::move(c), generation};
}

void ServerLink::after_login(const Connection& c) {
  const std::string seen = c.server_pin();
  Server server = account_.server();
  if (seen.empty() || seen == server.fingerprint) return;
  // The transport accepted the key as one of the pins: the announced next key, or the key of a
  // certificate that an older version pinned by its certificate fingerprint.
  const bool rotated = seen == server.next_fingerprint;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    store::AccountSettings settings = account_.store->settings().clone();
    settings.server_fingerprint = seen;
    if (!account_.store->save_settings(settings)) return;  // pinned again next time
    if (rotated) (void)account_.store->remove_value(kNextPinValue);
  }
  server.fingerprint = seen;
  if (rotated) server.next_fingerprint.clear();
  account_.set_server(server);
  if (rotated && on_pin_changed_) {
    on_pin_changed_(
        "the server now uses the key it announced (signed by its previous key); "
        "pinned " +
        seen);
  }
}

void ServerLink::on_announcement(const Connection& c, const svc::ServerKeyAnnouncement& a) {
  // Checked on the transport's thread (or right after the login), so that a one-shot command
  // learns it too. One that does not verify is ignored: the pin stays as it is.
  const Bytes current = c.server_public_key();
  if (current.empty() ||
      !net::verify_next_key(current, as_bytes(a.next_public_key()), as_bytes(a.signature()))) {
    return;
  }
  const std::string next = pin_of(as_bytes(a.next_public_key()));
  Server server = account_.server();
  if (next == server.next_fingerprint || next == server.fingerprint) return;
  if (!account_.store->save_value(kNextPinValue, as_bytes(next))) return;
  server.next_fingerprint = next;
  account_.set_server(server);
}

void ServerLink::on_push(std::uint64_t generation, svc::Push&& p) {
  std::lock_guard lock(inbound_mu_);
  inbound_.push_back(Inbound{generation, false, std::move(p), {}});
  inbound_cv_.notify_all();
}

Result<ServerLink::Connected> ServerLink::ensure_connected(Deadline deadline,
                                                           const RetryHandler& on_retry) {
  // The listener (no deadline) backs off on the shared schedule, which grows while the server
  // stays away. A caller with a deadline has a schedule of its own that starts afresh, so that
  // an outage seen by the listener does not make a send give up before its own time is up.
  Backoff own(kBackoffInitial, kBackoffCap);
  Backoff& backoff = deadline ? own : backoff_;
  std::unique_lock lock(mu_);
  for (;;) {
    if (stopping_ && listener_running_) {
      return tl::unexpected(make_error(ErrorCode::network, "stopped"));
    }
    if (conn_ && conn_->is_open()) return Connected{conn_, conn_generation_};
    if (connecting_) {
      const auto ready = [&] { return !connecting_ || stopping_.load(); };
      if (deadline) {
        if (!cv_.wait_until(lock, *deadline, ready)) {
          return tl::unexpected(
              make_error(ErrorCode::timeout, "timed out connecting to the server"));
        }
      } else {
        cv_.wait(lock, ready);
      }
      continue;
    }
    connecting_ = true;
    lock.unlock();
    auto attempt = connect_once();
    lock.lock();
    connecting_ = false;
    cv_.notify_all();
    if (attempt) {
      conn_ = attempt->connection;
      conn_generation_ = attempt->generation;
      backoff_.reset();
      return *attempt;
    }
    const Error& e = attempt.error();
    if (e.code == ErrorCode::fingerprint_mismatch || e.code == ErrorCode::unauthenticated ||
        e.code == ErrorCode::device_in_use || e.code == ErrorCode::store) {
      return tl::unexpected(e);
    }
    auto delay = backoff.next(account_.rng);
    if (deadline) {
      const auto now = SteadyClock::now();
      if (now >= *deadline) return tl::unexpected(e);
      // One more attempt just before the deadline rather than none at all.
      delay =
          std::min(delay, std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - now));
    }
    if (on_retry) {
      lock.unlock();
      on_retry(e, delay);
      lock.lock();
    }
    cv_.wait_for(lock, delay, [&] { return stopping_.load() && listener_running_; });
  }
}

ConnectionPtr ServerLink::current() {
  std::lock_guard lock(mu_);
  if (conn_ && conn_->is_open()) return conn_;
  return nullptr;
}

std::uint64_t ServerLink::generation() {
  std::lock_guard lock(mu_);
  return conn_generation_;
}

bool ServerLink::drained() {
  std::lock_guard lock(mu_);
  return conn_ && conn_->is_open() && drained_generation_ == conn_generation_;
}

void ServerLink::mark_drained(std::uint64_t generation) {
  std::lock_guard lock(mu_);
  drained_generation_ = generation;
}

Result<svc::Response> ServerLink::call_ok(const ConnectionPtr& c, svc::Request request) {
  auto r = c->call(std::move(request), account_.options.request_timeout);
  if (!r) return r;
  if (r->status().code() != svc::OK) return tl::unexpected(status_error(*r));
  return r;
}

std::optional<Inbound> ServerLink::next_inbound(Deadline deadline) {
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

void ServerLink::wake() {
  std::lock_guard lock(inbound_mu_);
  inbound_.push_back(Inbound{0, false, {}, {}});
  inbound_cv_.notify_all();
}

bool ServerLink::take_keys_low() {
  std::lock_guard lock(inbound_mu_);
  bool low = false;
  for (auto it = inbound_.begin(); it != inbound_.end();) {
    if (!it->closed && it->push.has_keys_low()) {
      low = true;
      it = inbound_.erase(it);
    } else {
      ++it;
    }
  }
  return low;
}

void ServerLink::listener_started() {
  stopping_ = false;
  std::lock_guard lock(mu_);
  listener_running_ = true;
}

void ServerLink::stop() {
  stopping_ = true;
  {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }
  {
    std::lock_guard lock(inbound_mu_);
    inbound_cv_.notify_all();
  }
  if (auto c = current()) c->close();
}

void ServerLink::listener_stopped() {
  std::lock_guard lock(mu_);
  listener_running_ = false;
  stopping_ = false;  // receive() and send() work again
}

void ServerLink::close() {
  ConnectionPtr c;
  {
    std::lock_guard lock(mu_);
    c = std::move(conn_);
  }
  if (c) c->close();
}

}  // namespace sotto::client
