// The everyday message types of a conversation (docs/messages.md): replies (quotes), mentions,
// reactions, edits, deletes for everyone, delivery and read receipts, typing indicators and
// disappearing messages; sending them, applying what arrives, and each message's state beyond
// its body (message_state.h) in the store.
//
// A message is named everywhere by (author, timestamp) (MessageRef). What we send goes to the
// conversation's devices and, as SyncMessage.Sent, to our other devices, which apply it as this
// device does; what we read goes to our other devices as SyncMessage.Read.
//
// Edits replace the body (the latest text is shown, with an "edited" mark; earlier versions are
// not kept, so an edit leaves one copy of the text to delete or expire). A delete for everyone
// removes the body and keeps a "deleted" mark. Recipients refuse an edit or delete of another
// author's message, and one later than kEditWindow / kDeleteWindow after the message.
//
// Disappearing messages: a message carries the conversation's timer; it disappears that long
// after it was sent (for its author's devices) or read (for the recipient's). Then everything
// that holds its text goes: its history rows and state, the sent-content log of it and of its
// edits, and the journal's events that carry it. Expiry runs when the account is opened and, on
// a thread of its own, while it is open (start()).
//
// Thread-safe. The receiving half runs inside the inbox's store transaction (crypto_mu held).
#pragma once

#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

#include "client/account.h"
#include "client/content_codec.h"
#include "client/journal.h"
#include "client/message_state.h"
#include "client/outbox.h"

namespace sotto::client {

class Groups;

// How long set_read_receipts() tries to tell the account's other devices.
inline constexpr std::chrono::seconds kSettingsSyncTimeout{5};
// The excerpt of a quoted message a reply carries.
inline constexpr std::size_t kQuoteExcerptBytes = 200;
// How much later than the message an edit or delete may arrive at the server (its author's clock
// aside): the window plus this much.
inline constexpr std::uint64_t kLateArrivalSlackMs = 3600 * 1000;
// Settings kept in the store (ClientStore::save_value).
inline constexpr std::string_view kReadReceiptsValue = "settings.read_receipts";
inline constexpr std::string_view kTimerValuePrefix = "conversation.timer.";

class Conversations {
 public:
  Conversations(Account& account, Outbox& outbox, Journal& journal)
      : account_(account), outbox_(outbox), journal_(journal) {}
  ~Conversations() { stop(); }
  // A conversation "group:" + id is a group's (groups.h): what is sent in it goes through the
  // group's Sender Key. Set once, before anything is sent or received.
  void set_groups(Groups* groups) { groups_ = groups; }
  // Sets Message::mentions_me on the incoming messages that mention `self`.
  static void mark_mentions(std::vector<Message>& messages, const std::string& self);

  // --- sending (each applied to this device's store once the server has it) ---
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body,
                                        const SendOptions& options);
  [[nodiscard]] Result<SendResult> react(const std::string& conversation, const MessageRef& target,
                                         const std::string& emoji, bool remove);
  [[nodiscard]] Result<SendResult> edit(const std::string& conversation, std::uint64_t target,
                                        const std::string& body);
  [[nodiscard]] Result<SendResult> remote_delete(const std::string& conversation,
                                                 std::uint64_t target);
  [[nodiscard]] Result<std::size_t> mark_read(const std::string& user,
                                              const std::vector<std::uint64_t>& timestamps);
  [[nodiscard]] Result<void> send_typing(const std::string& user, bool started);
  [[nodiscard]] Result<SendResult> set_timer(const std::string& user, std::uint32_t seconds);
  [[nodiscard]] Result<std::uint32_t> timer(const std::string& user);
  [[nodiscard]] Result<void> set_read_receipts(bool on);
  [[nodiscard]] Result<bool> read_receipts();

  // --- reading ---
  [[nodiscard]] Result<std::vector<Message>> history(const std::string& user, std::size_t limit);
  [[nodiscard]] Result<Message> find(const std::string& id);
  // The history rows as Messages with their state; messages whose time ran out by `now_ms` are
  // left out (a reader without write access, read_history(), cannot remove them).
  [[nodiscard]] static Result<std::vector<Message>> decorate(
      store::ClientStore& store, const std::string& peer,
      const std::vector<store::StoredMessage>& rows, std::uint64_t now_ms);

