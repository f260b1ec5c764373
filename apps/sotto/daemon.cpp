#include "daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "attach_commands.h"
#include "daemon_messages.h"
#include "group_daemon.h"
#include "output.h"
#include "rpc_peer.h"
#include "terminal.h"

#ifndef SOTTO_VERSION
#define SOTTO_VERSION "unknown"
#endif

namespace sotto::cli {

namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr std::size_t kReadChunk = 64 * 1024;
// Requests run on this many threads; a send blocked on an unreachable server takes one, and
// requests that may wait for the server leave kReservedWorkers to the others.
constexpr std::size_t kWorkers = 8;
constexpr std::size_t kReservedWorkers = 2;
constexpr std::size_t kMaxPeers = 64;
// When the daemon or a connection ends: how long a peer may take to read its last answers.
constexpr std::chrono::seconds kDrainGrace{5};
constexpr std::size_t kDefaultReceiveLimit = 100;
constexpr std::size_t kMaxReceiveLimit = 1000;
constexpr double kMaxReceiveTimeoutSeconds = 600;
// Journal events read per store call when a peer catches up.
constexpr std::size_t kCatchUpPage = 256;

constexpr int kParseError = -32700;
constexpr int kInvalidRequest = -32600;
constexpr int kMethodNotFound = -32601;
constexpr int kInvalidParams = -32602;
constexpr int kInternalError = -32603;
constexpr int kApplicationError = -32000;

json rpc_error(const json& id, int code, const std::string& message, json data = nullptr) {
  json e = {{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = std::move(data);
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(e)}};
}

json rpc_result(const json& id, json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

json app_error(const json& id, const Error& e) {
  json data = {{"code", std::string(to_string(e.code))}};
  if (auto alert = sotto::cli::security_alert_json(e); !alert.is_null()) data["alert"] = alert;
  return rpc_error(id, kApplicationError, e.message, std::move(data));
}

std::string hex(const std::vector<std::uint8_t>& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xF];
  }
  return out;
}

// What a method handler gets: the request's params (an object, or an array for positional
// ones) and who asked.
struct Call {
  const std::shared_ptr<Peer>& peer;
  const json& id;
  const json& params;
  bool notification;  // no id: nobody reads the answer
  bool may_wait;      // false inside a batch: a long poll answers at once
};

class Daemon;
using Handler = json (Daemon::*)(const Call&);

// One method: what rpc.discover says of it (params and result as OpenRPC content descriptors)
// and the handler that runs it.
struct Method {
  const char* name;
  std::vector<const char*> aliases;  // earlier names, still accepted
  const char* summary;
  const char* params;  // JSON array of content descriptors
  const char* result;  // JSON content descriptor
  Handler handler;
  bool slow = false;  // may wait for the server (see Daemon::submit)
};

const std::vector<Method>& methods();

// The method a request object names (by name or alias); nullptr for anything else.
const Method* find_method(const json& request) {
  if (!request.is_object()) return nullptr;
  const auto it = request.find("method");
  if (it == request.end() || !it->is_string()) return nullptr;
  const auto& name = it->get_ref<const std::string&>();
  for (const auto& m : methods()) {
    if (name == m.name || std::find(m.aliases.begin(), m.aliases.end(), name) != m.aliases.end()) {
      return &m;
    }
  }
  return nullptr;
}

