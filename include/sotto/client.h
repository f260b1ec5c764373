// The public client API of Sotto: one account on one device, backed by an encrypted local store
// and one TLS WebSocket to the server. Apps (the `sotto` CLI, bots) use only this header; the
// engine behind it lives in src/client and is not part of the API.
//
// Ownership: a Client owns its store, its connection and, after start(), one listener thread.
// Exactly one Client (in one process) may hold an account at a time: opening takes an exclusive
// lock on the account and fails with account_busy after Options::lock_wait (read_history() reads
// without the lock, for a CLI beside a daemon).
//
// Events: everything the app must hear of (messages, failures, identity and device changes) is
// first recorded in the account's journal, in the same store transaction as the change itself,
// then handed to the event handler. By default an event leaves the journal once the handler
// returned; with Options::manual_ack it stays until acknowledge(), so an app that was not
// listening (a daemon whose bot was away) gets it later from events(). Either way an event is
// handed over at least once, and its cursor identifies it for good. The journal keeps the newest
// 100,000 events; an app that falls further behind sees a gap in the cursors.
//
// Thread-safety: every method may be called from any thread. Event handlers run on the listener
// thread (after start()) or on the caller's thread (receive()); a handler must not call receive()
// or stop() itself, and should return quickly.
//
// Errors: every fallible call returns Result<T>. Error::message is one line meant for a human;
// it never carries key material or message text.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <vector>

namespace sotto {

namespace client {
class Engine;
}  // namespace client

enum class ErrorCode {
  invalid_argument,        // a malformed username, code, option value or message
  no_account,              // no account with that name in the data directory
  ambiguous_account,       // several accounts and none was chosen
  account_exists,          // registering or linking an account the data directory already has
  account_busy,            // another sotto process is using the account
  wrong_passphrase,        // the passphrase (or key file) does not open the store
  store,                   // the local store failed (I/O, damage)
  network,                 // the server cannot be reached (after retries)
  fingerprint_mismatch,    // the server's certificate is not the pinned one
  server,                  // the server refused the request (message says why)
  unauthenticated,         // the server does not accept this device (removed from the account?)
  not_found,               // no such user or device
  untrusted_identity,      // a contact's identity key changed and is not trusted yet
  protocol,                // encryption-level failure (bad bundle, undecryptable provisioning)
  timeout,                 // the operation did not finish in time
  safety_number_mismatch,  // the digits given are not the safety number with the contact's key
  device_in_use,           // this device is connected from another copy of its data
  forbidden,               // the server refused: not allowed (e.g. a linked device removing the
                           // primary one, a recovery code that does not match)
  rate_limited,            // the server refused: too many attempts; try again later
  // Key transparency (docs/transparency.md) refused a contact's keys: nothing was encrypted to
  // them. security_alert_of() says which kind, for whom and why.
  security_alert,
};

std::string_view to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::server;
  std::string message;
};

template <typename T>
using Result = tl::expected<T, Error>;

// What an Error of code security_alert reports: kind "unlogged_key" (a key or device the
// server's transparency log does not prove), "log_inconsistent" (a log that is not the one this
// device saw before, or a contact's version rolled back) or "unknown_device"; the user it
// concerns and a sentence for the user. nullopt for any other error.
struct SecurityAlert {
  std::string kind;
  std::string user;
  std::string detail;
};
[[nodiscard]] std::optional<SecurityAlert> security_alert_of(const Error& e);

// The trust policy for contacts' identity keys (--trust-new-identities).
inline constexpr const char* kTrustOnFirstUse = "on-first-use";  // first key trusted, changes not
inline constexpr const char* kTrustAlways = "always";            // changes accepted and reported
inline constexpr const char* kTrustNever = "never";              // only keys verified with trust()

struct Options {
  std::filesystem::path data_dir;
  // Store passphrase; none means the store's random key file.
  std::optional<std::string> passphrase;
  // When set, replaces the account's stored trust policy.
  std::optional<std::string> trust_policy;
  std::chrono::milliseconds request_timeout{15000};
  // How long opening waits for another process to release the account.
  std::chrono::milliseconds lock_wait{10000};
  // How long send() keeps retrying (reconnecting, repairing device lists) before giving up.
  std::chrono::milliseconds send_timeout{30000};
  // Events stay in the journal until acknowledge() (see "Events" above).
  bool manual_ack = false;
  // Key transparency: how often a device that stays connected checks its own account in the log
  // again (it also checks on every connection and DevicesChanged push): the listener thread when
  // this much time passed without a check (at most every 100 ms), and receive() on a connection
  // kept open when a check is due. Tests make it short.
  std::chrono::milliseconds kt_check_interval{std::chrono::hours(24)};
};

