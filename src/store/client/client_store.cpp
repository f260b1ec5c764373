// The client store over SQLite. Layout of DIR/<username>.db (format 1):
//
//   meta            name -> value: format, kdf ("argon2id" | "keyfile"), kdf_salt, kdf_ops,
//                   kdf_mem, key_check (the sealed constant kKeyCheckPlaintext)
//   account         one row: the sealed AccountSettings (secrets, pinned fingerprint and trust
//                   policy are all inside, so none of them can be read or altered on disk)
//   contacts        username -> sealed trust state (identity key, verified, identity_changed_at)
//   sessions        (username, device_id) -> sealed SessionRecord::encode()
//   pre_keys        id -> sealed (public, private)
//   signed_pre_keys id -> sealed (public, private, signature, timestamp)
//   sender_keys     (distribution_id, sender, sender_device) -> sealed SenderKeyRecord::encode()
//   envelopes       processed envelope ids, the newest kMaxSeenEnvelopes kept
//   messages        history; the body is sealed with all of the row's other columns in its
//                   associated data, so neither the body nor its metadata can be altered
//
// Sealed values are nonce || XChaCha20-Poly1305(storage key, aad = "table/column/row-key"); see
// sealed_codec.h. Key columns (peer usernames, device ids, prekey ids) stay in the clear so rows
// can be looked up; they name no secret.
#include "store/client/client_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "crypto/pwhash.h"
#include "crypto/rng.h"
#include "crypto/x25519.h"
#include "store/client/sealed_codec.h"
#include "store/client/sqlite_conn.h"

