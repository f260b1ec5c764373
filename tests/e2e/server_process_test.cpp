// A real sotto-server process, spoken to over TLS WebSocket frame by frame: what a hostile or
// broken client can do. Malformed frames, oversized messages and unauthenticated requests are
// refused with clear errors and change nothing stored; a device cannot read, acknowledge or delete
// another device's queue, log in as another device, or upload keys for another account. "Nothing
// stored changed" is checked on the server's own SQLite file, read beside the running server.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "net/device_authorization.h"
#include "net/ws_client.h"
#include "util/server_harness.h"

#ifndef SOTTO_SERVER_BIN
#error "SOTTO_SERVER_BIN must name the sotto-server binary"
#endif

namespace sotto {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Party;
using sotto::testing::str;

// sotto-server in a temporary data directory on a free port; SIGTERM on destruction.
class ServerProcess {
 public:
  ServerProcess() {
    char tmpl[] = "/tmp/sotto-server-process-XXXXXX";
    dir_ = mkdtemp(tmpl);
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      const std::string data = dir_.string();
      execl(SOTTO_SERVER_BIN, SOTTO_SERVER_BIN, "--data", data.c_str(), "--listen", "127.0.0.1:0",
            "--http", "127.0.0.1:0", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, f) != nullptr) {
      std::string l(line);
      if (l.rfind("fingerprint: ", 0) == 0)
        fingerprint_ = l.substr(13, l.find_last_not_of("\r\n") - 12);
      if (l.rfind("listening on ", 0) == 0) {
        port_ = static_cast<std::uint16_t>(std::stoi(l.substr(l.rfind(':') + 1)));
        break;
      }
    }
    // Keep draining its output so it never blocks on a full pipe.
    reader_ = std::thread([f] {
      char buf[512];
      while (std::fgets(buf, sizeof buf, f) != nullptr) {
      }
      std::fclose(f);
    });
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    reader_.join();
    std::filesystem::remove_all(dir_);
  }

  std::uint16_t port() const { return port_; }
  const std::string& fingerprint() const { return fingerprint_; }

  // Rows per table in the server's database, read through SQLite beside the running server.
  std::map<std::string, long long> row_counts() const {
    std::map<std::string, long long> out;
    sqlite3* db = nullptr;
    const std::string file = (dir_ / "sotto.db").string();
    if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "cannot open the server database";
      sqlite3_close(db);
      return out;
    }
    for (const char* table : {"accounts", "devices", "signed_pre_keys", "pre_keys", "messages",
                              "send_dedup", "invites", "link_tokens"}) {
      sqlite3_stmt* st = nullptr;
      const std::string sql = std::string("SELECT count(*) FROM ") + table;
      if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
          sqlite3_step(st) == SQLITE_ROW) {
        out[table] = sqlite3_column_int64(st, 0);
      } else {
        ADD_FAILURE() << "cannot count " << table << ": " << sqlite3_errmsg(db);
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return out;
  }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string fingerprint_;
  std::thread reader_;
};

// One WebSocket connection, frame by frame.
class RawClient {
 public:
  explicit RawClient(
      const ServerProcess& server, std::size_t max_frame = 4 << 20,
      std::function<std::string(const std::array<std::uint8_t, 32>&)> authorization = nullptr) {
    net::ClientOptions o;
    o.port = server.port();
    o.fingerprint = server.fingerprint();
    o.max_frame_bytes = max_frame;
    o.authorization = std::move(authorization);
    client_ = std::make_unique<net::WsClient>(
        o,
        [this](ByteView frame) {
          svc::Frame f;
          std::lock_guard lock(mu_);
          if (f.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) frames_.push_back(f);
          cv_.notify_all();
        },
        [this](const std::string& reason) {
          std::lock_guard lock(mu_);
          closed_ = reason;
          cv_.notify_all();
        });
    auto connected = client_->connect();
    EXPECT_TRUE(connected.has_value());
  }

  void send_raw(Bytes bytes) { EXPECT_TRUE(client_->send(std::move(bytes))); }

