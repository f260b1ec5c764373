// The client engine's flows against the real server's request handlers and a real SQLite store,
// in one process (tests/util/in_process_server.h): every client has its own data directory, a
// deterministic random generator, and the clock the server uses. Each flow of issue 15 is here:
// identity changes (held messages, trust with digits), session repair, copies of a data
// directory, recovery, backups, devices, history transfer, the journal and the server's pin.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "client/engine.h"
#include "content.pb.h"
#include "keys.pb.h"
#include "net/server_key.h"
#include "protocol/session.h"
#include "util/in_process_server.h"

namespace sotto::client {
namespace {

namespace fs = std::filesystem;
using testing::InProcessServer;
namespace content = sotto::wire::content;

constexpr std::uint64_t kStartMs = 1'800'000'000'000;

class ClientFlowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sotto-client-flow-XXXXXX";
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
    e.rng = &rngs_.emplace_back(1000 + rngs_.size());
    e.clock = clock_;
    return e;
  }
  Options options(const std::string& dir, std::optional<std::string> policy = std::nullopt) {
    Options o;
    o.data_dir = root_ / dir;
    o.request_timeout = std::chrono::seconds(5);
    o.send_timeout = std::chrono::seconds(5);
    o.lock_wait = std::chrono::milliseconds(200);
    o.trust_policy = std::move(policy);
    return o;
  }
  sotto::Server server_address() const { return {"in-process", 1, server_->pin(), {}}; }

  Engine& keep(std::unique_ptr<Engine> e) {
    engines_.push_back(std::move(e));
    return *engines_.back();
  }
  Engine& register_(const std::string& name, std::optional<std::string> policy = std::nullopt) {
    auto e = Engine::register_account(options(name, policy), name, server_address(), {}, env());
    EXPECT_TRUE(e) << (e ? "" : e.error().message);
    return keep(std::move(*e));
  }
  Engine& open(const std::string& dir, std::optional<std::string> policy = std::nullopt) {
    auto e = Engine::open(options(dir, policy), {}, env());
    EXPECT_TRUE(e) << (e ? "" : e.error().message);
    return keep(std::move(*e));
  }
  void close(Engine& e) {
    std::erase_if(engines_, [&](const auto& p) { return p.get() == &e; });
  }

  // Like a `sotto receive` process: a fresh connection, so the server pushes the device's stored
  // queue and says when it is done (a connection kept open would get pushes at any time).
  std::vector<Event> receive(Engine& e) {
    server_->drop_connections();
    std::vector<Event> out;
    auto r = e.receive(std::chrono::seconds(10), [&](const Event& ev) { out.push_back(ev); });
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return out;
  }
  static std::vector<std::string> bodies(const std::vector<Event>& events) {
    std::vector<std::string> out;
    for (const auto& e : events) {
      if (e.kind == Event::Kind::message) out.push_back(e.message.body);
    }
    return out;
  }
  static std::vector<Event> of_kind(const std::vector<Event>& events, Event::Kind kind) {
    std::vector<Event> out;
    for (const auto& e : events) {
      if (e.kind == kind) out.push_back(e);
    }
    return out;
  }
  // Time passes between messages, as it does between a user's messages.
  void send(Engine& from, const std::string& to, const std::string& body) {
    clock_->advance_ms(1000);
    auto r = from.send(to, body);
    ASSERT_TRUE(r) << r.error().message;
  }

  // Bob takes his account back on a new data directory: a new identity key.
  Engine& recover(const std::string& name, const std::string& code, const std::string& dir) {
    auto e = Engine::recover(options(dir), name, code, server_address(), env());
    EXPECT_TRUE(e) << (e ? "" : e.error().message);
    return keep(std::move(*e));
  }

  // Links a new device (data directory `dir`) to `existing`'s account.
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

  fs::path root_;
  std::shared_ptr<ManualWallClock> clock_;
  std::unique_ptr<InProcessServer> server_;
  std::deque<crypto::DeterministicRng> rngs_;
  std::vector<std::unique_ptr<Engine>> engines_;
};

TEST_F(ClientFlowTest, AMessageArrivesOnceAndIsAcknowledged) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(alice, "bob", "hello bob");
  auto events = receive(bob);
  EXPECT_EQ(bodies(events), std::vector<std::string>{"hello bob"});
  EXPECT_NE(events.at(0).cursor, 0u);
  EXPECT_TRUE(bodies(receive(bob)).empty());
  send(bob, "alice", "hi alice");
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"hi alice"});
  auto history = bob.history("alice", 0);
  ASSERT_TRUE(history);
  ASSERT_EQ(history->size(), 2u);
  EXPECT_EQ((*history)[0].body, "hello bob");
  EXPECT_TRUE((*history)[1].outgoing);
}

// The server may store a send twice under two envelope ids: it shows a recipient that is online
// a send before the send is durable, and a crash then makes the sender retry it. The same
// ciphertext under a new id is dropped like any re-delivery, not reported as a failure.
TEST_F(ClientFlowTest, TheSameCiphertextUnderAnotherEnvelopeIdIsShownOnceAndSilently) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(alice, "bob", "only once");
  auto bob_account = server_->store().accounts().find_account("bob");
  ASSERT_TRUE(bob_account);
  auto queued = server_->store().messages().load(bob_account->id, 1, 10);
  ASSERT_TRUE(queued);
  ASSERT_EQ(queued->size(), 1u);
  store::QueuedEnvelope again = (*queued)[0];
  again.id[15] ^= 0xff;
  std::promise<bool> stored;
  server_->store().messages().enqueue(
      {again}, std::nullopt,
      [&](tl::expected<void, store::Error> r) { stored.set_value(r.has_value()); });
  ASSERT_TRUE(stored.get_future().get());
  auto events = receive(bob);
  EXPECT_EQ(bodies(events), std::vector<std::string>{"only once"});
  EXPECT_TRUE(of_kind(events, Event::Kind::decrypt_failed).empty());
  EXPECT_TRUE(receive(bob).empty());
}

TEST_F(ClientFlowTest, TextThatIsNotUtf8IsRefusedAndNothingIsSent) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  auto r = alice.send("bob", std::string("caf\xe9", 4));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(r.error().message.find("UTF-8"), std::string::npos);
  EXPECT_TRUE(receive(bob).empty());
}

