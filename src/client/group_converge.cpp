// Groups: how a device takes a change when another admin may have changed the group at the same
// time (docs/groups.md, section 8). The rule itself is in group_log.h; this is the store, the
// history rows and events, and re-authoring our own change when it lost.
#include <algorithm>
#include <set>

#include "client/content_codec.h"
#include "client/errors.h"
#include "client/group_codec.h"
#include "client/group_log.h"
#include "client/groups.h"
#include "client/message_state.h"
#include "client/text.h"
#include "client/util.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;
namespace backup = sotto::wire::backup;

std::string log_value(const std::string& hex) {
  return "group-log/" + hex;
}
std::string join_value(const std::string& hex) {
  return "group-join/" + hex;
}
std::string peer_of(const std::string& hex) {
  return "group:" + hex;
}

constexpr std::size_t kGroupLogRecordBytes = 60'000;

bool removes_someone(const content::GroupChange& c) {
  return c.remove_members_size() > 0 || c.leave();
}

}  // namespace

Result<backup::GroupLog> Groups::load_log(const std::string& hex,
                                          const std::optional<State>& state) {
  if (!state) return backup::GroupLog{};
  auto v = account_.store->load_value(log_value(hex));
  if (!v) return tl::unexpected(from_store(v.error()));
  if (v->has_value()) {
    backup::GroupLog log;
    const ByteView bytes = (*v)->view();
    if (log.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) && !check_group_log(log) &&
        log_head(log).SerializeAsString() == state->SerializeAsString()) {
      return log;
    }
    // A log that does not end in the state we hold (written by an older version, or damaged):
    // the state stands, with no earlier revision to roll back to.
  }
  return log_from_state(*state);
}

Result<void> Groups::save_log(const std::string& hex, const backup::GroupLog& log) {
  if (auto saved = save(log_head(log)); !saved) return saved;
  std::string bytes = log.SerializeAsString();
  auto saved = account_.store->save_value(log_value(hex), as_bytes(bytes));
  wipe(bytes);
  return store_result(std::move(saved));
}