  std::uint64_t submit(svc::Request r) {
    r.set_id(++next_id_);
    svc::Frame f;
    *f.mutable_request() = std::move(r);
    Bytes b(f.ByteSizeLong());
    f.SerializeWithCachedSizesToArray(b.data());
    send_raw(std::move(b));
    return next_id_;
  }

  // The response with this id (0: the next response of any id).
  std::optional<svc::Response> response(std::uint64_t id) {
    std::unique_lock lock(mu_);
    std::optional<svc::Response> out;
    cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (auto it = frames_.begin(); it != frames_.end(); ++it) {
        if (it->has_response() && (id == 0 || it->response().id() == id)) {
          out = it->response();
          frames_.erase(it);
          return true;
        }
      }
      return closed_.has_value();
    });
    return out;
  }

  svc::Response call(svc::Request r) {
    auto got = response(submit(std::move(r)));
    if (!got) ADD_FAILURE() << "no response";
    return got.value_or(svc::Response{});
  }

  std::vector<svc::Envelope> envelopes(std::size_t want) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      std::size_t n = 0;
      for (const auto& f : frames_) n += f.has_push() && f.push().has_envelope();
      return n >= want || closed_.has_value();
    });
    std::vector<svc::Envelope> out;
    for (const auto& f : frames_) {
      if (f.has_push() && f.push().has_envelope()) out.push_back(f.push().envelope());
    }
    return out;
  }

  // The first push (the login result when the upgrade request carried a proof).
  std::optional<svc::Push> first_push() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      for (const auto& f : frames_) {
        if (f.has_push()) return true;
      }
      return closed_.has_value();
    });
    for (const auto& f : frames_) {
      if (f.has_push()) return f.push();
    }
    return std::nullopt;
  }

  std::array<std::uint8_t, 32> channel_binding() const {
    const auto b = client_->channel_binding();
    EXPECT_TRUE(b.has_value());
    return b.value_or(std::array<std::uint8_t, 32>{});
  }

  std::optional<std::string> wait_closed() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(10), [&] { return closed_.has_value(); });
    return closed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<svc::Frame> frames_;
  std::optional<std::string> closed_;
  std::uint64_t next_id_ = 0;
  // Last: destroyed first. Its destructor closes the connection, and the close handler (and a
  // frame arriving meanwhile) still use the members above.
  std::unique_ptr<net::WsClient> client_;
};

struct Account {
  Party party;
  crypto::Ed25519KeyPair auth;
  Account(const std::string& name, std::uint64_t seed)
      : party(name, 1, seed), auth(crypto::Ed25519KeyPair::generate(party.rng)) {}
};

class ServerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(server_.port(), 0) << "sotto-server did not start";
    ASSERT_EQ(server_.fingerprint().size(), 64u);
  }

  // Registers (on a connection of its own) and returns a logged-in connection.
  std::unique_ptr<RawClient> join(Account& a) {
    auto c = std::make_unique<RawClient>(server_);
    EXPECT_EQ(c->call(sotto::testing::register_request(a.party, a.auth)).status().code(), svc::OK);
    login(*c, a.party.name, 1, a.auth, svc::OK);
    return c;
  }

  static void login(RawClient& c, const std::string& name, std::uint32_t device,
                    const crypto::Ed25519KeyPair& auth, svc::Code expected) {
    svc::Request ch;
    ch.mutable_challenge();
    const std::string nonce = c.call(ch).challenge().nonce();
    auto r = c.call(sotto::testing::authenticate(name, device, auth, nonce));
    EXPECT_EQ(r.status().code(), expected) << r.status().message();
  }

  static svc::Request send_to(const Account& to, const std::string& id, std::string content) {
    svc::Request r;
    auto* sr = r.mutable_send();
    sr->set_recipient(to.party.name);
    sr->set_client_message_id(id);
    sr->set_timestamp(1);
    auto* m = sr->add_messages();
    m->set_destination(to.party.name);
    m->set_device_id(1);
    m->set_registration_id(to.party.registration_id.value);
    m->set_type(1);
    m->set_content(std::move(content));
    return r;
  }

  ServerProcess server_;
};