struct Server {
  std::string host;
  std::uint16_t port = 0;
  // The pinned server key: SHA-256 of its DER SubjectPublicKeyInfo (64 hex digits), so that a
  // renewed certificate for the same key is still accepted. Empty: trust on first use, then
  // pinned.
  std::string fingerprint;
  // The key the operator announced as the next one (signed by the current key); accepted, and
  // pinned in place of the current one, when the server starts using it.
  std::string next_fingerprint;
};

// A message as every device of every participant names it: its author and the author's
// timestamp. Message::ref() writes it as "author:timestamp", which find_message() reads back.
struct MessageRef {
  std::string author;
  std::uint64_t timestamp = 0;
};

// `user` is named at bytes [start, start + length) of the body (UTF-8).
struct Mention {
  std::string user;
  std::uint32_t start = 0;
  std::uint32_t length = 0;
};

struct Reaction {
  std::string user;
  std::string emoji;
  std::uint64_t timestamp = 0;  // the reaction's, its author's clock
};

// What one recipient's devices said about a message we sent (ms since the epoch; 0: not yet).
// A recipient who turned read receipts off never reports read_at.
struct Receipt {
  std::string user;
  std::uint64_t delivered_at = 0;
  std::uint64_t read_at = 0;
};

// A file sent with a message (docs/attachments.md): what the message says of it, and the pointer
// that fetches it from the server (the serialized content.proto AttachmentPointer, which holds
// its key: keep it as private as the message).
struct Attachment {
  std::string file_name;
  std::string content_type;
  std::string caption;
  std::uint64_t size = 0;   // plaintext bytes
  std::uint32_t width = 0;  // images: pixels (0: unknown)
  std::uint32_t height = 0;
  // Images: a small picture of it (a JPEG or PNG of at most 8 KiB, checked to decode; empty:
  // none) and its type, image/jpeg or image/png.
  std::string thumbnail;
  std::string thumbnail_content_type;
  std::string pointer;
};

// An attachment saved to a file by save_attachment().
struct SavedAttachment {
  std::string path;
  std::string sha256;  // of the file's bytes, hex
  std::uint64_t size = 0;
  std::string content_type;
  std::string file_name;  // as the sender named it
};

// One message of a conversation, as shown to the user.
struct Message {
  // The id this device shows: the envelope id (hex), or a local id for what this device sent.
  // Other devices show other ids for the same message; ref() is the same everywhere.
  std::string id;
  std::string from;             // the author (our own username for sync copies)
  std::uint32_t device = 0;     // the author's device
  std::uint64_t timestamp = 0;  // the author's clock, milliseconds since the epoch
  std::uint64_t server_timestamp = 0;
  std::string body;
  std::string conversation;  // the other user of the conversation ("group:" + id in a group)
  bool outgoing = false;     // written by us (a sync copy from our other device, or history)
  std::string group;         // a message in a group: the group's id (64 hex digits)
  // A row this device wrote into the history, not a message someone sent: a group change ("[alice
  // added bob]"), a refused change, a message that could not be read. It cannot be replied to,
  // reacted to, edited or read.
  bool notice = false;

  // The everyday message types (docs/messages.md).
  std::optional<MessageRef> quote;  // a reply to this message
  std::string quote_text;           // the quoted excerpt: the original's current text (after
                                    // an edit), empty once it was deleted for everyone
  bool quote_deleted = false;       // the quoted message was deleted for everyone
  std::vector<Mention> mentions;
  bool mentions_me = false;         // incoming: one of `mentions` names this account
  std::vector<Reaction> reactions;  // one per user
  bool edited = false;              // `body` is the newest of its author's edits
  std::uint64_t edited_at = 0;
  bool deleted = false;            // deleted for everyone by its author: `body` is empty
  std::uint32_t expire_timer = 0;  // seconds; 0: it does not disappear
  std::uint64_t expires_at = 0;    // ms; 0: not (yet) counting down (incoming and unread)
  std::uint64_t read_at = 0;       // incoming: when this account read it; 0: unread
  std::vector<Receipt> receipts;   // outgoing: per recipient
  std::vector<Attachment> attachments;

