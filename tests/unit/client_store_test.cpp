// The client store (src/store/client) on real SQLite files in a temporary directory: account
// creation and opening, the storage key (passphrase and key file), every protocol store
// interface, trust policies, envelope dedup, history, transactions, tampering, and a scan of the
// files on disk proving that no secret is stored in the clear.
#include "store/client/client_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "crypto/rng.h"
#include "protocol/in_memory_stores.h"
#include "protocol/sender_keys.h"
#include "protocol/session.h"
#include "store/client/sealed_codec.h"

namespace sotto::store {
namespace {

namespace fs = std::filesystem;
using protocol::Address;
using protocol::DeviceId;
using protocol::Direction;
using protocol::KeyPair;
using protocol::PreKeyId;
using protocol::SenderKeyName;
using protocol::SenderKeyRecord;
using protocol::SessionRecord;
using protocol::SignedPreKeyId;

constexpr const char* kPassphrase = "correct horse battery staple";

AccountSettings make_settings(const std::string& username, std::uint64_t seed,
                              const std::string& policy = "on-first-use") {
  crypto::DeterministicRng rng(seed);
  AccountSettings s;
  s.username = username;
  s.device_id = 3;
  s.server_host = "chat.example.org";
  s.server_port = 8443;
  s.server_fingerprint = "ab12cd34";
  s.auth_key = crypto::Ed25519KeyPair::generate(rng);
  s.identity = KeyPair::generate(rng);
  s.registration_id = protocol::generate_registration_id(rng);
  s.next_pre_key_id = 17;
  s.next_signed_pre_key_id = 2;
  s.trust_policy = policy;
  return s;
}

void expect_same_settings(const AccountSettings& a, const AccountSettings& b) {
  EXPECT_EQ(a.username, b.username);
  EXPECT_EQ(a.device_id, b.device_id);
  EXPECT_EQ(a.server_host, b.server_host);
  EXPECT_EQ(a.server_port, b.server_port);
  EXPECT_EQ(a.server_fingerprint, b.server_fingerprint);
  EXPECT_EQ(a.auth_key.public_key(), b.auth_key.public_key());
  EXPECT_TRUE(crypto::constant_time_equal(a.auth_key.seed(), b.auth_key.seed()));
  EXPECT_EQ(a.identity.public_key, b.identity.public_key);
  EXPECT_TRUE(a.identity.private_key == b.identity.private_key);
  EXPECT_EQ(a.registration_id, b.registration_id);
  EXPECT_EQ(a.next_pre_key_id, b.next_pre_key_id);
  EXPECT_EQ(a.next_signed_pre_key_id, b.next_signed_pre_key_id);
  EXPECT_EQ(a.trust_policy, b.trust_policy);
}

// A session record as Bob would hold it after X3DH (initialize_bob_session).
SessionRecord make_session_record(std::uint64_t seed) {
  crypto::DeterministicRng rng(seed);
  const KeyPair bob_identity = KeyPair::generate(rng);
  const KeyPair bob_signed = KeyPair::generate(rng);
  const KeyPair alice_identity = KeyPair::generate(rng);
  const KeyPair alice_base = KeyPair::generate(rng);
  auto state = protocol::initialize_bob_session(
      protocol::BobParameters{bob_identity, bob_signed, nullptr, bob_signed,
                              alice_identity.public_key, alice_base.public_key});
  if (!state) throw std::runtime_error("initialize_bob_session failed");
  SessionRecord record;
  record.promote_state(std::move(*state));
  return record;
}

Bytes bytes_of(const crypto::SecretBuffer& b) {
  return Bytes(b.view().begin(), b.view().end());
}

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

// --- raw SQLite access, as an attacker with the file would have --------------------------------

struct RawDb {
  explicit RawDb(const fs::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      throw std::runtime_error("raw open failed");
    }
    sqlite3_busy_timeout(db, 5000);
  }
  ~RawDb() { sqlite3_close_v2(db); }
  void exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      const std::string msg = err ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error("raw exec failed: " + msg);
    }
  }
  Bytes blob(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      throw std::runtime_error("raw prepare failed");
    }
    Bytes out;
    if (sqlite3_step(st) == SQLITE_ROW) {
      const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(st, 0));
      out.assign(p, p + sqlite3_column_bytes(st, 0));
    }
    sqlite3_finalize(st);
    return out;
  }
  void set_blob(const std::string& sql, const Bytes& value) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      throw std::runtime_error("raw prepare failed");
    }
    if (value.empty()) {
      sqlite3_bind_zeroblob(st, 1, 0);  // a zero-length BLOB, not NULL
    } else {
      sqlite3_bind_blob(st, 1, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
    }
    const int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) throw std::runtime_error("raw update failed");
  }
  // Flips one bit of the blob selected by `select` (one row, one column) and writes it back.
  void flip(const std::string& select, const std::string& update, std::size_t index) {
    Bytes b = blob(select);
    if (b.size() <= index) throw std::runtime_error("blob too short to flip");
    b[index] ^= 0x01;
    set_blob(update, b);
  }
  sqlite3* db = nullptr;
};

// Every byte of every file in the directory (database, WAL, shared memory, key file).
std::vector<std::pair<fs::path, Bytes>> read_all_files(const fs::path& dir) {
  std::vector<std::pair<fs::path, Bytes>> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    out.emplace_back(e.path(), Bytes(std::istreambuf_iterator<char>(in), {}));
  }
  return out;
}

bool contains(const Bytes& haystack, ByteView needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

class ClientStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("SOTTO_TEST_FAST_KDF", "1", 1);
    std::string tmpl = (fs::temp_directory_path() / "sotto-client-store-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ / "data";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::unique_ptr<ClientStore> make(const std::string& name = "alice",
                                    const std::string& policy = "on-first-use",
                                    std::optional<std::string> passphrase = std::nullopt) {
    auto s = ClientStore::create(dir_, make_settings(name, 42, policy), std::move(passphrase));
    if (!s) throw std::runtime_error(std::string(to_string(s.error())));
    return std::move(*s);
  }
  std::unique_ptr<ClientStore> reopen(const std::string& name = "alice",
                                      std::optional<std::string> passphrase = std::nullopt) {
    auto s = ClientStore::open(dir_, name, std::move(passphrase));
    if (!s) throw std::runtime_error(std::string(to_string(s.error())));
    return std::move(*s);
  }
  fs::path db(const std::string& name = "alice") const { return dir_ / (name + ".db"); }

  fs::path root_;
  fs::path dir_;
};

// --- accounts, settings, storage key --------------------------------------------------------

TEST_F(ClientStoreTest, CreateAndOpenWithPassphraseRoundTripsSettings) {
  const AccountSettings original = make_settings("alice", 1, "always");
  {
    auto s = ClientStore::create(dir_, original, std::string(kPassphrase));
    ASSERT_TRUE(s) << to_string(s.error());
    expect_same_settings((*s)->settings(), original);
  }
  EXPECT_FALSE(fs::exists(dir_ / "alice.key"));
  auto s = ClientStore::open(dir_, "alice", std::string(kPassphrase));
  ASSERT_TRUE(s) << to_string(s.error());
  expect_same_settings((*s)->settings(), original);
  auto id = (*s)->identity_key_pair();
  EXPECT_EQ(id.public_key, original.identity.public_key);
  EXPECT_TRUE(id.private_key == original.identity.private_key);
  EXPECT_EQ((*s)->local_registration_id(), original.registration_id);
}

TEST_F(ClientStoreTest, CreateAndOpenWithKeyFileRoundTripsSettings) {
  const AccountSettings original = make_settings("alice", 2);
  ASSERT_TRUE(ClientStore::create(dir_, original, std::nullopt));
  EXPECT_EQ(fs::file_size(dir_ / "alice.key"), 32u);
  auto s = ClientStore::open(dir_, "Alice", std::nullopt);  // usernames are case-insensitive
  ASSERT_TRUE(s) << to_string(s.error());
  expect_same_settings((*s)->settings(), original);
}

TEST_F(ClientStoreTest, FilesAreCreatedPrivate) {
  auto s = make();
  EXPECT_EQ(mode_of(dir_), 0700u);
  EXPECT_EQ(mode_of(db()), 0600u);
  EXPECT_EQ(mode_of(dir_ / "alice.key"), 0600u);
  ASSERT_TRUE(s->mark_envelope("e1"));  // make sure the WAL exists
  if (fs::exists(db().string() + "-wal")) {
    EXPECT_EQ(mode_of(db().string() + "-wal"), 0600u);
  }
  RawDb raw(db());
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw.db, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
}

