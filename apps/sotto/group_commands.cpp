#include "group_commands.h"

#include <cstdio>

#include "attach_commands.h"
#include "message_commands.h"
#include "output.h"
#include "terminal.h"

namespace sotto::cli {

namespace {

using json = nlohmann::json;

std::string member_list(const Group& g) {
  std::string out;
  for (const auto& m : g.members) {
    out += (out.empty() ? "" : ", ") + sanitize(m.user, false) + (m.admin ? " (admin)" : "");
  }
  return out;
}

std::string group_text(const Group& g) {
  std::string text = g.id + "  " + (g.name.empty() ? "(no name)" : sanitize(g.name, false)) +
                     "  revision " + std::to_string(g.revision) + "  " +
                     std::to_string(g.members.size()) +
                     (g.members.size() == 1 ? " member" : " members");
  if (!g.member) text += "  (not a member)";
  if (g.admin) text += "  (admin)";
  return text;
}

void show_group(const Group& g, const GroupContext& ctx, bool details) {
  if (ctx.json) {
    ctx.print(dump(group_json(g)));
    return;
  }
  ctx.print(group_text(g));
  if (!details) return;
  if (!g.description.empty()) ctx.print("  description: " + sanitize(g.description, false));
  ctx.print("  members: " + member_list(g));
  ctx.print(std::string("  invite link: ") + (g.invite_link ? "on" : "off"));
  ctx.print("  disappearing messages: " + duration_text(g.expire_timer));
  if (!g.avatar) {
    ctx.print("  picture: none");
  } else if (!g.avatar->downloaded) {
    ctx.print("  picture: not downloaded yet (tried again on the next `group info`)");
  } else {
    ctx.print("  picture: " + sanitize(g.avatar->path, false) + " (" + g.avatar->content_type +
              ", " + std::to_string(g.avatar->size) + " bytes)");
  }
}

}  // namespace

json avatar_json(const Group& g) {
  // null: no picture; {"downloaded": false}: one this device could not fetch yet.
  if (!g.avatar) return nullptr;
  if (!g.avatar->downloaded) return {{"downloaded", false}};
  return {{"path", g.avatar->path},
          {"sha256", g.avatar->sha256},
          {"size", g.avatar->size},
          {"contentType", g.avatar->content_type},
          {"downloaded", true}};
}

json group_json(const Group& g) {
  json members = json::array();
  for (const auto& m : g.members) members.push_back({{"user", m.user}, {"admin", m.admin}});
  return {{"groupId", g.id},
          {"avatar", avatar_json(g)},
          {"name", g.name},
          {"description", g.description},
          {"revision", g.revision},
          {"members", members},
          {"isMember", g.member},
          {"isAdmin", g.admin},
          {"inviteLink", g.invite_link},
          {"expireTimer", g.expire_timer}};
}

void add_group_commands(CLI::App& app, GroupArgs& a) {
  a.group = app.add_subcommand(
      "group",
      "Groups: the members' clients hold the group, the server has no member list "
      "(docs/groups.md)");
  a.group->require_subcommand(1);
  a.create = a.group->add_subcommand("create", "Create a group (you are its admin); prints its id");
  a.create->add_option("NAME", a.name, "The group's name")->required();
  a.create->add_option("--member", a.users, "A member to add (repeat it)");
  a.create->add_option("--avatar", a.avatar_file,
                       "The group's picture (PNG or JPEG, 5 MiB at most)");
  a.add = a.group->add_subcommand("add", "Add members (admins only)");
  a.remove = a.group->add_subcommand(
      "remove", "Remove members (admins only): they cannot read what is sent afterwards");
  a.admin = a.group->add_subcommand("admin", "Make members admins (--revoke: no longer admins)");
  for (auto* sub : {a.add, a.remove, a.admin}) {
    sub->add_option("ID", a.id, "The group's id (64 hex digits, or its first 8 or more)")
        ->required();
    sub->add_option("USER", a.users, "Members")->required();
  }
  a.admin->add_flag("--revoke", a.revoke, "Take admin rights away instead");
  a.rename = a.group->add_subcommand("rename", "Rename a group (admins only)");
  a.rename->add_option("ID", a.id, "The group's id")->required();
  a.rename->add_option("NAME", a.name, "The new name")->required();
  a.describe = a.group->add_subcommand("describe", "Set the group's description (admins only)");
  a.describe->add_option("ID", a.id, "The group's id")->required();
  a.describe->add_option("TEXT", a.text, "The description")->required();
  a.timer = a.group->add_subcommand("timer", "Set disappearing messages (admins only)");
  a.timer->add_option("ID", a.id, "The group's id")->required();
  a.timer->add_option("DURATION", a.duration, "30s, 5m, 1h, 1d, 1w ... or off")->required();
  a.avatar = a.group->add_subcommand(
      "avatar", "Set the group's picture, a PNG or JPEG of 5 MiB at most (admins only)");
  a.avatar->add_option("ID", a.id, "The group's id")->required();
  auto* file = a.avatar->add_option("FILE", a.avatar_file, "The image");
  auto* remove =
      a.avatar->add_flag("--remove", a.remove_avatar, "The group has no picture any more");
  file->excludes(remove);
  a.avatar->callback([&a, file] {
    if (!a.remove_avatar && file->count() == 0) {
      throw CLI::ValidationError("group avatar", "give an image FILE, or --remove");
    }
  });
  a.leave = a.group->add_subcommand("leave", "Leave a group");
  a.leave->add_option("ID", a.id, "The group's id")->required();
  a.link = a.group->add_subcommand(
      "link",
      "Print the group's invite link (admins only; turns joining by link on). Anyone with the "
      "link can join: share it like a key");
  a.link->add_option("ID", a.id, "The group's id")->required();
  a.link->add_flag("--reset", a.reset, "A new link: every earlier one stops working");
  a.link->add_flag("--off", a.off, "Turn joining by link off");
  a.join = a.group->add_subcommand(
      "join",
      "Ask to join a group with its invite link; the admin's client checks it and adds you "
      "(`sotto receive` shows when)");
  a.join->add_option("LINK", a.text, "The invite link (sotto-group:...)")->required();
  a.info = a.group->add_subcommand("info", "Show a group: members, admins, link, timer");
  a.info->add_option("ID", a.id, "The group's id")->required();
  a.list = a.group->add_subcommand("list", "List the groups this device knows");
}

std::optional<int> run_group_command(const GroupArgs& a, const GroupContext& ctx) {
  if (a.group == nullptr || !a.group->parsed()) return std::nullopt;
  auto client = ctx.open();
  if (!client) return ctx.fail(client.error());
  Client& c = **client;
  const auto done = [&](const Result<Group>& g, bool details) {
    if (!g) return ctx.fail(g.error());
    show_group(*g, ctx, details);
    return 0;
  };
  if (a.create->parsed()) {
    // The picture is checked first: a file that cannot be one makes no group.
    if (!a.avatar_file.empty()) {
      if (auto pic = Client::check_group_picture(a.avatar_file); !pic) return ctx.fail(pic.error());
    }
    auto g = c.create_group(a.name, a.users);
    if (!g) return ctx.fail(g.error());
    if (!a.avatar_file.empty()) {
      GroupUpdate picture;
      picture.avatar = a.avatar_file;
      auto with = c.update_group(g->id, picture);
      if (!with) {
        Error e = with.error();
        e.message = "the group " + g->id + " is made, without its picture: " + e.message;
        return ctx.fail(e);
      }
      g = std::move(with);
    }
    if (ctx.json) {
      ctx.print(dump(group_json(*g)));
    } else {
      ctx.print(g->id);
    }
    return 0;
  }
  GroupUpdate u;
  if (a.add->parsed()) {
    u.add = a.users;
  } else if (a.remove->parsed()) {
    u.remove = a.users;
  } else if (a.admin->parsed()) {
    (a.revoke ? u.revoke_admin : u.make_admin) = a.users;
  } else if (a.rename->parsed()) {
    u.name = a.name;
  } else if (a.describe->parsed()) {
    u.description = a.text;
  } else if (a.timer->parsed()) {
    auto seconds = parse_duration(a.duration);
    if (!seconds) return ctx.fail(seconds.error());
    u.expire_timer = *seconds;
  } else if (a.link->parsed() && a.off) {
    u.disable_link = true;
  } else if (a.avatar->parsed()) {
    if (a.remove_avatar) {
      u.remove_avatar = true;
    } else {
      u.avatar = a.avatar_file;
    }
  }
  if (a.add->parsed() || a.remove->parsed() || a.admin->parsed() || a.rename->parsed() ||
      a.describe->parsed() || a.timer->parsed() || (a.link->parsed() && a.off) ||
      a.avatar->parsed()) {
    return done(c.update_group(a.id, u), false);
  }
  if (a.leave->parsed()) return done(c.leave_group(a.id), false);
  if (a.link->parsed()) {
    auto link = c.group_invite_link(a.id, a.reset);
    if (!link) return ctx.fail(link.error());
    if (ctx.json) {
      ctx.print(dump(json{{"groupId", a.id}, {"link", *link}}));
    } else {
      ctx.print(*link);
    }
    return 0;
  }
  if (a.join->parsed()) {
    auto g = c.join_group(a.text);
    if (!g) return ctx.fail(g.error());
    if (ctx.json) {
      ctx.print(dump(json{{"groupId", g->id}, {"isMember", g->member}}));
    } else if (g->member) {
      ctx.print("Already a member of " + g->id + ".");
    } else {
      ctx.print("Asked to join " + g->id +
                "; you are a member once the admin's device has checked the link (`sotto "
                "receive` shows it).");
    }
    return 0;
  }
  if (a.info->parsed()) return done(c.group(a.id), true);
  if (a.list->parsed()) {
    auto list = c.groups();
    if (!list) return ctx.fail(list.error());
    for (const auto& g : *list) show_group(g, ctx, false);
    // JSON lines: none for no group. Text: say so, rather than print nothing.
    if (list->empty() && !ctx.json) {
      ctx.print("No groups yet (`sotto group create NAME --member USER` makes one).");
    }
    return 0;
  }
  return 1;
}

int send_to_group(const std::string& id, const std::string& text, const GroupContext& ctx,
                  const std::vector<std::string>& attach_files, const SendOptionsOf& options_of,
                  const std::string& caption) {
  auto client = ctx.open();
  if (!client) return ctx.fail(client.error());
  SendOptions options;
  if (options_of) {
    auto given = options_of(**client);
    if (!given) return ctx.fail(given.error());
    options = std::move(*given);
  }
  if (!attach_files.empty()) {
    auto uploaded = upload_files(**client, attach_files, true, caption);
    if (!uploaded) return ctx.fail(uploaded.error());
    options.attachments = std::move(*uploaded);
  }
  auto r = (*client)->send_group(id, text, options);
  if (!r) return ctx.fail(r.error());
  if (ctx.json) {
    json out{{"timestamp", r->timestamp}, {"devices", r->devices}, {"groupId", id}};
    if (!r->left_out.empty()) out["leftOut"] = r->left_out;
    ctx.print(dump(out));
  } else {
    ctx.print("Sent to the group (" + std::to_string(r->devices) +
              (r->devices == 1 ? " device copy" : " device copies") + ").");
    for (const auto& device : r->left_out) {
      std::fprintf(stderr,
                   "sotto: warning: not delivered to %s: its queue on the server is full (it has "
                   "been offline for long); the others got it\n",
                   sanitize(device, false).c_str());
    }
  }
  return 0;
}

}  // namespace sotto::cli
