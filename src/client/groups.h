// Groups (docs/groups.md): state held by the members' clients, changes authored by admins and
// sent in 1:1 sessions, group messages encrypted once with the sender's Sender Key.
//
// What this device keeps, sealed in the store's `state` table:
//   "groups"             the ids of the groups it knows (32 bytes each);
//   "group/<id>"         the group's state (content.proto GroupState) at its newest revision;
//   "group-sk/<id>"      the member devices that have our current Sender Key chain for it;
//   "group-join/<id>"    the admin a join by link was asked of;
//   "group-avatar/<id>"  the group picture this device saved (group_avatar.cpp).
// The Sender Keys themselves are in the store's sender_keys table under the group id (hex).
//
// Receiving (called by the Inbox inside its store transaction, crypto_mu held): Sender Key
// distributions are stored; a group change is checked (group_codec.h) and applied, or refused
// with a group_refused event; a group message (envelope type 4) is decrypted with the sender's
// chain, checked to be a member's, and shown. When a member leaves or is removed, this device
// drops its own chain for the group, so its next message starts a new one that only the
// remaining members receive.
//
// Sending: a group message is encrypted once and handed with every member device to
// send_shared() (the one place that talks to the server about it: one MultiSendRequest); devices
// that do not have our chain get it first in a 1:1 message. Thread-safe: authoring and sending are
// serialised by the component's mutex (taken before crypto_mu); group state is read and written
// under crypto_mu.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backup.pb.h"
#include "client/account.h"
#include "client/conversations.h"
#include "client/journal.h"
#include "client/multi_send.h"
#include "client/outbox.h"
#include "client/server_link.h"
#include "client/sessions.h"
#include "content.pb.h"

namespace sotto::client {

// One member of a group message's fan-out: the devices it goes to, with the registration id each
// has in our session with it.
struct SharedRecipient {
  std::string user;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> devices;  // device id, registration id
};

// What the server said of a shared send: stored for every listed device, or nothing stored and
// why (device lists to repair, accounts that are gone).
// A group id as a user gives it (64 hex digits, or the first 8 or more of one of the groups
// `store` knows) as 64 lowercase hex digits. Not a membership check. REQUIRES: the store's lock
// (crypto_mu) for an engine's store.
[[nodiscard]] Result<std::string> resolve_group_id(store::ClientStore& store,
                                                   const std::string& id);

// A group's state as `store` holds it (nullopt: no such group), checked. REQUIRES: the store's
// lock (crypto_mu) for an engine's store.
[[nodiscard]] Result<std::optional<wire::content::GroupState>> load_group_state(
    store::ClientStore& store, const std::string& hex);
// The group as the user `self` sees it (members, admins; not its picture).
[[nodiscard]] Group group_of(const wire::content::GroupState& s, const std::string& self);

struct SharedOutcome {
  bool stored = false;
  std::vector<QueueFullDevices> left_out;  // with stored: devices whose queue is full
  std::vector<DeviceMismatch> mismatches;
  std::vector<std::string> unknown_users;
};

// Whether `file` can be a group picture: a regular file of at most kMaxGroupAvatarBytes that
// decodes as a PNG or JPEG (its content type), or why not. Nothing is uploaded.
[[nodiscard]] Result<std::string> check_group_picture(const std::filesystem::path& file);

class Groups {
 public:
  Groups(Account& account, ServerLink& link, Sessions& sessions, Outbox& outbox, Journal& journal)
      : account_(account), link_(link), sessions_(sessions), outbox_(outbox), journal_(journal) {}

  [[nodiscard]] Result<Group> create(const std::string& name,
                                     const std::vector<std::string>& members);
  [[nodiscard]] Result<Group> update(const std::string& id, const GroupUpdate& update);
  [[nodiscard]] Result<Group> leave(const std::string& id);
  [[nodiscard]] Result<std::string> invite_link(const std::string& id, bool reset);
  [[nodiscard]] Result<Group> join(const std::string& link);
  [[nodiscard]] Result<std::vector<Group>> list();
  [[nodiscard]] Result<Group> info(const std::string& id);
  // `attachments`: serialized content.proto AttachmentPointers (upload_attachment); with any,
  // the text may be empty.
  [[nodiscard]] Result<SendResult> send(const std::string& id, const std::string& body,
                                        const std::vector<std::string>& attachments = {});
  [[nodiscard]] Result<std::vector<Message>> history(const std::string& id, std::size_t limit);