// Case 1 of the issue: a message from a contact's new key is kept, shown once accepted.
TEST_F(ClientFlowTest, AMessageFromANewKeyIsHeldUntilTheUserAcceptsTheKey) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const std::string code = bob.take_recovery_code();
  send(alice, "bob", "hi");
  receive(bob);
  send(bob, "alice", "before");
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"before"});
  auto before = alice.safety_number("bob");
  ASSERT_TRUE(before);

  close(bob);
  Engine& bob2 = recover("bob", code, "bob-new");
  send(bob2, "alice", "from my new key");
  auto events = receive(alice);
  EXPECT_TRUE(bodies(events).empty());
  auto changed = of_kind(events, Event::Kind::identity_changed);
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_EQ(changed[0].user, "bob");
  EXPECT_FALSE(changed[0].accepted);
  EXPECT_EQ(changed[0].held, 1u);
  EXPECT_EQ(changed[0].changed_at, clock_->now_ms());

  // The number shown is the one with bob's new key, and says it changed.
  auto now = alice.safety_number("bob");
  ASSERT_TRUE(now);
  EXPECT_NE(now->digits, before->digits);
  EXPECT_EQ(now->digits, bob2.safety_number("alice")->digits);
  EXPECT_EQ(now->changed_at, changed[0].changed_at);
  EXPECT_FALSE(now->accepted);
  EXPECT_EQ(now->held, 1u);
  auto contacts = alice.contacts();
  ASSERT_TRUE(contacts);
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_FALSE((*contacts)[0].verified);
  EXPECT_EQ((*contacts)[0].held, 1u);

  // Wrong digits change nothing; the right ones verify and release the held message.
  std::string wrong = now->digits;
  wrong[0] = wrong[0] == '1' ? '2' : '1';
  auto refused = alice.trust("bob", wrong);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::safety_number_mismatch);
  EXPECT_FALSE(alice.safety_number("bob")->accepted);
  std::string spaced;
  for (std::size_t i = 0; i < now->digits.size(); ++i) {
    spaced += now->digits[i];
    if (i % 5 == 4) spaced += ' ';
  }
  auto trusted = alice.trust("bob", spaced);
  ASSERT_TRUE(trusted) << trusted.error().message;
  EXPECT_TRUE(trusted->verified);
  auto released = receive(alice);
  EXPECT_EQ(bodies(released), std::vector<std::string>{"from my new key"});

  // And the conversation goes on both ways with the new key.
  send(alice, "bob", "welcome back");
  // (What bob's old device had received stayed there; the new one starts afresh.)
  EXPECT_EQ(bodies(receive(bob2)), std::vector<std::string>{"welcome back"});
}

// Case 2: messages sent from the old key stay readable, and a refused send discards nothing.
TEST_F(ClientFlowTest, MessagesFromTheOldKeyStayReadableAfterTheKeyChanged) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const std::string code = bob.take_recovery_code();
  send(alice, "bob", "hi");
  receive(bob);
  send(bob, "alice", "old 1");
  receive(alice);
  send(bob, "alice", "old 2, while alice is away");
  close(bob);
  Engine& bob2 = recover("bob", code, "bob-new");
  send(bob2, "alice", "new");

  // Alice tries to write first: refused, and the session that reads "old 2" is kept.
  auto r = alice.send("bob", "are you there?");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::untrusted_identity);
  EXPECT_EQ(r.error().message.find("sotto"), std::string::npos);  // no CLI hint in the library
  auto events = receive(alice);
  EXPECT_EQ(bodies(events), std::vector<std::string>{"old 2, while alice is away"});
  ASSERT_TRUE(alice.trust("bob", std::nullopt));
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"new"});
  auto accepted = alice.safety_number("bob");
  EXPECT_TRUE(accepted->accepted);
  EXPECT_FALSE(accepted->verified);
  send(alice, "bob", "now it works");
  EXPECT_EQ(bodies(receive(bob2)), std::vector<std::string>{"now it works"});
}

TEST_F(ClientFlowTest, UnderTheAlwaysPolicyANewKeyIsAcceptedAndItsMessageShownAtOnce) {
  Engine& alice = register_("alice", std::string(kTrustAlways));
  Engine& bob = register_("bob");
  const std::string code = bob.take_recovery_code();
  send(bob, "alice", "first");
  receive(alice);
  close(bob);
  Engine& bob2 = recover("bob", code, "bob-new");
  send(bob2, "alice", "second");
  auto events = receive(alice);
  EXPECT_EQ(bodies(events), std::vector<std::string>{"second"});
  auto changed = of_kind(events, Event::Kind::identity_changed);
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_TRUE(changed[0].accepted);
  // The change is told before the message that came with it.
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[events.size() - 2].kind, Event::Kind::identity_changed);
  EXPECT_EQ(events.back().message.body, "second");
  ASSERT_TRUE(alice.send("bob", "reply"));
}

// stop() right after start() used to deadlock: the thread needed the lock stop() held.
TEST_F(ClientFlowTest, TheListenerCanBeStoppedAtOnce) {
  Engine& alice = register_("alice");
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(alice.start([](const Event&) {}));
    alice.stop();
  }
}

// The listener backing off through an outage must not make a send give up before its own
// timeout: a send keeps trying until then, whatever the listener's schedule has grown to.
TEST_F(ClientFlowTest, ASendDuringAnOutageWaitsForTheServerUntilItsOwnTimeout) {
  close(register_("alice"));
  register_("bob");
  Options patient = options("alice");
  patient.send_timeout = std::chrono::seconds(4);
  auto alice = Engine::open(patient, {}, env());
  ASSERT_TRUE(alice);
  server_->set_reachable(false);
  server_->drop_connections();
  std::atomic<int> retries{0};
  ASSERT_TRUE((*alice)->start([&](const Event& e) {
    if (e.kind == Event::Kind::disconnected) ++retries;
  }));
  // Six failed attempts (about 4 s): the listener now waits 8 s or more between attempts.
  while (retries < 6) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto sending = std::async(std::launch::async, [&] { return (*alice)->send("bob", "patience"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  server_->set_reachable(true);
  auto sent = sending.get();
  EXPECT_TRUE(sent) << (sent ? "" : sent.error().message);
  (*alice)->stop();
}

TEST_F(ClientFlowTest, TheListenerHandsOverWhatArrivesLive) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> got;
  ASSERT_TRUE(bob.start([&](const Event& e) {
    if (e.kind != Event::Kind::message) return;
    std::lock_guard lock(mu);
    got.push_back(e.message.body);
    cv.notify_all();
  }));
  send(alice, "bob", "live 1");
  send(alice, "bob", "live 2");
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return got.size() == 2; }));
  }
  bob.stop();
  EXPECT_EQ(got, (std::vector<std::string>{"live 1", "live 2"}));
}

