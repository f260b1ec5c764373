// Errors of the key-transparency layer. Values name what failed, never the bytes involved.
#pragma once

#include <string_view>

namespace sotto::transparency {

enum class Error {
  malformed,              // bytes that are not a valid encoding (length, trailing bytes, depth)
  invalid_key,            // a VRF or log public key that is not a usable point
  bad_vrf_proof,          // a VRF proof that does not verify for this label and key
  bad_signature,          // a tree head whose signature does not verify under the log key
  bad_inclusion_proof,    // a log entry not proven to be in the tree head
  bad_consistency_proof,  // two tree heads not proven to be one growing log
  bad_prefix_proof,       // a prefix-tree path that does not lead to the entry's root
  bad_commitment,         // a value and opening that do not open the logged commitment
  bad_history,            // a label's versions that do not chain to the logged leaf
  rollback,               // a tree head or version older than one already seen
  invalid_argument,       // a caller's request the log cannot serve (unknown size, bad value)
  storage_failure,        // the store could not persist or read an update
};

std::string_view to_string(Error e);

}  // namespace sotto::transparency
