#include "client/errors.h"

#include "client/util.h"

namespace sotto::client {

Error from_store(store::ClientError e) {
  switch (e) {
    case store::ClientError::wrong_passphrase:
      return make_error(ErrorCode::wrong_passphrase,
                        "the passphrase does not open the account's store (or the store is "
                        "protected by a passphrase and none was given)");
    case store::ClientError::not_found:
      return make_error(ErrorCode::no_account, "no such account in the data directory");
    case store::ClientError::exists:
      return make_error(ErrorCode::account_exists,
                        "an account with this name already exists in the data directory");
    case store::ClientError::invalid_argument:
      return make_error(ErrorCode::invalid_argument, std::string(store::to_string(e)));
    case store::ClientError::corrupt:
    case store::ClientError::io:
      break;
  }
  return make_error(ErrorCode::store, "local store: " + std::string(store::to_string(e)));
}

Error from_protocol(protocol::Error e) {
  if (e == protocol::Error::untrusted_identity) {
    return make_error(ErrorCode::untrusted_identity,
                      "the contact's safety number changed and the new identity key is not "
                      "accepted yet; nothing was sent");
  }
  if (e == protocol::Error::store_failure) {
    return make_error(ErrorCode::store, "local store failure");
  }
  return make_error(ErrorCode::protocol,
                    "encryption failed: " + std::string(protocol::to_string(e)));
}

std::string describe_decrypt_failure(protocol::Error e) {
  switch (e) {
    case protocol::Error::no_session:
      return "no session with the sending device (it may have been re-installed)";
    case protocol::Error::unknown_pre_key:
    case protocol::Error::unknown_signed_pre_key:
      return "the message uses a prekey this device no longer has";
    case protocol::Error::duplicate_message:
      return "the message reuses keys of an earlier one (the sender's data may have been "
             "restored from a copy)";
    default:
      return "the message does not decrypt (" + std::string(protocol::to_string(e)) + ")";
  }
}

}  // namespace sotto::client
