#include "server/session.h"

#include "service.pb.h"

namespace sotto::server {

namespace svc = sotto::wire::service;

void send_response(Session& s, svc::Response&& response) {
  svc::Frame frame;
  *frame.mutable_response() = std::move(response);
  Bytes bytes(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(bytes.data());
  s.connection->send(std::move(bytes));
}

void send_push(Session& s, svc::Push&& p) {
  svc::Frame frame;
  *frame.mutable_push() = std::move(p);
  Bytes bytes(frame.ByteSizeLong());
  frame.SerializeWithCachedSizesToArray(bytes.data());
  s.connection->send(std::move(bytes));
}

}  // namespace sotto::server