TEST_F(ClientFlowTest, UnderTheNeverPolicyOnlyMatchingDigitsAcceptAKey) {
  Engine& alice = register_("alice", std::string(kTrustNever));
  register_("bob");
  auto r = alice.send("bob", "hi");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::untrusted_identity);
  auto number = alice.safety_number("bob");
  ASSERT_TRUE(number);
  EXPECT_FALSE(number->accepted);
  EXPECT_EQ(alice.trust("bob", std::nullopt).error().code, ErrorCode::invalid_argument);
  ASSERT_TRUE(alice.trust("bob", number->digits));
  ASSERT_TRUE(alice.send("bob", "hi"));
}

// Under "never" a new contact's first message is held, and the user hears why.
TEST_F(ClientFlowTest, UnderTheNeverPolicyAFirstMessageIsHeldAndTold) {
  Engine& alice = register_("alice", std::string(kTrustNever));
  Engine& bob = register_("bob");
  send(bob, "alice", "hi, it's bob");
  auto events = receive(alice);
  EXPECT_TRUE(bodies(events).empty());
  auto told = of_kind(events, Event::Kind::identity_changed);
  ASSERT_EQ(told.size(), 1u);
  EXPECT_FALSE(told[0].accepted);
  EXPECT_EQ(told[0].changed_at, 0u);  // not a change: the first key
  EXPECT_EQ(told[0].held, 1u);
  ASSERT_TRUE(alice.trust("bob", alice.safety_number("bob")->digits));
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"hi, it's bob"});
}

// Session repair: the recipient lost its session (a re-installed app, a damaged store).
TEST_F(ClientFlowTest, AMessageThatCannotBeDecryptedIsAskedForAgainAndShownOnce) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(alice, "bob", "one");
  receive(bob);
  send(bob, "alice", "two");
  receive(alice);
  receive(bob);  // Alice's delivery receipt, before the session breaks
  {
    std::lock_guard lock(bob.account().crypto_mu);
    ASSERT_TRUE(bob.account().store->delete_session({"alice", protocol::DeviceId(1)}));
  }
  send(alice, "bob", "three");
  auto failed = receive(bob);
  EXPECT_TRUE(bodies(failed).empty());
  auto notices = of_kind(failed, Event::Kind::decrypt_failed);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].detail.find("asked the sender to send it again"), std::string::npos);
  EXPECT_EQ(notices[0].message.from, "alice");

  receive(alice);  // answers the request: a new session, the same content
  EXPECT_EQ(bodies(receive(bob)), std::vector<std::string>{"three"});
  // The failure stays in the history, and the message is there once.
  auto history = bob.history("alice", 0);
  ASSERT_TRUE(history);
  int shown = 0;
  for (const auto& m : *history) shown += m.body == "three";
  EXPECT_EQ(shown, 1);
  send(bob, "alice", "and back");
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"and back"});
}

// Case 5: a data directory restored from a copy sends with ratchet keys it used before.
TEST_F(ClientFlowTest, ADataDirectoryRestoredFromACopyIsRepaired) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(alice, "bob", "hello");
  receive(bob);
  send(bob, "alice", "hello back");
  receive(alice);
  close(alice);
  fs::copy(root_ / "alice", root_ / "alice-copy", fs::copy_options::recursive);
  Engine& original = open("alice");
  send(original, "bob", "sent after the copy 1");
  send(original, "bob", "sent after the copy 2");
  EXPECT_EQ(bodies(receive(bob)),
            (std::vector<std::string>{"sent after the copy 1", "sent after the copy 2"}));
  close(original);

  Engine& restored = open("alice-copy");
  send(restored, "bob", "after the restore");
  auto failed = receive(bob);
  EXPECT_TRUE(bodies(failed).empty());
  ASSERT_EQ(of_kind(failed, Event::Kind::decrypt_failed).size(), 1u);
  receive(restored);
  EXPECT_EQ(bodies(receive(bob)), std::vector<std::string>{"after the restore"});
  send(bob, "alice", "all good?");
  EXPECT_EQ(bodies(receive(restored)), std::vector<std::string>{"all good?"});
}

TEST_F(ClientFlowTest, TwoCopiesOfADeviceCannotBeOnlineAtOnce) {
  Engine& alice = register_("alice");
  close(alice);
  fs::copy(root_ / "alice", root_ / "alice-copy", fs::copy_options::recursive);
  Engine& original = open("alice");
  ASSERT_TRUE(original.connect());
  Engine& copy = open("alice-copy");
  auto r = copy.connect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::device_in_use);
  EXPECT_NE(r.error().message.find("another copy"), std::string::npos);
  // The original is not disturbed.
  ASSERT_TRUE(original.send("alice", "note to self"));
}

TEST_F(ClientFlowTest, RecoveryNeedsTheCodeAndRemovesTheOldDevices) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const std::string code = bob.take_recovery_code();
  EXPECT_EQ(code.size(), 29u);
  EXPECT_TRUE(bob.take_recovery_code().empty());  // shown once
  send(alice, "bob", "hi");

  auto wrong = Engine::recover(options("thief"), "bob", "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA",
                               server_address(), env());
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::forbidden);
  EXPECT_FALSE(fs::exists(root_ / "thief" / "bob.db"));
  EXPECT_FALSE(fs::exists(root_ / "thief" / "bob.lock"));

  Engine& bob2 = recover("bob", code, "bob-new");
  EXPECT_EQ(bob2.device_id(), 1u);
  EXPECT_FALSE(bob2.take_recovery_code().empty());
  auto old = bob.connect();
  ASSERT_FALSE(old);
  EXPECT_EQ(old.error().code, ErrorCode::unauthenticated);
  // The old code no longer works.
  auto again = Engine::recover(options("again"), "bob", code, server_address(), env());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::forbidden);
}