  // The inbox's hooks. What a decrypted 1:1 content means for groups: `handled` false when it is
  // not a group content (the inbox reads it as usual). Runs inside the inbox's store
  // transaction with crypto_mu held; false `ok` means the store failed (roll back). `followup`
  // is set when something must be sent once the envelope is processed (an admin accepting a
  // join by link).
  struct ContentResult {
    bool handled = false;
    bool ok = true;
    std::function<void()> followup;
  };
  // `accepted`: the sender's identity key is one the user accepted (else a change is refused).
  [[nodiscard]] ContentResult on_content(ByteView plaintext, const std::string& source,
                                         std::uint32_t device, const Message& base, bool accepted);
  // A Sender Key message (envelope type 4), in its own store transaction: shown, or `failure`
  // says why not (nothing changed). `store_error`: leave the envelope with the server.
  struct EnvelopeResult {
    bool store_error = false;
    std::optional<std::string> failure;
    // Delivery receipts to send (1:1, to the authors) once the envelope is processed.
    std::vector<std::pair<std::string, std::uint64_t>> receipts;
    // Set when the sender must be asked for its Sender Key (group_recovery.cpp): run once the
    // envelope is processed, with no lock held.
    std::function<void()> followup;
    Bytes kt_tree_head;  // the sender's gossiped tree head (Inbox checks it)
  };
  [[nodiscard]] EnvelopeResult on_sender_key_message(const svc::Envelope& envelope,
                                                     const std::string& id, const Message& base,
                                                     ByteView content_hash);

  // Backups and history transfer (group_converge.cpp). REQUIRES: crypto_mu held.
  // Every group this device knows, as its log (its state and recent revisions, no Sender Key).
  [[nodiscard]] Result<std::vector<wire::backup::GroupLog>> export_logs();
  // Takes a group from a backup or from the device that linked us: kept when this device does
  // not know the group, or holds an older revision of it. False: the log is not valid (nothing
  // changed). Run inside the caller's store transaction.
  [[nodiscard]] Result<bool> import_log(const wire::backup::GroupLog& log);
  // A history chunk from the device that linked us, once its rows are stored: each row's state
  // (`states[i]` for `rows[i]`, empty: none; one that does not parse is ignored) and the
  // groups. False: the store failed. REQUIRES: crypto_mu held, inside the inbox's transaction.
  [[nodiscard]] bool import_history_extras(const std::vector<store::StoredMessage>& rows,
                                           const std::vector<std::string>& states,
                                           const std::vector<wire::backup::GroupLog>& groups);

  // The seam between a group message and the server: one shared Sender Key ciphertext for every
  // listed device, in one MultiSendRequest (multi_send.h) that the server stores once. Every
  // recipient's list is checked whole (our own account's too, when listed); any mismatch stores
  // nothing. `message_id` is the same for every retry of one message.
  // --- the everyday message types in groups (group_messages.cpp; docs/groups.md) ---
  // Who a group content goes to: every member device and our other devices, or (typing) the
  // other members' devices only.
  enum class Fanout { everyone, others_only };
  // Encrypts `content` once with our Sender Key for the group `hex` (its DataMessage's or
  // EditMessage's GroupContext, or its TypingMessage's group_id, are set here) and sends it in
  // one MultiSendRequest, as a group text is sent.
  [[nodiscard]] Result<SendResult> send_content(const std::string& hex,
                                                wire::content::Content& content,
                                                std::uint64_t timestamp, Fanout fanout);
  // The group `id` names (64 hex digits), as this device holds it; not_found when unknown.
  [[nodiscard]] Result<wire::content::GroupState> state(const std::string& id);
  // Whether `user` is a member of the group `hex` as this device holds it.
  // REQUIRES: crypto_mu held.
  [[nodiscard]] bool has_member_locked(const std::string& hex, const std::string& user);
  // The texts, reactions, edits, deletes and typing of group messages go through
  // `conversations` (set once, before the first envelope).
  void set_conversations(Conversations* conversations) { conversations_ = conversations; }

  [[nodiscard]] Result<SharedOutcome> send_shared(const ConnectionPtr& c,
                                                  const std::vector<SharedRecipient>& recipients,
                                                  const std::string& ciphertext,
                                                  std::uint64_t timestamp,
                                                  const std::array<std::uint8_t, 16>& message_id);

 private:
  using State = wire::content::GroupState;
  using Change = wire::content::GroupChange;

  // REQUIRES: crypto_mu held.
  [[nodiscard]] Result<std::optional<State>> load(const std::string& hex);
  [[nodiscard]] Result<void> save(const State& s);
  [[nodiscard]] Result<std::vector<std::string>> shared_with(const std::string& hex);
  [[nodiscard]] Result<void> save_shared_with(const std::string& hex,
                                              const std::vector<std::string>& devices);
  // Drops our own chain for the group: the next message starts a new one.
  [[nodiscard]] Result<void> rotate(const std::string& hex);
  [[nodiscard]] Group to_group(const State& s);
  // Records a history row and an event for the group.
  [[nodiscard]] bool note(const std::string& hex, const Message& base, Event::Kind kind,
                          const std::string& detail, std::uint64_t timestamp);

