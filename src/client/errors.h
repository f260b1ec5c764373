// How the engine's lower layers' errors become the public API's (include/sotto/client.h). The
// texts say what happened in the library's terms; they never name a command or flag of the CLI
// (apps add their own hints) and never carry key material, message text or another user's data.
#pragma once

#include <string>

#include "protocol/error.h"
#include "sotto/client.h"
#include "store/client/client_store.h"

namespace sotto::client {

[[nodiscard]] Error from_store(store::ClientError e);
[[nodiscard]] Error from_protocol(protocol::Error e);
// Why a message could not be decrypted, for the user.
[[nodiscard]] std::string describe_decrypt_failure(protocol::Error e);

template <typename T>
[[nodiscard]] Result<T> store_result(tl::expected<T, store::ClientError> r) {
  if (!r) return tl::unexpected(from_store(r.error()));
  if constexpr (std::is_void_v<T>) {
    return {};
  } else {
    return std::move(*r);
  }
}

}  // namespace sotto::client
