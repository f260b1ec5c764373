// Groups (docs/groups.md) against the real server's handlers and real SQLite stores, in one
// process (tests/util/in_process_server.h): fan-out to every member device exactly once, Sender
// Key rotation when a member goes, changes the server forges or a non-admin sends are refused
// and reported, joining by link and resetting the link, leaving. Also the pure rules of
// src/client/group_codec.h on malformed input.
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <future>
#include <map>

#include "client/emoji.h"
#include "client/engine.h"
#include "client/group_codec.h"
#include "content.pb.h"
#include "protocol/sender_keys.h"
#include "util/in_process_server.h"

namespace sotto::client {
namespace {

namespace fs = std::filesystem;
namespace content = sotto::wire::content;
using testing::InProcessServer;

constexpr std::uint64_t kStartMs = 1'800'000'000'000;

GroupUpdate adding(const std::string& user) {
  GroupUpdate u;
  u.add = {user};
  return u;
}
GroupUpdate removing(const std::string& user) {
  GroupUpdate u;
  u.remove = {user};
  return u;
}
GroupUpdate renaming(const std::string& name) {
  GroupUpdate u;
  u.name = name;
  return u;
}

class ClientGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sotto-group-XXXXXX";
    root_ = mkdtemp(tmpl);
    clock_ = std::make_shared<ManualWallClock>(kStartMs);
    // Many accounts and devices from one address, at once: the per-address limits are not
    // what these tests are about.
    server::ServerConfig config;
    config.registrations_per_minute = 100000;
    config.logins_per_minute = 100000;
    config.logins_per_account_per_minute = 100000;
    config.provisioning_per_minute = 100000;
    config.link_tokens_per_hour = 100000;
    config.bundle_fetches_per_minute = 100000;
    config.device_lists_per_minute = 100000;
    config.log_level = "warn";
    server_ = std::make_unique<InProcessServer>(root_ / "server", clock_, config);
  }
  void TearDown() override {
    engines_.clear();
    server_.reset();
    fs::remove_all(root_);
  }

  Environment env() {
    Environment e;
    e.connector = server_->connector();
    e.rng = &rngs_.emplace_back(5000 + rngs_.size());
    e.clock = clock_;
    return e;
  }
  Options options(const std::string& dir) {
    Options o;
    o.data_dir = root_ / dir;
    o.request_timeout = std::chrono::seconds(10);
    o.send_timeout = std::chrono::seconds(20);
    o.lock_wait = std::chrono::milliseconds(200);
    return o;
  }
  sotto::Server server_address() const { return {"in-process", 1, server_->pin(), {}}; }
  Engine& keep(std::unique_ptr<Engine> e) {
    engines_.push_back(std::move(e));
    return *engines_.back();
  }
  Engine& register_(const std::string& name) {
    auto e = Engine::register_account(options(name), name, server_address(), {}, env());
    EXPECT_TRUE(e) << (e ? "" : e.error().message);
    return keep(std::move(*e));
  }
  Engine& link(Engine& existing, const std::string& dir) {
    std::promise<std::string> code;
    auto shown = code.get_future();
    auto linking = std::async(std::launch::async, [&] {
      return Engine::link(
          options(dir), server_address(), [&](const LinkPrompt& p) { code.set_value(p.code); },
          std::chrono::seconds(20), LinkOptions{}, env());
    });
    auto added = existing.add_device(shown.get(), nullptr);
    EXPECT_TRUE(added) << (added ? "" : added.error().message);
    auto linked = linking.get();
    EXPECT_TRUE(linked) << (linked ? "" : linked.error().message);
    return keep(std::move(*linked));
  }
  std::vector<Event> receive(Engine& e) {
    server_->drop_connections();
    std::vector<Event> out;
    auto r = e.receive(std::chrono::seconds(20), [&](const Event& ev) {
      if (std::getenv("SOTTO_TEST_SHOW_EVENTS") != nullptr) {
        std::fprintf(stderr, "%s: kind %d from %s group %s detail %s body %s\n",
                     e.username().c_str(), static_cast<int>(ev.kind), ev.message.from.c_str(),
                     ev.message.group.substr(0, 8).c_str(), ev.detail.c_str(),
                     ev.message.body.c_str());
      }
      out.push_back(ev);
    });
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return out;
  }
  static std::vector<Event> of_kind(const std::vector<Event>& events, Event::Kind kind) {
    std::vector<Event> out;
    for (const auto& e : events) {
      if (e.kind == kind) out.push_back(e);
    }
    return out;
  }
  static std::vector<std::string> group_bodies(const std::vector<Event>& events,
                                               const std::string& group) {
    std::vector<std::string> out;
    for (const auto& e : events) {
      if (e.kind == Event::Kind::message && e.message.group == group) {
        out.push_back(e.message.body);
      }
    }
    return out;
  }
  Group info(Engine& e, const std::string& id) {
    auto g = e.groups().info(id);
    EXPECT_TRUE(g) << (g ? "" : g.error().message);
    return g ? *g : Group{};
  }
  static std::vector<std::string> member_names(const Group& g) {
    std::vector<std::string> out;
    for (const auto& m : g.members) out.push_back(m.user);
    std::sort(out.begin(), out.end());
    return out;
  }
  void tick() { clock_->advance_ms(1000); }