  [[nodiscard]] std::string ref() const { return from + ":" + std::to_string(timestamp); }
};

// How long after sending a message its author may still edit it or delete it for everyone;
// recipients refuse a later edit or delete (as Signal does).
inline constexpr std::chrono::hours kEditWindow{24};
inline constexpr std::chrono::hours kDeleteWindow{24};

// What a sent message carries beyond its text.
struct SendOptions {
  std::optional<MessageRef> quote;  // reply to this message of the conversation
  std::vector<Mention> mentions;
  std::vector<Attachment> attachments;  // from upload_attachment(); the text may then be empty
};

struct Event {
  enum class Kind {
    message,           // `message` is set (also a held message, once its sender's key is accepted)
    decrypt_failed,    // a message could not be received: message.from/device/id say whose,
                       // `detail` says why (and whether the sender was asked to send it again)
    identity_changed,  // `user`'s identity key changed; `accepted` says whether it may be used
    devices_changed,   // a device of our account was added or removed (`added`, `removed`)
    server_key_changed,  // the server's key was re-pinned (`detail` says to what)
    connected,
    disconnected,  // `detail` says why; the listener reconnects with backoff
    fatal,         // the listener stopped: `error` says why (removed device, pin mismatch)
    // A group changed (docs/groups.md): message.group names it, message.from is the author,
    // `detail` says what changed ("alice added bob").
    group_changed,
    // A security notice: a group change (or a group message) was refused, and nothing changed.
    // message.group and message.from say which group and whose; `detail` says why.
    group_refused,
    // The everyday message types: each names the message(s) concerned in `targets`, and the
    // conversation in message.conversation; `user` is who did it.
    receipt,             // `user`'s devices received (or, with `read`, read) our `targets`
    typing,              // `user` started (`typing`) or stopped typing
    reaction,            // `user` reacted with `emoji` to targets[0] (empty emoji: removed it)
    edit,                // targets[0] now reads message.body (message: the edited message)
    remote_delete,       // targets[0] was deleted for everyone by its author
    disappearing_timer,  // `user` set the conversation's timer to `expire_timer` s (0: off)
    // Groups (docs/groups.md): the admin's device an invite link names refused our request to
    // join (message.group, message.from: which group, which admin; `detail` says why).
    group_join_refused,
    // A change of ours that a concurrent change undid could not be made again (`detail` says
    // what it was and why); message.group names the group.
    group_change_dropped,
    // Key transparency (docs/transparency.md): `alert` is the kind ("unknown_device": a device
    // or identity key in our account's log that this device did not add or know of;
    // "log_inconsistent"), `user` whom it concerns, `detail` what and since when.
    security_alert,
  };
  Kind kind = Kind::message;
  // Identifies a journalled event for good (0 for connection events, which are not journalled).
  std::uint64_t cursor = 0;
  Message message;
  std::string detail;
  std::string user;                    // identity_changed
  bool accepted = false;               // identity_changed
  std::uint64_t changed_at = 0;        // identity_changed, ms since the epoch
  std::size_t held = 0;                // identity_changed: messages held until the key is accepted
  std::vector<std::uint32_t> added;    // devices_changed
  std::vector<std::uint32_t> removed;  // devices_changed
  std::optional<Error> error;
  std::vector<MessageRef> targets;  // receipt, reaction, edit, remote_delete
  std::string emoji;                // reaction
  bool read = false;                // receipt
  bool typing = false;              // typing
  std::uint32_t expire_timer = 0;   // disappearing_timer, seconds
  std::string alert;                // security_alert: its kind
};
using EventHandler = std::function<void(const Event&)>;

struct SendResult {
  std::uint64_t timestamp = 0;  // the message's timestamp (our clock, ms)
  std::size_t devices = 0;      // device copies the server accepted
  // A group message: member devices the server left out because their queue on the server is
  // full (the device has been offline for long); everyone else got it. "user (device N)".
  std::vector<std::string> left_out;
};