TEST_F(ClientStoreTest, CreateRefusesExistingAccountAndBadArguments) {
  auto s = make();
  auto again = ClientStore::create(dir_, make_settings("alice", 9), std::nullopt);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error(), ClientError::exists);
  // The existing account is untouched.
  s.reset();
  EXPECT_TRUE(ClientStore::open(dir_, "alice", std::nullopt));

  for (const char* bad : {"../evil", "ab", "Alice", ".hidden", "a/b/c", "", "-dash",
                          "thirty-three-characters-long-name"}) {
    auto r = ClientStore::create(dir_, make_settings(bad, 1), std::nullopt);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error(), ClientError::invalid_argument) << bad;
  }
  EXPECT_FALSE(fs::exists(root_ / "evil.db"));
  auto policy = ClientStore::create(dir_, make_settings("bob", 1, "sometimes"), std::nullopt);
  ASSERT_FALSE(policy);
  EXPECT_EQ(policy.error(), ClientError::invalid_argument);
  auto empty = ClientStore::create(dir_, make_settings("bob", 1), std::string());
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error(), ClientError::invalid_argument);
  AccountSettings keyless = make_settings("bob", 1);
  keyless.auth_key = crypto::Ed25519KeyPair();  // would be written, then refused at every open
  auto no_key = ClientStore::create(dir_, keyless, std::nullopt);
  ASSERT_FALSE(no_key);
  EXPECT_EQ(no_key.error(), ClientError::invalid_argument);
  EXPECT_FALSE(fs::exists(db("bob")));
}

TEST_F(ClientStoreTest, OpenMissingAccountIsNotFound) {
  auto r = ClientStore::open(dir_, "nobody", std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::not_found);
}

TEST_F(ClientStoreTest, WrongPassphraseIsRefused) {
  make("alice", "on-first-use", std::string(kPassphrase));
  auto wrong = ClientStore::open(dir_, "alice", std::string("incorrect horse"));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error(), ClientError::wrong_passphrase);
  auto none = ClientStore::open(dir_, "alice", std::nullopt);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error(), ClientError::wrong_passphrase);
  EXPECT_TRUE(ClientStore::open(dir_, "alice", std::string(kPassphrase)));

  // A key-file store given a passphrase is refused too, rather than silently ignoring it.
  make("bob");
  auto extra = ClientStore::open(dir_, "bob", std::string(kPassphrase));
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.error(), ClientError::wrong_passphrase);
}

TEST_F(ClientStoreTest, KeyFilePermissionsAreEnforced) {
  make();
  const fs::path key = dir_ / "alice.key";
  for (mode_t mode : {0640, 0604, 0644, 0620, 0602, 0610}) {
    ASSERT_EQ(::chmod(key.c_str(), mode), 0);
    auto r = ClientStore::open(dir_, "alice", std::nullopt);
    ASSERT_FALSE(r) << std::oct << mode;
    EXPECT_EQ(r.error(), ClientError::io) << std::oct << mode;
  }
  EXPECT_NE(to_string(ClientError::io).find("0600"), std::string_view::npos);
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  EXPECT_TRUE(ClientStore::open(dir_, "alice", std::nullopt));
  ASSERT_EQ(::chmod(key.c_str(), 0400), 0);
  EXPECT_TRUE(ClientStore::open(dir_, "alice", std::nullopt));

  // A symlink in place of the key file is not followed.
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  fs::rename(key, root_ / "moved.key");
  fs::create_symlink(root_ / "moved.key", key);
  auto link = ClientStore::open(dir_, "alice", std::nullopt);
  ASSERT_FALSE(link);
  EXPECT_EQ(link.error(), ClientError::io);
  fs::remove(key);
  auto missing = ClientStore::open(dir_, "alice", std::nullopt);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error(), ClientError::io);
}

TEST_F(ClientStoreTest, ReplacedOrTruncatedKeyFileIsRefused) {
  make();
  const fs::path key = dir_ / "alice.key";
  {
    std::ofstream out(key, std::ios::binary | std::ios::trunc);
    out << std::string(32, 'k');
  }
  auto other = ClientStore::open(dir_, "alice", std::nullopt);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error(), ClientError::wrong_passphrase);
  fs::resize_file(key, 31);
  auto shorter = ClientStore::open(dir_, "alice", std::nullopt);
  ASSERT_FALSE(shorter);
  EXPECT_EQ(shorter.error(), ClientError::corrupt);
}

TEST_F(ClientStoreTest, AccountsListsStores) {
  EXPECT_TRUE(ClientStore::accounts(dir_).empty());
  make("carol");
  make("alice");
  make("bob", "on-first-use", std::string(kPassphrase));
  EXPECT_EQ(ClientStore::accounts(dir_), (std::vector<std::string>{"alice", "bob", "carol"}));
}

TEST_F(ClientStoreTest, SaveSettingsPersists) {
  auto s = make();
  AccountSettings changed = make_settings("alice", 42);
  changed.next_pre_key_id = 101;
  changed.next_signed_pre_key_id = 7;
  changed.server_fingerprint = "ffee";
  changed.trust_policy = "never";
  ASSERT_TRUE(s->save_settings(changed));
  expect_same_settings(s->settings(), changed);
  s.reset();
  s = reopen();
  expect_same_settings(s->settings(), changed);

  AccountSettings renamed = make_settings("mallory", 42);
  EXPECT_EQ(s->save_settings(renamed).error(), ClientError::invalid_argument);
  AccountSettings bad_policy = make_settings("alice", 42, "maybe");
  EXPECT_EQ(s->save_settings(bad_policy).error(), ClientError::invalid_argument);
  AccountSettings keyless = make_settings("alice", 42);
  keyless.auth_key = crypto::Ed25519KeyPair();
  EXPECT_EQ(s->save_settings(keyless).error(), ClientError::invalid_argument);
  expect_same_settings(s->settings(), changed);
}

// --- protocol store interfaces -----------------------------------------------------------------

TEST_F(ClientStoreTest, SessionsRoundTrip) {
  auto s = make();
  const Address bob1{"bob", DeviceId(1)}, bob2{"bob", DeviceId(2)}, carol{"carol", DeviceId(1)};
  auto none = s->load_session(bob1);
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());

  const SessionRecord r1 = make_session_record(1);
  const SessionRecord r2 = make_session_record(2);
  ASSERT_TRUE(s->save_session(bob1, r1));
  ASSERT_TRUE(s->save_session(bob2, r2));
  ASSERT_TRUE(s->save_session(carol, r2));
  s.reset();
  s = reopen();

  auto l1 = s->load_session(bob1);
  ASSERT_TRUE(l1 && l1->has_value());
  EXPECT_EQ(bytes_of((*l1)->encode()), bytes_of(r1.encode()));
  EXPECT_TRUE((*l1)->current().root_key == r1.current().root_key);
  auto l2 = s->load_session(bob2);
  ASSERT_TRUE(l2 && l2->has_value());
  EXPECT_EQ(bytes_of((*l2)->encode()), bytes_of(r2.encode()));

  // Overwrite, list devices, delete.
  ASSERT_TRUE(s->save_session(bob1, r2));
  EXPECT_EQ(bytes_of((*s->load_session(bob1))->encode()), bytes_of(r2.encode()));
  EXPECT_EQ(s->session_devices("bob"), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_EQ(s->session_devices("carol"), (std::vector<std::uint32_t>{1}));
  EXPECT_TRUE(s->session_devices("dave")->empty());
  ASSERT_TRUE(s->delete_session(bob1));
  EXPECT_FALSE(s->load_session(bob1)->has_value());
  EXPECT_EQ(s->session_devices("bob"), (std::vector<std::uint32_t>{2}));
  EXPECT_TRUE(s->delete_session(bob1));  // deleting nothing is fine
}

TEST_F(ClientStoreTest, PreKeysRoundTrip) {
  auto s = make();
  crypto::DeterministicRng rng(5);
  const auto keys = protocol::generate_pre_keys(rng, PreKeyId(10), 5);
  for (const auto& k : keys) ASSERT_TRUE(s->save_pre_key(k));
  EXPECT_EQ(s->pre_key_count(), 5u);
  s.reset();
  s = reopen();
  for (const auto& k : keys) {
    auto l = s->load_pre_key(k.id);
    ASSERT_TRUE(l && l->has_value());
    EXPECT_EQ((*l)->id, k.id);
    EXPECT_EQ((*l)->key_pair.public_key, k.key_pair.public_key);
    EXPECT_TRUE((*l)->key_pair.private_key == k.key_pair.private_key);
  }
  EXPECT_FALSE(s->load_pre_key(PreKeyId(99))->has_value());
  ASSERT_TRUE(s->remove_pre_key(PreKeyId(12)));
  EXPECT_FALSE(s->load_pre_key(PreKeyId(12))->has_value());
  EXPECT_EQ(s->pre_key_count(), 4u);
  EXPECT_TRUE(s->remove_pre_key(PreKeyId(12)));
  EXPECT_EQ(s->pre_key_ids().value(), (std::vector<std::uint32_t>{10, 11, 13, 14}));
}

