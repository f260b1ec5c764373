// The everyday message types (src/client/conversations.h) against the real server's handlers in
// process, with two devices per user: replies, reactions, edits, deletes, receipts, typing,
// mentions and disappearing messages, and what is refused (late or foreign edits, malformed
// content).
#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <thread>

#include "client/content_codec.h"
#include "client/engine.h"
#include "content.pb.h"
#include "util/in_process_server.h"

namespace sotto::client {
namespace {

namespace fs = std::filesystem;
namespace content = sotto::wire::content;
using testing::InProcessServer;

constexpr std::uint64_t kStartMs = 1'800'000'000'000;

class ClientMessagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sotto-client-msgs-XXXXXX";
    root_ = mkdtemp(tmpl);
    clock_ = std::make_shared<ManualWallClock>(kStartMs);
    server_ = std::make_unique<InProcessServer>(root_ / "server", clock_);
  }
  void TearDown() override {
    engines_.clear();
    server_.reset();
    fs::remove_all(root_);
  }

  Environment env() {
    Environment e;
    e.connector = server_->connector();
    e.rng = &rngs_.emplace_back(2000 + rngs_.size());
    e.clock = clock_;
    return e;
  }
  Options options(const std::string& dir, bool manual_ack = false) {
    Options o;
    o.data_dir = root_ / dir;
    o.request_timeout = std::chrono::seconds(5);
    o.send_timeout = std::chrono::seconds(5);
    o.lock_wait = std::chrono::milliseconds(200);
    o.manual_ack = manual_ack;
    return o;
  }
  sotto::Server server_address() const { return {"in-process", 1, server_->pin(), {}}; }

