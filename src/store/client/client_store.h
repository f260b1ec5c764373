// The client's local store (docs/architecture.md section 7): one SQLite file per account under the
// client's data directory. It implements the protocol layer's session, prekey and sender key
// stores, and keeps the account's settings, its contacts' identity keys with what the user decided
// about them, the message history, messages held back until the user accepts a contact's new key,
// the journal of events not yet handed to the app, the log of recently sent contents (to send one
// again when a recipient could not decrypt it), small engine state, and the ids of envelopes
// already processed (so a re-delivered envelope is shown once).
//
// It keeps data; what the data means is the client's: the trust policy, for one, is applied by
// src/client/identities.h, not here.
//
// Every private key, session record, message body and journal entry is encrypted at rest with
// XChaCha20-Poly1305 under a storage key: derived from the user's passphrase with Argon2id, or,
// when the user sets none, a random key kept in a file readable only by the user.
// Thread-safe (one internal mutex); callers needing atomicity across calls use transaction().
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/ed25519.h"
#include "protocol/sender_keys.h"
#include "protocol/stores.h"

namespace sotto::store {

inline constexpr std::size_t kMaxJournalEntries = 100'000;
// History rows whose id starts with this are notices about a message (it could not be
// decrypted or read), not the message: the message may still arrive and be shown.
inline constexpr std::string_view kNoticePrefix = "notice-";
// The body of a history row that cannot be read back.
inline constexpr std::string_view kDamagedMessageBody =
    "[this message is damaged in the local store and cannot be shown]";

enum class ClientError {
  not_found,
  wrong_passphrase,  // the storage key does not open the store
  corrupt,           // a stored row fails to decrypt or decode
  io,
  exists,            // creating an account store that already exists
  invalid_argument,  // a username that is not a safe file name, an unknown trust policy, or a
                     // settings change the store cannot make (renaming the account)
};

std::string_view to_string(ClientError e);

// Settings of the local account, created at registration or linking.
struct AccountSettings {
  std::string username;
  std::uint32_t device_id = 0;
  std::string server_host;
  std::uint16_t server_port = 0;
  std::string server_fingerprint;      // pinned TLS certificate fingerprint (hex)
  crypto::Ed25519KeyPair auth_key;     // device authentication key (secret seed)
  protocol::IdentityKeyPair identity;  // account identity key pair (secret)
  protocol::RegistrationId registration_id;
  std::uint32_t next_pre_key_id = 1;
  std::uint32_t next_signed_pre_key_id = 1;
  std::string trust_policy = "on-first-use";  // on-first-use | always | never

  [[nodiscard]] AccountSettings clone() const;
};

// A contact's identity key and what the user (or the trust policy) decided about it.
struct Contact {
  std::string username;
  std::optional<protocol::PublicKey> identity_key;  // the newest key seen for the contact
  bool accepted = false;                  // that key may be used: sent to, and its messages shown
  bool verified = false;                  // the user compared safety numbers for that key
  std::uint64_t identity_changed_at = 0;  // when the key last changed (ms); 0: never
};

struct StoredMessage {
  std::string envelope_id;  // hex of the server's 16-byte id, or a local id for sent ones
  std::string peer;         // the conversation: the other user
  std::string sender;       // who wrote it (us or the peer)
  std::uint32_t sender_device = 0;
  std::uint64_t timestamp = 0;  // sender's clock, ms
  std::string body;
  bool outgoing = false;
};

// One entry of the event journal: an opaque record (the client encodes it) and its sequence
// number, which only grows and so identifies the entry for good.
struct JournalEntry {
  std::uint64_t seq = 0;
  crypto::SecretBuffer record;
};

// What the client keeps about a message beyond its body (an opaque record it encodes: quote,
// reactions, edited and deleted marks, receipts, its disappearing timer), by conversation and the
// message's (author, timestamp); and when the message disappears (0: not counting down).
struct MessageStateRow {
  std::string peer;
  std::string author;
  std::uint64_t timestamp = 0;
  std::uint64_t expires_at = 0;
  crypto::SecretBuffer record;
};

// A content we sent, kept for a while in case a recipient device asks for it again.
struct SentContent {
  crypto::SecretBuffer content;  // the serialized Content as encrypted for that recipient
  std::uint32_t resends = 0;     // how often it was sent again
};

class ClientStore : public protocol::SessionStore,
                    public protocol::PreKeyStore,
                    public protocol::SignedPreKeyStore,
                    public protocol::SenderKeyStore {
 public:
  struct Key;  // the 32-byte storage key, wiped on release

