#include "client/multi_send.h"

#include <algorithm>

#include "client/util.h"
#include "service.pb.h"

namespace sotto::client {

svc::Request multi_send_request(const MultiSendMessage& message) {
  svc::Request request;
  auto* m = request.mutable_multi_send();
  m->set_client_message_id(bytes_string(message.message_id));
  m->set_timestamp(message.timestamp);
  m->set_shared_type(message.shared_type);
  m->set_shared_content(bytes_string(message.shared_content));
  m->set_leave_out_full(message.leave_out_full);
  m->mutable_recipients()->Reserve(static_cast<int>(message.recipients.size()));
  for (const auto& r : message.recipients) {
    auto* out = m->add_recipients();
    out->set_username(r.username);
    out->set_device_subset(r.device_subset);
    for (const auto& d : r.devices) {
      auto* device = out->add_devices();
      device->set_device_id(d.device_id);
      device->set_registration_id(d.registration_id);
      if (d.type) {
        device->set_type(*d.type);
        device->set_content(bytes_string(d.content));
      }
    }
  }
  return request;
}

Result<MultiSendOutcome> multi_send_outcome(const svc::Response& response) {
  MultiSendOutcome outcome;
  const auto& body = response.multi_send();
  switch (response.status().code()) {
    case svc::OK:
      outcome.status = MultiSendOutcome::Status::stored;
      outcome.server_timestamp = body.server_timestamp();
      for (const auto& full : body.queue_full()) {
        if (full.device_ids().empty()) continue;
        outcome.queue_full.push_back({full.username(),
                                      {full.device_ids().begin(), full.device_ids().end()},
                                      full.sender_share()});
      }
      return outcome;
    case svc::STALE_DEVICES:
      outcome.status = MultiSendOutcome::Status::stale_devices;
      for (const auto& m : body.mismatch()) {
        outcome.mismatches.push_back({m.username(),
                                      {m.missing().begin(), m.missing().end()},
                                      {m.extra().begin(), m.extra().end()},
                                      {m.stale().begin(), m.stale().end()}});
      }
      if (outcome.mismatches.empty()) break;  // says stale but not where: not usable
      return outcome;
    case svc::NOT_FOUND:
      outcome.status = MultiSendOutcome::Status::unknown_users;
      outcome.unknown_users.assign(body.unknown_users().begin(), body.unknown_users().end());
      if (outcome.unknown_users.empty()) break;
      return outcome;
    default:
      break;
  }
  return tl::unexpected(status_error(response));
}

MultiSendMessage resend_to_full(const MultiSendMessage& message, const MultiSendOutcome& outcome,
                                const std::array<std::uint8_t, 16>& new_id) {
  MultiSendMessage again;
  again.message_id = new_id;
  again.timestamp = message.timestamp;  // the same message: shown once (docs/delivery.md 1.4)
  again.shared_type = message.shared_type;
  again.leave_out_full = message.leave_out_full;
  bool uses_shared = false;
  for (const auto& full : outcome.queue_full) {
    for (const auto& r : message.recipients) {
      if (r.username != full.username) continue;
      MultiSendRecipient out{r.username, {}, true};
      for (const auto& d : r.devices) {
        if (std::find(full.device_ids.begin(), full.device_ids.end(), d.device_id) ==
            full.device_ids.end())
          continue;
        out.devices.push_back(d);
        uses_shared = uses_shared || !d.type;
      }
      if (!out.devices.empty()) again.recipients.push_back(std::move(out));
    }
  }
  if (uses_shared) again.shared_content = message.shared_content;
  return again;
}

Result<MultiSendOutcome> multi_send(const ConnectionPtr& c, const MultiSendMessage& message,
                                    std::chrono::milliseconds timeout) {
  auto response = c->call(multi_send_request(message), timeout);
  if (!response) return tl::unexpected(response.error());
  return multi_send_outcome(*response);
}

}  // namespace sotto::client