  // The envelopes the server holds for `user`'s `device`.
  std::vector<store::QueuedEnvelope> queued(const std::string& user, std::uint32_t device = 1) {
    auto account = server_->store().accounts().find_account(user);
    EXPECT_TRUE(account);
    auto q = server_->store().messages().load(account->id, device, 1000);
    EXPECT_TRUE(q);
    return q ? *q : std::vector<store::QueuedEnvelope>{};
  }
  // Writes an envelope into `user`'s queue as the server would (the server forging).
  void enqueue_as_server(const std::string& user, std::uint32_t device, store::QueuedEnvelope env) {
    auto account = server_->store().accounts().find_account(user);
    ASSERT_TRUE(account);
    env.account = account->id;
    env.device = device;
    crypto::DeterministicRng rng(77 + forged_++);
    rng.fill(env.id);
    env.expires_at = kStartMs / 1000 + 86400;
    std::promise<bool> stored;
    server_->store().messages().enqueue(
        {env}, std::nullopt,
        [&](tl::expected<void, store::Error> r) { stored.set_value(r.has_value()); });
    ASSERT_TRUE(stored.get_future().get());
  }

  fs::path root_;
  std::shared_ptr<ManualWallClock> clock_;
  std::unique_ptr<InProcessServer> server_;
  std::deque<crypto::DeterministicRng> rngs_;
  std::vector<std::unique_ptr<Engine>> engines_;
  int forged_ = 0;
};

TEST_F(ClientGroupTest, TenMembersEveryDeviceGetsEveryMessageExactlyOnce) {
  std::vector<Engine*> primaries;
  std::vector<std::string> names;
  for (int i = 0; i < 10; ++i) {
    names.push_back("member" + std::to_string(i));
    primaries.push_back(&register_(names.back()));
  }
  // Three members have a second device, the creator among them (its own other device).
  std::vector<std::pair<std::string, Engine*>> devices;
  for (int i = 0; i < 10; ++i) devices.emplace_back(names[i], primaries[i]);
  for (int i : {0, 3, 7}) {
    devices.emplace_back(names[i], &link(*primaries[i], names[i] + "-second"));
  }
  std::vector<std::string> others(names.begin() + 1, names.end());
  auto created = primaries[0]->groups().create("ten", others);
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  EXPECT_EQ(created->members.size(), 10u);

  for (auto& [name, e] : devices) {
    if (e == primaries[0]) continue;
    auto events = receive(*e);
    EXPECT_EQ(of_kind(events, Event::Kind::group_changed).size(), 1u) << name;
    const Group g = info(*e, id);
    EXPECT_TRUE(g.member) << name;
    EXPECT_EQ(g.name, "ten");
    EXPECT_EQ(g.members.size(), 10u);
  }

  // Three senders, one with two devices; each message reaches every other device once.
  std::map<Engine*, std::vector<std::string>> expected;
  const std::vector<std::pair<Engine*, std::string>> sends = {
      {primaries[0], "from zero"}, {primaries[3], "from three"}, {devices[11].second, "from 3b"}};
  for (const auto& [from, body] : sends) {
    tick();
    auto sent = from->groups().send(id, body);
    ASSERT_TRUE(sent) << sent.error().message;
    for (auto& [name, e] : devices) {
      if (e != from) expected[e].push_back(body);
    }
  }
  for (auto& [name, e] : devices) {
    auto events = receive(*e);
    auto got = group_bodies(events, id);
    std::sort(got.begin(), got.end());
    auto want = expected[e];
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << name << " device " << e->device_id();
    EXPECT_TRUE(of_kind(events, Event::Kind::decrypt_failed).empty()) << name;
    for (const auto& ev : of_kind(events, Event::Kind::message)) {
      EXPECT_EQ(ev.message.outgoing, ev.message.from == name);
    }
    EXPECT_TRUE(receive(*e).empty()) << name;  // nothing twice
  }
  // Our own other device shows what we sent as sent by us.
  auto history = devices[10].second->groups().history(id, 0);
  ASSERT_TRUE(history);
  bool seen_own = false;
  for (const auto& m : *history) seen_own = seen_own || (m.body == "from zero" && m.outgoing);
  EXPECT_TRUE(seen_own);
}

TEST_F(ClientGroupTest, ARemovedMemberCannotDecryptWhatIsSentAfterwards) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  auto created = alice.groups().create("g", {"bob", "carol"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(bob);
  receive(carol);
  tick();
  ASSERT_TRUE(bob.groups().send(id, "before"));
  EXPECT_EQ(group_bodies(receive(carol), id), std::vector<std::string>{"before"});
  receive(alice);

  tick();
  auto removed = alice.groups().update(id, removing("carol"));
  ASSERT_TRUE(removed) << removed.error().message;
  auto carol_events = receive(carol);
  EXPECT_EQ(of_kind(carol_events, Event::Kind::group_changed).size(), 1u);
  EXPECT_FALSE(info(carol, id).member);
  receive(bob);
  EXPECT_EQ(member_names(info(bob, id)), (std::vector<std::string>{"alice", "bob"}));

  tick();
  ASSERT_TRUE(bob.groups().send(id, "after, from bob"));
  tick();
  ASSERT_TRUE(alice.groups().send(id, "after, from alice"));
  EXPECT_TRUE(queued("carol").empty());  // not sent to carol
  // Carol is given the ciphertexts anyway (the server copies them to her queue): she cannot
  // read them, even with the chains she had.
  int copied = 0;
  for (const auto& env : queued("alice")) {
    if (env.type == kSenderKeyMessageType) {
      enqueue_as_server("carol", 1, env);
      ++copied;
    }
  }
  for (const auto& env : queued("bob")) {
    if (env.type == kSenderKeyMessageType) {
      enqueue_as_server("carol", 1, env);
      ++copied;
    }
  }
  EXPECT_EQ(copied, 2);
  auto events = receive(carol);
  EXPECT_TRUE(group_bodies(events, id).empty());
  EXPECT_EQ(of_kind(events, Event::Kind::decrypt_failed).size(), 2u);
  // And the remaining members read them.
  EXPECT_EQ(group_bodies(receive(alice), id), std::vector<std::string>{"after, from bob"});
  EXPECT_EQ(group_bodies(receive(bob), id), std::vector<std::string>{"after, from alice"});
}

TEST_F(ClientGroupTest, ANewMemberCannotReadEarlierMessages) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& dave = register_("dave");
  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created);
  const std::string id = created->id;
  receive(bob);
  tick();
  ASSERT_TRUE(alice.groups().send(id, "old"));
  std::vector<store::QueuedEnvelope> old;
  for (const auto& env : queued("bob")) {
    if (env.type == kSenderKeyMessageType) old.push_back(env);
  }
  ASSERT_EQ(old.size(), 1u);
  tick();
  ASSERT_TRUE(alice.groups().update(id, adding("dave")));
  receive(dave);
  EXPECT_TRUE(info(dave, id).member);
  tick();
  ASSERT_TRUE(alice.groups().send(id, "new"));
  enqueue_as_server("dave", 1, old[0]);
  auto events = receive(dave);
  EXPECT_EQ(group_bodies(events, id), std::vector<std::string>{"new"});
  EXPECT_EQ(of_kind(events, Event::Kind::decrypt_failed).size(), 1u);
}

