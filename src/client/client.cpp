// The public facade (include/sotto/client.h) over the engine.
#include "sotto/client.h"

#include "client/engine.h"
#include "client/environment.h"
#include "client/kt.h"
#include "contract/username.h"
#include "crypto/encoding.h"
#include "store/client/client_store.h"

namespace sotto {

std::string_view to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::no_account:
      return "no_account";
    case ErrorCode::ambiguous_account:
      return "ambiguous_account";
    case ErrorCode::account_exists:
      return "account_exists";
    case ErrorCode::account_busy:
      return "account_busy";
    case ErrorCode::wrong_passphrase:
      return "wrong_passphrase";
    case ErrorCode::store:
      return "store";
    case ErrorCode::network:
      return "network";
    case ErrorCode::fingerprint_mismatch:
      return "fingerprint_mismatch";
    case ErrorCode::server:
      return "server";
    case ErrorCode::unauthenticated:
      return "unauthenticated";
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::untrusted_identity:
      return "untrusted_identity";
    case ErrorCode::protocol:
      return "protocol";
    case ErrorCode::timeout:
      return "timeout";
    case ErrorCode::safety_number_mismatch:
      return "safety_number_mismatch";
    case ErrorCode::device_in_use:
      return "device_in_use";
    case ErrorCode::forbidden:
      return "forbidden";
    case ErrorCode::rate_limited:
      return "rate_limited";
    case ErrorCode::security_alert:
      return "security_alert";
  }
  return "unknown";
}

// The message is client::security_alert_error's: "security alert (KIND) for USER: DETAIL".
std::optional<SecurityAlert> security_alert_of(const Error& e) {
  if (e.code != ErrorCode::security_alert) return std::nullopt;
  constexpr std::string_view kStart = "security alert (";
  const std::string& m = e.message;
  if (m.rfind(kStart, 0) != 0) return std::nullopt;
  const auto close = m.find(") for ", kStart.size());
  if (close == std::string::npos) return std::nullopt;
  const auto colon = m.find(": ", close + 6);
  if (colon == std::string::npos) return std::nullopt;
  return SecurityAlert{m.substr(kStart.size(), close - kStart.size()),
                       m.substr(close + 6, colon - close - 6), m.substr(colon + 2)};
}

std::optional<std::string> normalize_username(std::string_view name) {
  return contract::normalize_username(name);
}

