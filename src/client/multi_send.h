// The client's half of the multi-recipient send (service.proto MultiSendRequest): one upload of
// a message for many recipients (a group), which the server fans out to every listed device.
// This file only builds the request, makes the call and reads the answer: encrypting the shared
// content (a Sender Key message) and the per-device contents is the caller's job (the groups
// code), and so is the retry policy. A retry must reuse the same message id: the server then
// stores the send once, and answers the retry as it did the original. A device whose queue is
// full need not hold the send up (MultiSendMessage::leave_out_full): the others get it, and the
// answer lists that device (MultiSendOutcome::queue_full) to be sent to again later, under a new
// id (resend_to_full).
//
// Thread-safe: multi_send() holds no state and may be called from any thread with a connection
// (ServerLink::ensure_connected).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/errors.h"
#include "client/server_link.h"
#include "crypto/bytes.h"

namespace sotto::client {

// service.proto Envelope.type of a Sender Key message: what MultiSendMessage::shared_type holds.
inline constexpr std::uint32_t kSenderKeyMessageType = 4;

struct MultiSendDevice {
  std::uint32_t device_id = 0;
  std::uint32_t registration_id = 0;  // of the session the device's content was made for
  // This device's own content instead of the shared one (a Sender Key distribution message, a
  // 1:1 message), with its Envelope.type; none: the shared content.
  std::optional<std::uint32_t> type;
  Bytes content;  // only with `type`
};

struct MultiSendRecipient {
  std::string username;  // our own: our other devices (sync copies)
  std::vector<MultiSendDevice> devices;
  // Only the listed devices of this recipient (a resend): the others are not reported missing.
  bool device_subset = false;
};

struct MultiSendMessage {
  std::array<std::uint8_t, 16> message_id{};  // new_message_id(); the same for every retry
  std::uint64_t timestamp = 0;                // the message's, milliseconds
  std::uint32_t shared_type = kSenderKeyMessageType;
  Bytes shared_content;  // for every device without content of its own
  std::vector<MultiSendRecipient> recipients;
  // Let the server leave out devices whose queue is full (MultiSendOutcome::queue_full) instead
  // of refusing the whole send with QUEUE_FULL. Set it only when the caller sends to those
  // devices again later (resend_to_full): otherwise they never get the message.
  bool leave_out_full = false;
};

// How one recipient's device list differs from what the send listed (service.proto
// DeviceMismatch): fetch its devices again, make sessions or drop devices, then retry.
struct DeviceMismatch {
  std::string username;
  std::vector<std::uint32_t> missing;  // devices the send left out
  std::vector<std::uint32_t> extra;    // devices that do not exist (any more)
  std::vector<std::uint32_t> stale;    // devices re-installed: their registration id changed
};

// Devices of one recipient that did not get a stored send: their queue on the server is full
// (service.proto QueueFullDevices). Send to them again later: resend_to_full().
struct QueueFullDevices {
  std::string username;
  std::vector<std::uint32_t> device_ids;
  bool sender_share = false;  // the queue holds our share of it (others may still send to it)
};

// What the server answered. Nothing was stored unless `status` is stored.
struct MultiSendOutcome {
  enum class Status {
    // every listed device will get it (or, blocked, silently not), except those in `queue_full`
    stored,
    stale_devices,  // see `mismatches` (one per recipient concerned)
    unknown_users,  // see `unknown_users`: recipients without an account
  };
  Status status = Status::stored;
  std::uint64_t server_timestamp = 0;  // with stored
  std::vector<DeviceMismatch> mismatches;
  std::vector<std::string> unknown_users;
  // With stored: devices left out because their queue is full. Everyone else got the message.
  std::vector<QueueFullDevices> queue_full;
};

// The send of `message` to the devices `outcome` left out (queue_full) only, as a new send:
// `new_id` as its message id (a retry of the original's id would be answered as the original
// was, without storing anything), each recipient a device subset, the same contents (the shared
// content, and each device's own). Recipients and devices not in `message` are ignored. Empty
// recipients: nothing to send again.
[[nodiscard]] MultiSendMessage resend_to_full(const MultiSendMessage& message,
                                              const MultiSendOutcome& outcome,
                                              const std::array<std::uint8_t, 16>& new_id);

// Sends `message` on `c` and waits at most `timeout` for the answer. The three outcomes above
// are values; any other refusal (rate limited, queue full, storage full, malformed) is the
// server's status as an Error (status_error), and a lost connection or timeout the transport's
// error: the send may or may not have been stored, and a retry with the same message id is safe.
[[nodiscard]] Result<MultiSendOutcome> multi_send(const ConnectionPtr& c,
                                                  const MultiSendMessage& message,
                                                  std::chrono::milliseconds timeout);

// The request multi_send() sends, and how it reads the answer (exposed for tests and tools).
[[nodiscard]] svc::Request multi_send_request(const MultiSendMessage& message);
[[nodiscard]] Result<MultiSendOutcome> multi_send_outcome(const svc::Response& response);

}  // namespace sotto::client