  // Applies `change` as our own (we are its author) and sends it to the members before and
  // after it. REQUIRES: mu_ held.
  [[nodiscard]] Result<State> author(const std::string& hex, Change change);
  [[nodiscard]] Result<std::string> resolve(const std::string& id);
  // A decrypted group content from `source`'s `device` in the group `hex` (group_messages.cpp):
  // shown or applied through the Conversations, in the caller's store transaction. False: the
  // store failed. REQUIRES: crypto_mu held.
  [[nodiscard]] bool receive_content(ByteView plaintext, const std::string& hex,
                                     const std::string& source, std::uint32_t device,
                                     const std::string& id, const Message& base,
                                     std::vector<std::pair<std::string, std::uint64_t>>& receipts);

  // Concurrent changes (group_converge.cpp, group_log.h). REQUIRES: crypto_mu held.
  // The group's log ("group-log/<id>"); one made from the state when there is none, empty when
  // the group is not known.
  [[nodiscard]] Result<wire::backup::GroupLog> load_log(const std::string& hex,
                                                        const std::optional<State>& state);
  // Saves the log and its head as the group's state.
  [[nodiscard]] Result<void> save_log(const std::string& hex, const wire::backup::GroupLog& log);
  // A change received from `source`'s `device` (not a join request): applied, held back, lost
  // to a concurrent one, or refused; changes held back that it unblocks are applied with it.
  [[nodiscard]] ContentResult take_change(const std::string& hex,
                                          const wire::content::DataMessage& d,
                                          const std::string& source, std::uint32_t device,
                                          const Message& base);
  // Our own change that a concurrent change undid and that cannot be made again: reported.
  // REQUIRES: mu_ held, crypto_mu not held.
  void report_dropped(const std::string& hex, const Change& change, const std::string& why);
  // Sender Key recovery (group_recovery.cpp). A group message under a key this device was not
  // given: the followup that asks the sending device for it (empty: asked already, or too often).
  [[nodiscard]] std::function<void()> ask_for_sender_key(const std::string& user,
                                                         std::uint32_t device, std::uint32_t key_id,
                                                         std::uint64_t timestamp);
  // A member's device asked us for our Sender Key: the followup that answers (once per request,
  // rate-limited), or nothing.
  [[nodiscard]] ContentResult on_sender_key_request(const wire::content::SenderKeyRequest& request,
                                                    const std::string& user, std::uint32_t device);
  // REQUIRES: no lock held.
  void answer_sender_key_request(const std::string& user, std::uint32_t device,
                                 std::uint32_t key_id, std::uint64_t timestamp);

  // Group pictures (group_avatar.cpp). A checked PNG or JPEG of at most kMaxGroupAvatarBytes,
  // uploaded, for the group `hex` of which we are an admin. REQUIRES: crypto_mu not held.
  [[nodiscard]] Result<wire::content::AttachmentPointer> upload_avatar(
      const std::string& hex, const std::filesystem::path& file);
  // Downloads and checks the group's picture when this device has not saved the current one
  // (forgets a removed one). A failure changes nothing (tried again on the next call).
  // REQUIRES: no lock held.
  [[nodiscard]] Result<void> fetch_avatar(const std::string& hex);
  // `g.avatar` from `s` and what this device saved. REQUIRES: crypto_mu held.
  void fill_avatar(Group& g, const State& s);
  [[nodiscard]] std::filesystem::path avatars_dir() const;

  // Every one of `users` has an account (asks the server for their identity keys), so that
  // nothing is authored for a name that is not one. REQUIRES: crypto_mu not held.
  [[nodiscard]] Result<void> check_accounts(const std::vector<std::string>& users);
  // Joining by link (group_converge.cpp): an admin's device tells a joiner whose secret is not
  // the group's (1:1, nothing but the group id); the joiner reports it when it asked that admin.
  void answer_join_refused(const std::string& group_id, const std::string& user,
                           std::uint32_t device);
  [[nodiscard]] ContentResult on_join_refused(const std::string& hex, const std::string& source,
                                              const Message& base, std::uint64_t timestamp);

  Account& account_;
  ServerLink& link_;
  Sessions& sessions_;
  Outbox& outbox_;
  Journal& journal_;
  Conversations* conversations_ = nullptr;
  std::mutex mu_;
  std::mutex avatar_mu_;  // one picture download at a time (taken before crypto_mu)
  // Registration ids of member devices as our sessions have them ("user device"), so that a
  // group message does not unseal every session record; a wrong one is reported by the server
  // (stale) and read again. Guarded by mu_.
  std::map<std::string, std::uint32_t> registrations_;
  // Sender Key requests we made and answered ("user device key timestamp"), and when we did
  // (ms), to ask and answer each once and each device at most a few times a minute.
  std::mutex recovery_mu_;
  std::map<std::string, std::uint64_t> asked_;
  std::map<std::string, std::uint64_t> answered_;
};

}  // namespace sotto::client
