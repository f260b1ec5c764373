// What sotto-audit does with the server's answers and its own state, apart from the network:
// checking a KtAudit answer against the auditor's replay (transparency::Auditor), and the file of
// records it accepted, which it replays at start so that a restart does not fetch the log again.
//
// Every function here reads untrusted bytes (a server's answer, a state file a crash may have
// cut short) and is fuzzed (fuzz/audit_answer_fuzz.cpp). Not thread-safe (the Auditor is not).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/bytes.h"
#include "service.pb.h"
#include "transparency/audit.h"

namespace sotto::audit {

// Why a round stops: the log misbehaved (it shrank, rewrote or dropped an entry, or signed a head
// the replay does not give: nothing may be co-signed) or something else went wrong (a malformed
// or unsigned answer, the network, the state directory).
struct Failure {
  bool misbehaved = false;
  std::string message;  // one line, names the entry or size concerned
};

// Replays the records of one KtAudit answer that asked from auditor.size() on, appending each
// accepted record's bytes to `accepted`, and returns the head the answer carried (checked against
// the log's signing key, and not smaller than what the auditor replayed before the answer). A
// refused record leaves the auditor as it was before that record (earlier records of the answer
// stay applied: the caller drops the auditor on any failure).
[[nodiscard]] tl::expected<transparency::SignedTreeHead, Failure> apply_answer(
    transparency::Auditor& auditor, const transparency::LogPublicKeys& keys,
    const wire::service::KtAuditResponse& answer, std::vector<Bytes>& accepted);

// Whether the head the server signs is the one the replay gives at its size (after every record
// up to it was applied).
[[nodiscard]] tl::expected<void, Failure> check_head(const transparency::Auditor& auditor,
                                                     const transparency::SignedTreeHead& head);

// The records file: per record, u32 length || record || the first 8 bytes of SHA-256(record).
// A record is written whole and fsynced before the auditor co-signs anything that depends on it.
Bytes frame_record(ByteView record);
struct StoredRecords {
  std::vector<Bytes> records;
  // The length of the file's whole, intact records; what follows (a write a crash cut short) is
  // cut off before the next append.
  std::size_t valid_bytes = 0;
};
StoredRecords parse_records_file(ByteView file);

// The command line's --pin (and the server.pin file): a server key fingerprint, 64 hex digits in
// either case, colons and spaces allowed between them (as `sotto server trust` takes it). Returns
// it lowercase without separators, the form the transport compares; nullopt if it is not one.
std::optional<std::string> normalize_pin(std::string_view text);

// The command line's --log-keys (and the log.keys file): SIGNING:VRF, 64 hex digits each, as
// `sotto-server kt-keys` prints them; the whole printed line (`kt keys: SIGNING:VRF`) and spaces
// around it are accepted too. nullopt if it is not that.
std::optional<transparency::LogPublicKeys> parse_log_keys(std::string_view text);
// SIGNING:VRF in lowercase hex, what parse_log_keys reads back.
std::string log_keys_text(const transparency::LogPublicKeys& keys);

}  // namespace sotto::audit