TEST_F(ServerProcessTest, MalformedFramesAreRefusedClearlyAndChangeNothing) {
  Account alice("alice", 1);
  auto a = join(alice);
  const auto before = server_.row_counts();

  RawClient c(server_);
  c.send_raw(Bytes{0xFF, 0xFF, 0xFF, 0x01, 0x02});  // not a protobuf Frame
  auto r = c.response(0);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), svc::BAD_REQUEST);
  EXPECT_NE(r->status().message().find("malformed"), std::string::npos) << r->status().message();

  svc::Frame wrong;  // a Response where a Request belongs
  wrong.mutable_response()->set_id(7);
  Bytes b(wrong.ByteSizeLong());
  wrong.SerializeWithCachedSizesToArray(b.data());
  c.send_raw(b);
  r = c.response(0);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), svc::BAD_REQUEST);

  // Registration with broken fields: each refused as a bad request, no account made.
  Account eve("eve", 5);
  auto bad_name = sotto::testing::register_request(eve.party, eve.auth);
  bad_name.mutable_register_()->set_username("no spaces allowed");
  EXPECT_EQ(c.call(bad_name).status().code(), svc::BAD_REQUEST);
  auto bad_key = sotto::testing::register_request(eve.party, eve.auth);
  bad_key.mutable_register_()->set_identity_key("short");
  EXPECT_EQ(c.call(bad_key).status().code(), svc::BAD_REQUEST);
  auto unsigned_device = sotto::testing::register_request(eve.party, eve.auth);
  unsigned_device.mutable_register_()->mutable_device()->set_identity_signature(
      std::string(64, 'x'));
  EXPECT_EQ(c.call(unsigned_device).status().code(), svc::BAD_REQUEST);
  auto taken = sotto::testing::register_request(alice.party, alice.auth);
  EXPECT_EQ(c.call(taken).status().code(), svc::CONFLICT);

  // An authenticated client's broken requests: a short client message id, an empty send.
  auto short_id = send_to(alice, "short", "x");
  EXPECT_EQ(a->call(short_id).status().code(), svc::BAD_REQUEST);
  svc::Request empty;
  empty.mutable_send()->set_recipient("alice");
  empty.mutable_send()->set_client_message_id(std::string(16, 'e'));
  EXPECT_EQ(a->call(empty).status().code(), svc::BAD_REQUEST);
  svc::Request bad_ack;
  bad_ack.mutable_ack()->add_envelope_ids("not-sixteen");
  EXPECT_EQ(a->call(bad_ack).status().code(), svc::BAD_REQUEST);

  EXPECT_EQ(server_.row_counts(), before);
}

TEST_F(ServerProcessTest, OversizedMessagesAndFramesAreRefused) {
  Account alice("alice", 1), bob("bob", 2);
  auto a = join(alice);
  auto b = join(bob);
  const auto before = server_.row_counts();

  // Above max_message_bytes (256 KiB by default) but within the frame limit: TOO_LARGE.
  auto big = a->call(send_to(bob, std::string(16, 'b'), std::string(300 * 1024, 'x')));
  EXPECT_EQ(big.status().code(), svc::TOO_LARGE);
  EXPECT_FALSE(big.status().message().empty());
  EXPECT_EQ(server_.row_counts(), before);

  // Above the frame limit (2 MiB by default): the connection is closed, with a reason.
  RawClient c(server_);
  c.send_raw(Bytes((2 << 20) + 1, 0x00));
  const auto reason = c.wait_closed();
  ASSERT_TRUE(reason.has_value()) << "an oversized frame must close the connection";
  EXPECT_EQ(server_.row_counts(), before);
}

