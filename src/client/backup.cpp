// Backups of the engine (include/sotto/client.h, backup_export and backup_import): the account's
// portable state as BackupRecords (proto/backup.proto) in the encrypted file format of
// backup_file.h (docs/backup.md). No key, session or prekey is ever written: a backup restores
// conversations and trust, and a device restored from one still needs its own keys (register,
// recover or link first).
#include "client/backup_file.h"
#include "client/contacts.h"
#include "client/content_codec.h"
#include "client/engine.h"
#include "client/errors.h"
#include "client/groups.h"
#include "client/message_state.h"
#include "client/recovery_code.h"

namespace sotto::client {

namespace {

namespace backup = sotto::wire::backup;

Error from_backup(BackupError e) {
  if (e == BackupError::wrong_key) {
    return make_error(ErrorCode::wrong_passphrase,
                      "the passphrase or recovery code does not open this backup");
  }
  if (e == BackupError::io) {
    return make_error(ErrorCode::store, "the backup file cannot be read or written");
  }
  return make_error(ErrorCode::invalid_argument,
                    "not a usable Sotto backup: " + std::string(to_string(e)));
}

Result<BackupSecret> secret_of(const sotto::BackupSecret& s) {
  if (s.kind == sotto::BackupSecret::Kind::passphrase) {
    if (s.text.empty()) {
      return tl::unexpected(make_error(ErrorCode::invalid_argument, "the passphrase is empty"));
    }
    return BackupSecret::passphrase(s.text);
  }
  auto code = RecoveryCode::parse(s.text);
  if (!code) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "a recovery code has 24 letters and digits (A-Z, 2-7) in "
                                     "groups of four"));
  }
  return BackupSecret::recovery_code(*code);
}

}  // namespace

Result<std::size_t> Engine::backup_export(const std::filesystem::path& path,
                                          const sotto::BackupSecret& secret_in,
                                          const Progress& progress) {
  auto secret = secret_of(secret_in);
  if (!secret) return tl::unexpected(secret.error());
  if (secret_in.kind == sotto::BackupSecret::Kind::recovery_code) {
    // A code that is not the account's (a typo, another account's) would seal a backup that no
    // code the user has can open: check it against the verifier, when this device knows it.
    auto verifier = account_->store->load_value(kRecoveryVerifierValue);
    if (!verifier) return tl::unexpected(from_store(verifier.error()));
    auto code = RecoveryCode::parse(secret_in.text);
    if (verifier->has_value() && code &&
        !crypto::constant_time_equal((*verifier)->view(),
                                     derive_recovery_auth_key(*code).public_key())) {
      return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                       "this is not the account's recovery code (a typo?); "
                                       "nothing was written"));
    }
  }
  auto writer = BackupWriter::create(path, *secret, account_->rng);
  if (!writer) return tl::unexpected(from_backup(writer.error()));

  backup::BackupRecord record;
  {
    std::lock_guard crypto_lock(account_->crypto_mu);
    const auto& s = account_->store->settings();
    auto* a = record.mutable_account();
    a->set_username(s.username);
    a->set_server_host(s.server_host);
    a->set_server_port(s.server_port);
    a->set_server_fingerprint(s.server_fingerprint);
    a->set_trust_policy(s.trust_policy);
    a->set_created_at(account_->clock.now_ms());
  }
  if (auto added = writer->add(record); !added) return tl::unexpected(from_backup(added.error()));

  auto contacts = account_->store->contacts();
  if (!contacts) return tl::unexpected(from_store(contacts.error()));
  for (const auto& c : *contacts) {
    if (!c.identity_key) continue;
    record.Clear();
    fill_record(c, *record.mutable_contact());
    if (auto added = writer->add(record); !added) return tl::unexpected(from_backup(added.error()));
  }

  {
    // The groups this device knows (state and recent revisions; no Sender Key: a restored
    // device is given the members' chains again, docs/backup.md).
    std::lock_guard crypto_lock(account_->crypto_mu);
    auto logs = groups().export_logs();
    if (!logs) return tl::unexpected(logs.error());
    for (auto& log : *logs) {
      record.Clear();
      *record.mutable_group() = std::move(log);
      auto added = writer->add(record);
      record.Clear();
      if (!added) return tl::unexpected(from_backup(added.error()));
    }
  }

  auto total = account_->store->message_count();
  if (!total) return tl::unexpected(from_store(total.error()));
  std::size_t written = 0;
  std::optional<BackupError> failed;
  auto walked = account_->store->for_each_message([&](const store::StoredMessage& m) {
    record.Clear();
    auto* r = record.mutable_message();
    fill_record(m, *r);
    // Its reactions, edited and deleted marks, receipts and timer, when it has any.
    auto state = account_->store->load_message_state(m.peer, m.sender, m.timestamp);
    if (state && state->has_value()) r->set_state(bytes_string((*state)->view()));
    auto added = writer->add(record);
    if (!r->state().empty()) crypto::secure_wipe(r->mutable_state()->data(), r->state().size());
    crypto::secure_wipe(r->mutable_body()->data(), r->body().size());
    if (!added) {
      failed = added.error();
      return false;
    }
    ++written;
    if (progress && (written % 256 == 0 || written == *total)) progress(written, *total);
    return true;
  });
  if (!walked) return tl::unexpected(from_store(walked.error()));
  if (failed) return tl::unexpected(from_backup(*failed));
  if (auto done = writer->finish(); !done) return tl::unexpected(from_backup(done.error()));
  if (progress) progress(written, *total);
  return written;
}