namespace sotto::store {

AccountSettings AccountSettings::clone() const {
  AccountSettings c;
  c.username = username;
  c.device_id = device_id;
  c.server_host = server_host;
  c.server_port = server_port;
  c.server_fingerprint = server_fingerprint;
  c.auth_key = auth_key.clone();
  c.identity = identity.clone();
  c.registration_id = registration_id;
  c.next_pre_key_id = next_pre_key_id;
  c.next_signed_pre_key_id = next_signed_pre_key_id;
  c.trust_policy = trust_policy;
  return c;
}

std::string_view to_string(ClientError e) {
  switch (e) {
    case ClientError::not_found:
      return "not found";
    case ClientError::wrong_passphrase:
      return "wrong passphrase or storage key";
    case ClientError::corrupt:
      return "the store is damaged (a record fails to decrypt or decode)";
    case ClientError::io:
      return "I/O error: the store or its key file cannot be read or written, or the key file is "
             "not a regular file owned by this user with mode 0600 (it must not be readable by "
             "group or others)";
    case ClientError::exists:
      return "an account store with this name already exists";
    case ClientError::invalid_argument:
      return "invalid argument (username must be 3-32 characters of a-z, 0-9, '.', '_', '-', "
             "starting with a letter or digit; trust policy on-first-use, always or never; the "
             "settings must hold the device's authentication key)";
  }
  return "unknown error";
}

namespace {

using detail::open_sealed;
using detail::Packer;
using detail::row_aad;
using detail::seal;
using detail::Statement;
using detail::Unpacker;
using StepResult = detail::Statement::StepResult;

// Format 2 added the held, events, sent_log and state tables; a format 1 file gains them when it
// is opened read-write.
constexpr std::int64_t kFormat = 2;
constexpr std::int64_t kFormat1 = 1;
constexpr std::uint8_t kRecordVersion = 1;
constexpr std::int64_t kMaxSeenEnvelopes = 100'000;
constexpr int kBusyTimeoutMs = 5000;
constexpr std::string_view kKeyCheckPlaintext = "sotto client store key check v1";
constexpr std::size_t kMaxSettingsString = 4096;
constexpr std::string_view kKdfArgon2id = "argon2id";
constexpr std::string_view kKdfKeyFile = "keyfile";
constexpr std::size_t kKeySize = 32;
constexpr std::size_t kPublicKeySize = 32;

enum class Policy { on_first_use, always, never };

std::optional<Policy> parse_policy(std::string_view s) {
  if (s == "on-first-use") return Policy::on_first_use;
  if (s == "always") return Policy::always;
  if (s == "never") return Policy::never;
  return std::nullopt;
}

// Account names become file names, so only the server's canonical form is accepted: 3-32
// characters of [a-z0-9._-], starting with a letter or digit.
bool valid_username(std::string_view name) {
  if (name.size() < 3 || name.size() > 32) return false;
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return name[0] != '.' && name[0] != '_' && name[0] != '-';
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string num(std::uint64_t v) {
  return std::to_string(v);
}

std::filesystem::path db_path(const std::filesystem::path& dir, const std::string& username) {
  return dir / (username + ".db");
}
std::filesystem::path key_path(const std::filesystem::path& dir, const std::string& username) {
  return dir / (username + ".key");
}

// Wipes the caller's passphrase copy when create()/open() return.
struct PassphraseWiper {
  std::optional<std::string>& p;
  ~PassphraseWiper() {
    if (p && !p->empty()) crypto::secure_wipe(p->data(), p->size());
  }
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

tl::expected<void, ClientError> ensure_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return {};
  if (dir.has_parent_path()) {
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (ec) return tl::unexpected(ClientError::io);
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return tl::unexpected(ClientError::io);
  if (!std::filesystem::is_directory(dir, ec)) return tl::unexpected(ClientError::io);
  return {};
}

// Creates `path` exclusively with mode 0600 (whatever the umask) and leaves it open in `out`.
tl::expected<void, ClientError> create_private_file(const std::filesystem::path& path, Fd& out) {
  out.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out.fd < 0) {
    return tl::unexpected(errno == EEXIST ? ClientError::exists : ClientError::io);
  }
  if (::fchmod(out.fd, 0600) != 0) {
    ::unlink(path.c_str());
    return tl::unexpected(ClientError::io);
  }
  return {};
}

tl::expected<void, ClientError> write_key_file(const std::filesystem::path& path,
                                               const crypto::Secret<kKeySize>& key) {
  Fd f;
  if (auto r = create_private_file(path, f); !r) return r;
  std::size_t done = 0;
  while (done < key.size()) {
    const ssize_t n = ::write(f.fd, key.data() + done, key.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return tl::unexpected(ClientError::io);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(f.fd) != 0) return tl::unexpected(ClientError::io);
  return {};
}

// The key file must be a regular file of exactly 32 bytes, owned by us, with no permission bits
// for group or others (as ssh treats private keys).
tl::expected<crypto::Secret<kKeySize>, ClientError> read_key_file(
    const std::filesystem::path& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (f.fd < 0) return tl::unexpected(ClientError::io);
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) return tl::unexpected(ClientError::io);
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) return tl::unexpected(ClientError::io);
  if (st.st_size != static_cast<off_t>(kKeySize)) return tl::unexpected(ClientError::corrupt);
  crypto::Secret<kKeySize> key;
  std::size_t done = 0;
  while (done < kKeySize) {
    const ssize_t n = ::read(f.fd, key.data() + done, kKeySize - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return tl::unexpected(ClientError::io);
    if (n == 0) return tl::unexpected(ClientError::corrupt);
    done += static_cast<std::size_t>(n);
  }
  return key;
}

// --- record codecs (the plaintext of sealed values) --------------------------------------------

}  // namespace

namespace detail {

crypto::SecretBuffer encode_settings(const AccountSettings& s) {
  const std::size_t size = Packer::kU8 + Packer::str_size(s.username) + Packer::kU32 +
                           Packer::str_size(s.server_host) + Packer::kU16 +
                           Packer::str_size(s.server_fingerprint) + 4 * kKeySize +
                           3 * Packer::kU32 + Packer::str_size(s.trust_policy);
  Packer p(size);
  p.u8(kRecordVersion);
  p.str(s.username);
  p.u32(s.device_id);
  p.str(s.server_host);
  p.u16(s.server_port);
  p.str(s.server_fingerprint);
  p.raw(s.auth_key.public_key());
  p.raw(s.auth_key.seed());
  p.raw(s.identity.public_key.view());
  p.raw(s.identity.private_key.view());
  p.u32(s.registration_id.value);
  p.u32(s.next_pre_key_id);
  p.u32(s.next_signed_pre_key_id);
  p.str(s.trust_policy);
  return p.finish();
}

namespace {

// A stored X25519 pair whose public key is not its private key's own marks the record as corrupt:
// the peers would hold a key this device cannot answer for, and every session on it would fail.
std::optional<protocol::KeyPair> x25519_pair_if_consistent(ByteView pub, ByteView priv) {
  auto key = protocol::PublicKey::from_raw(pub);
  if (!key) return std::nullopt;
  protocol::PrivateKey secret(priv);
  const crypto::X25519PublicBytes own = crypto::x25519_public_from_private(secret);
  if (!crypto::constant_time_equal(ByteView(own.data(), own.size()), key->view())) {
    return std::nullopt;
  }
  return protocol::KeyPair{*key, std::move(secret)};
}

}  // namespace

std::optional<AccountSettings> decode_settings(ByteView bytes) {
  Unpacker u(bytes);
  AccountSettings s;
  if (u.u8() != kRecordVersion) return std::nullopt;
  auto username = u.str(kMaxSettingsString);
  auto device_id = u.u32();
  auto host = u.str(kMaxSettingsString);
  auto port = u.u16();
  auto fingerprint = u.str(kMaxSettingsString);
  auto auth_public = u.raw(kKeySize);
  auto auth_seed = u.raw(kKeySize);
  auto identity_public = u.raw(kPublicKeySize);
  auto identity_private = u.raw(kKeySize);
  auto registration_id = u.u32();
  auto next_pre_key_id = u.u32();
  auto next_signed_pre_key_id = u.u32();
  auto policy = u.str(kMaxSettingsString);
  if (!policy || !u.done() || !username || !device_id || !host || !port || !fingerprint ||
      !auth_public || !auth_seed || !identity_public || !identity_private || !registration_id ||
      !next_pre_key_id || !next_signed_pre_key_id) {
    return std::nullopt;
  }
  auto identity = x25519_pair_if_consistent(*identity_public, *identity_private);
  if (!identity || !parse_policy(*policy)) return std::nullopt;
  // The pair is rebuilt from its seed; a stored public key that is not the seed's own marks the
  // record as corrupt (signing under it would expose the seed).
  auto auth_key = crypto::Ed25519KeyPair::from_seed(crypto::Secret<kKeySize>(*auth_seed));
  if (!crypto::constant_time_equal(auth_key.public_key(), *auth_public)) return std::nullopt;
  s.username = std::move(*username);
  s.device_id = *device_id;
  s.server_host = std::move(*host);
  s.server_port = *port;
  s.server_fingerprint = std::move(*fingerprint);
  s.auth_key = std::move(auth_key);
  s.identity = std::move(*identity);
  s.registration_id = protocol::RegistrationId(*registration_id);
  s.next_pre_key_id = *next_pre_key_id;
  s.next_signed_pre_key_id = *next_signed_pre_key_id;
  s.trust_policy = std::move(*policy);
  return s;
}

constexpr std::uint8_t kContactVersion = 2;
constexpr std::uint8_t kHeldVersion = 1;
constexpr std::size_t kMaxHeldBody = 1 << 20;

crypto::SecretBuffer encode_contact(const ContactState& c) {
  Packer p(4 * Packer::kU8 + (c.key ? kPublicKeySize : 0) + Packer::kU64);
  p.u8(kContactVersion);
  p.u8(c.key ? 1 : 0);
  if (c.key) p.raw(c.key->view());
  p.u8(c.accepted ? 1 : 0);
  p.u8(c.verified ? 1 : 0);
  p.u64(c.changed_at);
  return p.finish();
}

std::optional<ContactState> decode_contact(ByteView bytes) {
  Unpacker u(bytes);
  ContactState c;
  const auto version = u.u8();
  if (version != kRecordVersion && version != kContactVersion) return std::nullopt;
  auto has_key = u.u8();
  if (!has_key || *has_key > 1) return std::nullopt;
  if (*has_key == 1) {
    auto raw = u.raw(kPublicKeySize);
    if (!raw) return std::nullopt;
    auto key = protocol::PublicKey::from_raw(*raw);
    if (!key) return std::nullopt;
    c.key = *key;
  }
  std::optional<std::uint8_t> accepted;
  if (version == kContactVersion) {
    accepted = u.u8();
    if (!accepted || *accepted > 1) return std::nullopt;
  }
  auto verified = u.u8();
  auto changed_at = u.u64();
  if (!verified || *verified > 1 || !changed_at || !u.done()) return std::nullopt;
  c.verified = *verified == 1;
  c.changed_at = *changed_at;
  // Version 1 trusted a key that never changed, or that the user verified after it changed.
  c.accepted = accepted ? *accepted == 1 : (c.changed_at == 0 || c.verified);
  return c;
}

crypto::SecretBuffer encode_held_message(const StoredMessage& m) {
  Packer p(Packer::kU8 + Packer::str_size(m.envelope_id) + Packer::str_size(m.sender) +
           Packer::kU32 + Packer::kU64 + Packer::str_size(m.body) + Packer::kU8);
  p.u8(kHeldVersion);
  p.str(m.envelope_id);
  p.str(m.sender);
  p.u32(m.sender_device);
  p.u64(m.timestamp);
  p.str(m.body);
  p.u8(m.outgoing ? 1 : 0);
  return p.finish();
}

std::optional<StoredMessage> decode_held_message(ByteView bytes) {
  Unpacker u(bytes);
  if (u.u8() != kHeldVersion) return std::nullopt;
  StoredMessage m;
  auto envelope_id = u.str(kMaxSettingsString);
  auto sender = u.str(kMaxSettingsString);
  auto device = u.u32();
  auto timestamp = u.u64();
  auto body = u.str(kMaxHeldBody);
  auto outgoing = u.u8();
  if (!envelope_id || !sender || !device || !timestamp || !body || !outgoing || *outgoing > 1 ||
      !u.done()) {
    return std::nullopt;
  }
  m.envelope_id = std::move(*envelope_id);
  m.sender = std::move(*sender);
  m.sender_device = *device;
  m.timestamp = *timestamp;
  m.body = std::move(*body);
  m.outgoing = *outgoing == 1;
  return m;
}

crypto::SecretBuffer encode_pre_key(const protocol::PreKeyRecord& r) {
  Packer p(Packer::kU8 + kPublicKeySize + kKeySize);
  p.u8(kRecordVersion);
  p.raw(r.key_pair.public_key.view());
  p.raw(r.key_pair.private_key.view());
  return p.finish();
}

namespace {

std::optional<protocol::KeyPair> decode_key_pair(Unpacker& u) {
  auto pub = u.raw(kPublicKeySize);
  auto priv = u.raw(kKeySize);
  if (!pub || !priv) return std::nullopt;
  return x25519_pair_if_consistent(*pub, *priv);
}

}  // namespace

std::optional<protocol::PreKeyRecord> decode_pre_key(protocol::PreKeyId id, ByteView bytes) {
  Unpacker u(bytes);
  if (u.u8() != kRecordVersion) return std::nullopt;
  auto kp = decode_key_pair(u);
  if (!kp || !u.done()) return std::nullopt;
  return protocol::PreKeyRecord{id, std::move(*kp)};
}

crypto::SecretBuffer encode_signed_pre_key(const protocol::SignedPreKeyRecord& r) {
  Packer p(Packer::kU8 + kPublicKeySize + kKeySize + r.signature.size() + Packer::kU64);
  p.u8(kRecordVersion);
  p.raw(r.key_pair.public_key.view());
  p.raw(r.key_pair.private_key.view());
  p.raw(r.signature);
  p.u64(r.timestamp);
  return p.finish();
}

std::optional<protocol::SignedPreKeyRecord> decode_signed_pre_key(protocol::SignedPreKeyId id,
                                                                  ByteView bytes) {
  Unpacker u(bytes);
  if (u.u8() != kRecordVersion) return std::nullopt;
  auto kp = decode_key_pair(u);
  auto sig = u.raw(crypto::kCurve25519SignatureSize);
  auto timestamp = u.u64();
  if (!kp || !sig || !timestamp || !u.done()) return std::nullopt;
  protocol::SignedPreKeyRecord r{id, std::move(*kp), {}, *timestamp};
  std::copy(sig->begin(), sig->end(), r.signature.begin());
  return r;
}

}  // namespace detail

namespace {

using detail::ContactState;
using detail::decode_contact;
using detail::decode_held_message;
using detail::decode_pre_key;
using detail::decode_settings;
using detail::decode_signed_pre_key;
using detail::encode_contact;
using detail::encode_held_message;
using detail::encode_pre_key;
using detail::encode_settings;
using detail::encode_signed_pre_key;

std::string settings_aad(const std::string& username) {
  return row_aad("account", "settings", {username});
}
std::string key_check_aad(const std::string& username) {
  return row_aad("meta", "key_check", {username});
}
std::string contact_aad(const std::string& username) {
  return row_aad("contacts", "state", {username});
}
std::string session_aad(const protocol::Address& a) {
  return row_aad("sessions", "record", {a.name, num(a.device.value)});
}
std::string pre_key_aad(protocol::PreKeyId id) {
  return row_aad("pre_keys", "record", {num(id.value)});
}
std::string signed_pre_key_aad(protocol::SignedPreKeyId id) {
  return row_aad("signed_pre_keys", "record", {num(id.value)});
}
std::string sender_key_aad(const protocol::SenderKeyName& n) {
  return row_aad("sender_keys", "record",
                 {n.distribution_id, n.sender.name, num(n.sender.device.value)});
}
std::string message_aad(const std::string& envelope_id, const std::string& peer,
                        const std::string& sender, std::uint32_t sender_device,
                        std::uint64_t timestamp, bool outgoing) {
  return row_aad(
      "messages", "body",
      {envelope_id, peer, sender, num(sender_device), num(timestamp), outgoing ? "1" : "0"});
}

std::string held_aad(const std::string& peer, std::int64_t seq) {
  return row_aad("held", "record", {peer, num(static_cast<std::uint64_t>(seq))});
}
std::string event_aad(std::int64_t seq) {
  return row_aad("events", "record", {num(static_cast<std::uint64_t>(seq))});
}
std::string sent_aad(const std::string& peer, std::uint64_t timestamp) {
  return row_aad("sent_log", "content", {peer, num(timestamp)});
}
std::string message_state_aad(const std::string& peer, const std::string& author,
                              std::uint64_t timestamp) {
  return row_aad("message_state", "record", {peer, author, num(timestamp)});
}
std::string value_aad(std::string_view name) {
  return row_aad("state", "value", {name});
}

// Tables added by format 2 (also created on a format 1 file when it is opened).
constexpr const char* kSchema2 = R"sql(
CREATE TABLE IF NOT EXISTS held (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  peer TEXT NOT NULL,
  record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS held_by_peer ON held (peer, seq);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sent_log (
  peer TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  resends INTEGER NOT NULL DEFAULT 0,
  content BLOB NOT NULL,
  PRIMARY KEY (peer, timestamp));
CREATE INDEX IF NOT EXISTS sent_log_by_age ON sent_log (created_at);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS envelopes_by_content ON envelopes (content_hash);
)sql";

// The everyday message types (quote, reactions, edits, deletes, receipts, disappearing
// messages): each message's state, by conversation and (author, timestamp); created on every
// read-write open. expires_at is in the clear (0: not counting down) so due messages are found
// without opening every record; it names no content.
constexpr const char* kSchemaMessageState = R"sql(
CREATE TABLE IF NOT EXISTS message_state (
  peer TEXT NOT NULL,
  author TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  expires_at INTEGER NOT NULL DEFAULT 0,
  record BLOB NOT NULL,
  PRIMARY KEY (peer, author, timestamp));
CREATE INDEX IF NOT EXISTS message_state_by_expiry ON message_state (expires_at)
  WHERE expires_at > 0;
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages (sender, timestamp);
CREATE INDEX IF NOT EXISTS messages_by_id ON messages (envelope_id);
)sql";

constexpr const char* kSchema = R"sql(
CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value NOT NULL);
CREATE TABLE account (id INTEGER PRIMARY KEY CHECK (id = 1), settings BLOB NOT NULL);
CREATE TABLE contacts (username TEXT PRIMARY KEY NOT NULL, state BLOB NOT NULL);
CREATE TABLE sessions (
  username TEXT NOT NULL,
  device_id INTEGER NOT NULL,
  record BLOB NOT NULL,
  active INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (username, device_id));
CREATE TABLE pre_keys (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE signed_pre_keys (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE sender_keys (
  distribution_id TEXT NOT NULL,
  sender TEXT NOT NULL,
  sender_device INTEGER NOT NULL,
  record BLOB NOT NULL,
  PRIMARY KEY (distribution_id, sender, sender_device));
CREATE TABLE envelopes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  envelope_id TEXT NOT NULL UNIQUE,
  content_hash BLOB);
CREATE TABLE messages (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  envelope_id TEXT NOT NULL,
  peer TEXT NOT NULL,
  sender TEXT NOT NULL,
  sender_device INTEGER NOT NULL,
  timestamp INTEGER NOT NULL,
  outgoing INTEGER NOT NULL,
  body BLOB NOT NULL,
  UNIQUE (peer, envelope_id));
CREATE INDEX messages_by_peer ON messages (peer, timestamp, seq);
)sql";

protocol::Error to_protocol(ClientError) {
  return protocol::Error::store_failure;
}

}  // namespace