TEST_F(ClientGroupTest, ChangesTheServerForgesOrANonAdminSendsAreRefusedAndReported) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  auto created = alice.groups().create("g", {"bob", "carol"});
  ASSERT_TRUE(created);
  const std::string id = created->id;
  receive(bob);
  receive(carol);
  const Group before = info(bob, id);

  // Carol is a member but not an admin; her client is made to send a change anyway.
  tick();
  content::Content c;
  auto* d = c.mutable_data();
  d->set_timestamp(clock_->now_ms());
  const Bytes raw_id = *from_hex(id);
  d->mutable_group()->set_id(std::string(raw_id.begin(), raw_id.end()));
  d->mutable_group()->set_revision(before.revision);
  d->mutable_group_change()->add_add_members()->set_user("mallory");
  auto forged = carol.outbox().send_content("bob", encode_padded(c), clock_->now_ms());
  ASSERT_TRUE(forged) << forged.error().message;

  // The server relabels carol's envelope as alice's (the admin) and delivers it first; it also
  // writes one of its own claiming to be alice's with made-up bytes, and a Sender Key message
  // claiming to be hers that no key of hers signed.
  auto carols = queued("bob");
  ASSERT_EQ(carols.size(), 1u);
  auto bob_account = server_->store().accounts().find_account("bob");
  ASSERT_TRUE(bob_account);
  ASSERT_TRUE(server_->store().messages().remove(bob_account->id, 1, {carols[0].id}));
  store::QueuedEnvelope relabelled = carols[0];
  relabelled.source = "alice";
  enqueue_as_server("bob", 1, relabelled);
  store::QueuedEnvelope made_up = carols[0];
  made_up.source = "alice";
  made_up.type = 2;
  made_up.content = Bytes(200, 0x42);
  enqueue_as_server("bob", 1, made_up);
  store::QueuedEnvelope fake_group = made_up;
  fake_group.type = kSenderKeyMessageType;
  fake_group.content = Bytes(200, 0x43);
  enqueue_as_server("bob", 1, fake_group);
  // Then carol's own envelope, as carol's: refused, she is not an admin.
  enqueue_as_server("bob", 1, carols[0]);

  // The relabelled envelope is a PreKeySignalMessage carrying carol's identity key: to bob it is
  // alice with a new key, which is reported and not accepted, so the change is refused. The
  // made-up ones do not decrypt. Carol's own copy is the same ciphertext, processed already.
  auto events = receive(bob);
  auto refused = of_kind(events, Event::Kind::group_refused);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].message.from, "alice");
  EXPECT_EQ(refused[0].message.group, id);
  EXPECT_NE(refused[0].detail.find("not accepted"), std::string::npos) << refused[0].detail;
  EXPECT_EQ(of_kind(events, Event::Kind::identity_changed).size(), 1u);
  EXPECT_EQ(of_kind(events, Event::Kind::decrypt_failed).size(), 2u);
  EXPECT_TRUE(of_kind(events, Event::Kind::group_changed).empty());
  EXPECT_TRUE(group_bodies(events, id).empty());
  Group after = info(bob, id);
  EXPECT_EQ(after.revision, before.revision);
  EXPECT_EQ(member_names(after), member_names(before));

  // Carol's change, delivered as hers: refused, she is not an admin. (Her session's prekey went
  // to the relabelled copy, so bob first asks her to send it again, from a new session.)
  tick();
  d->set_timestamp(clock_->now_ms());
  forged = carol.outbox().send_content("bob", encode_padded(c), clock_->now_ms());
  ASSERT_TRUE(forged) << forged.error().message;
  EXPECT_EQ(of_kind(receive(bob), Event::Kind::decrypt_failed).size(), 1u);
  receive(carol);
  events = receive(bob);
  refused = of_kind(events, Event::Kind::group_refused);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].message.from, "carol");
  EXPECT_EQ(refused[0].message.group, id);
  EXPECT_NE(refused[0].detail.find("not an admin"), std::string::npos) << refused[0].detail;
  after = info(bob, id);
  EXPECT_EQ(after.revision, before.revision);
  EXPECT_EQ(member_names(after), member_names(before));
}