class Daemon {
 public:
  Daemon(Client& client, const DaemonOptions& options)
      : client_(client),
        username_(client.username()),
        subscribe_on_connect_(options.receive_mode != "manual"),
        attachments_dir_(options.attachments_dir),
        workers_(kWorkers, kReservedWorkers) {
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
    poller_ = std::thread([this] { poll_loop(); });
  }
  ~Daemon() {
    stop();
    for (int fd : wake_) {
      if (fd >= 0) ::close(fd);
    }
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  void quit(int code) {
    if (code != 0) exit_code_ = code;
    quit_ = true;
    if (wake_[1] >= 0) {
      const char b = 1;
      (void)!::write(wake_[1], &b, 1);
    }
  }
  int exit_code() const { return exit_code_; }

  // Finishes the requests still queued and the long polls (answered with what there is), then
  // joins the threads. Call after the client's listener stopped and every peer was served.
  void stop() {
    workers_.stop();
    {
      std::lock_guard lock(polls_mu_);
      polls_stopping_ = true;
      polls_cv_.notify_all();
    }
    if (poller_.joinable()) poller_.join();
  }

  // The client's event handler (listener thread): a `receive` notification to every subscribed
  // peer; a journal event at most once per peer and connection, in cursor order.
  void on_event(const Event& e) {
    // A message's files are saved before it is announced, so that the notification says where.
    if (e.kind == Event::Kind::message && !e.message.attachments.empty() && e.cursor != 0) {
      json saved = save_attachments(client_, e.message, attachments_dir_, false);
      std::lock_guard lock(saved_mu_);
      saved_[e.cursor] = std::move(saved);
      while (saved_.size() > 10'000) saved_.erase(saved_.begin());
    }
    {
      std::lock_guard lock(peers_mu_);
      std::optional<std::string> line;  // made for the first peer that takes it
      for (auto& peer : peers_) {
        if (!peer->subscribed || (e.cursor != 0 && e.cursor <= peer->last_cursor)) continue;
        if (!line) line = dump(receive_notification(e));
        if (e.cursor != 0) peer->last_cursor = e.cursor;
        (void)peer->send(*line, e.cursor);
      }
    }
    if (e.cursor != 0) journal_grew();
    if (e.kind == Event::Kind::fatal) {
      std::fprintf(stderr, "sotto: error: %s\n", sanitize(e.detail, false).c_str());
      quit(1);
    }
  }

  void serve_stdio() { serve_peer(std::make_shared<Peer>(STDIN_FILENO, STDOUT_FILENO, false)); }

  // Accepts connections on `listen_fd` until the daemon quits; each is served on a thread.
  void serve_socket(int listen_fd) {
    struct Connection {
      std::thread thread;
      std::shared_ptr<std::atomic<bool>> done;
    };
    std::vector<Connection> connections;
    while (!quit_) {
      pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      std::erase_if(connections, [](Connection& c) {
        if (!*c.done) return false;
        c.thread.join();
        return true;
      });
      if (quit_) break;
      if ((fds[0].revents & POLLIN) == 0) continue;
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      if (connections.size() >= kMaxPeers) {
        const std::string line =
            dump(rpc_error(nullptr, kApplicationError, "too many connections")) + "\n";
        (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(fd);
        continue;
      }
      auto done = std::make_shared<std::atomic<bool>>(false);
      auto peer = std::make_shared<Peer>(fd, fd, true);
      connections.push_back(Connection{std::thread([this, peer, done] {
                                         serve_peer(peer);
                                         *done = true;
                                       }),
                                       done});
    }
    quit(0);
    for (auto& c : connections) c.thread.join();
  }

  // The methods (dispatched through methods()).
  json send(const Call& c);
  // The everyday message types: daemon_messages.h runs them.
  json message_call(const Call& c, std::string_view method) {
    auto r = run_message_method(client_, method, c.params);
    if (!r.invalid_params.empty()) return rpc_error(c.id, kInvalidParams, r.invalid_params);
    if (r.error) return app_error(c.id, *r.error);
    return rpc_result(c.id, std::move(*r.result));
  }
  json send_reaction(const Call& c) { return message_call(c, "sendReaction"); }
  json remote_delete(const Call& c) { return message_call(c, "remoteDelete"); }
  json send_receipt(const Call& c) { return message_call(c, "sendReceipt"); }
  json send_typing(const Call& c) { return message_call(c, "sendTyping"); }
  json update_contact(const Call& c) { return message_call(c, "updateContact"); }
  json update_configuration(const Call& c) { return message_call(c, "updateConfiguration"); }
  json list_contacts(const Call& c);
  json list_devices(const Call& c);
  json remove_device(const Call& c);
  json block(const Call& c);
  json unblock(const Call& c);
  json change_blocks(const Call& c, bool block);
  json list_blocked(const Call& c);
  json require_auditor(const Call& c);
  json add_device(const Call& c);
  json trust(const Call& c);
  json list_identities(const Call& c);
  json safety_number(const Call& c);
  json history(const Call& c);
  json receive(const Call& c);
  json subscribe_receive(const Call& c);
  json unsubscribe_receive(const Call& c);
  json account(const Call& c);
  json version(const Call& c);
  json discover(const Call& c);
  // Groups (group_daemon.h).
  json group_outcome(const Call& c, GroupRpcOutcome o);
  json update_group(const Call& c) { return group_outcome(c, rpc_update_group(client_, c.params)); }
  json list_groups(const Call& c) { return group_outcome(c, rpc_list_groups(client_, c.params)); }
  json quit_group(const Call& c) { return group_outcome(c, rpc_quit_group(client_, c.params)); }
  json join_group(const Call& c) { return group_outcome(c, rpc_join_group(client_, c.params)); }

 private:
  // A long poll of the `receive` method, answered by poll_loop() once there are events after
  // `after` or the deadline passed.
  struct Poll {
    std::shared_ptr<Peer> peer;
    json id;
    std::uint64_t after = 0;
    std::size_t limit = 0;
    SteadyClock::time_point deadline;
    std::uint64_t seen = 0;  // journal_generation_ when the journal was last read for it
  };

  json event_params(const Event& e) const {
    json params = event_json(e);
    if (e.kind == Event::Kind::message && !e.message.attachments.empty()) {
      std::lock_guard lock(saved_mu_);
      if (auto it = saved_.find(e.cursor); it != saved_.end()) params["attachments"] = it->second;
    }
    params["account"] = username_;
    params["cursor"] = e.cursor;
    return params;
  }
  json receive_notification(const Event& e) const {
    return {{"jsonrpc", "2.0"}, {"method", "receive"}, {"params", event_params(e)}};
  }
  json events_result(const std::vector<Event>& events) const {
    json list = json::array();
    for (const auto& e : events) list.push_back(event_params(e));
    return {{"events", std::move(list)}};
  }

  // Drops journal events up to `cursor`: they reached the bot.
  void acknowledge(std::uint64_t cursor) {
    std::lock_guard lock(ack_mu_);
    if (cursor <= acknowledged_) return;
    if (auto r = client_.acknowledge(cursor); !r) {
      std::fprintf(stderr, "sotto: error: cannot acknowledge events: %s\n",
                   sanitize(r.error().message, false).c_str());
      return;
    }
    acknowledged_ = cursor;
  }

  // Starts pushing journal events to `peer`: first those it has not had yet in this connection,
  // oldest first, then (on_event) live ones.
  void subscribe(const std::shared_ptr<Peer>& peer) {
    std::lock_guard lock(peers_mu_);
    if (peer->subscribed) return;
    peer->subscribed = true;
    for (;;) {
      auto events = client_.events(peer->last_cursor, kCatchUpPage);
      if (!events) {
        std::fprintf(stderr, "sotto: error: cannot read the event journal: %s\n",
                     sanitize(events.error().message, false).c_str());
        return;
      }
      for (const Event& e : *events) {
        peer->last_cursor = e.cursor;
        if (!peer->send(dump(receive_notification(e)), e.cursor)) return;
      }
      if (events->size() < kCatchUpPage) return;
    }
  }
  void unsubscribe(const std::shared_ptr<Peer>& peer) {
    std::lock_guard lock(peers_mu_);
    peer->subscribed = false;
  }

  // One peer, from its first line to its end (or the daemon's): answers every request it sent
  // before its connection is let go.
  void serve_peer(const std::shared_ptr<Peer>& peer) {
    peer->start_writer([this](std::uint64_t cursor) { acknowledge(cursor); });
    {
      std::lock_guard lock(peers_mu_);
      peers_.push_back(peer);
    }
    if (subscribe_on_connect_) subscribe(peer);
    read_requests(peer);
    expire_polls(peer);
    peer->wait_idle();
    {
      std::lock_guard lock(peers_mu_);
      std::erase(peers_, peer);
    }
    peer->stop_writer(kDrainGrace);
  }

  // Reads requests from `peer` and queues them for the workers, until the end of its input or
  // the daemon quits.
  void read_requests(const std::shared_ptr<Peer>& peer) {
    LineSplitter splitter;
    bool stopped = false;
    const auto on_line = [&](std::string_view line) {
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
      if (!peer->begin_request(quit_)) {
        stopped = true;
        return;
      }
      submit(peer, json::parse(line, nullptr, false));
    };
    const auto on_too_large = [&](std::string_view prefix) {
      const json id = request_id_from_prefix(prefix).value_or(json(nullptr));
      (void)peer->send(dump(rpc_error(id, kInvalidRequest, "request too large")));
    };
    std::string chunk(kReadChunk, '\0');
    while (!quit_ && !stopped) {
      pollfd fds[2] = {{peer->in(), POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(fds, wake_[0] >= 0 ? 2 : 1, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (quit_) return;
      if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = ::read(peer->in(), chunk.data(), chunk.size());
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        splitter.finish(on_line);
        return;
      }
      splitter.feed(std::string_view(chunk.data(), static_cast<std::size_t>(n)), on_line,
                    on_too_large);
    }
  }

  // Queues a request (parsed here, on the peer's reader, in arrival order) for the workers. A
  // request that may wait for the server is `slow`: those leave two workers free for the rest.
  // Sends run one at a time in arrival order, so that messages to a user arrive in the order
  // they were asked for; the others run side by side.
  void submit(const std::shared_ptr<Peer>& peer, json request) {
    bool slow = false;
    bool sends = false;
    const auto classify = [&](const json& r) {
      if (const Method* m = find_method(r)) {
        slow = slow || m->slow;
        sends = sends || m->handler == &Daemon::send;
      }
    };
    if (request.is_array()) {
      for (const auto& r : request) classify(r);
    } else {
      classify(request);
    }
    workers_.submit(
        [this, peer, request = std::move(request)] {
          run_request(peer, request);
          peer->end_request();
        },
        slow, sends ? "send" : "");
  }

  // Runs one request (discarded: the line was not JSON) on a worker and writes its answer, if
  // any.
  void run_request(const std::shared_ptr<Peer>& peer, const json& request) {
    std::optional<json> reply;
    try {
      if (request.is_discarded()) {
        reply = rpc_error(nullptr, kParseError, "parse error");
      } else if (request.is_array()) {
        if (request.empty()) {
          reply = rpc_error(nullptr, kInvalidRequest, "empty batch");
        } else {
          json replies = json::array();
          for (const auto& r : request) {
            if (auto one = handle(peer, r, false)) replies.push_back(std::move(*one));
          }
          if (!replies.empty()) reply = std::move(replies);
        }
      } else {
        reply = handle(peer, request, true);
      }
    } catch (const std::exception&) {
      // A broken invariant, not input (input never throws): say so and keep serving.
      reply = rpc_error(nullptr, kInternalError, "internal error");
    }
    if (reply) (void)peer->send(dump(*reply));
  }

  // One request object; nullopt when nothing is to be written now (a notification, or a long
  // poll that poll_loop() answers later).
  std::optional<json> handle(const std::shared_ptr<Peer>& peer, const json& request,
                             bool may_wait) {
    if (!request.is_object()) return rpc_error(nullptr, kInvalidRequest, "invalid request");
    const auto id_it = request.find("id");
    const bool has_id = id_it != request.end();
    // An id is a string, a number or null (JSON-RPC 2.0, section 4); anything else is not copied
    // (a peer could nest it a million levels deep).
    if (has_id && !id_it->is_string() && !id_it->is_number() && !id_it->is_null()) {
      return rpc_error(nullptr, kInvalidRequest,
                       "invalid request: id must be a string or a number");
    }
    const json id = has_id ? *id_it : json(nullptr);
    const auto version_it = request.find("jsonrpc");
    const auto method_it = request.find("method");
    if (version_it == request.end() || *version_it != "2.0" || method_it == request.end() ||
        !method_it->is_string()) {
      return rpc_error(id, kInvalidRequest, "invalid request");
    }
    static const json kNoParams = json::object();
    const auto params_it = request.find("params");
    const json& params = params_it != request.end() ? *params_it : kNoParams;
    if (!params.is_object() && !params.is_array()) {
      if (!has_id) return std::nullopt;
      return rpc_error(id, kInvalidParams, "params must be an object or an array");
    }
    const Method* method = find_method(request);
    if (method == nullptr) {
      if (!has_id) return std::nullopt;
      return rpc_error(id, kMethodNotFound, "method not found");
    }
    const Call call{peer, id, params, !has_id, may_wait};
    json reply = (this->*method->handler)(call);
    if (!has_id || reply.is_discarded()) return std::nullopt;
    return reply;
  }

  // The long polls -------------------------------------------------------------------------

  void journal_grew() {
    std::lock_guard lock(polls_mu_);
    ++journal_generation_;
    polls_cv_.notify_all();
  }

  // Answers `peer`'s parked polls now, and those it may still park (its input ended: it is
  // waiting for its last answers).
  void expire_polls(const std::shared_ptr<Peer>& peer) {
    std::lock_guard lock(polls_mu_);
    peer->input_ended = true;
    for (auto& p : polls_) {
      if (p.peer == peer) p.deadline = SteadyClock::time_point::min();
    }
    polls_cv_.notify_all();
  }

  void answer(const Poll& p, const Result<std::vector<Event>>& events) {
    (void)p.peer->send(
        dump(events ? rpc_result(p.id, events_result(*events)) : app_error(p.id, events.error())));
    p.peer->end_request();
  }

  void poll_loop() {
    std::unique_lock lock(polls_mu_);
    for (;;) {
      const auto now = SteadyClock::now();
      const auto due = [&](const Poll& p) {
        return polls_stopping_ || p.seen != journal_generation_ || p.deadline <= now;
      };
      std::vector<Poll> ready;
      for (auto it = polls_.begin(); it != polls_.end();) {
        if (due(*it)) {
          ready.push_back(std::move(*it));
          it = polls_.erase(it);
        } else {
          ++it;
        }
      }
      if (ready.empty()) {
        if (polls_stopping_) return;
        if (polls_.empty()) {
          polls_cv_.wait(lock);
        } else {
          auto next = polls_.front().deadline;
          for (const auto& p : polls_) next = std::min(next, p.deadline);
          polls_cv_.wait_until(lock, next);
        }
        continue;
      }
      const std::uint64_t generation = journal_generation_;
      const bool stopping = polls_stopping_;
      lock.unlock();
      std::vector<Poll> waiting;
      for (auto& p : ready) {
        if (p.peer) {  // not again what was pushed to the poll's connection meanwhile
          std::lock_guard peers_lock(peers_mu_);
          if (p.peer->subscribed) p.after = std::max(p.after, p.peer->last_cursor);
        }
        auto events = client_.events(p.after, p.limit);
        if (events && events->empty() && !stopping && p.deadline > SteadyClock::now()) {
          p.seen = generation;
          waiting.push_back(std::move(p));
        } else {
          answer(p, events);
        }
      }
      lock.lock();
      for (auto& p : waiting) polls_.push_back(std::move(p));
    }
  }

  Client& client_;
  const std::string username_;
  const bool subscribe_on_connect_;
  const std::string attachments_dir_;
  // Received attachments saved by on_event, by the event's cursor (docs/attachments.md): a
  // message's notification and its later `receive` answers report where they are.
  mutable std::mutex saved_mu_;
  std::map<std::uint64_t, json> saved_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> quit_{false};
  std::atomic<int> exit_code_{0};

  std::mutex peers_mu_;  // guards peers_ and each peer's subscription state
  std::vector<std::shared_ptr<Peer>> peers_;

  std::mutex ack_mu_;
  std::uint64_t acknowledged_ = 0;

  std::mutex polls_mu_;  // guards what follows
  std::condition_variable polls_cv_;
  std::vector<Poll> polls_;
  std::uint64_t journal_generation_ = 0;
  bool polls_stopping_ = false;
  std::thread poller_;

  WorkerPool workers_;  // last: its threads go first
};

// Params ---------------------------------------------------------------------------------------

// The param called one of `names` (or at `index` of positional params); nullptr when absent.
const json* find_param(const Call& c, std::initializer_list<const char*> names, std::size_t index) {
  if (c.params.is_object()) {
    for (const char* name : names) {
      if (auto it = c.params.find(name); it != c.params.end()) return &*it;
    }
    return nullptr;
  }
  if (c.params.is_array() && index < c.params.size()) return &c.params[index];
  return nullptr;
}

std::optional<std::string> string_param(const Call& c, std::initializer_list<const char*> names,
                                        std::size_t index) {
  const json* p = find_param(c, names, index);
  if (p == nullptr || !p->is_string()) return std::nullopt;
  return p->get<std::string>();
}

// A non-negative integer param: `fallback` when absent, nullopt when not such a number.
std::optional<std::uint64_t> count_param(const Call& c, std::initializer_list<const char*> names,
                                         std::size_t index, std::uint64_t fallback) {
  const json* p = find_param(c, names, index);
  if (p == nullptr) return fallback;
  if (!p->is_number_unsigned()) return std::nullopt;
  return p->get<std::uint64_t>();
}

json invalid_params(const Call& c, const std::string& message) {
  return rpc_error(c.id, kInvalidParams, message);
}

json identity_json(const std::string& user, const SafetyNumber& sn) {
  return {{"user", user},
          {"digits", sn.digits},
          {"scannable", hex(sn.scannable)},
          {"identityKey", sn.identity_key_hex},
          {"changedAt", sn.changed_at},
          {"accepted", sn.accepted},
          {"verified", sn.verified},
          {"held", sn.held},
          {"trustLevel", !sn.accepted  ? "UNTRUSTED"
                         : sn.verified ? "TRUSTED_VERIFIED"
                                       : "TRUSTED_UNVERIFIED"}};
}

// Methods --------------------------------------------------------------------------------------

json Daemon::group_outcome(const Call& c, GroupRpcOutcome o) {
  if (o.invalid_params) return invalid_params(c, *o.invalid_params);
  if (o.error) return app_error(c.id, *o.error);
  return rpc_result(c.id, std::move(*o.result));
}

json Daemon::send(const Call& c) {
  if (c.params.is_object() && c.params.contains("groupId")) {
    if (c.params.contains("recipient") || c.params.contains("to")) {
      return invalid_params(c, "send takes either groupId or recipient, not both");
    }
    // A reply, mentions or an edit in a group: the everyday message types' send.
    if (send_has_message_options(c.params)) return message_call(c, "send");
    return group_outcome(c, rpc_send_group(client_, c.params));
  }
  if (send_has_message_options(c.params)) return message_call(c, "send");
  const json* to = find_param(c, {"recipient", "to"}, 0);
  const auto body = string_param(c, {"message", "body"}, 1);
  std::vector<std::string> recipients;
  if (to != nullptr && to->is_string()) {
    recipients.push_back(to->get<std::string>());
  } else if (to != nullptr && to->is_array() && !to->empty()) {
    for (const auto& r : *to) {
      if (!r.is_string())
        return invalid_params(c, "recipient must be a username or a list of them");
      recipients.push_back(r.get<std::string>());
    }
  }
  // signal-cli's shape: "attachments" is a list of file paths (or one path).
  std::vector<std::string> files;
  if (const json* a = find_param(c, {"attachments", "attachment"}, 2); a != nullptr) {
    if (a->is_string()) {
      files.push_back(a->get<std::string>());
    } else if (a->is_array()) {
      for (const auto& f : *a) {
        if (!f.is_string()) return invalid_params(c, "attachments must be a list of file paths");
        files.push_back(f.get<std::string>());
      }
    } else {
      return invalid_params(c, "attachments must be a list of file paths");
    }
  }
  if (recipients.empty() || (!body && files.empty())) {
    return invalid_params(c, "send needs {recipient, message} (or attachments)");
  }
  std::vector<Attachment> attachments;
  if (!files.empty()) {
    auto uploaded = upload_files(client_, files, false);
    if (!uploaded) return app_error(c.id, uploaded.error());
    attachments = std::move(*uploaded);
  }
  const std::string text = body.value_or(std::string());
  json results = json::array();
  std::uint64_t timestamp = 0;
  std::size_t devices = 0;
  for (const auto& recipient : recipients) {
    auto r = attachments.empty() ? client_.send(recipient, text)
                                 : client_.send(recipient, text, attachments);
    if (!r) {
      // In the words `sotto chat` and `sotto send` use, with the name.
      if (r.error().code == ErrorCode::not_found && r.error().message == "no such user") {
        r.error().message = "no such user: " + recipient + " has no account";
      }
      if (recipients.size() == 1) return app_error(c.id, r.error());
      results.push_back(
          {{"recipient", recipient},
           {"type", "FAILURE"},
           {"error",
            {{"code", std::string(to_string(r.error().code))}, {"message", r.error().message}}}});
      continue;
    }
    if (timestamp == 0) timestamp = r->timestamp;
    devices += r->devices;
    results.push_back({{"recipient", recipient},
                       {"type", "SUCCESS"},
                       {"timestamp", r->timestamp},
                       {"devices", r->devices}});
  }
  return rpc_result(
      c.id, {{"timestamp", timestamp}, {"devices", devices}, {"results", std::move(results)}});
}

json Daemon::list_contacts(const Call& c) {
  auto r = client_.contacts();
  if (!r) return app_error(c.id, r.error());
  json list = json::array();
  for (const auto& contact : *r) {
    list.push_back({{"username", contact.username},
                    {"accepted", contact.accepted},
                    {"verified", contact.verified},
                    {"identityChangedAt", contact.identity_changed_at},
                    {"identityKey", contact.identity_key_hex},
                    {"held", contact.held}});
  }
  return rpc_result(c.id, std::move(list));
}

json Daemon::list_devices(const Call& c) {
  auto r = client_.devices();
  if (!r) return app_error(c.id, r.error());
  json list = json::array();
  for (const auto& d : *r) {
    list.push_back({{"id", d.id},
                    {"name", d.name},
                    {"registrationId", d.registration_id},
                    {"createdDay", d.created_day},
                    {"current", d.current},
                    {"primary", d.primary}});
  }
  return rpc_result(c.id, std::move(list));
}

json Daemon::remove_device(const Call& c) {
  const auto device = count_param(c, {"deviceId"}, 0, 0);
  if (!device || *device == 0 || *device > UINT32_MAX) {
    return invalid_params(c, "removeDevice needs {deviceId} (a device id from listDevices)");
  }
  if (auto r = client_.remove_device(static_cast<std::uint32_t>(*device)); !r) {
    return app_error(c.id, r.error());
  }
  return rpc_result(c.id, json::object());
}

// `recipient`: one username or an array of them (signal-cli takes an array). Every name is
// checked before anything changes; `bad` names the first malformed one.
std::optional<std::vector<std::string>> recipients_param(const Call& c, std::string& bad) {
  const json* p = find_param(c, {"recipient", "user"}, 0);
  if (p == nullptr) return std::nullopt;
  std::vector<std::string> out;
  if (p->is_string()) {
    out.push_back(p->get<std::string>());
  } else if (p->is_array() && !p->empty() && p->size() <= 100) {
    for (const auto& r : *p) {
      if (!r.is_string()) return std::nullopt;
      out.push_back(r.get<std::string>());
    }
  } else {
    return std::nullopt;
  }
  for (auto& name : out) {
    auto normal = sotto::normalize_username(name);
    if (!normal) {
      bad = name;
      return std::nullopt;
    }
    name = *normal;
  }
  return out;
}

// Key transparency: with {auditor, maxAgeSeconds} requires that auditor's co-signature, with
// {auditor: null} (or "") requires none; without params only says what is required.
json Daemon::require_auditor(const Call& c) {
  const json* key = find_param(c, {"auditor"}, 0);
  if (key == nullptr && find_param(c, {"maxAgeSeconds"}, 1) != nullptr) {
    return invalid_params(c,
                          "requireAuditor: maxAgeSeconds needs an auditor (its key, 64 hex "
                          "digits)");
  }
  if (key != nullptr) {
    Result<void> r;
    if (key->is_null() || (key->is_string() && key->get<std::string>().empty())) {
      r = client_.require_auditor("", std::chrono::milliseconds(0));
    } else {
      const auto age = count_param(c, {"maxAgeSeconds"}, 1, UINT64_MAX);
      if (!key->is_string() || !age || *age > 365ull * 86400) {
        return invalid_params(c,
                              "requireAuditor needs {auditor, maxAgeSeconds} (the auditor's key, "
                              "64 hex digits, and seconds, at most a year) or {auditor: null}");
      }
      r = client_.require_auditor(key->get<std::string>(), std::chrono::seconds(*age));
    }
    if (!r) return app_error(c.id, r.error());
  }
  auto now = client_.required_auditor();
  if (!now) return app_error(c.id, now.error());
  if (!*now) return rpc_result(c.id, {{"auditor", nullptr}});
  return rpc_result(c.id,
                    {{"auditor", (*now)->key_hex},
                     {"maxAgeSeconds",
                      std::chrono::duration_cast<std::chrono::seconds>((*now)->max_age).count()}});
}

json Daemon::block(const Call& c) {
  return change_blocks(c, true);
}

json Daemon::unblock(const Call& c) {
  return change_blocks(c, false);
}

// The names are checked (well formed, not the account's own) before anything changes; then each is
// sent to the server in turn. A name the server refuses (no such user) stops there, and the error
// says which names before it were changed already.
json Daemon::change_blocks(const Call& c, bool block) {
  const std::string verb = block ? "block" : "unblock";
  std::string bad;
  const auto users = recipients_param(c, bad);
  if (!users) {
    if (!bad.empty()) return invalid_params(c, "not a username: \"" + bad + "\"");
    return invalid_params(c, verb + " needs {recipient}: a username or an array of them");
  }
  const std::string self = client_.username();
  for (const auto& user : *users) {
    if (user == self) return invalid_params(c, "an account cannot " + verb + " itself");
  }
  std::vector<std::string> done;
  for (const auto& user : *users) {
    if (auto r = block ? client_.block(user) : client_.unblock(user); !r) {
      Error e = r.error();
      if (!done.empty()) {
        std::string list;
        for (const auto& d : done) list += (list.empty() ? "" : ", ") + d;
        e.message += " (" + verb + "ed before it: " + list + ")";
      }
      return app_error(c.id, e);
    }
    done.push_back(user);
  }
  return rpc_result(c.id, json::object());
}

json Daemon::list_blocked(const Call& c) {
  auto r = client_.blocked();
  if (!r) return app_error(c.id, r.error());
  json list = json::array();
  for (const auto& name : *r) list.push_back({{"username", name}});
  return rpc_result(c.id, std::move(list));
}

json Daemon::add_device(const Call& c) {
  const auto code = string_param(c, {"uri", "code"}, 0);
  if (!code) return invalid_params(c, "addDevice needs {uri} (the code the new device shows)");
  auto r = client_.add_device(*code);
  if (!r) return app_error(c.id, r.error());
  return rpc_result(c.id, {{"deviceId", *r}});
}

json Daemon::trust(const Call& c) {
  const auto user = string_param(c, {"recipient", "user"}, 0);
  if (!user) return invalid_params(c, "trust needs {recipient}");
  std::optional<std::string> digits;
  if (const json* d = find_param(c, {"verifiedSafetyNumber"}, 1); d != nullptr) {
    if (!d->is_string())
      return invalid_params(c, "verifiedSafetyNumber must be a string of digits");
    digits = d->get<std::string>();
  }
  auto r = client_.trust(*user, digits);
  if (!r) return app_error(c.id, r.error());
  return rpc_result(c.id, identity_json(*user, *r));
}

json Daemon::safety_number(const Call& c) {
  const auto user = string_param(c, {"recipient", "user"}, 0);
  if (!user) return invalid_params(c, "safetyNumber needs {recipient}");
  auto r = client_.safety_number(*user);
  if (!r) return app_error(c.id, r.error());
  return rpc_result(c.id, identity_json(*user, *r));
}

json Daemon::list_identities(const Call& c) {
  std::vector<std::string> users;
  if (const json* p = find_param(c, {"recipient", "user"}, 0); p != nullptr) {
    if (!p->is_string()) return invalid_params(c, "recipient must be a username");
    users.push_back(p->get<std::string>());
  } else {
    auto contacts = client_.contacts();
    if (!contacts) return app_error(c.id, contacts.error());
    for (const auto& contact : *contacts) {
      if (!contact.identity_key_hex.empty()) users.push_back(contact.username);
    }
  }
  json list = json::array();
  for (const auto& user : users) {
    auto r = client_.safety_number(user);
    if (!r) return app_error(c.id, r.error());
    list.push_back(identity_json(user, *r));
  }
  return rpc_result(c.id, std::move(list));
}

json Daemon::history(const Call& c) {
  auto user = string_param(c, {"recipient", "user"}, 0);
  if (const auto group = string_param(c, {"groupId"}, 2); group && !user) user = "group:" + *group;
  if (!user) return invalid_params(c, "history needs {user} or {groupId}");
  const auto limit = count_param(c, {"limit"}, 1, 0);
  if (!limit) return invalid_params(c, "limit must be a non-negative integer");
  auto r = client_.history(*user, static_cast<std::size_t>(*limit));
  if (!r) return app_error(c.id, r.error());
  json list = json::array();
  for (const auto& m : *r) list.push_back(message_json(m));
  return rpc_result(c.id, std::move(list));
}

json Daemon::receive(const Call& c) {
  const auto after = count_param(c, {"after"}, 0, 0);
  if (!after) return invalid_params(c, "after must be a cursor (a non-negative integer)");
  const auto limit = count_param(c, {"limit"}, 1, kDefaultReceiveLimit);
  if (!limit || *limit == 0 || *limit > kMaxReceiveLimit) {
    return invalid_params(c,
                          "limit must be an integer from 1 to " + std::to_string(kMaxReceiveLimit));
  }
  double timeout = 0;
  if (const json* t = find_param(c, {"timeout"}, 2); t != nullptr) {
    if (!t->is_number() || t->get<double>() < 0 || t->get<double>() > kMaxReceiveTimeoutSeconds) {
      return invalid_params(c, "timeout must be a number of seconds from 0 to 600");
    }
    timeout = t->get<double>();
  }
  if (*after > 0) acknowledge(*after);
  // What was pushed to this connection is not given to it again: a notification's event is
  // acknowledged only once its line is written, and a poll sent right after reading that line
  // could otherwise arrive first and return the event a second time.
  std::uint64_t from = *after;
  if (c.peer) {
    std::lock_guard lock(peers_mu_);
    if (c.peer->subscribed) from = std::max(from, c.peer->last_cursor);
  }
  std::uint64_t generation = 0;
  {
    std::lock_guard lock(polls_mu_);
    generation = journal_generation_;
  }
  auto events = client_.events(from, static_cast<std::size_t>(*limit));
  if (!events) return app_error(c.id, events.error());
  if (events->empty() && timeout > 0 && c.may_wait && !c.notification) {
    Poll p;
    p.peer = c.peer;
    p.id = c.id;
    p.after = from;
    p.limit = static_cast<std::size_t>(*limit);
    p.deadline = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                          std::chrono::duration<double>(timeout));
    p.seen = generation;
    std::lock_guard lock(polls_mu_);
    if (!c.peer->input_ended) {
      c.peer->add_request();
      polls_.push_back(std::move(p));
      polls_cv_.notify_all();
      return json(json::value_t::discarded);  // answered by poll_loop()
    }
  }
  return rpc_result(c.id, events_result(*events));
}

json Daemon::subscribe_receive(const Call& c) {
  subscribe(c.peer);
  return rpc_result(c.id, 0);  // the connection's one subscription
}

json Daemon::unsubscribe_receive(const Call& c) {
  unsubscribe(c.peer);
  return rpc_result(c.id, true);
}

json Daemon::account(const Call& c) {
  return rpc_result(c.id, {{"username", username_}, {"device", client_.device_id()}});
}

json Daemon::version(const Call& c) {
  return rpc_result(c.id, {{"version", SOTTO_VERSION}});
}

// The notifications, for rpc.discover (OpenRPC has no place for them: an "x-" extension).
constexpr const char* kNotifications = R"([
  {"name": "receive",
   "summary": "An event of the account: a message, a message that could not be read, a contact's identity change, a change of our devices, a re-pinned server key, or the connection to the server coming and going",
   "params": [
     {"name": "account", "required": true, "schema": {"type": "string"}},
     {"name": "cursor", "required": true, "schema": {"type": "integer"},
      "description": "The event's id in the journal, for good; 0 for connection events, which are not journalled"},
     {"name": "type", "required": true, "schema": {"enum": ["message", "error", "identity_changed", "devices_changed", "server_key_changed", "connection", "fatal", "receipt", "typing", "reaction", "edit", "remote_delete", "disappearing_timer"]}}
   ]}
])";

// Shapes several methods share, for rpc.discover.
constexpr const char* kSchemas = R"({
  "Identity": {"type": "object", "properties": {
    "user": {"type": "string"}, "digits": {"type": "string", "description": "the 60-digit safety number"},
    "scannable": {"type": "string", "description": "hex bytes for a QR code"},
    "identityKey": {"type": "string"}, "changedAt": {"type": "integer", "description": "ms since the epoch; 0: never changed"},
    "accepted": {"type": "boolean"}, "verified": {"type": "boolean"},
    "held": {"type": "integer", "description": "messages held until the key is accepted"},
    "trustLevel": {"enum": ["UNTRUSTED", "TRUSTED_UNVERIFIED", "TRUSTED_VERIFIED"]}}},
  "Message": {"type": "object", "properties": {
    "id": {"type": "string"}, "from": {"type": "string"}, "device": {"type": "integer"},
    "timestamp": {"type": "integer"},
    "serverTimestamp": {"type": "integer", "description": "when the server stored it; absent when not known, as in the history"},
    "body": {"type": "string"}, "conversation": {"type": "string"}, "outgoing": {"type": "boolean"},
    "kind": {"enum": ["group_notice", "notice"], "description": "a row this device wrote (a group change, a refusal, a message that could not be read); absent for a message"},
    "receipts": {"type": "array", "items": {"type": "object", "properties": {
      "user": {"type": "string"},
      "deliveredAt": {"type": "integer", "description": "absent until delivered"},
      "readAt": {"type": "integer", "description": "absent until read"}}}}}}
})";

