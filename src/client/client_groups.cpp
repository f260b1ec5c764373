// The group calls of the public API (include/sotto/client.h), handed to the engine's Groups
// component (src/client/groups.h).
#include "client/engine.h"
#include "client/util.h"
#include "sotto/client.h"

namespace sotto {

Result<Group> Client::create_group(const std::string& name,
                                   const std::vector<std::string>& members) {
  return engine_->groups().create(name, members);
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
  std::vector<std::string> pointers;
  for (const auto& a : attachments) pointers.push_back(a.pointer);
  auto sent = engine_->groups().send(id, body, pointers);
  for (auto& p : pointers) client::wipe(p);
  return sent;
}

Result<std::vector<Message>> Client::group_history(const std::string& id, std::size_t limit) {
  return engine_->groups().history(id, limit);
}

}  // namespace sotto