// A member's device list changes between two group messages: the server refuses the send, the
// sender makes a session with the new device, gives it its chain and sends again; a device that
// is gone is dropped the same way. A device linked after the group was made does not know the
// group: it reports the message it cannot place, and knows the group from the next change.
TEST_F(ClientGroupTest, ANewOrRemovedMemberDeviceIsFoundAndTheSendRetried) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created);
  const std::string id = created->id;
  receive(bob);
  tick();
  ASSERT_TRUE(alice.groups().send(id, "one"));
  EXPECT_EQ(group_bodies(receive(bob), id), std::vector<std::string>{"one"});
  Engine& bob2 = link(bob, "bob-second");
  tick();
  auto sent = alice.groups().send(id, "two");
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(sent->devices, 2u);
  EXPECT_EQ(group_bodies(receive(bob), id), std::vector<std::string>{"two"});
  auto events = receive(bob2);
  EXPECT_TRUE(group_bodies(events, id).empty());
  EXPECT_EQ(of_kind(events, Event::Kind::decrypt_failed).size(), 1u);
  tick();
  ASSERT_TRUE(alice.groups().update(id, renaming("renamed")));
  EXPECT_EQ(of_kind(receive(bob2), Event::Kind::group_changed).size(), 1u);
  EXPECT_TRUE(info(bob2, id).member);
  tick();
  ASSERT_TRUE(alice.groups().send(id, "three"));
  EXPECT_EQ(group_bodies(receive(bob2), id), std::vector<std::string>{"three"});
  receive(bob);

  ASSERT_TRUE(bob.remove_device(bob2.device_id()));
  tick();
  sent = alice.groups().send(id, "four");
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(sent->devices, 1u);
  EXPECT_EQ(group_bodies(receive(bob), id), std::vector<std::string>{"four"});
}

TEST_F(ClientGroupTest, AChangeTheServerReplaysIsAppliedOnce) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created);
  const std::string id = created->id;
  receive(bob);
  tick();
  ASSERT_TRUE(alice.groups().update(id, renaming("renamed")));
  auto genuine = queued("bob");
  ASSERT_EQ(genuine.size(), 1u);
  enqueue_as_server("bob", 1, genuine[0]);
  auto events = receive(bob);
  EXPECT_EQ(of_kind(events, Event::Kind::group_changed).size(), 1u);
  EXPECT_TRUE(of_kind(events, Event::Kind::group_refused).empty());
  EXPECT_TRUE(of_kind(events, Event::Kind::decrypt_failed).empty());
  EXPECT_EQ(info(bob, id).name, "renamed");
  EXPECT_EQ(info(bob, id).revision, 2u);
}

TEST_F(ClientGroupTest, JoinByLinkAndAResetLinkFails) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& dave = register_("dave");
  Engine& erin = register_("erin");
  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created);
  const std::string id = created->id;
  receive(bob);
  auto link1 = alice.groups().invite_link(id, false);
  ASSERT_TRUE(link1) << link1.error().message;
  receive(bob);  // the change that turned the link on
  EXPECT_TRUE(info(bob, id).invite_link);
  EXPECT_FALSE(bob.groups().invite_link(id, false));  // not an admin

  tick();
  ASSERT_TRUE(dave.groups().join(*link1));
  auto alice_events = receive(alice);  // her client checks the secret and adds dave
  bool joined = false;
  for (const auto& e : of_kind(alice_events, Event::Kind::group_changed)) {
    joined = joined || e.detail.find("dave joined by invite link") != std::string::npos;
  }
  EXPECT_TRUE(joined);
  auto dave_events = receive(dave);
  EXPECT_EQ(of_kind(dave_events, Event::Kind::group_changed).size(), 1u);
  EXPECT_TRUE(info(dave, id).member);
  receive(bob);
  EXPECT_EQ(member_names(info(bob, id)), (std::vector<std::string>{"alice", "bob", "dave"}));

  tick();
  auto link2 = alice.groups().invite_link(id, true);
  ASSERT_TRUE(link2);
  EXPECT_NE(*link2, *link1);
  tick();
  ASSERT_TRUE(erin.groups().join(*link1));
  alice_events = receive(alice);
  EXPECT_EQ(of_kind(alice_events, Event::Kind::group_refused).size(), 1u);
  EXPECT_TRUE(of_kind(receive(erin), Event::Kind::group_changed).empty());
  EXPECT_FALSE(info(alice, id).members.size() == 4u);

  tick();
  ASSERT_TRUE(erin.groups().join(*link2));
  receive(alice);
  EXPECT_EQ(of_kind(receive(erin), Event::Kind::group_changed).size(), 1u);
  EXPECT_TRUE(info(erin, id).member);
  tick();
  ASSERT_TRUE(erin.groups().send(id, "hello from erin"));
  EXPECT_EQ(group_bodies(receive(dave), id), std::vector<std::string>{"hello from erin"});
}