Groups::ContentResult Groups::take_change(const std::string& hex, const content::DataMessage& d,
                                          const std::string& source, std::uint32_t device,
                                          const Message& base) {
  using Kind = GroupLogOutcome::Kind;
  ContentResult r;
  r.handled = true;
  const std::string& self = account_.username;
  auto state = load(hex);
  if (!state) {
    r.ok = false;
    return r;
  }
  const bool known = state->has_value();
  const bool was_member = known && find_member(**state, self) != nullptr;
  auto loaded = load_log(hex, *state);
  if (!loaded) {
    r.ok = false;
    return r;
  }
  backup::GroupLog log = std::move(*loaded);

  // The change, then every held-back change it unblocks, in turn.
  struct Taken {
    content::DataMessage data;
    std::string author;
    std::uint32_t device;
    Message base;
    GroupLogOutcome outcome;
  };
  std::vector<Taken> taken;
  auto first = take_group_change(log, d, source, device, self, base.id);
  taken.push_back({d, source, device, base, std::move(first)});
  bool moved =
      taken.back().outcome.kind == Kind::applied || taken.back().outcome.kind == Kind::replaced;
  while (moved && log.pending_size() > 0) {
    moved = false;
    auto pending = log.pending();
    log.clear_pending();
    for (const auto& p : pending) {
      content::DataMessage held;
      if (!held.ParseFromString(p.data()) || !held.has_group() || !held.has_group_change()) {
        continue;
      }
      auto outcome =
          take_group_change(log, held, p.author(), p.author_device(), self, p.message_id());
      if (outcome.kind == Kind::pending) continue;  // held again by take_group_change
      moved = moved || outcome.kind == Kind::applied || outcome.kind == Kind::replaced;
      Message b = base;
      b.id = p.message_id().empty() ? base.id + "-held" : p.message_id();
      b.from = p.author();
      b.device = p.author_device();
      taken.push_back({std::move(held), p.author(), p.author_device(), b, std::move(outcome)});
    }
  }

  bool head_moved = false;
  bool rotate_chain = false;
  std::vector<content::GroupChange> ours;  // our own changes that were undone
  for (auto& t : taken) {
    const auto& o = t.outcome;
    const auto& change = t.data.group_change();
    const std::uint64_t timestamp = t.data.timestamp();
    switch (o.kind) {
      case Kind::refused:
        if (!note(known ? hex : std::string(), t.base, Event::Kind::group_refused,
                  "a change from " + t.author + ": " + o.why, timestamp)) {
          r.ok = false;
          return r;
        }
        break;
      case Kind::duplicate:
      case Kind::pending:
        break;
      case Kind::lost: {
        // A history row (so the same change delivered again is known), not an event: nothing
        // changed here, and the author's own client re-authors or reports it.
        store::StoredMessage row{std::string(store::kNoticePrefix) + t.base.id,
                                 peer_of(hex),
                                 t.author,
                                 t.device,
                                 timestamp,
                                 "[" + describe_group_change(change, t.author) +
                                     ": not applied, a concurrent change for revision " +
                                     std::to_string(t.data.group().revision() + 1) + " won]",
                                 t.author == self};
        if (!account_.store->add_message(row)) {
          r.ok = false;
          return r;
        }
        break;
      }
      case Kind::applied:
      case Kind::replaced: {
        head_moved = true;
        std::string detail = describe_group_change(change, t.author);
        if (o.kind == Kind::replaced) {
          rotate_chain = true;
          std::string undone;
          for (const auto& e : o.dropped) {
            if (e.joined() || e.author().empty()) continue;
            content::GroupChange c;
            if (!c.ParseFromString(e.change())) continue;
            // Only a change for a revision the winner also made is a concurrent one: an older
            // entry dropped with it is history this device had seen differently or not at all
            // (a member added back takes the group's state whole), not something undone now.
            if (e.revision() > t.data.group().revision()) {
              undone += (undone.empty() ? "" : "; ") + describe_group_change(c, e.author());
            }
            if (e.author() == self && e.author_device() == account_.device_id) {
              c.clear_parent();
              ours.push_back(std::move(c));
            }
          }
          if (!undone.empty()) {
            detail += " (a concurrent change that wins over: " + undone + ", which is undone)";
          }
        }
        if (removes_someone(change)) rotate_chain = true;
        if (!note(hex, t.base, Event::Kind::group_changed, detail, timestamp)) {
          r.ok = false;
          return r;
        }
        break;
      }
    }
  }
  if (log.entries_size() > 0 && (head_moved || taken.front().outcome.kind == Kind::pending)) {
    if (!save_log(hex, log)) {
      r.ok = false;
      return r;
    }
  }
  if (head_moved) {
    const bool member = find_member(log_head(log), self) != nullptr;
    if (member && !was_member) {
      rotate_chain = true;
      (void)account_.store->remove_value(join_value(hex));
    }
    if (rotate_chain && !rotate(hex)) {
      r.ok = false;
      return r;
    }
  }
  if (!ours.empty()) {
    // Made again on top of the winner as the next revision, if it still can be; else reported.
    r.followup = [this, hex, ours = std::move(ours)] {
      std::lock_guard lock(mu_);
      for (const auto& c : ours) {
        auto again = author(hex, c);
        if (!again) report_dropped(hex, c, again.error().message);
      }
    };
  }
  if (head_moved) {
    // The group's picture, when the change set one (or the state we took has one): fetched once
    // the envelope is processed; a failure leaves the state as it is (group_avatar.cpp).
    r.followup = [this, hex, before = std::move(r.followup)] {
      if (before) before();
      (void)fetch_avatar(hex);
    };
  }
  return r;
}

void Groups::report_dropped(const std::string& hex, const Change& change, const std::string& why) {
  std::lock_guard crypto_lock(account_.crypto_mu);
  Event e;
  e.kind = Event::Kind::group_change_dropped;
  e.message.group = hex;
  e.message.conversation = peer_of(hex);
  e.message.from = account_.username;
  e.message.device = account_.device_id;
  e.message.timestamp = account_.clock.now_ms();
  e.detail =
      "our change (" + describe_group_change(change, account_.username) +
      ") was undone by a concurrent change of another admin and could not be made again: " + why;
  (void)account_.store->transaction([&] { return journal_.record(e).has_value(); });
}

}  // namespace sotto::client

