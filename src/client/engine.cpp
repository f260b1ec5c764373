#include "client/engine.h"

#include <algorithm>
#include <set>
#include <thread>

#include "client/attachment_history.h"
#include "client/errors.h"
#include "client/group_codec.h"
#include "client/provisioning.h"
#include "content.pb.h"

namespace sotto::client {

namespace {

namespace content = sotto::wire::content;
using SteadyClock = std::chrono::steady_clock;

Result<std::string> normalize_fingerprint(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == ':' || c == ' ') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (out.size() != 64 || !from_hex(out)) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "a server fingerprint is 64 hex digits (SHA-256)"));
  }
  return out;
}

// The account a read-only reader opens: the one named, else the data directory's only one.
Result<std::string> account_to_read(const Options& options, const std::string& account) {
  if (!account.empty()) return account;
  const auto names = store::ClientStore::accounts(options.data_dir);
  if (names.size() != 1) {
    return tl::unexpected(make_error(
        names.empty() ? ErrorCode::no_account : ErrorCode::ambiguous_account,
        names.empty() ? "no account in the data directory" : "several accounts; choose one"));
  }
  return names.front();
}

}  // namespace

Engine::Engine(std::unique_ptr<Account> account)
    : account_(std::move(account)),
      journal_(*account_->store),
      link_(*account_,
            [this](const std::string& detail) {
              Event e;
              e.kind = Event::Kind::server_key_changed;
              e.detail = detail;
              (void)journal_.record(e);
            }),
      sessions_(*account_, link_, journal_),
      keys_(*account_, link_),
      outbox_(*account_, link_, sessions_, keys_),
      history_(*account_, outbox_),
      blocks_(*account_, link_),
      conversations_(*account_, outbox_, journal_),
      inbox_(*account_, link_, sessions_, outbox_, journal_, history_, blocks_, conversations_),
      devices_(*account_, link_, sessions_, journal_),
      contacts_(*account_, link_, sessions_, journal_),
      listener_(*account_, link_, inbox_, keys_, devices_, blocks_, journal_),
      groups_(*account_, link_, sessions_, outbox_, journal_) {
  inbox_.set_groups(&groups_);
  groups_.set_conversations(&conversations_);
  conversations_.set_groups(&groups_);
  history_.set_group_source([this] { return groups_.export_logs(); });
  // The next key the operator announced, if any (server_link.h).
  if (auto next = account_->store->load_value(kNextPinValue); next && next->has_value()) {
    Server s = account_->server();
    s.next_fingerprint = bytes_string((*next)->view());
    account_->set_server(std::move(s));
  }
  // Disappearing messages whose time ran out while the account was closed go now; the rest when
  // their time comes.
  (void)conversations_.expire_due();
  conversations_.start();
}

Engine::~Engine() {
  conversations_.stop();
  listener_.stop();
  link_.close();
}

std::string Engine::trust_policy() {
  std::lock_guard crypto_lock(account_->crypto_mu);
  return account_->store->settings().trust_policy;
}

std::string Engine::take_recovery_code() {
  std::lock_guard lock(recovery_mu_);
  std::string code = recovery_code_;
  wipe(recovery_code_);
  return code;
}

Result<void> Engine::connect() {
  auto c = link_.ensure_connected(SteadyClock::now() + account_->options.send_timeout);
  if (!c) return tl::unexpected(c.error());
  return {};
}

Result<SendResult> Engine::send(const std::string& to, const std::string& body) {
  return conversations_.send(to, body, {});
}

Result<std::size_t> Engine::receive(std::chrono::milliseconds timeout,
                                    const EventHandler& handler) {
  return listener_.receive(timeout, handler);
}

Result<void> Engine::start(EventHandler handler) {
  return listener_.start(std::move(handler));
}

void Engine::stop() {
  listener_.stop();
}

Result<std::vector<Event>> Engine::events(std::uint64_t after, std::size_t limit) {
  return store_result(journal_.after(after, limit));
}

Result<void> Engine::acknowledge(std::uint64_t cursor) {
  return store_result(journal_.acknowledge(cursor));
}

Result<std::vector<Device>> Engine::devices() {
  return devices_.list();
}

Result<void> Engine::remove_device(std::uint32_t id) {
  auto removed = devices_.remove(id);
  if (!removed) return removed;
  // Key transparency: the account's other devices forget any link of theirs naming it.
  OwnDeviceChange change;
  change.device_id = id;
  change.removed = true;
  devices_.tell_own_devices(change, outbox_);
  return {};
}

Result<std::vector<Contact>> Engine::contacts() {
  return contacts_.list();
}

Result<void> Engine::block(const std::string& user) {
  return blocks_.block(user);
}

Result<void> Engine::unblock(const std::string& user) {
  return blocks_.unblock(user);
}

Result<std::vector<std::string>> Engine::blocked() {
  return blocks_.list();
}

Result<SafetyNumber> Engine::safety_number(const std::string& user) {
  return contacts_.safety_number(user);
}