TEST_F(ClientStoreTest, SignedPreKeysRoundTrip) {
  auto s = make();
  crypto::DeterministicRng rng(6);
  const auto identity = KeyPair::generate(rng);
  const auto spk1 =
      protocol::generate_signed_pre_key(rng, identity, SignedPreKeyId(1), 1'700'000'000);
  const auto spk2 =
      protocol::generate_signed_pre_key(rng, identity, SignedPreKeyId(2), 1'700'086'400);
  ASSERT_TRUE(s->save_signed_pre_key(spk1));
  ASSERT_TRUE(s->save_signed_pre_key(spk2));
  s.reset();
  s = reopen();
  for (const auto* k : {&spk1, &spk2}) {
    auto l = s->load_signed_pre_key(k->id);
    ASSERT_TRUE(l && l->has_value());
    EXPECT_EQ((*l)->id, k->id);
    EXPECT_EQ((*l)->key_pair.public_key, k->key_pair.public_key);
    EXPECT_TRUE((*l)->key_pair.private_key == k->key_pair.private_key);
    EXPECT_EQ((*l)->signature, k->signature);
    EXPECT_EQ((*l)->timestamp, k->timestamp);
    EXPECT_TRUE(identity.public_key.verify((*l)->key_pair.public_key.serialize(), (*l)->signature));
  }
  EXPECT_FALSE(s->load_signed_pre_key(SignedPreKeyId(3))->has_value());
  EXPECT_EQ(s->signed_pre_key_ids().value(), (std::vector<std::uint32_t>{1, 2}));
  ASSERT_TRUE(s->remove_signed_pre_key(SignedPreKeyId(1)));
  EXPECT_FALSE(s->load_signed_pre_key(SignedPreKeyId(1))->has_value());
  EXPECT_EQ(s->signed_pre_key_ids().value(), (std::vector<std::uint32_t>{2}));
}

TEST_F(ClientStoreTest, SenderKeysRoundTripAndGroupMessagesFlow) {
  auto alice = make("alice");
  auto bob = make("bob");
  crypto::DeterministicRng rng(7);
  const SenderKeyName own{"group-1", Address{"alice", DeviceId(3)}};

  SenderKeyRecord record;
  (void)protocol::sender_key_distribution(record, rng);
  ASSERT_TRUE(alice->save_sender_key(own, record));
  auto loaded = alice->load_sender_key(own);
  ASSERT_TRUE(loaded && loaded->has_value());
  EXPECT_EQ(bytes_of((*loaded)->encode()), bytes_of(record.encode()));
  EXPECT_FALSE(alice->load_sender_key({"group-2", own.sender})->has_value());
  EXPECT_FALSE(alice->load_sender_key({"group-1", Address{"alice", DeviceId(4)}})->has_value());

  // The store-level group functions, with both sides on client stores that are reopened.
  auto skdm = protocol::create_sender_key_distribution(own, *alice, rng);
  ASSERT_TRUE(skdm);
  ASSERT_TRUE(protocol::process_sender_key_distribution(own, *skdm, *bob));
  alice.reset();
  bob.reset();
  alice = reopen("alice");
  bob = reopen("bob");
  for (int i = 0; i < 3; ++i) {
    const std::string text = "group message " + std::to_string(i);
    auto m = protocol::group_encrypt(own, as_bytes(text), *alice, rng);
    ASSERT_TRUE(m);
    auto p = protocol::group_decrypt(own, *m, *bob, 1'700'000'000);
    ASSERT_TRUE(p) << to_string(p.error());
    EXPECT_EQ(std::string(p->view().begin(), p->view().end()), text);
    // The receiving chain advanced and was persisted: a replay is refused.
    auto again = protocol::group_decrypt(own, *m, *bob, 1'700'000'000);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error(), protocol::Error::duplicate_message);
  }
}

// The identity store the client puts over the store (src/client/identities.h), reduced to what a
// store test needs: every key trusted, the contact's key recorded.
class TrustingIdentities final : public protocol::IdentityKeyStore {
 public:
  explicit TrustingIdentities(ClientStore& s) : s_(s) {}
  tl::expected<protocol::IdentityKeyPair, protocol::Error> identity_key_pair() override {
    return s_.identity_key_pair();
  }
  tl::expected<protocol::RegistrationId, protocol::Error> local_registration_id() override {
    return s_.local_registration_id();
  }
  tl::expected<bool, protocol::Error> save_identity(const Address& a,
                                                    const protocol::PublicKey& key) override {
    if (!s_.save_contact(Contact{a.name, key, true, false, 0})) {
      return tl::unexpected(protocol::Error::store_failure);
    }
    return false;
  }
  tl::expected<bool, protocol::Error> is_trusted_identity(const Address&,
                                                          const protocol::PublicKey&,
                                                          Direction) override {
    return true;
  }
  tl::expected<std::optional<protocol::PublicKey>, protocol::Error> load_identity(
      const Address& a) override {
    auto c = s_.load_contact(a.name);
    if (!c) return tl::unexpected(protocol::Error::store_failure);
    if (!c->has_value()) return std::optional<protocol::PublicKey>{};
    return (*c)->identity_key;
  }

 private:
  ClientStore& s_;
};

// A real X3DH + Double Ratchet conversation in which Bob keeps all his state in the client store
// (identity, prekeys, signed prekey, sessions) and is closed and reopened between messages.
TEST_F(ClientStoreTest, ProtocolConversationWithStorePersists) {
  protocol::ManualClock clock;
  crypto::DeterministicRng arng(100), brng(200);
  const KeyPair alice_identity = KeyPair::generate(arng);
  protocol::InMemoryIdentityKeyStore a_ids(alice_identity.clone(), protocol::RegistrationId(77));
  protocol::InMemorySessionStore a_sessions;
  protocol::InMemoryPreKeyStore a_pre_keys;
  protocol::InMemorySignedPreKeyStore a_signed;
  protocol::SessionStores alice{a_ids, a_sessions, a_pre_keys, a_signed};
  const Address alice_addr{"alice", DeviceId(1)};
  const Address bob_addr{"bob", DeviceId(3)};

  auto bob = make("bob");
  const auto spk = protocol::generate_signed_pre_key(brng, bob->settings().identity,
                                                     SignedPreKeyId(1), clock.now_seconds());
  ASSERT_TRUE(bob->save_signed_pre_key(spk));
  for (const auto& pk : protocol::generate_pre_keys(brng, PreKeyId(1), 3)) {
    ASSERT_TRUE(bob->save_pre_key(pk));
  }
  protocol::PreKeyBundle bundle;
  bundle.registration_id = bob->settings().registration_id;
  bundle.device_id = bob_addr.device;
  auto otk = bob->load_pre_key(PreKeyId(1));
  ASSERT_TRUE(otk && otk->has_value());
  bundle.pre_key_id = PreKeyId(1);
  bundle.pre_key = (*otk)->key_pair.public_key;
  bundle.signed_pre_key_id = spk.id;
  bundle.signed_pre_key = spk.key_pair.public_key;
  bundle.signed_pre_key_signature = spk.signature;
  bundle.identity_key = bob->settings().identity.public_key;
  ASSERT_TRUE(protocol::process_pre_key_bundle(bob_addr, bundle, alice, arng, clock));

  // Bob receives inside one transaction: session + identity + prekey removal + message + envelope.
  auto receive = [&](ClientStore& store, const protocol::CiphertextMessage& c,
                     const std::string& envelope) -> std::string {
    TrustingIdentities ids(store);
    protocol::SessionStores bs{ids, store, store, store};
    std::string text;
    auto t = store.transaction([&] {
      auto p = c.type == protocol::MessageType::pre_key
                   ? protocol::decrypt_pre_key_message(alice_addr, c.serialized, bs, brng, clock)
                   : protocol::decrypt_signal_message(alice_addr, c.serialized, bs, brng, clock);
      if (!p) return false;
      text.assign(p->plaintext.view().begin(), p->plaintext.view().end());
      StoredMessage m{envelope, "alice", "alice", 1, clock.now_seconds() * 1000, text, false};
      return store.add_message(m).has_value() && store.mark_envelope(envelope).has_value();
    });
    EXPECT_TRUE(t && *t);
    return text;
  };

  auto c1 = protocol::encrypt(bob_addr, as_bytes("hello bob"), alice);
  ASSERT_TRUE(c1);
  EXPECT_EQ(receive(*bob, *c1, "env-1"), "hello bob");
  EXPECT_EQ(bob->pre_key_count(), 2u);
  EXPECT_EQ(bob->load_contact("alice").value()->identity_key,
            std::optional(alice_identity.public_key));
  EXPECT_TRUE(bob->seen_envelope("env-1"));

  bob.reset();
  bob = reopen("bob");
  for (int round = 0; round < 3; ++round) {
    TrustingIdentities ids(*bob);
    protocol::SessionStores bs{ids, *bob, *bob, *bob};
    const std::string reply = "reply " + std::to_string(round);
    auto r = protocol::encrypt(alice_addr, as_bytes(reply), bs);
    ASSERT_TRUE(r) << to_string(r.error());
    auto p = protocol::decrypt_signal_message(bob_addr, r->serialized, alice, arng, clock);
    ASSERT_TRUE(p) << to_string(p.error());
    EXPECT_EQ(std::string(p->plaintext.view().begin(), p->plaintext.view().end()), reply);

    bob.reset();
    bob = reopen("bob");
    const std::string text = "message " + std::to_string(round);
    auto c = protocol::encrypt(bob_addr, as_bytes(text), alice);
    ASSERT_TRUE(c);
    EXPECT_EQ(receive(*bob, *c, "env-r" + std::to_string(round)), text);
    bob.reset();
    bob = reopen("bob");
  }
  auto history = bob->messages("alice", 0);
  ASSERT_TRUE(history);
  ASSERT_EQ(history->size(), 4u);
  EXPECT_EQ(history->front().body, "hello bob");
}

// --- trust -------------------------------------------------------------------------------------

struct TrustKeys {
  crypto::DeterministicRng rng{9};
  KeyPair k1 = KeyPair::generate(rng);
  KeyPair k2 = KeyPair::generate(rng);
  Address dev1{"bob", DeviceId(1)};
  Address dev2{"bob", DeviceId(2)};
};

TEST_F(ClientStoreTest, ContactsRoundTripWithWhatTheUserDecided) {
  auto s = make();
  TrustKeys t;
  EXPECT_FALSE(s->load_contact("bob").value().has_value());
  ASSERT_TRUE(s->save_contact(Contact{"bob", t.k1.public_key, true, true, 0}));
  ASSERT_TRUE(s->save_contact(Contact{"carol", t.k2.public_key, false, false, 1234}));
  s.reset();
  s = reopen();
  auto bob = s->load_contact("bob");
  ASSERT_TRUE(bob && bob->has_value());
  EXPECT_EQ((*bob)->identity_key, std::optional(t.k1.public_key));
  EXPECT_TRUE((*bob)->accepted);
  EXPECT_TRUE((*bob)->verified);
  auto all = s->contacts();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].username, "carol");
  EXPECT_FALSE((*all)[1].accepted);
  EXPECT_EQ((*all)[1].identity_changed_at, 1234u);
  EXPECT_EQ(s->save_contact(Contact{"../x", t.k1.public_key, true, false, 0}).error(),
            ClientError::invalid_argument);
}

// Before format 2, a contact's record had no "accepted": a key was usable unless it had changed
// and the user had not verified it since. Such a record still means that.
TEST(ContactCodec, AVersionOneRecordReadsAsWhatItMeant) {
  TrustKeys t;
  const auto v1 = [&](bool verified, std::uint64_t changed_at) {
    detail::Packer p(3 + 32 + 8);
    p.u8(1);
    p.u8(1);
    p.raw(t.k1.public_key.view());
    p.u8(verified ? 1 : 0);
    p.u64(changed_at);
    return p.finish();
  };
  auto unchanged = detail::decode_contact(v1(false, 0).view());
  ASSERT_TRUE(unchanged);
  EXPECT_TRUE(unchanged->accepted);
  auto changed = detail::decode_contact(v1(false, 99).view());
  ASSERT_TRUE(changed);
  EXPECT_FALSE(changed->accepted);
  auto verified = detail::decode_contact(v1(true, 99).view());
  ASSERT_TRUE(verified);
  EXPECT_TRUE(verified->accepted);
  // And a version 2 record keeps exactly what it says.
  detail::ContactState c{t.k2.public_key, false, true, 5};
  auto again = detail::decode_contact(detail::encode_contact(c).view());
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->accepted);
  EXPECT_TRUE(again->verified);
  EXPECT_FALSE(detail::decode_contact(Bytes{3, 0, 0, 0}));
}

TEST_F(ClientStoreTest, HeldMessagesAreTakenOncePerConversation) {
  auto s = make();
  ASSERT_TRUE(s->hold_message({"e1", "bob", "bob", 1, 100, "first", false}));
  ASSERT_TRUE(s->hold_message({"e2", "carol", "carol", 2, 150, "other", false}));
  ASSERT_TRUE(s->hold_message({"e3", "bob", "bob", 2, 200, "second", false}));
  EXPECT_EQ(s->held_count("bob").value(), 2u);
  s.reset();
  s = reopen();
  auto bob = s->take_held("bob");
  ASSERT_TRUE(bob);
  ASSERT_EQ(bob->size(), 2u);
  EXPECT_EQ((*bob)[0].body, "first");
  EXPECT_EQ((*bob)[0].peer, "bob");
  EXPECT_EQ((*bob)[1].envelope_id, "e3");
  EXPECT_EQ((*bob)[1].sender_device, 2u);
  EXPECT_TRUE(s->take_held("bob").value().empty());
  EXPECT_EQ(s->held_count("carol").value(), 1u);
  // Held messages are not history until released.
  EXPECT_TRUE(s->messages("bob", 0).value().empty());
}

TEST_F(ClientStoreTest, AHeldRowMovedToAnotherConversationIsDamagedNotMisattributed) {
  auto s = make();
  ASSERT_TRUE(s->hold_message({"e1", "bob", "bob", 1, 100, "for bob only", false}));
  s.reset();
  RawDb(db()).exec("UPDATE held SET peer = 'mallory'");
  s = reopen();
  auto taken = s->take_held("mallory");
  ASSERT_TRUE(taken);
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_EQ((*taken)[0].body, kDamagedMessageBody);
}

TEST_F(ClientStoreTest, JournalEntriesKeepTheirSequence) {
  auto s = make();
  auto a = s->append_event(as_bytes("one"));
  auto b = s->append_event(as_bytes("two"));
  auto c = s->append_event(as_bytes("three"));
  ASSERT_TRUE(a && b && c);
  EXPECT_LT(*a, *b);
  EXPECT_LT(*b, *c);
  auto after_a = s->events(*a, 0);
  ASSERT_TRUE(after_a);
  ASSERT_EQ(after_a->size(), 2u);
  EXPECT_EQ((*after_a)[0].seq, *b);
  EXPECT_TRUE(crypto::constant_time_equal((*after_a)[0].record.view(), as_bytes("two")));
  ASSERT_TRUE(s->remove_events(*b));
  s.reset();
  s = reopen();
  auto left = s->events(0, 0);
  ASSERT_TRUE(left);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].seq, *c);
  // Sequence numbers are never reused, even after every entry is gone.
  ASSERT_TRUE(s->remove_events(*c));
  auto d = s->append_event(as_bytes("four"));
  ASSERT_TRUE(d);
  EXPECT_GT(*d, *c);
  // A damaged entry keeps its place and comes back empty.
  s.reset();
  RawDb(db()).flip("SELECT record FROM events", "UPDATE events SET record=?1", 30);
  s = reopen();
  auto damaged = s->events(0, 0);
  ASSERT_TRUE(damaged);
  ASSERT_EQ(damaged->size(), 1u);
  EXPECT_EQ((*damaged)[0].seq, *d);
  EXPECT_EQ((*damaged)[0].record.size(), 0u);
}

