#include "server/service.h"

namespace sotto::server {

namespace svc = sotto::wire::service;

void fail(svc::Response& out, svc::Code code, std::string_view message) {
  out.mutable_status()->set_code(code);
  out.mutable_status()->set_message(std::string(message));
}

void fail_retry(svc::Response& out, svc::Code code, std::string_view message,
                std::uint32_t retry_after_ms) {
  fail(out, code, message);
  out.mutable_status()->set_retry_after_ms(retry_after_ms);
}

svc::Code code_of(store::Error e) {
  switch (e) {
    case store::Error::not_found:
      return svc::NOT_FOUND;
    case store::Error::conflict:
      return svc::CONFLICT;
    case store::Error::queue_full:
    case store::Error::queue_share_full:
      return svc::QUEUE_FULL;
    case store::Error::invalid_token:
      return svc::FORBIDDEN;
    case store::Error::io:
      return svc::INTERNAL;
  }
  return svc::INTERNAL;
}

std::string device_key(store::AccountId account, store::DeviceId device) {
  return std::to_string(account) + "/" + std::to_string(device);
}

ByteView view(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string str(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace sotto::server