  Engine& keep(std::unique_ptr<Engine> e) {
    engines_.push_back(std::move(e));
    return *engines_.back();
  }
  Engine& register_(const std::string& name, bool manual_ack = false) {
    auto e = Engine::register_account(options(name, manual_ack), name, server_address(), {}, env());
    EXPECT_TRUE(e) << (e ? "" : e.error().message);
    return keep(std::move(*e));
  }
  Engine& link(Engine& existing, const std::string& dir, bool manual_ack = false) {
    std::promise<std::string> code;
    auto shown = code.get_future();
    auto linking = std::async(std::launch::async, [&] {
      return Engine::link(
          options(dir, manual_ack), server_address(),
          [&](const LinkPrompt& p) { code.set_value(p.code); }, std::chrono::seconds(20), {},
          env());
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
    auto r = e.receive(std::chrono::seconds(10), [&](const Event& ev) { out.push_back(ev); });
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
  std::uint64_t send(Engine& from, const std::string& to, const std::string& body,
                     const SendOptions& o = {}) {
    clock_->advance_ms(1000);
    auto r = from.conversations().send(to, body, o);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? r->timestamp : 0;
  }
  static Message find(Engine& e, const std::string& peer, const std::string& author,
                      std::uint64_t ts) {
    auto h = e.history(peer, 0);
    EXPECT_TRUE(h);
    for (const auto& m : *h) {
      if (m.from == author && m.timestamp == ts) return m;
    }
    ADD_FAILURE() << "no message " << author << ":" << ts << " on " << e.username() << "/"
                  << e.device_id();
    return {};
  }
  // Whether anything in `e`'s store still holds `text`: the history, the journal, the sent log
  // (opened, not just scanned: every value is sealed), and the raw file.
  static bool store_holds(Engine& e, const std::string& peer, std::uint64_t ts,
                          const std::string& text) {
    auto& store = *e.account().store;
    bool found = false;
    (void)store.for_each_message([&](const store::StoredMessage& m) {
      found = found || m.body.find(text) != std::string::npos;
      return true;
    });
    if (auto events = store.events(0, 0)) {
      for (const auto& entry : *events) {
        auto ev = decode_event(entry.record.view());
        found = found || (ev && ev->message.body.find(text) != std::string::npos);
      }
    }
    for (const auto& who : {peer, e.username()}) {
      if (auto sent = store.load_sent(who, ts); sent && sent->has_value()) {
        const auto v = (*sent)->content.view();
        found = found || std::string(v.begin(), v.end()).find(text) != std::string::npos;
      }
    }
    const fs::path file = e.account().options.data_dir / (e.username() + ".db");
    std::ifstream in(file, std::ios::binary);
    const std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return found || raw.find(text) != std::string::npos;
  }
  // Waits (generously) for the expiry thread; the condition, not the time, decides.
  static bool eventually(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
  }

  fs::path root_;
  std::shared_ptr<ManualWallClock> clock_;
  std::unique_ptr<InProcessServer> server_;
  std::deque<crypto::DeterministicRng> rngs_;
  std::vector<std::unique_ptr<Engine>> engines_;
};

TEST_F(ClientMessagesTest, RepliesReactionsEditsAndDeletesReachEveryDeviceOfBothUsers) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& alice2 = link(alice, "alice2");
  Engine& bob2 = link(bob, "bob2");
  const auto hello = send(alice, "bob", "hello bob");
  receive(bob);
  receive(bob2);
  receive(alice2);

  // A reply, with a mention.
  SendOptions reply;
  reply.quote = MessageRef{"alice", hello};
  reply.mentions = {Mention{"alice", 0, 5}};
  const auto answer = send(bob, "alice", "alice: hi", reply);
  auto got = receive(alice);
  auto messages = of_kind(got, Event::Kind::message);
  ASSERT_EQ(messages.size(), 1u);
  ASSERT_TRUE(messages[0].message.quote);
  EXPECT_EQ(messages[0].message.quote->timestamp, hello);
  EXPECT_EQ(messages[0].message.quote_text, "hello bob");
  ASSERT_EQ(messages[0].message.mentions.size(), 1u);
  EXPECT_EQ(messages[0].message.mentions[0].user, "alice");
  receive(alice2);
  receive(bob2);
  for (Engine* e : {&alice, &alice2, &bob, &bob2}) {
    const Message m = find(*e, e == &alice || e == &alice2 ? "bob" : "alice", "bob", answer);
    ASSERT_TRUE(m.quote) << e->username();
    EXPECT_EQ(m.quote->author, "alice");
    EXPECT_EQ(m.mentions.size(), 1u);
  }

  // Reactions: one per user, replaced, then removed.
  clock_->advance_ms(1000);
  ASSERT_TRUE(bob.conversations().react("alice", {"alice", hello}, "👍", false));
  clock_->advance_ms(1000);
  ASSERT_TRUE(bob.conversations().react("alice", {"alice", hello}, "🎉", false));
  got = receive(alice);
  EXPECT_EQ(of_kind(got, Event::Kind::reaction).size(), 2u);
  receive(alice2);
  receive(bob2);
  for (Engine* e : {&alice, &alice2, &bob, &bob2}) {
    const std::string peer = e == &alice || e == &alice2 ? "bob" : "alice";
    const Message m = find(*e, peer, "alice", hello);
    ASSERT_EQ(m.reactions.size(), 1u) << e->username() << "/" << e->device_id();
    EXPECT_EQ(m.reactions[0].user, "bob");
    EXPECT_EQ(m.reactions[0].emoji, "🎉");
  }
  clock_->advance_ms(1000);
  ASSERT_TRUE(bob.conversations().react("alice", {"alice", hello}, "", true));
  receive(alice);
  receive(bob2);
  EXPECT_TRUE(find(alice, "bob", "alice", hello).reactions.empty());
  EXPECT_TRUE(find(bob2, "alice", "alice", hello).reactions.empty());

  // An edit: the newest text, marked; the old text is gone.
  clock_->advance_ms(1000);
  ASSERT_TRUE(alice.conversations().edit("bob", hello, "hi there, edited"));
  got = receive(bob);
  auto edits = of_kind(got, Event::Kind::edit);
  ASSERT_EQ(edits.size(), 1u);
  EXPECT_EQ(edits[0].message.body, "hi there, edited");
  receive(bob2);
  receive(alice2);
  for (Engine* e : {&alice, &alice2, &bob, &bob2}) {
    const std::string peer = e == &alice || e == &alice2 ? "bob" : "alice";
    const Message m = find(*e, peer, "alice", hello);
    EXPECT_EQ(m.body, "hi there, edited") << e->username() << "/" << e->device_id();
    EXPECT_TRUE(m.edited);
    EXPECT_FALSE(store_holds(*e, peer, hello, "hello bob")) << e->username();
  }
  // Only the author edits or deletes.
  auto foreign = bob.conversations().edit("alice", hello, "not mine");
  ASSERT_FALSE(foreign);
  EXPECT_EQ(foreign.error().code, ErrorCode::not_found);

  // A delete for everyone: the text goes from every device.
  clock_->advance_ms(1000);
  ASSERT_TRUE(alice.conversations().remote_delete("bob", hello));
  got = receive(bob);
  EXPECT_EQ(of_kind(got, Event::Kind::remote_delete).size(), 1u);
  receive(bob2);
  receive(alice2);
  for (Engine* e : {&alice, &alice2, &bob, &bob2}) {
    const std::string peer = e == &alice || e == &alice2 ? "bob" : "alice";
    const Message m = find(*e, peer, "alice", hello);
    EXPECT_TRUE(m.deleted) << e->username() << "/" << e->device_id();
    EXPECT_TRUE(m.body.empty());
    EXPECT_FALSE(store_holds(*e, peer, hello, "hi there, edited"));
  }
  // A deleted message cannot be edited.
  clock_->advance_ms(1000);
  EXPECT_FALSE(alice.conversations().edit("bob", hello, "again"));
}

TEST_F(ClientMessagesTest, ReceiptsSayDeliveredAndReadUnlessReadReceiptsAreOff) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& bob2 = link(bob, "bob2");
  const auto first = send(alice, "bob", "one");
  receive(bob);  // sends a delivery receipt by itself
  auto got = receive(alice);
  auto receipts = of_kind(got, Event::Kind::receipt);
  ASSERT_EQ(receipts.size(), 1u);
  EXPECT_FALSE(receipts[0].read);
  EXPECT_EQ(receipts[0].user, "bob");
  ASSERT_EQ(receipts[0].targets.size(), 1u);
  EXPECT_EQ(receipts[0].targets[0].timestamp, first);
  Message m = find(alice, "bob", "alice", first);
  ASSERT_EQ(m.receipts.size(), 1u);
  EXPECT_NE(m.receipts[0].delivered_at, 0u);
  EXPECT_EQ(m.receipts[0].read_at, 0u);

  // Bob reads: Alice hears of it, Bob's other device knows it was read.
  auto read = bob.conversations().mark_read("alice", {});
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, 1u);
  EXPECT_EQ(*bob.conversations().mark_read("alice", {}), 0u);  // once
  got = receive(alice);
  receipts = of_kind(got, Event::Kind::receipt);
  ASSERT_EQ(receipts.size(), 1u);
  EXPECT_TRUE(receipts[0].read);
  EXPECT_NE(find(alice, "bob", "alice", first).receipts.at(0).read_at, 0u);
  receive(bob2);
  EXPECT_NE(find(bob2, "alice", "alice", first).read_at, 0u);