TEST_F(ClientStoreTest, SentContentsAreKeptUntilTheyExpire) {
  auto s = make();
  ASSERT_TRUE(s->log_sent("bob", 1000, 5000, as_bytes("content for bob")));
  ASSERT_TRUE(s->log_sent("alice", 1000, 5000, as_bytes("sync copy")));
  ASSERT_TRUE(s->log_sent("bob", 2000, 9000, as_bytes("later")));
  auto got = s->load_sent("bob", 1000);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_TRUE(crypto::constant_time_equal((*got)->content.view(), as_bytes("content for bob")));
  EXPECT_EQ((*got)->resends, 0u);
  ASSERT_TRUE(s->count_resend("bob", 1000));
  EXPECT_EQ(s->load_sent("bob", 1000).value()->resends, 1u);
  EXPECT_FALSE(s->load_sent("carol", 1000).value().has_value());
  ASSERT_TRUE(s->expire_sent(6000));
  EXPECT_FALSE(s->load_sent("bob", 1000).value().has_value());
  EXPECT_FALSE(s->load_sent("alice", 1000).value().has_value());
  EXPECT_TRUE(s->load_sent("bob", 2000).value().has_value());
  // Sealed to its row: moved to another recipient, it does not open.
  s.reset();
  RawDb(db()).exec("UPDATE sent_log SET peer = 'mallory'");
  s = reopen();
  EXPECT_EQ(s->load_sent("mallory", 2000).error(), ClientError::corrupt);
}

