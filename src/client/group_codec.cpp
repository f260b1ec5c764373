#include "client/group_codec.h"

#include <algorithm>
#include <set>
#include <vector>

#include "client/attachment_format.h"
#include "client/text.h"
#include "client/util.h"
#include "sotto/client.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;

constexpr std::string_view kLinkPrefix = "sotto-group:";

// How many of a change's actions are set.
int actions(const content::GroupChange& c) {
  return (c.add_members_size() > 0) + (c.remove_members_size() > 0) +
         (c.promote_admins_size() > 0) + (c.demote_admins_size() > 0) + c.set_name() +
         c.set_description() + c.set_avatar() + c.set_expire_timer() + c.leave() +
         c.set_invite_secret() + !c.join_secret().empty();
}

std::string join_names(const google::protobuf::RepeatedPtrField<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The first remaining member becomes an admin when none is left.
void keep_an_admin(content::GroupState& s) {
  if (s.members_size() == 0) return;
  for (const auto& m : s.members()) {
    if (m.admin()) return;
  }
  s.mutable_members(0)->set_admin(true);
}

}  // namespace

std::optional<std::string> check_group_state(const content::GroupState& s) {
  if (s.id().size() != kGroupIdBytes) return "a group id is not 32 bytes";
  if (static_cast<std::size_t>(s.members_size()) > kMaxGroupMembers) {
    return "a group with more than 1024 members";
  }
  if (s.name().size() > kMaxGroupNameBytes || !valid_utf8(s.name())) {
    return "a group name that is too long or not UTF-8";
  }
  if (s.description().size() > kMaxGroupDescriptionBytes || !valid_utf8(s.description())) {
    return "a group description that is too long or not UTF-8";
  }
  if (!s.invite_secret().empty() && s.invite_secret().size() != kInviteSecretBytes) {
    return "an invite secret that is not 32 bytes";
  }
  if (s.has_avatar()) {
    const auto& a = s.avatar();
    if (auto bad = check_pointer(a); !bad.empty())
      return "a group picture that cannot be fetched: " + bad;
    if (a.size() > kMaxGroupAvatarBytes) return "a group picture larger than 5 MiB";
    if (a.content_type() != "image/png" && a.content_type() != "image/jpeg") {
      return "a group picture that is not a PNG or JPEG image";
    }
  }
  std::set<std::string> seen;
  bool admin = false;
  for (const auto& m : s.members()) {
    if (normalize_username(m.user()) != m.user()) return "a member name that is not a username";
    if (!seen.insert(m.user()).second) return "a member listed twice";
    admin = admin || m.admin();
  }
  if (!seen.empty() && !admin) return "a group without an admin";
  return std::nullopt;
}

const content::GroupMember* find_member(const content::GroupState& s, const std::string& user) {
  for (const auto& m : s.members()) {
    if (m.user() == user) return &m;
  }
  return nullptr;
}

bool is_admin(const content::GroupState& s, const std::string& user) {
  const auto* m = find_member(s, user);
  return m != nullptr && m->admin();
}

tl::expected<content::GroupState, std::string> apply_group_change(
    const content::GroupState& current, const content::GroupChange& change,
    const std::string& author, std::uint64_t base) {
  using R = tl::expected<content::GroupState, std::string>;
  const auto refuse = [](std::string why) -> R { return tl::unexpected(std::move(why)); };
  if (base != current.revision()) {
    return refuse("a change made on revision " + std::to_string(base) + ", but this device is at " +
                  std::to_string(current.revision()));
  }
  if (!change.join_secret().empty()) return refuse("a join request is not a change");
  if (actions(change) != 1) return refuse("a change without exactly one action");
  if (change.via_link() && change.add_members_size() != 1) {
    return refuse("a join by link that does not add exactly one member");
  }
  if (find_member(current, author) == nullptr) {
    return refuse(author + " is not a member of the group");
  }
  if (!change.leave() && !is_admin(current, author)) {
    return refuse(author + " changed the group but is not an admin");
  }
  content::GroupState next = current;
  next.set_revision(current.revision() + 1);
  const auto member_index = [&](const std::string& user) -> int {
    for (int i = 0; i < next.members_size(); ++i) {
      if (next.members(i).user() == user) return i;
    }
    return -1;
  };
  for (const auto& m : change.add_members()) {
    if (normalize_username(m.user()) != m.user()) return refuse("an added name is not a username");
    if (member_index(m.user()) >= 0) return refuse(m.user() + " is already a member");
    *next.add_members() = m;
  }
  for (const auto& user : change.remove_members()) {
    const int i = member_index(user);
    if (i < 0) return refuse(user + " is not a member");
    if (user == author) return refuse("an admin removing themself (that is leaving)");
    next.mutable_members()->DeleteSubrange(i, 1);
  }
  for (const auto& user : change.promote_admins()) {
    const int i = member_index(user);
    if (i < 0) return refuse(user + " is not a member");
    next.mutable_members(i)->set_admin(true);
  }
  for (const auto& user : change.demote_admins()) {
    const int i = member_index(user);
    if (i < 0) return refuse(user + " is not a member");
    next.mutable_members(i)->set_admin(false);
  }
  if (change.demote_admins_size() > 0) {
    bool any = false;
    for (const auto& m : next.members()) any = any || m.admin();
    if (!any) return refuse("a change that leaves the group without an admin");
  }
  if (change.set_name()) next.set_name(change.name());
  if (change.set_description()) next.set_description(change.description());
  if (change.set_avatar()) {
    if (change.has_avatar()) {
      *next.mutable_avatar() = change.avatar();
    } else {
      next.clear_avatar();
    }
  }
  if (change.set_expire_timer()) next.set_expire_timer(change.expire_timer());
  if (change.set_invite_secret()) next.set_invite_secret(change.invite_secret());
  if (change.leave()) {
    next.mutable_members()->DeleteSubrange(member_index(author), 1);
    keep_an_admin(next);
  }
  if (auto bad = check_group_state(next)) return refuse("the change would make " + *bad);
  return next;
}

