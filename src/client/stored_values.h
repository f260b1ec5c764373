// Small values the client engine keeps in its store's `state` table, as bytes, and reads back as
// untrusted input (a damaged file, or one written by another version): the block list's copy
// (blocks.h) and when each one-time prekey was first seen missing from the server (keys.h). Pure
// functions, fuzzed by fuzz/client_value_fuzz.cpp. A value that does not decode reads as empty:
// for the block list the next connection fetches the server's list again, for the prekeys pruning
// is only delayed by one message TTL.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "crypto/bytes.h"

namespace sotto::client {

// The usernames, each followed by a newline (a username has none). Decoding keeps only
// well-formed usernames, normalised.
[[nodiscard]] Bytes encode_names(const std::set<std::string>& names);
[[nodiscard]] std::set<std::string> decode_names(ByteView bytes);

// Prekey id -> milliseconds since the epoch, as 12-byte big-endian records (4-byte id, 8-byte
// time). A length that is not a multiple of 12 decodes as empty.
[[nodiscard]] Bytes encode_missing(const std::map<std::uint32_t, std::uint64_t>& missing);
[[nodiscard]] std::map<std::uint32_t, std::uint64_t> decode_missing(ByteView bytes);

// Key transparency: the newest log version seen of each contact (username -> version), one line
// per contact, "username version\n". Decoding keeps only well-formed lines (a normalised
// username, a decimal version below 2^32).
[[nodiscard]] Bytes encode_versions(const std::map<std::string, std::uint32_t>& versions);
[[nodiscard]] std::map<std::string, std::uint32_t> decode_versions(ByteView bytes);

}  // namespace sotto::client