TEST_F(ClientStoreTest, NamedValuesRoundTrip) {
  auto s = make();
  EXPECT_FALSE(s->load_value("x").value().has_value());
  ASSERT_TRUE(s->save_value("x", as_bytes("1")));
  ASSERT_TRUE(s->save_value("x", as_bytes("22")));
  ASSERT_TRUE(s->save_value("y", as_bytes("3")));
  s.reset();
  s = reopen();
  EXPECT_TRUE(crypto::constant_time_equal(s->load_value("x").value()->view(), as_bytes("22")));
  ASSERT_TRUE(s->remove_value("x"));
  EXPECT_FALSE(s->load_value("x").value().has_value());
  EXPECT_TRUE(s->load_value("y").value().has_value());
}

TEST_F(ClientStoreTest, ArchivedSessionsAreKeptButNotListedForSending) {
  auto s = make();
  const Address bob1{"bob", DeviceId(1)}, bob2{"bob", DeviceId(2)};
  ASSERT_TRUE(s->save_session(bob1, make_session_record(1)));
  ASSERT_TRUE(s->save_session(bob2, make_session_record(2)));
  auto record = s->load_session(bob2);
  ASSERT_TRUE(record && record->has_value());
  (*record)->archive_current();
  ASSERT_TRUE(s->save_session(bob2, **record));
  EXPECT_EQ(s->session_devices("bob").value(), std::vector<std::uint32_t>{1});
  auto kept = s->load_session(bob2);
  ASSERT_TRUE(kept && kept->has_value());
  EXPECT_FALSE((*kept)->previous().empty());
}

TEST_F(ClientStoreTest, ReadOnlyOpenReadsAndRefusesWrites) {
  auto s = make();
  ASSERT_TRUE(s->add_message({"m1", "bob", "bob", 1, 100, "hello", false}));
  // Another process holds the store open read-write meanwhile (a daemon).
  auto r = ClientStore::open_read_only(dir_, "alice", std::nullopt);
  ASSERT_TRUE(r) << to_string(r.error());
  auto list = (*r)->messages("bob", 0);
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].body, "hello");
  EXPECT_FALSE((*r)->add_message({"m2", "bob", "bob", 1, 200, "no", false}));
  EXPECT_EQ(s->messages("bob", 0).value().size(), 1u);
}

// A store written by the previous version (format 1: no held, events, sent_log or state table,
// no sessions.active or envelopes.content_hash column) is brought to format 2 when opened, and
// keeps all it had.
TEST_F(ClientStoreTest, AFormatOneStoreGainsTheNewTablesWhenOpened) {
  auto s = make();
  ASSERT_TRUE(s->save_session({"bob", DeviceId(1)}, make_session_record(1)));
  ASSERT_TRUE(s->add_message({"m1", "bob", "bob", 1, 100, "kept", false}));
  s.reset();
  RawDb(db()).exec(
      "DROP TABLE held; DROP TABLE events; DROP TABLE sent_log; DROP TABLE state; "
      "DROP INDEX envelopes_by_content; ALTER TABLE envelopes DROP COLUMN content_hash; "
      "ALTER TABLE sessions DROP COLUMN active; UPDATE meta SET value = 1 WHERE name = 'format'");
  s = reopen();
  EXPECT_EQ(s->session_devices("bob").value(), std::vector<std::uint32_t>{1});
  EXPECT_EQ(s->messages("bob", 0).value().at(0).body, "kept");
  EXPECT_TRUE(s->append_event(as_bytes("works")));
  EXPECT_TRUE(s->hold_message({"e1", "bob", "bob", 1, 100, "x", false}));
  EXPECT_TRUE(s->mark_envelope("e2", as_bytes("hash of e2")));
  EXPECT_TRUE(s->seen_content(as_bytes("hash of e2")).value());
  s.reset();
  EXPECT_EQ(RawDb(db()).blob("SELECT CAST(value AS BLOB) FROM meta WHERE name = 'format'"),
            Bytes{'2'});
}

TEST_F(ClientStoreTest, AProcessedCiphertextIsKnownUnderAnyEnvelopeId) {
  auto s = make();
  ASSERT_TRUE(s->mark_envelope("e1", as_bytes("content one")));
  ASSERT_TRUE(s->mark_envelope("e2"));  // no hash (a plaintext content, say)
  EXPECT_TRUE(s->seen_content(as_bytes("content one")).value());
  EXPECT_FALSE(s->seen_content(as_bytes("content two")).value());
  EXPECT_FALSE(s->seen_content({}).value());
  EXPECT_TRUE(s->seen_envelope("e2").value());
}

TEST_F(ClientStoreTest, ACopyOfTheStoreHasAnotherFileIdentity) {
  auto s = make();
  const std::string here = s->file_identity();
  EXPECT_FALSE(here.empty());
  s.reset();
  fs::create_directories(dir_ / "copy");
  for (const char* f : {"alice.db", "alice.key"}) {
    fs::copy_file(dir_ / f, dir_ / "copy" / f);
  }
  fs::permissions(dir_ / "copy" / "alice.key", fs::perms::owner_read | fs::perms::owner_write,
                  fs::perm_options::replace);
  auto copy = ClientStore::open(dir_ / "copy", "alice", std::nullopt);
  ASSERT_TRUE(copy) << to_string(copy.error());
  EXPECT_NE((*copy)->file_identity(), here);
  s = reopen();
  EXPECT_EQ(s->file_identity(), here);
}

TEST_F(ClientStoreTest, EnvelopeDedup) {
  auto s = make();
  EXPECT_EQ(s->seen_envelope("00ff"), false);
  ASSERT_TRUE(s->mark_envelope("00ff"));
  ASSERT_TRUE(s->mark_envelope("00ff"));
  EXPECT_EQ(s->seen_envelope("00ff"), true);
  EXPECT_EQ(s->seen_envelope("00fe"), false);
  s.reset();
  s = reopen();
  EXPECT_EQ(s->seen_envelope("00ff"), true);
}

TEST_F(ClientStoreTest, EnvelopeDedupKeepsTheNewest100k) {
  auto s = make();
  constexpr int kTotal = 100'000 + 10;
  auto t = s->transaction([&] {
    for (int i = 0; i < kTotal; ++i) {
      if (!s->mark_envelope("env-" + std::to_string(i))) return false;
    }
    return true;
  });
  ASSERT_TRUE(t && *t);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s->seen_envelope("env-" + std::to_string(i)), false) << i;
  EXPECT_EQ(s->seen_envelope("env-10"), true);
  EXPECT_EQ(s->seen_envelope("env-" + std::to_string(kTotal - 1)), true);
  s.reset();
  RawDb raw(db());
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw.db, "SELECT COUNT(*) FROM envelopes", -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(st, 0), 100'000);
  sqlite3_finalize(st);
}

