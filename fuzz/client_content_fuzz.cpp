// What peers send a client, read from untrusted bytes (client/content_codec.h): the plaintext of
// a decrypted message (any device of any account can encrypt anything to us) and the plaintext
// content of envelope type 8, which needs no session at all. The first byte picks the reader:
// 0 a Content from another account, 1 a Content from our own account, 2 a PlaintextContent.
//
// Whatever comes out must be what the inbox may trust without looking again: history records
// with normalised usernames and a bounded id, sync content only from our own account, a resend
// request's ratchet key empty or a serialized public key, a device change (key transparency)
// well formed; for the everyday message types (quote, mentions, reactions, edits, deletes,
// timers, receipts, read syncs), normalised usernames, mentions inside the body, bounded sizes
// and at most one action per message; and the tree head gossiped beside any of them
// (client::gossip_head_of) of the right size, the Content's own.
#include <cstddef>
#include <cstdint>

#include "client/content_codec.h"
#include "content.pb.h"
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
      // Gossip: the tree head read without parsing the rest is one of the right size, and the
      // one a full parse finds when that succeeds.
      const Bytes head = client::gossip_head_of(input);
      fuzz::require(head.empty() || head.size() == 112, "a gossiped tree head of the wrong size");
      if (!head.empty()) {
        sotto::wire::content::Content parsed;
        if (parsed.ParseFromArray(input.data(), static_cast<int>(input.size()))) {
          fuzz::require(parsed.kt_tree_head() == std::string(head.begin(), head.end()),
                        "the gossiped tree head is not the one the Content carries");
        }
      }
      const client::ReceivedContent c = client::read_content(input, own);
      using Kind = client::ReceivedContent::Kind;
      const bool sync = c.kind == Kind::sent_copy || c.kind == Kind::history_request ||
                        c.kind == Kind::history_chunk || c.kind == Kind::device_change;
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
      if (c.kind == Kind::device_change) {
        // A link announced names no device; a named or removed device has an id.
        const auto& d = c.device_change;
        fuzz::require(d.device_id != 0 ||
                          (d.link_started && !d.removed && !d.auth_key && d.registration_id == 0),
                      "a device change naming no device accepted");
        fuzz::require(!(d.removed && d.link_started), "a link and a removal at once accepted");
      }
      fuzz::require(own || (c.kind != Kind::read_sync && c.kind != Kind::settings_sync),
                    "a read or settings sync accepted from another account");
      // The everyday message types: names normalised, mentions inside the body, one action.
      const auto& x = c.extras;
      if (x.quote) {
        fuzz::require(normalize_username(x.quote->author) == x.quote->author,
                      "a quote whose author is not a normalised username");
        fuzz::require(x.quote_text.size() <= client::kMaxQuoteTextBytes, "an oversized quote");
      }
      fuzz::require(x.mentions.size() <= static_cast<std::size_t>(client::kMaxMentions),
                    "too many mentions");
      for (const auto& m : x.mentions) {
        fuzz::require(normalize_username(m.user) == m.user && m.length > 0 &&
                          std::uint64_t{m.start} + m.length <= c.body.size(),
                      "a mention outside the body");
      }
      const int actions = (x.reaction_target ? 1 : 0) + (x.delete_target ? 1 : 0) +
                          (x.edit_target ? 1 : 0) + (x.expire_timer_update ? 1 : 0);
      fuzz::require(actions <= 1, "a message that is several actions at once");
      if (x.reaction_target) {
        fuzz::require(normalize_username(x.reaction_target->author) == x.reaction_target->author &&
                          x.emoji.size() <= client::kMaxEmojiBytes && c.body.empty(),
                      "a malformed reaction was read");
      }
      if (x.edit_target) {
        fuzz::require(*x.edit_target < c.timestamp && !c.body.empty(),
                      "an edit of a later message, or without text, was read");
      }
      fuzz::require(x.expire_timer <= client::kMaxExpireTimer, "a timer out of range");
      fuzz::require(c.timestamps.size() <= static_cast<std::size_t>(client::kMaxReceiptTimestamps),
                    "a receipt naming too many messages");
      for (const auto& r : c.reads) {
        fuzz::require(normalize_username(r.author) == r.author && r.timestamp != 0,
                      "a read sync with a malformed message");
      }
      if (c.kind == Kind::message || c.kind == Kind::sent_copy) {
        fuzz::require(c.timestamp != 0 && c.timestamp <= static_cast<std::uint64_t>(INT64_MAX),
                      "a message without a valid timestamp");
      }
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