TEST_F(ClientGroupTest, AMemberWhoLeavesGetsNothingMore) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  auto created = alice.groups().create("g", {"bob", "carol"});
  ASSERT_TRUE(created);
  const std::string id = created->id;
  receive(bob);
  receive(carol);
  tick();
  auto left = bob.groups().leave(id);
  ASSERT_TRUE(left) << left.error().message;
  EXPECT_FALSE(left->member);
  EXPECT_FALSE(bob.groups().send(id, "still here?"));
  receive(alice);
  receive(carol);
  EXPECT_EQ(member_names(info(carol, id)), (std::vector<std::string>{"alice", "carol"}));
  tick();
  ASSERT_TRUE(carol.groups().send(id, "bye bob"));
  EXPECT_TRUE(queued("bob").empty());
  EXPECT_EQ(group_bodies(receive(alice), id), std::vector<std::string>{"bye bob"});
  // The last admin leaving makes the first remaining member one.
  tick();
  ASSERT_TRUE(alice.groups().leave(id));
  receive(carol);
  EXPECT_TRUE(info(carol, id).admin);
}

// --- the pure rules (group_codec.h) -----------------------------------------------------------

content::GroupState sample_state() {
  content::GroupState s;
  s.set_id(std::string(32, 'i'));
  s.set_revision(3);
  s.set_name("n");
  auto* a = s.add_members();
  a->set_user("alice");
  a->set_admin(true);
  s.add_members()->set_user("bob");
  return s;
}

TEST(GroupCodecTest, ChangesAreCheckedAgainstRevisionAuthorAndShape) {
  const auto s = sample_state();
  content::GroupChange add;
  add.add_add_members()->set_user("carol");
  auto ok = apply_group_change(s, add, "alice", 3);
  ASSERT_TRUE(ok) << ok.error();
  EXPECT_EQ(ok->revision(), 4u);
  EXPECT_EQ(ok->members_size(), 3);
  EXPECT_FALSE(apply_group_change(s, add, "alice", 2));  // not the next revision
  EXPECT_FALSE(apply_group_change(s, add, "alice", 4));
  EXPECT_FALSE(apply_group_change(s, add, "bob", 3));  // not an admin
  EXPECT_FALSE(apply_group_change(s, add, "zed", 3));  // not a member
  content::GroupChange two = add;
  two.set_set_name(true);
  EXPECT_FALSE(apply_group_change(s, two, "alice", 3));  // two actions
  content::GroupChange none;
  EXPECT_FALSE(apply_group_change(s, none, "alice", 3));  // no action
  content::GroupChange bad_name;
  bad_name.add_add_members()->set_user("Not A Name");
  EXPECT_FALSE(apply_group_change(s, bad_name, "alice", 3));
  content::GroupChange again;
  again.add_add_members()->set_user("bob");
  EXPECT_FALSE(apply_group_change(s, again, "alice", 3));  // already a member
  content::GroupChange remove_ghost;
  remove_ghost.add_remove_members("zed");
  EXPECT_FALSE(apply_group_change(s, remove_ghost, "alice", 3));
  content::GroupChange demote_all;
  demote_all.add_demote_admins("alice");
  EXPECT_FALSE(apply_group_change(s, demote_all, "alice", 3));
  content::GroupChange join;
  join.set_join_secret(std::string(32, 's'));
  EXPECT_FALSE(apply_group_change(s, join, "alice", 3));
  content::GroupChange secret;
  secret.set_set_invite_secret(true);
  secret.set_invite_secret("short");
  EXPECT_FALSE(apply_group_change(s, secret, "alice", 3));
  content::GroupChange leave;
  leave.set_leave(true);
  auto left = apply_group_change(s, leave, "bob", 3);  // any member may leave
  ASSERT_TRUE(left);
  EXPECT_EQ(left->members_size(), 1);
  auto admin_left = apply_group_change(s, leave, "alice", 3);
  ASSERT_TRUE(admin_left);
  EXPECT_TRUE(admin_left->members(0).admin());  // bob became admin
}

TEST(GroupCodecTest, AtMost1024Members) {
  content::GroupState s = sample_state();
  content::GroupChange add;
  for (int i = 0; i < 1022; ++i) add.add_add_members()->set_user("user" + std::to_string(i));
  auto full = apply_group_change(s, add, "alice", 3);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->members_size(), 1024);
  content::GroupChange one_more;
  one_more.add_add_members()->set_user("extra");
  EXPECT_FALSE(apply_group_change(*full, one_more, "alice", 4));
}

TEST(GroupCodecTest, StatesAndLinksThatAreNotValidAreRefused) {
  auto s = sample_state();
  EXPECT_FALSE(check_group_state(s));
  auto short_id = s;
  short_id.set_id("abc");
  EXPECT_TRUE(check_group_state(short_id));
  auto twice = s;
  twice.add_members()->set_user("bob");
  EXPECT_TRUE(check_group_state(twice));
  auto no_admin = s;
  no_admin.mutable_members(0)->set_admin(false);
  EXPECT_TRUE(check_group_state(no_admin));
  auto bad_utf8 = s;
  bad_utf8.set_name("\xff");
  EXPECT_TRUE(check_group_state(bad_utf8));

  // A new member takes only a state that lists it, at the change's revision, from an admin.
  content::GroupChange add;
  add.add_add_members()->set_user("carol");
  *add.mutable_state() = s;
  add.mutable_state()->add_members()->set_user("carol");
  add.mutable_state()->set_revision(4);
  const ByteView id = as_bytes(s.id());
  EXPECT_TRUE(state_for_new_member(add, id, 3, "alice", "carol"));
  EXPECT_FALSE(state_for_new_member(add, id, 2, "alice", "carol"));
  EXPECT_FALSE(state_for_new_member(add, id, 3, "bob", "carol"));
  EXPECT_FALSE(state_for_new_member(add, id, 3, "alice", "dave"));
  const std::string other(32, 'x');
  EXPECT_FALSE(state_for_new_member(add, as_bytes(other), 3, "alice", "carol"));

  const InviteLink link{Bytes(32, 1), Bytes(32, 2), "a.b", 2};
  const std::string text = format_invite_link(link);
  auto parsed = parse_invite_link(text);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->admin, "a.b");
  EXPECT_EQ(parsed->device, 2u);
  EXPECT_EQ(parsed->secret, Bytes(32, 2));
  for (const std::string& bad :
       {std::string(""), std::string("sotto-group:"), text.substr(0, text.size() - 2), text + "x",
        text.substr(0, 20), "sotto-group:zz" + text.substr(14),
        text.substr(0, text.rfind('.')) + ".0", text.substr(0, text.rfind('.')) + ".-1",
        std::string("http://example.com/") + text}) {
    EXPECT_FALSE(parse_invite_link(bad)) << bad;
  }
  EXPECT_FALSE(parse_group_id("12"));
  EXPECT_TRUE(parse_group_id(std::string(64, 'A')));
}

