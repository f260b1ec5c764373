// Fuzzes the server's frame decoder and every request handler. A real SQLite store (in a
// temporary directory) and a real Server sit behind an in-process connection; the fixture
// registers and logs in one account with real keys, so the fuzzed frames reach the handlers that
// need an authenticated device, on both an authenticated and an anonymous connection.
// Input: a sequence of WebSocket messages (frames or batches of frames), each prefixed by a 2-byte
// big-endian length; the first byte picks the connection. A first byte of 0xA5 instead makes the
// rest the Authorization header of a connection's upgrade request (the login proof in it).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "crypto/ed25519.h"
#include "crypto/rng.h"
#include "net/batch.h"
#include "protocol/keys.h"
#include "server/server.h"
#include "service.pb.h"
#include "store/server/sqlite_store.h"

namespace {

using namespace sotto;
namespace svc = sotto::wire::service;

class LoopbackConnection final : public net::Connection {
 public:
  explicit LoopbackConnection(std::uint64_t id) : id_(id) {}
  bool send(Bytes frame) override {
    std::lock_guard lock(mutex_);
    last_ = std::move(frame);
    return true;
  }
  void close(const std::string&) override {}
  std::uint64_t id() const override { return id_; }
  const std::string& remote_address() const override { return address_; }
  std::size_t outbound_bytes() const override { return 0; }
  bool writable() override { return true; }  // never paced: nothing is buffered
  bool take_channel_binding(std::array<std::uint8_t, 32>& out) override {
    out.fill(0x42);  // a fixed binding: the fuzzer may find a signature over it only by luck
    return true;
  }
  void promote() override {}
  void extend_login_deadline(std::chrono::seconds) override {}
  svc::Frame last() {
    std::lock_guard lock(mutex_);
    svc::Frame f;
    (void)f.ParseFromArray(last_.data(), static_cast<int>(last_.size()));
    return f;
  }

 private:
  std::uint64_t id_;
  std::string address_ = "127.0.0.1";
  std::mutex mutex_;
  Bytes last_;
};

Bytes encode(const svc::Frame& f) {
  Bytes b(f.ByteSizeLong());
  f.SerializeWithCachedSizesToArray(b.data());
  return b;
}

struct Fixture {
  std::filesystem::path dir;
  std::unique_ptr<store::SqliteServerStore> store;
  server::Metrics metrics;
  crypto::DeterministicRng rng{7};
  std::unique_ptr<server::Server> server;
  std::shared_ptr<LoopbackConnection> authed = std::make_shared<LoopbackConnection>(1);
  std::shared_ptr<LoopbackConnection> anonymous = std::make_shared<LoopbackConnection>(2);
  std::shared_ptr<LoopbackConnection> upgrading = std::make_shared<LoopbackConnection>(3);

