// What a received content means, read from untrusted bytes: the plaintext of a decrypted message
// (content.proto Content) or a plaintext content sent outside any session (PlaintextContent,
// envelope type 8). Pure functions with no state, so the inbox's reading of what peers send is
// fuzzed on its own (fuzz/client_content_fuzz.cpp).
//
// Everything that comes out is checked: usernames are normalised (or the content is unreadable),
// history records with an impossible id or user are dropped, sizes are bounded before parsing.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backup.pb.h"
#include "crypto/bytes.h"
#include "protocol/keys.h"
#include "sotto/client.h"
#include "store/client/client_store.h"

namespace sotto::client {

// Bounds on what a peer may send, before anything is parsed.
inline constexpr std::size_t kMaxContentBytes = 512 * 1024;
inline constexpr std::size_t kMaxPlaintextContentBytes = 1024;
inline constexpr std::size_t kMaxHistoryIdBytes = 64;

inline constexpr std::size_t kMaxEmojiBytes = 64;
inline constexpr std::size_t kMaxQuoteTextBytes = 2048;
inline constexpr int kMaxMentions = 64;
inline constexpr int kMaxReceiptTimestamps = 1024;
inline constexpr int kMaxReadSyncs = 1024;
// The longest disappearing-message timer accepted: one year, in seconds.
inline constexpr std::uint32_t kMaxExpireTimer = 365u * 24 * 3600;

// What a DataMessage (or an EditMessage) carries beyond its body; checked: usernames normalised,
// mentions inside the body, sizes bounded, at most one of reaction / delete / edit.
struct MessageExtras {
  std::optional<MessageRef> quote;
  std::string quote_text;  // wiped by the destructor
  std::vector<Mention> mentions;
  std::optional<MessageRef> reaction_target;
  std::string emoji;                           // empty: the reaction is removed
  std::optional<std::uint64_t> delete_target;  // a message of the same author
  std::optional<std::uint64_t> edit_target;    // a message of the same author
  std::uint32_t expire_timer = 0;
  bool expire_timer_update = false;
  bool group = false;  // a group message (data.group set): not a 1:1 one

  MessageExtras() = default;
  MessageExtras(MessageExtras&&) = default;
  MessageExtras& operator=(MessageExtras&&) = default;
  ~MessageExtras();
};

struct ReceivedContent {
  enum class Kind {
    message,          // `body`, `timestamp`, `extras`: a message to us (or to our account); an
                      // edit, a reaction, a delete or a timer change when `extras` says so
    sent_copy,        // `body`, `timestamp`, `destination`, `extras`: a copy of what our other
                      // device sent
    history_request,  // `wants_history`: our new device's first word
    history_chunk,    // `history` and `contacts` (valid records only), `last`, `total`
    trust_update,     // `user`, `identity_key`, `verified`: our other device accepted a key
    receipt,          // `read`, `timestamps`: the sender received (read) our messages
    typing,           // `typing`: the sender started (true) or stopped typing (1:1 only)
    read_sync,        // `reads`: our other device read these messages
    settings_sync,    // `read_receipts`: our other device changed the account's settings
    device_change,    // `device_change`: our other device linked or removed a device
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
  // history_chunk: each history row's state (journal.proto MessageState, serialized; empty:
  // none), by the row's index in `history`; and the groups of the chunk (not checked yet).
  std::vector<std::string> history_states;
  std::vector<wire::backup::GroupLog> groups;
  bool last = false;
  std::uint64_t total = 0;
  std::vector<store::Contact> contacts;  // with a key, always
  std::string user;
  std::optional<protocol::PublicKey> identity_key;
  bool verified = false;
  std::string why;
  MessageExtras extras;
  bool read = false;
  std::vector<std::uint64_t> timestamps;
  bool typing = false;
  std::vector<MessageRef> reads;
  bool read_receipts = true;
  // device_change: what it says, checked (a named device has an id; an auth key is 32 bytes).
  struct DeviceChange {
    bool link_started = false;
    std::uint32_t device_id = 0;
    std::uint32_t registration_id = 0;
    std::optional<std::array<std::uint8_t, 32>> auth_key;
    bool removed = false;
  };
  DeviceChange device_change;

  ReceivedContent() = default;
  ReceivedContent(ReceivedContent&&) = default;
  ReceivedContent& operator=(ReceivedContent&&) = default;
  ~ReceivedContent();
};

// Reads a decrypted Content. `from_own_account`: sent by another device of our account (only
// those may send sync content).
[[nodiscard]] ReceivedContent read_content(ByteView plaintext, bool from_own_account);

// The key transparency tree head a decrypted Content carries (kt_tree_head, gossip), read
// without parsing the rest; empty when there is none, it is not 112 bytes, or the Content is
// malformed. The caller checks the head itself (KtClient::check_gossip).
[[nodiscard]] Bytes gossip_head_of(ByteView plaintext);

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