  // Bob turns read receipts off: he sends none (delivery receipts still go).
  ASSERT_TRUE(bob.conversations().set_read_receipts(false));
  const auto second = send(alice, "bob", "two");
  receive(bob);
  ASSERT_TRUE(bob.conversations().mark_read("alice", {second}));
  got = receive(alice);
  receipts = of_kind(got, Event::Kind::receipt);
  ASSERT_FALSE(receipts.empty());  // delivery receipts (Bob's second device's for "one" too)
  for (const auto& r : receipts) EXPECT_FALSE(r.read);
  EXPECT_NE(find(alice, "bob", "alice", second).receipts.at(0).delivered_at, 0u);
  EXPECT_EQ(find(alice, "bob", "alice", second).receipts.at(0).read_at, 0u);

  // The setting is the account's: Bob's other device follows.
  receive(bob2);
  EXPECT_FALSE(*bob2.conversations().read_receipts());

  // Alice turns them off: Bob's read receipts are not shown to her.
  ASSERT_TRUE(bob.conversations().set_read_receipts(true));
  receive(bob2);
  EXPECT_TRUE(*bob2.conversations().read_receipts());
  ASSERT_TRUE(alice.conversations().set_read_receipts(false));
  const auto third = send(alice, "bob", "three");
  receive(bob);
  ASSERT_TRUE(bob.conversations().mark_read("alice", {third}));
  got = receive(alice);
  for (const auto& r : of_kind(got, Event::Kind::receipt)) EXPECT_FALSE(r.read);
  EXPECT_EQ(find(alice, "bob", "alice", third).receipts.at(0).read_at, 0u);
}