tl::expected<content::GroupState, std::string> state_for_new_member(
    const content::GroupChange& change, ByteView group_id, std::uint64_t base,
    const std::string& author, const std::string& self) {
  using R = tl::expected<content::GroupState, std::string>;
  const auto refuse = [](std::string why) -> R { return tl::unexpected(std::move(why)); };
  if (!change.has_state()) return refuse("a change for a group this device does not know");
  const content::GroupState& s = change.state();
  if (auto bad = check_group_state(s)) return refuse(*bad);
  const ByteView state_id = as_bytes(s.id());
  if (!std::equal(group_id.begin(), group_id.end(), state_id.begin(), state_id.end())) {
    return refuse("a change whose state is of another group");
  }
  if (s.revision() != base + 1) return refuse("a change whose state is not at its revision");
  if (find_member(s, self) == nullptr) return refuse("a group this account is not a member of");
  if (!is_admin(s, author)) return refuse(author + " added us but is not an admin");
  return s;
}

namespace {

// "off", "1 week", "5 minutes", "90 seconds": the largest unit that divides the timer.
std::string timer_text(std::uint32_t seconds) {
  if (seconds == 0) return "off";
  static constexpr std::pair<std::uint32_t, const char*> kUnits[] = {
      {604800, "week"}, {86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};
  for (const auto& [size, name] : kUnits) {
    if (seconds % size != 0) continue;
    const std::uint32_t n = seconds / size;
    return std::to_string(n) + " " + name + (n == 1 ? "" : "s");
  }
  return std::to_string(seconds) + " seconds";
}

}  // namespace

std::string describe_group_change(const content::GroupChange& c, const std::string& author) {
  if (c.add_members_size() > 0) {
    std::string names;
    for (const auto& m : c.add_members()) names += (names.empty() ? "" : ", ") + m.user();
    if (c.via_link()) return names + " joined by invite link (accepted by " + author + ")";
    return author + " added " + names;
  }
  if (c.remove_members_size() > 0) return author + " removed " + join_names(c.remove_members());
  if (c.promote_admins_size() > 0) {
    return author + " made " + join_names(c.promote_admins()) + " admin";
  }
  if (c.demote_admins_size() > 0) {
    return author + " made " + join_names(c.demote_admins()) + " no longer admin";
  }
  if (c.set_name()) return author + " renamed the group to \"" + c.name() + "\"";
  if (c.set_description()) return author + " changed the description";
  if (c.set_avatar()) {
    return author + (c.has_avatar() ? " changed the group picture" : " removed the group picture");
  }
  if (c.set_expire_timer()) {
    return author + " set disappearing messages to " + timer_text(c.expire_timer());
  }
  if (c.leave()) return author + " left the group";
  if (c.set_invite_secret()) {
    return author + (c.invite_secret().empty()
                         ? " turned the invite link off"
                         : " made a new invite link (earlier links no longer work)");
  }
  return author + " changed the group";
}

std::string format_invite_link(const InviteLink& link) {
  return std::string(kLinkPrefix) + to_hex(link.group_id) + "." + to_hex(link.secret) + "." +
         link.admin + "." + std::to_string(link.device);
}

std::optional<InviteLink> parse_invite_link(std::string_view text) {
  if (text.size() > 256 || text.substr(0, kLinkPrefix.size()) != kLinkPrefix) return std::nullopt;
  text.remove_prefix(kLinkPrefix.size());
  std::vector<std::string_view> parts;
  while (true) {
    const auto dot = text.find('.');
    parts.push_back(text.substr(0, dot));
    if (dot == std::string_view::npos) break;
    text.remove_prefix(dot + 1);
  }
  // A username may hold dots: the id, the secret, then the admin up to the last dot.
  if (parts.size() < 4) return std::nullopt;
  std::string admin_text;
  for (std::size_t i = 2; i + 1 < parts.size(); ++i) {
    if (i != 2) admin_text += '.';
    admin_text.append(parts[i]);
  }
  const std::string_view device_text = parts.back();
  if (device_text.empty() || device_text.size() > 9) return std::nullopt;
  std::uint32_t device = 0;
  for (char ch : device_text) {
    if (ch < '0' || ch > '9') return std::nullopt;
    device = device * 10 + static_cast<std::uint32_t>(ch - '0');
  }
  auto id = parse_group_id(parts[0]);
  auto secret = parse_group_id(parts[1]);
  auto admin = normalize_username(admin_text);
  if (!id || !secret || !admin || *admin != admin_text || device == 0) return std::nullopt;
  return InviteLink{std::move(*id), std::move(*secret), std::move(*admin), device};
}

std::optional<std::string> group_text_problem(const std::string& text, std::size_t max,
                                              std::string_view what, bool may_be_empty) {
  if (text.size() > max) {
    return "a group " + std::string(what) + " is at most " + std::to_string(max) + " bytes";
  }
  if (!valid_utf8(text)) return "a group " + std::string(what) + " must be UTF-8 text";
  if (text.empty() && may_be_empty) return std::nullopt;
  const bool blank = std::all_of(text.begin(), text.end(), [](char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
  });
  if (blank) return "a group " + std::string(what) + " cannot be empty or only spaces";
  return std::nullopt;
}

std::optional<Bytes> parse_group_id(std::string_view text) {
  if (text.size() != 2 * kGroupIdBytes) return std::nullopt;
  std::string lower(text);
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return from_hex(lower);
}

}  // namespace sotto::client
