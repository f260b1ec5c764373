// `sotto daemon`: JSON-RPC 2.0 for bots, one JSON value per line, over stdin/stdout or a Unix
// socket. docs/daemon.md is the reference (methods, notifications, delivery); the `rpc.discover`
// method returns the same list as an OpenRPC document, built from the table that dispatches.
//
// Delivery: the account is opened with Options::manual_ack, so an event stays in the account's
// journal until the daemon acknowledges it: once its `receive` notification was written in full
// to a subscribed peer, or when a polling bot asks for what comes after it (the `receive`
// method). A bot that was away gets what it missed when it connects.
//
// Threads: each peer (stdin/stdout, each socket connection) has a reader and a writer; requests
// run on a fixed pool of workers, long polls wait on one thread of their own, and the client's
// listener thread hands events over. A peer's lines never interleave; answers carry their
// request's id and may come in any order.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "sotto/client.h"

namespace sotto::cli {

struct DaemonOptions {
  std::string socket_path;                     // empty: stdin/stdout
  int send_timeout_seconds = 30;               // Options::send_timeout
  std::string receive_mode = "on-connection";  // or "manual": peers start unsubscribed
  std::string attachments_dir;                 // empty: Client::attachments_dir()
};

// Adds the daemon's options (--socket, --send-timeout, --receive-mode) to its subcommand.
void add_daemon_options(CLI::App& command, DaemonOptions& options);

// The account options the daemon runs with: manual acknowledgement of events and its send
// timeout, on top of the user's.
[[nodiscard]] Options daemon_client_options(Options options, const DaemonOptions& daemon);

// Runs until stdin closes (stdin mode), SIGINT/SIGTERM, or a fatal listener error. `client` must
// have been opened with daemon_client_options(). Returns the process exit code.
int run_daemon(Client& client, const DaemonOptions& options);

}  // namespace sotto::cli
