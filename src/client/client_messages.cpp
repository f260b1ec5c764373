// The Client's methods for the everyday message types (include/sotto/client.h): each calls the
// engine's Conversations (src/client/conversations.h).
#include "client/engine.h"
#include "sotto/client.h"

namespace sotto {

Result<SendResult> Client::send(const std::string& to, const std::string& body,
                                const SendOptions& options) {
  return engine_->conversations().send(to, body, options);
}

Result<SendResult> Client::react(const std::string& conversation, const MessageRef& target,
                                 const std::string& emoji, bool remove) {
  return engine_->conversations().react(conversation, target, emoji, remove);
}

Result<SendResult> Client::edit(const std::string& conversation, std::uint64_t target_timestamp,
                                const std::string& body) {
  return engine_->conversations().edit(conversation, target_timestamp, body);
}

Result<SendResult> Client::remote_delete(const std::string& conversation,
                                         std::uint64_t target_timestamp) {
  return engine_->conversations().remote_delete(conversation, target_timestamp);
}

Result<std::size_t> Client::mark_read(const std::string& user,
                                      const std::vector<std::uint64_t>& timestamps) {
  return engine_->conversations().mark_read(user, timestamps);
}

Result<void> Client::send_typing(const std::string& user, bool started) {
  return engine_->conversations().send_typing(user, started);
}

Result<SendResult> Client::set_disappearing_timer(const std::string& user, std::uint32_t seconds) {
  return engine_->conversations().set_timer(user, seconds);
}

Result<std::uint32_t> Client::disappearing_timer(const std::string& user) {
  return engine_->conversations().timer(user);
}

Result<void> Client::set_read_receipts(bool on) {
  return engine_->conversations().set_read_receipts(on);
}

Result<bool> Client::read_receipts() {
  return engine_->conversations().read_receipts();
}

Result<Message> Client::find_message(const std::string& id) {
  return engine_->conversations().find(id);
}

}  // namespace sotto
