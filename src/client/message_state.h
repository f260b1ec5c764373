// A message's state beyond its body (quote, mentions, reactions, edited and deleted marks,
// receipts, disappearing timer): its record (journal.proto MessageState), sealed in the store's
// message_state table and carried by journalled message events, and its reading into a Message.
// Pure functions; thread-safe.
#pragma once

#include <optional>

#include "crypto/bytes.h"
#include "crypto/secret.h"
#include "journal.pb.h"
#include "sotto/client.h"

namespace sotto::client {

using MessageState = wire::journal::MessageState;

// Whether `m` carries anything a MessageState records.
[[nodiscard]] bool has_state(const Message& m);
// Writes `m`'s state fields into `s` (replacing what `s` had of them).
void fill_state(const Message& m, MessageState& s);
// Sets `m`'s state fields from `s`.
void apply_state(const MessageState& s, Message& m);

// The sealed record, and back (nullopt: it does not parse). Quote texts are wiped afterwards.
[[nodiscard]] crypto::SecretBuffer encode_state(const MessageState& s);
[[nodiscard]] std::optional<MessageState> decode_state(ByteView record);

}  // namespace sotto::client
