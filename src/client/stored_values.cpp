#include "client/stored_values.h"

#include "sotto/client.h"

namespace sotto::client {

Bytes encode_names(const std::set<std::string>& names) {
  Bytes out;
  for (const auto& n : names) {
    out.insert(out.end(), n.begin(), n.end());
    out.push_back('\n');
  }
  return out;
}

std::set<std::string> decode_names(ByteView bytes) {
  std::set<std::string> out;
  std::string name;
  for (const std::uint8_t b : bytes) {
    if (b == '\n') {
      if (auto n = normalize_username(name)) out.insert(*n);
      name.clear();
    } else if (name.size() <= 64) {  // longer than any username: never one, however it ends
      name.push_back(static_cast<char>(b));
    }
  }
  return out;
}

Bytes encode_missing(const std::map<std::uint32_t, std::uint64_t>& missing) {
  Bytes out;
  out.reserve(missing.size() * 12);
  for (const auto& [id, since] : missing) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(id >> s));
    for (int s = 56; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(since >> s));
  }
  return out;
}

std::map<std::uint32_t, std::uint64_t> decode_missing(ByteView bytes) {
  std::map<std::uint32_t, std::uint64_t> out;
  if (bytes.size() % 12 != 0) return out;
  for (std::size_t i = 0; i < bytes.size(); i += 12) {
    std::uint32_t id = 0;
    std::uint64_t since = 0;
    for (std::size_t j = 0; j < 4; ++j) id = id << 8 | bytes[i + j];
    for (std::size_t j = 4; j < 12; ++j) since = since << 8 | bytes[i + j];
    out[id] = since;
  }
  return out;
}

Bytes encode_versions(const std::map<std::string, std::uint32_t>& versions) {
  Bytes out;
  for (const auto& [name, version] : versions) {
    const std::string line = name + " " + std::to_string(version) + "\n";
    out.insert(out.end(), line.begin(), line.end());
  }
  return out;
}

std::map<std::string, std::uint32_t> decode_versions(ByteView bytes) {
  std::map<std::string, std::uint32_t> out;
  std::string line;
  const auto take = [&] {
    const auto space = line.find(' ');
    if (space == std::string::npos) return;
    const std::string digits = line.substr(space + 1);
    if (digits.empty() || digits.size() > 10) return;
    std::uint64_t v = 0;
    for (const char ch : digits) {
      if (ch < '0' || ch > '9') return;
      v = v * 10 + static_cast<std::uint64_t>(ch - '0');
    }
    if (v > 0xFFFFFFFFu) return;
    auto name = normalize_username(line.substr(0, space));
    if (!name || *name != line.substr(0, space)) return;
    out[*name] = static_cast<std::uint32_t>(v);
  };
  for (const std::uint8_t b : bytes) {
    if (b == '\n') {
      take();
      line.clear();
    } else if (line.size() <= 80) {  // longer than any good line: never one, however it ends
      line.push_back(static_cast<char>(b));
    }
  }
  return out;
}

}  // namespace sotto::client
