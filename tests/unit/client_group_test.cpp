// Groups (docs/groups.md) against the real server's handlers and real SQLite stores, in one
// process (tests/util/in_process_server.h): fan-out to every member device exactly once, Sender
// Key rotation when a member goes, changes the server forges or a non-admin sends are refused
// and reported, joining by link and resetting the link, leaving. Also the pure rules of
// src/client/group_codec.h on malformed input.
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>

#include "client/attachment_format.h"
#include "client/backup_file.h"
#include "client/emoji.h"
#include "client/engine.h"
#include "client/group_codec.h"
#include "client/group_log.h"
#include "client/multi_send.h"
#include "client/util.h"
#include "content.pb.h"
#include "crypto/hash.h"
#include "image_test_images.h"
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
    adjust(config);
    server_ = std::make_unique<InProcessServer>(root_ / "server", clock_, config);
  }
  // A fixture's own server settings.
  virtual void adjust(server::ServerConfig&) {}
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
  Engine& link(Engine& existing, const std::string& dir, LinkOptions link_options = {}) {
    std::promise<std::string> code;
    auto shown = code.get_future();
    auto linking = std::async(std::launch::async, [&] {
      return Engine::link(
          options(dir), server_address(), [&](const LinkPrompt& p) { code.set_value(p.code); },
          std::chrono::seconds(20), link_options, env());
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

  // Puts the envelopes the server holds for `user`'s device 1 in the opposite order (the server
  // may deliver what different senders sent in any order).
  void reverse_queue(const std::string& user) {
    auto q = queued(user);
    auto account = server_->store().accounts().find_account(user);
    ASSERT_TRUE(account);
    std::vector<store::EnvelopeId> ids;
    for (const auto& e : q) ids.push_back(e.id);
    ASSERT_TRUE(server_->store().messages().remove(account->id, 1, ids));
    for (auto it = q.rbegin(); it != q.rend(); ++it) enqueue_as_server(user, 1, *it);
  }
  // Receives on every engine until none gets anything (a rollback makes a change again).
  void settle(const std::vector<Engine*>& engines) {
    for (int round = 0; round < 4; ++round) {
      bool any = false;
      for (auto* e : engines) any = !receive(*e).empty() || any;
      if (!any) return;
    }
  }
  static std::string state_of(const Group& g) {
    std::string out = std::to_string(g.revision) + "|" + g.name + "|" + g.description + "|";
    for (const auto& m : g.members) out += m.user + (m.admin ? "*" : "") + ",";
    return out;
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
// is gone is dropped the same way. A device linked after the group was made gets the group from
// the device that linked it (with the contacts, even without the message history), so it reads
// the next message, and takes the next change like any member device.
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
  EXPECT_EQ(group_bodies(events, id), std::vector<std::string>{"two"});
  EXPECT_TRUE(of_kind(events, Event::Kind::decrypt_failed).empty());
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
  {
    // Her device answers erin (only that the link did not work).
    auto erin_events = receive(erin);
    EXPECT_TRUE(of_kind(erin_events, Event::Kind::group_changed).empty());
    auto refused = of_kind(erin_events, Event::Kind::group_join_refused);
    ASSERT_EQ(refused.size(), 1u);
    EXPECT_EQ(refused[0].message.group, id);
    EXPECT_EQ(refused[0].message.from, "alice");
    auto outside = erin.groups().info(id);
    EXPECT_TRUE(!outside || !outside->member);
  }
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

// A group picture is an attachment pointer to a PNG or JPEG of at most 5 MiB; unset, none.
TEST(GroupCodecTest, AGroupPictureIsAnImagePointer) {
  const auto s = sample_state();
  content::GroupChange set;
  set.set_set_avatar(true);
  auto* p = set.mutable_avatar();
  p->set_id(std::string(16, 'b'));
  p->set_key(std::string(32, 'k'));
  p->set_digest(std::string(32, 'd'));
  p->set_size(1000);
  p->set_chunk_size(64 * 1024);
  p->set_ciphertext_size(attachment_ciphertext_size(1000, 64 * 1024));
  p->set_content_type("image/png");
  auto with = apply_group_change(s, set, "alice", 3);
  ASSERT_TRUE(with) << with.error();
  EXPECT_TRUE(with->has_avatar());
  EXPECT_EQ(with->avatar().digest(), std::string(32, 'd'));
  EXPECT_EQ(describe_group_change(set, "alice"), "alice changed the group picture");
  EXPECT_FALSE(apply_group_change(s, set, "bob", 3));  // not an admin

  auto not_image = set;
  not_image.mutable_avatar()->set_content_type("application/pdf");
  EXPECT_FALSE(apply_group_change(s, not_image, "alice", 3));
  auto too_large = set;
  too_large.mutable_avatar()->set_size(kMaxGroupAvatarBytes + 1);
  too_large.mutable_avatar()->set_ciphertext_size(
      attachment_ciphertext_size(kMaxGroupAvatarBytes + 1, 64 * 1024));
  EXPECT_FALSE(apply_group_change(s, too_large, "alice", 3));
  auto bad_key = set;
  bad_key.mutable_avatar()->set_key("short");
  EXPECT_FALSE(apply_group_change(s, bad_key, "alice", 3));

  content::GroupChange remove;
  remove.set_set_avatar(true);
  auto without = apply_group_change(*with, remove, "alice", 4);
  ASSERT_TRUE(without) << without.error();
  EXPECT_FALSE(without->has_avatar());
  EXPECT_EQ(describe_group_change(remove, "alice"), "alice removed the group picture");
}

// An admin sets the picture; every member's client downloads the same bytes, a non-admin's
// attempt and a file that is not an image are refused, and removing it clears it everywhere.
TEST_F(ClientGroupTest, AGroupPictureReachesEveryMember) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  auto created = alice.groups().create("g", {"bob", "carol"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(bob);
  receive(carol);
  EXPECT_FALSE(info(bob, id).avatar);

  const std::string png = test::make_png(
      40, 30, [](std::uint32_t x, std::uint32_t) { return x < 20 ? 0xff0000ffu : 0x0000ffffu; });
  const fs::path picture = root_ / "picture.png";
  { std::ofstream(picture, std::ios::binary) << png; }
  const auto digest = crypto::sha256({as_bytes(png)});
  const std::string sha = to_hex(ByteView(digest.data(), digest.size()));
  const fs::path notes = root_ / "notes.txt";
  { std::ofstream(notes) << "not an image"; }
  tick();
  GroupUpdate text_file;
  text_file.avatar = notes;
  auto refused = alice.groups().update(id, text_file);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("PNG or JPEG"), std::string::npos)
      << refused.error().message;
  GroupUpdate by_bob;
  by_bob.avatar = picture;
  auto not_admin = bob.groups().update(id, by_bob);
  ASSERT_FALSE(not_admin);
  EXPECT_EQ(not_admin.error().code, ErrorCode::forbidden);

  GroupUpdate set;
  set.avatar = picture;
  auto updated = alice.groups().update(id, set);
  ASSERT_TRUE(updated) << updated.error().message;
  ASSERT_TRUE(updated->avatar);
  EXPECT_TRUE(updated->avatar->downloaded);
  EXPECT_EQ(updated->avatar->sha256, sha);

  auto events = of_kind(receive(bob), Event::Kind::group_changed);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].detail, "alice changed the group picture");
  const Group seen = info(bob, id);
  ASSERT_TRUE(seen.avatar);
  ASSERT_TRUE(seen.avatar->downloaded);
  EXPECT_EQ(seen.avatar->sha256, sha);
  EXPECT_EQ(seen.avatar->content_type, "image/png");
  EXPECT_EQ(seen.avatar->size, png.size());
  std::ifstream in(seen.avatar->path, std::ios::binary);
  const std::string saved((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(saved, png);

  // A backup carries the pointer with the group's state; the restored device fetches the
  // picture when it looks.
  ::setenv("SOTTO_TEST_FAST_KDF", "1", 1);
  const sotto::BackupSecret secret{sotto::BackupSecret::Kind::passphrase, "correct horse"};
  ASSERT_TRUE(alice.backup_export(root_ / "alice.backup", secret, nullptr));
  Engine& laptop = link(alice, "alice-laptop");
  ASSERT_TRUE(laptop.backup_import(root_ / "alice.backup", secret, nullptr));
  const Group restored = info(laptop, id);
  ASSERT_TRUE(restored.avatar);
  EXPECT_TRUE(restored.avatar->downloaded);
  EXPECT_EQ(restored.avatar->sha256, sha);

  // Carol's download fails (a file stands where her pictures would go): the change is applied
  // all the same, and the picture is fetched when she looks again.
  const fs::path blocker = root_ / "carol" / "attachments" / "carol";
  fs::create_directories(blocker.parent_path());
  { std::ofstream(blocker) << "in the way"; }
  EXPECT_EQ(of_kind(receive(carol), Event::Kind::group_changed).size(), 1u);
  Group failed = info(carol, id);
  ASSERT_TRUE(failed.avatar);
  EXPECT_FALSE(failed.avatar->downloaded);
  EXPECT_EQ(failed.revision, seen.revision);
  fs::remove(blocker);
  Group later = info(carol, id);
  ASSERT_TRUE(later.avatar);
  EXPECT_TRUE(later.avatar->downloaded);
  EXPECT_EQ(later.avatar->sha256, sha);

  tick();
  GroupUpdate remove;
  remove.remove_avatar = true;
  ASSERT_TRUE(alice.groups().update(id, remove));
  events = of_kind(receive(bob), Event::Kind::group_changed);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].detail, "alice removed the group picture");
  EXPECT_FALSE(info(bob, id).avatar);
  EXPECT_FALSE(fs::exists(seen.avatar->path));

  // Removing a picture the group does not have is refused: no revision, nothing sent.
  const auto revision = info(alice, id).revision;
  tick();
  auto again = alice.groups().update(id, remove);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(again.error().message.find("the group has no picture"), std::string::npos);
  EXPECT_EQ(info(alice, id).revision, revision);
  EXPECT_TRUE(of_kind(receive(bob), Event::Kind::group_changed).empty());
  // A file that cannot be a picture is found before anything is made.
  EXPECT_FALSE(check_group_picture(notes));
  EXPECT_FALSE(check_group_picture(root_ / "missing.png"));
  auto type = check_group_picture(picture);
  ASSERT_TRUE(type) << type.error().message;
  EXPECT_EQ(*type, "image/png");
  // Once carol has left, any change of hers says she is not a member.
  ASSERT_TRUE(carol.groups().leave(id));
  auto by_carol = carol.groups().update(id, set);
  ASSERT_FALSE(by_carol);
  EXPECT_EQ(by_carol.error().code, ErrorCode::forbidden);
  EXPECT_EQ(by_carol.error().message, "you are not a member of this group");
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

// Two admins change the group on the same revision before either sees the other's change; the
// members get the two changes in different orders (each admin its own first, dave reversed), and
// all end with one state: the lower change hash wins, and the other admin's client makes its
// change again on top of it.
TEST_F(ClientGroupTest, ConcurrentAdminChangesConverge) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  Engine& dave = register_("dave");
  auto created = alice.groups().create("g", {"bob", "carol", "dave"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  GroupUpdate promote;
  promote.make_admin = {"bob"};
  ASSERT_TRUE(alice.groups().update(id, promote));
  settle({&bob, &carol, &dave});
  ASSERT_TRUE(info(bob, id).admin);
  const std::uint64_t base = info(alice, id).revision;
  ASSERT_EQ(info(dave, id).revision, base);

  tick();
  ASSERT_TRUE(alice.groups().update(id, renaming("alice's name")));
  ASSERT_TRUE(bob.groups().update(id, renaming("bob's name")));
  EXPECT_EQ(info(alice, id).name, "alice's name");
  EXPECT_EQ(info(bob, id).name, "bob's name");
  reverse_queue("dave");
  receive(carol);
  receive(dave);
  auto alice_events = receive(alice);
  auto bob_events = receive(bob);
  settle({&alice, &bob, &carol, &dave});

  const Group a = info(alice, id);
  EXPECT_EQ(a.revision, base + 2);  // the winner, then the loser's name made again on top
  for (Engine* e : {&bob, &carol, &dave}) {
    EXPECT_EQ(state_of(info(*e, id)), state_of(a)) << e->username();
  }
  // Exactly one of the two admins saw its change undone (and made it again).
  int undone = 0;
  for (const auto* events : {&alice_events, &bob_events}) {
    for (const auto& e : of_kind(*events, Event::Kind::group_changed)) {
      if (e.detail.find("which is undone") != std::string::npos) ++undone;
    }
  }
  EXPECT_EQ(undone, 1);
  // And the group still works: a message reaches everyone.
  tick();
  ASSERT_TRUE(carol.groups().send(id, "after the race"));
  for (Engine* e : {&alice, &bob, &dave}) {
    EXPECT_EQ(group_bodies(receive(*e), id), std::vector<std::string>{"after the race"});
  }
}

// The loser's change cannot be made again on the winner (both admins removed the same member):
// its author is told it was dropped, and every member ends at the winner's state.
TEST_F(ClientGroupTest, AConcurrentChangeThatNoLongerAppliesIsReportedAsDropped) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  Engine& dave = register_("dave");
  auto created = alice.groups().create("g", {"bob", "carol", "dave"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  GroupUpdate promote;
  promote.make_admin = {"bob"};
  ASSERT_TRUE(alice.groups().update(id, promote));
  settle({&bob, &carol, &dave});
  const std::uint64_t base = info(alice, id).revision;

  tick();
  ASSERT_TRUE(alice.groups().update(id, removing("dave")));
  ASSERT_TRUE(bob.groups().update(id, removing("dave")));
  reverse_queue("carol");
  receive(carol);
  receive(dave);
  std::vector<Event> admin_events;
  for (Engine* e : {&alice, &bob}) {
    auto got = receive(*e);
    admin_events.insert(admin_events.end(), got.begin(), got.end());
  }
  settle({&alice, &bob, &carol, &dave});
  EXPECT_EQ(of_kind(admin_events, Event::Kind::group_change_dropped).size(), 1u);
  const Group a = info(alice, id);
  EXPECT_EQ(a.revision, base + 1);
  EXPECT_EQ(member_names(a), (std::vector<std::string>{"alice", "bob", "carol"}));
  EXPECT_EQ(state_of(info(bob, id)), state_of(a));
  EXPECT_EQ(state_of(info(carol, id)), state_of(a));
  EXPECT_FALSE(info(dave, id).member);
  EXPECT_EQ(info(dave, id).revision, base + 1);
}

// The pure rule: whatever order three changes arrive in (two competing on one revision, one made
// on one of them), every member ends with the same head; a non-admin's change is still refused.
TEST(GroupLogTest, EveryOrderEndsInTheSameState) {
  content::GroupState s;
  s.set_id(std::string(32, 'i'));
  s.set_revision(5);
  s.set_name("n");
  for (const char* u : {"alice", "bob"}) {
    auto* m = s.add_members();
    m->set_user(u);
    m->set_admin(true);
  }
  s.add_members()->set_user("carol");
  struct Sent {
    content::DataMessage d;
    std::string author;
  };
  const auto make = [&](const std::string& author, std::uint64_t base, const std::string& parent,
                        const std::string& name, std::uint64_t ts) {
    Sent out{{}, author};
    out.d.set_timestamp(ts);
    out.d.mutable_group()->set_id(s.id());
    out.d.mutable_group()->set_revision(base);
    out.d.mutable_group_change()->set_set_name(true);
    out.d.mutable_group_change()->set_name(name);
    out.d.mutable_group_change()->set_parent(parent);
    return out;
  };
  std::vector<Sent> sent;
  sent.push_back(make("alice", 5, "", "a", 10));
  sent.push_back(make("bob", 5, "", "b", 11));
  const Bytes ha = change_hash(as_bytes(s.id()), 5, "alice", 1, 10, sent[0].d.group_change());
  sent.push_back(make("alice", 6, bytes_string(ha), "a2", 12));  // alice's next, on her own
  sent.push_back(make("carol", 5, "", "c", 13));                 // not an admin
  std::vector<int> order{0, 1, 2, 3};
  std::optional<std::string> first_head;
  do {
    auto log = log_from_state(s);
    int refused = 0;
    for (int i : order) {
      auto o = take_group_change(log, sent[i].d, sent[i].author, 1, "carol");
      refused += o.kind == GroupLogOutcome::Kind::refused;
    }
    EXPECT_EQ(refused, 1);
    ASSERT_FALSE(check_group_log(log));
    const std::string head = log_head(log).SerializeAsString();
    if (!first_head) first_head = head;
    EXPECT_EQ(head, *first_head);
  } while (std::next_permutation(order.begin(), order.end()));
  content::GroupState head;
  ASSERT_TRUE(head.ParseFromString(*first_head));
  const Bytes hb = change_hash(as_bytes(s.id()), 5, "bob", 1, 11, sent[1].d.group_change());
  if (ha < hb) {
    EXPECT_EQ(head.name(), "a2");
    EXPECT_EQ(head.revision(), 7u);
  } else {
    EXPECT_EQ(head.name(), "b");  // alice's next was made on the loser: never applied
    EXPECT_EQ(head.revision(), 6u);
  }
}

TEST(GroupLogTest, AMalformedLogIsRefused) {
  wire::backup::GroupLog empty;
  EXPECT_TRUE(check_group_log(empty));
  content::GroupState s = sample_state();
  auto log = log_from_state(s);
  EXPECT_FALSE(check_group_log(log));
  auto gap = log;
  s.set_revision(5);
  auto* e = gap.add_entries();
  e->set_revision(5);
  e->set_state(s.SerializeAsString());
  EXPECT_TRUE(check_group_log(gap));  // 3 then 5
  auto bad_hash = log;
  bad_hash.mutable_entries(0)->set_hash("short");
  EXPECT_TRUE(check_group_log(bad_hash));
  auto bad_state = log;
  bad_state.mutable_entries(0)->set_state("\xff\xff");
  EXPECT_TRUE(check_group_log(bad_state));
}

// Adding someone who has no account fails before anything is authored or sent; blank and
// over-long names and descriptions are refused.
TEST_F(ClientGroupTest, AddingAUserWithoutAnAccountAndBlankNamesAreRefused) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  auto ghost = alice.groups().create("g", {"bob", "nobody"});
  ASSERT_FALSE(ghost);
  EXPECT_EQ(ghost.error().code, ErrorCode::not_found);
  EXPECT_NE(ghost.error().message.find("nobody"), std::string::npos);
  EXPECT_TRUE(alice.groups().list()->empty());
  EXPECT_TRUE(queued("bob").empty());

  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(bob);
  const std::uint64_t revision = info(alice, id).revision;
  auto added = alice.groups().update(id, adding("nobody"));
  ASSERT_FALSE(added);
  EXPECT_EQ(added.error().code, ErrorCode::not_found);
  for (const std::string& bad : {std::string(""), std::string("   "), std::string(" \t\n"),
                                 std::string(kMaxGroupNameBytes + 1, 'x')}) {
    EXPECT_FALSE(alice.groups().create(bad, {})) << "create " << bad;
    EXPECT_FALSE(alice.groups().update(id, renaming(bad))) << "rename " << bad;
  }
  GroupUpdate blank;
  blank.description = "  ";
  EXPECT_FALSE(alice.groups().update(id, blank));
  GroupUpdate long_description;
  long_description.description = std::string(kMaxGroupDescriptionBytes + 1, 'd');
  EXPECT_FALSE(alice.groups().update(id, long_description));
  EXPECT_EQ(info(alice, id).revision, revision);
  EXPECT_TRUE(receive(bob).empty());  // nothing was sent
  GroupUpdate cleared;
  cleared.description = "";  // an empty description clears it
  EXPECT_TRUE(alice.groups().update(id, cleared));
}

// A device that gets a group message under a key it never received (the server lost the
// distribution) asks the sender, which gives it the key and the message again, once.
TEST_F(ClientGroupTest, AMissingSenderKeyIsAskedForAndTheMessageSentAgain) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  auto created = alice.groups().create("g", {"bob", "carol"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(bob);
  receive(carol);

  tick();
  ASSERT_TRUE(alice.groups().send(id, "first"));
  {
    // The server loses bob's copy of alice's distribution (the 1:1 envelope before the message).
    auto q = queued("bob");
    auto account = server_->store().accounts().find_account("bob");
    ASSERT_TRUE(account);
    std::vector<store::EnvelopeId> lost;
    for (const auto& e : q) {
      if (e.type != kSenderKeyMessageType) lost.push_back(e.id);
    }
    ASSERT_EQ(lost.size(), 1u);
    ASSERT_TRUE(server_->store().messages().remove(account->id, 1, lost));
  }
  auto events = receive(bob);
  EXPECT_TRUE(group_bodies(events, id).empty());
  auto failed = of_kind(events, Event::Kind::decrypt_failed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_NE(failed[0].detail.find("asked the sender"), std::string::npos) << failed[0].detail;
  EXPECT_EQ(queued("alice").size(), 1u);  // one request

  receive(alice);
  EXPECT_EQ(queued("bob").size(), 2u);  // answered once: the key, then the message
  EXPECT_EQ(group_bodies(receive(bob), id), std::vector<std::string>{"first"});
  EXPECT_EQ(group_bodies(receive(carol), id), std::vector<std::string>{"first"});

  tick();
  ASSERT_TRUE(alice.groups().send(id, "second"));
  EXPECT_EQ(group_bodies(receive(bob), id), std::vector<std::string>{"second"});
  EXPECT_EQ(group_bodies(receive(carol), id), std::vector<std::string>{"second"});
  // Nothing more asked: alice gets only the members' delivery receipts, and answers nothing.
  for (const auto& e : receive(alice)) EXPECT_EQ(e.kind, Event::Kind::receipt);
  EXPECT_TRUE(queued("bob").empty());
}

// A backup carries the groups (state and recent revisions) and the messages' state (a reaction
// here); a device that imports it shows both. Records that do not parse are skipped and change
// nothing.
TEST_F(ClientGroupTest, ABackupRestoresGroupsAndMessageState) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  auto sent = alice.outbox().send_text("bob", "hello");
  ASSERT_TRUE(sent) << sent.error().message;
  receive(bob);
  tick();
  ASSERT_TRUE(bob.conversations().react("alice", MessageRef{"alice", sent->timestamp},
                                        "\xf0\x9f\x91\x8d", false));
  receive(alice);
  auto created = alice.groups().create("kept", {"bob"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  ASSERT_TRUE(alice.groups().update(id, renaming("kept, renamed")));
  tick();
  ASSERT_TRUE(alice.groups().send(id, "in the group"));
  receive(bob);

  ::setenv("SOTTO_TEST_FAST_KDF", "1", 1);
  const sotto::BackupSecret secret{sotto::BackupSecret::Kind::passphrase, "correct horse"};
  const fs::path file = root_ / "alice.backup";
  ASSERT_TRUE(alice.backup_export(file, secret, nullptr));

  Engine& laptop = link(alice, "alice-laptop");  // no history asked for
  EXPECT_FALSE(laptop.groups().info(id));
  {
    // A backup whose group and message state do not parse: the message is kept, nothing else.
    auto writer = BackupWriter::create(root_ / "bad.backup",
                                       BackupSecret::passphrase("correct horse"), *env().rng);
    ASSERT_TRUE(writer);
    wire::backup::BackupRecord r;
    r.mutable_account()->set_username("alice");
    ASSERT_TRUE(writer->add(r));
    r.Clear();
    auto* entry = r.mutable_group()->add_entries();
    entry->set_revision(1);
    entry->set_state(std::string("\x0a\x03", 2) + "abc");  // an id of 3 bytes
    ASSERT_TRUE(writer->add(r));
    r.Clear();
    auto* gap = r.mutable_group();
    content::GroupState g;
    g.set_id(std::string(32, 'z'));
    g.set_revision(1);
    gap->add_entries()->set_state(g.SerializeAsString());
    gap->mutable_entries(0)->set_revision(1);
    g.set_revision(3);
    gap->add_entries()->set_state(g.SerializeAsString());
    gap->mutable_entries(1)->set_revision(3);  // revisions that do not follow
    ASSERT_TRUE(writer->add(r));
    r.Clear();
    auto* m = r.mutable_message();
    m->set_id("bad-state");
    m->set_peer("bob");
    m->set_sender("bob");
    m->set_sender_device(1);
    m->set_timestamp(kStartMs - 5);
    m->set_body("kept without its state");
    m->set_state("\xff\xff\xff");
    ASSERT_TRUE(writer->add(r));
    ASSERT_TRUE(writer->finish());
    auto imported = laptop.backup_import(root_ / "bad.backup", secret, nullptr);
    ASSERT_TRUE(imported) << imported.error().message;
    EXPECT_EQ(*imported, 1u);
    EXPECT_TRUE(laptop.groups().list()->empty());
    auto history = laptop.history("bob", 0);
    ASSERT_EQ(history->size(), 1u);
    EXPECT_TRUE((*history)[0].reactions.empty());
  }

  auto imported = laptop.backup_import(file, secret, nullptr);
  ASSERT_TRUE(imported) << imported.error().message;
  const Group restored = info(laptop, id);
  EXPECT_EQ(state_of(restored), state_of(info(alice, id)));
  EXPECT_EQ(restored.name, "kept, renamed");
  EXPECT_TRUE(restored.admin);
  auto group_history = laptop.groups().history(id, 0);
  ASSERT_TRUE(group_history);
  bool seen = false;
  for (const auto& h : *group_history) seen = seen || h.body == "in the group";
  EXPECT_TRUE(seen);
  auto history = laptop.history("bob", 0);
  ASSERT_TRUE(history);
  bool reacted = false;
  for (const auto& h : *history) {
    if (h.body == "hello") {
      ASSERT_EQ(h.reactions.size(), 1u);
      EXPECT_EQ(h.reactions[0].user, "bob");
      reacted = true;
    }
  }
  EXPECT_TRUE(reacted);
  // The restored device takes the group's next change like any member device.
  tick();
  ASSERT_TRUE(alice.groups().update(id, renaming("after the restore")));
  receive(laptop);
  EXPECT_EQ(info(laptop, id).name, "after the restore");
}

// A device linked with the history gets the groups (state and recent revisions) and the
// messages' state with it, and then reads the group's messages like any member device.
TEST_F(ClientGroupTest, AHistoryTransferCarriesGroupsAndMessageState) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  auto sent = alice.outbox().send_text("bob", "hello");
  ASSERT_TRUE(sent) << sent.error().message;
  receive(bob);
  tick();
  ASSERT_TRUE(bob.conversations().react("alice", MessageRef{"alice", sent->timestamp},
                                        "\xe2\x9c\x85", false));
  receive(alice);
  auto created = alice.groups().create("moved", {"bob"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  ASSERT_TRUE(alice.groups().update(id, renaming("moved, renamed")));
  tick();
  ASSERT_TRUE(alice.groups().send(id, "before the tablet"));
  receive(bob);

  LinkOptions with_history;
  with_history.transfer_history = true;
  Engine& tablet = link(alice, "alice-tablet", with_history);
  EXPECT_EQ(state_of(info(tablet, id)), state_of(info(alice, id)));
  auto group_history = tablet.groups().history(id, 0);
  ASSERT_TRUE(group_history);
  bool seen = false;
  for (const auto& h : *group_history) seen = seen || h.body == "before the tablet";
  EXPECT_TRUE(seen);
  auto history = tablet.history("bob", 0);
  ASSERT_TRUE(history);
  bool reacted = false;
  for (const auto& h : *history) {
    if (h.body == "hello") {
      ASSERT_EQ(h.reactions.size(), 1u);
      EXPECT_EQ(h.reactions[0].emoji, "\xe2\x9c\x85");
      reacted = true;
    }
  }
  EXPECT_TRUE(reacted);

  tick();
  ASSERT_TRUE(bob.groups().send(id, "to every device of alice"));
  EXPECT_EQ(group_bodies(receive(tablet), id),
            std::vector<std::string>{"to every device of alice"});
  EXPECT_EQ(group_bodies(receive(alice), id), std::vector<std::string>{"to every device of alice"});
}

// A member removed and added back by link takes the group's state whole: what it had missed is
// not shown to it as a concurrent change being undone.
TEST_F(ClientGroupTest, AMemberAddedBackIsNotToldOfAConcurrentChange) {
  Engine& alice = register_("alice");
  Engine& dave = register_("dave");
  auto created = alice.groups().create("g", {"dave"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(dave);
  tick();
  ASSERT_TRUE(alice.groups().update(id, removing("dave")));
  receive(dave);
  EXPECT_FALSE(info(dave, id).member);
  for (const char* name : {"one", "two", "three"}) {
    tick();
    ASSERT_TRUE(alice.groups().update(id, renaming(name)));
  }
  auto link = alice.groups().invite_link(id, false);
  ASSERT_TRUE(link) << link.error().message;
  tick();
  ASSERT_TRUE(dave.groups().join(*link));
  receive(alice);
  auto changed = of_kind(receive(dave), Event::Kind::group_changed);
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_NE(changed[0].detail.find("dave joined by invite link"), std::string::npos)
      << changed[0].detail;
  EXPECT_EQ(changed[0].detail.find("concurrent"), std::string::npos) << changed[0].detail;
  EXPECT_TRUE(info(dave, id).member);
  EXPECT_EQ(info(dave, id).name, "three");
}

// A former member whose join is refused (the link was reset) is told, like anyone else; and an
// admin who has left answers a join through its old link the same way.
TEST_F(ClientGroupTest, AFormerMemberAndALeftAdminStillAnswerJoinRefusals) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& dave = register_("dave");
  auto created = alice.groups().create("g", {"bob", "dave"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(bob);
  receive(dave);
  auto old_link = alice.groups().invite_link(id, false);
  ASSERT_TRUE(old_link) << old_link.error().message;
  tick();
  ASSERT_TRUE(alice.groups().update(id, removing("dave")));
  receive(dave);
  receive(bob);
  tick();
  ASSERT_TRUE(alice.groups().invite_link(id, true));  // reset
  tick();
  ASSERT_TRUE(dave.groups().join(*old_link));
  EXPECT_EQ(of_kind(receive(alice), Event::Kind::group_refused).size(), 1u);
  EXPECT_EQ(of_kind(receive(dave), Event::Kind::group_join_refused).size(), 1u);

  // Alice leaves (bob is made admin first); dave tries her link again.
  tick();
  GroupUpdate promote;
  promote.make_admin = {"bob"};
  ASSERT_TRUE(alice.groups().update(id, promote));
  receive(bob);
  auto link = alice.groups().invite_link(id, false);
  ASSERT_TRUE(link) << link.error().message;
  tick();
  ASSERT_TRUE(alice.groups().leave(id));
  receive(bob);
  tick();
  ASSERT_TRUE(dave.groups().join(*link));
  auto refused = of_kind(receive(alice), Event::Kind::group_refused);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].detail.find("no longer an admin"), std::string::npos) << refused[0].detail;
  EXPECT_EQ(of_kind(receive(dave), Event::Kind::group_join_refused).size(), 1u);
  EXPECT_FALSE(info(dave, id).member);
}

// What a member is told of a change says what changed: the new name, the timer in words.
TEST_F(ClientGroupTest, ChangeNoticesSayWhatChanged) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(bob);
  tick();
  ASSERT_TRUE(alice.groups().update(id, renaming("party")));
  tick();
  GroupUpdate timer;
  timer.expire_timer = 300;
  ASSERT_TRUE(alice.groups().update(id, timer));
  std::vector<std::string> details;
  for (const auto& e : of_kind(receive(bob), Event::Kind::group_changed))
    details.push_back(e.detail);
  EXPECT_EQ(details, (std::vector<std::string>{"alice renamed the group to \"party\"",
                                               "alice set disappearing messages to 5 minutes"}));
}

// A group is named by its id or, as the terminal shows it, the id's first digits.
TEST_F(ClientGroupTest, AGroupIsFoundByTheFirstDigitsOfItsId) {
  Engine& alice = register_("alice");
  register_("bob");
  auto created = alice.groups().create("g", {"bob"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  for (const std::string& given : {id, id.substr(0, 8), id.substr(0, 20)}) {
    auto found = alice.groups().info(given);
    ASSERT_TRUE(found) << given << ": " << found.error().message;
    EXPECT_EQ(found->id, id);
  }
  auto upper = id.substr(0, 10);
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  EXPECT_TRUE(alice.groups().info(upper));
  auto short_prefix = alice.groups().info(id.substr(0, 7));
  ASSERT_FALSE(short_prefix);
  EXPECT_EQ(short_prefix.error().code, ErrorCode::invalid_argument);
  const std::string other = (id[0] == '0' ? "1" : "0") + id.substr(1, 9);
  auto unknown = alice.groups().info(other);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);
  EXPECT_FALSE(alice.groups().info("not-hex-at-all"));
  // The conversation actions take it too.
  tick();
  auto sent = alice.conversations().send("group:" + id.substr(0, 8), "by prefix", {});
  ASSERT_TRUE(sent) << sent.error().message;
}

// A member device whose queue on the server is full (away for long) does not keep the group
// from talking: the others get every message, and the sender is told which device was left out.
class ClientGroupFullQueueTest : public ClientGroupTest {
  void adjust(server::ServerConfig& config) override { config.max_queue_per_device = 4; }
};

TEST_F(ClientGroupFullQueueTest, AFullMemberQueueLeavesThatDeviceOutAndTheOthersGetIt) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& carol = register_("carol");
  auto created = alice.groups().create("g", {"bob", "carol"});
  ASSERT_TRUE(created) << created.error().message;
  const std::string id = created->id;
  receive(bob);
  receive(carol);  // carol goes away from here on

  std::vector<std::string> sent_bodies, bob_bodies;
  std::size_t left_out = 0;
  for (int i = 0; i < 8; ++i) {
    tick();
    const std::string body = "message " + std::to_string(i);
    auto sent = alice.groups().send(id, body);
    ASSERT_TRUE(sent) << body << ": " << sent.error().message;
    sent_bodies.push_back(body);
    if (!sent->left_out.empty()) {
      EXPECT_EQ(sent->left_out, std::vector<std::string>{"carol (device 1)"});
      EXPECT_EQ(sent->devices, 1u);  // bob's
      ++left_out;
    }
    for (auto& b : group_bodies(receive(bob), id)) bob_bodies.push_back(b);
    receive(alice);  // bob's delivery receipts
  }
  EXPECT_EQ(bob_bodies, sent_bodies);
  EXPECT_GT(left_out, 0u);
  // Carol, back, reads what her queue held and the messages after it once she has room.
  auto first = group_bodies(receive(carol), id);
  EXPECT_FALSE(first.empty());
  EXPECT_LE(first.size(), sent_bodies.size() - left_out);
  tick();
  ASSERT_TRUE(alice.groups().send(id, "after"));
  EXPECT_EQ(group_bodies(receive(carol), id), std::vector<std::string>{"after"});
}

}  // namespace
}  // namespace sotto::client
