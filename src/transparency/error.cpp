#include "transparency/error.h"

namespace sotto::transparency {

std::string_view to_string(Error e) {
  switch (e) {
    case Error::malformed:
      return "malformed transparency data";
    case Error::invalid_key:
      return "invalid transparency key";
    case Error::bad_vrf_proof:
      return "VRF proof does not verify";
    case Error::bad_signature:
      return "tree head signature does not verify";
    case Error::bad_inclusion_proof:
      return "log inclusion proof does not verify";
    case Error::bad_consistency_proof:
      return "log consistency proof does not verify";
    case Error::bad_prefix_proof:
      return "prefix tree proof does not verify";
    case Error::bad_commitment:
      return "commitment does not open to the value";
    case Error::bad_history:
      return "label versions do not chain to the logged leaf";
    case Error::rollback:
      return "tree head or version older than one already seen";
    case Error::invalid_argument:
      return "invalid transparency request";
    case Error::storage_failure:
      return "transparency store failure";
  }
  return "unknown transparency error";
}

}  // namespace sotto::transparency