TEST_F(ClientFlowTest, AFailedRegistrationLeavesNothingBehind) {
  register_("alice");
  auto taken = Engine::register_account(options("other"), "alice", server_address(), {}, env());
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, ErrorCode::account_exists);
  EXPECT_FALSE(fs::exists(root_ / "other" / "alice.db"));
  EXPECT_FALSE(fs::exists(root_ / "other" / "alice.lock"));
  EXPECT_FALSE(fs::exists(root_ / "other" / "alice.key"));
}

TEST_F(ClientFlowTest, ALinkedDeviceCannotRemoveThePrimaryAndEveryDeviceHearsOfChanges) {
  Engine& alice = register_("alice");
  receive(alice);  // remembers the device list as it is
  LinkOptions named;
  named.device_name = "Work laptop";
  Engine& laptop = link(alice, "alice-laptop", named);
  EXPECT_EQ(laptop.device_id(), 2u);

  auto devices = alice.devices();
  ASSERT_TRUE(devices);
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_TRUE((*devices)[0].primary);
  EXPECT_EQ((*devices)[1].name, "Work laptop");
  auto added = of_kind(receive(alice), Event::Kind::devices_changed);
  ASSERT_EQ(added.size(), 1u);
  EXPECT_EQ(added[0].added, std::vector<std::uint32_t>{2});

  auto r = laptop.remove_device(1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::forbidden);
  ASSERT_TRUE(alice.remove_device(2));
  auto removed = of_kind(receive(alice), Event::Kind::devices_changed);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].removed, std::vector<std::uint32_t>{2});
  EXPECT_EQ(laptop.connect().error().code, ErrorCode::unauthenticated);
}

TEST_F(ClientFlowTest, ANewDeviceCanBringTheHistoryAlong) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  for (int i = 0; i < 30; ++i) send(alice, "bob", "message " + std::to_string(i));
  receive(bob);
  send(bob, "alice", "thanks");
  receive(alice);
  ASSERT_TRUE(alice.trust("bob", alice.safety_number("bob")->digits));
  LinkOptions with_history;
  with_history.transfer_history = true;
  std::vector<std::uint64_t> progress;
  with_history.history_progress = [&](std::uint64_t done, std::uint64_t) {
    progress.push_back(done);
  };
  Engine& tablet = link(alice, "alice-tablet", with_history);
  auto history = tablet.history("bob", 0);
  ASSERT_TRUE(history);
  ASSERT_EQ(history->size(), 31u);
  EXPECT_EQ(history->front().body, "message 0");
  EXPECT_EQ(history->back().body, "thanks");
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), 31u);
  // The contacts come along, with what the user decided about their keys.
  auto contacts = tablet.contacts();
  ASSERT_TRUE(contacts);
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_EQ((*contacts)[0].username, "bob");
  EXPECT_TRUE((*contacts)[0].verified);
}

// Trusting a contact's new key on one device is told to the account's other devices, which
// release what they held too.
TEST_F(ClientFlowTest, TrustingAKeyOnOneDeviceTrustsItOnTheOthers) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const std::string code = bob.take_recovery_code();
  send(bob, "alice", "hello");
  receive(alice);
  Engine& laptop = link(alice, "alice-laptop");
  receive(alice);
  close(bob);
  Engine& bob2 = recover("bob", code, "bob-new");
  send(bob2, "alice", "new key, same bob");
  EXPECT_TRUE(bodies(receive(alice)).empty());
  EXPECT_TRUE(bodies(receive(laptop)).empty());
  ASSERT_TRUE(alice.trust("bob", alice.safety_number("bob")->digits));
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"new key, same bob"});
  EXPECT_EQ(bodies(receive(laptop)), std::vector<std::string>{"new key, same bob"});
  auto on_laptop = laptop.safety_number("bob");
  ASSERT_TRUE(on_laptop);
  EXPECT_TRUE(on_laptop->accepted);
  EXPECT_TRUE(on_laptop->verified);
}

TEST_F(ClientFlowTest, ABackupRestoresHistoryAndTrustAndABadOneChangesNothing) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(alice, "bob", "one");
  send(bob, "alice", "two");
  receive(alice);
  auto number = alice.safety_number("bob");
  ASSERT_TRUE(alice.trust("bob", number->digits));
  const std::string code = alice.take_recovery_code();
  const fs::path file = root_ / "alice.backup";
  const sotto::BackupSecret secret{sotto::BackupSecret::Kind::passphrase, "correct horse"};
  ::setenv("SOTTO_TEST_FAST_KDF", "1", 1);
  auto written = alice.backup_export(file, secret, nullptr);
  ASSERT_TRUE(written) << written.error().message;
  EXPECT_EQ(*written, 2u);

  close(alice);
  Engine& fresh = recover("alice", code, "alice-new");
  // A wrong passphrase, and a file damaged in its middle, change nothing.
  auto wrong = fresh.backup_import(file, {sotto::BackupSecret::Kind::passphrase, "wrong"}, nullptr);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::wrong_passphrase);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = static_cast<std::streamoff>(f.tellg());
    fs::copy_file(file, root_ / "damaged.backup");
    std::fstream d(root_ / "damaged.backup", std::ios::in | std::ios::out | std::ios::binary);
    d.seekp(size - 5);
    d.put('\x55');
  }
  auto damaged = fresh.backup_import(root_ / "damaged.backup", secret, nullptr);
  ASSERT_FALSE(damaged);
  EXPECT_TRUE(fresh.history("bob", 0)->empty());
  EXPECT_TRUE(fresh.contacts()->empty());

  auto imported = fresh.backup_import(file, secret, nullptr);
  ASSERT_TRUE(imported) << imported.error().message;
  EXPECT_EQ(*imported, 2u);
  auto history = fresh.history("bob", 0);
  ASSERT_EQ(history->size(), 2u);
  EXPECT_EQ((*history)[0].body, "one");
  // Importing again adds nothing.
  EXPECT_EQ(*fresh.backup_import(file, secret, nullptr), 0u);
  auto contacts = fresh.contacts();
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_TRUE((*contacts)[0].verified);
}

