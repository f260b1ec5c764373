// The client's local store (DESIGN.md section 7): one SQLite file per account under the client's
// data directory. It implements the protocol layer's store interfaces (identities, sessions,
// prekeys, signed prekeys, sender keys) and keeps the account's own settings, contacts, message
// history and the ids of envelopes already processed (so a re-delivered envelope is shown once).
// Every private key, session record and message body is encrypted at rest with
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
#include <vector>

#include <tl/expected.hpp>

#include "crypto/ed25519.h"
#include "protocol/sender_keys.h"
#include "protocol/stores.h"

namespace sotto::store {

enum class ClientError {
  not_found,
  wrong_passphrase,   // the storage key does not open the store
  corrupt,            // a stored row fails to decrypt or decode
  io,
  exists,             // creating an account store that already exists
  invalid_argument,   // a username that is not a safe file name, an unknown trust policy, or a
                      // settings change the store cannot make (renaming the account)
};

std::string_view to_string(ClientError e);

// Settings of the local account, created at registration or linking.
struct AccountSettings {
  std::string username;
  std::uint32_t device_id = 0;
  std::string server_host;
  std::uint16_t server_port = 0;
  std::string server_fingerprint;        // pinned TLS certificate fingerprint (hex)
  crypto::Ed25519KeyPair auth_key;       // device authentication key (secret seed)
  protocol::IdentityKeyPair identity;    // account identity key pair (secret)
  protocol::RegistrationId registration_id;
  std::uint32_t next_pre_key_id = 1;
  std::uint32_t next_signed_pre_key_id = 1;
  std::string trust_policy = "on-first-use";  // on-first-use | always | never
};

struct Contact {
  std::string username;
  std::optional<protocol::PublicKey> identity_key;
  bool verified = false;        // the user compared safety numbers (sotto trust)
  std::uint64_t identity_changed_at = 0;  // 0 unless the key changed since last verified/seen;
                                          // otherwise when it changed (ms since the epoch)
};

struct StoredMessage {
  std::string envelope_id;      // hex of the server's 16-byte id, or a local id for sent ones
  std::string peer;             // the conversation: the other user
  std::string sender;           // who wrote it (us or the peer)
  std::uint32_t sender_device = 0;
  std::uint64_t timestamp = 0;  // sender's clock, ms
  std::string body;
  bool outgoing = false;
};

class ClientStore : public protocol::IdentityKeyStore,
                    public protocol::SessionStore,
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
  // Usernames with a store under DIR.
  static std::vector<std::string> accounts(const std::filesystem::path& dir);

  ~ClientStore() override;

  [[nodiscard]] const AccountSettings& settings() const;
  [[nodiscard]] tl::expected<void, ClientError> save_settings(const AccountSettings& settings);

  // Runs fn inside one SQLite transaction (nested calls join it); rolls back if fn returns false.
  [[nodiscard]] tl::expected<bool, ClientError> transaction(const std::function<bool()>& fn);

  // protocol store interfaces
  tl::expected<protocol::IdentityKeyPair, protocol::Error> identity_key_pair() override;
  tl::expected<protocol::RegistrationId, protocol::Error> local_registration_id() override;
  tl::expected<bool, protocol::Error> save_identity(const protocol::Address& address,
                                                    const protocol::PublicKey& key) override;
  tl::expected<bool, protocol::Error> is_trusted_identity(const protocol::Address& address,
                                                          const protocol::PublicKey& key,
                                                          protocol::Direction direction) override;
  tl::expected<std::optional<protocol::PublicKey>, protocol::Error> load_identity(
      const protocol::Address& address) override;
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
  tl::expected<void, protocol::Error> save_sender_key(const protocol::SenderKeyName& name,
                                                      const protocol::SenderKeyRecord& record) override;

  // Devices of a peer we hold sessions with (for sending to all of them).
  [[nodiscard]] tl::expected<std::vector<std::uint32_t>, ClientError> session_devices(
      const std::string& username);
  [[nodiscard]] tl::expected<void, ClientError> delete_session(const protocol::Address& address);
  [[nodiscard]] tl::expected<std::size_t, ClientError> pre_key_count();

  // Contacts and trust.
  [[nodiscard]] tl::expected<std::vector<Contact>, ClientError> contacts();
  [[nodiscard]] tl::expected<void, ClientError> set_verified(const std::string& username, bool verified);

  // History and re-delivery dedup.
  [[nodiscard]] tl::expected<bool, ClientError> seen_envelope(const std::string& envelope_id);
  [[nodiscard]] tl::expected<void, ClientError> mark_envelope(const std::string& envelope_id);
  // Adding a message whose (peer, envelope_id) is already stored changes nothing (re-delivery).
  [[nodiscard]] tl::expected<void, ClientError> add_message(const StoredMessage& message);
  // The newest `limit` messages with `peer` (all of them when limit is 0), oldest first (by
  // timestamp, then by the order they were added).
  [[nodiscard]] tl::expected<std::vector<StoredMessage>, ClientError> messages(
      const std::string& peer, std::size_t limit);

 private:
  struct Impl;
  explicit ClientStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sotto::store