namespace sotto::client {

void Groups::answer_join_refused(const std::string& group_id, const std::string& user,
                                 std::uint32_t device) {
  content::Content c;
  auto* d = c.mutable_data();
  const std::uint64_t timestamp = outbox_.next_timestamp();
  d->set_timestamp(timestamp);
  d->mutable_group()->set_id(group_id);
  d->mutable_group_change()->set_join_refused(true);
  // Best effort: the joiner's request is refused here whether or not the answer reaches it.
  (void)outbox_.send_to_devices(user, {device}, encode_padded(c, account_.kt), timestamp);
}

Groups::ContentResult Groups::on_join_refused(const std::string& hex, const std::string& source,
                                              const Message& base, std::uint64_t timestamp) {
  ContentResult r;
  r.handled = true;
  // Only an answer from the admin we asked, while we wait for it; anything else says nothing.
  auto asked = account_.store->load_value(join_value(hex));
  if (!asked) {
    r.ok = false;
    return r;
  }
  if (!asked->has_value() || bytes_string((*asked)->view()) != source) return r;
  if (!account_.store->remove_value(join_value(hex))) {
    r.ok = false;
    return r;
  }
  Event e;
  e.kind = Event::Kind::group_join_refused;
  e.message = base;
  e.message.timestamp = timestamp;
  e.message.group = hex;
  e.detail =
      "the invite link is not valid (it was reset or turned off); ask an admin for a new one";
  r.ok = journal_.record(e).has_value();
  return r;
}

}  // namespace sotto::client

namespace sotto::client {

Result<void> Groups::check_accounts(const std::vector<std::string>& users) {
  if (users.empty()) return {};
  auto connected =
      link_.ensure_connected(std::chrono::steady_clock::now() + account_.options.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  for (const auto& user : users) {
    if (user == account_.username) continue;
    auto key = sessions_.lookup_identity(connected->connection, user);
    if (!key && key.error().code == ErrorCode::not_found) {
      return tl::unexpected(make_error(ErrorCode::not_found,
                                       "no such user: " + user + " (nothing was changed or sent)"));
    }
    if (!key) return tl::unexpected(key.error());
  }
  return {};
}

}  // namespace sotto::client

namespace sotto::client {

Result<std::vector<backup::GroupLog>> Groups::export_logs() {
  std::vector<backup::GroupLog> out;
  auto ids = account_.store->load_value("groups");
  if (!ids) return tl::unexpected(from_store(ids.error()));
  if (!ids->has_value()) return out;
  const ByteView list = (*ids)->view();
  for (std::size_t i = 0; i + kGroupIdBytes <= list.size(); i += kGroupIdBytes) {
    const std::string hex = to_hex(list.subspan(i, kGroupIdBytes));
    auto s = load(hex);
    if (!s) return tl::unexpected(s.error());
    if (!s->has_value()) continue;
    auto log = load_log(hex, *s);
    if (!log) return tl::unexpected(log.error());
    log->clear_pending();
    // A backup record is at most 64 KiB: the oldest revisions go first (the state stays).
    while (log->ByteSizeLong() > kGroupLogRecordBytes && log->entries_size() > 1) {
      log->mutable_entries()->DeleteSubrange(0, 1);
    }
    out.push_back(std::move(*log));
  }
  return out;
}

Result<bool> Groups::import_log(const backup::GroupLog& in) {
  if (check_group_log(in)) return false;
  backup::GroupLog log = in;
  log.clear_pending();
  const content::GroupState incoming = log_head(log);
  const std::string hex = to_hex(as_bytes(incoming.id()));
  auto current = load(hex);
  if (!current) return tl::unexpected(current.error());
  if (current->has_value() && (*current)->revision() >= incoming.revision()) return true;
  if (auto saved = save_log(hex, log); !saved) return tl::unexpected(saved.error());
  return true;
}

}  // namespace sotto::client

namespace sotto::client {

bool Groups::import_history_extras(const std::vector<store::StoredMessage>& rows,
                                   const std::vector<std::string>& states,
                                   const std::vector<backup::GroupLog>& groups) {
  for (std::size_t i = 0; i < rows.size() && i < states.size(); ++i) {
    if (states[i].empty()) continue;
    const auto& row = rows[i];
    auto state = decode_state(as_bytes(states[i]));
    if (!state) continue;
    auto kept = account_.store->load_message_state(row.peer, row.sender, row.timestamp);
    if (!kept) return false;
    if (kept->has_value()) continue;
    if (!account_.store->save_message_state(row.peer, row.sender, row.timestamp,
                                            state->expires_at(), as_bytes(states[i]))) {
      return false;
    }
  }
  for (const auto& g : groups) {
    if (!import_log(g)) return false;
  }
  return true;
}

}  // namespace sotto::client