json Daemon::discover(const Call& c) {
  json list = json::array();
  for (const auto& m : methods()) {
    json method = {{"name", m.name},
                   {"summary", m.summary},
                   {"paramStructure", "by-name"},
                   {"params", json::parse(m.params)},
                   {"result", json::parse(m.result)}};
    if (!m.aliases.empty()) method["x-aliases"] = m.aliases;
    list.push_back(std::move(method));
  }
  return rpc_result(c.id, {{"openrpc", "1.2.6"},
                           {"info", {{"title", "sotto daemon"}, {"version", SOTTO_VERSION}}},
                           {"methods", std::move(list)},
                           {"components", {{"schemas", json::parse(kSchemas)}}},
                           {"x-notifications", json::parse(kNotifications)}});
}

// The table with the everyday message types' methods (daemon_messages.h) after it, in the order
// of message_method_docs().
std::vector<Method> with_message_methods(std::vector<Method> t) {
  const Handler handlers[] = {&Daemon::send_reaction,  &Daemon::remote_delete,
                              &Daemon::send_receipt,   &Daemon::send_typing,
                              &Daemon::update_contact, &Daemon::update_configuration};
  const auto& docs = message_method_docs();
  for (std::size_t i = 0; i < docs.size() && i < std::size(handlers); ++i) {
    t.push_back(
        {docs[i].name, {}, docs[i].summary, docs[i].params, docs[i].result, handlers[i], true});
  }
  return t;
}

