// The client engine (src/client) behind the public API (include/sotto/client.h): one account on
// one device, assembled from one component per flow around a shared Account (account.h):
//
//   ServerLink      connection, login, reconnection with backoff, pushes, the server's pin
//   KeyMaintenance  the device's prekeys on the server
//   Sessions        bundles, sessions, identity lookups and changes
//   Outbox          sending, resending (session repair)
//   Inbox           receiving exactly once, holding, asking for resends
//   History         history transfer to a new device
//   Listener        receive(), the listener thread, event delivery from the Journal
//   Devices         device list, removal, change events
//   Contacts        contacts, safety numbers, trust
//   Blocks          accounts blocked at the server, and dropping what they had queued
//
// and the account set-up flows (registration, recovery, linking, opening: setup.cpp), backups
// (backup.cpp) and server settings. Everything it needs from outside (the connector, the random
// generator, the clock) comes in an Environment, so tests run it in process against the real
// server's handlers (tests/util/in_process_server.h).
//
// Thread-safe; see account.h for the locks.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/account.h"
#include "client/blocks.h"
#include "client/contacts.h"
#include "client/conversations.h"
#include "client/devices.h"
#include "client/groups.h"
#include "client/history.h"
#include "client/inbox.h"
#include "client/journal.h"
#include "client/keys.h"
#include "client/listener.h"
#include "client/outbox.h"
#include "client/server_link.h"
#include "client/sessions.h"

namespace sotto::client {

inline constexpr std::chrono::seconds kAddDeviceWait{30};       // for the new device to appear
inline constexpr std::chrono::seconds kHistoryRequestWait{30};  // for it to ask for history
// How long trust() tries to tell the account's other devices.
inline constexpr std::chrono::seconds kTrustSyncTimeout{5};
// The public key the server keeps as the recovery code's verifier (ClientStore::save_value).
inline constexpr std::string_view kRecoveryVerifierValue = "recovery.verifier";

class Engine {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Engine>> register_account(
      const Options& options, const std::string& username, const sotto::Server& server,
      const std::string& invite_code, Environment env);
  [[nodiscard]] static Result<std::unique_ptr<Engine>> recover(const Options& options,
                                                               const std::string& username,
                                                               const std::string& code,
                                                               const sotto::Server& server,
                                                               Environment env);
  [[nodiscard]] static Result<std::unique_ptr<Engine>> open(const Options& options,
                                                            const std::string& username,
                                                            Environment env);
  [[nodiscard]] static Result<std::unique_ptr<Engine>> link(
      const Options& options, const sotto::Server& server,
      const std::function<void(const LinkPrompt&)>& show, std::chrono::seconds timeout,
      const LinkOptions& link_options, Environment env);
  [[nodiscard]] static Result<std::vector<Message>> read_history(const Options& options,
                                                                 const std::string& account,
                                                                 const std::string& user,
                                                                 std::size_t limit);

  // A group as the store holds it, read the same way (members and admins; not its picture).
  [[nodiscard]] static Result<Group> read_group(const Options& options, const std::string& account,
                                                const std::string& id);

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  [[nodiscard]] std::string username() const { return account_->username; }
  [[nodiscard]] std::uint32_t device_id() const { return account_->device_id; }
  [[nodiscard]] sotto::Server server() const { return account_->server(); }
  [[nodiscard]] std::string trust_policy();
  [[nodiscard]] std::string take_recovery_code();

  [[nodiscard]] Result<void> connect();
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body);
  [[nodiscard]] Result<std::size_t> receive(std::chrono::milliseconds timeout,
                                            const EventHandler& handler);
  [[nodiscard]] Result<void> start(EventHandler handler);
  void stop();
  [[nodiscard]] Result<std::vector<Event>> events(std::uint64_t after, std::size_t limit);
  [[nodiscard]] Result<void> acknowledge(std::uint64_t cursor);

  [[nodiscard]] Result<std::vector<Device>> devices();
  [[nodiscard]] Result<void> remove_device(std::uint32_t id);
  [[nodiscard]] Result<std::uint32_t> add_device(const std::string& code, const Progress& progress);
  [[nodiscard]] Result<std::vector<Contact>> contacts();
  [[nodiscard]] Result<void> block(const std::string& user);
  [[nodiscard]] Result<void> unblock(const std::string& user);
  [[nodiscard]] Result<std::vector<std::string>> blocked();
  [[nodiscard]] Result<SafetyNumber> safety_number(const std::string& user);
  [[nodiscard]] Result<SafetyNumber> trust(const std::string& user,
                                           const std::optional<std::string>& digits);
  [[nodiscard]] Result<std::vector<Message>> history(const std::string& user, std::size_t limit);

  [[nodiscard]] Result<void> trust_server_key(const std::string& fingerprint);
  [[nodiscard]] Result<void> set_server_address(const std::string& host, std::uint16_t port);

  [[nodiscard]] Result<std::size_t> backup_export(const std::filesystem::path& path,
                                                  const sotto::BackupSecret& secret,
                                                  const Progress& progress);
  [[nodiscard]] Result<std::size_t> backup_import(const std::filesystem::path& path,
                                                  const sotto::BackupSecret& secret,
                                                  const Progress& progress);

  [[nodiscard]] Groups& groups() { return groups_; }

  // The everyday message types (conversations.h); the Client's methods for them call it.
  [[nodiscard]] Conversations& conversations() { return conversations_; }

  // Attachments (engine_attachments.cpp; docs/attachments.md).
  [[nodiscard]] Result<Attachment> upload_attachment(const std::filesystem::path& file,
                                                     const std::string& caption,
                                                     const Progress& progress);
  [[nodiscard]] Result<SendResult> send(const std::string& to, const std::string& body,
                                        const std::vector<Attachment>& attachments);
  [[nodiscard]] Result<SavedAttachment> save_attachment(const Attachment& attachment,
                                                        const std::filesystem::path& dir,
                                                        const Progress& progress);
  [[nodiscard]] std::filesystem::path attachments_dir() const;

  // For tests: the account's shared state, and the sending component (to send what no API
  // call would, as a misbehaving client does).
  [[nodiscard]] Outbox& outbox() { return outbox_; }
  [[nodiscard]] Account& account() { return *account_; }

 private:
  explicit Engine(std::unique_ptr<Account> account);
  // Asks the device that linked this one for the history and waits until it has arrived.
  [[nodiscard]] Result<void> fetch_history(std::uint32_t from_device, const LinkOptions& options);

  std::unique_ptr<Account> account_;
  Journal journal_;
  ServerLink link_;
  Sessions sessions_;
  KeyMaintenance keys_;
  Outbox outbox_;
  History history_;
  Blocks blocks_;
  Conversations conversations_;
  Inbox inbox_;
  Devices devices_;
  Contacts contacts_;
  Listener listener_;
  Groups groups_;
  std::mutex recovery_mu_;
  std::string recovery_code_;  // shown once after registration or recovery
};

}  // namespace sotto::client
