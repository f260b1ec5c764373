#include "server/kt.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "crypto/encoding.h"
#include "server/service.h"

namespace sotto::server {

namespace {

namespace kt = transparency;

// The commit function of the account change being logged on this thread (AccountLog): the
// adapter's append writes the entry through it, inside the change's transaction.
thread_local const store::AccountLog::Commit* t_commit = nullptr;
// Set while an account change is logged: reads the entries inside that change's transaction.
thread_local const store::AccountLog::ReadFrom* t_read_from = nullptr;

store::KtEntryRow to_row(const kt::StoredEntry& e) {
  store::KtEntryRow row;
  row.index = e.index;
  row.timestamp_ms = e.entry.timestamp_ms;
  row.prefix_root.assign(e.entry.prefix_root.begin(), e.entry.prefix_root.end());
  for (const kt::StoredVersion& v : e.versions) {
    store::KtVersionRow r;
    r.label_index.assign(v.index.begin(), v.index.end());
    r.version = v.link.version;
    r.commitment.assign(v.link.commitment.begin(), v.link.commitment.end());
    r.opening.assign(v.opening.begin(), v.opening.end());
    r.value = v.value;
    row.versions.push_back(std::move(r));
  }
  return row;
}

template <std::size_t N>
bool copy_fixed(const Bytes& from, std::array<std::uint8_t, N>& to) {
  if (from.size() != N) return false;
  std::copy(from.begin(), from.end(), to.begin());
  return true;
}

std::optional<kt::StoredEntry> from_row(const store::KtEntryRow& row) {
  kt::StoredEntry e;
  e.index = row.index;
  e.entry.timestamp_ms = row.timestamp_ms;
  if (!copy_fixed(row.prefix_root, e.entry.prefix_root)) return std::nullopt;
  for (const store::KtVersionRow& r : row.versions) {
    kt::StoredVersion v;
    if (!copy_fixed(r.label_index, v.index) || !copy_fixed(r.commitment, v.link.commitment) ||
        !copy_fixed(r.opening, v.opening)) {
      return std::nullopt;
    }
    v.link.version = r.version;
    v.link.entry = row.index;
    v.value = r.value;
    e.versions.push_back(std::move(v));
  }
  return e;
}

// Reads a 32-byte key file, or makes one (mode 0600, written whole before it is renamed into
// place, so a crash never leaves half a key).
tl::expected<crypto::Secret<32>, std::string> load_or_create_key(const std::filesystem::path& file,
                                                                 crypto::Rng& rng, bool create) {
  std::error_code ec;
  if (std::filesystem::exists(file, ec)) {
    // Read with plain read(2) into the stack, not through a stream: a stream's heap buffer
    // would keep a copy of the key, freed unwiped.
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tl::unexpected("cannot read " + file.string());
    std::array<std::uint8_t, 33> raw{};  // one byte more: a longer file is not a key
    std::size_t got = 0;
    while (got < raw.size()) {
      const ssize_t n = ::read(fd, raw.data() + got, raw.size() - got);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    crypto::Secret<32> key{ByteView(raw.data(), 32)};
    crypto::secure_wipe(raw.data(), raw.size());
    if (got != 32) return tl::unexpected(file.string() + " is not a 32-byte key");
    return key;
  }
  if (!create) return tl::unexpected("no key " + file.string());
  std::filesystem::create_directories(file.parent_path(), ec);
  if (ec) return tl::unexpected("cannot create " + file.parent_path().string());
  crypto::Secret<32> key;
  rng.fill(key.span());
  const std::filesystem::path tmp = file.string() + ".new";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return tl::unexpected("cannot write " + tmp.string());
  const bool written = ::write(fd, key.view().data(), 32) == 32 && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || std::rename(tmp.c_str(), file.c_str()) != 0)
    return tl::unexpected("cannot write " + file.string());
  return key;
}

}  // namespace

std::string kt_keys_text(const kt::LogPublicKeys& keys) {
  return crypto::to_hex(keys.signing_key) + ":" + crypto::to_hex(keys.vrf_key);
}

std::optional<kt::LogPublicKeys> parse_kt_keys(std::string_view text) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto signing = crypto::from_hex(text.substr(0, colon));
  auto vrf = crypto::from_hex(text.substr(colon + 1));
  kt::LogPublicKeys keys;
  if (!signing || !vrf || !copy_fixed(*signing, keys.signing_key) ||
      !copy_fixed(*vrf, keys.vrf_key)) {
    return std::nullopt;
  }
  return keys;
}

