#include "util/in_process_server.h"

#include <algorithm>
#include <atomic>
#include <optional>

#include "server/kt.h"

namespace sotto::testing {

SerialExecutor::SerialExecutor() {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and everything ran
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
      ++done_;
      cv_.notify_all();
    }
  });
}

SerialExecutor::~SerialExecutor() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  thread_.join();
}

void SerialExecutor::post(std::function<void()> task) {
  std::lock_guard lock(mu_);
  tasks_.push_back(std::move(task));
  ++posted_;
  cv_.notify_all();
}

void SerialExecutor::drain() {
  std::unique_lock lock(mu_);
  const std::uint64_t target = posted_;
  cv_.wait(lock, [&] { return done_ >= target; });
}

namespace {

// The client's end of a connection: where the server's frames are delivered, on a thread of its
// own. The executor is the last member, so it is drained and joined before the rest goes.
struct Mailbox {
  std::mutex mu;
  bool closed = false;
  client::TransportHandlers handlers;
  SerialExecutor io;

  void deliver(Bytes frame) {
    io.post([this, frame = std::move(frame)] {
      std::function<void(ByteView)> on_frame;
      {
        std::lock_guard lock(mu);
        if (closed) return;
        on_frame = handlers.on_frame;
      }
      if (on_frame) on_frame(frame);
    });
  }

  void close(const std::string& reason) {
    {
      std::lock_guard lock(mu);
      if (closed) return;
      closed = true;
    }
    io.post([this, reason] {
      if (handlers.on_close) handlers.on_close(reason);
    });
  }
};

class ServerSide final : public net::Connection, public std::enable_shared_from_this<ServerSide> {
 public:
  ServerSide(std::uint64_t id, std::shared_ptr<Mailbox> mailbox, InProcessServer& owner,
             SerialExecutor& io, std::array<std::uint8_t, 32> binding)
      : id_(id), mailbox_(std::move(mailbox)), owner_(owner), io_(io), binding_(binding) {}

  bool send(Bytes frame) override {
    if (closed_) return false;
    mailbox_->deliver(std::move(frame));
    return true;
  }
  void close(const std::string& reason) override {
    if (closed_.exchange(true)) return;
    mailbox_->close(reason);
    io_.post([self = shared_from_this()] { self->owner_.server().on_close(self); });
  }
  std::uint64_t id() const override { return id_; }
  const std::string& remote_address() const override { return address_; }
  std::size_t outbound_bytes() const override { return 0; }
  bool writable() override { return true; }  // never paced: nothing is buffered
  bool take_channel_binding(std::array<std::uint8_t, 32>& out) override {
    std::lock_guard lock(mu_);
    if (!binding_) return false;
    out = *std::exchange(binding_, std::nullopt);
    return true;
  }
  // Admission limits are the transport's (net_test, the process tests); none here.
  void promote() override {}
  void extend_login_deadline(std::chrono::seconds) override {}
  bool closed() const { return closed_; }

 private:
  std::uint64_t id_;
  std::shared_ptr<Mailbox> mailbox_;
  InProcessServer& owner_;
  SerialExecutor& io_;
  std::string address_ = "127.0.0.1";
  std::mutex mu_;
  std::optional<std::array<std::uint8_t, 32>> binding_;
  std::atomic<bool> closed_{false};
};

class ClientSide final : public client::Transport {
 public:
  ClientSide(std::shared_ptr<ServerSide> server_side, std::shared_ptr<Mailbox> mailbox,
             InProcessServer& owner, SerialExecutor& io, client::ChannelBinding binding,
             std::string pin, Bytes public_key)
      : server_side_(std::move(server_side)),
        mailbox_(std::move(mailbox)),
        owner_(owner),
        io_(io),
        binding_(binding),
        pin_(std::move(pin)),
        public_key_(std::move(public_key)) {}
  ~ClientSide() override { close(); }

  bool send(Bytes frame) override {
    if (server_side_->closed()) return false;
    io_.post([s = server_side_, frame = std::move(frame), &owner = owner_] {
      if (!s->closed()) owner.server().on_frame(s, frame);
    });
    return true;
  }
  void close() override { server_side_->close("closed by the client"); }
  bool is_open() const override { return !server_side_->closed(); }
  std::optional<client::ChannelBinding> channel_binding() const override { return binding_; }
  std::string server_pin() const override { return pin_; }
  Bytes server_public_key() const override { return public_key_; }

 private:
  std::shared_ptr<ServerSide> server_side_;
  std::shared_ptr<Mailbox> mailbox_;
  InProcessServer& owner_;
  SerialExecutor& io_;
  client::ChannelBinding binding_;
  std::string pin_;
  Bytes public_key_;
};

}  // namespace

class InProcessConnector final : public client::Connector {
 public:
  explicit InProcessConnector(InProcessServer& server) : server_(server) {}

