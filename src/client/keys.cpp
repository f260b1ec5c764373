#include "client/keys.h"

#include <algorithm>
#include <map>

#include "client/errors.h"
#include "client/stored_values.h"
#include "contract/signatures.h"

namespace sotto::client {

namespace {

void add_signed_pre_key(svc::DeviceKeys& out, const protocol::SignedPreKeyRecord& spk) {
  auto* s = out.mutable_signed_pre_key();
  s->set_id(spk.id.value);
  s->set_public_key(bytes_string(spk.key_pair.public_key.serialize()));
  s->set_signature(bytes_string(spk.signature));
}

void add_pre_keys(svc::DeviceKeys& out, const std::vector<protocol::PreKeyRecord>& keys) {
  for (const auto& pk : keys) {
    auto* p = out.add_pre_keys();
    p->set_id(pk.id.value);
    p->set_public_key(bytes_string(pk.key_pair.public_key.serialize()));
  }
}

// Whether the ranges are ascending and disjoint, as the server sends them (anything else: no
// pruning, rather than deleting keys on a list misread).
bool well_formed(const svc::KeyCountResponse& held) {
  std::uint64_t next = 0;  // the least id the next range may start at
  for (const auto& r : held.held()) {
    if (r.first() < next || r.last() < r.first()) return false;
    next = static_cast<std::uint64_t>(r.last()) + 1;
  }
  return true;
}

bool held_by_server(const svc::KeyCountResponse& held, std::uint32_t id) {
  // Ascending ranges: the first whose end is not below id decides.
  const auto& ranges = held.held();
  auto it =
      std::lower_bound(ranges.begin(), ranges.end(), id,
                       [](const svc::PreKeyIdRange& r, std::uint32_t v) { return r.last() < v; });
  return it != ranges.end() && it->first() <= id;
}

}  // namespace

std::uint32_t next_pre_key_id(std::uint32_t start, std::size_t count) {
  return static_cast<std::uint32_t>((static_cast<std::uint64_t>(start) - 1 + count) %
                                    kMaxPreKeyId) +
         1;
}

DeviceKeys generate_device_keys(crypto::Rng& rng, const protocol::IdentityKeyPair& identity,
                                std::uint64_t now_s) {
  return DeviceKeys{
      protocol::generate_registration_id(rng), crypto::Ed25519KeyPair::generate(rng),
      protocol::generate_signed_pre_key(rng, identity, protocol::SignedPreKeyId(1), now_s),
      protocol::generate_pre_keys(rng, protocol::PreKeyId(1), kPreKeyBatch)};
}

void fill_new_device(svc::NewDevice& d, const std::string& username,
                     const protocol::IdentityKeyPair& identity, const DeviceKeys& keys,
                     crypto::Rng& rng, ByteView name) {
  d.set_registration_id(keys.registration_id.value);
  d.set_auth_key(bytes_string(keys.auth_key.public_key()));
  add_signed_pre_key(*d.mutable_keys(), keys.signed_pre_key);
  add_pre_keys(*d.mutable_keys(), keys.pre_keys);
  const Bytes binding = contract::device_binding(username, ByteView(keys.auth_key.public_key()));
  d.set_identity_signature(bytes_string(identity.sign(binding, rng)));
  if (!name.empty()) d.set_name(bytes_string(name));
}

Result<void> save_device_keys(store::ClientStore& store, const DeviceKeys& keys) {
  bool failed = false;
  auto ok = store.transaction([&] {
    if (!store.save_signed_pre_key(keys.signed_pre_key)) return !(failed = true);
    for (const auto& pk : keys.pre_keys) {
      if (!store.save_pre_key(pk)) return !(failed = true);
    }
    return true;
  });
  if (!ok) return tl::unexpected(from_store(ok.error()));
  if (failed || !*ok) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot save the device's keys"));
  }
  return {};
}