  // Creates DIR/<username>.db (and, without a passphrase, DIR/<username>.key with mode 0600).
  [[nodiscard]] static tl::expected<std::unique_ptr<ClientStore>, ClientError> create(
      const std::filesystem::path& dir, const AccountSettings& settings,
      std::optional<std::string> passphrase);
  [[nodiscard]] static tl::expected<std::unique_ptr<ClientStore>, ClientError> open(
      const std::filesystem::path& dir, const std::string& username,
      std::optional<std::string> passphrase);
  // Opens the store for reading only, without migrating it: for reading the history while another
  // process (a daemon) holds the account. Every write fails with `io`.
  [[nodiscard]] static tl::expected<std::unique_ptr<ClientStore>, ClientError> open_read_only(
      const std::filesystem::path& dir, const std::string& username,
      std::optional<std::string> passphrase);
  // Usernames with a store under DIR.
  static std::vector<std::string> accounts(const std::filesystem::path& dir);

  ~ClientStore() override;

  [[nodiscard]] const AccountSettings& settings() const;
  [[nodiscard]] tl::expected<void, ClientError> save_settings(const AccountSettings& settings);

  // Runs fn inside one SQLite transaction (nested calls join it); rolls back if fn returns false.
  [[nodiscard]] tl::expected<bool, ClientError> transaction(const std::function<bool()>& fn);

  // The account's identity key pair and registration id (from the settings).
  [[nodiscard]] protocol::IdentityKeyPair identity_key_pair() const;
  [[nodiscard]] protocol::RegistrationId local_registration_id() const;

  // protocol store interfaces
  tl::expected<std::optional<protocol::SessionRecord>, protocol::Error> load_session(
      const protocol::Address& address) override;
  tl::expected<void, protocol::Error> save_session(const protocol::Address& address,
                                                   const protocol::SessionRecord& record) override;
  tl::expected<std::optional<protocol::PreKeyRecord>, protocol::Error> load_pre_key(
      protocol::PreKeyId id) override;
  tl::expected<void, protocol::Error> save_pre_key(const protocol::PreKeyRecord& record) override;
  tl::expected<void, protocol::Error> remove_pre_key(protocol::PreKeyId id) override;
  tl::expected<std::optional<protocol::SignedPreKeyRecord>, protocol::Error> load_signed_pre_key(
      protocol::SignedPreKeyId id) override;
  tl::expected<void, protocol::Error> save_signed_pre_key(
      const protocol::SignedPreKeyRecord& record) override;
  tl::expected<std::optional<protocol::SenderKeyRecord>, protocol::Error> load_sender_key(
      const protocol::SenderKeyName& name) override;
  tl::expected<void, protocol::Error> save_sender_key(
      const protocol::SenderKeyName& name, const protocol::SenderKeyRecord& record) override;

  // Devices of a peer we hold a current session with (for sending to all of them); a record with
  // archived states only (a device that is gone or whose session broke) is not listed.
  [[nodiscard]] tl::expected<std::vector<std::uint32_t>, ClientError> session_devices(
      const std::string& username);
  [[nodiscard]] tl::expected<void, ClientError> delete_session(const protocol::Address& address);
  [[nodiscard]] tl::expected<std::size_t, ClientError> pre_key_count();
  // The ids of the one-time prekeys held (their private halves), ascending.
  [[nodiscard]] tl::expected<std::vector<std::uint32_t>, ClientError> pre_key_ids();
  // The ids of the signed prekeys held, ascending.
  [[nodiscard]] tl::expected<std::vector<std::uint32_t>, ClientError> signed_pre_key_ids();
  [[nodiscard]] tl::expected<void, ClientError> remove_signed_pre_key(protocol::SignedPreKeyId id);

