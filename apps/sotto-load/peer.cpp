#include "peer.h"

#include <optional>
#include <string_view>
#include <utility>

#include "contract/signatures.h"
#include "net/device_authorization.h"

namespace sotto::load {
namespace {

// The login contexts, as the server checks them (src/contract/signatures.h).
using contract::kAuthContext;
using contract::kBoundAuthContext;

std::string str(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace

Account make_account(std::string username, std::size_t pre_keys, crypto::Rng& rng) {
  auto identity = protocol::IdentityKeyPair::generate(rng);
  auto signed_pre_key =
      protocol::generate_signed_pre_key(rng, identity, protocol::SignedPreKeyId(1), 0);
  Account a{std::move(username),
            std::move(identity),
            crypto::Ed25519KeyPair::generate(rng),
            std::move(signed_pre_key),
            {},
            protocol::generate_registration_id(rng).value,
            0};
  if (pre_keys > 0) a.pre_keys = protocol::generate_pre_keys(rng, protocol::PreKeyId(1), pre_keys);
  return a;
}

svc::Request register_request(const Account& account, crypto::Rng& rng) {
  svc::Request r;
  auto* reg = r.mutable_register_();
  reg->set_username(account.username);
  reg->set_identity_key(str(account.identity.public_key.serialize()));
  auto* d = reg->mutable_device();
  d->set_registration_id(account.registration_id);
  d->set_auth_key(str(account.auth_key.public_key()));
  auto* spk = d->mutable_keys()->mutable_signed_pre_key();
  spk->set_id(account.signed_pre_key.id.value);
  spk->set_public_key(str(account.signed_pre_key.key_pair.public_key.serialize()));
  spk->set_signature(str(account.signed_pre_key.signature));
  for (const auto& pk : account.pre_keys) {
    auto* p = d->mutable_keys()->add_pre_keys();
    p->set_id(pk.id.value);
    p->set_public_key(str(pk.key_pair.public_key.serialize()));
  }
  const Bytes binding =
      contract::device_binding(account.username, ByteView(account.auth_key.public_key()));
  d->set_identity_signature(str(account.identity.sign(binding, rng)));
  return r;
}

Bytes encode_request(svc::Request& request) {
  svc::Frame frame;
  frame.set_allocated_request(&request);
  Bytes out(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(out.data());
  (void)frame.release_request();  // the caller keeps ownership
  return out;
}

Peer::Peer(std::shared_ptr<net::IoPool> pool, net::ClientOptions options)
    : login_in_upgrade_(static_cast<bool>(options.authorization)),
      client_(
          std::move(options), [this](ByteView frame) { handle_frame(frame); },
          [this](const std::string& reason) {
            close_reason_ = reason;
            std::unordered_map<std::uint64_t, ResponseFn> dropped;
            DoneFn login_done;
            {
              std::lock_guard lock(mu_);
              closed_.store(true);
              dropped.swap(pending_);
              login_done = std::exchange(login_done_, nullptr);
            }
            if (login_done) finish_login(std::nullopt, login_done);
          },
          std::move(pool)) {}

Peer::~Peer() = default;

void Peer::connect(DoneFn done) {
  client_.async_connect([done = std::move(done)](tl::expected<void, net::ClientError> r) {
    if (r) {
      done(true, {});
    } else {
      done(false, std::string(net::to_string(r.error())));
    }
  });
}

net::ClientOptions Peer::logging_in(net::ClientOptions options, const Account& account) {
  options.authorization = [a = &account](const std::array<std::uint8_t, 32>& binding) {
    const Bytes message = contract::login_message(true, ByteView(binding));
    svc::AuthenticateRequest proof;
    proof.set_username(a->username);
    proof.set_device_id(a->device_id);
    proof.set_signature(str(a->auth_key.sign(message)));
    proof.set_channel_binding(true);
    return net::device_authorization(as_bytes(proof.SerializeAsString()));
  };
  return options;
}

void Peer::login(const Account& account, DoneFn done) {
  if (login_in_upgrade_) {
    // As the client library does: the proof went in the upgrade request; the server's answer
    // is the first push (or came already).
    std::optional<svc::Status> result;
    {
      std::lock_guard lock(mu_);
      if (!login_result_ && !closed_.load()) {
        login_done_ = std::move(done);
        return;
      }
      result = login_result_;
    }
    finish_login(result, done);
    return;
  }
  // Sign the connection's channel binding in a request; a challenge only when there is none.
  if (const auto binding = client_.channel_binding()) {
    authenticate(account, kBoundAuthContext, ByteView(*binding), true, std::move(done));
    return;
  }
  svc::Request challenge;
  challenge.mutable_challenge();
  const bool sent = call(std::move(challenge), [this, &account, done](const svc::Response& r) {
    if (r.status().code() != svc::OK || r.challenge().nonce().size() != 32) {
      done(false, "challenge: " + r.status().message());
      return;
    }
    const auto& nonce = r.challenge().nonce();
    authenticate(account, kAuthContext,
                 ByteView(reinterpret_cast<const std::uint8_t*>(nonce.data()), nonce.size()), false,
                 done);
  });
  if (!sent) done(false, "connection closed");
}

void Peer::authenticate(const Account& account, std::string_view context, ByteView nonce,
                        bool channel_binding, DoneFn done) {
  Bytes message(context.begin(), context.end());
  message.insert(message.end(), nonce.begin(), nonce.end());
  svc::Request auth;
  auto* a = auth.mutable_authenticate();
  a->set_username(account.username);
  a->set_device_id(account.device_id);
  a->set_signature(str(account.auth_key.sign(message)));
  a->set_channel_binding(channel_binding);
  const bool ok = call(std::move(auth), [done](const svc::Response& ar) {
    if (ar.status().code() != svc::OK) {
      done(false, "authenticate: " + ar.status().message());
    } else {
      done(true, {});
    }
  });
  if (!ok) done(false, "connection closed");
}

void Peer::finish_login(const std::optional<svc::Status>& result, const DoneFn& done) {
  if (!result) {
    done(false, "connection closed before the login result");
  } else if (result->code() != svc::OK) {
    done(false, "login: " + result->message());
  } else {
    done(true, {});
  }
}

bool Peer::call(svc::Request&& request, ResponseFn fn) {
  std::uint64_t id = 0;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    pending_.emplace(id, std::move(fn));
  }
  request.set_id(id);
  if (client_.send(encode_request(request))) return true;
  std::lock_guard lock(mu_);
  pending_.erase(id);
  return false;
}

void Peer::close() {
  client_.close();
}

void Peer::handle_frame(ByteView bytes) {
  svc::Frame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  if (frame.has_response()) {
    ResponseFn fn;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(frame.response().id());
      if (it == pending_.end()) return;
      fn = std::move(it->second);
      pending_.erase(it);
    }
    if (fn) fn(frame.response());
  } else if (frame.has_push() && frame.push().has_login_result()) {
    DoneFn done;
    std::optional<svc::Status> result;
    {
      std::lock_guard lock(mu_);
      login_result_ = frame.push().login_result().status();
      result = login_result_;
      done = std::exchange(login_done_, nullptr);
    }
    if (done) finish_login(result, done);
  } else if (frame.has_push() && on_push_) {
    on_push_(frame.push());
  }
}

}  // namespace sotto::load