// A backup sealed with a code that is not the account's could never be opened: refused, on the
// device that registered and on one it linked (which learns the code's verifier).
TEST_F(ClientFlowTest, ABackupIsSealedOnlyWithTheAccountsOwnRecoveryCode) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const std::string code = alice.take_recovery_code();
  const std::string other = bob.take_recovery_code();
  send(bob, "alice", "keep me");
  receive(alice);
  using Kind = sotto::BackupSecret::Kind;
  auto wrong = alice.backup_export(root_ / "a.backup", {Kind::recovery_code, other}, nullptr);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, ErrorCode::invalid_argument);
  EXPECT_FALSE(fs::exists(root_ / "a.backup"));
  ASSERT_TRUE(alice.backup_export(root_ / "a.backup", {Kind::recovery_code, code}, nullptr));

  Engine& laptop = link(alice, "alice-laptop");
  EXPECT_FALSE(laptop.backup_export(root_ / "l.backup", {Kind::recovery_code, other}, nullptr));
  ASSERT_TRUE(laptop.backup_export(root_ / "l.backup", {Kind::recovery_code, code}, nullptr));
  auto imported = laptop.backup_import(root_ / "a.backup", {Kind::recovery_code, code}, nullptr);
  ASSERT_TRUE(imported) << imported.error().message;
  EXPECT_EQ(*imported, 1u);
}

TEST_F(ClientFlowTest, WithManualAckAnEventStaysUntilAcknowledged) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  send(bob, "alice", "for a bot");
  Options manual = options("alice");
  manual.manual_ack = true;
  close(alice);
  auto bot = Engine::open(manual, {}, env());
  ASSERT_TRUE(bot);
  auto first = receive(**bot);
  ASSERT_EQ(bodies(first).size(), 1u);
  const std::uint64_t cursor = first.back().cursor;
  bot->reset();
  auto again = Engine::open(manual, {}, env());
  ASSERT_TRUE(again);
  auto pending = (*again)->events(0, 0);
  ASSERT_TRUE(pending);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ(pending->at(0).cursor, cursor);
  EXPECT_EQ(pending->at(0).message.body, "for a bot");
  ASSERT_TRUE((*again)->acknowledge(cursor));
  EXPECT_TRUE((*again)->events(0, 0)->empty());
}

// The operator rotates the server's key: the current key announces the next one, the client pins
// it beside the current one, and when the server switches the client follows by itself.
// --- prekeys (issue 16, case 6) ----------------------------------------------------------------

constexpr std::uint64_t kTtlMs = 30ull * 86400 * 1000;  // the server's default message TTL
constexpr std::uint64_t kHourMs = 3600ull * 1000;

store::AccountId server_account(InProcessServer& server, const std::string& name) {
  return server.store().accounts().find_account(name).value().id;
}

bool holds_pre_key(Engine& e, std::uint32_t id) {
  auto k = e.account().store->load_pre_key(protocol::PreKeyId(id));
  EXPECT_TRUE(k.has_value());
  return k && k->has_value();
}

bool holds_signed_pre_key(Engine& e, std::uint32_t id) {
  auto k = e.account().store->load_signed_pre_key(protocol::SignedPreKeyId(id));
  EXPECT_TRUE(k.has_value());
  return k && k->has_value();
}

// Bundles come without a one-time prekey once a device's are gone (or its handout bucket is
// empty): the client library starts the session without one (X3DH allows it) and the message
// is read.
TEST_F(ClientFlowTest, ASessionStartsFromABundleWithoutAOneTimePreKey) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const auto account = server_account(*server_, "alice");
  while (server_->store().keys().take_pre_key(account, 1).value().has_value()) {
  }
  ASSERT_EQ(server_->store().keys().count_pre_keys(account, 1).value(), 0u);
  send(bob, "alice", "no one-time key left");
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"no one-time key left"});
  send(alice, "bob", "and back");
  EXPECT_EQ(bodies(receive(bob)), std::vector<std::string>{"and back"});
}

// The client kept the private halves of every drained batch for ever. Now a private one-time
// prekey the server handed out is deleted once it has been missing from the server for longer
// than a message can wait there (the server's TTL), and not before.
TEST_F(ClientFlowTest, PrivatePreKeysHandedOutAreDeletedOnceTheServersTtlHasPassed) {
  Engine& alice = register_("alice");
  const auto account = server_account(*server_, "alice");
  // Strangers take three (the server hands out the oldest first: ids 1 to 3).
  std::vector<std::uint32_t> taken;
  for (int i = 0; i < 3; ++i)
    taken.push_back(server_->store().keys().take_pre_key(account, 1).value()->id);
  ASSERT_EQ(taken, (std::vector<std::uint32_t>{1, 2, 3}));
  receive(alice);  // its key maintenance sees them gone from the server
  for (const auto id : taken) EXPECT_TRUE(holds_pre_key(alice, id)) << id;
  clock_->advance_ms(kTtlMs - kHourMs);
  receive(alice);
  for (const auto id : taken) EXPECT_TRUE(holds_pre_key(alice, id)) << id;  // within the TTL
  clock_->advance_ms(2 * kHourMs);
  receive(alice);
  for (const auto id : taken) EXPECT_FALSE(holds_pre_key(alice, id)) << id;
  // Those the server still holds stay.
  EXPECT_TRUE(holds_pre_key(alice, 4));
  EXPECT_TRUE(holds_pre_key(alice, 100));
  EXPECT_EQ(alice.account().store->pre_key_count().value(),
            server_->store().keys().count_pre_keys(account, 1).value());
}