struct ClientStore::Key {
  crypto::Secret<kKeySize> bytes;
};

struct ClientStore::Impl {
  Impl(std::string user, std::unique_ptr<detail::Connection> conn, Key k)
      : username(std::move(user)), db(std::move(conn)), key(std::move(k)) {}

  std::string username;
  std::unique_ptr<detail::Connection> db;
  Key key;
  crypto::SystemRng rng;
  std::string file_identity;  // "device:inode" of the database file
  AccountSettings settings;
  std::recursive_mutex mu;
  int depth = 0;                // open transaction levels (0: none)
  bool settings_dirty = false;  // save_settings ran inside the open transaction

  ClientError db_error() const {
    return db->last_error_is_environmental() ? ClientError::io : ClientError::corrupt;
  }

  tl::expected<Statement, ClientError> prepare(const std::string& sql) {
    auto st = db->prepare(sql);
    if (!st) return tl::unexpected(db_error());
    return std::move(*st);
  }

  // Runs a statement that returns no rows.
  template <typename Bind>
  tl::expected<void, ClientError> run(const std::string& sql, Bind&& bind) {
    auto st = prepare(sql);
    if (!st) return tl::unexpected(st.error());
    if (!bind(*st)) return tl::unexpected(ClientError::io);
    if (st->step() != StepResult::done) return tl::unexpected(db_error());
    return {};
  }

  // The single integer a COUNT(*) query returns.
  template <typename Bind>
  tl::expected<std::size_t, ClientError> count(const std::string& sql, Bind&& bind) {
    auto st = prepare(sql);
    if (!st) return tl::unexpected(st.error());
    if (!bind(*st)) return tl::unexpected(ClientError::io);
    if (st->step() != StepResult::row) return tl::unexpected(db_error());
    auto n = st->column_u64(0);
    if (!n) return tl::unexpected(ClientError::corrupt);
    return static_cast<std::size_t>(*n);
  }

  // The integers in column 0 of every row (ids of a table).
  tl::expected<std::vector<std::uint32_t>, ClientError> ids(const std::string& sql) {
    auto st = prepare(sql);
    if (!st) return tl::unexpected(st.error());
    std::vector<std::uint32_t> out;
    for (;;) {
      const StepResult r = st->step();
      if (r == StepResult::done) break;
      if (r != StepResult::row) return tl::unexpected(db_error());
      auto id = st->column_u32(0);
      if (!id) return tl::unexpected(ClientError::corrupt);
      out.push_back(*id);
    }
    return out;
  }

  // Loads and opens the sealed value in column 0 of the first row, if there is one.
  template <typename Bind>
  tl::expected<std::optional<crypto::SecretBuffer>, ClientError> load_sealed(
      const std::string& sql, Bind&& bind, const std::string& aad) {
    auto st = prepare(sql);
    if (!st) return tl::unexpected(st.error());
    if (!bind(*st)) return tl::unexpected(ClientError::io);
    const StepResult r = st->step();
    if (r == StepResult::done) return std::optional<crypto::SecretBuffer>{};
    if (r != StepResult::row) return tl::unexpected(db_error());
    auto blob = st->column_blob(0);
    if (!blob) return tl::unexpected(ClientError::corrupt);
    auto opened = open_sealed(key.bytes, aad, *blob);
    if (!opened) return tl::unexpected(ClientError::corrupt);
    return std::optional<crypto::SecretBuffer>{std::move(*opened)};
  }

  Bytes seal_value(const std::string& aad, ByteView plaintext) {
    return seal(key.bytes, rng, aad, plaintext);
  }

  // --- transactions: the outermost level is BEGIN IMMEDIATE / COMMIT, nested levels are
  // savepoints, so a nested rollback undoes only its own work. ---------------------------------
  bool begin() {
    const bool ok = depth == 0 ? db->exec("BEGIN IMMEDIATE")
                               : db->exec("SAVEPOINT sotto_" + std::to_string(depth));
    if (ok) ++depth;
    return ok;
  }

  // Ends the innermost level; returns whether its work was committed.
  bool finish(bool commit) {
    --depth;
    bool committed = false;
    if (depth == 0) {
      committed = commit && db->exec("COMMIT");
      if (!committed && db->in_transaction()) (void)db->exec("ROLLBACK");
    } else {
      const std::string sp = "sotto_" + std::to_string(depth);
      committed = commit && db->exec("RELEASE " + sp);
      if (!committed && db->in_transaction()) {
        (void)db->exec("ROLLBACK TO " + sp);
        (void)db->exec("RELEASE " + sp);
      }
    }
    if (!committed && settings_dirty) {
      // The cached settings may hold a change that was just rolled back.
      if (auto s = read_settings()) settings = std::move(*s);
    }
    if (depth == 0) settings_dirty = false;
    return committed;
  }

  // Runs body (returning tl::expected<T, ClientError>) atomically.
  template <typename T, typename Body>
  tl::expected<T, ClientError> atomically(Body&& body) {
    if (!begin()) return tl::unexpected(db_error());
    tl::expected<T, ClientError> r = tl::unexpected(ClientError::io);
    try {
      r = body();
    } catch (...) {
      (void)finish(false);
      throw;
    }
    if (!finish(r.has_value()) && r.has_value()) return tl::unexpected(ClientError::io);
    return r;
  }

  // --- settings ---------------------------------------------------------------------------------
  tl::expected<void, ClientError> write_settings(const AccountSettings& s) {
    crypto::SecretBuffer plain = encode_settings(s);
    const Bytes sealed = seal_value(settings_aad(username), plain.view());
    return run(
        "INSERT INTO account (id, settings) VALUES (1, ?1) "
        "ON CONFLICT (id) DO UPDATE SET settings = excluded.settings",
        [&](Statement& st) { return st.bind_blob(1, sealed); });
  }

  tl::expected<AccountSettings, ClientError> read_settings() {
    auto plain = load_sealed(
        "SELECT settings FROM account WHERE id = 1", [](Statement&) { return true; },
        settings_aad(username));
    if (!plain) return tl::unexpected(plain.error());
    if (!*plain) return tl::unexpected(ClientError::corrupt);
    auto s = decode_settings((*plain)->view());
    if (!s || s->username != username) return tl::unexpected(ClientError::corrupt);
    return std::move(*s);
  }

  // --- meta -------------------------------------------------------------------------------------
  template <typename Bind>
  tl::expected<void, ClientError> put_meta(std::string_view name, Bind&& bind_value) {
    return run("INSERT INTO meta (name, value) VALUES (?1, ?2)",
               [&](Statement& st) { return st.bind_text(1, name) && bind_value(st); });
  }

  // Reads one meta value with `read` (a Statement column reader on column 0).
  template <typename Read>
  auto get_meta(std::string_view name, Read&& read)
      -> tl::expected<typename std::invoke_result_t<Read, Statement&>::value_type, ClientError> {
    auto st = prepare("SELECT value FROM meta WHERE name = ?1");
    if (!st) return tl::unexpected(st.error());
    if (!st->bind_text(1, name)) return tl::unexpected(ClientError::io);
    const StepResult r = st->step();
    if (r == StepResult::done) return tl::unexpected(ClientError::corrupt);
    if (r != StepResult::row) return tl::unexpected(db_error());
    auto v = read(*st);
    if (!v) return tl::unexpected(ClientError::corrupt);
    return std::move(*v);
  }

  // --- contacts ---------------------------------------------------------------------------------
  tl::expected<std::optional<ContactState>, ClientError> load_contact(const std::string& name) {
    auto plain = load_sealed(
        "SELECT state FROM contacts WHERE username = ?1",
        [&](Statement& st) { return st.bind_text(1, name); }, contact_aad(name));
    if (!plain) return tl::unexpected(plain.error());
    if (!*plain) return std::optional<ContactState>{};
    auto c = decode_contact((*plain)->view());
    if (!c) return tl::unexpected(ClientError::corrupt);
    return std::optional<ContactState>{std::move(*c)};
  }

  tl::expected<void, ClientError> save_contact(const std::string& name, const ContactState& c) {
    crypto::SecretBuffer plain = encode_contact(c);
    const Bytes sealed = seal_value(contact_aad(name), plain.view());
    return run(
        "INSERT INTO contacts (username, state) VALUES (?1, ?2) "
        "ON CONFLICT (username) DO UPDATE SET state = excluded.state",
        [&](Statement& st) { return st.bind_text(1, name) && st.bind_blob(2, sealed); });
  }

  Policy policy() const {
    // Validated on create, save_settings and load.
    return parse_policy(settings.trust_policy).value_or(Policy::on_first_use);
  }

  // Sets up a freshly created file: pragmas already applied; writes schema, meta and settings.
  tl::expected<void, ClientError> initialise(const AccountSettings& s, bool with_passphrase,
                                             const std::array<std::uint8_t, 16>& salt,
                                             const crypto::Argon2Params& params) {
    return atomically<void>([&]() -> tl::expected<void, ClientError> {
      if (!db->exec(kSchema) || !db->exec(kSchema2) || !db->exec(kSchemaMessageState)) {
        return tl::unexpected(db_error());
      }
      if (auto r = put_meta("format", [](Statement& st) { return st.bind_int(2, kFormat); }); !r) {
        return r;
      }
      const std::string_view kdf = with_passphrase ? kKdfArgon2id : kKdfKeyFile;
      if (auto r = put_meta("kdf", [&](Statement& st) { return st.bind_text(2, kdf); }); !r) {
        return r;
      }
      if (with_passphrase) {
        if (auto r = put_meta("kdf_salt", [&](Statement& st) { return st.bind_blob(2, salt); });
            !r) {
          return r;
        }
        if (auto r = put_meta("kdf_ops",
                              [&](Statement& st) {
                                return st.bind_int(2, static_cast<std::int64_t>(params.ops_limit));
                              });
            !r) {
          return r;
        }
        if (auto r = put_meta("kdf_mem",
                              [&](Statement& st) {
                                return st.bind_int(2, static_cast<std::int64_t>(params.mem_limit));
                              });
            !r) {
          return r;
        }
      }
      const Bytes check = seal_value(key_check_aad(username), as_bytes(kKeyCheckPlaintext));
      if (auto r = put_meta("key_check", [&](Statement& st) { return st.bind_blob(2, check); });
          !r) {
        return r;
      }
      return write_settings(s);
    });
  }
};