TEST_F(ClientStoreTest, MessageHistoryIsOrderedByTimestamp) {
  auto s = make();
  const std::vector<std::pair<std::uint64_t, std::string>> in = {
      {5000, "fifth"}, {1000, "first"}, {3000, "third"}, {2000, "second"}, {4000, "fourth"}};
  for (std::size_t n = 0; n < in.size(); ++n) {
    const bool outgoing = n % 2 == 1;
    StoredMessage m{"id" + std::to_string(n),
                    "bob",
                    outgoing ? "alice" : "bob",
                    1,
                    in[n].first,
                    in[n].second,
                    outgoing};
    ASSERT_TRUE(s->add_message(m));
  }
  ASSERT_TRUE(s->add_message({"other", "carol", "carol", 2, 1500, "not bob's", false}));
  // Re-adding an envelope changes nothing.
  ASSERT_TRUE(s->add_message({"id0", "bob", "bob", 1, 9999, "duplicate", false}));
  s.reset();
  s = reopen();

  auto all = s->messages("bob", 0);
  ASSERT_TRUE(all);
  std::vector<std::string> bodies;
  for (const auto& m : *all) bodies.push_back(m.body);
  EXPECT_EQ(bodies, (std::vector<std::string>{"first", "second", "third", "fourth", "fifth"}));
  EXPECT_EQ((*all)[4].envelope_id, "id0");
  EXPECT_EQ((*all)[4].sender, "bob");
  EXPECT_EQ((*all)[4].peer, "bob");
  EXPECT_EQ((*all)[4].sender_device, 1u);
  EXPECT_EQ((*all)[4].timestamp, 5000u);
  EXPECT_FALSE((*all)[4].outgoing);

  auto newest = s->messages("bob", 2);
  ASSERT_TRUE(newest);
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].body, "fourth");
  EXPECT_EQ((*newest)[1].body, "fifth");
  auto carol = s->messages("carol", 10);
  ASSERT_TRUE(carol);
  ASSERT_EQ(carol->size(), 1u);
  EXPECT_EQ(carol->front().body, "not bob's");
  EXPECT_TRUE(s->messages("dave", 10)->empty());

  // Equal timestamps keep the order they were added in.
  ASSERT_TRUE(s->add_message({"t1", "dave", "dave", 1, 7, "a", false}));
  ASSERT_TRUE(s->add_message({"t2", "dave", "alice", 3, 7, "b", true}));
  auto dave = s->messages("dave", 0);
  ASSERT_EQ(dave->size(), 2u);
  EXPECT_EQ((*dave)[0].body, "a");
  EXPECT_EQ((*dave)[1].body, "b");
  EXPECT_TRUE((*dave)[1].outgoing);
}

// --- transactions ------------------------------------------------------------------------------

TEST_F(ClientStoreTest, TransactionRollsBackWhenFnReturnsFalse) {
  auto s = make();
  const Address bob{"bob", DeviceId(1)};
  const SessionRecord record = make_session_record(3);
  auto t = s->transaction([&] {
    EXPECT_TRUE(s->save_session(bob, record));
    EXPECT_TRUE(s->add_message({"e1", "bob", "bob", 1, 10, "hi", false}));
    EXPECT_TRUE(s->mark_envelope("e1"));
    EXPECT_TRUE(s->save_contact(Contact{"bob", record.current().remote_identity, true, false, 0}));
    // Visible inside the transaction.
    EXPECT_TRUE(s->load_session(bob)->has_value());
    return false;
  });
  ASSERT_TRUE(t);
  EXPECT_FALSE(*t);
  EXPECT_FALSE(s->load_session(bob)->has_value());
  EXPECT_TRUE(s->messages("bob", 0)->empty());
  EXPECT_EQ(s->seen_envelope("e1"), false);
  EXPECT_FALSE(s->load_contact("bob")->has_value());
  s.reset();
  s = reopen();
  EXPECT_FALSE(s->load_session(bob)->has_value());

  auto ok = s->transaction([&] {
    return s->save_session(bob, record).has_value() &&
           s->add_message({"e1", "bob", "bob", 1, 10, "hi", false}).has_value() &&
           s->mark_envelope("e1").has_value();
  });
  ASSERT_TRUE(ok && *ok);
  s.reset();
  s = reopen();
  EXPECT_TRUE(s->load_session(bob)->has_value());
  EXPECT_EQ(s->messages("bob", 0)->size(), 1u);
  EXPECT_EQ(s->seen_envelope("e1"), true);
}

TEST_F(ClientStoreTest, NestedTransactions) {
  auto s = make();
  auto t = s->transaction([&] {
    EXPECT_TRUE(s->mark_envelope("outer"));
    auto inner = s->transaction([&] {
      EXPECT_TRUE(s->mark_envelope("inner-rolled-back"));
      return false;
    });
    EXPECT_TRUE(inner && !*inner);
    auto inner2 = s->transaction([&] { return s->mark_envelope("inner-kept").has_value(); });
    EXPECT_TRUE(inner2 && *inner2);
    return true;
  });
  ASSERT_TRUE(t && *t);
  s.reset();
  s = reopen();
  EXPECT_EQ(s->seen_envelope("outer"), true);
  EXPECT_EQ(s->seen_envelope("inner-kept"), true);
  EXPECT_EQ(s->seen_envelope("inner-rolled-back"), false);

  // An outer rollback undoes committed inner levels too.
  auto t2 = s->transaction([&] {
    EXPECT_TRUE(s->transaction([&] { return s->mark_envelope("x").has_value(); }).value_or(false));
    return false;
  });
  ASSERT_TRUE(t2 && !*t2);
  EXPECT_EQ(s->seen_envelope("x"), false);
}

TEST_F(ClientStoreTest, TransactionRollsBackOnExceptionAndSettingsCache) {
  auto s = make();
  EXPECT_THROW((void)s->transaction([&]() -> bool {
    (void)s->mark_envelope("thrown");
    throw std::runtime_error("boom");
  }),
               std::runtime_error);
  EXPECT_EQ(s->seen_envelope("thrown"), false);
  // The store is usable afterwards (no transaction left open).
  auto t = s->transaction([&] { return s->mark_envelope("after").has_value(); });
  ASSERT_TRUE(t && *t);
  s.reset();
  s = reopen();
  EXPECT_EQ(s->seen_envelope("after"), true);

  // A rolled-back save_settings does not linger in the cached settings.
  const std::uint32_t before = s->settings().next_pre_key_id;
  auto r = s->transaction([&] {
    AccountSettings changed = make_settings("alice", 42);
    changed.next_pre_key_id = before + 100;
    EXPECT_TRUE(s->save_settings(changed));
    EXPECT_EQ(s->settings().next_pre_key_id, before + 100);
    return false;
  });
  ASSERT_TRUE(r && !*r);
  EXPECT_EQ(s->settings().next_pre_key_id, before);
}

TEST_F(ClientStoreTest, ConcurrentUseFromTwoThreads) {
  auto s = make();
  std::atomic<int> failures{0};
  auto worker = [&](int id) {
    for (int i = 0; i < 100; ++i) {
      const std::string env = "t" + std::to_string(id) + "-" + std::to_string(i);
      auto t = s->transaction([&] {
        return s->add_message({env, "bob", "bob", 1, static_cast<std::uint64_t>(i), env, false})
                   .has_value() &&
               s->mark_envelope(env).has_value();
      });
      if (!t || !*t) ++failures;
    }
  };
  std::thread a(worker, 1), b(worker, 2);
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(s->messages("bob", 0)->size(), 200u);
}

// --- damage and tampering ----------------------------------------------------------------------

TEST_F(ClientStoreTest, TamperedSessionIsAStoreFailure) {
  auto s = make();
  const Address bob1{"bob", DeviceId(1)}, bob2{"bob", DeviceId(2)};
  ASSERT_TRUE(s->save_session(bob1, make_session_record(1)));
  ASSERT_TRUE(s->save_session(bob2, make_session_record(2)));
  s.reset();
  const std::string sel1 = "SELECT record FROM sessions WHERE username='bob' AND device_id=1";
  const std::string upd1 = "UPDATE sessions SET record=?1 WHERE username='bob' AND device_id=1";
  const std::string sel2 = "SELECT record FROM sessions WHERE username='bob' AND device_id=2";
  const Bytes good1 = RawDb(db()).blob(sel1);
  const Bytes good2 = RawDb(db()).blob(sel2);

  auto expect_failure = [&](const char* what) {
    auto store = reopen();
    auto r = store->load_session(bob1);
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error(), protocol::Error::store_failure) << what;
  };
  RawDb(db()).flip(sel1, upd1, 40);  // ciphertext
  expect_failure("ciphertext bit");
  RawDb(db()).set_blob(upd1, good1);
  RawDb(db()).flip(sel1, upd1, 3);  // nonce
  expect_failure("nonce bit");
  RawDb(db()).set_blob(upd1, good1);
  RawDb(db()).flip(sel1, upd1, good1.size() - 1);  // tag
  expect_failure("tag bit");
  // A valid row of another device moved into this one (row swap).
  RawDb(db()).set_blob(upd1, good2);
  expect_failure("swapped row");
  // Too short to hold a nonce and a tag.
  RawDb(db()).set_blob(upd1, Bytes(good1.begin(), good1.begin() + 20));
  expect_failure("short nonce");
  RawDb(db()).set_blob(upd1, Bytes{});
  expect_failure("empty");
  RawDb(db()).exec("UPDATE sessions SET record='text' WHERE username='bob' AND device_id=1");
  expect_failure("wrong type");
  RawDb(db()).set_blob(upd1, good1);
  auto store = reopen();
  EXPECT_TRUE(store->load_session(bob1));
  EXPECT_TRUE(store->load_session(bob2));
}