TEST_F(ClientMessagesTest, TypingIsToldToThePeerOnly) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(alice, "bob", "hi");
  receive(bob);
  receive(alice);
  ASSERT_TRUE(alice.conversations().send_typing("bob", true));
  ASSERT_TRUE(alice.conversations().send_typing("bob", false));
  auto typing = of_kind(receive(bob), Event::Kind::typing);
  ASSERT_EQ(typing.size(), 2u);
  EXPECT_EQ(typing[0].user, "alice");
  EXPECT_TRUE(typing[0].typing);
  EXPECT_FALSE(typing[1].typing);
  // Nothing of it is kept.
  EXPECT_EQ(bob.history("alice", 0)->size(), 1u);
}

TEST_F(ClientMessagesTest, DisappearingMessagesGoFromEveryStoreWhenTheirTimeRunsOut) {
  Engine& alice = register_("alice", /*manual_ack=*/true);
  Engine& bob = register_("bob", /*manual_ack=*/true);
  Engine& alice2 = link(alice, "alice2", true);
  Engine& bob2 = link(bob, "bob2", true);
  send(alice, "bob", "before the timer");
  clock_->advance_ms(1000);
  ASSERT_TRUE(alice.conversations().set_timer("bob", 60));
  auto timer_events = of_kind(receive(bob), Event::Kind::disappearing_timer);
  ASSERT_EQ(timer_events.size(), 1u);
  EXPECT_EQ(timer_events[0].expire_timer, 60u);
  EXPECT_EQ(*bob.conversations().timer("alice"), 60u);
  receive(bob2);
  receive(alice2);
  EXPECT_EQ(*alice2.conversations().timer("bob"), 60u);
  EXPECT_EQ(*bob2.conversations().timer("alice"), 60u);

  const std::string secret = "the-disappearing-plaintext-4711";
  const auto ts = send(alice, "bob", secret);
  // Edited once, so an edit's copy must go too.
  clock_->advance_ms(1000);
  ASSERT_TRUE(alice.conversations().edit("bob", ts, secret + " (edited)"));
  receive(bob);
  receive(bob2);
  receive(alice2);
  for (Engine* e : {&alice, &alice2}) EXPECT_NE(find(*e, "bob", "alice", ts).expires_at, 0u);
  EXPECT_EQ(find(bob, "alice", "alice", ts).expires_at, 0u);  // unread: not counting down

  // The sender's devices: gone 60 s after sending.
  clock_->advance_ms(61'000);
  EXPECT_TRUE(eventually([&] { return !store_holds(alice, "bob", ts, secret); }));
  EXPECT_TRUE(eventually([&] { return !store_holds(alice2, "bob", ts, secret); }));
  // The recipient's: counting from reading, on both devices.
  EXPECT_TRUE(store_holds(bob, "alice", ts, secret));
  ASSERT_EQ(*bob.conversations().mark_read("alice", {}), 2u);
  receive(bob2);
  EXPECT_NE(find(bob2, "alice", "alice", ts).expires_at, 0u);
  clock_->advance_ms(61'000);
  EXPECT_TRUE(eventually([&] { return !store_holds(bob, "alice", ts, secret); }));
  EXPECT_TRUE(eventually([&] { return !store_holds(bob2, "alice", ts, secret); }));
  // The message from before the timer stays.
  EXPECT_EQ(bob.history("alice", 0)->size(), 1u);
  EXPECT_EQ(alice.history("bob", 0)->size(), 1u);
  // Turning the timer off is told the same way.
  ASSERT_TRUE(bob.conversations().set_timer("alice", 0));
  receive(alice);
  EXPECT_EQ(*alice.conversations().timer("bob"), 0u);
}

TEST_F(ClientMessagesTest, AMessageThatRanOutWhileClosedIsGoneOnOpen) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  ASSERT_TRUE(alice.conversations().set_timer("bob", 5));
  const auto ts = send(alice, "bob", "short-lived-text");
  receive(bob);
  engines_.erase(engines_.begin());  // alice closes
  clock_->advance_ms(10'000);
  auto reopened = Engine::open(options("alice"), {}, env());
  ASSERT_TRUE(reopened);
  EXPECT_FALSE(store_holds(**reopened, "bob", ts, "short-lived-text"));
  auto read = Engine::read_history(options("bob"), "bob", "alice", 0);
  ASSERT_TRUE(read);  // Bob has not read it: still there
}

// A new device that brings the history along gets no disappearing message: a history record
// carries no timer, so it would keep them for good.
TEST_F(ClientMessagesTest, AHistoryTransferLeavesDisappearingMessagesBehind) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(alice, "bob", "kept");
  clock_->advance_ms(1000);
  ASSERT_TRUE(alice.conversations().set_timer("bob", 3600));
  send(alice, "bob", "disappearing");
  std::promise<std::string> code;
  auto shown = code.get_future();
  LinkOptions with_history;
  with_history.transfer_history = true;
  auto linking = std::async(std::launch::async, [&] {
    return Engine::link(
        options("alice2"), server_address(), [&](const LinkPrompt& p) { code.set_value(p.code); },
        std::chrono::seconds(20), with_history, env());
  });
  ASSERT_TRUE(alice.add_device(shown.get(), nullptr));
  auto linked = linking.get();
  ASSERT_TRUE(linked) << linked.error().message;
  auto history = (*linked)->history("bob", 0);
  ASSERT_TRUE(history);
  std::vector<std::string> bodies;
  for (const auto& m : *history) bodies.push_back(m.body);
  EXPECT_EQ(bodies, std::vector<std::string>{"kept"});
  (void)bob;
}

// Edits and deletes are checked where they are received: the author's own messages only, and
// within the window (a late edit is refused however it got there).
TEST_F(ClientMessagesTest, LateOrForeignEditsAndDeletesAreRefusedOnReceipt) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const auto ts = send(alice, "bob", "original");
  receive(bob);
  const auto apply = [&](const std::string& author, std::uint64_t at, bool edit) {
    ReceivedContent c;
    c.kind = ReceivedContent::Kind::message;
    c.timestamp = at;
    if (edit) {
      c.body = "changed";
      c.extras.edit_target = ts;
    } else {
      c.extras.delete_target = ts;
    }
    Message base;
    base.from = author;
    base.conversation = "alice";
    base.server_timestamp = at;
    Conversations::Receipts receipts;
    std::lock_guard lock(bob.account().crypto_mu);
    auto ok = bob.account().store->transaction([&] {
      return bob.conversations().receive(
          c, base, [](Message) { return true; }, receipts);
    });
    EXPECT_TRUE(ok && *ok);
  };
  const std::uint64_t day = 24ull * 3600 * 1000;
  apply("alice", ts + day + 1, true);
  apply("alice", ts + day + 1, false);
  apply("bob", ts + 1000, true);  // not the author: names no message of bob's
  apply("mallory", ts + 1000, false);
  Message m = find(bob, "alice", "alice", ts);
  EXPECT_EQ(m.body, "original");
  EXPECT_FALSE(m.edited);
  EXPECT_FALSE(m.deleted);
  // Within the window it applies.
  apply("alice", ts + day - 1, true);
  m = find(bob, "alice", "alice", ts);
  EXPECT_EQ(m.body, "changed");
  EXPECT_TRUE(m.edited);
}

