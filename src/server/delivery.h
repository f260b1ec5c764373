// The delivery service (service.proto SendRequest, MultiSendRequest, AckRequest, the Envelope and
// QueueDrained pushes): store-and-forward of ciphertext. A send is answered once its envelopes are
// durable; each recipient device gets them at least once, in the order they were stored, paced by
// its acknowledgements and by its connection's room; an acknowledgement deletes them. The promise,
// the push-before-commit rule, the no-overtaking invariant and the lock order are in
// docs/delivery.md. The storage budget (bytes stored plus bytes on their way to the store,
// against the configured maximum and the disk's free space) is kept here too.
// Thread-safe: handlers run on the I/O threads, store completions on the store's writer thread.
// Owned by the Server.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/context.h"
#include "server/service.h"

namespace sotto::server {

class DeliveryService final : public Service {
 public:
  // Sets the queue and storage gauges from the store, and warns at once when sends could not be
  // stored.
  explicit DeliveryService(Context& ctx);
  void add_routes(Router& router) override;
  // Pushes what the device has waiting (the drain).
  void after_login(const SessionPtr& s) override;
  void on_writable(const SessionPtr& s) override;
  // Expires old envelopes.
  void maintenance() override;

 private:
  // Replies asynchronously once the envelopes are durable.
  void on_send(const SessionPtr& s, wire::service::Request& r, wire::service::Response&& out);
  // Replies asynchronously once the envelopes are durable: the multi-recipient send
  // (server/multi_send.h), delivered as a SendRequest's envelopes are.
  void on_multi_send(const SessionPtr& s, wire::service::Request& r, wire::service::Response&& out);
  // Replies asynchronously once the deletion is durable.
  void on_ack(const SessionPtr& s, wire::service::Request& r, wire::service::Response&& out);

  // The envelopes of one send on their way out: which have been pushed, and which are counted
  // as waiting for their commit in the registry (SessionRegistry::with_device).
  // The push frame of the envelopes that hold a send's shared body (a multi-send): serialized
  // once, each envelope's id written in at `id_at`. Set before the send reaches the store, read
  // only afterwards.
  struct SharedFrame {
    Bytes frame;  // empty: none
    std::size_t id_at = 0;
    const Bytes* body = nullptr;
    std::string source;
    store::DeviceId source_device = 0;
    std::uint32_t type = 0;
    std::uint64_t client_timestamp = 0;
    std::uint64_t server_timestamp = 0;
  };
  struct Delivery {
    std::vector<store::QueuedEnvelope> envelopes;
    SharedFrame shared_frame;
    std::mutex mu;  // guards the members below
    std::vector<bool> pushed;
    std::vector<std::uint64_t> pushed_to;  // the connection each was pushed on
    std::vector<bool> counted;
    // Not stored: its device's queue was full (a multi-send stores the others); set by the
    // store's answer, before deliver_after_commit.
    std::vector<bool> refused;
    bool committed = false;  // deliver_after_commit has begun
  };
  // Envelopes decided per taking of the registry's lock.
  static constexpr std::size_t kRegistryChunk = 64;
  static void prepare_shared_frame(Delivery& delivery);
  // The serialized push of envelope i.
  static Bytes push_frame(const Delivery& delivery, std::size_t i);

  // Hands accepted envelopes (their `reserved` bytes reserved with reserve_storage) to the
  // store's group commit under the sender's dedup key, pushes what may go before the commit, and
  // once the commit is done (or failed) calls `answer` with its result, then delivers the rest.
  // `answer` runs on the store's writer thread.
  // `partial` (a multi-send): a device whose queue is full is left out instead of refusing the
  // whole send (store::MessageStore::enqueue_partial); `answer` gets the devices left out.
  using Stored = tl::expected<std::vector<store::MessageStore::Refusal>, store::Error>;
  void store_and_deliver(std::vector<store::QueuedEnvelope> envelopes, Bytes dedup,
                         std::uint64_t reserved, bool partial, std::function<void(Stored)> answer);
  // Lists the devices a multi-send left out (their queue full) in its answer.
  void report_left_out(const std::vector<store::MessageStore::Refusal>& refused,
                       wire::service::Response& out);
  // The refusal of a send whose envelopes the store did not take.
  void fail_stored(wire::service::Response& out, store::Error e);
  void drain(const SessionPtr& s);
  void deliver_before_commit(Delivery& delivery);
  void deliver_after_commit(Delivery& delivery, bool stored);
  // A time-ordered id (contract/ids.h) with 10 random bytes: unguessable, and in order of
  // arrival, so that the store's index on envelope ids grows at its end (like the dedup rows).
  store::EnvelopeId next_envelope_id(std::uint64_t now_ms);

  // Takes `tokens` sends and `bytes` bytes from the sending account's rate limits (docs/abuse.md);
  // when it is over either, answers RATE_LIMITED with the wait and returns false. Runs before
  // anything is looked up or stored, so one account cannot fill the disk or hold the writer.
  [[nodiscard]] bool within_send_rate(const SessionPtr& s, double tokens, double bytes,
                                      wire::service::Response& out);

  // Sends accepted and not answered yet, by dedup key (the retry rule, docs/delivery.md 1.4):
  // begin_send() claims the key for `s`'s send, or, when a send with the same key is under way
  // (a retry of it arrived before its answer), queues this request to be answered as that send is
  // and returns false. answer_send() answers the send and every retry queued behind it, and
  // frees the key. A send that claimed its key answers only through answer_send().
  [[nodiscard]] bool begin_send(const std::string& key, const SessionPtr& s,
                                const wire::service::Response& out);
  void answer_send(const std::string& key, const SessionPtr& s, wire::service::Response&& out);

  // Reserves `bytes` of the budget for a send on its way to the store; when they do not fit,
  // returns why (and nothing stays reserved).
  std::string reserve_storage(std::uint64_t bytes);
  // Why sends cannot be stored with `reserved` bytes (this one's included) on their way (empty:
  // they can).
  std::string storage_refusal(std::uint64_t reserved);

  Context& ctx_;

  // The storage budget: bytes of sends on their way to the store (not yet in stored_bytes()),
  // and the data directory's free space, read at most once a second.
  std::atomic<std::uint64_t> reserved_bytes_{0};
  std::atomic<std::int64_t> disk_checked_ms_{-1};  // steady clock; -1: never
  std::atomic<std::uint64_t> disk_free_bytes_{UINT64_MAX};
  std::atomic<std::int64_t> storage_warned_ms_{-1};  // steady clock of the last warning

  // The sends under way and the retries waiting for their answer (begin_send). A leaf lock: no
  // other lock is taken while it is held.
  struct WaitingRetry {
    SessionPtr session;
    std::uint64_t request_id = 0;
  };
  std::mutex sends_mu_;
  std::unordered_map<std::string, std::vector<WaitingRetry>> sending_;  // guarded by sends_mu_

  // Random bytes for envelope ids, drawn from the rng a block at a time (one system call per id
  // showed in profiles); guarded by id_mutex_.
  std::mutex id_mutex_;
  std::array<std::uint8_t, 4096> id_pool_{};
  std::size_t id_pool_used_ = sizeof(id_pool_);
};

}  // namespace sotto::server
