#include "server/context.h"

#include <algorithm>

#include "server/limits.h"

namespace sotto::server {

RateLimits::RateLimits(const ServerConfig& config)
    : registrations(config.registrations_per_minute,
                    std::max<std::uint32_t>(5, config.registrations_per_minute / 6)),
      logins(config.logins_per_minute, std::max<std::uint32_t>(20, config.logins_per_minute / 6)),
      account_logins(config.logins_per_account_per_minute,
                     std::max(kMinLoginsPerAccountBurst, config.logins_per_account_per_minute / 2)),
      bundle_fetches(config.bundle_fetches_per_minute,
                     std::max<std::uint32_t>(10, config.bundle_fetches_per_minute / 4)),
      pre_key_handouts(config.pre_keys_per_device_per_hour, std::chrono::hours(1),
                       config.pre_keys_per_device_per_hour),
      block_changes(kBlockChangesPerAccountPerMinute, kBlockChangesBurst),
      recoveries(kRecoveriesPerAccountPerHour, std::chrono::hours(1), kRecoveriesPerAccountPerHour),
      sends(config.sends_per_minute, std::max<std::uint32_t>(10, config.sends_per_minute / 4)),
      send_bytes(RateLimiter::Rate{static_cast<double>(config.send_bytes_per_minute) / 60.0,
                                   static_cast<double>(config.send_bytes_per_minute) / 2.0}),
      acks(RateLimiter::Rate{config.acks_per_minute / 60.0, config.acks_per_minute / 5.0}),
      device_lists(config.device_lists_per_minute,
                   std::max<std::uint32_t>(5, config.device_lists_per_minute / 4)),
      link_tokens(config.link_tokens_per_hour, std::chrono::hours(1),
                  std::max<std::uint32_t>(2, config.link_tokens_per_hour / 4)),
      provisioning(config.provisioning_per_minute,
                   std::max<std::uint32_t>(5, config.provisioning_per_minute / 3)),
      kt_audits(kKtAuditsPerAddressPerMinute, kKtAuditsBurst) {}

Context::Context(const ServerConfig& config_in, store::ServerStore& store_in, Metrics& metrics_in,
                 crypto::Rng& rng_in, NowMs now_ms_in)
    : config(config_in),
      store(store_in),
      metrics(metrics_in),
      rng(rng_in),
      now_ms(std::move(now_ms_in)),
      registry(metrics_in),
      limits(config_in) {}

void Context::update_stored_bytes_gauge() {
  metrics.stored_bytes.store(static_cast<std::int64_t>(store.messages().stored_bytes()),
                             std::memory_order_relaxed);
}

}  // namespace sotto::server
