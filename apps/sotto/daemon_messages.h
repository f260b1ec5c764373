// The daemon's methods for the everyday message types (docs/daemon.md, signal-cli's names and
// shapes): `sendReaction`, `remoteDelete`, `sendReceipt`, `sendTyping`, `updateContact`
// (`expiration`: the disappearing timer), `updateConfiguration` (`readReceipts`), and `send`
// with `quoteTimestamp`/`quoteAuthor`, `mention` or `editTimestamp`. daemon.cpp dispatches them
// here; what they answer is plain JSON or an Error, which daemon.cpp turns into JSON-RPC.
// Thread-safe as the Client is.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sotto/client.h"

namespace sotto::cli {

struct MessageCallOutcome {
  std::optional<nlohmann::json> result;
  std::optional<Error> error;
  std::string invalid_params;  // set: the params are not what the method takes
};

[[nodiscard]] MessageCallOutcome run_message_method(Client& client, std::string_view method,
                                                    const nlohmann::json& params);
// Whether a `send` call uses what only run_message_method handles (a quote, mentions, an edit).
[[nodiscard]] bool send_has_message_options(const nlohmann::json& params);

// What rpc.discover says of each method here (OpenRPC content descriptors, as JSON text).
struct MessageMethodDoc {
  const char* name;
  const char* summary;
  const char* params;
  const char* result;
};
[[nodiscard]] const std::vector<MessageMethodDoc>& message_method_docs();

}  // namespace sotto::cli