struct Device {
  std::uint32_t id = 0;
  std::uint32_t registration_id = 0;
  std::uint64_t created_day = 0;  // days since the epoch
  bool current = false;           // this device
  bool primary = false;           // the device that created (or recovered) the account
  std::string name;               // empty when the device has none
};

struct Contact {
  std::string username;
  bool accepted = false;                  // the current key may be used
  bool verified = false;                  // safety numbers were compared for the current key
  std::uint64_t identity_changed_at = 0;  // ms since the epoch; 0 when it never changed
  std::string identity_key_hex;           // public identity key, for display
  std::size_t held = 0;                   // messages held until the key is accepted
};

struct SafetyNumber {
  std::string digits;                   // 60 digits
  std::vector<std::uint8_t> scannable;  // bytes for the QR code
  std::string identity_key_hex;         // the contact's key the number is computed with
  std::uint64_t changed_at = 0;         // when that key replaced an earlier one (ms); 0: never
  bool accepted = false;
  bool verified = false;
  std::size_t held = 0;  // messages held until the key is accepted
};

// A group as this device holds it (docs/groups.md). The server has no list of members: the
// state lives in the members' clients.
struct GroupMember {
  std::string user;
  bool admin = false;
};
// A group's picture (GroupState.avatar). Members' clients download it when a change sets it; a
// download that failed is tried again on the next `group()` call or group change.
struct GroupAvatar {
  bool downloaded = false;  // false: not fetched yet (or it failed); the fields below are empty
  std::string path;         // under attachments_dir()/group-avatars
  std::string sha256;       // of the image, hex
  std::uint64_t size = 0;
  std::string content_type;  // image/png or image/jpeg
};

struct Group {
  std::string id;  // 64 hex digits
  std::uint64_t revision = 0;
  std::string name;
  std::string description;
  std::vector<GroupMember> members;
  std::uint32_t expire_timer = 0;     // seconds; 0: off
  bool member = false;                // this account is a member (false after leaving, removal,
                                      // or while a join by link waits for the admin)
  bool admin = false;                 // this account is an admin
  bool invite_link = false;           // joining by link is on
  std::optional<GroupAvatar> avatar;  // set: the group has a picture
};

// Changes of a group, by an admin. Each set field is one change (one revision), applied in the
// order of the fields.
struct GroupUpdate {
  std::vector<std::string> add;
  std::vector<std::string> remove;
  std::vector<std::string> make_admin;
  std::vector<std::string> revoke_admin;
  std::optional<std::string> name;
  std::optional<std::string> description;
  std::optional<std::uint32_t> expire_timer;
  bool reset_link = false;    // a new invite secret: every earlier link fails
  bool disable_link = false;  // joining by link off
  // A new group picture: a PNG or JPEG of at most 5 MiB, uploaded encrypted as an attachment.
  std::optional<std::filesystem::path> avatar;
  bool remove_avatar = false;  // the group has no picture any more
};

// What a backup is encrypted with: a passphrase of the user's, or the account's recovery code.
struct BackupSecret {
  enum class Kind { passphrase, recovery_code };
  Kind kind = Kind::passphrase;
  std::string text;
};

// Progress of a long operation: done of total units (bytes or messages; total 0 when unknown).
using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

struct LinkOptions {
  std::string device_name;        // shown by `devices` on every device of the account
  bool transfer_history = false;  // ask the linking device for the conversation history
  std::chrono::seconds history_timeout{300};
  Progress history_progress;  // messages received of the total announced
};

// What a new device shows while it waits to be linked.
struct LinkPrompt {
  std::string code;     // 80 base32 characters in groups of 4, to be typed exactly
  std::string qr_text;  // the text to encode as a QR code
};

