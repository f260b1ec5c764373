// The engine's attachment calls (engine.h): uploads, sends with attachments, saving received
// ones. Kept apart from engine.cpp so that the flows stay one file each.
#include "client/attachment_format.h"
#include "client/attachment_history.h"
#include "client/attachments.h"
#include "client/engine.h"
#include "client/util.h"

namespace sotto::client {

Result<Attachment> Engine::upload_attachment(const std::filesystem::path& file,
                                             const std::string& caption, const Progress& progress) {
  Attachments attachments(*account_, link_);
  auto pointer = attachments.upload(file, caption, progress);
  if (!pointer) return tl::unexpected(pointer.error());
  std::string bytes = pointer->SerializeAsString();
  wipe(*pointer->mutable_key());
  Attachment a = public_attachment(bytes);
  wipe(bytes);
  return a;
}

Result<SendResult> Engine::send(const std::string& to, const std::string& body,
                                const std::vector<Attachment>& attachments) {
  SendOptions options;
  options.attachments = attachments;
  return conversations_.send(to, body, options);
}

Result<SavedAttachment> Engine::save_attachment(const Attachment& attachment,
                                                const std::filesystem::path& dir,
                                                const Progress& progress) {
  wire::content::AttachmentPointer pointer;
  if (!pointer.ParseFromString(attachment.pointer)) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "malformed attachment"));
  }
  Attachments attachments(*account_, link_);
  auto saved = attachments.download(pointer, dir.empty() ? attachments_dir() : dir, progress);
  wipe(*pointer.mutable_key());
  if (!saved) return tl::unexpected(saved.error());
  SavedAttachment out;
  out.path = saved->path.string();
  out.sha256 = saved->sha256;
  out.size = saved->size;
  out.content_type = attachment.content_type;
  out.file_name = attachment.file_name;
  return out;
}

std::filesystem::path Engine::attachments_dir() const {
  return account_->options.data_dir / "attachments" / account_->username;
}

}  // namespace sotto::client