// Within the TTL, a message built on a one-time prekey the server handed out long ago (the
// sender fetched the bundle, and its message arrived late) still decrypts.
TEST_F(ClientFlowTest, ALateMessageUsingAHandedOutPreKeyDecryptsWithinTheTtl) {
  Engine& alice = register_("alice");
  Engine& bob = register_("bob");
  const auto account = server_account(*server_, "alice");
  // Bob's fetch, as the server answers it: it takes a one-time prekey.
  const auto found = server_->store().accounts().find_account("alice").value();
  const auto otk = server_->store().keys().take_pre_key(account, 1).value().value();
  const auto spk = server_->store().keys().signed_pre_key(account, 1).value();
  wire::PreKeyBundle wire;
  wire.set_registration_id(found.devices.at(0).registration_id);
  wire.set_device_id(1);
  wire.set_pre_key_id(otk.id);
  wire.set_pre_key(std::string(otk.public_key.begin(), otk.public_key.end()));
  wire.set_signed_pre_key_id(spk.id);
  wire.set_signed_pre_key(std::string(spk.public_key.begin(), spk.public_key.end()));
  wire.set_signed_pre_key_signature(std::string(spk.signature.begin(), spk.signature.end()));
  wire.set_identity_key(std::string(found.identity_key.begin(), found.identity_key.end()));
  const std::string bytes = wire.SerializeAsString();
  auto bundle = protocol::PreKeyBundle::decode(as_bytes(bytes));
  ASSERT_TRUE(bundle.has_value());

  receive(alice);  // alice sees the key gone
  clock_->advance_ms(kTtlMs - 2 * kHourMs);
  receive(alice);
  ASSERT_TRUE(holds_pre_key(alice, otk.id));
  {
    auto st = bob.account().stores();
    ASSERT_TRUE(protocol::process_pre_key_bundle({"alice", protocol::DeviceId(1)}, *bundle, st,
                                                 bob.account().rng, bob.account().protocol_clock)
                    .has_value());
  }
  send(bob, "alice", "late, on an old one-time key");
  EXPECT_EQ(bodies(receive(alice)), std::vector<std::string>{"late, on an old one-time key"});
  EXPECT_FALSE(holds_pre_key(alice, otk.id));  // used, so deleted as always
}

// A signed prekey stays until the TTL has passed since the next one replaced it.
TEST_F(ClientFlowTest, AReplacedSignedPreKeyIsDeletedOnceTheTtlHasPassedSinceItsReplacement) {
  Engine& alice = register_("alice");
  ASSERT_EQ(alice.account().store->settings().next_signed_pre_key_id, 2u);  // key 1 in use
  clock_->advance_ms(8 * 24 * kHourMs);  // older than a week: rotated at the next connection
  receive(alice);
  ASSERT_EQ(alice.account().store->settings().next_signed_pre_key_id, 3u);
  EXPECT_TRUE(holds_signed_pre_key(alice, 1));
  clock_->advance_ms(kTtlMs - kHourMs);
  receive(alice);  // (key 2 is a week old by now too: key 3 replaces it)
  EXPECT_TRUE(holds_signed_pre_key(alice, 1));
  clock_->advance_ms(2 * kHourMs);
  receive(alice);
  EXPECT_FALSE(holds_signed_pre_key(alice, 1));
  EXPECT_TRUE(holds_signed_pre_key(alice, 2));  // replaced only an hour ago
  EXPECT_TRUE(
      holds_signed_pre_key(alice, alice.account().store->settings().next_signed_pre_key_id - 1));
}

// --- blocking ------------------------------------------------------------------------------------

// What a blocked account had queued before the block is dropped unread on every device of the
// blocker, the other devices included (they learn the list when they connect).
TEST_F(ClientFlowTest, MessagesQueuedBeforeABlockAreDroppedOnEveryDevice) {
  Engine& alice = register_("alice");
  Engine& mallory = register_("mallory");
  Engine& bob = register_("bob");
  Engine& alice2 = link(alice, "alice2");
  receive(alice);
  receive(alice2);
  send(mallory, "alice", "queued before the block");
  ASSERT_TRUE(alice.block("Mallory"));
  auto list = alice2.blocked();
  ASSERT_TRUE(list);
  EXPECT_EQ(*list, std::vector<std::string>{"mallory"});
  send(bob, "alice", "from bob");
  for (Engine* e : {&alice, &alice2}) {
    EXPECT_EQ(bodies(receive(*e)), std::vector<std::string>{"from bob"});
    auto h = e->history("mallory", 0);
    ASSERT_TRUE(h);
    EXPECT_TRUE(h->empty());
  }
  EXPECT_EQ(alice.block("alice").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(alice.block("no one").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(alice.block("nobody").error().code, ErrorCode::not_found);
  ASSERT_TRUE(alice2.unblock("mallory"));
  send(mallory, "alice", "after the unblock");
  for (Engine* e : {&alice, &alice2})
    EXPECT_EQ(bodies(receive(*e)), std::vector<std::string>{"after the unblock"});
}

// A device that stays connected learns of an unblock made on another device only when it asks:
// before dropping a message from an account on its (stale) copy of the list, it asks the server.
TEST_F(ClientFlowTest, ALiveDeviceChecksWithTheServerBeforeDroppingAMessage) {
  Engine& alice = register_("alice");
  Engine& mallory = register_("mallory");
  Engine& bob = register_("bob");
  Engine& alice2 = link(alice, "alice2");
  receive(alice);
  receive(alice2);
  ASSERT_TRUE(alice.block("mallory"));
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> got;
  ASSERT_TRUE(alice2.start([&](const Event& e) {
    if (e.kind != Event::Kind::message) return;
    std::lock_guard lock(mu);
    got.push_back(e.message.body);
    cv.notify_all();
  }));
  // Once bob's message is here, alice2 has refreshed its list (mallory on it) after connecting.
  send(bob, "alice", "ping");
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return got.size() == 1; }));
  }
  ASSERT_TRUE(alice.unblock("mallory"));
  send(mallory, "alice", "after the unblock");
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return got.size() == 2; }));
  }
  alice2.stop();
  EXPECT_EQ(got, (std::vector<std::string>{"ping", "after the unblock"}));
}

TEST_F(ClientFlowTest, TheClientFollowsAServerKeyRotationTheCurrentKeySigned) {
  auto current = net::load_or_create_identity(root_ / "tls-current");
  auto next = net::load_or_create_identity(root_ / "tls-next");
  auto forged = net::load_or_create_identity(root_ / "tls-forged");
  ASSERT_TRUE(current && next && forged);
  server_->set_identity(*current);
  Engine& alice = register_("alice");
  EXPECT_EQ(alice.server().fingerprint, current->key_fingerprint);

  // An announcement signed by another key is ignored.
  auto bad = net::sign_next_key(*forged, next->public_key);
  ASSERT_TRUE(bad);
  server_->server().announce_next_key(server::NextServerKey{next->public_key, *bad});
  receive(alice);
  EXPECT_TRUE(alice.server().next_fingerprint.empty());

  auto good = net::sign_next_key(*current, next->public_key);
  ASSERT_TRUE(good);
  server_->server().announce_next_key(server::NextServerKey{next->public_key, *good});
  receive(alice);
  EXPECT_EQ(alice.server().next_fingerprint, next->key_fingerprint);

  server_->server().announce_next_key(std::nullopt);
  server_->set_identity(*next);
  auto events = receive(alice);
  EXPECT_EQ(alice.server().fingerprint, next->key_fingerprint);
  EXPECT_TRUE(alice.server().next_fingerprint.empty());
  EXPECT_EQ(of_kind(events, Event::Kind::server_key_changed).size(), 1u);
  // And it stays pinned across a restart of the client.
  close(alice);
  EXPECT_EQ(open("alice").server().fingerprint, next->key_fingerprint);
}