class Client {
 public:
  // Creates the account on the server and its local store. The username is normalised to lower
  // case. The account's recovery code is then available once from recovery_code().
  [[nodiscard]] static Result<std::unique_ptr<Client>> register_account(
      const Options& options, const std::string& username, const Server& server,
      const std::string& invite_code = {});
  // Takes `username` back on this machine with its recovery code: a new identity key and this
  // device as the primary one; the account's other devices are removed, and contacts see an
  // identity change. A new recovery code replaces the old one (recovery_code()).
  [[nodiscard]] static Result<std::unique_ptr<Client>> recover(const Options& options,
                                                               const std::string& username,
                                                               const std::string& code,
                                                               const Server& server);
  // Opens an existing account; an empty username picks the only account of the data directory.
  [[nodiscard]] static Result<std::unique_ptr<Client>> open(const Options& options,
                                                            const std::string& username = {});
  // Links this machine as a new device of an existing account: shows `prompt` through `show`,
  // waits (at most `timeout`) for an existing device to send the account (add_device), and
  // registers the device.
  [[nodiscard]] static Result<std::unique_ptr<Client>> link(
      const Options& options, const Server& server,
      const std::function<void(const LinkPrompt&)>& show, std::chrono::seconds timeout,
      const LinkOptions& link_options = {});
  // Accounts with a store in the data directory.
  [[nodiscard]] static std::vector<std::string> accounts(const std::filesystem::path& data_dir);
  // The newest `limit` messages with `user` (all when 0), read without taking the account's lock
  // (another process, such as a daemon, may be using the account).
  [[nodiscard]] static Result<std::vector<Message>> read_history(const Options& options,
                                                                 const std::string& account,
                                                                 const std::string& user,
                                                                 std::size_t limit);
  // A group (its members and admins, not its picture), read the same way beside another process.
  [[nodiscard]] static Result<Group> read_group(const Options& options, const std::string& account,
                                                const std::string& id);

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  [[nodiscard]] std::string username() const;
  [[nodiscard]] std::uint32_t device_id() const;
  [[nodiscard]] Server server() const;
  [[nodiscard]] std::string trust_policy() const;
  // The recovery code made by register_account() or recover(), once (then empty). It is never
  // stored: the user must write it down.
  [[nodiscard]] std::string recovery_code();

  // Connects and authenticates (other calls do it on demand).
  [[nodiscard]] Result<void> connect();

