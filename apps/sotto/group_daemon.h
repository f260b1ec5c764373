// The daemon's group methods (docs/daemon.md, "Groups"), with signal-cli's names and parameter
// shapes: `send` with `groupId`, `updateGroup` (no groupId: creates one), `listGroups`,
// `quitGroup`, `joinGroup`. Parameters are by name (a JSON object). daemon.cpp dispatches to
// these and turns the outcome into the JSON-RPC answer. Thread-safe as Client is.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "sotto/client.h"

namespace sotto::cli {

// Exactly one of the three is set.
struct GroupRpcOutcome {
  std::optional<nlohmann::json> result;
  std::optional<std::string> invalid_params;  // the params are not what the method takes
  std::optional<Error> error;                 // the client's error
};

[[nodiscard]] GroupRpcOutcome rpc_send_group(Client& client, const nlohmann::json& params);
[[nodiscard]] GroupRpcOutcome rpc_update_group(Client& client, const nlohmann::json& params);
[[nodiscard]] GroupRpcOutcome rpc_list_groups(Client& client, const nlohmann::json& params);
[[nodiscard]] GroupRpcOutcome rpc_quit_group(Client& client, const nlohmann::json& params);
[[nodiscard]] GroupRpcOutcome rpc_join_group(Client& client, const nlohmann::json& params);

// The OpenRPC descriptions of the group methods' params and results (rpc.discover).
inline constexpr const char* kUpdateGroupParams =
    R"j([{"name": "groupId", "description": "absent: a new group is created",
          "schema": {"type": "string"}},
         {"name": "name", "schema": {"type": "string"}},
         {"name": "description", "schema": {"type": "string"}},
         {"name": "members", "description": "to add; alias: member",
          "schema": {"type": "array", "items": {"type": "string"}}},
         {"name": "removeMembers", "description": "alias: removeMember",
          "schema": {"type": "array", "items": {"type": "string"}}},
         {"name": "admins", "description": "to make admins; alias: admin",
          "schema": {"type": "array", "items": {"type": "string"}}},
         {"name": "removeAdmins", "description": "alias: removeAdmin",
          "schema": {"type": "array", "items": {"type": "string"}}},
         {"name": "expiration", "description": "disappearing messages in seconds, 0 is off",
          "schema": {"type": "integer"}},
         {"name": "resetLink", "schema": {"type": "boolean"}},
         {"name": "link", "schema": {"enum": ["enabled", "disabled"]}}])j";
inline constexpr const char* kGroupResult =
    R"j({"name": "group", "schema": {"type": "object", "properties": {
          "groupId": {"type": "string"}, "name": {"type": "string"},
          "revision": {"type": "integer"}, "inviteLink": {"type": "string"}}}})j";
inline constexpr const char* kListGroupsResult =
    R"j({"name": "groups", "schema": {"type": "array", "items": {"type": "object",
          "properties": {"id": {"type": "string"}, "name": {"type": "string"},
          "description": {"type": "string"}, "revision": {"type": "integer"},
          "isMember": {"type": "boolean"}, "isAdmin": {"type": "boolean"},
          "members": {"type": "array"}, "admins": {"type": "array"},
          "groupInviteLink": {"type": "boolean"},
          "messageExpirationTime": {"type": "integer"}}}}})j";
inline constexpr const char* kGroupIdParams =
    R"j([{"name": "groupId", "required": true, "schema": {"type": "string"}}])j";
inline constexpr const char* kJoinGroupParams =
    R"j([{"name": "uri", "required": true, "description": "the invite link, sotto-group:...",
          "schema": {"type": "string"}}])j";

}  // namespace sotto::cli
