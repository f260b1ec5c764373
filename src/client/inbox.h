// Receiving: each envelope the server pushes is processed exactly once. It is decrypted, and what
// it holds is stored and journalled in one store transaction with the mark that it was processed;
// only then is it acknowledged to the server. A message whose sender's identity key is not
// accepted is held back (identities.h) and shown when the user accepts the key. A message that
// cannot be decrypted is never dropped silently: the sending device is asked to send it again
// (outbox.h, session repair), and the failure is journalled and kept in the history. An envelope
// whose processing could not finish (the store failed, or the resend request could not be sent)
// is left unacknowledged, so the server delivers it again. An envelope from an account we block
// (blocks.h) is acknowledged and dropped unread.
//
// Thread-safe; one envelope at a time per caller (receive() or the listener).
#pragma once

#include "client/account.h"
#include "client/blocks.h"
#include "client/conversations.h"
#include "client/history.h"
#include "client/journal.h"
#include "client/outbox.h"
#include "client/server_link.h"
#include "client/sessions.h"

namespace sotto::client {

class Groups;

class Inbox {
 public:
  Inbox(Account& account, ServerLink& link, Sessions& sessions, Outbox& outbox, Journal& journal,
        History& history, Blocks& blocks, Conversations& conversations)
      : account_(account),
        link_(link),
        sessions_(sessions),
        outbox_(outbox),
        journal_(journal),
        history_(history),
        blocks_(blocks),
        conversations_(conversations) {}

  // Processes one envelope; false when it was left unacknowledged (to be delivered again).
  bool handle(const svc::Envelope& envelope);
  // Group content (groups.h) goes there; set once, before the first envelope.
  void set_groups(Groups* groups) { groups_ = groups; }

 private:
  struct Outcome;
  bool handle_plaintext(const svc::Envelope& envelope, const std::string& id);
  // Decrypts and applies the envelope in one store transaction; fills `outcome`.
  void apply(const svc::Envelope& envelope, const std::string& id, const Message& base,
             Outcome& outcome);
  bool record_failure(const svc::Envelope& envelope, const std::string& id, const Message& base,
                      const std::string& why);
  void acknowledge(const std::string& envelope_id);
  // Key transparency: a message that starts a session (a PreKeySignalMessage) is read only from a
  // device and identity key the log holds for its sender; otherwise it is recorded as not read,
  // with a security alert, and no session is made (a reply would encrypt to that device).
  enum class SenderCheck { go_on, refused, later };
  SenderCheck check_sender(const svc::Envelope& envelope, const std::string& id,
                           const Message& base);
  // Key transparency gossip: checks a tree head `sender` sent against ours and records the
  // alerts (KtClient::check_gossip). Runs once the envelope is processed, with no lock held.
  void check_gossip(const std::string& sender, ByteView head);

  Account& account_;
  ServerLink& link_;
  Sessions& sessions_;
  Outbox& outbox_;
  Journal& journal_;
  History& history_;
  Blocks& blocks_;
  Groups* groups_ = nullptr;
  Conversations& conversations_;
};

}  // namespace sotto::client