Client::Client(std::unique_ptr<client::Engine> engine) : engine_(std::move(engine)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::register_account(const Options& options,
                                                         const std::string& username,
                                                         const Server& server,
                                                         const std::string& invite_code) {
  auto e = client::Engine::register_account(options, username, server, invite_code,
                                            client::system_environment());
  if (!e) return tl::unexpected(e.error());
  return std::unique_ptr<Client>(new Client(std::move(*e)));
}

Result<std::unique_ptr<Client>> Client::recover(const Options& options, const std::string& username,
                                                const std::string& code, const Server& server) {
  auto e = client::Engine::recover(options, username, code, server, client::system_environment());
  if (!e) return tl::unexpected(e.error());
  return std::unique_ptr<Client>(new Client(std::move(*e)));
}

Result<std::unique_ptr<Client>> Client::open(const Options& options, const std::string& username) {
  auto e = client::Engine::open(options, username, client::system_environment());
  if (!e) return tl::unexpected(e.error());
  return std::unique_ptr<Client>(new Client(std::move(*e)));
}

Result<std::unique_ptr<Client>> Client::link(const Options& options, const Server& server,
                                             const std::function<void(const LinkPrompt&)>& show,
                                             std::chrono::seconds timeout,
                                             const LinkOptions& link_options) {
  auto e = client::Engine::link(options, server, show, timeout, link_options,
                                client::system_environment());
  if (!e) return tl::unexpected(e.error());
  return std::unique_ptr<Client>(new Client(std::move(*e)));
}

std::vector<std::string> Client::accounts(const std::filesystem::path& data_dir) {
  return store::ClientStore::accounts(data_dir);
}

Result<Group> Client::read_group(const Options& options, const std::string& account,
                                 const std::string& id) {
  return client::Engine::read_group(options, account, id);
}

Result<std::vector<Message>> Client::read_history(const Options& options,
                                                  const std::string& account,
                                                  const std::string& user, std::size_t limit) {
  return client::Engine::read_history(options, account, user, limit);
}

std::string Client::username() const {
  return engine_->username();
}
std::uint32_t Client::device_id() const {
  return engine_->device_id();
}
Server Client::server() const {
  return engine_->server();
}
std::string Client::trust_policy() const {
  return engine_->trust_policy();
}
std::string Client::recovery_code() {
  return engine_->take_recovery_code();
}
Result<void> Client::connect() {
  return engine_->connect();
}
Result<SendResult> Client::send(const std::string& to, const std::string& body) {
  return engine_->send(to, body);
}
Result<Attachment> Client::upload_attachment(const std::filesystem::path& file,
                                             const std::string& caption, const Progress& progress) {
  return engine_->upload_attachment(file, caption, progress);
}
Result<SendResult> Client::send(const std::string& to, const std::string& body,
                                const std::vector<Attachment>& attachments) {
  return engine_->send(to, body, attachments);
}
Result<SavedAttachment> Client::save_attachment(const Attachment& attachment,
                                                const std::filesystem::path& dir,
                                                const Progress& progress) {
  return engine_->save_attachment(attachment, dir, progress);
}
std::filesystem::path Client::attachments_dir() const {
  return engine_->attachments_dir();
}
Result<std::size_t> Client::receive(std::chrono::milliseconds timeout,
                                    const EventHandler& handler) {
  return engine_->receive(timeout, handler);
}
Result<void> Client::start(EventHandler handler) {
  return engine_->start(std::move(handler));
}
void Client::stop() {
  engine_->stop();
}
Result<std::vector<Event>> Client::events(std::uint64_t after, std::size_t limit) {
  return engine_->events(after, limit);
}
Result<void> Client::acknowledge(std::uint64_t cursor) {
  return engine_->acknowledge(cursor);
}
Result<std::vector<Device>> Client::devices() {
  return engine_->devices();
}
Result<void> Client::remove_device(std::uint32_t id) {
  return engine_->remove_device(id);
}
Result<void> Client::block(const std::string& user) {
  return engine_->block(user);
}
Result<void> Client::unblock(const std::string& user) {
  return engine_->unblock(user);
}
Result<std::vector<std::string>> Client::blocked() {
  return engine_->blocked();
}
Result<std::uint32_t> Client::add_device(const std::string& code, const Progress& progress) {
  return engine_->add_device(code, progress);
}
Result<std::vector<Contact>> Client::contacts() {
  return engine_->contacts();
}
Result<SafetyNumber> Client::safety_number(const std::string& user) {
  return engine_->safety_number(user);
}
Result<SafetyNumber> Client::trust(const std::string& user,
                                   const std::optional<std::string>& digits) {
  return engine_->trust(user, digits);
}
Result<std::vector<Message>> Client::history(const std::string& user, std::size_t limit) {
  return engine_->history(user, limit);
}
Result<void> Client::trust_server_key(const std::string& fingerprint) {
  return engine_->trust_server_key(fingerprint);
}
Result<void> Client::set_server_address(const std::string& host, std::uint16_t port) {
  return engine_->set_server_address(host, port);
}
Result<void> Client::require_auditor(const std::string& key_hex,
                                     std::chrono::milliseconds max_age) {
  if (key_hex.empty()) return engine_->account().kt.set_required_auditor(std::nullopt);
  auto key = crypto::from_hex(key_hex);
  if (!key || key->size() != 32 || max_age.count() < 0) {
    return tl::unexpected(
        client::make_error(ErrorCode::invalid_argument,
                           "an auditor key is 64 hex digits (sotto-audit key prints it)"));
  }
  client::AuditorRequirement r;
  std::copy(key->begin(), key->end(), r.key.begin());
  r.max_age_ms = static_cast<std::uint64_t>(max_age.count());
  return engine_->account().kt.set_required_auditor(r);
}
Result<std::optional<Client::RequiredAuditor>> Client::required_auditor() {
  auto r = engine_->account().kt.required_auditor();
  if (!r) return tl::unexpected(r.error());
  if (!*r) return std::nullopt;
  return RequiredAuditor{crypto::to_hex((*r)->key),
                         std::chrono::milliseconds(static_cast<std::int64_t>((*r)->max_age_ms))};
}
Result<std::optional<Client::LogPin>> Client::pinned_log() {
  auto p = engine_->account().kt.pinned();
  if (!p) return tl::unexpected(p.error());
  if (!*p) return std::nullopt;
  LogPin out;
  out.keys = crypto::to_hex((*p)->keys.signing_key) + ":" + crypto::to_hex((*p)->keys.vrf_key);
  if ((*p)->head) {
    out.tree_size = (*p)->head->head.size;
    out.tree_time_ms = (*p)->head->head.timestamp_ms;
  }
  return out;
}
Result<std::size_t> Client::backup_export(const std::filesystem::path& path,
                                          const BackupSecret& secret, const Progress& progress) {
  return engine_->backup_export(path, secret, progress);
}
Result<std::size_t> Client::backup_import(const std::filesystem::path& path,
                                          const BackupSecret& secret, const Progress& progress) {
  return engine_->backup_import(path, secret, progress);
}

}  // namespace sotto