namespace {

// Pragmas for every connection. journal_mode is persistent in the file; the others are not.
// secure_delete zeroes deleted content, so a removed prekey or an old session record does not
// linger in free pages (sealed, but forward secrecy wants it gone).
tl::expected<void, ClientError> configure(detail::Connection& db) {
  auto fail = [&db] {
    return tl::unexpected(db.last_error_is_environmental() ? ClientError::io
                                                           : ClientError::corrupt);
  };
  if (!db.exec("PRAGMA busy_timeout = " + std::to_string(kBusyTimeoutMs))) return fail();
  {
    auto st = db.prepare("PRAGMA journal_mode = WAL");
    if (!st) return fail();
    if (st->step() != StepResult::row) return fail();
    auto mode = st->column_text(0);
    if (!mode || lowercase(*mode) != "wal") return tl::unexpected(ClientError::io);
  }
  if (!db.exec("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")) {
    return fail();
  }
  return {};
}

// Removes what a failed create() made.
struct CreateCleanup {
  std::vector<std::filesystem::path> paths;
  bool armed = true;
  ~CreateCleanup() {
    if (!armed) return;
    std::error_code ec;
    for (const auto& p : paths) std::filesystem::remove(p, ec);
  }
};

}  // namespace

ClientStore::ClientStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ClientStore::~ClientStore() = default;

tl::expected<std::unique_ptr<ClientStore>, ClientError> ClientStore::create(
    const std::filesystem::path& dir, const AccountSettings& settings,
    std::optional<std::string> passphrase) {
  PassphraseWiper wiper{passphrase};
  if (!valid_username(settings.username) || !parse_policy(settings.trust_policy) ||
      settings.auth_key.empty() || (passphrase && passphrase->empty())) {
    return tl::unexpected(ClientError::invalid_argument);
  }
  if (auto r = ensure_dir(dir); !r) return tl::unexpected(r.error());

  const auto path = db_path(dir, settings.username);
  CreateCleanup cleanup;
  {
    Fd f;
    if (auto r = create_private_file(path, f); !r) return tl::unexpected(r.error());
  }
  // WAL and shared-memory files are created by SQLite with the database file's permissions.
  cleanup.paths = {path, path.string() + "-wal", path.string() + "-shm",
                   path.string() + "-journal"};

  Key key;
  std::array<std::uint8_t, crypto::kArgon2SaltSize> salt{};
  const crypto::Argon2Params params = crypto::Argon2Params::for_new_secret();
  crypto::SystemRng rng;
  if (passphrase) {
    rng.fill(salt);
    auto derived = crypto::argon2id_derive(*passphrase, salt, params);
    if (!derived) return tl::unexpected(ClientError::io);
    key.bytes = std::move(*derived);
  } else {
    key.bytes = rng.secret<kKeySize>();
    if (auto r = write_key_file(key_path(dir, settings.username), key.bytes); !r) {
      return tl::unexpected(r.error());
    }
    cleanup.paths.push_back(key_path(dir, settings.username));
  }

  auto db = detail::Connection::open(path);
  if (!db) return tl::unexpected(ClientError::io);
  if (auto r = configure(*db); !r) return tl::unexpected(r.error());

  auto impl = std::make_unique<Impl>(settings.username, std::move(db), std::move(key));
  {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return tl::unexpected(ClientError::io);
    impl->file_identity = std::to_string(static_cast<std::uint64_t>(st.st_dev)) + ":" +
                          std::to_string(static_cast<std::uint64_t>(st.st_ino));
  }
  if (auto r = impl->initialise(settings, passphrase.has_value(), salt, params); !r) {
    return tl::unexpected(r.error());
  }
  impl->settings = settings.clone();
  cleanup.armed = false;
  return std::unique_ptr<ClientStore>(new ClientStore(std::move(impl)));
}

tl::expected<std::unique_ptr<ClientStore::Impl>, ClientError> ClientStore::open_impl(
    const std::filesystem::path& dir, const std::string& username_in,
    std::optional<std::string>& passphrase, bool read_only) {
  const std::string username = lowercase(username_in);
  if (!valid_username(username)) return tl::unexpected(ClientError::invalid_argument);
  const auto path = db_path(dir, username);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return tl::unexpected(errno == ENOENT ? ClientError::not_found : ClientError::io);
  }
  if (!S_ISREG(st.st_mode)) return tl::unexpected(ClientError::io);

  auto db = detail::Connection::open(path, read_only);
  if (!db) return tl::unexpected(ClientError::io);
  if (read_only) {
    if (!db->exec("PRAGMA busy_timeout = " + std::to_string(kBusyTimeoutMs))) {
      return tl::unexpected(ClientError::io);
    }
  } else if (auto r = configure(*db); !r) {
    return tl::unexpected(r.error());
  }
  auto impl = std::make_unique<Impl>(username, std::move(db), Key{});
  impl->file_identity = std::to_string(static_cast<std::uint64_t>(st.st_dev)) + ":" +
                        std::to_string(static_cast<std::uint64_t>(st.st_ino));

  auto format = impl->get_meta("format", [](Statement& s) { return s.column_int(0); });
  if (!format) return tl::unexpected(format.error());
  if (*format != kFormat && *format != kFormat1) return tl::unexpected(ClientError::corrupt);
  auto kdf = impl->get_meta("kdf", [](Statement& s) { return s.column_text(0); });
  if (!kdf) return tl::unexpected(kdf.error());

  if (*kdf == kKdfArgon2id) {
    if (!passphrase) return tl::unexpected(ClientError::wrong_passphrase);
    auto salt_bytes = impl->get_meta("kdf_salt", [](Statement& s) { return s.column_blob(0); });
    auto ops = impl->get_meta("kdf_ops", [](Statement& s) { return s.column_u64(0); });
    auto mem = impl->get_meta("kdf_mem", [](Statement& s) { return s.column_u64(0); });
    if (!salt_bytes) return tl::unexpected(salt_bytes.error());
    if (!ops) return tl::unexpected(ops.error());
    if (!mem) return tl::unexpected(mem.error());
    // Bounded: a damaged meta table must not make open() allocate without limit.
    if (salt_bytes->size() != crypto::kArgon2SaltSize ||
        !crypto::argon2_params_in_bounds(*ops, *mem)) {
      return tl::unexpected(ClientError::corrupt);
    }
    std::array<std::uint8_t, crypto::kArgon2SaltSize> salt{};
    std::copy(salt_bytes->begin(), salt_bytes->end(), salt.begin());
    auto derived = crypto::argon2id_derive(
        *passphrase, salt, {static_cast<unsigned long long>(*ops), static_cast<std::size_t>(*mem)});
    if (!derived) return tl::unexpected(ClientError::io);
    impl->key.bytes = std::move(*derived);
  } else if (*kdf == kKdfKeyFile) {
    // This store is protected by its key file; a passphrase would be a misunderstanding.
    if (passphrase) return tl::unexpected(ClientError::wrong_passphrase);
    auto k = read_key_file(key_path(dir, username));
    if (!k) return tl::unexpected(k.error());
    impl->key.bytes = std::move(*k);
  } else {
    return tl::unexpected(ClientError::corrupt);
  }

  auto check = impl->get_meta("key_check", [](Statement& s) { return s.column_blob(0); });
  if (!check) return tl::unexpected(check.error());
  if (check->size() < detail::kSealOverhead) return tl::unexpected(ClientError::corrupt);
  auto opened = open_sealed(impl->key.bytes, key_check_aad(username), *check);
  if (!opened || !crypto::constant_time_equal(opened->view(), as_bytes(kKeyCheckPlaintext))) {
    return tl::unexpected(ClientError::wrong_passphrase);
  }

  auto settings = impl->read_settings();
  if (!settings) return tl::unexpected(settings.error());
  impl->settings = std::move(*settings);
  if (*format == kFormat1 && !read_only) {
    Impl& i = *impl;
    auto migrated = i.atomically<void>([&i]() -> tl::expected<void, ClientError> {
      // Format 1 sessions had no `active` column (every stored session was current), and its
      // processed envelopes no content hash.
      if (!i.db->exec("ALTER TABLE sessions ADD COLUMN active INTEGER NOT NULL DEFAULT 1") ||
          !i.db->exec("ALTER TABLE envelopes ADD COLUMN content_hash BLOB") ||
          !i.db->exec(kSchema2)) {
        return tl::unexpected(i.db_error());
      }
      return i.run("UPDATE meta SET value = ?1 WHERE name = 'format'",
                   [](Statement& q) { return q.bind_int(1, kFormat); });
    });
    if (!migrated) return tl::unexpected(migrated.error());
  }
  if (!read_only && !impl->db->exec(kSchemaMessageState)) return tl::unexpected(impl->db_error());
  return impl;
}

tl::expected<std::unique_ptr<ClientStore>, ClientError> ClientStore::open(
    const std::filesystem::path& dir, const std::string& username,
    std::optional<std::string> passphrase) {
  PassphraseWiper wiper{passphrase};
  auto impl = open_impl(dir, username, passphrase, false);
  if (!impl) return tl::unexpected(impl.error());
  return std::unique_ptr<ClientStore>(new ClientStore(std::move(*impl)));
}

tl::expected<std::unique_ptr<ClientStore>, ClientError> ClientStore::open_read_only(
    const std::filesystem::path& dir, const std::string& username,
    std::optional<std::string> passphrase) {
  PassphraseWiper wiper{passphrase};
  auto impl = open_impl(dir, username, passphrase, true);
  if (!impl) return tl::unexpected(impl.error());
  return std::unique_ptr<ClientStore>(new ClientStore(std::move(*impl)));
}