TEST_F(ClientStoreTest, WellSealedButUndecodableRecordsAreFailures) {
  auto s = make();
  const Address bob{"bob", DeviceId(1)};
  ASSERT_TRUE(s->save_session(bob, make_session_record(1)));
  ASSERT_TRUE(s->save_sender_key({"g", bob}, SenderKeyRecord{}));
  s.reset();
  // Someone holding the storage key writes garbage that authenticates but does not decode.
  std::ifstream in(dir_ / "alice.key", std::ios::binary);
  const Bytes raw_key((std::istreambuf_iterator<char>(in)), {});
  const crypto::Secret<32> key(raw_key);
  crypto::SystemRng rng;
  const Bytes garbage = {0xff, 0xff, 0xff, 0x01, 0x02};
  RawDb(db()).set_blob(
      "UPDATE sessions SET record=?1",
      detail::seal(key, rng, detail::row_aad("sessions", "record", {"bob", "1"}), garbage));
  RawDb(db()).set_blob(
      "UPDATE sender_keys SET record=?1",
      detail::seal(key, rng, detail::row_aad("sender_keys", "record", {"g", "bob", "1"}), garbage));
  s = reopen();
  EXPECT_EQ(s->load_session(bob).error(), protocol::Error::store_failure);
  EXPECT_EQ(s->load_sender_key({"g", bob}).error(), protocol::Error::store_failure);
  s.reset();
  RawDb(db()).set_blob(
      "UPDATE account SET settings=?1",
      detail::seal(key, rng, detail::row_aad("account", "settings", {"alice"}), garbage));
  auto r = ClientStore::open(dir_, "alice", std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::corrupt);
}

TEST_F(ClientStoreTest, TamperedRowsOfEveryTableAreDetected) {
  auto s = make();
  crypto::DeterministicRng rng(11);
  TrustKeys t;
  ASSERT_TRUE(s->save_contact(Contact{"bob", t.k1.public_key, true, false, 0}));
  for (const auto& k : protocol::generate_pre_keys(rng, PreKeyId(1), 1))
    ASSERT_TRUE(s->save_pre_key(k));
  ASSERT_TRUE(s->save_signed_pre_key(
      protocol::generate_signed_pre_key(rng, s->settings().identity, SignedPreKeyId(1), 5)));
  SenderKeyRecord skr;
  (void)protocol::sender_key_distribution(skr, rng);
  const SenderKeyName name{"g", t.dev1};
  ASSERT_TRUE(s->save_sender_key(name, skr));
  ASSERT_TRUE(s->add_message({"m1", "bob", "bob", 1, 100, "secret body", false}));
  s.reset();

  RawDb(db()).flip("SELECT state FROM contacts", "UPDATE contacts SET state=?1", 30);
  RawDb(db()).flip("SELECT record FROM pre_keys", "UPDATE pre_keys SET record=?1", 30);
  RawDb(db()).flip("SELECT record FROM signed_pre_keys", "UPDATE signed_pre_keys SET record=?1",
                   30);
  RawDb(db()).flip("SELECT record FROM sender_keys", "UPDATE sender_keys SET record=?1", 30);
  RawDb(db()).flip("SELECT body FROM messages", "UPDATE messages SET body=?1", 30);
  s = reopen();
  EXPECT_EQ(s->load_contact("bob").error(), ClientError::corrupt);
  EXPECT_EQ(s->contacts().error(), ClientError::corrupt);
  EXPECT_EQ(s->load_pre_key(PreKeyId(1)).error(), protocol::Error::store_failure);
  EXPECT_EQ(s->load_signed_pre_key(SignedPreKeyId(1)).error(), protocol::Error::store_failure);
  EXPECT_EQ(s->load_sender_key(name).error(), protocol::Error::store_failure);
  // A damaged history row is shown as damaged; it hides nothing else (below).
  EXPECT_EQ(s->messages("bob", 0).value().at(0).body, kDamagedMessageBody);
  s.reset();

  // Message metadata is bound to the body: moving a message in time or to another sender makes
  // that row unreadable, and only that row.
  auto s2 = make("carol");
  ASSERT_TRUE(s2->add_message({"m1", "bob", "bob", 1, 100, "hello", false}));
  ASSERT_TRUE(s2->add_message({"m2", "bob", "bob", 1, 200, "still readable", false}));
  s2.reset();
  const auto expect_one_damaged = [&](const char* what) {
    s2 = reopen("carol");
    auto list = s2->messages("bob", 0);
    ASSERT_TRUE(list) << what;
    ASSERT_EQ(list->size(), 2u) << what;
    std::vector<std::string> bodies{(*list)[0].body, (*list)[1].body};
    EXPECT_NE(std::find(bodies.begin(), bodies.end(), std::string(kDamagedMessageBody)),
              bodies.end())
        << what;
    EXPECT_NE(std::find(bodies.begin(), bodies.end(), std::string("still readable")), bodies.end())
        << what;
    s2.reset();
  };
  RawDb(db("carol")).exec("UPDATE messages SET timestamp = 99 WHERE envelope_id = 'm1'");
  expect_one_damaged("moved in time");
  RawDb(db("carol"))
      .exec("UPDATE messages SET timestamp = 100, sender = 'mallory' WHERE envelope_id = 'm1'");
  expect_one_damaged("another sender");
  RawDb(db("carol"))
      .exec("UPDATE messages SET sender = 'bob', outgoing = 7 WHERE envelope_id = 'm1'");
  expect_one_damaged("outgoing not a flag");
}

TEST(SettingsCodec, AnAuthenticationKeyThatIsNotItsSeedsOwnIsRefused) {
  const AccountSettings settings = make_settings("alice", 91);
  const crypto::SecretBuffer plain = detail::encode_settings(settings);
  auto decoded = detail::decode_settings(plain.view());
  ASSERT_TRUE(decoded);
  expect_same_settings(settings, *decoded);

  // The stored public key sits right before the seed; put another key's in its place.
  const auto& pub = settings.auth_key.public_key();
  const auto at = std::search(plain.view().begin(), plain.view().end(), pub.begin(), pub.end());
  ASSERT_NE(at, plain.view().end());
  crypto::DeterministicRng rng(92);
  const auto other = crypto::Ed25519KeyPair::generate(rng);
  Bytes swapped(plain.view().begin(), plain.view().end());
  std::copy(other.public_key().begin(), other.public_key().end(),
            swapped.begin() + (at - plain.view().begin()));
  EXPECT_FALSE(detail::decode_settings(swapped));
  swapped[static_cast<std::size_t>(at - plain.view().begin())] ^= 1;
  EXPECT_FALSE(detail::decode_settings(swapped));
}

// Replaces the first occurrence of `from` in `plain` with `to` (both 32-byte keys).
Bytes with_key_replaced(ByteView plain, ByteView from, ByteView to) {
  Bytes out(plain.begin(), plain.end());
  const auto at = std::search(out.begin(), out.end(), from.begin(), from.end());
  if (at == out.end()) throw std::logic_error("key not found in the record");
  std::copy(to.begin(), to.end(), at);
  return out;
}