Result<SafetyNumber> Engine::trust(const std::string& user,
                                   const std::optional<std::string>& digits) {
  bool released = false;
  auto r = contacts_.trust(user, digits, released);
  if (!r) return r;
  if (released) listener_.notify();
  // The account's other devices accept the key too. Best effort, and short: trusting is done
  // here whether or not they can be told now (the user can trust there as well).
  content::Content c;
  auto* update = c.mutable_sync()->mutable_trust();
  update->set_user(*normalize_username(user));
  if (auto key = from_hex(r->identity_key_hex)) update->set_identity_key(bytes_string(*key));
  update->set_verified(r->verified);
  (void)outbox_.send_to_own_devices(encode_padded(c, account_->kt), kTrustSyncTimeout);
  return r;
}

Result<std::vector<Message>> Engine::history(const std::string& user, std::size_t limit) {
  auto messages = conversations_.history(user, limit);
  if (messages) {
    for (auto& m : *messages) m.attachments = load_message_attachments(*account_->store, m.id);
  }
  return messages;
}

Result<std::vector<Message>> Engine::read_history(const Options& options,
                                                  const std::string& account,
                                                  const std::string& user, std::size_t limit) {
  auto named = account_to_read(options, account);
  if (!named) return tl::unexpected(named.error());
  const std::string& name = *named;
  const bool group = user.rfind("group:", 0) == 0;  // a group's conversation (docs/groups.md)
  std::optional<std::string> peer;
  if (!group) {
    peer = normalize_username(user);
    if (!peer) return tl::unexpected(make_error(ErrorCode::invalid_argument, "invalid username"));
  }
  auto store = store::ClientStore::open_read_only(options.data_dir, name, options.passphrase);
  if (!store) return tl::unexpected(from_store(store.error()));
  if (group) {
    auto id = resolve_group_id(**store, user.substr(6));
    if (!id) return tl::unexpected(id.error());
    peer = "group:" + *id;
  }
  auto list = (*store)->messages(*peer, limit);
  if (!list) return tl::unexpected(from_store(list.error()));
  // Disappeared messages are left out (this reader cannot remove them; the account's owner does).
  auto out = Conversations::decorate(
      **store, *peer, *list,
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count()));
  if (out) Conversations::mark_mentions(*out, name);
  return out;
}

Result<Group> Engine::read_group(const Options& options, const std::string& account,
                                 const std::string& id) {
  auto named = account_to_read(options, account);
  if (!named) return tl::unexpected(named.error());
  const std::string& name = *named;
  auto store = store::ClientStore::open_read_only(options.data_dir, name, options.passphrase);
  if (!store) return tl::unexpected(from_store(store.error()));
  auto hex = resolve_group_id(**store, id);
  if (!hex) return tl::unexpected(hex.error());
  auto s = load_group_state(**store, *hex);
  if (!s) return tl::unexpected(s.error());
  if (!s->has_value()) return tl::unexpected(make_error(ErrorCode::not_found, "no such group"));
  return group_of(**s, name);
}

// --- adding a device ---------------------------------------------------------------------------