Result<bool> KeyMaintenance::copy_changed(Bytes& instance) {
  auto current = ServerLink::instance_of(account_);
  if (!current) return tl::unexpected(current.error());
  instance = std::move(*current);
  auto last = account_.store->load_value(kKeysInstanceValue);
  if (!last) return tl::unexpected(from_store(last.error()));
  if (!last->has_value()) {
    // First run of this version on this data: it is the copy the keys were made by.
    if (auto saved = account_.store->save_value(kKeysInstanceValue, instance); !saved) {
      return tl::unexpected(from_store(saved.error()));
    }
    return false;
  }
  return !crypto::constant_time_equal((*last)->view(), instance);
}

Result<void> KeyMaintenance::maintain(const ConnectionPtr& c) {
  std::lock_guard crypto_lock(account_.crypto_mu);
  Bytes instance;
  auto changed = copy_changed(instance);
  if (!changed) return tl::unexpected(changed.error());
  const bool replace = *changed;

  std::uint32_t count = 0;
  if (!replace) {
    svc::Request count_request;
    count_request.mutable_key_count()->set_list_ids(true);
    auto counted = link_.call_ok(c, std::move(count_request));
    if (!counted) return tl::unexpected(counted.error());
    count = counted->key_count().count();
    // A server that does not list ids (an older one) says no TTL: nothing is pruned then.
    if (counted->key_count().message_ttl_seconds() > 0) {
      if (auto pruned = prune(counted->key_count(), account_.protocol_clock.now_seconds());
          !pruned) {
        return tl::unexpected(pruned.error());
      }
    }
  }

  svc::Request upload;
  upload.mutable_upload_keys()->set_replace_pre_keys(replace);
  auto* keys = upload.mutable_upload_keys()->mutable_keys();
  store::AccountSettings settings = account_.store->settings().clone();
  bool changed_keys = false;
  if (replace || count < kPreKeyLowWater) {
    auto fresh = protocol::generate_pre_keys(
        account_.rng, protocol::PreKeyId(settings.next_pre_key_id), kPreKeyBatch);
    settings.next_pre_key_id = next_pre_key_id(settings.next_pre_key_id, kPreKeyBatch);
    add_pre_keys(*keys, fresh);
    bool failed = false;
    auto ok = account_.store->transaction([&] {
      for (const auto& pk : fresh) {
        if (!account_.store->save_pre_key(pk)) return !(failed = true);
      }
      return static_cast<bool>(account_.store->save_settings(settings));
    });
    if (!ok || !*ok || failed) {
      return tl::unexpected(make_error(ErrorCode::store, "cannot save new prekeys"));
    }
    changed_keys = true;
  }
  const std::uint64_t now = account_.protocol_clock.now_seconds();
  const protocol::SignedPreKeyId current(settings.next_signed_pre_key_id - 1);
  auto spk = account_.store->load_signed_pre_key(current);
  if (!spk) return tl::unexpected(from_protocol(spk.error()));
  if (replace || !spk->has_value() || now > (*spk)->timestamp + kSignedPreKeyMaxAgeSeconds) {
    auto fresh = protocol::generate_signed_pre_key(
        account_.rng, settings.identity, protocol::SignedPreKeyId(settings.next_signed_pre_key_id),
        now);
    settings.next_signed_pre_key_id = settings.next_signed_pre_key_id % kMaxPreKeyId + 1;
    add_signed_pre_key(*keys, fresh);
    // The previous signed prekey stays in the store: messages in flight may still use it.
    auto ok = account_.store->transaction([&] {
      return static_cast<bool>(account_.store->save_signed_pre_key(fresh)) &&
             static_cast<bool>(account_.store->save_settings(settings));
    });
    if (!ok || !*ok) {
      return tl::unexpected(make_error(ErrorCode::store, "cannot save the new signed prekey"));
    }
    changed_keys = true;
  }
  if (!changed_keys) return {};
  auto uploaded = link_.call_ok(c, std::move(upload));
  if (!uploaded) return tl::unexpected(uploaded.error());
  if (replace) {
    if (auto saved = account_.store->save_value(kKeysInstanceValue, instance); !saved) {
      return tl::unexpected(from_store(saved.error()));
    }
  }
  return {};
}