  Result<std::unique_ptr<client::Transport>> open(const client::Endpoint& endpoint,
                                                  client::TransportHandlers handlers) override {
    std::uint64_t id = 0;
    std::string pin;
    Bytes public_key;
    {
      std::lock_guard lock(server_.mu_);
      if (!server_.reachable_) {
        return tl::unexpected(Error{ErrorCode::network, "cannot connect to " + endpoint.host + ":" +
                                                            std::to_string(endpoint.port) +
                                                            ": connection refused or unreachable"});
      }
      id = server_.next_id_++;
      pin = server_.pin_;
      public_key = server_.public_key_;
    }
    if (!endpoint.pins.empty() &&
        std::find(endpoint.pins.begin(), endpoint.pins.end(), pin) == endpoint.pins.end()) {
      return tl::unexpected(Error{
          ErrorCode::fingerprint_mismatch,
          "the server's key has fingerprint " + pin + ", not the pinned " + endpoint.pins.front()});
    }
    client::ChannelBinding binding{};
    server_.rng_.fill(binding);
    auto mailbox = std::make_shared<Mailbox>();
    std::string authorization;
    if (handlers.authorize) authorization = handlers.authorize(binding);
    mailbox->handlers = std::move(handlers);
    auto server_side = std::make_shared<ServerSide>(id, mailbox, server_, server_.io_, binding);
    {
      std::lock_guard lock(server_.mu_);
      server_.connections_.push_back(server_side);
    }
    server_.io_.post([s = server_side, authorization, &owner = server_] {
      owner.server().on_open(s, authorization);
    });
    return std::unique_ptr<client::Transport>(new ClientSide(
        server_side, mailbox, server_, server_.io_, binding, pin, std::move(public_key)));
  }

 private:
  InProcessServer& server_;
};

InProcessServer::InProcessServer(const std::filesystem::path& dir,
                                 std::shared_ptr<const client::WallClock> clock,
                                 server::ServerConfig config)
    : clock_(std::move(clock)), dir_(dir), pin_(std::string(64, 'a')) {
  std::filesystem::create_directories(dir);
  store::SqliteOptions options;
  options.log = [](std::string_view) {};
  options.now_ms = [c = clock_] { return c->now_ms(); };
  options.group_commit_max_delay = std::chrono::milliseconds(1);
  // The queue limits as the server binary passes them (apps/sotto-server).
  options.max_queue_per_device = static_cast<std::uint32_t>(config.max_queue_per_device);
  options.max_queue_bytes_per_device = config.max_queue_bytes_per_device;
  options.max_queue_per_sender = static_cast<std::uint32_t>(config.max_queue_per_sender);
  options.max_queue_bytes_per_sender = config.max_queue_bytes_per_sender;
  store_ = std::move(*store::SqliteServerStore::open(dir / "sotto.db", options));
  config.data_dir = dir;
  server_ = std::make_unique<server::Server>(config, *store_, metrics_, rng_,
                                             [c = clock_] { return c->now_ms(); });
  connector_ = std::make_shared<InProcessConnector>(*this);
}

InProcessServer::~InProcessServer() {
  drop_connections();
  settle();
  io_.drain();
}

void InProcessServer::enable_key_transparency() {
  auto opened = server::KeyTransparency::open(dir_, *store_->kt(), rng_,
                                              [c = clock_] { return c->now_ms(); });
  if (!opened) throw std::runtime_error("cannot open the transparency log: " + opened.error());
  kt_ = std::move(*opened);
  server_->set_key_transparency(kt_.get());
}

std::shared_ptr<client::Connector> InProcessServer::connector() {
  return connector_;
}

std::string InProcessServer::pin() const {
  std::lock_guard lock(mu_);
  return pin_;
}

void InProcessServer::set_pin(std::string pin) {
  std::lock_guard lock(mu_);
  pin_ = std::move(pin);
}

void InProcessServer::set_identity(const net::TlsIdentity& identity) {
  std::lock_guard lock(mu_);
  pin_ = identity.key_fingerprint;
  public_key_ = identity.public_key;
}

void InProcessServer::set_reachable(bool reachable) {
  std::lock_guard lock(mu_);
  reachable_ = reachable;
}

void InProcessServer::drop_connections() {
  std::vector<std::shared_ptr<net::Connection>> open;
  {
    std::lock_guard lock(mu_);
    std::erase_if(connections_, [](const auto& w) { return w.expired(); });
    for (const auto& w : connections_) {
      if (auto c = w.lock()) open.push_back(std::move(c));
    }
  }
  for (auto& c : open) c->close("connection lost");
}

void InProcessServer::settle() {
  io_.drain();
  store_->messages().flush();
  io_.drain();
}

}  // namespace sotto::testing