std::optional<kt::LogPublicKeys> read_kt_public_keys(const std::filesystem::path& dir) {
  auto signing = load_or_create_key(dir / "kt" / "signing.key", crypto::system_rng(), false);
  auto vrf = load_or_create_key(dir / "kt" / "vrf.key", crypto::system_rng(), false);
  if (!signing || !vrf) return std::nullopt;
  return kt::LogPublicKeys{crypto::Ed25519KeyPair::from_seed(*signing).public_key(),
                           kt::VrfKeyPair::from_secret(*vrf).public_key()};
}

// The log's store: the server store's KtStore; an append made while an account change is being
// logged goes into that change's transaction.
class KeyTransparency::Adapter final : public kt::TransparencyStore {
 public:
  explicit Adapter(store::KtStore& kt) : kt_(kt) {}
  tl::expected<void, kt::Error> append(const kt::StoredEntry& e) override {
    store::KtEntryRow row = to_row(e);
    if (batch_ != nullptr) {  // the first start's entries, written together afterwards
      batch_->push_back(std::move(row));
      return {};
    }
    auto ok = t_commit != nullptr ? (*t_commit)(row) : kt_.append(row);
    if (!ok) return tl::unexpected(kt::Error::storage_failure);
    return {};
  }
  tl::expected<void, kt::Error> load(
      const std::function<void(const kt::StoredEntry&)>& visit) const override {
    return load_from(0, visit);
  }
  tl::expected<void, kt::Error> load_from(
      std::uint64_t first,
      const std::function<void(const kt::StoredEntry&)>& visit) const override {
    bool bad = false;
    const auto each = [&](const store::KtEntryRow& row) {
      if (bad) return;
      auto e = from_row(row);
      if (!e) {
        bad = true;
        return;
      }
      visit(*e);
    };
    auto ok = t_read_from != nullptr ? (*t_read_from)(first, each) : kt_.load_from(first, each);
    if (!ok || bad) return tl::unexpected(kt::Error::storage_failure);
    return {};
  }
  // While set, appends collect their rows here instead of writing them.
  std::vector<store::KtEntryRow>* batch_ = nullptr;

 private:
  store::KtStore& kt_;
};

KeyTransparency::KeyTransparency(std::unique_ptr<Adapter> adapter, kt::VrfKeyPair vrf,
                                 crypto::Ed25519KeyPair signing, store::KtStore& kt_store,
                                 crypto::Rng& rng, NowMs now_ms)
    : adapter_(std::move(adapter)),
      kt_(kt_store),
      now_ms_(std::move(now_ms)),
      log_(*adapter_, std::move(vrf), std::move(signing), rng) {}

KeyTransparency::~KeyTransparency() {
  kt_.set_account_log(nullptr);
}

tl::expected<std::unique_ptr<KeyTransparency>, std::string> KeyTransparency::open(
    const std::filesystem::path& data_dir, store::KtStore& kt_store, crypto::Rng& rng,
    NowMs now_ms) {
  auto signing = load_or_create_key(data_dir / "kt" / "signing.key", rng, true);
  if (!signing) return tl::unexpected(signing.error());
  auto vrf = load_or_create_key(data_dir / "kt" / "vrf.key", rng, true);
  if (!vrf) return tl::unexpected(vrf.error());
  return open_with_keys(kt::VrfKeyPair::from_secret(*vrf),
                        crypto::Ed25519KeyPair::from_seed(*signing), kt_store, rng,
                        std::move(now_ms));
}

tl::expected<std::unique_ptr<KeyTransparency>, std::string> KeyTransparency::open_with_keys(
    kt::VrfKeyPair vrf, crypto::Ed25519KeyPair signing, store::KtStore& kt_store, crypto::Rng& rng,
    NowMs now_ms, std::size_t bulk_entry_changes) {
  std::unique_ptr<KeyTransparency> out(new KeyTransparency(std::make_unique<Adapter>(kt_store),
                                                           std::move(vrf), std::move(signing),
                                                           kt_store, rng, std::move(now_ms)));
  if (auto started = out->start(bulk_entry_changes); !started)
    return tl::unexpected(started.error());
  return out;
}

