// Groups as pure functions over untrusted bytes (docs/groups.md): checking a group's state,
// applying a change an author sent to the state we hold, reading a group message's content, and
// invite links. No store, network, clock or randomness, so what a peer (or the server, replaying
// or relabelling) can make a client do with a group is fuzzed on its own
// (fuzz/group_fuzz.cpp). Thread-safe (no state).
//
// The rules every member's client applies, the same on every client so that all of them agree on
// the state after each change:
//   - a change turns revision R into R + 1 and is applied only by a client at exactly R;
//   - its author is an admin at R, except `leave` (any member, for themself);
//   - a change carries exactly one action; `join_secret` (a request to an admin) is never a change;
//   - the state stays valid: at most kMaxGroupMembers members, unique normalised usernames, at
//     least one admin while there is a member (when the last admin leaves, the first remaining
//     member in the list becomes one), bounded name and description, a 32-byte secret or none.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <tl/expected.hpp>

#include "content.pb.h"
#include "crypto/bytes.h"

namespace sotto::client {

inline constexpr std::size_t kMaxGroupMembers = 1024;
inline constexpr std::size_t kGroupIdBytes = 32;
inline constexpr std::size_t kInviteSecretBytes = 32;
inline constexpr std::size_t kMaxGroupNameBytes = 256;
inline constexpr std::size_t kMaxGroupDescriptionBytes = 4096;
// A group picture (GroupState.avatar): a PNG or JPEG of at most this many bytes.
inline constexpr std::uint64_t kMaxGroupAvatarBytes = 5u << 20;

// Why a state is not valid (nullopt: valid).
[[nodiscard]] std::optional<std::string> check_group_state(const wire::content::GroupState& s);

// Whether `user` is a member (an admin) of `s`.
[[nodiscard]] const wire::content::GroupMember* find_member(const wire::content::GroupState& s,
                                                            const std::string& user);
[[nodiscard]] bool is_admin(const wire::content::GroupState& s, const std::string& user);

// The state after `author`'s `change`, which says it was made on revision `base`. The error is
// one line for the members' security notice (why the change was refused).
[[nodiscard]] tl::expected<wire::content::GroupState, std::string> apply_group_change(
    const wire::content::GroupState& current, const wire::content::GroupChange& change,
    const std::string& author, std::uint64_t base);

// The state a member who is not in the group yet (added, or joining by link) takes from a change:
// the change's `state`, valid, of the group `group_id`, at `base` + 1, listing `self` as a member
// and `author` as an admin.
[[nodiscard]] tl::expected<wire::content::GroupState, std::string> state_for_new_member(
    const wire::content::GroupChange& change, ByteView group_id, std::uint64_t base,
    const std::string& author, const std::string& self);

// What a change did, for the members' history ("alice added bob, carol").
[[nodiscard]] std::string describe_group_change(const wire::content::GroupChange& change,
                                                const std::string& author);

// An invite link: "sotto-group:" 64 hex digits of the group id "." 64 of the secret "." the
// admin to ask "." the admin's device that made the link (the one that answers).
struct InviteLink {
  Bytes group_id;
  Bytes secret;
  std::string admin;
  std::uint32_t device = 0;
};
[[nodiscard]] std::string format_invite_link(const InviteLink& link);
[[nodiscard]] std::optional<InviteLink> parse_invite_link(std::string_view text);

// Why a name (description) an admin types is not one (nullopt: it is): too long, not UTF-8, or
// blank (only spaces; an empty text only when `may_be_empty`, which clears a description).
[[nodiscard]] std::optional<std::string> group_text_problem(const std::string& text,
                                                            std::size_t max, std::string_view what,
                                                            bool may_be_empty);

// A group id as users type it: 64 hex digits (either case).
[[nodiscard]] std::optional<Bytes> parse_group_id(std::string_view text);

}  // namespace sotto::client
