// What peers send a client, read from untrusted bytes (client/content_codec.h): the plaintext of
// a decrypted message (any device of any account can encrypt anything to us) and the plaintext
// content of envelope type 8, which needs no session at all. The first byte picks the reader:
// 0 a Content from another account, 1 a Content from our own account, 2 a PlaintextContent.
//
// Whatever comes out must be what the inbox may trust without looking again: history records
// with normalised usernames and a bounded id, sync content only from our own account, a resend
// request's ratchet key empty or a serialized public key.
#include <cstddef>
#include <cstdint>

#include "client/content_codec.h"
#include "fuzz_check.h"
#include "sotto/client.h"

using namespace sotto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const ByteView input(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
    case 1: {
      const bool own = data[0] % 3 == 1;
      const client::ReceivedContent c = client::read_content(input, own);
      using Kind = client::ReceivedContent::Kind;
      const bool sync = c.kind == Kind::sent_copy || c.kind == Kind::history_request ||
                        c.kind == Kind::history_chunk;
      fuzz::require(own || !sync, "sync content accepted from another account");
      if (c.kind == Kind::sent_copy) {
        fuzz::require(normalize_username(c.destination) == c.destination,
                      "a sync copy's destination is not a normalised username");
      }
      for (const auto& m : c.history) {
        fuzz::require(
            normalize_username(m.peer) == m.peer && normalize_username(m.sender) == m.sender,
            "a history record with a username that is not normalised");
        fuzz::require(!m.envelope_id.empty() && m.envelope_id.size() <= client::kMaxHistoryIdBytes,
                      "a history record with an impossible id");
      }
      fuzz::require(c.kind != Kind::unreadable || !c.why.empty(), "unreadable without a reason");
      break;
    }
    default: {
      auto r = client::read_plaintext_content(input);
      if (r) {
        fuzz::require(r->ratchet_key.empty() || r->ratchet_key.size() == 33,
                      "a resend request with a malformed ratchet key");
        fuzz::require(input.size() <= client::kMaxPlaintextContentBytes,
                      "an oversized plaintext content was read");
      }
      break;
    }
  }
  return 0;
}
