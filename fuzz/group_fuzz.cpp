// Groups as a client reads them from untrusted bytes (client/group_codec.h): what any member (or
// the server, replaying or relabelling) can make a member's client do with a group. The first
// byte picks the reader:
//   0-3  a Content whose DataMessage carries a group change, applied to a fixed state of four
//        members (alice and carol admins) as authored by member (byte % 4), or taken as the
//        state of a new member (the fifth name) when the change carries one;
//   4    a GroupState, checked;
//   5    an invite link (text);
//   6    a GroupLog (a device's recent revisions, as a backup carries it), checked, then a rename
//        by alice taken into it;
//   7    a Content whose DataMessage carries a group change, taken into the fixed state's log as
//        authored by alice or bob (client/group_log.h), twice (the second time it is a repeat).
//
// Whatever comes out must be what the client may store without looking again: an applied change
// is from a member, by an admin unless it is a leave, turns revision R into R + 1 on exactly R,
// and gives a valid state (at most 1,024 members, each once, an admin while any member is left);
// a new member's state lists it and its adder as an admin; a link that parses formats back to
// one that parses to the same fields.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "client/group_codec.h"
#include "client/group_log.h"
#include "content.pb.h"
#include "fuzz_check.h"
#include "sotto/client.h"

using namespace sotto;
namespace content = sotto::wire::content;

namespace {

const char* const kNames[] = {"alice", "bob", "carol", "dave", "erin"};

content::GroupState fixed_state() {
  content::GroupState s;
  s.set_id(std::string(32, '\x5a'));
  s.set_revision(7);
  s.set_name("fuzz");
  for (int i = 0; i < 4; ++i) {
    auto* m = s.add_members();
    m->set_user(kNames[i]);
    m->set_admin(i % 2 == 0);
  }
  s.set_invite_secret(std::string(32, '\x11'));
  return s;
}

void check_valid(const content::GroupState& s) {
  fuzz::require(!client::check_group_state(s).has_value(), "a state out of a change is not valid");
  fuzz::require(static_cast<std::size_t>(s.members_size()) <= client::kMaxGroupMembers,
                "more than 1024 members");
  std::set<std::string> seen;
  bool admin = false;
  for (const auto& m : s.members()) {
    fuzz::require(seen.insert(m.user()).second, "a member listed twice");
    fuzz::require(normalize_username(m.user()) == m.user(), "a member that is not a username");
    admin = admin || m.admin();
  }
  fuzz::require(seen.empty() || admin, "members without an admin");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 256 * 1024) return 0;
  const std::uint8_t selector = data[0] % 8;
  const std::uint8_t* body = data + 1;
  const int length = static_cast<int>(size - 1);
  if (selector < 4) {
    content::Content c;
    if (!c.ParseFromArray(body, length) || !c.has_data() || !c.data().has_group_change()) {
      return 0;
    }
    const content::GroupState state = fixed_state();
    const std::string author = kNames[selector];
    const auto& change = c.data().group_change();
    const std::uint64_t base = c.data().group().revision();
    auto applied = client::apply_group_change(state, change, author, base);
    if (applied) {
      fuzz::require(base == state.revision(), "a change applied on another revision");
      fuzz::require(applied->revision() == state.revision() + 1, "a change not at R + 1");
      fuzz::require(change.leave() || client::is_admin(state, author),
                    "a change by a non-admin applied");
      fuzz::require(change.join_secret().empty(), "a join request applied as a change");
      fuzz::require(applied->id() == state.id(), "a change moved the group id");
      check_valid(*applied);
    } else {
      fuzz::require(!applied.error().empty(), "a refusal without a reason");
    }
    auto taken =
        client::state_for_new_member(change, as_bytes(c.data().group().id()), base, author, "erin");
    if (taken) {
      check_valid(*taken);
      fuzz::require(client::find_member(*taken, "erin") != nullptr,
                    "a new member's state without it");
      fuzz::require(client::is_admin(*taken, author), "a new member's state from a non-admin");
      fuzz::require(taken->revision() == base + 1, "a new member's state at another revision");
      fuzz::require(taken->id() == c.data().group().id(), "a new member's state of another group");
    }
    (void)client::describe_group_change(change, author);
  } else if (selector == 4) {
    content::GroupState s;
    if (!s.ParseFromArray(body, length)) return 0;
    if (!client::check_group_state(s)) check_valid(s);
  } else if (selector == 6 || selector == 7) {
    wire::backup::GroupLog log;
    content::DataMessage d;
    std::string author = "alice";
    if (selector == 6) {
      if (!log.ParseFromArray(body, length) || client::check_group_log(log)) return 0;
      const auto head = client::log_head(log);
      check_valid(head);
      d.set_timestamp(1);
      d.mutable_group()->set_id(head.id());
      d.mutable_group()->set_revision(head.revision());
      d.mutable_group_change()->set_set_name(true);
      d.mutable_group_change()->set_name("renamed");
    } else {
      content::Content c;
      if (!c.ParseFromArray(body, length) || !c.has_data() || !c.data().has_group_change()) {
        return 0;
      }
      d = c.data();
      log = client::log_from_state(fixed_state());
      author = kNames[(length % 2)];
    }
    for (int round = 0; round < 2; ++round) {
      const auto before = log.SerializeAsString();
      auto outcome = client::take_group_change(log, d, author, 1, "carol");
      using Kind = client::GroupLogOutcome::Kind;
      fuzz::require(!client::check_group_log(log).has_value(), "a log that is no longer valid");
      check_valid(client::log_head(log));
      if (outcome.kind == Kind::applied || outcome.kind == Kind::replaced) {
        const auto& e = log.entries(log.entries_size() - 1);
        fuzz::require(e.hash() == std::string(outcome.hash.begin(), outcome.hash.end()),
                      "an applied change that is not the head");
      } else if (outcome.kind != Kind::pending) {
        fuzz::require(log.SerializeAsString() == before, "a change not applied changed the log");
      }
      if (outcome.kind == Kind::refused) {
        fuzz::require(!outcome.why.empty(), "a refusal without a reason");
      }
    }
  } else {
    const std::string text(reinterpret_cast<const char*>(body), static_cast<std::size_t>(length));
    if (auto link = client::parse_invite_link(text)) {
      fuzz::require(link->group_id.size() == 32 && link->secret.size() == 32,
                    "a link with an id or secret that is not 32 bytes");
      auto again = client::parse_invite_link(client::format_invite_link(*link));
      fuzz::require(again && again->group_id == link->group_id && again->secret == link->secret &&
                        again->admin == link->admin && again->device == link->device,
                    "a link that does not format back to itself");
    }
  }
  return 0;
}
