// The receiving loops: receive() drains the server's queue on the caller's thread; start() runs
// a listener thread that receives live, reconnecting with backoff, until stop(). Both hand the
// journal's events to the app's handler (journal.h) after each envelope, and pump() lets a flow
// (adding a device, linking with history) receive until something it waits for has happened.
//
// Thread-safe. A handler must not call receive(), pump() or stop() itself.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

#include "client/account.h"
#include "client/blocks.h"
#include "client/devices.h"
#include "client/inbox.h"
#include "client/journal.h"
#include "client/keys.h"
#include "client/server_link.h"

namespace sotto::client {

class Listener {
 public:
  Listener(Account& account, ServerLink& link, Inbox& inbox, KeyMaintenance& keys, Devices& devices,
           Blocks& blocks, Journal& journal)
      : account_(account),
        link_(link),
        inbox_(inbox),
        keys_(keys),
        devices_(devices),
        blocks_(blocks),
        journal_(journal) {}
  ~Listener() { stop(); }

  [[nodiscard]] Result<std::size_t> receive(std::chrono::milliseconds timeout,
                                            const EventHandler& handler);
  // Receives until `done()` is true (checked after each item) or the deadline passes; false on
  // timeout. Events are handed to the listener's handler when it runs, else kept in the journal.
  [[nodiscard]] Result<bool> pump(std::chrono::steady_clock::time_point deadline,
                                  const std::function<bool()>& done);
  [[nodiscard]] Result<void> start(EventHandler handler);
  void stop();
  [[nodiscard]] bool running();

  // Hands the journal's events not yet handed over in this process to `handler`, dropping them
  // from the journal afterwards unless Options::manual_ack. Returns how many.
  std::size_t deliver(const EventHandler& handler);
  // Makes the running listener hand them over on its thread (after a change made outside the
  // loops, such as trust() releasing held messages).
  void notify();

 private:
  // Handles one inbound item; true when it was the QueueDrained of the current connection.
  bool dispatch(const Inbound& in);
  void after_connect(const ConnectionPtr& c);
  // Runs a held key transparency check (Devices::recheck) when there is one; true if it ran.
  bool idle(const ConnectionPtr& c);
  void loop(const EventHandler& handler);

  Account& account_;
  ServerLink& link_;
  Inbox& inbox_;
  KeyMaintenance& keys_;
  Devices& devices_;
  Blocks& blocks_;
  Journal& journal_;

  std::mutex deliver_mu_;        // one delivery at a time, in cursor order
  std::uint64_t delivered_ = 0;  // the last cursor handed over in this process

  // The next periodic key transparency check of the listener's connection (its thread only,
  // and receive()'s, which never run together).
  std::chrono::steady_clock::time_point next_check_{};

  std::mutex mu_;  // guards thread_
  std::thread thread_;
};

}  // namespace sotto::client