TEST_F(ClientFlowTest, TheServerKeyIsPinnedAndTheUserCanAcceptANewOne) {
  Engine& alice = register_("alice");
  EXPECT_EQ(alice.server().fingerprint, server_->pin());
  server_->drop_connections();
  server_->set_pin(std::string(64, 'b'));
  auto r = alice.connect();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::fingerprint_mismatch);
  EXPECT_NE(r.error().message.find(std::string(64, 'b')), std::string::npos);
  EXPECT_NE(r.error().message.find(std::string(64, 'a')), std::string::npos);
  EXPECT_FALSE(alice.trust_server_key("not hex"));
  ASSERT_TRUE(alice.trust_server_key(std::string(64, 'B')));
  ASSERT_TRUE(alice.connect());
  ASSERT_TRUE(alice.set_server_address("elsewhere.example", 8443));
  EXPECT_EQ(alice.server().host, "elsewhere.example");
  EXPECT_EQ(alice.server().port, 8443);
}

// A send the server refuses for the account's rate (issue 16: per-account send buckets) is a
// rate_limited error that says so and when to retry; nothing was sent, and the text names no
// command of an app.
TEST_F(ClientFlowTest, ASendTheServerRateLimitsIsAClearRetryableError) {
  server_.reset();
  server::ServerConfig config;
  config.sends_per_minute = 1;  // a burst of 10, then one a minute: beyond the send's 5 s
  server_ = std::make_unique<InProcessServer>(root_ / "limited-server", clock_, config);
  Engine& alice = register_("alice");
  register_("bob");
  std::optional<Error> refused;
  int sent = 0;
  for (int i = 0; i < 12 && !refused; ++i) {
    clock_->advance_ms(1000);
    auto r = alice.send("bob", "hello " + std::to_string(i));
    if (r) {
      ++sent;
    } else {
      refused = r.error();
    }
  }
  EXPECT_EQ(sent, 10);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, ErrorCode::rate_limited) << refused->message;
  EXPECT_NE(refused->message.find("the server is rate limiting this account"), std::string::npos)
      << refused->message;
  EXPECT_NE(refused->message.find("retry in "), std::string::npos) << refused->message;
  EXPECT_EQ(refused->message.find("sotto "), std::string::npos) << refused->message;
}

// Over the server's storage budget a send fails at once with a text that says the server cannot
// take it now and when to retry (the hint, 30 s, is beyond this send's 5 s).
TEST_F(ClientFlowTest, ASendTheServerHasNoRoomForSaysSoAndWhenToRetry) {
  server_.reset();
  server::ServerConfig config;
  config.max_stored_bytes = 1;  // nothing fits
  server_ = std::make_unique<InProcessServer>(root_ / "full-server", clock_, config);
  Engine& alice = register_("alice");
  register_("bob");
  clock_->advance_ms(1000);
  auto r = alice.send("bob", "hello");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::server) << r.error().message;
  EXPECT_NE(r.error().message.find("the server cannot take this now"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("storage is full"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("retry in 30 s"), std::string::npos) << r.error().message;
}

// --- key transparency: the account's own devices (docs/transparency.md, "Monitoring") ----------

class ClientKtFlowTest : public ClientFlowTest {
 protected:
  void SetUp() override {
    ClientFlowTest::SetUp();
    server_->enable_key_transparency();
  }
  static std::vector<Event> alerts(const std::vector<Event>& events) {
    return of_kind(events, Event::Kind::security_alert);
  }
  static std::string describe(const std::vector<Event>& events) {
    std::string out;
    for (const auto& e : events) out += e.alert + ": " + e.detail + "\n";
    return out;
  }
  // What a coerced operator does in the open: a device added to `user`'s account without any of
  // its devices, logged through the store's own path (the server is not told: no push).
  std::uint32_t ghost(const std::string& user, std::uint32_t registration_id = 4343) {
    auto account = server_->store().accounts().find_account(user);
    EXPECT_TRUE(account);
    if (!account) return 0;
    store::DeviceRecord d;
    d.registration_id = registration_id;
    d.auth_key = Bytes(32, 0x67);
    const store::SignedPreKeyRecord spk{1, Bytes(33, 0x05), Bytes(64, 0)};
    auto id = server_->store().accounts().add_device(account->id, d, spk, {});
    EXPECT_TRUE(id);
    return id ? *id : 0;
  }
  static void expect_reported(const std::vector<Event>& events, std::uint32_t device) {
    ASSERT_EQ(events.size(), 1u) << describe(events);
    EXPECT_EQ(events[0].alert, "unknown_device");
    EXPECT_EQ(events[0].user, "alice");
    EXPECT_NE(events[0].detail.find("device " + std::to_string(device) + " "), std::string::npos)
        << events[0].detail;
    EXPECT_NE(events[0].detail.find("log entry"), std::string::npos) << events[0].detail;
  }
};

// Three devices, the third linked from the second: the first hears of it from the second alone
// (before the link, in its queue ahead of the new device), and no device reports it. A device the
// server adds on its own is reported by every one, once.
TEST_F(ClientKtFlowTest, ALinkFromAnyDeviceIsReportedByNoneAndAGhostByAll) {
  Engine& alice = register_("alice");
  EXPECT_EQ(describe(alerts(receive(alice))), "");  // the baseline
  Engine& laptop = link(alice, "alice-laptop");
  EXPECT_EQ(describe(alerts(receive(alice))), "");
  EXPECT_EQ(describe(alerts(receive(laptop))), "");
  Engine& tablet = link(laptop, "alice-tablet");
  for (Engine* e : {&alice, &laptop, &tablet}) {
    EXPECT_EQ(describe(alerts(receive(*e))), "") << "device " << e->device_id();
  }
  // A removal made on the laptop is told too (and nothing is reported for it).
  ASSERT_TRUE(laptop.remove_device(tablet.device_id()));
  for (Engine* e : {&alice, &laptop}) {
    EXPECT_EQ(describe(alerts(receive(*e))), "") << "device " << e->device_id();
  }
  close(tablet);

  const std::uint32_t id = ghost("alice");
  for (Engine* e : {&alice, &laptop}) {
    expect_reported(alerts(receive(*e)), id);
    EXPECT_EQ(describe(alerts(receive(*e))), "") << "reported once";
  }
}

// The other order: the device is in the log before the word naming it arrives (its link's first
// word lost). A device that has not checked since hears the name first (its queue is handled
// before it checks) and reports nothing; a name with another auth key than the log's is no name.
TEST_F(ClientKtFlowTest, ADeviceNamedAfterItAppearedIsAcceptedOnlyWithItsLoggedKeys) {
  Engine& alice = register_("alice");
  receive(alice);
  Engine& laptop = link(alice, "alice-laptop");
  receive(alice);
  EXPECT_EQ(describe(alerts(receive(laptop))), "");

  const auto name = [&](std::uint32_t id, std::uint32_t registration_id, std::uint8_t key) {
    content::Content c;
    auto* d = c.mutable_sync()->mutable_device_change();
    d->set_device_id(id);
    d->set_registration_id(registration_id);
    d->set_auth_key(std::string(32, static_cast<char>(key)));
    // To the laptop alone: the ghost's bundle, which the operator could not sign, cannot be
    // used.
    auto sent = alice.outbox().send_to_devices("alice", {laptop.device_id()}, encode_padded(c),
                                               alice.outbox().next_timestamp());
    ASSERT_TRUE(sent) << sent.error().message;
  };
  const std::uint32_t named = ghost("alice", 4444);
  name(named, 4444, 0x67);
  EXPECT_EQ(describe(alerts(receive(laptop))), "");
  expect_reported(alerts(receive(alice)), named);  // alice itself named it without linking it

  const std::uint32_t misnamed = ghost("alice", 4545);
  name(misnamed, 4545, 0x68);  // the log holds 0x67
  expect_reported(alerts(receive(laptop)), misnamed);
}

// A sibling that listens while the link is made sees the word of it live, then the server's
// DevicesChanged push, and reports nothing, then or at its next connection.
TEST_F(ClientKtFlowTest, ADeviceListeningDuringALinkMadeElsewhereReportsNothing) {
  Engine& alice = register_("alice");
  receive(alice);
  Engine& laptop = link(alice, "alice-laptop");
  receive(alice);
  receive(laptop);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Event> seen;
  ASSERT_TRUE(alice.start([&](const Event& e) {
    std::lock_guard lock(mu);
    seen.push_back(e);
    cv.notify_all();
  }));
  Engine& tablet = link(laptop, "alice-tablet");
  {
    std::unique_lock lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] {
      return std::any_of(seen.begin(), seen.end(), [&](const Event& e) {
        return e.kind == Event::Kind::devices_changed &&
               std::find(e.added.begin(), e.added.end(), tablet.device_id()) != e.added.end();
      });
    }));
  }
  alice.stop();
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(describe(alerts(seen)), "");
  }
  EXPECT_EQ(describe(alerts(receive(alice))), "");  // nothing held back either
}