const std::vector<Method>& methods() {
  static const std::vector<Method> base = {
      {"send",
       {},
       "Sends a text message to a user (every device of theirs, and our other devices), or with "
       "groupId to a group",
       R"([{"name": "recipient", "description": "alias: to; required without groupId",
            "schema": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
           {"name": "message", "required": false,
            "description": "UTF-8 text; alias: body; required without attachments",
            "schema": {"type": "string"}},
           {"name": "attachments", "required": false,
            "description": "files to send, encrypted: paths readable by the daemon, docs/attachments.md",
            "schema": {"type": "array", "items": {"type": "string"}}},
           {"name": "groupId", "description": "send to this group instead of recipients",
            "schema": {"type": "string"}}])",
       R"({"name": "sent", "schema": {"type": "object", "properties": {
            "timestamp": {"type": "integer"}, "devices": {"type": "integer"},
            "results": {"type": "array", "items": {"type": "object", "properties": {
              "recipient": {"type": "string"}, "type": {"enum": ["SUCCESS", "FAILURE"]},
              "timestamp": {"type": "integer"}, "devices": {"type": "integer"},
              "error": {"type": "object"}}}}}}})",
       &Daemon::send,
       true},
      {"updateGroup",
       {},
       "Creates a group (no groupId) or changes one (admins): name, description, members, "
       "admins, disappearing messages, invite link",
       kUpdateGroupParams,
       kGroupResult,
       &Daemon::update_group,
       true},
      {"listGroups",
       {},
       "The groups this device knows, with members and admins",
       "[]",
       kListGroupsResult,
       &Daemon::list_groups},
      {"quitGroup", {}, "Leaves a group", kGroupIdParams, kGroupResult, &Daemon::quit_group, true},
      {"joinGroup",
       {},
       "Asks the admin an invite link names to add us (a group_changed event says when)",
       kJoinGroupParams,
       kGroupResult,
       &Daemon::join_group,
       true},
      {"listContacts",
       {"contacts"},
       "The contacts and the state of their identity keys",
       "[]",
       R"({"name": "contacts", "schema": {"type": "array", "items": {"type": "object", "properties": {
            "username": {"type": "string"}, "accepted": {"type": "boolean"},
            "verified": {"type": "boolean"}, "identityChangedAt": {"type": "integer"},
            "identityKey": {"type": "string"}, "held": {"type": "integer"}}}}})",
       &Daemon::list_contacts},
      {"listDevices",
       {"devices"},
       "The devices of the account",
       "[]",
       R"({"name": "devices", "schema": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"},
            "registrationId": {"type": "integer"}, "createdDay": {"type": "integer"},
            "current": {"type": "boolean"}, "primary": {"type": "boolean"}}}}})",
       &Daemon::list_devices,
       true},
      {"removeDevice",
       {},
       "Removes a device from the account",
       R"([{"name": "deviceId", "required": true, "schema": {"type": "integer"}}])",
       R"({"name": "removed", "schema": {"type": "object"}})",
       &Daemon::remove_device,
       true},
      {"block",
       {},
       "Blocks users at the server: their messages are no longer stored for any device of the "
       "account (they are not told), and those already queued here are dropped unread",
       R"([{"name": "recipient", "required": true, "description": "a username or an array of them; alias: user",
            "schema": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}])",
       R"({"name": "blocked", "schema": {"type": "object"}})",
       &Daemon::block,
       true},
      {"unblock",
       {},
       "Lets blocked users' messages reach the account again",
       R"([{"name": "recipient", "required": true, "description": "a username or an array of them; alias: user",
            "schema": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}])",
       R"({"name": "unblocked", "schema": {"type": "object"}})",
       &Daemon::unblock,
       true},
      {"listBlocked",
       {},
       "The users the account blocks, sorted",
       "[]",
       R"({"name": "blocked", "schema": {"type": "array", "items": {"type": "object", "properties": {
            "username": {"type": "string"}}}}})",
       &Daemon::list_blocked,
       true},
      {"requireAuditor",
       {},
       "Key transparency: requires a co-signature by this auditor no older than maxAgeSeconds on "
       "every key lookup (null: none); without params, says what is required",
       R"([{"name": "auditor", "description": "the auditor's key (64 hex digits), or null",
            "schema": {"type": ["string", "null"]}},
           {"name": "maxAgeSeconds", "schema": {"type": "integer"}}])",
       R"({"name": "required", "schema": {"type": "object", "properties": {
            "auditor": {"type": ["string", "null"]}, "maxAgeSeconds": {"type": "integer"}}}})",
       &Daemon::require_auditor},
      {"addDevice",
       {},
       "Links the new device that shows a link code to the account",
       R"([{"name": "uri", "required": true, "description": "the link code; alias: code",
            "schema": {"type": "string"}}])",
       R"({"name": "added", "schema": {"type": "object", "properties": {
            "deviceId": {"type": "integer", "description": "0 when the device did not register in time"}}}})",
       &Daemon::add_device,
       true},
      {"trust",
       {},
       "Accepts a user's current identity key; marks it verified when the safety number given is "
       "its number",
       R"([{"name": "recipient", "required": true, "description": "alias: user",
            "schema": {"type": "string"}},
           {"name": "verifiedSafetyNumber", "required": false, "schema": {"type": "string"}}])",
       R"({"name": "identity", "schema": {"$ref": "#/components/schemas/Identity"}})",
       &Daemon::trust,
       true},
      {"listIdentities",
       {},
       "The identity keys of contacts (or of one) with their safety numbers and state",
       R"([{"name": "recipient", "required": false, "description": "alias: user",
            "schema": {"type": "string"}}])",
       R"({"name": "identities", "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Identity"}}})",
       &Daemon::list_identities,
       true},
      {"safetyNumber",
       {},
       "The safety number with a user and the state of their identity key",
       R"([{"name": "recipient", "required": true, "description": "alias: user",
            "schema": {"type": "string"}}])",
       R"({"name": "identity", "schema": {"$ref": "#/components/schemas/Identity"}})",
       &Daemon::safety_number,
       true},
      {"history",
       {},
       "The newest messages of a conversation, oldest first",
       R"([{"name": "user", "description": "alias: recipient; required without groupId",
            "schema": {"type": "string"}},
           {"name": "groupId", "description": "a group's conversation instead",
            "schema": {"type": "string"}},
           {"name": "limit", "required": false, "description": "0 (the default): all",
            "schema": {"type": "integer", "minimum": 0}}])",
       R"({"name": "messages", "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}}})",
       &Daemon::history},
      {"receive",
       {},
       "Acknowledges the events up to `after` and returns those after it (waiting up to `timeout` "
       "seconds when there are none)",
       R"([{"name": "after", "required": false, "schema": {"type": "integer", "minimum": 0}},
           {"name": "limit", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
           {"name": "timeout", "required": false, "schema": {"type": "number", "minimum": 0, "maximum": 600, "default": 0}}])",
       R"({"name": "events", "schema": {"type": "object", "properties": {
            "events": {"type": "array", "items": {"description": "as the params of a receive notification"}}}}})",
       &Daemon::receive},
      {"subscribeReceive",
       {},
       "Pushes events to this connection as receive notifications (the default unless "
       "--receive-mode manual)",
       "[]",
       R"({"name": "subscription", "schema": {"type": "integer"}})",
       &Daemon::subscribe_receive},
      {"unsubscribeReceive",
       {},
       "Stops pushing events to this connection",
       R"([{"name": "subscription", "required": false, "schema": {"type": "integer"}}])",
       R"({"name": "ok", "schema": {"type": "boolean"}})",
       &Daemon::unsubscribe_receive},
      {"account",
       {},
       "The account the daemon serves",
       "[]",
       R"({"name": "account", "schema": {"type": "object", "properties": {
            "username": {"type": "string"}, "device": {"type": "integer"}}}})",
       &Daemon::account},
      {"version",
       {},
       "The version of sotto",
       "[]",
       R"({"name": "version", "schema": {"type": "object", "properties": {"version": {"type": "string"}}}})",
       &Daemon::version},
      {"rpc.discover",
       {},
       "This document (OpenRPC)",
       "[]",
       R"({"name": "document", "schema": {"type": "object"}})",
       &Daemon::discover},
  };
  static const std::vector<Method> table = with_message_methods(base);
  return table;
}

