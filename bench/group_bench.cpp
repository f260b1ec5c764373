// What one group message costs its sender's CPU (docs/groups.md), for groups of 100 and 1,024
// members with one device each:
//  - group_send/N: Groups::send end to end, against the real server's handlers in this process
//    (tests/util/in_process_server.h): the Content, padding, one Sender Key encryption, the
//    member devices' sessions read from the sealed SQLite store for their registration ids, the
//    MultiSendRequest built and serialized, the answer read. Every member already has our chain,
//    as after the first message. The CPU column is the sending thread's time only (the server
//    runs on threads of its own); Time is wall-clock, server included.
//  - group_send_floor/N: the part that does not touch the store: one group_encrypt of a padded
//    64-byte message and the MultiSendRequest for N devices, serialized.
// Setup (registering the members, creating the group, distributing the chain) is outside the
// timed loop. Run from the release preset: sotto_group_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "client/engine.h"
#include "client/multi_send.h"
#include "content.pb.h"
#include "protocol/sender_keys.h"
#include "service.pb.h"
#include "util/in_process_server.h"

namespace {

namespace fs = std::filesystem;
using namespace sotto;
using namespace sotto::client;

constexpr std::uint64_t kStartMs = 1'800'000'000'000;

// One sender and N member accounts on an in-process server, with a group of all of them.
class GroupFixture {
 public:
  explicit GroupFixture(int members) {
    char tmpl[] = "/tmp/sotto-group-bench-XXXXXX";
    root_ = mkdtemp(tmpl);
    clock_ = std::make_shared<ManualWallClock>(kStartMs);
    server::ServerConfig config;
    config.registrations_per_minute = 1'000'000;
    config.logins_per_minute = 1'000'000;
    config.logins_per_account_per_minute = 1'000'000;
    config.bundle_fetches_per_minute = 1'000'000;
    config.device_lists_per_minute = 1'000'000;
    config.sends_per_minute = 100'000'000;
    config.send_bytes_per_minute = 1ull << 40;
    config.max_queue_per_sender = 1'000'000;
    config.log_level = "error";
    server_ = std::make_unique<testing::InProcessServer>(root_ / "server", clock_, config);
    Engine& sender = add("sender");
    std::vector<std::string> names;
    for (int i = 0; i < members - 1; ++i) {
      names.push_back("member" + std::to_string(i));
      add(names.back());
    }
    auto created = sender.groups().create("bench", names);
    if (!created) throw std::runtime_error(created.error().message);
    id_ = created->id;
    // The first message distributes the chain; the timed ones do not.
    auto first = sender.groups().send(id_, "first");
    if (!first) throw std::runtime_error(first.error().message);
  }
  ~GroupFixture() {
    engines_.clear();
    server_.reset();
    fs::remove_all(root_);
  }
  Engine& sender() { return *engines_.front(); }
  const std::string& id() const { return id_; }

 private:
  Engine& add(const std::string& name) {
    Options o;
    o.data_dir = root_ / name;
    o.request_timeout = std::chrono::seconds(60);
    o.send_timeout = std::chrono::seconds(120);
    Environment e;
    e.connector = server_->connector();
    e.rng = &rngs_.emplace_back(9000 + rngs_.size());
    e.clock = clock_;
    auto engine = Engine::register_account(o, name, {"in-process", 1, server_->pin(), {}}, {}, e);
    if (!engine) throw std::runtime_error(engine.error().message);
    engines_.push_back(std::move(*engine));
    if (engines_.size() > 1) engines_.back().reset();  // members need no open client
    return *engines_.front();
  }

  fs::path root_;
  std::shared_ptr<ManualWallClock> clock_;
  std::unique_ptr<testing::InProcessServer> server_;
  std::deque<crypto::DeterministicRng> rngs_;
  std::vector<std::unique_ptr<Engine>> engines_;
  std::string id_;
};

// One fixture per group size for the whole run: Google Benchmark calls a case several times.
GroupFixture* fixture(int members) {
  static std::map<int, std::unique_ptr<GroupFixture>> fixtures;
  auto& f = fixtures[members];
  if (!f) f = std::make_unique<GroupFixture>(members);
  return f.get();
}

void BM_group_send(benchmark::State& state) {
  GroupFixture* f = nullptr;
  try {
    f = fixture(static_cast<int>(state.range(0)));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const std::string body(64, 'x');
  std::size_t devices = 0;
  for (auto _ : state) {
    auto sent = f->sender().groups().send(f->id(), body);
    if (!sent) {
      state.SkipWithError(sent.error().message.c_str());
      break;
    }
    devices = sent->devices;
  }
  state.counters["devices"] = static_cast<double>(devices);
}

void BM_group_send_floor(benchmark::State& state) {
  crypto::DeterministicRng rng(1);
  protocol::SenderKeyRecord own;
  (void)protocol::sender_key_distribution(own, rng);
  const auto n = static_cast<std::uint32_t>(state.range(0));
  for (auto _ : state) {
    wire::content::Content c;
    c.mutable_data()->set_body(std::string(64, 'x'));
    c.mutable_data()->set_timestamp(kStartMs);
    c.mutable_data()->mutable_group()->set_id(std::string(32, 'g'));
    c.mutable_data()->mutable_group()->set_revision(1);
    const std::string plaintext = encode_padded(c);
    auto ct = protocol::group_encrypt(own, as_bytes(plaintext), rng);
    if (!ct) {
      state.SkipWithError("group_encrypt failed");
      break;
    }
    MultiSendMessage m;
    m.timestamp = kStartMs;
    m.shared_content = std::move(*ct);
    m.recipients.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) {
      m.recipients.push_back({"member" + std::to_string(i), {{1, 1000 + i, std::nullopt, {}}}});
    }
    std::string wire_bytes = multi_send_request(m).SerializeAsString();
    benchmark::DoNotOptimize(wire_bytes.data());
  }
}

}  // namespace

BENCHMARK(BM_group_send)->Name("group_send")->Arg(100)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_group_send_floor)
    ->Name("group_send_floor")
    ->Arg(100)
    ->Arg(1024)
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
