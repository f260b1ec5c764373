// Server storage interfaces (docs/architecture.md section 7): one interface per concern,
// implemented by the SQLite backend (sqlite_store.h), the only one today; any other backend must
// pass the same store test suite (tests/unit/server_store_test.cpp). The server stores public keys
// and ciphertext only; docs/what-the-server-knows.md lists every column and is checked against the
// live schema. Implementations are thread-safe: the server calls them from several I/O threads.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <tl/expected.hpp>
#include <vector>

#include "crypto/bytes.h"

namespace sotto::store {

enum class Error {
  not_found,
  conflict,    // unique constraint: username taken, device id in use, duplicate envelope
  queue_full,  // a device queue is at its limit (messages or bytes)
  // The sending account holds its share of a recipient device's queue (SqliteOptions): others may
  // still send to that device.
  queue_share_full,
  invalid_token,  // invite or link token unknown, used or expired
  io,             // the database failed (disk full, corruption); logged by the store
};

using AccountId = std::int64_t;
using DeviceId = std::uint32_t;
using EnvelopeId = std::array<std::uint8_t, 16>;

// Sizes of variable-length values the store keeps (service.proto).
inline constexpr std::size_t kMaxDeviceNameSize = 256;
inline constexpr std::size_t kRecoveryKeySize = 32;

struct DeviceRecord {
  DeviceId id = 0;
  std::uint32_t registration_id = 0;
  Bytes auth_key;  // Ed25519 public key, 32 bytes
  std::uint64_t created_day = 0;
  // NewDevice.name: ciphertext only the account's devices can read, at most kMaxDeviceNameSize
  // bytes; empty when the device has no name.
  Bytes name;
};

struct AccountRecord {
  AccountId id = 0;
  std::string username;  // normalised (lower case)
  Bytes identity_key;    // 33 bytes
  // Ed25519 public key (kRecoveryKeySize bytes) that verifies recovery requests; empty when the
  // account cannot be recovered.
  Bytes recovery_key;
  std::vector<DeviceRecord> devices;
};

struct SignedPreKeyRecord {
  std::uint32_t id = 0;
  Bytes public_key;  // 33 bytes
  Bytes signature;   // 64 bytes
};

struct OneTimePreKeyRecord {
  std::uint32_t id = 0;
  Bytes public_key;  // 33 bytes
};

class AccountStore {
 public:
  virtual ~AccountStore() = default;
  // Creates the account with its first device (id 1). conflict when the username is taken.
  // `recovery_key`: empty (the account cannot be recovered) or kRecoveryKeySize bytes.
  [[nodiscard]] virtual tl::expected<AccountId, Error> create_account(
      const std::string& username, ByteView identity_key, const DeviceRecord& first_device,
      const SignedPreKeyRecord& signed_pre_key, const std::vector<OneTimePreKeyRecord>& pre_keys,
      ByteView recovery_key = {}) = 0;
  [[nodiscard]] virtual tl::expected<AccountRecord, Error> find_account(
      const std::string& username) = 0;
  [[nodiscard]] virtual tl::expected<AccountRecord, Error> find_account(AccountId id) = 0;
  // The accounts of many normalised usernames at once (a multi-recipient send), in order, null
  // where there is no such account. The records are shared and never change (a change to an
  // account makes a new one), so a backend with a cache hands out its own without copying.
  [[nodiscard]] virtual tl::expected<std::vector<std::shared_ptr<const AccountRecord>>, Error>
  find_accounts(const std::vector<std::string>& usernames) {
    std::vector<std::shared_ptr<const AccountRecord>> out;
    out.reserve(usernames.size());
    for (const auto& name : usernames) {
      auto found = find_account(name);
      if (!found && found.error() != Error::not_found) return tl::unexpected(found.error());
      out.push_back(found ? std::make_shared<const AccountRecord>(std::move(*found)) : nullptr);
    }
    return out;
  }
  // Adds a device with the next free id; returns it.
  [[nodiscard]] virtual tl::expected<DeviceId, Error> add_device(
      AccountId account, const DeviceRecord& device, const SignedPreKeyRecord& signed_pre_key,
      const std::vector<OneTimePreKeyRecord>& pre_keys) = 0;
  // Removes the device, its keys and its queue; returns how many queued envelopes went with it.
  [[nodiscard]] virtual tl::expected<std::size_t, Error> remove_device(AccountId account,
                                                                       DeviceId device) = 0;
  // Gives the account to a new holder (a recovery, service.proto RecoverRequest), in one
  // transaction: the identity key and the recovery key are replaced, every device goes with its
  // keys and queue, so do the account's link tokens, and `first_device` becomes device 1.
  // Returns how many queued envelopes went with the old devices. not_found when there is no such
  // account; conflict when its recovery key is no longer `expected_recovery_key` (another
  // recovery came first), and then nothing changed.
  [[nodiscard]] virtual tl::expected<std::size_t, Error> recover_account(
      AccountId account, ByteView expected_recovery_key, ByteView identity_key,
      const DeviceRecord& first_device, const SignedPreKeyRecord& signed_pre_key,
      const std::vector<OneTimePreKeyRecord>& pre_keys, ByteView recovery_key) = 0;
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;
  [[nodiscard]] virtual tl::expected<void, Error> set_signed_pre_key(
      AccountId account, DeviceId device, const SignedPreKeyRecord& key) = 0;
  [[nodiscard]] virtual tl::expected<SignedPreKeyRecord, Error> signed_pre_key(AccountId account,
                                                                               DeviceId device) = 0;
  // Ids already present are replaced. At most limit keys are kept per device.
  [[nodiscard]] virtual tl::expected<void, Error> add_pre_keys(
      AccountId account, DeviceId device, const std::vector<OneTimePreKeyRecord>& keys) = 0;
  // Replaces every one-time prekey of the device by `keys` (none: the device has none left), in
  // one transaction. At most limit keys are kept, as for add_pre_keys.
  [[nodiscard]] virtual tl::expected<void, Error> replace_pre_keys(
      AccountId account, DeviceId device, const std::vector<OneTimePreKeyRecord>& keys) = 0;
  // Removes and returns one one-time prekey, atomically: no two callers get the same key.
  [[nodiscard]] virtual tl::expected<std::optional<OneTimePreKeyRecord>, Error> take_pre_key(
      AccountId account, DeviceId device) = 0;
  [[nodiscard]] virtual tl::expected<std::uint32_t, Error> count_pre_keys(AccountId account,
                                                                          DeviceId device) = 0;
  // The ids of the device's one-time prekeys, ascending.
  [[nodiscard]] virtual tl::expected<std::vector<std::uint32_t>, Error> pre_key_ids(
      AccountId account, DeviceId device) = 0;
};

// Accounts an account has blocked (service.proto BlockRequest): one list per account, shared by
// all its devices. Rows go with either account.
inline constexpr std::size_t kMaxBlocksPerAccount = 10000;

class BlockStore {
 public:
  virtual ~BlockStore() = default;
  // Blocking twice is not an error. conflict when the account already blocks
  // kMaxBlocksPerAccount others; not_found when either account does not exist.
  [[nodiscard]] virtual tl::expected<void, Error> block(AccountId account, AccountId blocked) = 0;
  // Returns whether there was such a block.
  [[nodiscard]] virtual tl::expected<bool, Error> unblock(AccountId account, AccountId blocked) = 0;
  [[nodiscard]] virtual tl::expected<bool, Error> is_blocked(AccountId account,
                                                             AccountId sender) = 0;
  // The usernames `account` blocks, sorted.
  [[nodiscard]] virtual tl::expected<std::vector<std::string>, Error> blocked(
      AccountId account) = 0;
};

// One stored message for one device.
struct QueuedEnvelope {
  EnvelopeId id{};
  AccountId account = 0;  // the recipient account
  DeviceId device = 0;    // the recipient device
  std::string source;     // sender username (empty for sealed sender, later)
  DeviceId source_device = 0;
  std::uint32_t type = 0;
  Bytes content;  // ciphertext; empty when `body` is set
  std::uint64_t client_timestamp = 0;
  std::uint64_t server_timestamp = 0;  // milliseconds
  std::uint64_t expires_at = 0;        // seconds since the epoch
  // The sender's account, not stored: what it holds of another account's device queue is capped
  // (SqliteOptions::max_queue_per_sender); 0, or the recipient's own account, is not capped.
  AccountId source_account = 0;
  // enqueue(): the ciphertext, shared with other envelopes of the same send that hold the same
  // pointer (a multi-recipient send), and then stored once for all of them; `content` stays
  // empty. Each envelope still counts the body's full size in its device's queue and its
  // sender's share of that queue; the server's stored bytes count it once.
  std::shared_ptr<const Bytes> body;
  // load(): the envelope's content came from a shared body (its acknowledgement tells remove_async
  // so, see Removing::shared). load() always fills `content` and leaves `body` empty.
  bool shared = false;