// A device that stays connected checks again on its own (Options::kt_check_interval): a device
// the server adds without a push is reported without a reconnection.
TEST_F(ClientKtFlowTest, AConnectedDeviceChecksAgainOnItsOwn) {
  Options o = options("alice");
  o.kt_check_interval = std::chrono::milliseconds(200);
  auto registered = Engine::register_account(o, "alice", server_address(), {}, env());
  ASSERT_TRUE(registered) << registered.error().message;
  Engine& alice = keep(std::move(*registered));
  EXPECT_EQ(describe(alerts(receive(alice))), "");  // the baseline
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Event> seen;
  ASSERT_TRUE(alice.start([&](const Event& e) {
    std::lock_guard lock(mu);
    seen.push_back(e);
    cv.notify_all();
  }));
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10),
                            [&] { return !of_kind(seen, Event::Kind::connected).empty(); }));
  }
  const std::uint32_t id = ghost("alice");
  {
    std::unique_lock lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return !alerts(seen).empty(); }));
  }
  alice.stop();
  std::lock_guard lock(mu);
  expect_reported(alerts(seen), id);
  EXPECT_EQ(of_kind(seen, Event::Kind::connected).size(), 1u);
  EXPECT_TRUE(of_kind(seen, Event::Kind::disconnected).empty());
}

// An app that polls with receive() on a connection it keeps open gets no new QueueDrained: the
// check runs when it is due at the start of a receive().
TEST_F(ClientKtFlowTest, ADevicePollingOnAnOpenConnectionChecksAgainWhenDue) {
  Options o = options("alice");
  o.kt_check_interval = std::chrono::milliseconds(0);  // always due
  auto registered = Engine::register_account(o, "alice", server_address(), {}, env());
  ASSERT_TRUE(registered) << registered.error().message;
  Engine& alice = keep(std::move(*registered));
  EXPECT_EQ(describe(alerts(receive(alice))), "");  // the baseline, on a fresh connection
  const std::uint32_t id = ghost("alice");
  std::vector<Event> seen;
  ASSERT_TRUE(alice.receive(std::chrono::seconds(10), [&](const Event& e) { seen.push_back(e); }));
  expect_reported(alerts(seen), id);
}

// The new device pins the log its account pinned, carried in the link, before any lookup.
TEST_F(ClientKtFlowTest, TheNewDevicePinsTheLogItsAccountCarriedInTheLink) {
  Engine& alice = register_("alice");
  receive(alice);
  Engine& laptop = link(alice, "alice-laptop");
  auto keys_a = alice.account().store->load_value(kKtKeysValue);
  auto keys_l = laptop.account().store->load_value(kKtKeysValue);
  ASSERT_TRUE(keys_a && *keys_a && keys_l && *keys_l);
  EXPECT_EQ(Bytes((**keys_a).view().begin(), (**keys_a).view().end()),
            Bytes((**keys_l).view().begin(), (**keys_l).view().end()));
  EXPECT_GT(laptop.account().kt.known_size(), 0u);
}

}  // namespace
}  // namespace sotto::client
