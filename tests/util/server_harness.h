// The real request handlers (server::Server) over the real SQLite store, driven in process: each
// client is a Party (keys, sessions) with a device auth key and a loopback connection that
// collects the frames the server sends it. TLS and the WebSocket layer are tested in net_test and
// e2e; this is for what the handlers and the store do together.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "crypto/ed25519.h"
#include "crypto/rng.h"
#include "server/server.h"
#include "service.pb.h"
#include "store/server/sqlite_store.h"
#include "util/party.h"

namespace sotto::testing {

namespace svc = sotto::wire::service;

class LoopbackConnection final : public net::Connection {
 public:
  explicit LoopbackConnection(std::uint64_t id) : id_(id) {}
  bool send(Bytes frame) override {
    std::lock_guard lock(mutex_);
    if (room_ > 0) --room_;
    svc::Frame f;
    EXPECT_TRUE(f.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
    frames_.push_back(std::move(f));
    return true;
  }
  // Recorded, and nothing else: frames sent afterwards are still collected.
  void close(const std::string& reason) override {
    std::lock_guard lock(mutex_);
    closed_ = reason;
  }
  std::optional<std::string> closed() {
    std::lock_guard lock(mutex_);
    return closed_;
  }
  std::uint64_t id() const override { return id_; }
  const std::string& remote_address() const override { return address_; }
  std::size_t outbound_bytes() const override { return 0; }
  // Always, unless a test gave the connection room for so many frames (set_room): then it is
  // not writable once they are sent, until the test gives more (and calls on_writable).
  bool writable() override {
    std::lock_guard lock(mutex_);
    return room_ != 0;
  }
  void set_room(int frames) {
    std::lock_guard lock(mutex_);
    room_ = frames;
  }
  bool take_channel_binding(std::array<std::uint8_t, 32>& out) override {
    std::lock_guard lock(mutex_);
    if (!binding_) return false;
    out = *std::exchange(binding_, std::nullopt);
    return true;
  }
  // Admission: what the server told the transport (net::Connection::promote and
  // extend_login_deadline), recorded for tests.
  void promote() override {
    std::lock_guard lock(mutex_);
    promoted_ = true;
  }
  void extend_login_deadline(std::chrono::seconds time) override {
    std::lock_guard lock(mutex_);
    deadline_extensions_.push_back(time);
  }
  bool promoted() {
    std::lock_guard lock(mutex_);
    return promoted_;
  }
  std::vector<std::chrono::seconds> deadline_extensions() {
    std::lock_guard lock(mutex_);
    return deadline_extensions_;
  }
  void set_remote_address(std::string address) {
    std::lock_guard lock(mutex_);
    address_ = std::move(address);
  }
  // What a TLS connection would export (tests pick it; each connection has its own).
  void set_channel_binding(const std::array<std::uint8_t, 32>& b) {
    std::lock_guard lock(mutex_);
    binding_ = b;
  }
  std::vector<svc::Frame> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(frames_, {});
  }