  Fixture() {
    spdlog::set_level(spdlog::level::off);
    char tmpl[] = "/tmp/sotto-server-fuzz-XXXXXX";
    dir = mkdtemp(tmpl);
    store::SqliteOptions options;
    options.group_commit_max_delay = std::chrono::microseconds(0);
    options.log = [](std::string_view) {};
    options.now_ms = [] { return std::uint64_t{1'700'000'000'000}; };
    store = std::move(*store::SqliteServerStore::open(dir / "fuzz.db", options));
    server::ServerConfig config;
    config.registrations_per_minute = 1'000'000;
    config.logins_per_minute = 1'000'000;
    config.bundle_fetches_per_minute = 1'000'000;
    server = std::make_unique<server::Server>(config, *store, metrics, rng,
                                              [] { return std::uint64_t{1'700'000'000'000}; });
    server->on_open(authed, {});
    server->on_open(anonymous, {});
    register_and_login("fuzzer", *authed);
  }
  ~Fixture() {
    store->messages().flush();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  void register_and_login(const std::string& name, LoopbackConnection& c) {
    auto identity = protocol::KeyPair::generate(rng);
    auto auth = crypto::Ed25519KeyPair::generate(rng);
    auto spk = protocol::generate_signed_pre_key(rng, identity, protocol::SignedPreKeyId(1), 0);
    svc::Frame f;
    auto* r = f.mutable_request();
    r->set_id(1);
    auto* reg = r->mutable_register_();
    reg->set_username(name);
    const auto ik = identity.public_key.serialize();
    reg->set_identity_key(std::string(ik.begin(), ik.end()));
    auto* d = reg->mutable_device();
    d->set_registration_id(42);
    d->set_auth_key(std::string(auth.public_key().begin(), auth.public_key().end()));
    Bytes binding(std::string_view("sotto-device-v1").begin(),
                  std::string_view("sotto-device-v1").end());
    binding.insert(binding.end(), name.begin(), name.end());
    binding.insert(binding.end(), auth.public_key().begin(), auth.public_key().end());
    const auto bsig = identity.sign(binding, rng);
    d->set_identity_signature(std::string(bsig.begin(), bsig.end()));
    auto* s = d->mutable_keys()->mutable_signed_pre_key();
    s->set_id(1);
    const auto spk_pub = spk.key_pair.public_key.serialize();
    s->set_public_key(std::string(spk_pub.begin(), spk_pub.end()));
    s->set_signature(std::string(spk.signature.begin(), spk.signature.end()));
    for (auto& pk : protocol::generate_pre_keys(rng, protocol::PreKeyId(1), 5)) {
      auto* o = d->mutable_keys()->add_pre_keys();
      o->set_id(pk.id.value);
      const auto pub = pk.key_pair.public_key.serialize();
      o->set_public_key(std::string(pub.begin(), pub.end()));
    }
    server->on_frame(authed, encode(f));
    svc::Frame challenge;
    challenge.mutable_request()->set_id(2);
    challenge.mutable_request()->mutable_challenge();
    server->on_frame(authed, encode(challenge));
    const std::string nonce = c.last().response().challenge().nonce();
    Bytes msg(std::string_view("sotto-auth-v1").begin(), std::string_view("sotto-auth-v1").end());
    msg.insert(msg.end(), nonce.begin(), nonce.end());
    const auto sig = auth.sign(msg);
    svc::Frame login;
    login.mutable_request()->set_id(3);
    auto* a = login.mutable_request()->mutable_authenticate();
    a->set_username(name);
    a->set_device_id(1);
    a->set_signature(std::string(sig.begin(), sig.end()));
    server->on_frame(authed, encode(login));
    if (c.last().response().status().code() != svc::OK) std::abort();
  }
};

// A first byte of this value selects the upgrade request's login proof instead of frames.
constexpr std::uint8_t kUpgradeMode = 0xA5;

Fixture& fixture() {
  static Fixture* f = new Fixture();  // lives for the process, like the fuzzer
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Fixture& f = fixture();
  if (size == 0) return 0;
  if (data[0] == kUpgradeMode) {
    // The rest is the Authorization header of an upgrade request (at most what the transport
    // reads, net/ws_server.cpp): a connection opens with it and closes.
    const std::string header(reinterpret_cast<const char*>(data + 1),
                             std::min<std::size_t>(size - 1, 4096));
    f.server->on_open(f.upgrading, header);
    f.server->on_close(f.upgrading);
    f.store->messages().flush();
    return 0;
  }
  const auto& conn = (data[0] & 1) ? f.anonymous : f.authed;
  std::size_t i = 1;
  int frames = 0;
  while (i + 2 <= size && frames++ < 16) {
    const std::size_t n = static_cast<std::size_t>(data[i]) << 8 | data[i + 1];
    i += 2;
    const std::size_t take = std::min(n, size - i);
    // As the transport does (net/ws_server.cpp): a well-formed batch is handled frame by frame,
    // anything else as one frame.
    const ByteView message(data + i, take);
    std::vector<ByteView> parts;
    if (net::split_batch(message, parts)) {
      for (const ByteView part : parts) f.server->on_frame(conn, part);
    } else {
      f.server->on_frame(conn, message);
    }
    i += take;
  }
  f.store->messages().flush();
  return 0;
}
