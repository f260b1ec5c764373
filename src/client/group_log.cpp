#include "client/group_log.h"

#include <algorithm>

#include "client/group_codec.h"
#include "client/util.h"
#include "crypto/hash.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;
namespace backup = sotto::wire::backup;

constexpr std::string_view kHashDomain = "sotto-group-change-v1";

void put_u64(Bytes& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void put_field(Bytes& out, ByteView field) {
  put_u64(out, field.size());
  out.insert(out.end(), field.begin(), field.end());
}

bool parse_state(const std::string& bytes, content::GroupState& s) {
  return s.ParseFromString(bytes) && !check_group_state(s);
}

// A parent the change names matches an entry whose hash this device knows; an empty one (a
// change made on the state a group was created with, or by a version without hashes) matches any.
bool parent_matches(const backup::GroupLogEntry& e, const std::string& parent) {
  return parent.empty() || e.hash().empty() || e.hash() == parent;
}

std::string stripped(const content::GroupChange& change) {
  content::GroupChange c = change;
  c.clear_state();
  return c.SerializeAsString();
}

void hold(backup::GroupLog& log, const content::DataMessage& d, const std::string& author,
          std::uint32_t device, const std::string& message_id) {
  const std::string data = d.SerializeAsString();
  for (const auto& p : log.pending()) {
    if (p.author() == author && p.author_device() == device && p.data() == data) return;
  }
  if (static_cast<std::size_t>(log.pending_size()) >= kGroupPendingChanges) {
    log.mutable_pending()->DeleteSubrange(0, 1);  // the oldest waited longest
  }
  auto* p = log.add_pending();
  p->set_author(author);
  p->set_author_device(device);
  p->set_data(data);
  p->set_message_id(message_id);
}

}  // namespace

Bytes change_hash(ByteView group_id, std::uint64_t base, const std::string& author,
                  std::uint32_t device, std::uint64_t timestamp,
                  const content::GroupChange& change) {
  Bytes in(kHashDomain.begin(), kHashDomain.end());
  put_field(in, group_id);
  put_u64(in, base);
  put_field(in, as_bytes(change.parent()));
  put_field(in, as_bytes(author));
  put_u64(in, device);
  put_u64(in, timestamp);
  const std::string body = stripped(change);
  put_field(in, as_bytes(body));
  const auto digest = crypto::sha256({in});
  return Bytes(digest.begin(), digest.end());
}

backup::GroupLog log_from_state(const content::GroupState& s) {
  backup::GroupLog log;
  auto* e = log.add_entries();
  e->set_revision(s.revision());
  e->set_state(s.SerializeAsString());
  return log;
}

std::optional<std::string> check_group_log(const backup::GroupLog& log) {
  if (log.entries_size() == 0) return "a group log without a state";
  if (static_cast<std::size_t>(log.entries_size()) > kGroupLogEntries ||
      static_cast<std::size_t>(log.pending_size()) > kGroupPendingChanges) {
    return "a group log that is too long";
  }
  std::string id;
  for (int i = 0; i < log.entries_size(); ++i) {
    const auto& e = log.entries(i);
    content::GroupState s;
    if (!parse_state(e.state(), s)) return "a group log with a state that is not valid";
    if (s.revision() != e.revision()) return "a group log entry whose state is of another revision";
    if (!e.hash().empty() && e.hash().size() != crypto::kSha256Size) {
      return "a group log entry with a malformed hash";
    }
    if (i == 0) {
      id = s.id();
    } else if (s.id() != id || e.revision() != log.entries(i - 1).revision() + 1) {
      return "a group log whose revisions do not follow each other";
    }
  }
  return std::nullopt;
}

content::GroupState log_head(const backup::GroupLog& log) {
  content::GroupState s;
  (void)s.ParseFromString(log.entries(log.entries_size() - 1).state());
  return s;
}

backup::GroupLogEntry own_entry(const content::GroupState& after,
                                const content::GroupChange& change, ByteView hash,
                                const std::string& author, std::uint32_t device,
                                std::uint64_t timestamp) {
  backup::GroupLogEntry e;
  e.set_revision(after.revision());
  e.set_hash(bytes_string(hash));
  e.set_state(after.SerializeAsString());
  e.set_change(stripped(change));
  e.set_author(author);
  e.set_author_device(device);
  e.set_timestamp(timestamp);
  return e;
}