 private:
  std::uint64_t id_;
  std::string address_ = "127.0.0.1";
  std::mutex mutex_;
  std::vector<svc::Frame> frames_;
  std::optional<std::array<std::uint8_t, 32>> binding_;
  std::optional<std::string> closed_;
  bool promoted_ = false;
  std::vector<std::chrono::seconds> deadline_extensions_;
  int room_ = -1;  // frames writable() allows; -1: any number
};

inline std::string str(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// A NewDevice for `party` (registration or linking): its keys, five one-time prekeys, and the
// identity key's signature binding the auth key to the account.
inline svc::NewDevice make_new_device(Party& party, const crypto::Ed25519KeyPair& auth) {
  svc::NewDevice d;
  d.set_registration_id(party.registration_id.value);
  d.set_auth_key(str(auth.public_key()));
  Bytes binding(std::string_view("sotto-device-v1").begin(),
                std::string_view("sotto-device-v1").end());
  binding.insert(binding.end(), party.name.begin(), party.name.end());
  binding.insert(binding.end(), auth.public_key().begin(), auth.public_key().end());
  d.set_identity_signature(str(party.identity.sign(binding, party.rng)));
  auto* spk = d.mutable_keys()->mutable_signed_pre_key();
  spk->set_id(party.signed_pre_key.id.value);
  spk->set_public_key(str(party.signed_pre_key.key_pair.public_key.serialize()));
  spk->set_signature(str(party.signed_pre_key.signature));
  for (std::uint32_t id = 1; id <= 5; ++id) {
    auto pk = party.pre_keys.load_pre_key(protocol::PreKeyId(id));
    auto* o = d.mutable_keys()->add_pre_keys();
    o->set_id(id);
    o->set_public_key(str((*pk)->key_pair.public_key.serialize()));
  }
  return d;
}

inline svc::Request register_request(Party& party, const crypto::Ed25519KeyPair& auth) {
  svc::Request r;
  auto* reg = r.mutable_register_();
  reg->set_username(party.name);
  reg->set_identity_key(str(party.identity.public_key.serialize()));
  *reg->mutable_device() = make_new_device(party, auth);
  return r;
}

// The login proof: the device auth key's signature over the context and the server's nonce.
inline svc::Request authenticate(const std::string& username, std::uint32_t device,
                                 const crypto::Ed25519KeyPair& auth, const std::string& nonce) {
  Bytes msg(std::string_view("sotto-auth-v1").begin(), std::string_view("sotto-auth-v1").end());
  msg.insert(msg.end(), nonce.begin(), nonce.end());
  svc::Request r;
  r.mutable_authenticate()->set_username(username);
  r.mutable_authenticate()->set_device_id(device);
  r.mutable_authenticate()->set_signature(str(auth.sign(msg)));
  return r;
}

// The one-round-trip login proof: the signature over the connection's TLS channel binding.
// `context` other than the real one ("sotto-auth-tls-v1") makes a proof the server must refuse.
inline svc::Request authenticate_bound(const std::string& username, std::uint32_t device,
                                       const crypto::Ed25519KeyPair& auth,
                                       const std::array<std::uint8_t, 32>& binding,
                                       std::string_view context = "sotto-auth-tls-v1") {
  Bytes msg(context.begin(), context.end());
  msg.insert(msg.end(), binding.begin(), binding.end());
  svc::Request r;
  r.mutable_authenticate()->set_username(username);
  r.mutable_authenticate()->set_device_id(device);
  r.mutable_authenticate()->set_signature(str(auth.sign(msg)));
  r.mutable_authenticate()->set_channel_binding(true);
  return r;
}

struct Client {
  Party party;
  crypto::Ed25519KeyPair auth;
  std::shared_ptr<LoopbackConnection> conn;
  std::uint32_t device_id = 1;
  Client(const std::string& name, std::uint64_t seed, std::uint64_t conn_id)
      : party(name, 1, seed),
        auth(crypto::Ed25519KeyPair::generate(party.rng)),
        conn(std::make_shared<LoopbackConnection>(conn_id)) {}
};

class ServerHarness : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kNowMs = 1'700'000'000'000;

  // The store's group-commit delay; a test of what happens before a commit makes it long.
  virtual std::chrono::microseconds commit_delay() const { return std::chrono::milliseconds(2); }
  // The server's configuration; a fixture that registers many accounts raises the limits.
  virtual server::ServerConfig config() const { return {}; }
  // The store's options beyond the clock, the log and the commit delay (a fixture of full queues
  // lowers the queue limits).
  virtual void store_options(store::SqliteOptions& options) const { (void)options; }

  void SetUp() override {
    char tmpl[] = "/tmp/sotto-server-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store::SqliteOptions options;
    options.log = [](std::string_view) {};
    options.now_ms = [] { return kNowMs; };
    options.group_commit_max_delay = commit_delay();
    store_options(options);
    store_ = std::move(*store::SqliteServerStore::open(dir_ / "sotto.db", options));
    server_ = make_server(metrics_);
  }
  // A server over the test's store (a second one stands for a restart) on the test's clock.
  std::unique_ptr<server::Server> make_server(server::Metrics& metrics,
                                              std::optional<server::ServerConfig> c = {}) {
    return std::make_unique<server::Server>(c.value_or(config()), *store_, metrics, rng_,
                                            [this] { return server_now_ms_.load(); });
  }
  void TearDown() override {
    server_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Sends a request without waiting for anything.
  std::uint64_t submit(Client& c, svc::Request r) {
    r.set_id(++next_id_);
    svc::Frame f;
    *f.mutable_request() = std::move(r);
    Bytes b(f.ByteSizeLong());
    f.SerializeWithCachedSizesToArray(b.data());
    server_->on_frame(c.conn, b);
    return next_id_;
  }

  // Sends a request, waits for every store write, and returns its response; pushes received on
  // the way are kept in pushes_.
  svc::Response call(Client& c, svc::Request r) {
    const std::uint64_t id = submit(c, std::move(r));
    store_->messages().flush();
    std::optional<svc::Response> response;
    // A few answers come from a thread of their own (the write that completes an attachment,
    // after its fsync): wait for those, without a bound that a slow machine could reach.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    do {
      for (auto& frame : c.conn->take()) {
        if (frame.has_response() && frame.response().id() == id) response = frame.response();
        if (frame.has_push()) pushes_.push_back(frame.push());
      }
      if (!response) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } while (!response && std::chrono::steady_clock::now() < give_up);
    if (!response) ADD_FAILURE() << "no response";
    return response.value_or(svc::Response{});
  }

  svc::NewDevice new_device(Client& c) { return make_new_device(c.party, c.auth); }

  // Links `newcomer` (the same party as `existing`, its own auth key) to existing's account with
  // a link token existing asks for; newcomer's connection stays logged out. Returns its id.
  std::uint32_t link(Client& existing, Client& newcomer, const std::string& name = {}) {
    svc::Request token;
    token.mutable_link_token();
    const std::string t = call(existing, token).link_token().token();
    server_->on_open(newcomer.conn, {});
    svc::Request r;
    r.mutable_link_device()->set_username(newcomer.party.name);
    r.mutable_link_device()->set_token(t);
    *r.mutable_link_device()->mutable_device() = new_device(newcomer);
    r.mutable_link_device()->mutable_device()->set_name(name);
    const auto response = call(newcomer, r);
    EXPECT_EQ(response.status().code(), svc::OK) << response.status().message();
    newcomer.device_id = response.link_device().device_id();
    return newcomer.device_id;
  }

  void login(Client& c) {
    svc::Request ch;
    ch.mutable_challenge();
    const std::string nonce = call(c, ch).challenge().nonce();
    ASSERT_EQ(call(c, authenticate(c.party.name, c.device_id, c.auth, nonce)).status().code(),
              svc::OK);
  }

  // Registers c's account with c as device 1 and logs in.
  void join(Client& c) {
    server_->on_open(c.conn, {});
    ASSERT_EQ(call(c, register_request(c.party, c.auth)).status().code(), svc::OK);
    login(c);
  }

  std::filesystem::path dir_;
  std::unique_ptr<store::SqliteServerStore> store_;
  server::Metrics metrics_;
  crypto::DeterministicRng rng_{99};
  // The server's clock (challenges expire by it); the store's stays at kNowMs.
  std::atomic<std::uint64_t> server_now_ms_{kNowMs};
  std::unique_ptr<server::Server> server_;
  std::vector<svc::Push> pushes_;
  std::uint64_t next_id_ = 0;
};

}  // namespace sotto::testing
