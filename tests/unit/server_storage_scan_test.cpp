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
#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Client;
using sotto::testing::str;

using ScanTest = sotto::testing::ServerHarness;

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
  ASSERT_TRUE(protocol::process_pre_key_bundle(bob.party.address(), *bundle, stores,
                                               alice.party.rng, alice.party.clock));
  const std::vector<std::string> bodies = {"the launch code is 4471-alpha",
                                           "meet at the old mill at dawn"};
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
    m->set_content(str(c->serialized));
    ASSERT_EQ(call(alice, send).status().code(), svc::OK);
  }
  // The stored ciphertext really is what bob decrypts.
  ASSERT_EQ(store_->messages().count(2, 1).value_or(0), 2u);

  std::vector<std::pair<std::string, Bytes>> secrets;
  for (const auto& body : bodies)
    secrets.emplace_back("plaintext", Bytes(body.begin(), body.end()));
  for (Client* c : {&alice, &bob}) {
    secrets.emplace_back("identity private key", Bytes(c->party.identity.private_key.view().begin(),
                                                       c->party.identity.private_key.view().end()));
    secrets.emplace_back("auth key seed", Bytes(c->auth.seed().begin(), c->auth.seed().end()));
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
      EXPECT_EQ(file.find(str(bytes)), std::string::npos)
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
  EXPECT_NE(all.find(str(alice.party.identity.public_key.serialize())), std::string::npos);
}

}  // namespace
}  // namespace sotto::server