void push_entry(backup::GroupLog& log, backup::GroupLogEntry entry) {
  *log.add_entries() = std::move(entry);
  const int extra = log.entries_size() - static_cast<int>(kGroupLogEntries);
  if (extra > 0) log.mutable_entries()->DeleteSubrange(0, extra);
}

GroupLogOutcome take_group_change(backup::GroupLog& log, const content::DataMessage& d,
                                  const std::string& author, std::uint32_t device,
                                  const std::string& self, const std::string& message_id) {
  using Kind = GroupLogOutcome::Kind;
  GroupLogOutcome out;
  const content::GroupChange& change = d.group_change();
  const std::uint64_t base = d.group().revision();
  const ByteView group_id = as_bytes(d.group().id());
  out.hash = change_hash(group_id, base, author, device, d.timestamp(), change);
  const std::string hash = bytes_string(out.hash);
  const auto refuse = [&](std::string why) {
    out.kind = Kind::refused;
    out.why = std::move(why);
    return out;
  };
  const auto entry_for = [&](const content::GroupState& s) {
    return own_entry(s, change, out.hash, author, device, d.timestamp());
  };
  // Taking the state whole (this device is added, or was out of the group and is added again).
  const auto join = [&](bool replace_only_lower) -> GroupLogOutcome {
    auto taken = state_for_new_member(change, group_id, base, author, self);
    if (!taken) return refuse(taken.error());
    if (log.entries_size() > 0) {
      const auto& head = log.entries(log.entries_size() - 1);
      if (replace_only_lower && !(head.hash().empty() || hash < head.hash())) {
        out.kind = Kind::lost;
        return out;
      }
      out.dropped.assign(log.entries().begin(), log.entries().end());
    }
    auto e = entry_for(*taken);
    e.set_joined(true);
    log.clear_entries();
    *log.add_entries() = std::move(e);
    out.kind = out.dropped.empty() ? Kind::applied : Kind::replaced;
    return out;
  };

  if (log.entries_size() == 0) return join(false);
  const auto& head = log.entries(log.entries_size() - 1);
  content::GroupState head_state;
  (void)parse_state(head.state(), head_state);
  const std::uint64_t first = log.entries(0).revision();

  if (base < first || base > head.revision()) {
    const bool outside = find_member(head_state, self) == nullptr;
    if (base >= head.revision()) {
      // Ahead: a change made on a revision this device has not reached. One that adds us to a
      // group we are out of carries the state; anything else waits for what comes between.
      if (outside && change.has_state()) return join(false);
      hold(log, d, author, device, message_id);
      out.kind = Kind::pending;
      return out;
    }
    // Behind what this device keeps. A device that was added holds no earlier state; a change
    // adding it that competes with the one it was added by is weighed like any other.
    if (head.joined() && base + 1 == head.revision() && change.has_state()) return join(true);
    return refuse("a change made on revision " + std::to_string(base) + ", but this device is at " +
                  std::to_string(head.revision()));
  }
  const int at = static_cast<int>(base - first);
  const auto& parent = log.entries(at);
  if (!parent_matches(parent, change.parent())) {
    // Made on a change this device does not hold at that revision: the author's line may still
    // win (its parent has not reached us), or it lost and the author makes it again.
    if (parent.joined() && at + 1 == log.entries_size() && change.has_state()) {
      auto taken = state_for_new_member(change, group_id, base, author, self);
      if (taken) return join(false);
    }
    hold(log, d, author, device, message_id);
    out.kind = Kind::pending;
    return out;
  }
  const bool competes = at + 1 < log.entries_size();
  if (competes && log.entries(at + 1).hash() == hash) {
    out.kind = Kind::duplicate;
    return out;
  }
  content::GroupState parent_state;
  (void)parse_state(parent.state(), parent_state);
  auto applied = apply_group_change(parent_state, change, author, base);
  if (!applied) return refuse(applied.error());
  if (!competes) {
    push_entry(log, entry_for(*applied));
    out.kind = Kind::applied;
    return out;
  }
  const auto& rival = log.entries(at + 1);
  if (!rival.hash().empty() && rival.hash() < hash) {
    out.kind = Kind::lost;
    return out;
  }
  out.dropped.assign(log.entries().begin() + at + 1, log.entries().end());
  log.mutable_entries()->DeleteSubrange(at + 1, log.entries_size() - at - 1);
  push_entry(log, entry_for(*applied));
  out.kind = Kind::replaced;
  return out;
}

}  // namespace sotto::client
