#include "attach_commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "output.h"
#include "terminal.h"

namespace sotto::cli {

namespace {

using json = nlohmann::json;

std::string human_size(std::uint64_t n) {
  char buf[32];
  if (n < 1024) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  } else if (n < 1024ull * 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(n) / 1024.0);
  } else if (n < 1024ull * 1024 * 1024) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(n) / (1024.0 * 1024.0));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(n) / (1024.0 * 1024.0 * 1024.0));
  }
  return buf;
}

// A one-line progress bar on stderr, redrawn at most ten times a second.
class Bar {
 public:
  Bar(std::string label, bool on) : label_(std::move(label)), on_(on && ::isatty(2) == 1) {}
  ~Bar() {
    if (on_ && drawn_) std::fputs("\n", stderr);
  }
  Progress callback() {
    if (!on_) return nullptr;
    return [this](std::uint64_t done, std::uint64_t total) { draw(done, total); };
  }

 private:
  void draw(std::uint64_t done, std::uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && done != total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    constexpr int kWidth = 30;
    const double f = total == 0 ? 1.0 : static_cast<double>(done) / static_cast<double>(total);
    const int filled = static_cast<int>(f * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r%s [%s] %3d%% %s / %s", label_.c_str(), bar.c_str(),
                 static_cast<int>(f * 100), human_size(done).c_str(), human_size(total).c_str());
    std::fflush(stderr);
  }

  std::string label_;
  bool on_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_;
};

// RFC 4648 base64 with padding: a thumbnail in JSON, ready for a data: URL.
std::string base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < in.size(); i += 3) {
    const auto byte = [&](std::size_t k) -> std::uint32_t {
      return k < in.size() ? static_cast<unsigned char>(in[k]) : 0u;
    };
    const std::uint32_t v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[v & 63] : '=';
  }
  return out;
}

// What the message says of an image: its size in pixels and its thumbnail (docs/attachments.md).
void add_image_fields(json& j, const Attachment& a) {
  if (a.width != 0) {
    j["width"] = a.width;
    j["height"] = a.height;
  }
  if (!a.thumbnail.empty()) {
    j["thumbnail"] = base64(a.thumbnail);
    j["thumbnailContentType"] = a.thumbnail_content_type;
  }
}

}  // namespace

Result<void> check_attach_files(const std::vector<std::string>& files) {
  bool earlier_exists = false;
  for (const auto& f : files) {
    std::error_code ec;
    if (std::filesystem::exists(f, ec)) {
      earlier_exists = true;
      continue;
    }
    std::string why = "--attach: file does not exist: " + sanitize(f, false);
    if (earlier_exists) {
      why +=
          " (--attach takes every word after it: put the message text before --attach, or use "
          "--caption)";
    }
    return tl::unexpected(Error{ErrorCode::invalid_argument, why});
  }
  return {};
}

Result<std::vector<Attachment>> upload_files(Client& client, const std::vector<std::string>& files,
                                             bool progress, const std::string& caption) {
  std::vector<Attachment> out;
  for (const auto& f : files) {
    Bar bar("upload " + sanitize(std::filesystem::path(f).filename().string(), false), progress);
    auto a = client.upload_attachment(f, caption, bar.callback());
    if (!a) {
      Error e = a.error();
      e.message = f + ": " + e.message;
      return tl::unexpected(e);
    }
    out.push_back(std::move(*a));
  }
  return out;
}

json save_attachments(Client& client, const Message& m, const std::filesystem::path& dir,
                      bool progress) {
  json out = json::array();
  for (const auto& a : m.attachments) {
    Bar bar("download " + sanitize(a.file_name, false), progress);
    auto saved = client.save_attachment(a, dir, bar.callback());
    if (!saved) {
      json failed = {{"fileName", a.file_name},
                     {"contentType", a.content_type},
                     {"size", a.size},
                     {"error", saved.error().message}};
      add_image_fields(failed, a);
      out.push_back(std::move(failed));
      continue;
    }
    json j = {{"path", saved->path},
              {"sha256", saved->sha256},
              {"size", saved->size},
              {"contentType", saved->content_type},
              {"fileName", saved->file_name}};
    if (!a.caption.empty()) j["caption"] = a.caption;
    add_image_fields(j, a);
    out.push_back(std::move(j));
  }
  return out;
}

json attachments_json(const std::vector<Attachment>& attachments) {
  json out = json::array();
  for (const auto& a : attachments) {
    json j = {{"fileName", a.file_name}, {"contentType", a.content_type}, {"size", a.size}};
    if (!a.caption.empty()) j["caption"] = a.caption;
    add_image_fields(j, a);
    out.push_back(std::move(j));
  }
  return out;
}

std::string attachments_text(const json& attachments) {
  std::string out;
  for (const auto& a : attachments) {
    out += "\n  [file] " + sanitize(a.value("fileName", std::string()), false) + " (" +
           human_size(a.value("size", std::uint64_t{0})) + ", " +
           sanitize(a.value("contentType", std::string()), false) + ")";
    if (a.contains("path")) out += " -> " + sanitize(a["path"].get<std::string>(), false);
    if (a.contains("error"))
      out += ": not saved: " + sanitize(a["error"].get<std::string>(), false);
    if (a.contains("caption")) {
      out += "\n    caption: " + sanitize(a["caption"].get<std::string>(), false);
    }
  }
  return out;
}

}  // namespace sotto::cli
