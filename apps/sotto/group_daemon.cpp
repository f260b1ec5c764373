#include "group_daemon.h"

#include "attach_commands.h"
#include "group_commands.h"

namespace sotto::cli {

namespace {

using json = nlohmann::json;

GroupRpcOutcome invalid(std::string why) {
  return {std::nullopt, std::move(why), std::nullopt};
}
GroupRpcOutcome failed(Error e) {
  return {std::nullopt, std::nullopt, std::move(e)};
}
GroupRpcOutcome ok(json j) {
  return {std::move(j), std::nullopt, std::nullopt};
}

const json* param(const json& params, std::initializer_list<const char*> names) {
  if (!params.is_object()) return nullptr;
  for (const char* n : names) {
    if (auto it = params.find(n); it != params.end()) return &*it;
  }
  return nullptr;
}

// A list of usernames (a single string is a list of one); nullopt when malformed.
std::optional<std::vector<std::string>> names(const json& params,
                                              std::initializer_list<const char*> keys) {
  const json* p = param(params, keys);
  std::vector<std::string> out;
  if (p == nullptr) return out;
  if (p->is_string()) {
    out.push_back(p->get<std::string>());
    return out;
  }
  if (!p->is_array()) return std::nullopt;
  for (const auto& v : *p) {
    if (!v.is_string()) return std::nullopt;
    out.push_back(v.get<std::string>());
  }
  return out;
}

json list_entry(const Group& g) {
  json members = json::array();
  json admins = json::array();
  for (const auto& m : g.members) {
    members.push_back(m.user);
    if (m.admin) admins.push_back(m.user);
  }
  return {{"id", g.id},
          {"name", g.name},
          {"description", g.description},
          {"revision", g.revision},
          {"isMember", g.member},
          {"isAdmin", g.admin},
          {"members", members},
          {"admins", admins},
          {"groupInviteLink", g.invite_link},
          {"messageExpirationTime", g.expire_timer},
          {"avatar", avatar_json(g)}};
}

}  // namespace

GroupRpcOutcome rpc_send_group(Client& client, const json& params) {
  const json* id = param(params, {"groupId"});
  const json* body = param(params, {"message", "body"});
  // signal-cli's shape: "attachments" is a list of file paths (or one path).
  std::vector<std::string> files;
  if (const json* a = param(params, {"attachments", "attachment"}); a != nullptr) {
    if (a->is_string()) {
      files.push_back(a->get<std::string>());
    } else if (a->is_array()) {
      for (const auto& f : *a) {
        if (!f.is_string()) return invalid("attachments must be a list of file paths");
        files.push_back(f.get<std::string>());
      }
    } else {
      return invalid("attachments must be a list of file paths");
    }
  }
  if (id == nullptr || !id->is_string() || (body != nullptr && !body->is_string()) ||
      (body == nullptr && files.empty())) {
    return invalid("send to a group needs {groupId, message} (or attachments)");
  }
  std::vector<Attachment> attachments;
  if (!files.empty()) {
    auto uploaded = upload_files(client, files, false);
    if (!uploaded) return failed(uploaded.error());
    attachments = std::move(*uploaded);
  }
  auto r =
      client.send_group(id->get<std::string>(),
                        body != nullptr ? body->get<std::string>() : std::string(), attachments);
  if (!r) return failed(r.error());
  json result = {{"groupId", id->get<std::string>()},
                 {"type", "SUCCESS"},
                 {"timestamp", r->timestamp},
                 {"devices", r->devices}};
  if (!r->left_out.empty()) result["leftOut"] = r->left_out;
  return ok({{"timestamp", r->timestamp},
             {"devices", r->devices},
             {"results", json::array({std::move(result)})}});
}

GroupRpcOutcome rpc_update_group(Client& client, const json& params) {
  if (!params.is_object()) return invalid("updateGroup takes its params by name");
  const json* id = param(params, {"groupId"});
  const json* name = param(params, {"name"});
  const json* description = param(params, {"description"});
  const json* expiration = param(params, {"expiration"});
  const json* reset = param(params, {"resetLink"});
  const json* link = param(params, {"link"});
  const json* avatar = param(params, {"avatar"});
  const json* remove_avatar = param(params, {"removeAvatar"});
  auto add = names(params, {"members", "member", "addMembers"});
  auto remove = names(params, {"removeMembers", "removeMember"});
  auto admins = names(params, {"admins", "admin"});
  auto revoke = names(params, {"removeAdmins", "removeAdmin"});
  if ((id && !id->is_string()) || (name && !name->is_string()) ||
      (description && !description->is_string()) ||
      (expiration && !expiration->is_number_unsigned()) || (reset && !reset->is_boolean()) ||
      (link && (!link->is_string() || (*link != "enabled" && *link != "disabled"))) || !add ||
      !remove || !admins || !revoke || (avatar && !avatar->is_string()) ||
      (remove_avatar && !remove_avatar->is_boolean())) {
    return invalid(
        "updateGroup takes {groupId?, name?, description?, members?, removeMembers?, admins?, "
        "removeAdmins?, expiration?, resetLink?, link?: \"enabled\" | \"disabled\", avatar?: "
        "PATH, removeAvatar?: true}");
  }
  if (avatar && remove_avatar && remove_avatar->get<bool>()) {
    return invalid("updateGroup takes avatar or removeAvatar, not both");
  }
  std::string group_id;
  std::optional<Group> last;
  if (id == nullptr) {
    if (name == nullptr) return invalid("a new group needs a name");
    // The picture is checked first: a file that cannot be one makes no group.
    if (avatar) {
      if (auto pic = Client::check_group_picture(avatar->get<std::string>()); !pic) {
        return failed(pic.error());
      }
    }
    auto created = client.create_group(name->get<std::string>(), *add);
    if (!created) return failed(created.error());
    group_id = created->id;
    last = *created;
    add->clear();
    name = nullptr;
  } else {
    group_id = id->get<std::string>();
  }
  GroupUpdate u;
  u.add = *add;
  u.remove = *remove;
  u.make_admin = *admins;
  u.revoke_admin = *revoke;
  if (name) u.name = name->get<std::string>();
  if (description) u.description = description->get<std::string>();
  if (expiration) u.expire_timer = static_cast<std::uint32_t>(expiration->get<std::uint64_t>());
  u.disable_link = link && *link == "disabled";
  if (avatar) u.avatar = avatar->get<std::string>();
  u.remove_avatar = remove_avatar && remove_avatar->get<bool>();
  const bool has_update = !u.add.empty() || !u.remove.empty() || !u.make_admin.empty() ||
                          !u.revoke_admin.empty() || u.name || u.description || u.expire_timer ||
                          u.disable_link || u.avatar || u.remove_avatar;
  json out = {{"groupId", group_id}};
  if (has_update) {
    auto r = client.update_group(group_id, u);
    if (r) {
      last = *r;
    } else if (id == nullptr) {
      // The group is made (its members were told); only its picture failed (an upload): the
      // caller gets the group's id with the reason.
      out["warning"] = "the group is made, without its picture: " + r.error().message;
    } else {
      return failed(r.error());
    }
  }
  if ((reset && reset->get<bool>()) || (link && *link == "enabled")) {
    auto l = client.group_invite_link(group_id, reset && reset->get<bool>());
    if (!l) return failed(l.error());
    out["inviteLink"] = *l;
  }
  if (!last) {
    auto g = client.group(group_id);
    if (!g) return failed(g.error());
    last = *g;
  }
  out["name"] = last->name;
  out["revision"] = last->revision;
  out["avatar"] = avatar_json(*last);
  return ok(std::move(out));
}

GroupRpcOutcome rpc_list_groups(Client& client, const json&) {
  auto list = client.groups();
  if (!list) return failed(list.error());
  json out = json::array();
  for (const auto& g : *list) out.push_back(list_entry(g));
  return ok(std::move(out));
}

GroupRpcOutcome rpc_quit_group(Client& client, const json& params) {
  const json* id = param(params, {"groupId"});
  if (id == nullptr || !id->is_string()) return invalid("quitGroup needs {groupId}");
  auto r = client.leave_group(id->get<std::string>());
  if (!r) return failed(r.error());
  return ok({{"groupId", r->id}, {"revision", r->revision}});
}

GroupRpcOutcome rpc_join_group(Client& client, const json& params) {
  const json* uri = param(params, {"uri", "link"});
  if (uri == nullptr || !uri->is_string()) return invalid("joinGroup needs {uri}");
  auto r = client.join_group(uri->get<std::string>());
  if (!r) return failed(r.error());
  return ok({{"groupId", r->id}, {"isMember", r->member}});
}

}  // namespace sotto::cli