tl::expected<void, std::string> KeyTransparency::start(std::size_t bulk_entry_changes) {
  // On a shared store another server may write entry 0 between this one's read and its write:
  // this one's write then fails, and reading again finds the entry.
  for (int attempt = 0;; ++attempt) {
    auto opened = log_.open(now_ms_());
    if (opened) break;
    if (!kt_.shared() || attempt == 2 || opened.error() == kt::Error::bad_history) {
      return tl::unexpected(std::string("cannot open the transparency log: ") +
                            std::string(kt::to_string(opened.error())));
    }
  }
  // A log of entry 0 alone has never logged an account: log the ones there are (a server that
  // ran before it had a log), in entries of at most bulk_entry_changes accounts (an audit record
  // holds at most kMaxAuditChanges, and an audit answer must fit in a frame), written in one
  // transaction so that a crash leaves all of them or none. Nothing changes accounts before
  // set_account_log (on a cluster: before any server has taken the log, so the first to write
  // entry 1 writes them all).
  if (log_.head().head.size == 1) {
    auto accounts = kt_.all_accounts();
    if (!accounts) return tl::unexpected(std::string("cannot read the accounts to log them"));
    std::vector<kt::TransparencyLog::Update> updates;
    for (const auto& a : *accounts) {
      auto value = value_of(a);
      if (!value) return tl::unexpected("account " + std::to_string(a.id) + " cannot be logged");
      updates.push_back({a.username, std::move(*value)});
    }
    const std::size_t chunk =
        std::clamp<std::size_t>(bulk_entry_changes, 1, transparency::kMaxAuditChanges);
    std::vector<store::KtEntryRow> rows;
    adapter_->batch_ = &rows;
    for (std::size_t at = 0; at < updates.size(); at += chunk) {
      const std::size_t n = std::min(chunk, updates.size() - at);
      if (auto ok = log_.append(std::span(updates).subspan(at, n), now_ms_()); !ok) {
        adapter_->batch_ = nullptr;
        return tl::unexpected(std::string("cannot log the existing accounts: ") +
                              std::string(kt::to_string(ok.error())));
      }
    }
    adapter_->batch_ = nullptr;
    if (!rows.empty()) {
      if (auto ok = kt_.append_all(rows); !ok) {
        // Another server of the cluster logged them first: this one's trees went ahead of the
        // store, so they are read again from it.
        const bool done =
            kt_.shared() && (log_.reset(), log_.open(now_ms_())) && log_.head().head.size > 1;
        if (!done) {
          return tl::unexpected(std::string("cannot write the log's entries of existing accounts"));
        }
      }
    }
  }
  kt_.set_account_log(this);
  return {};
}

std::optional<kt::AccountValue> KeyTransparency::value_of(const store::AccountRecord& record) {
  kt::AccountValue v;
  if (!copy_fixed(record.identity_key, v.identity_key)) return std::nullopt;
  for (const auto& d : record.devices) {
    kt::DeviceEntry e;
    e.device_id = d.id;
    e.registration_id = d.registration_id;
    if (!copy_fixed(d.auth_key, e.auth_key)) return std::nullopt;
    e.name = d.name;
    v.devices.push_back(std::move(e));
  }
  std::sort(v.devices.begin(), v.devices.end(),
            [](const auto& a, const auto& b) { return a.device_id < b.device_id; });
  if (!kt::valid(v)) return std::nullopt;
  return v;
}

tl::expected<void, store::Error> KeyTransparency::account_changed(const store::AccountRecord& after,
                                                                  const Commit& commit,
                                                                  const ReadFrom& read_from) {
  auto value = value_of(after);
  if (!value) return tl::unexpected(store::Error::io);
  const kt::TransparencyLog::Update update{after.username, std::move(*value)};
  // On a shared store the entries other servers appended come first: this one's index follows
  // theirs. The store holds the log's write lock, so none can come in between.
  if (kt_.shared()) {
    t_read_from = &read_from;
    auto refreshed = log_.refresh();
    t_read_from = nullptr;
    if (!refreshed) return tl::unexpected(store::Error::io);
  }
  t_commit = &commit;
  auto appended = log_.append(std::span(&update, 1), now_ms_());
  t_commit = nullptr;
  if (!appended) return tl::unexpected(store::Error::io);
  return {};
}

tl::expected<void, kt::Error> KeyTransparency::refresh() const {
  if (!kt_.shared()) return {};
  if (auto ok = log_.refresh(); !ok) return ok;
  // Co-signatures other servers of the cluster received: read again every few seconds.
  const std::uint64_t now = now_ms_();
  std::vector<crypto::Ed25519PublicKey> auditors;
  {
    std::lock_guard lock(cosign_mu_);
    if (now < cosignatures_read_ms_ + kCosignatureRereadMs) return {};
    cosignatures_read_ms_ = now;
    auditors = auditors_;
  }
  auto kept = read_cosignatures(auditors);
  if (!kept) return {};  // served from what was read before; tried again later
  std::lock_guard lock(cosign_mu_);
  cosignatures_ = std::move(*kept);
  return {};
}

