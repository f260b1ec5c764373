// How concurrent group changes converge (docs/groups.md, section 8), as pure functions over a
// group's log: the last few revisions a device went through (backup.proto GroupLog) and the
// changes it holds back. No store, network, clock or randomness; fuzzed with the rest of the group
// rules (fuzz/group_fuzz.cpp). Thread-safe (no state).
//
// The rule every member's client applies, so that all of them end in the same state whatever
// order changes reach them in:
//   - every change has a change hash (change_hash below) and names, besides the revision R it
//     was made on, the hash of the change that made R on its author's device (`parent`);
//   - among the valid changes made on one revision (with one parent), the one with the lowest
//     change hash wins. A device that applied another one rolls back to R and applies the winner;
//     what it had applied on top of the loser is dropped (each author re-authors its own);
//   - a change whose parent or revision this device does not hold yet waits (pending) until the
//     change that makes its parent arrives; one made on a losing change never applies.
// The security rules of group_codec.h are unchanged: every change is checked against the state
// of its own revision (an admin's, for everything but leaving), and a refused change is reported.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backup.pb.h"
#include "content.pb.h"
#include "crypto/bytes.h"

namespace sotto::client {

inline constexpr std::size_t kGroupLogEntries = 16;      // revisions a device keeps to roll back
inline constexpr std::size_t kGroupPendingChanges = 32;  // changes held back per group

// SHA-256 over a domain string, the group id, the revision the change was made on, its parent,
// its author and the author's device, the author's timestamp and the change without its `state`
// (serialized). Every member computes the same bytes from what it received.
[[nodiscard]] Bytes change_hash(ByteView group_id, std::uint64_t base, const std::string& author,
                                std::uint32_t device, std::uint64_t timestamp,
                                const wire::content::GroupChange& change);

// A log for a group known only by its state (created before logs were kept, or just made).
[[nodiscard]] wire::backup::GroupLog log_from_state(const wire::content::GroupState& s);

// Why a log read from the store (or a backup) is not one this version can use (nullopt: good):
// at least one entry, revisions consecutive, states valid and of one group, bounded sizes.
[[nodiscard]] std::optional<std::string> check_group_log(const wire::backup::GroupLog& log);

// The current state (the last entry's). REQUIRES: check_group_log(log) passed.
[[nodiscard]] wire::content::GroupState log_head(const wire::backup::GroupLog& log);

struct GroupLogOutcome {
  enum class Kind {
    applied,    // the change is the new head
    replaced,   // the change won over the one applied on its revision: `dropped` were undone
    lost,       // a valid change that lost to the one applied on its revision (nothing changed)
    duplicate,  // the change applied already
    pending,    // held back until its parent arrives (nothing changed but `log.pending`)
    refused,    // not valid: `why` (a security notice)
  };
  Kind kind = Kind::refused;
  std::string why;
  std::vector<wire::backup::GroupLogEntry> dropped;  // replaced: the entries undone, oldest first
  Bytes hash;                                        // the change's hash
};

// Takes the change `d` (its `group` and `group_change`) that `author`'s `device` sent, into `log`
// (empty: this device does not know the group). `self` is this account. On `applied` and
// `replaced` the log has the change as its last entry; on `pending` the change is in
// `log.pending`; otherwise the log is unchanged.
[[nodiscard]] GroupLogOutcome take_group_change(wire::backup::GroupLog& log,
                                                const wire::content::DataMessage& d,
                                                const std::string& author, std::uint32_t device,
                                                const std::string& self,
                                                const std::string& message_id = {});

// An entry for a change this device authored and applied (revision `base` + 1).
[[nodiscard]] wire::backup::GroupLogEntry own_entry(const wire::content::GroupState& after,
                                                    const wire::content::GroupChange& change,
                                                    ByteView hash, const std::string& author,
                                                    std::uint32_t device, std::uint64_t timestamp);

// Appends `entry` and keeps the newest kGroupLogEntries.
void push_entry(wire::backup::GroupLog& log, wire::backup::GroupLogEntry entry);

}  // namespace sotto::client
