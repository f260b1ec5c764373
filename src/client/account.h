// What every flow of the engine shares for one account on one device: the store, the injected
// environment, the identities (trust policy), the device's fixed identity, and the locks.
//
// Locks (docs/architecture.md, "Threads and locks"), in the order they may be taken:
//   Listener's mutex -> ServerLink's mutex -> crypto_mu -> server_mu
// and the store's own mutex innermost (every store call takes it). crypto_mu serialises every
// operation on sessions, prekeys, contacts' keys and the settings (which only code holding it
// reads or writes); it is never held while waiting for a connection to be made, only for a
// request on one that is open. server_mu guards only the cached server endpoint.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "client/environment.h"
#include "client/identities.h"
#include "client/kt.h"
#include "client/util.h"
#include "crypto/ed25519.h"
#include "protocol/session.h"
#include "sotto/client.h"
#include "store/client/client_store.h"

namespace sotto::client {

struct Account {
  Account(Options options_in, std::unique_ptr<store::ClientStore> store_in, AccountLock lock_in,
          Environment env_in)
      : options(std::move(options_in)),
        store(std::move(store_in)),
        lock(std::move(lock_in)),
        env(std::move(env_in)),
        rng(*env.rng),
        clock(*env.clock),
        protocol_clock(*env.clock),
        identities(*store, *env.clock),
        username(store->settings().username),
        device_id(store->settings().device_id),
        identity_public(store->settings().identity.public_key),
        auth_key(store->settings().auth_key.clone()),
        server_{store->settings().server_host,
                store->settings().server_port,
                store->settings().server_fingerprint,
                {}} {}

  Account(const Account&) = delete;
  Account& operator=(const Account&) = delete;

  const Options options;
  const std::unique_ptr<store::ClientStore> store;
  AccountLock lock;
  Environment env;
  LockedRng rng;
  const WallClock& clock;
  ProtocolClock protocol_clock;
  Identities identities;  // REQUIRES: crypto_mu held

  const std::string username;
  const std::uint32_t device_id;
  const protocol::PublicKey identity_public;
  const crypto::Ed25519KeyPair auth_key;

  std::mutex crypto_mu;
  KtClient kt{*store};  // key transparency: pinned log keys, verified head, contacts' versions

  // REQUIRES: crypto_mu held.
  protocol::SessionStores stores() { return {identities, *store, *store, *store}; }

  Server server() const {
    std::lock_guard lock_guard(server_mu_);
    return server_;
  }
  // Updates the cached endpoint (the caller saved it in the store).
  void set_server(Server s) {
    std::lock_guard lock_guard(server_mu_);
    server_ = std::move(s);
  }

 private:
  mutable std::mutex server_mu_;
  Server server_;
};

}  // namespace sotto::client