  // The envelope's ciphertext, wherever it is kept.
  [[nodiscard]] ByteView payload() const noexcept {
    return body ? ByteView(*body) : ByteView(content);
  }
};

class MessageStore {
 public:
  virtual ~MessageStore() = default;
  using Completion = std::function<void(tl::expected<void, Error>)>;
  // Stores every envelope of one send, atomically, with group commit: the completion runs once
  // the batch is durable (fsync'd), from the store's writer thread, and many sends share one
  // fsync. `dedup_key` (client message id, then sender account) makes a retried send a no-op
  // that completes successfully. Its first six bytes place its row (a SQLite store keeps dedup
  // rows in their order): clients begin message ids with the time in milliseconds, big-endian,
  // as UUIDv7 does, so that a busy server appends instead of writing a random page per send.
  // queue_full when any recipient device queue is at its limit; queue_share_full when the sender
  // holds its share of one (a backend without shares never returns it).
  virtual void enqueue(std::vector<QueuedEnvelope> envelopes, std::optional<Bytes> dedup_key,
                       Completion done) = 0;
  // Oldest first, at most `limit`, strictly after `after` (the last id seen) when given, and
  // none after the one whose content brings the total to `max_bytes` or more (so one envelope
  // is returned whatever its size, and fewer than `limit` with less than `max_bytes` in all means
  // the queue has no more).
  [[nodiscard]] virtual tl::expected<std::vector<QueuedEnvelope>, Error> load(
      AccountId account, DeviceId device, std::size_t limit,
      std::optional<EnvelopeId> after = std::nullopt,
      std::size_t max_bytes = std::numeric_limits<std::size_t>::max()) = 0;
  // Deletes envelopes of this device only: ids of other devices' queues are ignored. Returns
  // how many were deleted, once the deletion is durable. Blocks; REQUIRES: not called from a
  // completion (it would wait for its own writer).
  [[nodiscard]] virtual tl::expected<std::size_t, Error> remove(
      AccountId account, DeviceId device, const std::vector<EnvelopeId>& ids) = 0;
  using RemoveCompletion = std::function<void(tl::expected<std::size_t, Error>)>;
  // What the caller knows of an envelope it removes (its sender and size, as stored): spares the
  // store a lookup of each row before deleting it, on the path of every acknowledgement.
  struct Removing {
    std::string source;
    std::uint64_t bytes = 0;
    bool shared = false;  // its ciphertext is a shared body (QueuedEnvelope::body, ::shared)
  };
  // remove() without blocking the caller: the deletion shares the group commit of enqueue(), in
  // order with it, and `done` runs once it is durable, from the store's writer thread. An id whose
  // envelope is still waiting in an enqueue() not yet written (a recipient that acknowledged a
  // live push before the commit) is taken out of that send, so that envelope is never written at
  // all; when every id was such, `done` runs at once on the caller's thread.
  // `known`: empty, or for each of `ids` its sender and size (the server has them for every
  // envelope it pushed); a wrong one would skew the queue accounting, never what is deleted.
  virtual void remove_async(AccountId account, DeviceId device, std::vector<EnvelopeId> ids,
                            RemoveCompletion done, std::vector<Removing> known = {}) = 0;
  // Whether a send with this dedup key has been accepted (written, or waiting to be) within the
  // dedup window. Lets a retry be answered before its device list is checked again.
  [[nodiscard]] virtual tl::expected<bool, Error> was_sent(ByteView dedup_key) = 0;