// Creates, binds and listens on a Unix socket at `path` (mode 0600). -1 with a message on error.
int listen_unix(const std::string& path, std::string& error) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) {
    error = "the socket path is too long";
    return -1;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = "the socket path exists and is not a socket";
      return -1;
    }
    const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live =
        probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (probe >= 0) ::close(probe);
    if (live) {
      error = "another daemon is listening on the socket path";
      return -1;
    }
    ::unlink(path.c_str());  // a stale socket of a daemon that died
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = "cannot create a socket";
    return -1;
  }
  const mode_t old = ::umask(0077);
  const int bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (bound != 0 || ::listen(fd, 16) != 0) {
    error = std::string("cannot listen on the socket path: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

void add_daemon_options(CLI::App& command, DaemonOptions& options) {
  command.add_option("--socket", options.socket_path, "Unix socket path (default: stdin/stdout)");
  command
      .add_option("--send-timeout", options.send_timeout_seconds,
                  "Seconds a send keeps retrying before it fails (default 30)")
      ->check(CLI::Range(1, 3600));
  command
      .add_option("--receive-mode", options.receive_mode,
                  "on-connection (default): events are pushed to every connection; manual: only "
                  "after subscribeReceive (for bots that poll with `receive`)")
      ->check(CLI::IsMember({"on-connection", "manual"}));
  command.add_option("--attachments-dir", options.attachments_dir,
                     "Where received files are saved (default: DATA_DIR/attachments/ACCOUNT)");
}

Options daemon_client_options(Options options, const DaemonOptions& daemon) {
  options.manual_ack = true;
  options.send_timeout = std::chrono::seconds(daemon.send_timeout_seconds);
  return options;
}

int run_daemon(Client& client, const DaemonOptions& options) {
  ShutdownSignals signals;
  Daemon daemon(client, options);
  signals.on_signal([&daemon] { daemon.quit(0); });

  int listen_fd = -1;
  if (!options.socket_path.empty()) {
    std::string error;
    listen_fd = listen_unix(options.socket_path, error);
    if (listen_fd < 0) {
      signals.on_signal(nullptr);
      std::fprintf(stderr, "sotto: error: %s\n", error.c_str());
      return 1;
    }
  }
  if (auto started = client.start([&daemon](const Event& e) { daemon.on_event(e); }); !started) {
    signals.on_signal(nullptr);
    if (listen_fd >= 0) {
      ::close(listen_fd);
      ::unlink(options.socket_path.c_str());
    }
    std::fprintf(stderr, "sotto: error: %s\n", sanitize(started.error().message, false).c_str());
    return 1;
  }

  if (listen_fd >= 0) {
    daemon.serve_socket(listen_fd);
    ::close(listen_fd);
    ::unlink(options.socket_path.c_str());
  } else {
    daemon.serve_stdio();  // until stdin closes or a signal arrives
  }
  client.stop();               // no more events
  daemon.stop();               // the last requests and long polls
  signals.on_signal(nullptr);  // the daemon object goes away next
  return daemon.exit_code();
}

}  // namespace sotto::cli