tl::expected<KeyTransparency::Proof, kt::Error> KeyTransparency::head_and_consistency(
    std::uint64_t known_size, const kt::SignedTreeHead& head) const {
  Proof out;
  out.tree_head = kt::encode_signed_tree_head(head);
  // A size beyond the log (the client was shown a longer log, or this one lost entries) gets the
  // head alone: the client's tracker refuses a head smaller than its own and says so.
  if (known_size != 0 && known_size < head.head.size) {
    auto c = log_.consistency(known_size, head.head.size);
    if (!c) return tl::unexpected(c.error());
    out.consistency = kt::encode_consistency_proof(*c);
  }
  std::vector<kt::Cosignature> cosignatures;
  {
    std::lock_guard lock(cosign_mu_);
    cosignatures = cosignatures_;
  }
  for (const kt::Cosignature& k : cosignatures) {
    // One kept after this head was read may be of a larger head: the next answer carries it.
    if (k.head.head.size > head.head.size) continue;
    ServedCosignature served{k, {}};
    if (k.head.head.size < head.head.size) {
      auto c = log_.consistency(k.head.head.size, head.head.size);
      if (!c) return tl::unexpected(c.error());
      served.consistency = kt::encode_consistency_proof(*c);
    }
    out.cosignatures.push_back(std::move(served));
  }
  return out;
}

// The head is read before and after the proof: when both are the same, no entry came between,
// and the proof is at that head (heads only grow).
tl::expected<KeyTransparency::Proof, kt::Error> KeyTransparency::search(
    std::string_view username, std::uint64_t known_size) const {
  if (auto ok = refresh(); !ok) return tl::unexpected(ok.error());
  for (;;) {
    const kt::SignedTreeHead before = log_.head();
    auto proof = log_.search(username);
    if (!proof) return tl::unexpected(proof.error());
    if (log_.head() != before) continue;
    auto out = head_and_consistency(known_size, before);
    if (out) out->proof = kt::encode_search_proof(*proof);
    return out;
  }
}

tl::expected<KeyTransparency::Proof, kt::Error> KeyTransparency::monitor(
    std::string_view username, std::uint64_t known_size) const {
  if (auto ok = refresh(); !ok) return tl::unexpected(ok.error());
  for (;;) {
    const kt::SignedTreeHead before = log_.head();
    auto proof = log_.monitor(username);
    if (!proof) return tl::unexpected(proof.error());
    if (log_.head() != before) continue;
    auto out = head_and_consistency(known_size, before);
    if (out) out->proof = kt::encode_monitor_proof(*proof);
    return out;
  }
}

tl::expected<void, std::string> KeyTransparency::set_auditors(
    std::vector<crypto::Ed25519PublicKey> auditors) {
  auto kept = read_cosignatures(auditors);
  if (!kept) return tl::unexpected(std::string("cannot read the auditors' co-signatures"));
  std::lock_guard lock(cosign_mu_);
  auditors_ = std::move(auditors);
  cosignatures_ = std::move(*kept);
  cosignatures_read_ms_ = now_ms_();
  return {};
}

std::optional<std::vector<kt::Cosignature>> KeyTransparency::read_cosignatures(
    const std::vector<crypto::Ed25519PublicKey>& auditors) const {
  auto rows = kt_.cosignatures();
  if (!rows) return std::nullopt;
  std::vector<kt::Cosignature> kept;
  for (const store::KtCosignatureRow& row : *rows) {
    kt::Cosignature c;
    auto head = kt::decode_signed_tree_head(row.tree_head);
    if (!head || !copy_fixed(row.auditor_key, c.auditor_key) ||
        !copy_fixed(row.signature, c.signature)) {
      continue;
    }
    c.head = *head;
    c.time_ms = row.time_ms;
    if (std::find(auditors.begin(), auditors.end(), c.auditor_key) == auditors.end()) continue;
    // Only a head this log signed at that size: after the log lost or changed entries, an older
    // co-signature is of another log.
    if (c.head.head.size == 0 || c.head.head.size > log_.head().head.size) continue;
    auto ours = log_.head_at(c.head.head.size);
    if (!ours || ours->head != c.head.head) continue;
    kept.push_back(c);
  }
  return kept;
}