TEST(KeyPairCodecs, APublicKeyThatIsNotItsPrivateKeysOwnIsRefused) {
  crypto::DeterministicRng rng(93);
  const KeyPair other = KeyPair::generate(rng);

  const auto pre_keys = protocol::generate_pre_keys(rng, PreKeyId(7), 1);
  const auto& pre_key = pre_keys.front();
  const crypto::SecretBuffer pre_plain = detail::encode_pre_key(pre_key);
  ASSERT_TRUE(detail::decode_pre_key(pre_key.id, pre_plain.view()));
  EXPECT_FALSE(detail::decode_pre_key(
      pre_key.id, with_key_replaced(pre_plain.view(), pre_key.key_pair.public_key.view(),
                                    other.public_key.view())));
  // The private key swapped instead: the stored public key is no longer its own either.
  EXPECT_FALSE(detail::decode_pre_key(
      pre_key.id, with_key_replaced(pre_plain.view(), pre_key.key_pair.private_key.view(),
                                    other.private_key.view())));

  const KeyPair identity = KeyPair::generate(rng);
  const auto signed_pre_key =
      protocol::generate_signed_pre_key(rng, identity, SignedPreKeyId(3), 1'700'000'000);
  const crypto::SecretBuffer spk_plain = detail::encode_signed_pre_key(signed_pre_key);
  ASSERT_TRUE(detail::decode_signed_pre_key(signed_pre_key.id, spk_plain.view()));
  EXPECT_FALSE(detail::decode_signed_pre_key(
      signed_pre_key.id,
      with_key_replaced(spk_plain.view(), signed_pre_key.key_pair.public_key.view(),
                        other.public_key.view())));

  const AccountSettings settings = make_settings("alice", 94);
  const crypto::SecretBuffer settings_plain = detail::encode_settings(settings);
  ASSERT_TRUE(detail::decode_settings(settings_plain.view()));
  EXPECT_FALSE(detail::decode_settings(with_key_replaced(
      settings_plain.view(), settings.identity.public_key.view(), other.public_key.view())));
  EXPECT_FALSE(detail::decode_settings(with_key_replaced(
      settings_plain.view(), settings.identity.private_key.view(), other.private_key.view())));
}

TEST_F(ClientStoreTest, AWellSealedPreKeyWithAMismatchedPairIsAFailure) {
  auto s = make();
  crypto::DeterministicRng rng(95);
  const auto keys = protocol::generate_pre_keys(rng, PreKeyId(20), 2);
  for (const auto& k : keys) ASSERT_TRUE(s->save_pre_key(k));
  s.reset();
  // Someone holding the storage key writes prekey 20's public key beside prekey 21's private key.
  std::ifstream in(dir_ / "alice.key", std::ios::binary);
  const Bytes raw_key((std::istreambuf_iterator<char>(in)), {});
  const crypto::Secret<32> key(raw_key);
  const protocol::PreKeyRecord mixed{
      keys[0].id, {keys[0].key_pair.public_key, keys[1].key_pair.private_key.clone()}};
  const crypto::SecretBuffer plain = detail::encode_pre_key(mixed);
  crypto::SystemRng sys;
  RawDb(db()).set_blob(
      "UPDATE pre_keys SET record=?1 WHERE id=20",
      detail::seal(key, sys, detail::row_aad("pre_keys", "record", {"20"}), plain.view()));
  s = reopen();
  EXPECT_EQ(s->load_pre_key(keys[0].id).error(), protocol::Error::store_failure);
  // The other prekey is untouched and still loads.
  auto other = s->load_pre_key(keys[1].id);
  ASSERT_TRUE(other && other->has_value());
  EXPECT_EQ((*other)->key_pair.public_key, keys[1].key_pair.public_key);
}

TEST_F(ClientStoreTest, TamperedAccountAndMetaAreRefusedAtOpen) {
  make("alice", "on-first-use", std::string(kPassphrase));
  auto open = [&] { return ClientStore::open(dir_, "alice", std::string(kPassphrase)); };
  const Bytes settings = RawDb(db()).blob("SELECT settings FROM account");
  RawDb(db()).flip("SELECT settings FROM account", "UPDATE account SET settings=?1", 50);
  EXPECT_EQ(open().error(), ClientError::corrupt);
  RawDb(db()).set_blob("UPDATE account SET settings=?1", settings);
  ASSERT_TRUE(open());

  // Renaming a store to another account's name is detected (the name is in the associated data).
  fs::copy_file(db(), db("mallory"));
  auto renamed = ClientStore::open(dir_, "mallory", std::string(kPassphrase));
  ASSERT_FALSE(renamed);
  EXPECT_NE(renamed.error(), ClientError::not_found);

  const Bytes check = RawDb(db()).blob("SELECT value FROM meta WHERE name='key_check'");
  RawDb(db()).flip("SELECT value FROM meta WHERE name='key_check'",
                   "UPDATE meta SET value=?1 WHERE name='key_check'", 30);
  EXPECT_EQ(open().error(), ClientError::wrong_passphrase);
  RawDb(db()).set_blob("UPDATE meta SET value=?1 WHERE name='key_check'", Bytes(10, 0));
  EXPECT_EQ(open().error(), ClientError::corrupt);
  RawDb(db()).set_blob("UPDATE meta SET value=?1 WHERE name='key_check'", check);
  ASSERT_TRUE(open());

  RawDb(db()).exec("UPDATE meta SET value = 1099511627776 WHERE name = 'kdf_mem'");
  EXPECT_EQ(open().error(), ClientError::corrupt);
  RawDb(db()).exec("UPDATE meta SET value = 'text' WHERE name = 'kdf_mem'");
  EXPECT_EQ(open().error(), ClientError::corrupt);
  RawDb(db()).exec("UPDATE meta SET value = 'rot13' WHERE name = 'kdf'");
  EXPECT_EQ(open().error(), ClientError::corrupt);
  RawDb(db()).exec("DELETE FROM meta WHERE name = 'kdf'");
  EXPECT_EQ(open().error(), ClientError::corrupt);
  RawDb(db()).exec("DROP TABLE meta");
  EXPECT_EQ(open().error(), ClientError::corrupt);
}

TEST_F(ClientStoreTest, GarbageFileIsCorrupt) {
  make();
  fs::remove(db());
  {
    std::ofstream out(db(), std::ios::binary);
    crypto::DeterministicRng rng(1);
    Bytes junk(8192);
    rng.fill(junk);
    out.write(reinterpret_cast<const char*>(junk.data()),
              static_cast<std::streamsize>(junk.size()));
  }
  auto r = ClientStore::open(dir_, "alice", std::nullopt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), ClientError::corrupt);
}

// --- nothing secret in the clear ---------------------------------------------------------------

TEST_F(ClientStoreTest, NoSecretAppearsInTheFiles) {
  for (const bool with_passphrase : {false, true}) {
    SCOPED_TRACE(with_passphrase ? "passphrase" : "key file");
    TearDown();
    SetUp();
    const std::string peer = "bob-the-peer";
    const std::string body = "meet me at the old mill at midnight, bring the blue folder";
    const AccountSettings settings = make_settings("alice", 77);
    auto created = ClientStore::create(
        dir_, settings, with_passphrase ? std::optional(std::string(kPassphrase)) : std::nullopt);
    ASSERT_TRUE(created);
    auto s = std::move(*created);

    crypto::DeterministicRng rng(78);
    std::vector<Bytes> secrets;
    auto keep = [&](ByteView b) { secrets.emplace_back(b.begin(), b.end()); };
    keep(settings.identity.private_key.view());
    keep(settings.auth_key.seed());
    for (const auto& k : protocol::generate_pre_keys(rng, PreKeyId(1), 3)) {
      ASSERT_TRUE(s->save_pre_key(k));
      keep(k.key_pair.private_key.view());
    }
    const auto spk =
        protocol::generate_signed_pre_key(rng, settings.identity, SignedPreKeyId(1), 1);
    ASSERT_TRUE(s->save_signed_pre_key(spk));
    keep(spk.key_pair.private_key.view());
    const SessionRecord record = make_session_record(79);
    keep(record.current().root_key.view());
    keep(record.current().sender_chain.chain_key.key.view());
    keep(record.current().sender_chain.ratchet.private_key.view());
    const Bytes encoded = bytes_of(record.encode());
    SenderKeyRecord skr;
    (void)protocol::sender_key_distribution(skr, rng);
    keep(skr.newest().chain_key.key.view());
    keep(skr.newest().signing_private->view());
    keep(as_bytes(body));
    if (with_passphrase) keep(as_bytes(kPassphrase));

    const Address addr{peer, DeviceId(1)};
    auto t = s->transaction([&] {
      return s->save_session(addr, record).has_value() &&
             s->save_sender_key({"group", addr}, skr).has_value() &&
             s->add_message({"e1", peer, peer, 1, 1, body, false}).has_value() &&
             s->mark_envelope("e1").has_value();
    });
    ASSERT_TRUE(t && *t);
    ASSERT_TRUE(s->save_contact(Contact{peer, KeyPair::generate(rng).public_key, true, false, 0}));

    auto scan = [&](const char* when) {
      bool saw_peer = false;
      std::size_t total = 0;
      for (const auto& [path, bytes] : read_all_files(dir_)) {
        if (path.extension() == ".key") continue;  // the key file holds the storage key only
        total += bytes.size();
        saw_peer = saw_peer || contains(bytes, as_bytes(peer));
        for (std::size_t i = 0; i < secrets.size(); ++i) {
          EXPECT_FALSE(contains(bytes, secrets[i])) << when << ": secret " << i << " in " << path;
        }
        // A run of the encoded session record would also betray it.
        EXPECT_FALSE(contains(bytes, ByteView(encoded).subspan(0, 48))) << when << " in " << path;
      }
      EXPECT_GT(total, 0u);
      // The scan does see the files' contents: the peer's name is a clear-text key column.
      EXPECT_TRUE(saw_peer) << when;
    };
    scan("while open");
    s.reset();
    scan("after close");
    auto reopened = ClientStore::open(
        dir_, "alice", with_passphrase ? std::optional(std::string(kPassphrase)) : std::nullopt);
    ASSERT_TRUE(reopened);
    EXPECT_EQ((*reopened)->messages(peer, 0)->front().body, body);
  }
}

}  // namespace
}  // namespace sotto::store