std::vector<std::string> ClientStore::accounts(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto& p = it->path();
    if (p.extension() != ".db" || !it->is_regular_file(ec)) continue;
    std::string name = p.stem().string();
    if (valid_username(name)) out.push_back(std::move(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

const AccountSettings& ClientStore::settings() const {
  std::lock_guard lock(impl_->mu);
  return impl_->settings;
}

tl::expected<void, ClientError> ClientStore::save_settings(const AccountSettings& settings) {
  std::lock_guard lock(impl_->mu);
  if (settings.username != impl_->username || !parse_policy(settings.trust_policy) ||
      settings.auth_key.empty()) {
    return tl::unexpected(ClientError::invalid_argument);
  }
  if (auto r = impl_->write_settings(settings); !r) return r;
  if (impl_->depth > 0) impl_->settings_dirty = true;
  impl_->settings = settings.clone();
  return {};
}

tl::expected<bool, ClientError> ClientStore::transaction(const std::function<bool()>& fn) {
  // The lock is held for the whole transaction: another thread's writes must not join it.
  std::lock_guard lock(impl_->mu);
  if (!impl_->begin()) return tl::unexpected(impl_->db_error());
  bool keep = false;
  try {
    keep = fn();
  } catch (...) {
    (void)impl_->finish(false);
    throw;
  }
  if (!keep) {
    (void)impl_->finish(false);
    return false;
  }
  if (!impl_->finish(true)) return tl::unexpected(ClientError::io);
  return true;
}

// --- identity ----------------------------------------------------------------------------------

protocol::IdentityKeyPair ClientStore::identity_key_pair() const {
  std::lock_guard lock(impl_->mu);
  return impl_->settings.identity.clone();
}

protocol::RegistrationId ClientStore::local_registration_id() const {
  std::lock_guard lock(impl_->mu);
  return impl_->settings.registration_id;
}

// --- SessionStore ------------------------------------------------------------------------------

tl::expected<std::optional<protocol::SessionRecord>, protocol::Error> ClientStore::load_session(
    const protocol::Address& address) {
  std::lock_guard lock(impl_->mu);
  auto plain = impl_->load_sealed(
      "SELECT record FROM sessions WHERE username = ?1 AND device_id = ?2",
      [&](Statement& st) {
        return st.bind_text(1, address.name) && st.bind_int(2, address.device.value);
      },
      session_aad(address));
  if (!plain) return tl::unexpected(to_protocol(plain.error()));
  if (!*plain) return std::optional<protocol::SessionRecord>{};
  auto record = protocol::SessionRecord::decode((*plain)->view());
  if (!record) return tl::unexpected(protocol::Error::store_failure);
  return std::optional<protocol::SessionRecord>{std::move(*record)};
}

tl::expected<void, protocol::Error> ClientStore::save_session(
    const protocol::Address& address, const protocol::SessionRecord& record) {
  std::lock_guard lock(impl_->mu);
  crypto::SecretBuffer plain = record.encode();
  const Bytes sealed = impl_->seal_value(session_aad(address), plain.view());
  auto r = impl_->run(
      "INSERT INTO sessions (username, device_id, record, active) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT (username, device_id) DO UPDATE SET record = excluded.record, "
      "active = excluded.active",
      [&](Statement& st) {
        return st.bind_text(1, address.name) && st.bind_int(2, address.device.value) &&
               st.bind_blob(3, sealed) && st.bind_int(4, record.has_current() ? 1 : 0);
      });
  if (!r) return tl::unexpected(to_protocol(r.error()));
  return {};
}

tl::expected<std::vector<std::uint32_t>, ClientError> ClientStore::session_devices(
    const std::string& username) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare(
      "SELECT device_id FROM sessions WHERE username = ?1 AND active = 1 ORDER BY device_id");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, username)) return tl::unexpected(ClientError::io);
  std::vector<std::uint32_t> out;
  for (;;) {
    const StepResult r = st->step();
    if (r == StepResult::done) break;
    if (r != StepResult::row) return tl::unexpected(impl_->db_error());
    auto d = st->column_u32(0);
    if (!d) return tl::unexpected(ClientError::corrupt);
    out.push_back(*d);
  }
  return out;
}

tl::expected<void, ClientError> ClientStore::delete_session(const protocol::Address& address) {
  std::lock_guard lock(impl_->mu);
  return impl_->run("DELETE FROM sessions WHERE username = ?1 AND device_id = ?2",
                    [&](Statement& st) {
                      return st.bind_text(1, address.name) && st.bind_int(2, address.device.value);
                    });
}

// --- PreKeyStore -------------------------------------------------------------------------------

tl::expected<std::optional<protocol::PreKeyRecord>, protocol::Error> ClientStore::load_pre_key(
    protocol::PreKeyId id) {
  std::lock_guard lock(impl_->mu);
  auto plain = impl_->load_sealed(
      "SELECT record FROM pre_keys WHERE id = ?1",
      [&](Statement& st) { return st.bind_int(1, id.value); }, pre_key_aad(id));
  if (!plain) return tl::unexpected(to_protocol(plain.error()));
  if (!*plain) return std::optional<protocol::PreKeyRecord>{};
  auto record = decode_pre_key(id, (*plain)->view());
  if (!record) return tl::unexpected(protocol::Error::store_failure);
  return std::optional<protocol::PreKeyRecord>{std::move(*record)};
}

tl::expected<void, protocol::Error> ClientStore::save_pre_key(
    const protocol::PreKeyRecord& record) {
  std::lock_guard lock(impl_->mu);
  crypto::SecretBuffer plain = encode_pre_key(record);
  const Bytes sealed = impl_->seal_value(pre_key_aad(record.id), plain.view());
  auto r = impl_->run(
      "INSERT INTO pre_keys (id, record) VALUES (?1, ?2) "
      "ON CONFLICT (id) DO UPDATE SET record = excluded.record",
      [&](Statement& st) { return st.bind_int(1, record.id.value) && st.bind_blob(2, sealed); });
  if (!r) return tl::unexpected(to_protocol(r.error()));
  return {};
}

tl::expected<void, protocol::Error> ClientStore::remove_pre_key(protocol::PreKeyId id) {
  std::lock_guard lock(impl_->mu);
  auto r = impl_->run("DELETE FROM pre_keys WHERE id = ?1",
                      [&](Statement& st) { return st.bind_int(1, id.value); });
  if (!r) return tl::unexpected(to_protocol(r.error()));
  return {};
}

tl::expected<std::size_t, ClientError> ClientStore::pre_key_count() {
  std::lock_guard lock(impl_->mu);
  return impl_->count("SELECT COUNT(*) FROM pre_keys", [](Statement&) { return true; });
}

tl::expected<std::vector<std::uint32_t>, ClientError> ClientStore::pre_key_ids() {
  std::lock_guard lock(impl_->mu);
  return impl_->ids("SELECT id FROM pre_keys ORDER BY id");
}

tl::expected<std::vector<std::uint32_t>, ClientError> ClientStore::signed_pre_key_ids() {
  std::lock_guard lock(impl_->mu);
  return impl_->ids("SELECT id FROM signed_pre_keys ORDER BY id");
}

tl::expected<void, ClientError> ClientStore::remove_signed_pre_key(protocol::SignedPreKeyId id) {
  std::lock_guard lock(impl_->mu);
  return impl_->run("DELETE FROM signed_pre_keys WHERE id = ?1",
                    [&](Statement& st) { return st.bind_int(1, id.value); });
}

// --- SignedPreKeyStore -------------------------------------------------------------------------

tl::expected<std::optional<protocol::SignedPreKeyRecord>, protocol::Error>
ClientStore::load_signed_pre_key(protocol::SignedPreKeyId id) {
  std::lock_guard lock(impl_->mu);
  auto plain = impl_->load_sealed(
      "SELECT record FROM signed_pre_keys WHERE id = ?1",
      [&](Statement& st) { return st.bind_int(1, id.value); }, signed_pre_key_aad(id));
  if (!plain) return tl::unexpected(to_protocol(plain.error()));
  if (!*plain) return std::optional<protocol::SignedPreKeyRecord>{};
  auto record = decode_signed_pre_key(id, (*plain)->view());
  if (!record) return tl::unexpected(protocol::Error::store_failure);
  return std::optional<protocol::SignedPreKeyRecord>{std::move(*record)};
}

tl::expected<void, protocol::Error> ClientStore::save_signed_pre_key(
    const protocol::SignedPreKeyRecord& record) {
  std::lock_guard lock(impl_->mu);
  crypto::SecretBuffer plain = encode_signed_pre_key(record);
  const Bytes sealed = impl_->seal_value(signed_pre_key_aad(record.id), plain.view());
  auto r = impl_->run(
      "INSERT INTO signed_pre_keys (id, record) VALUES (?1, ?2) "
      "ON CONFLICT (id) DO UPDATE SET record = excluded.record",
      [&](Statement& st) { return st.bind_int(1, record.id.value) && st.bind_blob(2, sealed); });
  if (!r) return tl::unexpected(to_protocol(r.error()));
  return {};
}

// --- SenderKeyStore ----------------------------------------------------------------------------

tl::expected<std::optional<protocol::SenderKeyRecord>, protocol::Error>
ClientStore::load_sender_key(const protocol::SenderKeyName& name) {
  std::lock_guard lock(impl_->mu);
  auto plain = impl_->load_sealed(
      "SELECT record FROM sender_keys "
      "WHERE distribution_id = ?1 AND sender = ?2 AND sender_device = ?3",
      [&](Statement& st) {
        return st.bind_text(1, name.distribution_id) && st.bind_text(2, name.sender.name) &&
               st.bind_int(3, name.sender.device.value);
      },
      sender_key_aad(name));
  if (!plain) return tl::unexpected(to_protocol(plain.error()));
  if (!*plain) return std::optional<protocol::SenderKeyRecord>{};
  auto record = protocol::SenderKeyRecord::decode((*plain)->view());
  if (!record) return tl::unexpected(protocol::Error::store_failure);
  return std::optional<protocol::SenderKeyRecord>{std::move(*record)};
}

tl::expected<void, protocol::Error> ClientStore::save_sender_key(
    const protocol::SenderKeyName& name, const protocol::SenderKeyRecord& record) {
  std::lock_guard lock(impl_->mu);
  crypto::SecretBuffer plain = record.encode();
  const Bytes sealed = impl_->seal_value(sender_key_aad(name), plain.view());
  auto r = impl_->run(
      "INSERT INTO sender_keys (distribution_id, sender, sender_device, record) "
      "VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT (distribution_id, sender, sender_device) DO UPDATE SET record = excluded.record",
      [&](Statement& st) {
        return st.bind_text(1, name.distribution_id) && st.bind_text(2, name.sender.name) &&
               st.bind_int(3, name.sender.device.value) && st.bind_blob(4, sealed);
      });
  if (!r) return tl::unexpected(to_protocol(r.error()));
  return {};
}

