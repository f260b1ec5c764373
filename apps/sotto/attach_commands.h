// Attachments in the sotto CLI and daemon (docs/attachments.md): uploading the files given with
// --attach (or the daemon's "attachments"), saving what a received message carries, and the
// JSON and text that report them. Shared by `send`, `receive`, the daemon and any later command
// that sends a message with files (a group send). Progress bars go to standard error, and only
// when it is a terminal.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sotto/client.h"

namespace sotto::cli {

// Uploads each file in turn (a progress bar per file when `progress` and stderr is a terminal),
// each with `caption` (empty: none).
[[nodiscard]] Result<std::vector<Attachment>> upload_files(Client& client,
                                                           const std::vector<std::string>& files,
                                                           bool progress,
                                                           const std::string& caption = {});
// `send --attach`: every file exists, or an error that says which does not; when an earlier
// --attach was a file, the missing one is most likely the message's text (--attach takes every
// word after it), and the error says where the text goes.
[[nodiscard]] Result<void> check_attach_files(const std::vector<std::string>& files);

// Saves every attachment of `m` into `dir` (empty: the client's default) and returns the
// "attachments" array: {"path","sha256","size","contentType","fileName"} for each saved one, and
// {"fileName","contentType","size","error"} for one that could not be saved.
[[nodiscard]] nlohmann::json save_attachments(Client& client, const Message& m,
                                              const std::filesystem::path& dir, bool progress);

// What a message's attachments are, for history and events not saved: fileName, contentType,
// size, caption, width, height.
[[nodiscard]] nlohmann::json attachments_json(const std::vector<Attachment>& attachments);
// One indented line per attachment entry of such an array ("  [file] name (size, type) -> path").
[[nodiscard]] std::string attachments_text(const nlohmann::json& attachments);

}  // namespace sotto::cli
