// After a conversation through the real request handlers and the real SQLite store, the server's
// files hold no message plaintext and no private key: only public keys and ciphertext.
// (The transport is an in-process connection here; TLS is tested in net_test and e2e.)
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "crypto/ed25519.h"
#include "protocol/bundle.h"
#include "protocol/session.h"
#include "server/server.h"
#include "service.pb.h"
#include "store/server/sqlite_store.h"
#include "util/party.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Party;

class LoopbackConnection final : public net::Connection {
 public:
  explicit LoopbackConnection(std::uint64_t id) : id_(id) {}
  bool send(Bytes frame) override {
    std::lock_guard lock(mutex_);
    svc::Frame f;
    EXPECT_TRUE(f.ParseFromArray(frame.data(), static_cast<int>(frame.size())));
    frames_.push_back(std::move(f));
    return true;
  }
  void close(const std::string&) override {}
  std::uint64_t id() const override { return id_; }
  const std::string& remote_address() const override { return address_; }
  std::size_t outbound_bytes() const override { return 0; }
  std::vector<svc::Frame> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(frames_, {});
  }

 private:
  std::uint64_t id_;
  std::string address_ = "127.0.0.1";
  std::mutex mutex_;
  std::vector<svc::Frame> frames_;
};

std::string s(ByteView b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

struct Client {
  Party party;
  crypto::Ed25519KeyPair auth;
  std::shared_ptr<LoopbackConnection> conn;
  Client(const std::string& name, std::uint64_t seed, std::uint64_t conn_id)
      : party(name, 1, seed), auth(crypto::Ed25519KeyPair::generate(party.rng)),
        conn(std::make_shared<LoopbackConnection>(conn_id)) {}
};

class ScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sotto-scan-XXXXXX";
    dir_ = mkdtemp(tmpl);
    store::SqliteOptions options;
    options.log = [](std::string_view) {};
    options.now_ms = [] { return std::uint64_t{1'700'000'000'000}; };
    store_ = std::move(*store::SqliteServerStore::open(dir_ / "sotto.db", options));
    server_ = std::make_unique<Server>(ServerConfig{}, *store_, metrics_, rng_, [] {
      return std::uint64_t{1'700'000'000'000};
    });
  }
  void TearDown() override {
    server_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  svc::Response call(Client& c, svc::Request r) {
    r.set_id(++next_id_);
    svc::Frame f;
    *f.mutable_request() = std::move(r);
    Bytes b(f.ByteSizeLong());
    f.SerializeWithCachedSizesToArray(b.data());
    server_->on_frame(c.conn, b);
    store_->messages().flush();
    for (auto& frame : c.conn->take()) {
      if (frame.has_response() && frame.response().id() == next_id_) return frame.response();
      if (frame.has_push()) pushes_.push_back(frame.push());
    }
    ADD_FAILURE() << "no response";
    return {};
  }

  void join(Client& c) {
    server_->on_open(c.conn);
    svc::Request r;
    auto* reg = r.mutable_register_();
    reg->set_username(c.party.name);
    const auto ik = c.party.identity.public_key.serialize();
    reg->set_identity_key(s(ik));
    auto* d = reg->mutable_device();
    d->set_registration_id(c.party.registration_id.value);
    d->set_auth_key(s(c.auth.public_key));
    Bytes binding(std::string_view("sotto-device-v1").begin(), std::string_view("sotto-device-v1").end());
    binding.insert(binding.end(), c.party.name.begin(), c.party.name.end());
    binding.insert(binding.end(), c.auth.public_key.begin(), c.auth.public_key.end());
    d->set_identity_signature(s(c.party.identity.sign(binding, c.party.rng)));
    auto* spk = d->mutable_keys()->mutable_signed_pre_key();
    spk->set_id(c.party.signed_pre_key.id.value);
    spk->set_public_key(s(c.party.signed_pre_key.key_pair.public_key.serialize()));
    spk->set_signature(s(c.party.signed_pre_key.signature));
    for (std::uint32_t id = 1; id <= 5; ++id) {
      auto pk = c.party.pre_keys.load_pre_key(protocol::PreKeyId(id));
      auto* o = d->mutable_keys()->add_pre_keys();
      o->set_id(id);
      o->set_public_key(s((*pk)->key_pair.public_key.serialize()));
    }
    ASSERT_EQ(call(c, r).status().code(), svc::OK);
    svc::Request ch;
    ch.mutable_challenge();
    const std::string nonce = call(c, ch).challenge().nonce();
    Bytes msg(std::string_view("sotto-auth-v1").begin(), std::string_view("sotto-auth-v1").end());
    msg.insert(msg.end(), nonce.begin(), nonce.end());
    svc::Request login;
    login.mutable_authenticate()->set_username(c.party.name);
    login.mutable_authenticate()->set_device_id(1);
    login.mutable_authenticate()->set_signature(s(c.auth.sign(msg)));
    ASSERT_EQ(call(c, login).status().code(), svc::OK);
  }

  std::filesystem::path dir_;
  std::unique_ptr<store::SqliteServerStore> store_;
  Metrics metrics_;
  crypto::DeterministicRng rng_{99};
  std::unique_ptr<Server> server_;
  std::vector<svc::Push> pushes_;
  std::uint64_t next_id_ = 0;
};