// A malformed change (a state that is not valid, garbage in the change) changes nothing and is
// reported.
TEST_F(ClientGroupTest, AMalformedChangeChangesNothing) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  tick();
  content::Content c;
  auto* d = c.mutable_data();
  d->set_timestamp(clock_->now_ms());
  d->mutable_group()->set_id(std::string(32, 'g'));
  auto* change = d->mutable_group_change();
  change->add_add_members()->set_user("bob");
  change->mutable_state()->set_id(std::string(32, 'g'));
  change->mutable_state()->set_revision(1);
  change->mutable_state()->add_members()->set_user("bob");  // no admin, no author
  ASSERT_TRUE(alice.outbox().send_content("bob", encode_padded(c), clock_->now_ms()));
  tick();
  content::Content short_id;
  short_id.mutable_data()->set_timestamp(clock_->now_ms());
  short_id.mutable_data()->mutable_group()->set_id("short");
  short_id.mutable_data()->mutable_group_change()->set_leave(true);
  ASSERT_TRUE(carol.outbox().send_content("bob", encode_padded(short_id), clock_->now_ms()));
  auto events = receive(bob);
  EXPECT_EQ(of_kind(events, Event::Kind::group_refused).size(), 2u);
  auto groups = bob.groups().list();
  ASSERT_TRUE(groups);
  EXPECT_TRUE(groups->empty());
}

// --- the everyday message types in groups (docs/groups.md) ----------------------------------

const Event* find_event(const std::vector<Event>& events, Event::Kind kind) {
  for (const auto& e : events) {
    if (e.kind == kind) return &e;
  }
  return nullptr;
}

Message group_message(Engine& e, const std::string& id, const std::string& author,
                      std::uint64_t ts) {
  auto h = e.history("group:" + id, 0);
  EXPECT_TRUE(h) << (h ? "" : h.error().message);
  if (h) {
    for (const auto& m : *h) {
      if (m.from == author && m.timestamp == ts) return m;
    }
  }
  ADD_FAILURE() << "no message " << author << ":" << ts << " on " << e.username() << " device "
                << e.device_id();
  return Message{};
}