  // Encrypts `body` (UTF-8 text) for every device of `to` and our other devices and sends it;
  // returns once the server has stored it durably. Retries with the same message id, so a
  // message is stored once however often it is retried.
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body);
  // The same with a quote and mentions. The message carries the conversation's disappearing
  // timer.
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body,
                                        const SendOptions& options);

  // The everyday message types (docs/messages.md). Each is sent to `conversation`'s devices and
  // to our other devices, and applied to this device's history.
  //
  // Reacts to `target` with one emoji (replacing our earlier reaction), or removes ours.
  [[nodiscard]] Result<SendResult> react(const std::string& conversation, const MessageRef& target,
                                         const std::string& emoji, bool remove = false);
  // Replaces the text of our message sent at `target_timestamp` (within kEditWindow of sending).
  [[nodiscard]] Result<SendResult> edit(const std::string& conversation,
                                        std::uint64_t target_timestamp, const std::string& body);
  // Deletes our message sent at `target_timestamp` for everyone (within kDeleteWindow): its
  // text is removed from every device's store.
  [[nodiscard]] Result<SendResult> remote_delete(const std::string& conversation,
                                                 std::uint64_t target_timestamp);
  // Marks `user`'s messages at `timestamps` (all unread ones when empty) read: tells `user` (a
  // read receipt, unless read receipts are off) and our other devices, and starts their
  // disappearing timers. Returns how many messages were newly marked.
  [[nodiscard]] Result<std::size_t> mark_read(const std::string& user,
                                              const std::vector<std::uint64_t>& timestamps = {});
  // Tells `user` we started or stopped typing (not kept anywhere).
  [[nodiscard]] Result<void> send_typing(const std::string& user, bool started);
  // Sets the conversation's disappearing-message timer (0: off) for both sides.
  [[nodiscard]] Result<SendResult> set_disappearing_timer(const std::string& user,
                                                          std::uint32_t seconds);
  [[nodiscard]] Result<std::uint32_t> disappearing_timer(const std::string& user);
  // Read receipts (on by default): off sends none and shows none, like Signal.
  [[nodiscard]] Result<void> set_read_receipts(bool on);
  [[nodiscard]] Result<bool> read_receipts();
  // The message shown with `id` on this device (Message::id), named by "author:timestamp"
  // (Message::ref()), or by its timestamp alone when no other message has it. not_found when
  // there is none.
  [[nodiscard]] Result<Message> find_message(const std::string& id);

  // Attachments (docs/attachments.md). upload_attachment() encrypts `file` with a fresh key and
  // uploads the ciphertext (`progress`: bytes of ciphertext the server has, of the total); an
  // interrupted upload of the same unchanged file resumes where the server's copy ends. The
  // result goes into a message with send() (or any later message kind that carries
  // attachments). A message may carry text, attachments or both.
  [[nodiscard]] Result<Attachment> upload_attachment(const std::filesystem::path& file,
                                                     const std::string& caption = {},
                                                     const Progress& progress = nullptr);
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body,
                                        const std::vector<Attachment>& attachments);
  // Downloads a received attachment, checks it and decrypts it into `dir` (created when missing;
  // empty: attachments_dir()) under its file name, made unique when taken. Nothing appears in
  // `dir` unless every check passed.
  [[nodiscard]] Result<SavedAttachment> save_attachment(const Attachment& attachment,
                                                        const std::filesystem::path& dir = {},
                                                        const Progress& progress = nullptr);
  // Where received attachments go by default: DATA_DIR/attachments/USERNAME.
  [[nodiscard]] std::filesystem::path attachments_dir() const;

  // Fetches what the server holds for this device: each message is decrypted, stored, recorded
  // in the journal and acknowledged to the server; journalled events are handed to `handler`.
  // Returns the number of events once the server's queue is drained.
  [[nodiscard]] Result<std::size_t> receive(std::chrono::milliseconds timeout,
                                            const EventHandler& handler);

  // Runs a listener thread that receives live (reconnecting with backoff) until stop().
  [[nodiscard]] Result<void> start(EventHandler handler);
  void stop();

  // Journalled events after `cursor` (oldest first, at most `limit`; 0: all).
  [[nodiscard]] Result<std::vector<Event>> events(std::uint64_t after, std::size_t limit);
  // Drops journalled events up to and including `cursor` (Options::manual_ack).
  [[nodiscard]] Result<void> acknowledge(std::uint64_t cursor);

  [[nodiscard]] Result<std::vector<Device>> devices();
  [[nodiscard]] Result<void> remove_device(std::uint32_t id);
  // Sends the account to the new device that shows `code`; returns the new device's id once it
  // has registered (0 when it did not within a short wait). When the new device asks for the
  // history, it is sent before this returns (`progress`: messages sent of the total).
  [[nodiscard]] Result<std::uint32_t> add_device(const std::string& code,
                                                 const Progress& progress = nullptr);

  [[nodiscard]] Result<std::vector<Contact>> contacts();
  // Blocks `user` at the server, for every device of this account: the server stores nothing
  // that account sends us (it is not told), and what it had queued for this device is dropped
  // unread. invalid_argument for a malformed name or our own; not_found for no such user.
  // Blocking a blocked user, or unblocking one not blocked, is not an error.
  [[nodiscard]] Result<void> block(const std::string& user);
  [[nodiscard]] Result<void> unblock(const std::string& user);
  // The blocked usernames, sorted, as the server has them.
  [[nodiscard]] Result<std::vector<std::string>> blocked();
  // The safety number with `user`'s current identity key (asking the server for it when
  // reachable, so a change is seen before any message), and the key's state.
  [[nodiscard]] Result<SafetyNumber> safety_number(const std::string& user);
  // Accepts `user`'s current identity key (the one safety_number() showed). With `digits`, also
  // marks it verified, but only when they are that key's safety number (spaces ignored);
  // safety_number_mismatch otherwise, and nothing changes. Messages held back until the key was
  // accepted are then delivered as message events.
  [[nodiscard]] Result<SafetyNumber> trust(const std::string& user,
                                           const std::optional<std::string>& digits = {});
  // The newest `limit` messages with `user`, oldest first (all when limit is 0).
  [[nodiscard]] Result<std::vector<Message>> history(const std::string& user, std::size_t limit);

  // Groups (docs/groups.md). A group is held by its members' clients; changes are sent to every
  // member in 1:1 sessions and checked by each member's client.
  // Creates a group with us as its admin and `members` (usernames) in it; every member hears.
  [[nodiscard]] Result<Group> create_group(const std::string& name,
                                           const std::vector<std::string>& members);
  // Whether `file` can be a group picture (a PNG or JPEG of at most 5 MiB that decodes), checked
  // before anything is made or sent, so a group is not created without the picture it was given.
  [[nodiscard]] static Result<void> check_group_picture(const std::filesystem::path& file);
  // Changes a group (we must be an admin); forbidden when we are not.
  [[nodiscard]] Result<Group> update_group(const std::string& id, const GroupUpdate& update);
  // Leaves a group: its members are told, and they stop sending us its messages.
  [[nodiscard]] Result<Group> leave_group(const std::string& id);
  // The group's invite link (an admin only): made when the group has none, or with `reset` a new
  // one (every earlier link then fails).
  [[nodiscard]] Result<std::string> group_invite_link(const std::string& id, bool reset = false);
  // Asks the admin a link names to let us in; we are a member once the admin's client checked
  // the link (a group_changed event). Returns the group as far as the link tells.
  [[nodiscard]] Result<Group> join_group(const std::string& link);
  [[nodiscard]] Result<std::vector<Group>> groups();
  [[nodiscard]] Result<Group> group(const std::string& id);
  // Sends `body` to every device of every member (and our other devices), encrypted once with
  // our Sender Key for the group.
  [[nodiscard]] Result<SendResult> send_group(const std::string& id, const std::string& body,
                                              const std::vector<Attachment>& attachments = {});
  // The same with a quote, mentions (of members) and files; the message carries the group's
  // disappearing timer. The everyday calls above (react, edit, remote_delete, mark_read,
  // send_typing, history) take a group as the conversation "group:" + id.
  [[nodiscard]] Result<SendResult> send_group(const std::string& id, const std::string& body,
                                              const SendOptions& options);
  // The newest `limit` messages of a group (changes included as messages), oldest first.
  [[nodiscard]] Result<std::vector<Message>> group_history(const std::string& id,
                                                           std::size_t limit);

  // The server: pin a key the user checked with the operator (hex SHA-256 of its public key),
  // or move the account to another address (same server, same pin unless `fingerprint`).
  [[nodiscard]] Result<void> trust_server_key(const std::string& fingerprint);
  [[nodiscard]] Result<void> set_server_address(const std::string& host, std::uint16_t port);

  // Key transparency (docs/transparency.md, "Auditing"): from now on refuse (security_alert
  // unlogged_key) every lookup and monitoring answer that does not carry a co-signature by the
  // auditor `key_hex` (64 hex digits, as `sotto-audit key` prints it) of a head the answer's
  // extends, made at most `max_age` ago. An empty key removes the requirement.
  struct RequiredAuditor {
    std::string key_hex;
    std::chrono::milliseconds max_age{0};
  };
  [[nodiscard]] Result<void> require_auditor(const std::string& key_hex,
                                             std::chrono::milliseconds max_age);
  [[nodiscard]] Result<std::optional<RequiredAuditor>> required_auditor();
  // What this device pinned of the server's key transparency log: its public keys as
  // `sotto-server kt-keys` prints them (SIGNING:VRF, hex), and the newest tree head it verified
  // (size 0: none yet). nullopt: no log pinned yet (no lookup made, or a server without a log).
  struct LogPin {
    std::string keys;
    std::uint64_t tree_size = 0;
    std::uint64_t tree_time_ms = 0;
  };
  [[nodiscard]] Result<std::optional<LogPin>> pinned_log();

  // Writes contacts, their trust and verification state, the history and the settings to
  // `path`, encrypted with `secret` (Argon2id and libsodium's secretstream; docs/backup.md).
  // Returns the number of messages written.
  [[nodiscard]] Result<std::size_t> backup_export(const std::filesystem::path& path,
                                                  const BackupSecret& secret,
                                                  const Progress& progress = nullptr);
  // Reads such a file into this account: the whole file is checked before anything is written,
  // then merged (messages already present are kept once; a contact's newer key is kept).
  // Returns the number of messages added.
  [[nodiscard]] Result<std::size_t> backup_import(const std::filesystem::path& path,
                                                  const BackupSecret& secret,
                                                  const Progress& progress = nullptr);

 private:
  explicit Client(std::unique_ptr<client::Engine> engine);
  std::unique_ptr<client::Engine> engine_;
};

// Lower-cases and checks a username as the server does: 3-32 characters of a-z, 0-9, '.', '_',
// '-', starting with a letter or digit.
[[nodiscard]] std::optional<std::string> normalize_username(std::string_view name);

}  // namespace sotto