  // A device whose queue could not take a send's envelope (enqueue_partial): queue_full, or
  // queue_share_full when the sender holds its share of it.
  struct Refusal {
    AccountId account = 0;
    DeviceId device = 0;
    Error why = Error::queue_full;
    bool operator==(const Refusal&) const = default;
  };
  using PartialCompletion = std::function<void(tl::expected<std::vector<Refusal>, Error>)>;
  // enqueue(), except that a device whose queue is full does not refuse the whole send: that
  // device's envelopes are not stored, every other one is, and the completion lists the devices
  // left out (none: all stored). The list is kept with the dedup key, for sent(). Any other
  // failure refuses the whole send, as for enqueue(). The default stores all or nothing (a
  // full queue anywhere: queue_full for the whole send), for a backend that keeps no list.
  virtual void enqueue_partial(std::vector<QueuedEnvelope> envelopes, Bytes dedup_key,
                               PartialCompletion done) {
    enqueue(std::move(envelopes), std::move(dedup_key),
            [done = std::move(done)](tl::expected<void, Error> stored) {
              if (!stored) return done(tl::unexpected(stored.error()));
              done(std::vector<Refusal>{});
            });
  }
  // Whether a send with this dedup key was stored (committed) within the dedup window, with what
  // it left out: nullopt when none was, else the devices enqueue_partial() refused (empty for any
  // other send). Unlike was_sent(), a send still waiting to be written need not count (the caller
  // knows its own sends under way): the lookup stays off the writer's queue. The default asks
  // was_sent(), which counts those too, and knows no list.
  [[nodiscard]] virtual tl::expected<std::optional<std::vector<Refusal>>, Error> sent(
      ByteView dedup_key) {
    auto was = was_sent(dedup_key);
    if (!was) return tl::unexpected(was.error());
    if (!*was) return std::nullopt;
    return std::vector<Refusal>{};
  }
  [[nodiscard]] virtual tl::expected<std::size_t, Error> count(AccountId account,
                                                               DeviceId device) = 0;
  // Every stored envelope of every device, expired ones not yet deleted by expire() included
  // (what the server's queue-depth gauge starts from).
  [[nodiscard]] virtual tl::expected<std::size_t, Error> count_all() = 0;
  // Bytes of ciphertext stored, expired envelopes not yet deleted included: counted at open, then
  // kept up to date by every committed write (cheap; for the server's storage budget).
  [[nodiscard]] virtual std::uint64_t stored_bytes() = 0;
  // Deletes expired envelopes and old dedup keys; returns how many envelopes were deleted.
  [[nodiscard]] virtual tl::expected<std::size_t, Error> expire(std::uint64_t now_seconds) = 0;
  // Waits for every pending enqueue to be durable (graceful shutdown).
  virtual void flush() = 0;
};

class TokenStore {
 public:
  virtual ~TokenStore() = default;
  [[nodiscard]] virtual tl::expected<void, Error> create_invite(const std::string& code,
                                                                std::uint64_t expires_at) = 0;
  // Marks the invite used; invalid_token when unknown, used or expired.
  [[nodiscard]] virtual tl::expected<void, Error> use_invite(const std::string& code,
                                                             std::uint64_t now) = 0;
  [[nodiscard]] virtual tl::expected<void, Error> create_link_token(ByteView token,
                                                                    AccountId account,
                                                                    std::uint64_t expires_at) = 0;
  [[nodiscard]] virtual tl::expected<AccountId, Error> use_link_token(ByteView token,
                                                                      std::uint64_t now) = 0;
};

// Key transparency (docs/transparency.md, "Store"): one entry of the server's log with the label
// versions it added, as bytes the store keeps without interpreting them.
struct KtVersionRow {
  Bytes label_index;  // 32 bytes, the label's VRF index
  std::uint32_t version = 0;
  Bytes commitment;  // 32 bytes
  Bytes opening;     // 32 bytes
  Bytes value;       // the encoded account value
  friend bool operator==(const KtVersionRow&, const KtVersionRow&) = default;
};
struct KtEntryRow {
  std::uint64_t index = 0;
  std::uint64_t timestamp_ms = 0;
  Bytes prefix_root;                   // 32 bytes
  std::vector<KtVersionRow> versions;  // in the order the log applied them
  friend bool operator==(const KtEntryRow&, const KtEntryRow&) = default;
};

// An auditor's newest co-signature of the log (docs/transparency.md, "Auditing"), as the store
// keeps it: one row per auditor key.
struct KtCosignatureRow {
  Bytes auditor_key;  // 32 bytes, Ed25519
  Bytes tree_head;    // the SignedTreeHead (112 bytes) it co-signed
  std::uint64_t time_ms = 0;
  Bytes signature;  // 64 bytes
  friend bool operator==(const KtCosignatureRow&, const KtCosignatureRow&) = default;
};

// What the server's transparency log learns of every account change. The store calls it inside
// the change's own transaction, once the account's rows are written, with the account as the
// change leaves it. The log works out its entry and calls `commit` (at most once), which writes
// the entry's rows into that transaction and commits it: the change and its entry are durable
// together or not at all. An error returned without calling `commit` (or from it) rolls the change
// back, and the store's call fails with io.
//
// `read_from(first, visit)` reads, inside that same transaction, the entries stored from index
// `first` on: on a store several servers share (PostgreSQL), the ones the others appended since
// this log last looked. The store takes the log's write lock before it changes the account, so
// none can be added until this change commits.
class AccountLog {
 public:
  virtual ~AccountLog() = default;
  using Commit = std::function<tl::expected<void, Error>(const KtEntryRow&)>;
  using Visit = std::function<void(const KtEntryRow&)>;
  using ReadFrom = std::function<tl::expected<void, Error>(std::uint64_t first, const Visit&)>;
  [[nodiscard]] virtual tl::expected<void, Error> account_changed(const AccountRecord& after,
                                                                  const Commit& commit,
                                                                  const ReadFrom& read_from) = 0;
};

// Where a backend keeps the log's rows (tables kt_entries and kt_versions of the store's own
// database, SQLite or PostgreSQL).
class KtStore {
 public:
  virtual ~KtStore() = default;
  // Adds an entry in a transaction of its own (entry 0, and the accounts of a server that had
  // none logged yet). Entry indices must follow on from the stored ones.
  [[nodiscard]] virtual tl::expected<void, Error> append(const KtEntryRow& entry) = 0;
  // Adds several entries in one transaction (the first start's entries of existing accounts).
  [[nodiscard]] virtual tl::expected<void, Error> append_all(
      const std::vector<KtEntryRow>& entries) = 0;
  // Visits every stored entry in log order.
  [[nodiscard]] virtual tl::expected<void, Error> load(
      const std::function<void(const KtEntryRow&)>& visit) = 0;
  // Visits the stored entries from index `first` on, in log order.
  [[nodiscard]] virtual tl::expected<void, Error> load_from(
      std::uint64_t first, const std::function<void(const KtEntryRow&)>& visit) = 0;
  // Whether other servers may append to the same log (a cluster on one PostgreSQL database): a
  // server then reads what they added before it answers from its copy of the trees.
  [[nodiscard]] virtual bool shared() const { return false; }
  // From now on every account change (create_account, add_device, remove_device,
  // recover_account) goes through `log` (none: changes are not logged). `log` must outlive the
  // store or be unset first.
  virtual void set_account_log(AccountLog* log) = 0;
  // Every account, devices included (the first start with a log logs those there were).
  [[nodiscard]] virtual tl::expected<std::vector<AccountRecord>, Error> all_accounts() = 0;
  // Replaces the auditor's co-signature (one per auditor key), durably.
  [[nodiscard]] virtual tl::expected<void, Error> save_cosignature(const KtCosignatureRow& row) = 0;
  [[nodiscard]] virtual tl::expected<std::vector<KtCosignatureRow>, Error> cosignatures() = 0;
};

// Everything the server needs, from one backend.
class ServerStore {
 public:
  virtual ~ServerStore() = default;
  virtual AccountStore& accounts() = 0;
  virtual KeyStore& keys() = 0;
  virtual MessageStore& messages() = 0;
  virtual TokenStore& tokens() = 0;
  virtual BlockStore& blocks() = 0;
  // Table and column names of the live schema (for the what-the-server-knows check).
  [[nodiscard]] virtual std::vector<std::pair<std::string, std::string>> schema() = 0;
  // The key transparency log's rows; nullptr when the backend keeps none.
  virtual KtStore* kt() { return nullptr; }
};

}  // namespace sotto::store