  // Contacts and their identity keys.
  [[nodiscard]] tl::expected<std::vector<Contact>, ClientError> contacts();
  [[nodiscard]] tl::expected<std::optional<Contact>, ClientError> load_contact(
      const std::string& username);
  [[nodiscard]] tl::expected<void, ClientError> save_contact(const Contact& contact);

  // History and re-delivery dedup.
  [[nodiscard]] tl::expected<bool, ClientError> seen_envelope(const std::string& envelope_id);
  // `content_hash` (a hash of the envelope's ciphertext; may be empty) lets seen_content() tell
  // a ciphertext processed before under another envelope id: the server delivers again under a
  // new id a send it showed before the send was durable, when the sender retries it.
  [[nodiscard]] tl::expected<void, ClientError> mark_envelope(const std::string& envelope_id,
                                                              ByteView content_hash = {});
  [[nodiscard]] tl::expected<bool, ClientError> seen_content(ByteView content_hash);
  // Adding a message whose (peer, envelope_id) is already stored changes nothing (re-delivery).
  [[nodiscard]] tl::expected<void, ClientError> add_message(const StoredMessage& message);
  // Whether the history holds a message (not a notice) of `sender`'s device with this timestamp
  // in the conversation with `peer` (a message sent again after a decryption failure is shown
  // once; a device gives each message it sends its own timestamp).
  [[nodiscard]] tl::expected<bool, ClientError> has_message(const std::string& peer,
                                                            const std::string& sender,
                                                            std::uint32_t sender_device,
                                                            std::uint64_t timestamp);
  // The newest `limit` messages with `peer` (all of them when limit is 0), oldest first (by
  // timestamp, then by the order they were added). A row that fails to decrypt or decode is
  // returned as a message saying so (kDamagedMessageBody), so one damaged row hides nothing else.
  [[nodiscard]] tl::expected<std::vector<StoredMessage>, ClientError> messages(
      const std::string& peer, std::size_t limit);
  // Every message of every conversation, in the order they were added; stops early when `fn`
  // returns false. Damaged rows as in messages().
  [[nodiscard]] tl::expected<void, ClientError> for_each_message(
      const std::function<bool(const StoredMessage&)>& fn);
  [[nodiscard]] tl::expected<std::size_t, ClientError> message_count();

  // A message (not a notice) of the conversation with `peer` by (author, timestamp); by the id
  // this device shows for it (any conversation); by (author, timestamp) in any conversation.
  [[nodiscard]] tl::expected<std::optional<StoredMessage>, ClientError> find_message(
      const std::string& peer, const std::string& author, std::uint64_t timestamp);
  [[nodiscard]] tl::expected<std::optional<StoredMessage>, ClientError> find_message_by_id(
      const std::string& envelope_id);
  [[nodiscard]] tl::expected<std::optional<StoredMessage>, ClientError> find_message_by_ref(
      const std::string& author, std::uint64_t timestamp);
  // Messages (not notices) with this timestamp in any conversation, at most two (so a caller
  // can tell an ambiguous one).
  [[nodiscard]] tl::expected<std::vector<StoredMessage>, ClientError> find_messages_at(
      std::uint64_t timestamp);
  // Replaces the body of that message (an edit, a delete for everyone): the earlier body is
  // overwritten on disk (the store runs with secure_delete).
  [[nodiscard]] tl::expected<void, ClientError> replace_message_body(const std::string& peer,
                                                                     const std::string& author,
                                                                     std::uint64_t timestamp,
                                                                     const std::string& body);
  // Removes that message (its rows and its state) from the history.
  [[nodiscard]] tl::expected<void, ClientError> delete_message(const std::string& peer,
                                                               const std::string& author,
                                                               std::uint64_t timestamp);

