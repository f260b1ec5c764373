// What `sotto chat` does beyond sending lines, shared by the 1:1 chat (main.cpp) and the group
// chat (chat_in_group, group_commands.h): `/attach PATH [CAPTION]` sends a file into the
// conversation. Errors are returned, for the chat to show on one line.
#pragma once

#include <string>

#include "sotto/client.h"

namespace sotto::cli {

// The words after `/attach`: a path (in double quotes when it holds spaces) and an optional
// caption (kept with the file); uploads the file and sends it to `conversation` (a
// username, or "group:" + a group id).
[[nodiscard]] Result<SendResult> send_file(Client& client, const std::string& conversation,
                                           const std::string& arguments);

}  // namespace sotto::cli
