// Safety numbers (libsignal-protocol-c fingerprint.c): a 60-digit displayable number and a
// scannable protobuf form, computed from both parties' identity keys and stable identifiers.
// Per party: h = 0x0000 || IK(33) || id; repeat `iterations` times h = SHA-512(h || IK). The
// displayable half is six 5-digit groups from the first 30 bytes; the two halves are joined with
// the lexicographically smaller one first, so both sides print the same 60 digits.
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include <tl/expected.hpp>

#include "crypto/bytes.h"
#include "protocol/error.h"
#include "protocol/keys.h"
#include "protocol/limits.h"

namespace sotto::protocol {

struct Fingerprint {
  std::string displayable;  // 60 digits
  Bytes scannable;          // serialized CombinedFingerprints
};

// scannable_version 0 carries the raw identity keys and ids; version 1 the first 32 bytes of
// each iterated hash.
[[nodiscard]] tl::expected<Fingerprint, Error> compute_fingerprint(
    std::string_view local_id, const PublicKey& local_key, std::string_view remote_id,
    const PublicKey& remote_key, int iterations = kFingerprintIterations,
    std::uint32_t scannable_version = 1);

// Compares our scannable fingerprint with one scanned from the peer's screen: the versions must
// match (else unsupported_version) and each side's local part must be the other's remote part.
[[nodiscard]] tl::expected<bool, Error> compare_scannable(ByteView ours, ByteView theirs);

}  // namespace sotto::protocol
