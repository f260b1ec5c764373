// The group calls of the public API (include/sotto/client.h), handed to the engine's Groups
// component (src/client/groups.h).
#include "client/engine.h"
#include "client/groups.h"
#include "client/util.h"
#include "sotto/client.h"

namespace sotto {

Result<Group> Client::create_group(const std::string& name,
                                   const std::vector<std::string>& members) {
  return engine_->groups().create(name, members);
}

Result<void> Client::check_group_picture(const std::filesystem::path& file) {
  auto type = client::check_group_picture(file);
  if (!type) return tl::unexpected(type.error());
  return {};
}

Result<Group> Client::update_group(const std::string& id, const GroupUpdate& update) {
  return engine_->groups().update(id, update);
}

Result<Group> Client::leave_group(const std::string& id) {
  return engine_->groups().leave(id);
}

Result<std::string> Client::group_invite_link(const std::string& id, bool reset) {
  return engine_->groups().invite_link(id, reset);
}

Result<Group> Client::join_group(const std::string& link) {
  return engine_->groups().join(link);
}

Result<std::vector<Group>> Client::groups() {
  return engine_->groups().list();
}

Result<Group> Client::group(const std::string& id) {
  return engine_->groups().info(id);
}

Result<SendResult> Client::send_group(const std::string& id, const std::string& body,
                                      const std::vector<Attachment>& attachments) {
  SendOptions options;
  options.attachments = attachments;
  return send_group(id, body, options);
}

Result<SendResult> Client::send_group(const std::string& id, const std::string& body,
                                      const SendOptions& options) {
  // Through the conversations, so quotes, mentions and the group's timer go with it.
  return engine_->conversations().send("group:" + id, body, options);
}

Result<std::vector<Message>> Client::group_history(const std::string& id, std::size_t limit) {
  // With each message's state (quote, reactions, edits, receipts, expiry) and files.
  return engine_->history("group:" + id, limit);
}

}  // namespace sotto