Result<std::uint32_t> Engine::add_device(const std::string& code_text, const Progress& progress) {
  auto code = decode_link_code(code_text);
  if (!code) return tl::unexpected(code.error());
  auto before = devices_.list();
  if (!before) return tl::unexpected(before.error());
  auto connected = link_.ensure_connected(SteadyClock::now() + account_->options.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  const ConnectionPtr c = connected->connection;

  svc::Request token_request;
  token_request.mutable_link_token();
  auto token = link_.call_ok(c, std::move(token_request));
  if (!token) return tl::unexpected(token.error());
  // Key transparency: the device this link adds is ours, not an unknown one (KtClient), and the
  // account's other devices hear so before it can appear in the log (docs/transparency.md,
  // "Monitoring"): their server queue holds this before the link.
  if (!account_->store->save_value(kKtLinkingValue, Bytes{1})) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot record the link"));
  }
  OwnDeviceChange starting;
  starting.link_started = true;
  devices_.tell_own_devices(starting, outbox_);

  content::ProvisionMessage message;
  {
    std::lock_guard crypto_lock(account_->crypto_mu);  // settings are replaced under this lock
    const auto& s = account_->store->settings();
    message.set_username(s.username);
    message.set_identity_public(bytes_string(s.identity.public_key.serialize()));
    message.set_identity_private(bytes_string(s.identity.private_key.view()));
    message.set_link_token(token->link_token().token());
    message.set_server_host(s.server_host);
    message.set_server_port(s.server_port);
    message.set_server_fingerprint(s.server_fingerprint);
    message.set_device_id(account_->device_id);
  }
  if (auto verifier = account_->store->load_value(kRecoveryVerifierValue);
      verifier && verifier->has_value()) {
    message.set_recovery_verifier(bytes_string((*verifier)->view()));
  }
  // The log this device pinned, so that the new one trusts its account rather than the server.
  if (auto [kt_keys, kt_head] = account_->kt.pinned_for_link(); !kt_keys.empty()) {
    message.set_kt_keys(bytes_string(kt_keys));
    message.set_kt_tree_head(bytes_string(kt_head));
  }
  crypto::SecretBuffer plain(message.ByteSizeLong());
  plain.resize(plain.capacity());
  message.SerializeWithCachedSizesToArray(plain.data());
  wipe(*message.mutable_identity_private());
  const Bytes sealed = seal_provision(plain.view(), code->public_key, account_->rng);

  svc::Request send_request;
  auto* send = send_request.mutable_provisioning_send();
  send->set_address(bytes_string(code->address));
  send->set_ciphertext(bytes_string(sealed));
  auto sent = c->call(std::move(send_request), account_->options.request_timeout);
  if (!sent) return tl::unexpected(sent.error());
  if (sent->status().code() == svc::NOT_FOUND) {
    return tl::unexpected(make_error(ErrorCode::not_found,
                                     "no new device is waiting for this code: it may have "
                                     "stopped waiting (the code then changes), or the code is "
                                     "mistyped"));
  }
  if (sent->status().code() != svc::OK) return tl::unexpected(status_error(*sent));

  std::set<std::uint32_t> known;
  for (const auto& d : *before) known.insert(d.id);
  std::uint32_t added = 0;
  std::uint32_t added_registration = 0;
  const auto until = SteadyClock::now() + kAddDeviceWait;
  while (added == 0 && SteadyClock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto now = devices_.list();
    if (!now) continue;
    for (const auto& d : *now) {
      if (!known.contains(d.id)) {
        added = d.id;
        added_registration = d.registration_id;
      }
    }
  }
  if (added == 0) return 0u;
  // Key transparency: this device's check takes the new device as its link's, and the account's
  // other devices are told which device it is (with the auth key the log holds for it).
  if (auto now = link_.current()) (void)devices_.monitor(now);
  OwnDeviceChange linked;
  linked.device_id = added;
  linked.registration_id = added_registration;
  linked.auth_key = devices_.accepted_auth_key(added);
  devices_.tell_own_devices(linked, outbox_);
  // The new device says first whether it wants the history; it is sent before returning.
  history_.set_serve_progress(progress);
  auto answered = listener_.pump(SteadyClock::now() + kHistoryRequestWait,
                                 [&] { return history_.answered(added); });
  history_.set_serve_progress(nullptr);
  if (!answered) return tl::unexpected(answered.error());
  return added;
}

Result<void> Engine::fetch_history(std::uint32_t from_device, const LinkOptions& options) {
  content::Content hello;
  hello.mutable_sync()->mutable_history_request()->set_history(options.transfer_history);
  const std::string plain = encode_padded(hello, account_->kt);
  if (auto sent = outbox_.send_to_devices(account_->username, {from_device}, plain,
                                          outbox_.next_timestamp());
      !sent) {
    return sent;
  }
  if (!options.transfer_history) return {};
  history_.set_import_progress(options.history_progress);
  auto done = listener_.pump(SteadyClock::now() + options.history_timeout,
                             [&] { return history_.complete(); });
  history_.set_import_progress(nullptr);
  if (!done) return tl::unexpected(done.error());
  if (!*done) {
    return tl::unexpected(make_error(ErrorCode::timeout,
                                     "the history did not arrive in time from the device that "
                                     "linked this one (it must be online)"));
  }
  return {};
}

// --- the server --------------------------------------------------------------------------------

Result<void> Engine::trust_server_key(const std::string& fingerprint) {
  auto pin = normalize_fingerprint(fingerprint);
  if (!pin) return tl::unexpected(pin.error());
  {
    std::lock_guard crypto_lock(account_->crypto_mu);
    store::AccountSettings s = account_->store->settings().clone();
    s.server_fingerprint = *pin;
    if (auto saved = account_->store->save_settings(s); !saved) {
      return tl::unexpected(from_store(saved.error()));
    }
    (void)account_->store->remove_value(kNextPinValue);
  }
  Server server = account_->server();
  server.fingerprint = *pin;
  server.next_fingerprint.clear();
  account_->set_server(std::move(server));
  link_.close();  // the next connection checks the new pin
  return {};
}

Result<void> Engine::set_server_address(const std::string& host, std::uint16_t port) {
  if (host.empty() || port == 0) {
    return tl::unexpected(
        make_error(ErrorCode::invalid_argument, "the server address is HOST and a port 1-65535"));
  }
  {
    std::lock_guard crypto_lock(account_->crypto_mu);
    store::AccountSettings s = account_->store->settings().clone();
    s.server_host = host;
    s.server_port = port;
    if (auto saved = account_->store->save_settings(s); !saved) {
      return tl::unexpected(from_store(saved.error()));
    }
  }
  Server server = account_->server();
  server.host = host;
  server.port = port;
  account_->set_server(std::move(server));
  link_.close();
  return {};
}

}  // namespace sotto::client
