// What a received content means, read from untrusted bytes: the plaintext of a decrypted message
// (content.proto Content) or a plaintext content sent outside any session (PlaintextContent,
// envelope type 8). Pure functions with no state, so the inbox's reading of what peers send is
// fuzzed on its own (fuzz/client_content_fuzz.cpp).
//
// Everything that comes out is checked: usernames are normalised (or the content is unreadable),
// history records with an impossible id or user are dropped, sizes are bounded before parsing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "crypto/bytes.h"
#include "protocol/keys.h"
#include "store/client/client_store.h"

namespace sotto::wire::backup {
class ContactRecord;
class MessageRecord;
}  // namespace sotto::wire::backup

namespace sotto::client {

// Bounds on what a peer may send, before anything is parsed.
inline constexpr std::size_t kMaxContentBytes = 512 * 1024;
inline constexpr std::size_t kMaxPlaintextContentBytes = 1024;
inline constexpr std::size_t kMaxHistoryIdBytes = 64;

struct ReceivedContent {
  enum class Kind {
    message,          // `body`, `timestamp`: a message to us (or to our account)
    sent_copy,        // `body`, `timestamp`, `destination`: a copy of what our other device sent
    history_request,  // `wants_history`: our new device's first word
    history_chunk,    // `history` and `contacts` (valid records only), `last`, `total`
    trust_update,     // `user`, `identity_key`, `verified`: our other device accepted a key
    nothing,          // a receipt, or content of a later version: nothing to show
    unreadable,       // `why`
  };
  Kind kind = Kind::nothing;
  std::string body;  // wiped by the destructor
  // message, sent_copy: serialized AttachmentPointers that pass check_pointer() (wiped: each
  // holds a key).
  std::vector<std::string> attachments;
  std::uint64_t timestamp = 0;
  std::string destination;
  bool wants_history = false;
  std::vector<store::StoredMessage> history;  // bodies wiped by the destructor
  bool last = false;
  std::uint64_t total = 0;
  std::vector<store::Contact> contacts;  // with a key, always
  std::string user;
  std::optional<protocol::PublicKey> identity_key;
  bool verified = false;
  std::string why;

  ReceivedContent() = default;
  ReceivedContent(ReceivedContent&&) = default;
  ReceivedContent& operator=(ReceivedContent&&) = default;
  ~ReceivedContent();
};

// Reads a decrypted Content. `from_own_account`: sent by another device of our account (only
// those may send sync content).
[[nodiscard]] ReceivedContent read_content(ByteView plaintext, bool from_own_account);

// A history row as a record of a backup or a history transfer (backup.proto MessageRecord), and
// back: nullopt for a record that cannot be a history row (a username that is not one, an id
// that is empty or longer than kMaxHistoryIdBytes). Taking a row moves the record's body out.
void fill_record(const store::StoredMessage& m, wire::backup::MessageRecord& r);
[[nodiscard]] std::optional<store::StoredMessage> take_history_row(wire::backup::MessageRecord& r);
// The same for a contact (backup.proto ContactRecord): nullopt for a username that is not one or
// a key that does not decode.
void fill_record(const store::Contact& c, wire::backup::ContactRecord& r);
[[nodiscard]] std::optional<store::Contact> contact_of(const wire::backup::ContactRecord& r);

// A request to send a message again (a DecryptionError in a PlaintextContent); nullopt for
// anything else.
struct ResendRequest {
  std::uint64_t timestamp = 0;
  Bytes ratchet_key;  // empty, or 33 bytes
};
[[nodiscard]] std::optional<ResendRequest> read_plaintext_content(ByteView bytes);

}  // namespace sotto::client