// --- contacts ----------------------------------------------------------------------------------

tl::expected<std::vector<Contact>, ClientError> ClientStore::contacts() {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare("SELECT username, state FROM contacts ORDER BY username");
  if (!st) return tl::unexpected(st.error());
  std::vector<Contact> out;
  for (;;) {
    const StepResult r = st->step();
    if (r == StepResult::done) break;
    if (r != StepResult::row) return tl::unexpected(impl_->db_error());
    auto name = st->column_text(0);
    auto blob = st->column_blob(1);
    if (!name || !blob) return tl::unexpected(ClientError::corrupt);
    auto plain = open_sealed(impl_->key.bytes, contact_aad(*name), *blob);
    if (!plain) return tl::unexpected(ClientError::corrupt);
    auto state = decode_contact(plain->view());
    if (!state) return tl::unexpected(ClientError::corrupt);
    out.push_back(
        Contact{std::move(*name), state->key, state->accepted, state->verified, state->changed_at});
  }
  return out;
}

tl::expected<std::optional<Contact>, ClientError> ClientStore::load_contact(
    const std::string& username) {
  std::lock_guard lock(impl_->mu);
  auto c = impl_->load_contact(username);
  if (!c) return tl::unexpected(c.error());
  if (!*c) return std::optional<Contact>{};
  return Contact{username, (*c)->key, (*c)->accepted, (*c)->verified, (*c)->changed_at};
}

tl::expected<void, ClientError> ClientStore::save_contact(const Contact& contact) {
  std::lock_guard lock(impl_->mu);
  if (!valid_username(contact.username)) return tl::unexpected(ClientError::invalid_argument);
  return impl_->save_contact(contact.username,
                             ContactState{contact.identity_key, contact.accepted, contact.verified,
                                          contact.identity_changed_at});
}

// --- history and dedup -------------------------------------------------------------------------

tl::expected<bool, ClientError> ClientStore::seen_envelope(const std::string& envelope_id) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare("SELECT 1 FROM envelopes WHERE envelope_id = ?1");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, envelope_id)) return tl::unexpected(ClientError::io);
  const StepResult r = st->step();
  if (r == StepResult::error) return tl::unexpected(impl_->db_error());
  return r == StepResult::row;
}

tl::expected<bool, ClientError> ClientStore::seen_content(ByteView content_hash) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare("SELECT 1 FROM envelopes WHERE content_hash = ?1 LIMIT 1");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_blob(1, content_hash)) return tl::unexpected(ClientError::io);
  const StepResult r = st->step();
  if (r == StepResult::error) return tl::unexpected(impl_->db_error());
  return r == StepResult::row;
}

tl::expected<void, ClientError> ClientStore::mark_envelope(const std::string& envelope_id,
                                                           ByteView content_hash) {
  std::lock_guard lock(impl_->mu);
  return impl_->atomically<void>([&]() -> tl::expected<void, ClientError> {
    auto r = impl_->run(
        "INSERT INTO envelopes (envelope_id, content_hash) VALUES (?1, ?2) "
        "ON CONFLICT (envelope_id) DO NOTHING",
        [&](Statement& st) {
          return st.bind_text(1, envelope_id) &&
                 (content_hash.empty() ? st.bind_null(2) : st.bind_blob(2, content_hash));
        });
    if (!r) return r;
    if (impl_->db->changes() == 0) return {};
    // seq grows by one per insert (AUTOINCREMENT), so this keeps the newest kMaxSeenEnvelopes.
    const std::int64_t cutoff = impl_->db->last_insert_rowid() - kMaxSeenEnvelopes;
    if (cutoff <= 0) return {};
    return impl_->run("DELETE FROM envelopes WHERE seq <= ?1",
                      [&](Statement& st) { return st.bind_int(1, cutoff); });
  });
}

tl::expected<void, ClientError> ClientStore::add_message(const StoredMessage& m) {
  std::lock_guard lock(impl_->mu);
  if (m.timestamp > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return tl::unexpected(ClientError::invalid_argument);
  }
  const Bytes sealed = impl_->seal_value(
      message_aad(m.envelope_id, m.peer, m.sender, m.sender_device, m.timestamp, m.outgoing),
      as_bytes(m.body));
  return impl_->run(
      "INSERT INTO messages "
      "(envelope_id, peer, sender, sender_device, timestamp, outgoing, body) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (peer, envelope_id) DO NOTHING",
      [&](Statement& st) {
        return st.bind_text(1, m.envelope_id) && st.bind_text(2, m.peer) &&
               st.bind_text(3, m.sender) && st.bind_int(4, m.sender_device) &&
               st.bind_int(5, static_cast<std::int64_t>(m.timestamp)) &&
               st.bind_int(6, m.outgoing ? 1 : 0) && st.bind_blob(7, sealed);
      });
}

tl::expected<bool, ClientError> ClientStore::has_message(const std::string& peer,
                                                         const std::string& sender,
                                                         std::uint32_t sender_device,
                                                         std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return false;
  }
  auto st = impl_->prepare(
      "SELECT 1 FROM messages WHERE peer = ?1 AND timestamp = ?2 AND sender = ?3 AND "
      "sender_device = ?4 AND substr(envelope_id, 1, 7) != 'notice-' LIMIT 1");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, peer) || !st->bind_int(2, static_cast<std::int64_t>(timestamp)) ||
      !st->bind_text(3, sender) || !st->bind_int(4, sender_device)) {
    return tl::unexpected(ClientError::io);
  }
  const StepResult r = st->step();
  if (r == StepResult::error) return tl::unexpected(impl_->db_error());
  return r == StepResult::row;
}

namespace {

// Reads one history row (columns: seq, envelope_id, peer, sender, sender_device, timestamp,
// outgoing, body). A row whose columns or sealed body do not read back becomes a message that
// says so: the rest of the conversation stays readable.
StoredMessage read_message_row(const Statement& st, const crypto::Secret<32>& key) {
  auto seq = st.column_int(0);
  auto envelope_id = st.column_text(1);
  auto peer = st.column_text(2);
  auto sender = st.column_text(3);
  auto sender_device = st.column_u32(4);
  auto timestamp = st.column_u64(5);
  auto outgoing = st.column_int(6);
  auto blob = st.column_blob(7);
  StoredMessage m;
  m.envelope_id = envelope_id.value_or("damaged-" + std::to_string(seq.value_or(0)));
  m.peer = peer.value_or(std::string());
  m.sender = sender.value_or(std::string());
  m.sender_device = sender_device.value_or(0);
  m.timestamp = timestamp.value_or(0);
  m.outgoing = outgoing.value_or(0) == 1;
  std::optional<crypto::SecretBuffer> body;
  if (envelope_id && peer && sender && sender_device && timestamp && outgoing && blob &&
      (*outgoing == 0 || *outgoing == 1)) {
    body = open_sealed(
        key, message_aad(*envelope_id, *peer, *sender, *sender_device, *timestamp, *outgoing == 1),
        *blob);
  }
  if (body) {
    m.body.assign(reinterpret_cast<const char*>(body->data()), body->size());
  } else {
    m.body = std::string(kDamagedMessageBody);
  }
  return m;
}

constexpr const char* kMessageColumns =
    "seq, envelope_id, peer, sender, sender_device, timestamp, outgoing, body";

}  // namespace

tl::expected<std::vector<StoredMessage>, ClientError> ClientStore::messages(const std::string& peer,
                                                                            std::size_t limit) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare(std::string("SELECT ") + kMessageColumns +
                           " FROM messages WHERE peer = ?1 ORDER BY timestamp DESC, seq DESC "
                           "LIMIT ?2");
  if (!st) return tl::unexpected(st.error());
  const std::int64_t sql_limit =
      limit == 0 ? -1
                 : static_cast<std::int64_t>(std::min<std::size_t>(
                       limit, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())));
  if (!st->bind_text(1, peer) || !st->bind_int(2, sql_limit)) {
    return tl::unexpected(ClientError::io);
  }
  std::vector<StoredMessage> out;
  for (;;) {
    const StepResult r = st->step();
    if (r == StepResult::done) break;
    if (r != StepResult::row) return tl::unexpected(impl_->db_error());
    StoredMessage m = read_message_row(*st, impl_->key.bytes);
    m.peer = peer;
    out.push_back(std::move(m));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

tl::expected<void, ClientError> ClientStore::for_each_message(
    const std::function<bool(const StoredMessage&)>& fn) {
  // A page at a time, so the store's lock is not held while `fn` runs.
  std::int64_t after = 0;
  constexpr std::int64_t kPage = 256;
  for (;;) {
    std::vector<StoredMessage> page;
    {
      std::lock_guard lock(impl_->mu);
      auto st = impl_->prepare(std::string("SELECT ") + kMessageColumns +
                               " FROM messages WHERE seq > ?1 ORDER BY seq LIMIT ?2");
      if (!st) return tl::unexpected(st.error());
      if (!st->bind_int(1, after) || !st->bind_int(2, kPage)) {
        return tl::unexpected(ClientError::io);
      }
      for (;;) {
        const StepResult r = st->step();
        if (r == StepResult::done) break;
        if (r != StepResult::row) return tl::unexpected(impl_->db_error());
        after = st->column_int(0).value_or(after + 1);
        page.push_back(read_message_row(*st, impl_->key.bytes));
      }
    }
    for (const auto& m : page) {
      if (!fn(m)) return {};
    }
    if (page.size() < static_cast<std::size_t>(kPage)) return {};
  }
}

tl::expected<std::size_t, ClientError> ClientStore::message_count() {
  std::lock_guard lock(impl_->mu);
  return impl_->count("SELECT COUNT(*) FROM messages", [](Statement&) { return true; });
}

// --- the everyday message types ----------------------------------------------------------------

namespace {

constexpr std::uint64_t kMaxSqlInt =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

}  // namespace

tl::expected<std::optional<StoredMessage>, ClientError> ClientStore::find_message(
    const std::string& peer, const std::string& author, std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > kMaxSqlInt) return std::optional<StoredMessage>{};
  auto st = impl_->prepare(std::string("SELECT ") + kMessageColumns +
                           " FROM messages WHERE peer = ?1 AND sender = ?2 AND timestamp = ?3 AND "
                           "substr(envelope_id, 1, 7) != 'notice-' ORDER BY seq LIMIT 1");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, peer) || !st->bind_text(2, author) ||
      !st->bind_int(3, static_cast<std::int64_t>(timestamp))) {
    return tl::unexpected(ClientError::io);
  }
  const StepResult r = st->step();
  if (r == StepResult::done) return std::optional<StoredMessage>{};
  if (r != StepResult::row) return tl::unexpected(impl_->db_error());
  return std::optional<StoredMessage>{read_message_row(*st, impl_->key.bytes)};
}

