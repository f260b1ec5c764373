// The trust policy over a real client store (src/client/identities.h): which keys may be sent
// to, what a key change records, and that every change is reported once.
#include <gtest/gtest.h>

#include <filesystem>

#include "client/identities.h"
#include "crypto/rng.h"

namespace sotto::client {
namespace {

namespace fs = std::filesystem;
using protocol::Address;
using protocol::DeviceId;
using protocol::Direction;
using protocol::KeyPair;

class IdentitiesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sotto-identities-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    ids_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  Identities& make(const std::string& policy) {
    store::AccountSettings s;
    s.username = "alice";
    s.device_id = 1;
    s.server_host = "h";
    s.server_port = 1;
    s.auth_key = crypto::Ed25519KeyPair::generate(rng_);
    s.identity = KeyPair::generate(rng_);
    s.registration_id = protocol::RegistrationId(7);
    s.trust_policy = policy;
    store_ = std::move(*store::ClientStore::create(dir_, s, std::nullopt));
    ids_ = std::make_unique<Identities>(*store_, clock_);
    return *ids_;
  }
  bool trusted(const KeyPair& k, Direction d = Direction::sending) {
    return ids_->is_trusted_identity(bob1_, k.public_key, d).value();
  }

  fs::path dir_;
  crypto::DeterministicRng rng_{5};
  ManualWallClock clock_{1'000'000};
  std::unique_ptr<store::ClientStore> store_;
  std::unique_ptr<Identities> ids_;
  KeyPair k1_ = KeyPair::generate(rng_);
  KeyPair k2_ = KeyPair::generate(rng_);
  Address bob1_{"bob", DeviceId(1)};
  Address bob2_{"bob", DeviceId(2)};
};

TEST_F(IdentitiesTest, OnFirstUseAcceptsTheFirstKeyAndRecordsAChangeUnaccepted) {
  auto& ids = make(kTrustOnFirstUse);
  EXPECT_TRUE(trusted(k1_));
  EXPECT_EQ(ids.save_identity(bob1_, k1_.public_key), false);
  auto first = ids.take_changes();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_TRUE(first[0].first);
  EXPECT_TRUE(first[0].accepted);
  EXPECT_EQ(ids.save_identity(bob2_, k1_.public_key), false);  // the key is per account
  EXPECT_TRUE(ids.take_changes().empty());
  EXPECT_TRUE(trusted(k1_));
  EXPECT_FALSE(trusted(k2_));

  clock_.advance_ms(5);
  EXPECT_EQ(ids.save_identity(bob2_, k2_.public_key), true);
  auto change = ids.take_changes();
  ASSERT_EQ(change.size(), 1u);
  EXPECT_FALSE(change[0].first);
  EXPECT_FALSE(change[0].accepted);
  EXPECT_EQ(change[0].changed_at, 1'000'005u);
  // Neither key may be sent to now, but what comes in still decrypts (the inbox holds it).
  EXPECT_FALSE(trusted(k2_));
  EXPECT_FALSE(trusted(k1_));
  EXPECT_TRUE(trusted(k2_, Direction::receiving));
  auto c = store_->load_contact("bob").value();
  EXPECT_EQ(c->identity_key, std::optional(k2_.public_key));
  EXPECT_FALSE(c->verified);
  EXPECT_FALSE(ids.accepted("bob", k2_.public_key).value());
}

TEST_F(IdentitiesTest, AlwaysAcceptsEveryNewKeyButRecordsTheChange) {
  auto& ids = make(kTrustAlways);
  ASSERT_TRUE(ids.save_identity(bob1_, k1_.public_key));
  (void)ids.take_changes();
  EXPECT_TRUE(trusted(k2_));
  EXPECT_EQ(ids.save_identity(bob1_, k2_.public_key), true);
  auto change = ids.take_changes();
  ASSERT_EQ(change.size(), 1u);
  EXPECT_TRUE(change[0].accepted);
  EXPECT_TRUE(ids.accepted("bob", k2_.public_key).value());
}

TEST_F(IdentitiesTest, NeverAcceptsNoKeyByItself) {
  auto& ids = make(kTrustNever);
  EXPECT_FALSE(trusted(k1_));
  ASSERT_TRUE(ids.note("bob", k1_.public_key));
  EXPECT_FALSE(trusted(k1_));
  EXPECT_FALSE(ids.take_changes().at(0).accepted);
  // The user compared safety numbers (Contacts::trust does this).
  auto c = store_->load_contact("bob").value().value();
  c.accepted = c.verified = true;
  ASSERT_TRUE(store_->save_contact(c));
  EXPECT_TRUE(trusted(k1_));
}

TEST_F(IdentitiesTest, APolicyChangeTakesEffectAtOnce) {
  auto& ids = make(kTrustOnFirstUse);
  ASSERT_TRUE(ids.save_identity(bob1_, k1_.public_key));
  EXPECT_TRUE(trusted(k2_) == false);
  auto s = store_->settings().clone();
  s.trust_policy = kTrustAlways;
  ASSERT_TRUE(store_->save_settings(s));
  EXPECT_TRUE(trusted(k2_));
}

}  // namespace
}  // namespace sotto::client