// Quote, mention, reaction, edit, delete, delivery and read receipts and typing in a group of
// three with two devices for one member: sent once under the Sender Key, applied on every
// member's every device and on the author's other device.
TEST_F(ClientGroupTest, RepliesReactionsEditsDeletesReceiptsAndTypingInAGroup) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  Engine& bob2 = link(bob, "bob-second");
  auto created = alice.groups().create("g", {"bob", "carol"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  const std::string conv = "group:" + id;
  for (Engine* e : {&bob, &bob2, &carol}) receive(*e);
  std::vector<Engine*> everyone{&alice, &bob, &bob2, &carol};

  // Bob's message; every other device has it, and each recipient's device says it arrived.
  tick();
  auto hello = bob.conversations().send(conv, "hello group", {});
  ASSERT_TRUE(hello) << hello.error().message;
  for (Engine* e : {&alice, &bob2, &carol}) {
    EXPECT_EQ(group_bodies(receive(*e), id), std::vector<std::string>{"hello group"});
  }
  auto events = receive(bob);
  auto receipts = of_kind(events, Event::Kind::receipt);
  ASSERT_EQ(receipts.size(), 2u);
  for (const auto& r : receipts) {
    EXPECT_EQ(r.message.conversation, conv);
    EXPECT_EQ(r.message.group, id);
    EXPECT_FALSE(r.read);
  }
  Message sent = group_message(bob, id, "bob", hello->timestamp);
  ASSERT_EQ(sent.receipts.size(), 2u);
  for (const auto& r : sent.receipts) {
    EXPECT_NE(r.delivered_at, 0u) << r.user;
    EXPECT_EQ(r.read_at, 0u) << r.user;
  }
  receive(bob2);  // alice's and carol's receipts to bob's account

  // Carol replies, quoting it and mentioning bob (a mention of someone outside is refused).
  tick();
  SendOptions reply;
  reply.quote = MessageRef{"bob", hello->timestamp};
  reply.mentions = {Mention{"bob", 0, 4}};
  auto answer = carol.conversations().send(conv, "@bob welcome", reply);
  ASSERT_TRUE(answer) << answer.error().message;
  SendOptions outsider;
  outsider.mentions = {Mention{"dave", 0, 5}};
  EXPECT_FALSE(carol.conversations().send(conv, "@dave hi", outsider));
  for (Engine* e : {&alice, &bob, &bob2}) {
    auto got = receive(*e);
    const Event* m = find_event(got, Event::Kind::message);
    ASSERT_NE(m, nullptr) << e->username();
    ASSERT_TRUE(m->message.quote);
    EXPECT_EQ(m->message.quote->author, "bob");
    EXPECT_EQ(m->message.quote_text, "hello group");
    ASSERT_EQ(m->message.mentions.size(), 1u);
    EXPECT_EQ(m->message.mentions_me, e->username() == "bob") << e->username();
  }
  EXPECT_TRUE(group_message(bob2, id, "carol", answer->timestamp).mentions_me);

  // Alice reacts; a second reaction replaces hers; every device shows one, hers.
  tick();
  ASSERT_TRUE(alice.conversations().react(conv, {"bob", hello->timestamp}, "👍", false));
  tick();
  ASSERT_TRUE(alice.conversations().react(conv, {"bob", hello->timestamp}, "🎉", false));
  EXPECT_FALSE(alice.conversations().react(conv, {"bob", hello->timestamp}, "+1", false));
  for (Engine* e : everyone) {
    if (e != &alice) {
      auto got = of_kind(receive(*e), Event::Kind::reaction);
      EXPECT_EQ(got.size(), 2u) << e->username();
      if (!got.empty()) {
        EXPECT_EQ(got.back().message.group, id);
      }
    }
    Message m = group_message(*e, id, "bob", hello->timestamp);
    ASSERT_EQ(m.reactions.size(), 1u) << e->username();
    EXPECT_EQ(m.reactions[0].user, "alice");
    EXPECT_EQ(m.reactions[0].emoji, "🎉");
  }

  // Bob edits on his second device: every device (his first one too) shows the new text, and
  // the reply's quote shows it as well.
  tick();
  auto edited = bob2.conversations().edit(conv, hello->timestamp, "hello, group");
  ASSERT_TRUE(edited) << edited.error().message;
  EXPECT_FALSE(carol.conversations().edit(conv, hello->timestamp, "not mine"));
  for (Engine* e : {&alice, &bob, &carol}) {
    EXPECT_EQ(of_kind(receive(*e), Event::Kind::edit).size(), 1u) << e->username();
  }
  for (Engine* e : everyone) {
    Message m = group_message(*e, id, "bob", hello->timestamp);
    EXPECT_EQ(m.body, "hello, group") << e->username();
    EXPECT_TRUE(m.edited);
    Message r = group_message(*e, id, "carol", answer->timestamp);
    EXPECT_EQ(r.quote_text, "hello, group") << e->username();
  }

  // Alice reads the group: bob's devices hear (1:1, from her), and see who read it.
  receive(bob);
  receive(bob2);
  auto read = alice.conversations().mark_read(conv, {});
  ASSERT_TRUE(read) << read.error().message;
  EXPECT_EQ(*read, 2u);
  auto got = of_kind(receive(bob), Event::Kind::receipt);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].read);
  EXPECT_EQ(got[0].user, "alice");
  EXPECT_EQ(got[0].message.conversation, conv);
  sent = group_message(bob, id, "bob", hello->timestamp);
  for (const auto& r : sent.receipts) {
    if (r.user == "alice") {
      EXPECT_NE(r.read_at, 0u);
    } else {
      EXPECT_EQ(r.read_at, 0u) << r.user;
    }
  }
  // Carol turns read receipts off: reading tells nobody.
  ASSERT_TRUE(carol.conversations().set_read_receipts(false));
  ASSERT_EQ(*carol.conversations().mark_read(conv, {}), 1u);  // bob's message (hers is hers)
  EXPECT_TRUE(of_kind(receive(bob), Event::Kind::receipt).empty());

  // Typing: to the other members only, shown with the group.
  ASSERT_TRUE(carol.conversations().send_typing(conv, true));
  for (Engine* e : {&alice, &bob, &bob2}) {
    auto typing = of_kind(receive(*e), Event::Kind::typing);
    ASSERT_EQ(typing.size(), 1u) << e->username();
    EXPECT_EQ(typing[0].user, "carol");
    EXPECT_EQ(typing[0].message.group, id);
    EXPECT_TRUE(typing[0].typing);
  }
  EXPECT_TRUE(of_kind(receive(carol), Event::Kind::typing).empty());

  // Bob deletes it for everyone: the text is gone everywhere, and the reply says so.
  tick();
  ASSERT_TRUE(bob.conversations().remote_delete(conv, hello->timestamp));
  EXPECT_FALSE(carol.conversations().remote_delete(conv, hello->timestamp));
  for (Engine* e : {&alice, &bob2, &carol}) {
    EXPECT_EQ(of_kind(receive(*e), Event::Kind::remote_delete).size(), 1u) << e->username();
  }
  for (Engine* e : everyone) {
    Message m = group_message(*e, id, "bob", hello->timestamp);
    EXPECT_TRUE(m.deleted) << e->username();
    EXPECT_EQ(m.body, "");
    Message r = group_message(*e, id, "carol", answer->timestamp);
    EXPECT_TRUE(r.quote_deleted) << e->username();
    EXPECT_EQ(r.quote_text, "");
  }
  // Nothing failed anywhere, and the message is named by author:timestamp on every device.
  for (Engine* e : everyone) {
    EXPECT_TRUE(of_kind(receive(*e), Event::Kind::decrypt_failed).empty()) << e->username();
    auto found = e->conversations().find("bob:" + std::to_string(hello->timestamp));
    ASSERT_TRUE(found) << e->username();
    EXPECT_EQ(found->conversation, conv);
    EXPECT_EQ(found->group, id);
  }
}