tl::expected<std::optional<StoredMessage>, ClientError> ClientStore::find_message_by_id(
    const std::string& envelope_id) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare(std::string("SELECT ") + kMessageColumns +
                           " FROM messages WHERE envelope_id = ?1 ORDER BY seq LIMIT 1");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, envelope_id)) return tl::unexpected(ClientError::io);
  const StepResult r = st->step();
  if (r == StepResult::done) return std::optional<StoredMessage>{};
  if (r != StepResult::row) return tl::unexpected(impl_->db_error());
  return std::optional<StoredMessage>{read_message_row(*st, impl_->key.bytes)};
}

tl::expected<std::optional<StoredMessage>, ClientError> ClientStore::find_message_by_ref(
    const std::string& author, std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > kMaxSqlInt) return std::optional<StoredMessage>{};
  auto st = impl_->prepare(std::string("SELECT ") + kMessageColumns +
                           " FROM messages WHERE sender = ?1 AND timestamp = ?2 AND "
                           "substr(envelope_id, 1, 7) != 'notice-' ORDER BY seq LIMIT 1");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, author) || !st->bind_int(2, static_cast<std::int64_t>(timestamp))) {
    return tl::unexpected(ClientError::io);
  }
  const StepResult r = st->step();
  if (r == StepResult::done) return std::optional<StoredMessage>{};
  if (r != StepResult::row) return tl::unexpected(impl_->db_error());
  return std::optional<StoredMessage>{read_message_row(*st, impl_->key.bytes)};
}

tl::expected<std::vector<StoredMessage>, ClientError> ClientStore::find_messages_at(
    std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  std::vector<StoredMessage> out;
  if (timestamp > kMaxSqlInt) return out;
  auto st = impl_->prepare(std::string("SELECT ") + kMessageColumns +
                           " FROM messages WHERE timestamp = ?1 AND "
                           "substr(envelope_id, 1, 7) != 'notice-' ORDER BY seq LIMIT 2");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_int(1, static_cast<std::int64_t>(timestamp))) {
    return tl::unexpected(ClientError::io);
  }
  for (;;) {
    const StepResult r = st->step();
    if (r == StepResult::done) break;
    if (r != StepResult::row) return tl::unexpected(impl_->db_error());
    out.push_back(read_message_row(*st, impl_->key.bytes));
  }
  return out;
}

tl::expected<void, ClientError> ClientStore::replace_message_body(const std::string& peer,
                                                                  const std::string& author,
                                                                  std::uint64_t timestamp,
                                                                  const std::string& body) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > kMaxSqlInt) return tl::unexpected(ClientError::invalid_argument);
  return impl_->atomically<void>([&]() -> tl::expected<void, ClientError> {
    struct Row {
      std::int64_t seq;
      std::string envelope_id;
      std::uint32_t device;
      bool outgoing;
    };
    std::vector<Row> rows;
    {
      auto st = impl_->prepare(
          "SELECT seq, envelope_id, sender_device, outgoing FROM messages WHERE peer = ?1 AND "
          "sender = ?2 AND timestamp = ?3 AND substr(envelope_id, 1, 7) != 'notice-'");
      if (!st) return tl::unexpected(st.error());
      if (!st->bind_text(1, peer) || !st->bind_text(2, author) ||
          !st->bind_int(3, static_cast<std::int64_t>(timestamp))) {
        return tl::unexpected(ClientError::io);
      }
      for (;;) {
        const StepResult r = st->step();
        if (r == StepResult::done) break;
        if (r != StepResult::row) return tl::unexpected(impl_->db_error());
        auto seq = st->column_int(0);
        auto id = st->column_text(1);
        auto device = st->column_u32(2);
        auto outgoing = st->column_int(3);
        if (!seq || !id || !device || !outgoing) return tl::unexpected(ClientError::corrupt);
        rows.push_back(Row{*seq, *id, *device, *outgoing == 1});
      }
    }
    for (const auto& row : rows) {
      const Bytes sealed = impl_->seal_value(
          message_aad(row.envelope_id, peer, author, row.device, timestamp, row.outgoing),
          as_bytes(body));
      auto r = impl_->run("UPDATE messages SET body = ?1 WHERE seq = ?2", [&](Statement& st) {
        return st.bind_blob(1, sealed) && st.bind_int(2, row.seq);
      });
      if (!r) return r;
    }
    return {};
  });
}

tl::expected<void, ClientError> ClientStore::delete_message(const std::string& peer,
                                                            const std::string& author,
                                                            std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > kMaxSqlInt) return {};
  return impl_->atomically<void>([&]() -> tl::expected<void, ClientError> {
    const auto bind = [&](Statement& st) {
      return st.bind_text(1, peer) && st.bind_text(2, author) &&
             st.bind_int(3, static_cast<std::int64_t>(timestamp));
    };
    auto r =
        impl_->run("DELETE FROM messages WHERE peer = ?1 AND sender = ?2 AND timestamp = ?3", bind);
    if (!r) return r;
    return impl_->run(
        "DELETE FROM message_state WHERE peer = ?1 AND author = ?2 AND timestamp = ?3", bind);
  });
}

tl::expected<void, ClientError> ClientStore::save_message_state(const std::string& peer,
                                                                const std::string& author,
                                                                std::uint64_t timestamp,
                                                                std::uint64_t expires_at,
                                                                ByteView record) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > kMaxSqlInt || expires_at > kMaxSqlInt) {
    return tl::unexpected(ClientError::invalid_argument);
  }
  const Bytes sealed = impl_->seal_value(message_state_aad(peer, author, timestamp), record);
  return impl_->run(
      "INSERT INTO message_state (peer, author, timestamp, expires_at, record) "
      "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (peer, author, timestamp) DO UPDATE SET "
      "expires_at = excluded.expires_at, record = excluded.record",
      [&](Statement& st) {
        return st.bind_text(1, peer) && st.bind_text(2, author) &&
               st.bind_int(3, static_cast<std::int64_t>(timestamp)) &&
               st.bind_int(4, static_cast<std::int64_t>(expires_at)) && st.bind_blob(5, sealed);
      });
}

tl::expected<std::optional<crypto::SecretBuffer>, ClientError> ClientStore::load_message_state(
    const std::string& peer, const std::string& author, std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > kMaxSqlInt) return std::optional<crypto::SecretBuffer>{};
  return impl_->load_sealed(
      "SELECT record FROM message_state WHERE peer = ?1 AND author = ?2 AND timestamp = ?3",
      [&](Statement& st) {
        return st.bind_text(1, peer) && st.bind_text(2, author) &&
               st.bind_int(3, static_cast<std::int64_t>(timestamp));
      },
      message_state_aad(peer, author, timestamp));
}

tl::expected<std::vector<MessageStateRow>, ClientError> ClientStore::message_states(
    const std::string& peer) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare(
      "SELECT author, timestamp, expires_at, record FROM message_state WHERE peer = ?1");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, peer)) return tl::unexpected(ClientError::io);
  std::vector<MessageStateRow> out;
  for (;;) {
    const StepResult r = st->step();
    if (r == StepResult::done) break;
    if (r != StepResult::row) return tl::unexpected(impl_->db_error());
    auto author = st->column_text(0);
    auto timestamp = st->column_u64(1);
    auto expires_at = st->column_u64(2);
    auto blob = st->column_blob(3);
    if (!author || !timestamp || !expires_at || !blob) continue;
    auto plain = open_sealed(impl_->key.bytes, message_state_aad(peer, *author, *timestamp), *blob);
    if (!plain) continue;  // a damaged state: the message is shown without it
    out.push_back(MessageStateRow{peer, *author, *timestamp, *expires_at, std::move(*plain)});
  }
  return out;
}

tl::expected<std::vector<MessageStateRow>, ClientError> ClientStore::expired_messages(
    std::uint64_t now_ms) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare(
      "SELECT peer, author, timestamp, expires_at FROM message_state WHERE expires_at > 0 AND "
      "expires_at <= ?1 ORDER BY expires_at");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_int(1, static_cast<std::int64_t>(std::min(now_ms, kMaxSqlInt)))) {
    return tl::unexpected(ClientError::io);
  }
  std::vector<MessageStateRow> out;
  for (;;) {
    const StepResult r = st->step();
    if (r == StepResult::done) break;
    if (r != StepResult::row) return tl::unexpected(impl_->db_error());
    auto peer = st->column_text(0);
    auto author = st->column_text(1);
    auto timestamp = st->column_u64(2);
    auto expires_at = st->column_u64(3);
    if (!peer || !author || !timestamp || !expires_at) return tl::unexpected(ClientError::corrupt);
    out.push_back(
        MessageStateRow{*peer, *author, *timestamp, *expires_at, crypto::SecretBuffer(0)});
  }
  return out;
}

tl::expected<std::uint64_t, ClientError> ClientStore::next_expiry() {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare("SELECT MIN(expires_at) FROM message_state WHERE expires_at > 0");
  if (!st) return tl::unexpected(st.error());
  if (st->step() != StepResult::row) return tl::unexpected(impl_->db_error());
  return st->column_u64(0).value_or(0);
}

// --- held messages -----------------------------------------------------------------------------

tl::expected<void, ClientError> ClientStore::hold_message(const StoredMessage& m) {
  std::lock_guard lock(impl_->mu);
  return impl_->atomically<void>([&]() -> tl::expected<void, ClientError> {
    // The row's sequence number is part of its associated data, so the row is made first.
    auto r = impl_->run("INSERT INTO held (peer, record) VALUES (?1, x'')",
                        [&](Statement& st) { return st.bind_text(1, m.peer); });
    if (!r) return r;
    const std::int64_t seq = impl_->db->last_insert_rowid();
    crypto::SecretBuffer plain = encode_held_message(m);
    const Bytes sealed = impl_->seal_value(held_aad(m.peer, seq), plain.view());
    return impl_->run("UPDATE held SET record = ?1 WHERE seq = ?2", [&](Statement& st) {
      return st.bind_blob(1, sealed) && st.bind_int(2, seq);
    });
  });
}

