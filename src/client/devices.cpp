#include "client/devices.h"

#include <algorithm>
#include <set>

#include "client/device_name.h"
#include "client/errors.h"
#include "content.pb.h"

namespace sotto::client {

namespace {

using SteadyClock = std::chrono::steady_clock;
namespace content = sotto::wire::content;

// How long telling the account's other devices of a device change may take.
constexpr std::chrono::seconds kOwnDeviceChangeTimeout{5};

// The known device list's stored form: the ids, 4 bytes each, big-endian.
Bytes encode_ids(const std::set<std::uint32_t>& ids) {
  Bytes out;
  for (auto id : ids) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(id >> s));
  }
  return out;
}

std::optional<std::set<std::uint32_t>> decode_ids(ByteView bytes) {
  if (bytes.size() % 4 != 0) return std::nullopt;
  std::set<std::uint32_t> out;
  for (std::size_t i = 0; i < bytes.size(); i += 4) {
    out.insert(static_cast<std::uint32_t>(bytes[i]) << 24 |
               static_cast<std::uint32_t>(bytes[i + 1]) << 16 |
               static_cast<std::uint32_t>(bytes[i + 2]) << 8 | bytes[i + 3]);
  }
  return out;
}

}  // namespace

Result<std::vector<Device>> Devices::list() {
  auto connected = link_.ensure_connected(SteadyClock::now() + account_.options.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  return list(connected->connection);
}

Result<std::vector<Device>> Devices::list(const ConnectionPtr& c) {
  svc::Request request;
  request.mutable_list_devices();
  auto r = link_.call_ok(c, std::move(request));
  if (!r) return tl::unexpected(r.error());
  std::vector<Device> out;
  const auto identity = account_.store->identity_key_pair();
  for (const auto& d : r->list_devices().devices()) {
    Device device{d.id(),          d.registration_id(),
                  d.created_day(), d.id() == account_.device_id,
                  d.id() == 1,     {}};
    if (!d.name().empty()) {
      auto name = open_device_name(as_bytes(d.name()), identity);
      device.name = name ? *name : std::string("(name unreadable)");
    }
    out.push_back(std::move(device));
  }
  return out;
}

Result<void> Devices::remove(std::uint32_t id) {
  if (id == account_.device_id) {
    return tl::unexpected(make_error(ErrorCode::invalid_argument,
                                     "a device cannot remove itself; remove it from another "
                                     "device of the account"));
  }
  auto connected = link_.ensure_connected(SteadyClock::now() + account_.options.request_timeout);
  if (!connected) return tl::unexpected(connected.error());
  svc::Request request;
  request.mutable_remove_device()->set_device_id(id);
  auto r = link_.call_ok(connected->connection, std::move(request));
  if (!r) {
    if (r.error().code == ErrorCode::not_found) {
      return tl::unexpected(make_error(ErrorCode::not_found, "the account has no such device"));
    }
    if (r.error().code == ErrorCode::forbidden) {
      return tl::unexpected(make_error(
          ErrorCode::forbidden,
          "a linked device cannot remove the account's primary device (the one that created "
          "it); only that device can remove the others"));
    }
    return tl::unexpected(r.error());
  }
  std::lock_guard crypto_lock(account_.crypto_mu);
  if (auto archived = sessions_.archive({account_.username, protocol::DeviceId(id)}); !archived) {
    return archived;
  }
  return {};
}

Result<void> Devices::monitor(const ConnectionPtr& c, bool hold) {
  auto checked = account_.kt.monitor_own(c, account_.options.request_timeout, account_.username,
                                         account_.device_id, account_.auth_key.public_key(), hold);
  if (!checked) return tl::unexpected(checked.error());
  if (checked->held) recheck_ = true;
  if (checked->alerts.empty()) return {};
  std::lock_guard crypto_lock(account_.crypto_mu);
  for (Event& e : checked->alerts) {
    if (!journal_.record(e)) {
      return tl::unexpected(make_error(ErrorCode::store, "cannot record a security alert"));
    }
  }
  return {};
}

Result<void> Devices::recheck(const ConnectionPtr& c) {
  if (!recheck_.exchange(false)) return {};
  return monitor(c, false);
}

void Devices::tell_own_devices(const OwnDeviceChange& change, Outbox& outbox) {
  content::Content message;
  auto* d = message.mutable_sync()->mutable_device_change();
  d->set_link_started(change.link_started);
  d->set_device_id(change.device_id);
  d->set_registration_id(change.registration_id);
  if (change.auth_key) d->set_auth_key(bytes_string(*change.auth_key));
  d->set_removed(change.removed);
  // Best effort and short, as a trust update: a device that misses it reports the device.
  (void)outbox.send_to_own_devices(encode_padded(message), kOwnDeviceChangeTimeout);
}

std::optional<std::array<std::uint8_t, 32>> Devices::accepted_auth_key(std::uint32_t id) {
  auto own = account_.store->load_value(kKtOwnValue);
  if (!own || !own->has_value()) return std::nullopt;
  auto value = transparency::decode_account_value((**own).view());
  if (!value) return std::nullopt;
  for (const auto& d : value->devices) {
    if (d.device_id == id) return d.auth_key;
  }
  return std::nullopt;
}

Result<void> Devices::refresh(const ConnectionPtr& c) {
  auto devices = list(c);
  if (!devices) return tl::unexpected(devices.error());
  std::set<std::uint32_t> now;
  for (const auto& d : *devices) now.insert(d.id);
  std::lock_guard crypto_lock(account_.crypto_mu);
  auto stored = account_.store->load_value(kKnownDevicesValue);
  if (!stored) return tl::unexpected(from_store(stored.error()));
  std::optional<std::set<std::uint32_t>> before;
  if (stored->has_value()) before = decode_ids((*stored)->view());
  if (before && *before == now) return {};
  Event e;
  e.kind = Event::Kind::devices_changed;
  if (before) {
    std::set_difference(now.begin(), now.end(), before->begin(), before->end(),
                        std::back_inserter(e.added));
    std::set_difference(before->begin(), before->end(), now.begin(), now.end(),
                        std::back_inserter(e.removed));
  }
  bool ok = false;
  auto committed = account_.store->transaction([&] {
    ok = account_.store->save_value(kKnownDevicesValue, encode_ids(now)).has_value() &&
         (!before || journal_.record(e).has_value());
    return ok;
  });
  if (!committed || !*committed || !ok) {
    return tl::unexpected(make_error(ErrorCode::store, "cannot record the device list"));
  }
  return {};
}

}  // namespace sotto::client
