// The client store's own record codecs (store/client/sealed_codec.h) and the client's journal
// records (client/journal.h) on untrusted bytes: the plaintext of a sealed value from a store
// that was corrupted, or written by a buggy or hostile build holding the user's key. The first
// byte picks the record kind (settings, contact state, one-time prekey, signed prekey, held
// message, journal event); the rest is the plaintext.
//
// A record that decodes must encode back to exactly the input (the codecs are strict, so no two
// inputs decode to the same record; a contact record of the older version 1 encodes to version 2
// with the same meaning), settings must hold an authentication key pair whose public key is its
// seed's own and whose signatures verify under it, and every X25519 pair (identity, prekeys) must
// hold its private key's own public key.
#include <cstddef>
#include <cstdint>

#include "client/journal.h"
#include "crypto/ed25519.h"
#include "crypto/x25519.h"
#include "fuzz_check.h"
#include "store/client/sealed_codec.h"

using namespace sotto;
using namespace sotto::store::detail;

namespace {

bool is_own_pair(const protocol::KeyPair& pair) {
  return crypto::x25519_public_from_private(pair.private_key) == pair.public_key.bytes();
}

void check_settings(ByteView input) {
  auto s = decode_settings(input);
  if (!s) return;
  fuzz::require(fuzz::same_bytes(encode_settings(*s).view(), input),
                "decoded settings encode to other bytes");
  const auto again = crypto::Ed25519KeyPair::from_seed(
      crypto::Secret<crypto::kEd25519SeedSize>(s->auth_key.seed()));
  fuzz::require(again.public_key() == s->auth_key.public_key(),
                "decoded settings hold an authentication key that is not its seed's");
  const std::uint8_t message[] = {'f', 'u', 'z', 'z'};
  fuzz::require(crypto::ed25519_verify(s->auth_key.public_key(), message, s->auth_key.sign(message))
                    .has_value(),
                "a decoded authentication key signs what its public key does not verify");
  fuzz::require(is_own_pair(s->identity),
                "decoded settings hold an identity key that is not its private key's");
}

void check_contact(ByteView input) {
  auto c = decode_contact(input);
  if (!c) return;
  const crypto::SecretBuffer encoded = encode_contact(*c);
  if (input[0] == 1) {  // version 1: re-encoded as version 2, meaning the same
    auto again = decode_contact(encoded.view());
    fuzz::require(again && again->key == c->key && again->accepted == c->accepted &&
                      again->verified == c->verified && again->changed_at == c->changed_at,
                  "a version 1 contact state changes meaning when re-encoded");
    return;
  }
  fuzz::require(fuzz::same_bytes(encoded.view(), input),
                "a decoded contact state encodes to other bytes");
}

void check_held(ByteView input) {
  auto m = decode_held_message(input);
  if (!m) return;
  fuzz::require(fuzz::same_bytes(encode_held_message(*m).view(), input),
                "a decoded held message encodes to other bytes");
}

void check_event(ByteView input) {
  auto e = client::decode_event(input);
  if (!e) return;
  // Protobuf decoding is lenient (unknown fields, repeated scalars); what a decoded event
  // re-encodes to must decode to the same event.
  auto again = client::decode_event(client::encode_event(*e));
  fuzz::require(again && again->kind == e->kind && again->message.body == e->message.body &&
                    again->user == e->user && again->added == e->added &&
                    again->removed == e->removed,
                "a decoded journal event does not survive re-encoding");
}

void check_pre_key(ByteView input) {
  auto r = decode_pre_key(protocol::PreKeyId(7), input);
  if (!r) return;
  fuzz::require(r->id == protocol::PreKeyId(7), "a decoded prekey lost its id");
  fuzz::require(is_own_pair(r->key_pair), "a decoded prekey's public key is not its own");
  fuzz::require(fuzz::same_bytes(encode_pre_key(*r).view(), input),
                "a decoded prekey encodes to other bytes");
}

void check_signed_pre_key(ByteView input) {
  auto r = decode_signed_pre_key(protocol::SignedPreKeyId(3), input);
  if (!r) return;
  fuzz::require(r->id == protocol::SignedPreKeyId(3), "a decoded signed prekey lost its id");
  fuzz::require(is_own_pair(r->key_pair), "a decoded signed prekey's public key is not its own");
  fuzz::require(fuzz::same_bytes(encode_signed_pre_key(*r).view(), input),
                "a decoded signed prekey encodes to other bytes");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const ByteView record(data + 1, size - 1);
  switch (data[0] & 7) {
    case 0:
      check_settings(record);
      break;
    case 1:
      check_contact(record);
      break;
    case 2:
      check_pre_key(record);
      break;
    case 3:
      check_signed_pre_key(record);
      break;
    case 4:
      check_held(record);
      break;
    case 5:
      check_event(record);
      break;
    default:
      break;
  }
  return 0;
}
