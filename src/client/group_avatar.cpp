// Group pictures (docs/groups.md, "The group picture"): an admin's image uploaded as an encrypted
// attachment, whose pointer is GroupState.avatar; every member's client downloads it, checks it
// (digest, then that it decodes as a PNG or JPEG) and keeps it under
// attachments/<user>/group-avatars/<group id>.<png|jpg>. What this device has saved is recorded
// in the store ("group-avatar/<id>": the pointer's digest, the path, the image's SHA-256, size
// and type), so a picture is fetched once per change, and a failed download is tried again later
// without touching the group's state.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>

#include "client/attachments.h"
#include "client/errors.h"
#include "client/group_codec.h"
#include "client/groups.h"
#include "client/image_thumbnail.h"
#include "client/util.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

std::string avatar_value(const std::string& hex) {
  return "group-avatar/" + hex;
}

struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

// Whether the file is a PNG or JPEG that decodes (its content type), or why not.
Result<std::string> image_type(const std::filesystem::path& file) {
  FdGuard fd{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0)
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "cannot read " + file.string()));
  auto thumb = make_thumbnail(fd.fd);
  if (!thumb && thumb.error() != ImageError::too_detailed) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "a group picture must be a PNG or JPEG image (" +
                                                    file.filename().string() + ": " +
                                                    std::string(describe(thumb.error())) + ")"));
  }
  if (thumb) return thumb->content_type;
  // Decodes, but no thumbnail fits: the type from the first bytes.
  unsigned char head[3] = {};
  const bool png = ::pread(fd.fd, head, 1, 0) == 1 && head[0] == 0x89;
  return std::string(png ? "image/png" : "image/jpeg");
}

// The record of the picture this device saved: digest hex, path, sha256, size, type.
struct SavedAvatar {
  std::string digest;
  GroupAvatar avatar;
};

std::string encode_saved(const SavedAvatar& s) {
  return s.digest + "\n" + s.avatar.path + "\n" + s.avatar.sha256 + "\n" +
         std::to_string(s.avatar.size) + "\n" + s.avatar.content_type + "\n";
}

std::optional<SavedAvatar> decode_saved(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    if (end == std::string::npos) return std::nullopt;
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (lines.size() != 5) return std::nullopt;
  SavedAvatar s;
  s.digest = lines[0];
  s.avatar.downloaded = true;
  s.avatar.path = lines[1];
  s.avatar.sha256 = lines[2];
  const auto& size = lines[3];
  const auto parsed = std::from_chars(size.data(), size.data() + size.size(), s.avatar.size);
  if (parsed.ec != std::errc() || parsed.ptr != size.data() + size.size()) return std::nullopt;
  s.avatar.content_type = lines[4];
  return s;
}

}  // namespace

Result<std::string> check_group_picture(const std::filesystem::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "cannot read " + file.string()));
  }
  if (!S_ISREG(st.st_mode)) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, file.string() + " is not a regular file"));
  }
  if (static_cast<std::uint64_t>(st.st_size) > kMaxGroupAvatarBytes) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "a group picture is at most 5 MiB; " + file.string() +
                                         " has " + std::to_string(st.st_size) + " bytes"));
  }
  return image_type(file);
}

std::filesystem::path Groups::avatars_dir() const {
  return account_.options.data_dir / "attachments" / account_.username / "group-avatars";
}

Result<content::AttachmentPointer> Groups::upload_avatar(const std::string& hex,
                                                         const std::filesystem::path& file) {
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto s = load(hex);
    if (!s) return tl::unexpected(s.error());
    if (!s->has_value() || !is_admin(**s, account_.username)) {
      return tl::unexpected(
          make_error(ErrorCode::forbidden, "only an admin of the group can change it"));
    }
  }
  auto type = check_group_picture(file);
  if (!type) return tl::unexpected(type.error());
  Attachments attachments(account_, link_);
  auto pointer = attachments.upload(file, "", {});
  if (!pointer) return tl::unexpected(pointer.error());
  // The members see a picture, not the name of a file of ours.
  pointer->set_content_type(*type);
  pointer->set_file_name(*type == "image/png" ? "group-picture.png" : "group-picture.jpg");
  pointer->clear_caption();
  return pointer;
}

Result<void> Groups::fetch_avatar(const std::string& hex) {
  std::lock_guard avatar_lock(avatar_mu_);
  content::AttachmentPointer pointer;
  std::optional<SavedAvatar> saved;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    auto s = load(hex);
    if (!s) return tl::unexpected(s.error());
    auto v = account_.store->load_value(avatar_value(hex));
    if (!v) return tl::unexpected(from_store(v.error()));
    if (v->has_value()) saved = decode_saved(bytes_string((*v)->view()));
    if (!s->has_value() || !(*s)->has_avatar()) {
      // No picture (any more): forget the one we saved.
      if (v->has_value()) {
        std::error_code ec;
        if (saved) std::filesystem::remove(saved->avatar.path, ec);
        if (auto removed = account_.store->remove_value(avatar_value(hex)); !removed) {
          return tl::unexpected(from_store(removed.error()));
        }
      }
      return {};
    }
    pointer = (*s)->avatar();
  }
  const std::string digest = to_hex(as_bytes(pointer.digest()));
  std::error_code ec;
  if (saved && saved->digest == digest && std::filesystem::exists(saved->avatar.path, ec)) {
    wipe(*pointer.mutable_key());
    return {};
  }
  const std::filesystem::path dir = avatars_dir();
  const std::filesystem::path incoming = dir / ".incoming";
  pointer.set_file_name(hex);
  Attachments attachments(account_, link_);
  auto got = attachments.download(pointer, incoming, {});
  wipe(*pointer.mutable_key());
  if (!got) {
    return tl::unexpected(make_error(
        got.error().code, "the group picture could not be fetched: " + got.error().message));
  }
  auto type = image_type(got->path);
  if (!type) {
    std::filesystem::remove(got->path, ec);
    return tl::unexpected(
        make_error(ErrorCode::protocol, "the group picture is not a PNG or JPEG image; not shown"));
  }
  const std::filesystem::path path = dir / (hex + (*type == "image/png" ? ".png" : ".jpg"));
  std::filesystem::rename(got->path, path, ec);
  if (ec) {
    std::filesystem::remove(got->path, ec);
    return tl::unexpected(make_error(ErrorCode::store, "cannot save the group picture"));
  }
  if (saved && saved->avatar.path != path.string()) {
    std::filesystem::remove(saved->avatar.path, ec);
  }
  SavedAvatar record;
  record.digest = digest;
  record.avatar.downloaded = true;
  record.avatar.path = path.string();
  record.avatar.sha256 = got->sha256;
  record.avatar.size = got->size;
  record.avatar.content_type = *type;
  std::lock_guard crypto_lock(account_.crypto_mu);
  return store_result(
      account_.store->save_value(avatar_value(hex), as_bytes(encode_saved(record))));
}

void Groups::fill_avatar(Group& g, const content::GroupState& s) {
  if (!s.has_avatar()) return;
  GroupAvatar out;
  if (auto v = account_.store->load_value(avatar_value(g.id)); v && v->has_value()) {
    auto saved = decode_saved(bytes_string((*v)->view()));
    std::error_code ec;
    if (saved && saved->digest == to_hex(as_bytes(s.avatar().digest())) &&
        std::filesystem::exists(saved->avatar.path, ec)) {
      out = std::move(saved->avatar);
    }
  }
  g.avatar = std::move(out);
}

}  // namespace sotto::client