TEST_F(ServerProcessTest, UnauthenticatedRequestsAreRefused) {
  Account alice("alice", 1), bob("bob", 2);
  auto a = join(alice);
  const auto before = server_.row_counts();

  RawClient c(server_);
  std::vector<svc::Request> requests;
  requests.push_back(send_to(alice, std::string(16, 'u'), "hello"));
  requests.emplace_back().mutable_ack()->add_envelope_ids(std::string(16, 'i'));
  requests.emplace_back().mutable_upload_keys()->mutable_keys();
  requests.emplace_back().mutable_fetch_bundles()->set_username("alice");
  requests.emplace_back().mutable_list_devices();
  requests.emplace_back().mutable_remove_device()->set_device_id(1);
  requests.emplace_back().mutable_key_count();
  requests.emplace_back().mutable_link_token();
  for (auto& r : requests) {
    auto got = c.call(r);
    EXPECT_EQ(got.status().code(), svc::UNAUTHENTICATED) << r.body_case();
    EXPECT_FALSE(got.status().message().empty());
  }
  // Authentication without a challenge, with a wrong key, or a reused nonce: refused.
  auto no_challenge =
      c.call(sotto::testing::authenticate("alice", 1, alice.auth, std::string(32, 'n')));
  EXPECT_EQ(no_challenge.status().code(), svc::UNAUTHENTICATED);
  login(c, "alice", 1, bob.auth, svc::UNAUTHENTICATED);
  EXPECT_EQ(c.call(requests[0]).status().code(), svc::UNAUTHENTICATED);
  EXPECT_EQ(server_.row_counts(), before);
}

TEST_F(ServerProcessTest, ADeviceLogsInBySigningItsConnectionsTlsChannelBinding) {
  Account alice("alice", 1);
  {
    RawClient r(server_);
    ASSERT_EQ(r.call(sotto::testing::register_request(alice.party, alice.auth)).status().code(),
              svc::OK);
  }
  // Both ends export the same value (RFC 9266), so one signature logs in: no challenge asked.
  RawClient c(server_);
  const auto binding = c.channel_binding();
  const auto proof = sotto::testing::authenticate_bound("alice", 1, alice.auth, binding);
  auto r = c.call(proof);
  EXPECT_EQ(r.status().code(), svc::OK) << r.status().message();
  svc::Request key_count;
  key_count.mutable_key_count();
  EXPECT_EQ(c.call(key_count).status().code(), svc::OK);

  // Every connection has its own binding: the same proof on another connection is refused, and
  // so is a proof over another connection's binding.
  RawClient other(server_);
  EXPECT_NE(other.channel_binding(), binding);
  EXPECT_EQ(other.call(proof).status().code(), svc::UNAUTHENTICATED);
  RawClient third(server_);
  auto relayed = third.call(
      sotto::testing::authenticate_bound("alice", 1, alice.auth, other.channel_binding()));
  EXPECT_EQ(relayed.status().code(), svc::UNAUTHENTICATED);
  EXPECT_EQ(third.call(key_count).status().code(), svc::UNAUTHENTICATED);
}

TEST_F(ServerProcessTest, TheUpgradeRequestCarriesTheLoginAndTheResultIsTheFirstPush) {
  Account alice("alice", 1), mallory("mallory", 3);
  {
    RawClient r(server_);
    ASSERT_EQ(r.call(sotto::testing::register_request(alice.party, alice.auth)).status().code(),
              svc::OK);
  }
  const auto header = [](const Account& a) {
    return [&a](const std::array<std::uint8_t, 32>& binding) {
      const auto proof = sotto::testing::authenticate_bound(a.party.name, 1, a.auth, binding);
      return net::device_authorization(as_bytes(proof.authenticate().SerializeAsString()));
    };
  };
  svc::Request key_count;
  key_count.mutable_key_count();
  {
    // Logged in when the WebSocket opens: three round trips from TCP to a usable connection.
    RawClient c(server_, 4 << 20, header(alice));
    const auto first = c.first_push();
    ASSERT_TRUE(first && first->has_login_result());
    EXPECT_EQ(first->login_result().status().code(), svc::OK)
        << first->login_result().status().message();
    EXPECT_EQ(c.call(key_count).status().code(), svc::OK);
  }
  {
    // Someone else's key under alice's name: refused, the connection stays and is logged out.
    RawClient c(server_, 4 << 20, [&](const std::array<std::uint8_t, 32>& binding) {
      const auto proof = sotto::testing::authenticate_bound("alice", 1, mallory.auth, binding);
      return net::device_authorization(as_bytes(proof.authenticate().SerializeAsString()));
    });
    const auto first = c.first_push();
    ASSERT_TRUE(first && first->has_login_result());
    EXPECT_EQ(first->login_result().status().code(), svc::UNAUTHENTICATED);
    EXPECT_EQ(c.call(key_count).status().code(), svc::UNAUTHENTICATED);
  }
  {
    // A header the server cannot read: refused with a reason.
    RawClient c(server_, 4 << 20,
                [](const std::array<std::uint8_t, 32>&) { return std::string("SottoDevice %%"); });
    const auto first = c.first_push();
    ASSERT_TRUE(first && first->has_login_result());
    EXPECT_EQ(first->login_result().status().code(), svc::BAD_REQUEST);
    EXPECT_FALSE(first->login_result().status().message().empty());
  }
  {
    // An upgrade request larger than the server reads (4 KB) is not answered with a WebSocket.
    net::ClientOptions o;
    o.port = server_.port();
    o.fingerprint = server_.fingerprint();
    o.authorization = [](const std::array<std::uint8_t, 32>&) {
      return "SottoDevice " + std::string(5000, 'A');
    };
    net::WsClient big(
        o, [](ByteView) {}, [](const std::string&) {});
    EXPECT_FALSE(big.connect().has_value());
  }
  // The server still serves.
  RawClient after(server_, 4 << 20, header(alice));
  const auto first = after.first_push();
  ASSERT_TRUE(first && first->has_login_result());
  EXPECT_EQ(first->login_result().status().code(), svc::OK);
}