// The group's timer (an admin's change) goes with every message: the sender's copies disappear
// that long after sending, a recipient's after reading (on each of its devices, told by the
// read sync), and nothing of the message is left in any store.
TEST_F(ClientGroupTest, TheGroupTimerMakesMessagesDisappearFromEveryStore) {
  Engine& alice = register_("alice");
  Engine& alice2 = link(alice, "alice-second");
  Engine& bob = register_("bob");
  Engine& bob2 = link(bob, "bob-second");
  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  const std::string conv = "group:" + id;
  for (Engine* e : {&alice2, &bob, &bob2}) receive(*e);
  GroupUpdate timer;
  timer.expire_timer = 60;
  ASSERT_TRUE(alice.groups().update(id, timer));
  for (Engine* e : {&alice2, &bob, &bob2}) {
    receive(*e);
    EXPECT_EQ(info(*e, id).expire_timer, 60u);
  }
  auto t = bob.conversations().timer(conv);
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, 60u);

  tick();
  const std::string secret = "group-vanishing-4711";
  auto sent = alice.conversations().send(conv, secret, {});
  ASSERT_TRUE(sent) << sent.error().message;
  for (Engine* e : {&alice2, &bob, &bob2}) {
    auto got = of_kind(receive(*e), Event::Kind::message);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].message.expire_timer, 60u);
  }
  EXPECT_NE(group_message(alice2, id, "alice", sent->timestamp).expires_at, 0u);
  EXPECT_EQ(group_message(bob, id, "alice", sent->timestamp).expires_at, 0u);  // unread

  // Bob reads it half a minute later on his first device; the second hears.
  clock_->advance_ms(30'000);
  ASSERT_EQ(*bob.conversations().mark_read(conv, {}), 1u);
  receive(bob2);
  receive(alice);
  // A minute after sending: gone for the sender's devices, not yet for bob's.
  clock_->advance_ms(31'000);
  const auto held = [&](Engine& e) {
    auto row = e.account().store->find_message_by_ref("alice", sent->timestamp);
    EXPECT_TRUE(row);
    return row && row->has_value();
  };
  for (Engine* e : {&alice, &alice2, &bob, &bob2}) ASSERT_TRUE(e->conversations().expire_due());
  EXPECT_FALSE(held(alice));
  EXPECT_FALSE(held(alice2));
  EXPECT_TRUE(held(bob));
  EXPECT_TRUE(held(bob2));
  // A minute after reading: gone on bob's devices too.
  clock_->advance_ms(30'000);
  for (Engine* e : {&bob, &bob2}) ASSERT_TRUE(e->conversations().expire_due());
  for (Engine* e : {&alice, &alice2, &bob, &bob2}) {
    EXPECT_FALSE(held(*e)) << e->username() << " " << e->device_id();
    auto states = e->account().store->message_states(conv);
    ASSERT_TRUE(states);
    for (const auto& s : *states) EXPECT_NE(s.timestamp, sent->timestamp);
    auto events = e->account().store->events(0, 0);
    ASSERT_TRUE(events);
    for (const auto& entry : *events) {
      const std::string record(entry.record.view().begin(), entry.record.view().end());
      EXPECT_EQ(record.find(secret), std::string::npos);
    }
  }
}

// A reaction is one emoji: text, nothing, too much, or bytes that are not UTF-8 are refused with
// a clear error, where it is sent and where it arrives.
TEST_F(ClientGroupTest, AReactionIsOneEmoji) {
  for (const std::string ok : {"👍", "❤️", "🎉", "👍🏽", "👨‍👩‍👧", "🇫🇷",
                               "1️⃣", "#⃣", "☺", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"}) {
    EXPECT_EQ(why_not_one_emoji(ok), "") << ok;
  }
  EXPECT_EQ(why_not_one_emoji(""), "it is empty");
  EXPECT_EQ(why_not_one_emoji("+1"), "it is text, not an emoji");
  EXPECT_EQ(why_not_one_emoji("ok"), "it is text, not an emoji");
  EXPECT_EQ(why_not_one_emoji("\xff\xfe"), "it is not valid UTF-8");
  EXPECT_EQ(why_not_one_emoji(std::string(65, 'a')),
            "it is longer than one emoji (at most 64 bytes)");
  for (const std::string bad : {"👍👍", "👍a", "é", "🇫", "1", "👍\u200d", "\u200d👍"}) {
    EXPECT_NE(why_not_one_emoji(bad), "") << bad;
  }

  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  tick();
  auto hello = alice.conversations().send("bob", "hello", {});
  ASSERT_TRUE(hello);
  receive(bob);
  auto refused = bob.conversations().react("alice", {"alice", hello->timestamp}, "+1", false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(refused.error().message.find("one emoji"), std::string::npos);
  // Sent anyway by a client that does not check: refused where it arrives, nothing applied.
  tick();
  content::Content c;
  c.mutable_data()->set_timestamp(clock_->now_ms());
  auto* r = c.mutable_data()->mutable_reaction();
  r->set_emoji("lol");
  r->set_target_author("alice");
  r->set_target_timestamp(hello->timestamp);
  ASSERT_TRUE(bob.outbox().send_content("alice", encode_padded(c), clock_->now_ms()));
  auto events = receive(alice);
  EXPECT_TRUE(of_kind(events, Event::Kind::reaction).empty());
  EXPECT_EQ(of_kind(events, Event::Kind::decrypt_failed).size(), 1u);
  auto h = alice.history("bob", 0);
  ASSERT_TRUE(h);
  for (const auto& m : *h) EXPECT_TRUE(m.reactions.empty());
}

}  // namespace
}  // namespace sotto::client