tl::expected<std::vector<StoredMessage>, ClientError> ClientStore::take_held(
    const std::string& peer) {
  std::lock_guard lock(impl_->mu);
  return impl_->atomically<std::vector<StoredMessage>>(
      [&]() -> tl::expected<std::vector<StoredMessage>, ClientError> {
        auto st = impl_->prepare("SELECT seq, record FROM held WHERE peer = ?1 ORDER BY seq");
        if (!st) return tl::unexpected(st.error());
        if (!st->bind_text(1, peer)) return tl::unexpected(ClientError::io);
        std::vector<StoredMessage> out;
        for (;;) {
          const StepResult r = st->step();
          if (r == StepResult::done) break;
          if (r != StepResult::row) return tl::unexpected(impl_->db_error());
          auto seq = st->column_int(0);
          auto blob = st->column_blob(1);
          std::optional<StoredMessage> m;
          if (seq && blob) {
            if (auto plain = open_sealed(impl_->key.bytes, held_aad(peer, *seq), *blob)) {
              m = decode_held_message(plain->view());
            }
          }
          if (!m) {
            // A damaged held row still tells the user a message was there.
            m = StoredMessage{"damaged-held-" + std::to_string(seq.value_or(0)),
                              peer,
                              peer,
                              0,
                              0,
                              std::string(kDamagedMessageBody),
                              false};
          }
          m->peer = peer;
          out.push_back(std::move(*m));
        }
        auto deleted = impl_->run("DELETE FROM held WHERE peer = ?1",
                                  [&](Statement& del) { return del.bind_text(1, peer); });
        if (!deleted) return tl::unexpected(deleted.error());
        return out;
      });
}

tl::expected<std::size_t, ClientError> ClientStore::held_count(const std::string& peer) {
  std::lock_guard lock(impl_->mu);
  return impl_->count("SELECT COUNT(*) FROM held WHERE peer = ?1",
                      [&](Statement& st) { return st.bind_text(1, peer); });
}

// --- event journal -----------------------------------------------------------------------------

tl::expected<std::uint64_t, ClientError> ClientStore::append_event(ByteView record) {
  std::lock_guard lock(impl_->mu);
  return impl_->atomically<std::uint64_t>([&]() -> tl::expected<std::uint64_t, ClientError> {
    auto r =
        impl_->run("INSERT INTO events (record) VALUES (x'')", [](Statement&) { return true; });
    if (!r) return tl::unexpected(r.error());
    const std::int64_t seq = impl_->db->last_insert_rowid();
    const Bytes sealed = impl_->seal_value(event_aad(seq), record);
    if (auto u = impl_->run(
            "UPDATE events SET record = ?1 WHERE seq = ?2",
            [&](Statement& st) { return st.bind_blob(1, sealed) && st.bind_int(2, seq); });
        !u) {
      return tl::unexpected(u.error());
    }
    const std::int64_t cutoff = seq - static_cast<std::int64_t>(kMaxJournalEntries);
    if (cutoff > 0) {
      if (auto d = impl_->run("DELETE FROM events WHERE seq <= ?1",
                              [&](Statement& st) { return st.bind_int(1, cutoff); });
          !d) {
        return tl::unexpected(d.error());
      }
    }
    return static_cast<std::uint64_t>(seq);
  });
}

tl::expected<std::vector<JournalEntry>, ClientError> ClientStore::events(std::uint64_t after,
                                                                         std::size_t limit) {
  std::lock_guard lock(impl_->mu);
  auto st = impl_->prepare("SELECT seq, record FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
  if (!st) return tl::unexpected(st.error());
  const std::int64_t sql_limit =
      limit == 0 ? -1 : static_cast<std::int64_t>(std::min<std::size_t>(limit, 1u << 30));
  const std::int64_t from = static_cast<std::int64_t>(
      std::min<std::uint64_t>(after, std::numeric_limits<std::int64_t>::max()));
  if (!st->bind_int(1, from) || !st->bind_int(2, sql_limit)) {
    return tl::unexpected(ClientError::io);
  }
  std::vector<JournalEntry> out;
  for (;;) {
    const StepResult r = st->step();
    if (r == StepResult::done) break;
    if (r != StepResult::row) return tl::unexpected(impl_->db_error());
    auto seq = st->column_int(0);
    auto blob = st->column_blob(1);
    if (!seq || *seq <= 0 || !blob) return tl::unexpected(ClientError::corrupt);
    auto plain = open_sealed(impl_->key.bytes, event_aad(*seq), *blob);
    // A damaged entry is handed out empty: the client reports it instead of losing its place.
    out.push_back(JournalEntry{static_cast<std::uint64_t>(*seq),
                               plain ? std::move(*plain) : crypto::SecretBuffer(0)});
  }
  return out;
}

tl::expected<void, ClientError> ClientStore::remove_events(std::uint64_t through) {
  std::lock_guard lock(impl_->mu);
  const std::int64_t upto = static_cast<std::int64_t>(
      std::min<std::uint64_t>(through, std::numeric_limits<std::int64_t>::max()));
  return impl_->run("DELETE FROM events WHERE seq <= ?1",
                    [&](Statement& st) { return st.bind_int(1, upto); });
}

tl::expected<void, ClientError> ClientStore::remove_event(std::uint64_t seq) {
  std::lock_guard lock(impl_->mu);
  if (seq > kMaxSqlInt) return {};
  return impl_->run("DELETE FROM events WHERE seq = ?1",
                    [&](Statement& st) { return st.bind_int(1, static_cast<std::int64_t>(seq)); });
}

// --- sent contents -----------------------------------------------------------------------------

tl::expected<void, ClientError> ClientStore::remove_sent(const std::string& peer,
                                                         std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > kMaxSqlInt) return {};
  return impl_->run("DELETE FROM sent_log WHERE peer = ?1 AND timestamp = ?2", [&](Statement& st) {
    return st.bind_text(1, peer) && st.bind_int(2, static_cast<std::int64_t>(timestamp));
  });
}

tl::expected<void, ClientError> ClientStore::log_sent(const std::string& peer,
                                                      std::uint64_t timestamp, std::uint64_t now_ms,
                                                      ByteView content) {
  std::lock_guard lock(impl_->mu);
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (timestamp > kMax || now_ms > kMax) return tl::unexpected(ClientError::invalid_argument);
  const Bytes sealed = impl_->seal_value(sent_aad(peer, timestamp), content);
  return impl_->run(
      "INSERT INTO sent_log (peer, timestamp, created_at, resends, content) "
      "VALUES (?1, ?2, ?3, 0, ?4) ON CONFLICT (peer, timestamp) DO UPDATE SET "
      "content = excluded.content, created_at = excluded.created_at",
      [&](Statement& st) {
        return st.bind_text(1, peer) && st.bind_int(2, static_cast<std::int64_t>(timestamp)) &&
               st.bind_int(3, static_cast<std::int64_t>(now_ms)) && st.bind_blob(4, sealed);
      });
}

tl::expected<std::optional<SentContent>, ClientError> ClientStore::load_sent(
    const std::string& peer, std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return std::optional<SentContent>{};
  }
  auto st =
      impl_->prepare("SELECT resends, content FROM sent_log WHERE peer = ?1 AND timestamp = ?2");
  if (!st) return tl::unexpected(st.error());
  if (!st->bind_text(1, peer) || !st->bind_int(2, static_cast<std::int64_t>(timestamp))) {
    return tl::unexpected(ClientError::io);
  }
  const StepResult r = st->step();
  if (r == StepResult::done) return std::optional<SentContent>{};
  if (r != StepResult::row) return tl::unexpected(impl_->db_error());
  auto resends = st->column_u32(0);
  auto blob = st->column_blob(1);
  if (!resends || !blob) return tl::unexpected(ClientError::corrupt);
  auto plain = open_sealed(impl_->key.bytes, sent_aad(peer, timestamp), *blob);
  if (!plain) return tl::unexpected(ClientError::corrupt);
  return std::optional<SentContent>{SentContent{std::move(*plain), *resends}};
}

tl::expected<void, ClientError> ClientStore::count_resend(const std::string& peer,
                                                          std::uint64_t timestamp) {
  std::lock_guard lock(impl_->mu);
  if (timestamp > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return {};
  return impl_->run("UPDATE sent_log SET resends = resends + 1 WHERE peer = ?1 AND timestamp = ?2",
                    [&](Statement& st) {
                      return st.bind_text(1, peer) &&
                             st.bind_int(2, static_cast<std::int64_t>(timestamp));
                    });
}

tl::expected<void, ClientError> ClientStore::expire_sent(std::uint64_t before_ms) {
  std::lock_guard lock(impl_->mu);
  const std::int64_t cutoff = static_cast<std::int64_t>(
      std::min<std::uint64_t>(before_ms, std::numeric_limits<std::int64_t>::max()));
  return impl_->run("DELETE FROM sent_log WHERE created_at < ?1",
                    [&](Statement& st) { return st.bind_int(1, cutoff); });
}

// --- named values ------------------------------------------------------------------------------

tl::expected<std::optional<crypto::SecretBuffer>, ClientError> ClientStore::load_value(
    std::string_view name) {
  std::lock_guard lock(impl_->mu);
  return impl_->load_sealed(
      "SELECT value FROM state WHERE name = ?1",
      [&](Statement& st) { return st.bind_text(1, name); }, value_aad(name));
}

tl::expected<void, ClientError> ClientStore::save_value(std::string_view name, ByteView value) {
  std::lock_guard lock(impl_->mu);
  const Bytes sealed = impl_->seal_value(value_aad(name), value);
  return impl_->run(
      "INSERT INTO state (name, value) VALUES (?1, ?2) "
      "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
      [&](Statement& st) { return st.bind_text(1, name) && st.bind_blob(2, sealed); });
}

tl::expected<void, ClientError> ClientStore::remove_value(std::string_view name) {
  std::lock_guard lock(impl_->mu);
  return impl_->run("DELETE FROM state WHERE name = ?1",
                    [&](Statement& st) { return st.bind_text(1, name); });
}

std::string ClientStore::file_identity() const {
  std::lock_guard lock(impl_->mu);
  return impl_->file_identity;
}

}  // namespace sotto::store