Result<void> KeyMaintenance::prune(const svc::KeyCountResponse& held, std::uint64_t now) {
  if (!well_formed(held)) return {};
  // The server's TTL, but never below its smallest setting (a day): a server saying less is
  // broken, and deleting too early would lose messages.
  const std::uint64_t ttl =
      std::max<std::uint64_t>(held.message_ttl_seconds(), kMinPruneTtlSeconds);
  store::ClientStore& store = *account_.store;
  auto local = store.pre_key_ids();
  if (!local) return tl::unexpected(from_store(local.error()));
  auto stored = store.load_value(kMissingPreKeysValue);
  if (!stored) return tl::unexpected(from_store(stored.error()));
  const auto missing = stored->has_value() ? decode_missing((*stored)->view())
                                           : std::map<std::uint32_t, std::uint64_t>{};
  std::map<std::uint32_t, std::uint64_t> still_missing;
  std::vector<std::uint32_t> expired;
  for (const std::uint32_t id : *local) {
    if (held_by_server(held, id)) continue;
    const auto it = missing.find(id);
    const std::uint64_t since = it == missing.end() ? now : std::min(it->second, now);
    if (now - since > ttl) {
      expired.push_back(id);
    } else {
      still_missing[id] = since;
    }
  }

  // Signed prekeys: a message may name the one it replaced until the TTL has passed since.
  struct Signed {
    std::uint64_t timestamp;
    std::uint32_t id;
  };
  const std::uint32_t current = store.settings().next_signed_pre_key_id - 1;
  auto signed_ids = store.signed_pre_key_ids();
  if (!signed_ids) return tl::unexpected(from_store(signed_ids.error()));
  std::vector<Signed> signed_keys;
  for (const std::uint32_t id : *signed_ids) {
    auto record = store.load_signed_pre_key(protocol::SignedPreKeyId(id));
    if (!record) return tl::unexpected(from_protocol(record.error()));
    if (record->has_value()) signed_keys.push_back({(*record)->timestamp, id});
  }
  std::sort(signed_keys.begin(), signed_keys.end(), [](const Signed& a, const Signed& b) {
    return a.timestamp != b.timestamp ? a.timestamp < b.timestamp : a.id < b.id;
  });
  std::vector<std::uint32_t> replaced;
  for (std::size_t i = 0; i + 1 < signed_keys.size(); ++i) {
    const std::uint64_t successor_since = signed_keys[i + 1].timestamp;
    if (signed_keys[i].id != current && now > successor_since && now - successor_since > ttl) {
      replaced.push_back(signed_keys[i].id);
    }
  }

  const bool changed = !expired.empty() || !replaced.empty() || still_missing != missing;
  if (!changed) return {};
  bool failed = false;
  auto ok = store.transaction([&] {
    for (const std::uint32_t id : expired) {
      if (!store.remove_pre_key(protocol::PreKeyId(id))) return !(failed = true);
    }
    for (const std::uint32_t id : replaced) {
      if (!store.remove_signed_pre_key(protocol::SignedPreKeyId(id))) return !(failed = true);
    }
    if (!store.save_value(kMissingPreKeysValue, encode_missing(still_missing))) {
      return !(failed = true);
    }
    return true;
  });
  if (!ok) return tl::unexpected(from_store(ok.error()));
  if (failed || !*ok) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot delete used prekeys"));
  }
  return {};
}

void KeyMaintenance::maintain_if_due(const ConnectionPtr& c) {
  const bool low = link_.take_keys_low();
  bool due = false;
  {
    std::lock_guard crypto_lock(account_.crypto_mu);
    const protocol::SignedPreKeyId current(account_.store->settings().next_signed_pre_key_id - 1);
    auto spk = account_.store->load_signed_pre_key(current);
    due = spk && (!spk->has_value() || account_.protocol_clock.now_seconds() >
                                           (*spk)->timestamp + kSignedPreKeyMaxAgeSeconds);
    Bytes instance;
    auto changed = copy_changed(instance);
    due = due || (changed && *changed);
  }
  if (low || due) (void)maintain(c);
}

}  // namespace sotto::client