TEST_F(ClientMessagesTest, MessageIdsResolveOnEveryDevice) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  Engine& bob2 = link(bob, "bob2");
  const auto ts = send(alice, "bob", "find me");
  receive(bob);
  receive(bob2);
  for (Engine* e : {&bob, &bob2}) {
    const Message m = find(*e, "alice", "alice", ts);
    auto by_id = e->conversations().find(m.id);
    ASSERT_TRUE(by_id) << by_id.error().message;
    EXPECT_EQ(by_id->timestamp, ts);
    auto by_ref = e->conversations().find(m.ref());
    ASSERT_TRUE(by_ref);
    EXPECT_EQ(by_ref->id, m.id);
  }
  auto local = alice.conversations().find(find(alice, "bob", "alice", ts).id);
  ASSERT_TRUE(local);
  EXPECT_EQ(local->conversation, "bob");
  EXPECT_EQ(bob.conversations().find("nothing").error().code, ErrorCode::not_found);
  EXPECT_EQ(bob.conversations().find("alice:x").error().code, ErrorCode::invalid_argument);
}

TEST_F(ClientMessagesTest, ArgumentsThatCannotBeSentAreRefusedAndNothingIsSent) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const auto ts = send(alice, "bob", "x");
  receive(bob);
  EXPECT_EQ(bob.conversations().react("alice", {"alice", ts}, "", false).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(
      bob.conversations().react("alice", {"alice", ts}, std::string("\xff"), false).error().code,
      ErrorCode::invalid_argument);
  EXPECT_EQ(bob.conversations().react("alice", {"alice", ts + 1}, "👍", false).error().code,
            ErrorCode::not_found);
  SendOptions bad;
  bad.mentions = {Mention{"alice", 0, 10}};
  EXPECT_EQ(bob.conversations().send("alice", "short", bad).error().code,
            ErrorCode::invalid_argument);
  SendOptions missing;
  missing.quote = MessageRef{"alice", ts + 5};
  EXPECT_EQ(bob.conversations().send("alice", "reply", missing).error().code, ErrorCode::not_found);
  EXPECT_EQ(bob.conversations().set_timer("alice", kMaxExpireTimer + 1).error().code,
            ErrorCode::invalid_argument);
  clock_->advance_ms(25ull * 3600 * 1000);
  EXPECT_EQ(alice.conversations().edit("bob", ts, "late").error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(alice.conversations().remote_delete("bob", ts).error().code,
            ErrorCode::invalid_argument);
  auto events = receive(alice);
  EXPECT_TRUE(of_kind(events, Event::Kind::reaction).empty());
  EXPECT_TRUE(of_kind(events, Event::Kind::message).empty());
}

// --- content from peers that is not well formed ------------------------------------------------

std::string serialized(const content::Content& c) {
  return c.SerializeAsString();
}

ReceivedContent read(const content::Content& c, bool own = false) {
  const std::string bytes = serialized(c);
  return read_content(as_bytes(bytes), own);
}

// Key transparency: what another device of the account says of a device it linked or removed
// (content.proto OwnDeviceChange), from our own account only, and only well formed.
TEST(MessageContentTest, ADeviceChangeIsReadOnlyWellFormedAndFromOurOwnAccount) {
  content::Content c;
  auto* d = c.mutable_sync()->mutable_device_change();
  d->set_device_id(3);
  d->set_registration_id(77);
  d->set_auth_key(std::string(32, '\x42'));
  auto r = read(c, true);
  ASSERT_EQ(r.kind, ReceivedContent::Kind::device_change);
  EXPECT_EQ(r.device_change.device_id, 3u);
  EXPECT_EQ(r.device_change.registration_id, 77u);
  ASSERT_TRUE(r.device_change.auth_key);
  EXPECT_EQ((*r.device_change.auth_key)[0], 0x42);
  EXPECT_FALSE(r.device_change.link_started);
  EXPECT_EQ(read(c, false).kind, ReceivedContent::Kind::unreadable);  // another account's

  content::Content started;
  started.mutable_sync()->mutable_device_change()->set_link_started(true);
  r = read(started, true);
  ASSERT_EQ(r.kind, ReceivedContent::Kind::device_change);
  EXPECT_TRUE(r.device_change.link_started);
  EXPECT_EQ(r.device_change.device_id, 0u);

  const auto malformed = [&](auto change) {
    content::Content m;
    change(*m.mutable_sync()->mutable_device_change());
    return read(m, true).kind == ReceivedContent::Kind::unreadable;
  };
  using Change = content::OwnDeviceChange;
  EXPECT_TRUE(malformed([](Change& x) {
    x.set_device_id(3);
    x.set_auth_key("short");
  }));
  EXPECT_TRUE(malformed([](Change&) {}));                          // says nothing
  EXPECT_TRUE(malformed([](Change& x) { x.set_removed(true); }));  // removes no device
  EXPECT_TRUE(malformed([](Change& x) {
    x.set_link_started(true);
    x.set_registration_id(5);
  }));
  EXPECT_TRUE(malformed([](Change& x) {
    x.set_device_id(3);
    x.set_link_started(true);
    x.set_removed(true);
  }));
}

TEST(MessageContentTest, WellFormedExtrasAreRead) {
  content::Content c;
  auto* d = c.mutable_data();
  d->set_body("hi @bob");
  d->set_timestamp(10);
  d->mutable_quote()->set_author("Bob");
  d->mutable_quote()->set_timestamp(5);
  d->mutable_quote()->set_text("earlier");
  auto* mention = d->add_mentions();
  mention->set_user("bob");
  mention->set_start(3);
  mention->set_length(4);
  d->set_expire_timer(30);
  auto r = read(c);
  ASSERT_EQ(r.kind, ReceivedContent::Kind::message);
  ASSERT_TRUE(r.extras.quote);
  EXPECT_EQ(r.extras.quote->author, "bob");
  EXPECT_EQ(r.extras.quote_text, "earlier");
  ASSERT_EQ(r.extras.mentions.size(), 1u);
  EXPECT_EQ(r.extras.expire_timer, 30u);

  content::Content e;
  e.mutable_edit()->set_target_timestamp(5);
  e.mutable_edit()->mutable_data()->set_body("new");
  e.mutable_edit()->mutable_data()->set_timestamp(9);
  r = read(e);
  ASSERT_EQ(r.kind, ReceivedContent::Kind::message);
  EXPECT_EQ(r.extras.edit_target, 5u);
  EXPECT_EQ(r.body, "new");

  content::Content receipt;
  receipt.mutable_receipt()->set_type(content::ReceiptMessage::READ);
  receipt.mutable_receipt()->add_timestamps(7);
  r = read(receipt);
  ASSERT_EQ(r.kind, ReceivedContent::Kind::receipt);
  EXPECT_TRUE(r.read);
  EXPECT_EQ(r.timestamps, std::vector<std::uint64_t>{7});

  content::Content sync;
  auto* rd = sync.mutable_sync()->add_read();
  rd->set_author("Alice");
  rd->set_timestamp(3);
  r = read(sync, true);
  ASSERT_EQ(r.kind, ReceivedContent::Kind::read_sync);
  EXPECT_EQ(r.reads.at(0).author, "alice");
  EXPECT_EQ(read(sync, false).kind, ReceivedContent::Kind::unreadable);
}

TEST(MessageContentTest, MalformedExtrasAreUnreadableWithAReason) {
  const auto base = [] {
    content::Content c;
    c.mutable_data()->set_timestamp(10);
    return c;
  };
  std::vector<content::Content> bad;
  {
    auto c = base();  // a reaction to a user that cannot exist
    c.mutable_data()->mutable_reaction()->set_emoji("👍");
    c.mutable_data()->mutable_reaction()->set_target_author("-x");
    c.mutable_data()->mutable_reaction()->set_target_timestamp(3);
    bad.push_back(c);
  }
  {
    auto c = base();  // a reaction that is not one emoji
    c.mutable_data()->mutable_reaction()->set_emoji(std::string(65, 'a'));
    c.mutable_data()->mutable_reaction()->set_target_author("bob");
    c.mutable_data()->mutable_reaction()->set_target_timestamp(3);
    bad.push_back(c);
  }
  {
    auto c = base();  // a mention past the body
    c.mutable_data()->set_body("hi");
    auto* m = c.mutable_data()->add_mentions();
    m->set_user("bob");
    m->set_start(1);
    m->set_length(5);
    bad.push_back(c);
  }
  {
    auto c = base();  // a reaction that also has text
    c.mutable_data()->set_body("text");
    c.mutable_data()->mutable_reaction()->set_emoji("👍");
    c.mutable_data()->mutable_reaction()->set_target_author("bob");
    c.mutable_data()->mutable_reaction()->set_target_timestamp(3);
    bad.push_back(c);
  }
  {
    auto c = base();  // a reaction and a delete at once
    c.mutable_data()->mutable_reaction()->set_remove(true);
    c.mutable_data()->mutable_reaction()->set_target_author("bob");
    c.mutable_data()->mutable_reaction()->set_target_timestamp(3);
    c.mutable_data()->mutable_delete_()->set_target_timestamp(3);
    bad.push_back(c);
  }
  {
    auto c = base();  // a timer beyond a year
    c.mutable_data()->set_expire_timer(kMaxExpireTimer + 1);
    c.mutable_data()->set_expire_timer_update(true);
    bad.push_back(c);
  }
  {
    content::Content c;  // an edit of a later message
    c.mutable_edit()->set_target_timestamp(20);
    c.mutable_edit()->mutable_data()->set_body("x");
    c.mutable_edit()->mutable_data()->set_timestamp(10);
    bad.push_back(c);
  }
  {
    content::Content c;  // an edit without text
    c.mutable_edit()->set_target_timestamp(2);
    c.mutable_edit()->mutable_data()->set_timestamp(10);
    bad.push_back(c);
  }
  {
    content::Content c;  // a receipt naming too many messages
    for (int i = 0; i <= kMaxReceiptTimestamps; ++i) c.mutable_receipt()->add_timestamps(i + 1);
    bad.push_back(c);
  }
  {
    auto c = base();  // a quote of nobody
    c.mutable_data()->set_body("re");
    c.mutable_data()->mutable_quote()->set_timestamp(3);
    bad.push_back(c);
  }
  for (std::size_t i = 0; i < bad.size(); ++i) {
    auto r = read(bad[i]);
    EXPECT_EQ(r.kind, ReceivedContent::Kind::unreadable) << "case " << i;
    EXPECT_FALSE(r.why.empty()) << "case " << i;
    EXPECT_TRUE(r.body.empty()) << "case " << i;
  }
}

}  // namespace
}  // namespace sotto::client