  // Message states (MessageStateRow). Saving replaces the row.
  [[nodiscard]] tl::expected<void, ClientError> save_message_state(const std::string& peer,
                                                                   const std::string& author,
                                                                   std::uint64_t timestamp,
                                                                   std::uint64_t expires_at,
                                                                   ByteView record);
  [[nodiscard]] tl::expected<std::optional<crypto::SecretBuffer>, ClientError> load_message_state(
      const std::string& peer, const std::string& author, std::uint64_t timestamp);
  // Every state of the conversation with `peer` (damaged rows skipped).
  [[nodiscard]] tl::expected<std::vector<MessageStateRow>, ClientError> message_states(
      const std::string& peer);
  // The messages whose time ran out by `now_ms` (records not read), and the earliest expiry
  // still to come (0: none).
  [[nodiscard]] tl::expected<std::vector<MessageStateRow>, ClientError> expired_messages(
      std::uint64_t now_ms);
  [[nodiscard]] tl::expected<std::uint64_t, ClientError> next_expiry();

  // Messages held back until the user accepts their sender's new identity key.
  [[nodiscard]] tl::expected<void, ClientError> hold_message(const StoredMessage& message);
  // Removes and returns the messages held for the conversation with `peer`, oldest first.
  [[nodiscard]] tl::expected<std::vector<StoredMessage>, ClientError> take_held(
      const std::string& peer);
  [[nodiscard]] tl::expected<std::size_t, ClientError> held_count(const std::string& peer);

  // The event journal: events the client recorded and has not yet seen handed over. Entries
  // beyond kMaxJournalEntries are dropped, oldest first.
  [[nodiscard]] tl::expected<std::uint64_t, ClientError> append_event(ByteView record);
  // Entries with seq > after, oldest first, at most `limit` (0: all).
  [[nodiscard]] tl::expected<std::vector<JournalEntry>, ClientError> events(std::uint64_t after,
                                                                            std::size_t limit);
  // Removes every entry with seq <= through.
  [[nodiscard]] tl::expected<void, ClientError> remove_events(std::uint64_t through);
  // Removes the entry `seq` alone (an event that held a message which is gone).
  [[nodiscard]] tl::expected<void, ClientError> remove_event(std::uint64_t seq);

  // Recently sent contents, by recipient user and timestamp.
  [[nodiscard]] tl::expected<void, ClientError> log_sent(const std::string& peer,
                                                         std::uint64_t timestamp,
                                                         std::uint64_t now_ms, ByteView content);
  [[nodiscard]] tl::expected<std::optional<SentContent>, ClientError> load_sent(
      const std::string& peer, std::uint64_t timestamp);
  [[nodiscard]] tl::expected<void, ClientError> count_resend(const std::string& peer,
                                                             std::uint64_t timestamp);
  // Forgets the content sent to `peer` at `timestamp` (a message that disappeared or was deleted).
  [[nodiscard]] tl::expected<void, ClientError> remove_sent(const std::string& peer,
                                                            std::uint64_t timestamp);
  // Forgets contents logged before `before_ms`.
  [[nodiscard]] tl::expected<void, ClientError> expire_sent(std::uint64_t before_ms);

  // Small named values of the client (sealed): what it must remember between runs beyond the
  // settings (announced server key, the copy of the data it last ran from, known devices...).
  [[nodiscard]] tl::expected<std::optional<crypto::SecretBuffer>, ClientError> load_value(
      std::string_view name);
  [[nodiscard]] tl::expected<void, ClientError> save_value(std::string_view name, ByteView value);
  [[nodiscard]] tl::expected<void, ClientError> remove_value(std::string_view name);

  // Identifies where this store's file lives (device and inode), so a copy of the data directory
  // is told apart from the original.
  [[nodiscard]] std::string file_identity() const;

 private:
  struct Impl;
  explicit ClientStore(std::unique_ptr<Impl> impl);
  static tl::expected<std::unique_ptr<Impl>, ClientError> open_impl(
      const std::filesystem::path& dir, const std::string& username,
      std::optional<std::string>& passphrase, bool read_only);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sotto::store
