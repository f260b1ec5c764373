// Groups (docs/groups.md): state held by the members' clients, changes authored by admins and
// sent in 1:1 sessions, group messages encrypted once with the sender's Sender Key.
//
// What this device keeps, sealed in the store's `state` table:
//   "groups"             the ids of the groups it knows (32 bytes each);
//   "group/<id>"         the group's state (content.proto GroupState) at its newest revision;
//   "group-sk/<id>"      the member devices that have our current Sender Key chain for it;
//   "group-join/<id>"    the admin a join by link was asked of.
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

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

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
struct SharedOutcome {
  bool stored = false;
  std::vector<DeviceMismatch> mismatches;
  std::vector<std::string> unknown_users;
};

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
  };
  [[nodiscard]] EnvelopeResult on_sender_key_message(const svc::Envelope& envelope,
                                                     const std::string& id, const Message& base,
                                                     ByteView content_hash);

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

  Account& account_;
  ServerLink& link_;
  Sessions& sessions_;
  Outbox& outbox_;
  Journal& journal_;
  Conversations* conversations_ = nullptr;
  std::mutex mu_;
  // Registration ids of member devices as our sessions have them ("user device"), so that a
  // group message does not unseal every session record; a wrong one is reported by the server
  // (stale) and read again. Guarded by mu_.
  std::map<std::string, std::uint32_t> registrations_;
};

}  // namespace sotto::client
