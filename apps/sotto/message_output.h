// How the sotto CLI and daemon show what the everyday message types add (docs/messages.md): a
// message's quote, mentions, reactions, edited and deleted marks, receipts and expiry, and the
// events receipt, typing, reaction, edit, remote_delete and disappearing_timer. output.cpp calls
// these for the parts of a message or event that are theirs.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "sotto/client.h"

namespace sotto::cli {

// Adds the message's fields (quote, mentions, reactions, edited, deleted, expiresAt, receipts...)
// to its JSON object; fields with nothing to say are left out.
void add_message_fields(nlohmann::json& j, const Message& m);
// Lines (each starting "\n  ~ ") that follow a message's line: what it replies to, its marks,
// reactions, receipts and expiry; empty when there is nothing to add.
// `recipients` (a group's members but us, when known): receipts as counts of them.
[[nodiscard]] std::string message_extras_text(const Message& m, const std::string& self,
                                              std::size_t recipients = 0);
// The id the CLI shows for a message ("#" and its timestamp), which the commands accept.
[[nodiscard]] std::string message_id_text(const Message& m);
// The events of the everyday message types; false for another kind.
[[nodiscard]] bool message_event_json(const Event& e, nlohmann::json& out);
[[nodiscard]] bool message_event_text(const Event& e, const std::string& self, std::string& out);
// The receipt marks of an outgoing message: "✓" sent, "✓✓" delivered, "✓✓ read".
// With `recipients` (a group): "✓✓ delivered to 3/5, read by 1/5", or "✓✓ read by 5/5".
[[nodiscard]] std::string receipt_mark(const Message& m, std::size_t recipients = 0);

}  // namespace sotto::cli