  // --- receiving, inside the inbox's store transaction (REQUIRES: crypto_mu held) ---
  // Delivery receipts to send once the envelope is processed: (user, timestamp).
  using Receipts = std::vector<std::pair<std::string, std::uint64_t>>;
  // A message (or a copy of what our other device sent) in `base.conversation` by `base.from`:
  // shown through `show` when it is a text, applied when it reacts, edits, deletes or sets the
  // timer. False: the store failed.
  [[nodiscard]] bool receive(const ReceivedContent& c, Message base,
                             const std::function<bool(Message)>& show, Receipts& receipts);
  [[nodiscard]] bool receive_receipt(const std::string& from, const ReceivedContent& c);
  [[nodiscard]] bool receive_typing(const std::string& from, const ReceivedContent& c);
  [[nodiscard]] bool receive_read_sync(const ReceivedContent& c);
  [[nodiscard]] bool receive_settings(const ReceivedContent& c);
  // After the envelope was processed: best effort, briefly.
  void send_delivery_receipts(const Receipts& receipts);

  // --- disappearing messages ---
  // Removes every message whose time ran out; returns how many.
  [[nodiscard]] Result<std::size_t> expire_due();
  // expire_due() when crypto_mu is free now; otherwise nothing (for readers that must not wait).
  void expire_due_if_free();
  // Runs expire_due() on a thread until stop(): when a message's time comes (and at least once a
  // second while one is counting down).
  void start();
  void stop();
  void wake();

 private:
  // expire_due() with crypto_mu held.
  [[nodiscard]] Result<std::size_t> expire_due_locked();
  struct Applied;
  // Applies a reaction, edit, delete or timer change by `author` in `conversation`.
  // REQUIRES: crypto_mu held, inside a store transaction.
  [[nodiscard]] bool apply_action(const ReceivedContent& c, const Message& base, bool journal_it);
  [[nodiscard]] bool load(const std::string& peer, const std::string& author, std::uint64_t ts,
                          MessageState& out);
  [[nodiscard]] bool save(const std::string& peer, const std::string& author, std::uint64_t ts,
                          const MessageState& s);
  // Removes the message and everything that holds its text (see the header comment).
  [[nodiscard]] bool purge(const std::string& peer, const std::string& author, std::uint64_t ts,
                           bool keep_row);
  [[nodiscard]] bool purge_events(
      const std::set<std::tuple<std::string, std::string, std::uint64_t>>& gone);
  [[nodiscard]] Result<SendResult> send_action(const std::string& conversation,
                                               wire::content::Content& to_peer,
                                               wire::content::Content& to_own,
                                               std::uint64_t timestamp);
  // Sends `data` (a DataMessage) to `peer` and its SyncMessage.Sent copy to our other devices.
  [[nodiscard]] Result<SendResult> send_data(const std::string& peer, wire::content::Content& data,
                                             std::uint64_t timestamp);
  // Applies our own action `c` (a reaction, edit, delete or timer we sent at `timestamp`) to this
  // device's store, as our other devices apply its copy.
  void apply_own(const std::string& peer, std::uint64_t timestamp, ReceivedContent& c);
  [[nodiscard]] Result<std::string> conversation_of(const std::string& user);
  // The disappearing timer a new message in `peer` carries (a group's is its state's).
  // REQUIRES: crypto_mu not held.
  [[nodiscard]] Result<std::uint32_t> timer_for(const std::string& peer);
  // Keeps the quotes of the message (author, ts) in `peer` in step with it: after an edit they
  // show its new text (`body`), after a delete (`deleted`) no text. REQUIRES: crypto_mu held.
  [[nodiscard]] bool update_quotes(const std::string& peer, const std::string& author,
                                   std::uint64_t ts, const std::string& body, bool deleted);
  // A received quote of (author, ts) in `peer` as the original is now. REQUIRES: crypto_mu held.
  [[nodiscard]] bool current_quote(const std::string& peer, Message& m);
  [[nodiscard]] Result<std::size_t> mark_read_in_group(
      const std::string& peer, const std::vector<std::uint64_t>& timestamps);
  [[nodiscard]] std::uint32_t timer_locked(const std::string& peer);
  [[nodiscard]] bool read_receipts_locked();

  Account& account_;
  Outbox& outbox_;
  Journal& journal_;
  Groups* groups_ = nullptr;

  std::mutex expiry_mu_;
  std::condition_variable expiry_cv_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread expiry_thread_;
};

}  // namespace sotto::client
