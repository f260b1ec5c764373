#include "client/attachment_history.h"

#include "client/attachment_format.h"
#include "client/util.h"
#include "content.pb.h"

namespace sotto::client {

namespace {

std::string value_name(const std::string& id) {
  return "attachments.msg." + id;
}

}  // namespace

bool save_message_attachments(store::ClientStore& store, const std::string& id,
                              const std::vector<std::string>& pointers) {
  wire::content::DataMessage holder;
  for (const auto& p : pointers) {
    if (!holder.add_attachments()->ParseFromString(p)) return false;
  }
  std::string bytes = holder.SerializeAsString();
  for (auto& a : *holder.mutable_attachments()) wipe(*a.mutable_key());
  const bool ok = store.save_value(value_name(id), as_bytes(bytes)).has_value();
  wipe(bytes);
  return ok;
}

std::vector<Attachment> load_message_attachments(store::ClientStore& store, const std::string& id) {
  std::vector<Attachment> out;
  auto value = store.load_value(value_name(id));
  if (!value || !*value) return out;
  wire::content::DataMessage holder;
  const ByteView bytes = (*value)->view();
  if (!holder.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return out;
  for (auto& p : *holder.mutable_attachments()) {
    out.push_back(public_attachment(p.SerializeAsString()));
    wipe(*p.mutable_key());
  }
  return out;
}

Attachment public_attachment(const std::string& pointer) {
  Attachment a;
  wire::content::AttachmentPointer p;
  if (!p.ParseFromString(pointer)) return a;
  a.file_name = p.file_name();
  a.content_type = p.content_type();
  a.caption = p.caption();
  a.size = p.size();
  a.width = p.width();
  a.height = p.height();
  // Received pointers had their thumbnail checked on arrival (drop_bad_thumbnail); this only
  // names its type.
  const std::string& thumb = p.thumbnail();
  if (thumb.size() <= kMaxAttachmentThumbnailBytes && thumb.size() >= 3) {
    if (thumb.compare(0, 4, "\x89PNG") == 0) {
      a.thumbnail = thumb;
      a.thumbnail_content_type = "image/png";
    } else if (thumb.compare(0, 3, "\xFF\xD8\xFF") == 0) {
      a.thumbnail = thumb;
      a.thumbnail_content_type = "image/jpeg";
    }
  }
  a.pointer = pointer;
  wipe(*p.mutable_key());
  return a;
}

}  // namespace sotto::client