TEST_F(ServerProcessTest, ADeviceCannotTouchAnotherDevicesQueueOrKeys) {
  Account alice("alice", 1), bob("bob", 2), mallory("mallory", 3);
  auto a = join(alice);
  auto m = join(mallory);
  {
    auto b = join(bob);  // registers, then goes offline
  }
  ASSERT_EQ(a->call(send_to(bob, std::string(16, 'q'), "for bob only")).status().code(), svc::OK);
  const auto before = server_.row_counts();
  ASSERT_EQ(before.at("messages"), 1);

  // Mallory cannot log in as bob's device with her own key...
  RawClient impostor(server_);
  login(impostor, "bob", 1, mallory.auth, svc::UNAUTHENTICATED);
  svc::Request drain_attempt;
  drain_attempt.mutable_key_count();
  EXPECT_EQ(impostor.call(drain_attempt).status().code(), svc::UNAUTHENTICATED);

  // ...nor acknowledge (delete) bob's envelope even if she learned its id: bob reads it later.
  // Her connection receives nothing of bob's either.
  EXPECT_TRUE(m->envelopes(0).empty());
  RawClient bob_again(server_);
  login(bob_again, "bob", 1, bob.auth, svc::OK);
  auto got = bob_again.envelopes(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].content(), "for bob only");
  svc::Request steal;
  steal.mutable_ack()->add_envelope_ids(got[0].id());
  EXPECT_EQ(m->call(steal).status().code(), svc::OK);  // nothing of hers to delete: a no-op
  EXPECT_EQ(server_.row_counts().at("messages"), 1) << "mallory's ack deleted bob's envelope";

  // Uploads land on the uploader's own device: bob's prekeys are untouched.
  svc::Request count;
  count.mutable_key_count();
  const auto bob_keys = bob_again.call(count).key_count().count();
  svc::Request upload;
  auto* pk = upload.mutable_upload_keys()->mutable_keys()->add_pre_keys();
  pk->set_id(900);
  pk->set_public_key(str(mallory.party.identity.public_key.serialize()));
  EXPECT_EQ(m->call(upload).status().code(), svc::OK);
  EXPECT_EQ(bob_again.call(count).key_count().count(), bob_keys);
  EXPECT_EQ(m->call(count).key_count().count(), 6u);

  svc::Request list;
  list.mutable_list_devices()->set_username("bob");
  EXPECT_EQ(a->call(list).list_devices().devices_size(), 1);

  // Bob's own acknowledgement deletes it.
  svc::Request ack;
  ack.mutable_ack()->add_envelope_ids(got[0].id());
  EXPECT_EQ(bob_again.call(ack).status().code(), svc::OK);
  EXPECT_EQ(server_.row_counts().at("messages"), 0);
}

}  // namespace
}  // namespace sotto