TEST_F(ScanTest, ServerFilesHoldNoPlaintextAndNoPrivateKey) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);

  // Alice fetches bob's bundle through the server and sends him messages that stay queued
  // (bob does not acknowledge them), so they are on disk when we scan.
  svc::Request fetch;
  fetch.mutable_fetch_bundles()->set_username("bob");
  auto bundles = call(alice, fetch);
  ASSERT_EQ(bundles.fetch_bundles().bundles_size(), 1);
  const auto& b = bundles.fetch_bundles().bundles(0);
  Bytes encoded(b.ByteSizeLong());
  b.SerializeWithCachedSizesToArray(encoded.data());
  auto bundle = protocol::PreKeyBundle::decode(encoded);
  ASSERT_TRUE(bundle);
  auto stores = alice.party.stores();
  ASSERT_TRUE(protocol::process_pre_key_bundle(bob.party.address(), *bundle, stores, alice.party.rng,
                                               alice.party.clock));
  const std::vector<std::string> bodies = {"the launch code is 4471-alpha", "meet at the old mill at dawn"};
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    auto c = alice.party.encrypt(bob.party.address(), bodies[i]);
    ASSERT_TRUE(c);
    svc::Request send;
    auto* sr = send.mutable_send();
    sr->set_recipient("bob");
    sr->set_client_message_id(std::string(16, static_cast<char>('a' + i)));
    sr->set_timestamp(1000 + i);
    auto* m = sr->add_messages();
    m->set_destination("bob");
    m->set_device_id(1);
    m->set_registration_id(bob.party.registration_id.value);
    m->set_type(static_cast<std::uint32_t>(c->type));
    m->set_content(s(c->serialized));
    ASSERT_EQ(call(alice, send).status().code(), svc::OK);
  }
  // The stored ciphertext really is what bob decrypts.
  ASSERT_EQ(store_->messages().count(2, 1).value_or(0), 2u);

  std::vector<std::pair<std::string, Bytes>> secrets;
  for (const auto& body : bodies) secrets.emplace_back("plaintext", Bytes(body.begin(), body.end()));
  for (Client* c : {&alice, &bob}) {
    secrets.emplace_back("identity private key", Bytes(c->party.identity.private_key.view().begin(),
                                                       c->party.identity.private_key.view().end()));
    secrets.emplace_back("auth key seed", Bytes(c->auth.seed.view().begin(), c->auth.seed.view().end()));
    const auto& spk = c->party.signed_pre_key.key_pair.private_key;
    secrets.emplace_back("signed prekey private key", Bytes(spk.view().begin(), spk.view().end()));
    for (std::uint32_t id = 1; id <= 5; ++id) {
      auto pk = c->party.pre_keys.load_pre_key(protocol::PreKeyId(id));
      if (pk && pk->has_value()) {
        const auto& priv = (*pk)->key_pair.private_key;
        secrets.emplace_back("prekey private key", Bytes(priv.view().begin(), priv.view().end()));
      }
    }
  }
  auto record = alice.party.sessions.load_session(bob.party.address());
  const auto& root = (*record)->current().root_key;
  secrets.emplace_back("session root key", Bytes(root.view().begin(), root.view().end()));

  std::size_t scanned = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    scanned += file.size();
    for (const auto& [what, bytes] : secrets) {
      EXPECT_EQ(file.find(s(bytes)), std::string::npos)
          << what << " found in " << entry.path().filename();
    }
  }
  EXPECT_GT(scanned, 0u);
  // A control: public material is there, so the scan does look at the right bytes.
  std::string all;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    std::ifstream in(entry.path(), std::ios::binary);
    all.append((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  EXPECT_NE(all.find(s(alice.party.identity.public_key.serialize())), std::string::npos);
}

}  // namespace
}  // namespace sotto::server