tl::expected<void, KeyTransparency::CosignRefusal> KeyTransparency::add_cosignature(
    const kt::Cosignature& c) {
  if (!refresh()) return tl::unexpected(CosignRefusal::storage);
  {
    std::lock_guard lock(cosign_mu_);
    if (std::find(auditors_.begin(), auditors_.end(), c.auditor_key) == auditors_.end())
      return tl::unexpected(CosignRefusal::unknown_auditor);
  }
  const kt::TreeHead& h = c.head.head;
  if (h.size == 0 || h.size > log_.head().head.size) return tl::unexpected(CosignRefusal::bad_head);
  auto ours = log_.head_at(h.size);
  if (!ours || *ours != c.head) return tl::unexpected(CosignRefusal::bad_head);
  if (!kt::verify_cosignature_at(h, c.time_ms, c.auditor_key, c.signature))
    return tl::unexpected(CosignRefusal::bad_signature);
  if (c.time_ms > now_ms_() + kMaxCosignatureAheadMs) return tl::unexpected(CosignRefusal::too_new);
  std::lock_guard lock(cosign_mu_);
  auto it = std::find_if(cosignatures_.begin(), cosignatures_.end(),
                         [&](const kt::Cosignature& k) { return k.auditor_key == c.auditor_key; });
  if (it != cosignatures_.end() && it->time_ms >= c.time_ms) return {};  // not newer
  store::KtCosignatureRow row;
  row.auditor_key.assign(c.auditor_key.begin(), c.auditor_key.end());
  row.tree_head = kt::encode_signed_tree_head(c.head);
  row.time_ms = c.time_ms;
  row.signature.assign(c.signature.begin(), c.signature.end());
  if (!kt_.save_cosignature(row)) return tl::unexpected(CosignRefusal::storage);
  if (it != cosignatures_.end()) {
    *it = c;
  } else {
    cosignatures_.push_back(c);
  }
  return {};
}

tl::expected<KeyTransparency::Audit, kt::Error> KeyTransparency::audit(
    std::uint64_t start, std::uint32_t count, std::size_t max_bytes) const {
  if (auto ok = refresh(); !ok) return tl::unexpected(ok.error());
  Audit out;
  const kt::SignedTreeHead head = log_.head();
  out.tree_head = kt::encode_signed_tree_head(head);
  std::size_t bytes = 0;
  for (std::uint64_t i = start; i < head.head.size && out.records.size() < count; ++i) {
    auto record = log_.audit_record(i);
    if (!record) return tl::unexpected(record.error());
    Bytes encoded = kt::encode_audit_record(*record);
    if (!out.records.empty() && bytes + encoded.size() > max_bytes) break;
    bytes += encoded.size();
    out.records.push_back(std::move(encoded));
  }
  return out;
}

void fill_kt_cosignature(const KeyTransparency::ServedCosignature& c,
                         wire::service::KtCosignature& out) {
  const kt::Cosignature& k = c.cosignature;
  const Bytes head = kt::encode_signed_tree_head(k.head);
  out.set_auditor_key(std::string(k.auditor_key.begin(), k.auditor_key.end()));
  out.set_tree_head(std::string(head.begin(), head.end()));
  out.set_time_ms(k.time_ms);
  out.set_signature(std::string(k.signature.begin(), k.signature.end()));
  out.set_consistency(std::string(c.consistency.begin(), c.consistency.end()));
}

bool fill_kt_proof(const KeyTransparency& kt, std::string_view username, std::uint64_t known_size,
                   wire::service::KtProof& proof, wire::service::Response& out) {
  auto p = kt.search(username, known_size);
  if (!p) {
    if (p.error() == kt::Error::invalid_argument) {
      fail(out, wire::service::BAD_REQUEST, "kt_known_size is beyond the transparency log");
    } else {
      fail(out, wire::service::INTERNAL, "transparency log failure");
    }
    return false;
  }
  proof.set_tree_head(std::string(p->tree_head.begin(), p->tree_head.end()));
  proof.set_consistency(std::string(p->consistency.begin(), p->consistency.end()));
  proof.set_search(std::string(p->proof.begin(), p->proof.end()));
  for (const auto& c : p->cosignatures) fill_kt_cosignature(c, *proof.add_cosignatures());
  return true;
}

}  // namespace sotto::server