Result<std::size_t> Engine::backup_import(const std::filesystem::path& path,
                                          const sotto::BackupSecret& secret_in,
                                          const Progress& progress) {
  auto secret = secret_of(secret_in);
  if (!secret) return tl::unexpected(secret.error());
  auto before = account_->store->message_count();
  if (!before) return tl::unexpected(from_store(before.error()));

  // One store transaction around the whole read: a file that turns out damaged, truncated or of
  // another account half-way leaves the store exactly as it was.
  std::optional<Error> refused;
  bool first = true;
  const auto apply = [&](const backup::BackupRecord& r) -> bool {
    const auto refuse = [&](Error e) {
      refused = std::move(e);
      return false;
    };
    if (first != r.has_account()) {
      return refuse(make_error(ErrorCode::invalid_argument,
                               "not a usable Sotto backup: it must start with its account"));
    }
    first = false;
    if (r.has_account()) {
      if (r.account().username() != account_->username) {
        return refuse(make_error(ErrorCode::invalid_argument,
                                 "this backup is of another account; nothing was imported"));
      }
      if (auto p = parse_trust_policy(r.account().trust_policy())) {
        store::AccountSettings s = account_->store->settings().clone();
        s.trust_policy = r.account().trust_policy();
        if (!account_->store->save_settings(s)) return refuse(from_store(store::ClientError::io));
      }
      return true;
    }
    if (r.has_contact()) {
      auto c = contact_of(r.contact());
      if (!c || c->username == account_->username) return true;  // nothing to restore
      if (auto merged = merge_contact(*account_->store, *c); !merged) {
        return refuse(merged.error());
      }
      return true;
    }
    if (r.has_message()) {
      backup::MessageRecord m = r.message();
      auto stored = take_history_row(m);
      if (!stored) return true;  // not a history row: skipped
      const bool added = account_->store->add_message(*stored).has_value();
      crypto::secure_wipe(stored->body.data(), stored->body.size());
      if (!added) return refuse(from_store(store::ClientError::io));
      if (!m.state().empty()) {
        // The message's state, when it reads as one and this device has none for it yet.
        auto kept =
            account_->store->load_message_state(stored->peer, stored->sender, stored->timestamp);
        if (!kept) return refuse(from_store(kept.error()));
        auto state = decode_state(as_bytes(m.state()));
        if (!kept->has_value() && state &&
            !account_->store->save_message_state(stored->peer, stored->sender, stored->timestamp,
                                                 state->expires_at(), as_bytes(m.state()))) {
          return refuse(from_store(store::ClientError::io));
        }
      }
      crypto::secure_wipe(m.mutable_state()->data(), m.state().size());
      return true;
    }
    if (r.has_group()) {
      // A group: kept when it is newer than what this device has; one that is not valid is
      // skipped like any record this version cannot use.
      auto taken = groups().import_log(r.group());
      if (!taken) return refuse(taken.error());
      return true;
    }
    return true;  // a record kind of a later version
  };
  BackupReader reader(apply, [&](std::uint64_t read, std::optional<std::uint64_t> size) {
    if (progress) progress(read, size.value_or(0));
  });
  std::optional<BackupError> read_error;
  std::lock_guard crypto_lock(account_->crypto_mu);
  auto committed = account_->store->transaction([&] {
    auto summary = reader.read(path, *secret);
    if (!summary) {
      read_error = summary.error();
      return false;
    }
    return !refused.has_value() && !first;
  });
  if (refused) return tl::unexpected(*refused);
  if (read_error) return tl::unexpected(from_backup(*read_error));
  if (!committed) return tl::unexpected(from_store(committed.error()));
  if (!*committed) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument, "the backup holds no account"));
  }
  auto after = account_->store->message_count();
  if (!after) return tl::unexpected(from_store(after.error()));
  return *after - *before;
}

}  // namespace sotto::client
