// Writes the seed corpora under fuzz/corpus/<target>/: genuine messages, bundles and records from
// the fixture conversation (fixture.h), plus near-valid variants of them (one field missing, a key
// of the wrong size, an unknown field, a legacy version byte...). Everything comes from
// DeterministicRng, so running it again writes the same bytes. Not run by the build:
//   sotto_fuzz_make_corpus fuzz/corpus
// Files it writes are named after what they hold; files libFuzzer merged in keep their hash names.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <string_view>

#include "fixture.h"
#include "keys.pb.h"
#include "protocol/limits.h"
#include "protocol/messages.h"
#include "protocol/session_state.h"
#include "signal.pb.h"
#include "storage.pb.h"
#ifdef SOTTO_FUZZ_ACCOUNT_DATA
#include <sstream>

#include "backup_file_fuzz.h"
#include "client/backup_file.h"
#endif
#ifdef SOTTO_FUZZ_CLIENT_STORE
#include "crypto/ed25519.h"
#include "protocol/keys.h"
#include "store/client/sealed_codec.h"
#endif
#ifdef SOTTO_FUZZ_CLIENT
#include "client/journal.h"
#include "content.pb.h"
#endif

namespace {

using namespace sotto;
using namespace sotto::protocol;
namespace fs = std::filesystem;
namespace pb_signal = sotto::wire::signal;
namespace pb_storage = sotto::wire::storage;

// An extra varint field (number 15) that no Sotto message defines.
constexpr std::uint8_t kUnknownField[] = {0x78, 0x01};

class CorpusWriter {
 public:
  explicit CorpusWriter(fs::path root) : root_(std::move(root)) {}

  void write(std::string_view target, std::string_view name, ByteView bytes) {
    const fs::path dir = root_ / target;
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
      std::exit(1);
    }
    ++written_;
  }
  std::size_t written() const { return written_; }

 private:
  fs::path root_;
  std::size_t written_ = 0;
};

template <typename Proto>
Bytes serialize(const Proto& msg) {
  const std::string s = msg.SerializeAsString();
  return {s.begin(), s.end()};
}

template <typename Proto>
Proto parse(ByteView bytes) {
  Proto msg;
  if (!msg.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    std::fprintf(stderr, "fixture bytes do not parse\n");
    std::exit(1);
  }
  return msg;
}

Bytes concat(std::initializer_list<ByteView> parts) {
  Bytes out;
  for (ByteView p : parts) append(out, p);
  return out;
}

Bytes with_bad_key_type(const std::string& serialized_key) {
  Bytes k(serialized_key.begin(), serialized_key.end());
  if (!k.empty()) k[0] = 0x06;
  return k;
}

std::string str(ByteView b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// --- SignalMessage: version byte || protobuf || 8-byte MAC --------------------------------------
Bytes edit_signal(const Bytes& genuine, const std::function<void(pb_signal::SignalMessage&)>& edit,
                  ByteView extra = {}) {
  const ByteView body(genuine.data() + 1, genuine.size() - 1 - kMacSize);
  auto msg = parse<pb_signal::SignalMessage>(body);
  edit(msg);
  const ByteView mac(genuine.data() + genuine.size() - kMacSize, kMacSize);
  return concat({ByteView(genuine.data(), 1), serialize(msg), extra, mac});
}

void signal_messages(CorpusWriter& w, const fuzz::Conversation& c) {
  constexpr std::string_view kTarget = "signal_message_fuzz";
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    w.write(kTarget, "genuine_" + std::to_string(i), c.messages[i].inner);
  }
  const Bytes& g = c.messages[4].inner;
  w.write(kTarget, "truncated_mac", ByteView(g.data(), g.size() - 1));
  w.write(kTarget, "legacy_version", concat({Bytes{0x22}, ByteView(g).subspan(1)}));
  w.write(kTarget, "future_version", concat({Bytes{0x43}, ByteView(g).subspan(1)}));
  w.write(kTarget, "no_ciphertext", edit_signal(g, [](auto& m) { m.clear_ciphertext(); }));
  w.write(kTarget, "no_counter", edit_signal(g, [](auto& m) { m.clear_counter(); }));
  w.write(kTarget, "empty_ciphertext", edit_signal(g, [](auto& m) { m.set_ciphertext(""); }));
  w.write(kTarget, "bad_key_type", edit_signal(g, [](auto& m) {
            m.set_ratchet_key(str(with_bad_key_type(m.ratchet_key())));
          }));
  w.write(kTarget, "short_key", edit_signal(g, [](auto& m) {
            m.set_ratchet_key(m.ratchet_key().substr(0, kSerializedPublicKeySize - 1));
          }));
  w.write(kTarget, "counter_max", edit_signal(g, [](auto& m) { m.set_counter(0xFFFFFFFFu); }));
  w.write(kTarget, "unknown_field",
          edit_signal(
              g, [](auto&) {}, kUnknownField));
}

// --- PreKeySignalMessage: version byte || protobuf ----------------------------------------------
Bytes edit_pre_key(const Bytes& genuine,
                   const std::function<void(pb_signal::PreKeySignalMessage&)>& edit,
                   ByteView extra = {}) {
  auto msg = parse<pb_signal::PreKeySignalMessage>(ByteView(genuine).subspan(1));
  edit(msg);
  return concat({ByteView(genuine.data(), 1), serialize(msg), extra});
}

void pre_key_messages(CorpusWriter& w, const fuzz::Conversation& c) {
  constexpr std::string_view kTarget = "pre_key_signal_message_fuzz";
  const Bytes* unseen = nullptr;
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    if (c.messages[i].type != MessageType::pre_key) continue;
    w.write(kTarget, "genuine_" + std::to_string(i), c.messages[i].serialized);
    if (unseen == nullptr && !c.messages[i].delivered) unseen = &c.messages[i].serialized;
  }
  const Bytes& g = *unseen;
  w.write(kTarget, "truncated", ByteView(g.data(), g.size() - 1));
  w.write(kTarget, "legacy_version", concat({Bytes{0x22}, ByteView(g).subspan(1)}));
  w.write(kTarget, "no_message", edit_pre_key(g, [](auto& m) { m.clear_message(); }));
  w.write(kTarget, "no_signed_pre_key_id",
          edit_pre_key(g, [](auto& m) { m.clear_signed_pre_key_id(); }));
  w.write(kTarget, "no_pre_key_id", edit_pre_key(g, [](auto& m) { m.clear_pre_key_id(); }));
  w.write(kTarget, "bad_base_key",
          edit_pre_key(g, [](auto& m) { m.set_base_key(str(with_bad_key_type(m.base_key()))); }));
  w.write(kTarget, "inner_legacy_version", edit_pre_key(g, [](auto& m) {
            std::string inner = m.message();
            inner[0] = 0x22;
            m.set_message(inner);
          }));
  w.write(kTarget, "inner_truncated", edit_pre_key(g, [](auto& m) {
            m.set_message(m.message().substr(0, m.message().size() / 2));
          }));
  w.write(kTarget, "unknown_field",
          edit_pre_key(
              g, [](auto&) {}, kUnknownField));
}

// --- SenderKeyMessage: version byte || protobuf || 64-byte signature ----------------------------
Bytes edit_sender_key(const Bytes& genuine,
                      const std::function<void(pb_signal::SenderKeyMessage&)>& edit,
                      ByteView extra = {}) {
  const ByteView body(genuine.data() + 1, genuine.size() - 1 - kSignatureSize);
  auto msg = parse<pb_signal::SenderKeyMessage>(body);
  edit(msg);
  const ByteView sig(genuine.data() + genuine.size() - kSignatureSize, kSignatureSize);
  return concat({ByteView(genuine.data(), 1), serialize(msg), extra, sig});
}

void sender_key_messages(CorpusWriter& w, const fuzz::Conversation& c) {
  constexpr std::string_view kTarget = "sender_key_message_fuzz";
  for (std::size_t i = 0; i < c.group_messages.size(); ++i) {
    w.write(kTarget, "genuine_" + std::to_string(i), c.group_messages[i].serialized);
  }
  const Bytes& g = c.group_messages[1].serialized;
  w.write(kTarget, "truncated_signature", ByteView(g.data(), g.size() - 1));
  w.write(kTarget, "legacy_version", concat({Bytes{0x22}, ByteView(g).subspan(1)}));
  w.write(kTarget, "no_iteration", edit_sender_key(g, [](auto& m) { m.clear_iteration(); }));
  w.write(kTarget, "empty_ciphertext", edit_sender_key(g, [](auto& m) { m.set_ciphertext(""); }));
  w.write(kTarget, "iteration_max",
          edit_sender_key(g, [](auto& m) { m.set_iteration(0xFFFFFFFFu); }));
  w.write(kTarget, "unknown_field",
          edit_sender_key(
              g, [](auto&) {}, kUnknownField));
}

// --- SenderKeyDistributionMessage: version byte || protobuf -------------------------------------
Bytes edit_distribution(const Bytes& genuine,
                        const std::function<void(pb_signal::SenderKeyDistributionMessage&)>& edit,
                        ByteView extra = {}) {
  auto msg = parse<pb_signal::SenderKeyDistributionMessage>(ByteView(genuine).subspan(1));
  edit(msg);
  return concat({ByteView(genuine.data(), 1), serialize(msg), extra});
}

void distribution_messages(CorpusWriter& w, const fuzz::Conversation& c) {
  constexpr std::string_view kTarget = "sender_key_distribution_fuzz";
  const Bytes& g = c.sender_key_distribution;
  w.write(kTarget, "genuine", g);
  w.write(kTarget, "legacy_version", concat({Bytes{0x22}, ByteView(g).subspan(1)}));
  w.write(kTarget, "short_chain_key",
          edit_distribution(g, [](auto& m) { m.set_chain_key(m.chain_key().substr(0, 31)); }));
  w.write(kTarget, "no_signing_key", edit_distribution(g, [](auto& m) { m.clear_signing_key(); }));
  w.write(kTarget, "bad_key_type", edit_distribution(g, [](auto& m) {
            m.set_signing_key(str(with_bad_key_type(m.signing_key())));
          }));
  w.write(kTarget, "iteration_max",
          edit_distribution(g, [](auto& m) { m.set_iteration(0xFFFFFFFFu); }));
  w.write(kTarget, "unknown_field",
          edit_distribution(
              g, [](auto&) {}, kUnknownField));
}

// --- PreKeyBundle: protobuf ---------------------------------------------------------------------
Bytes edit_bundle(const Bytes& genuine, const std::function<void(sotto::wire::PreKeyBundle&)>& edit,
                  ByteView extra = {}) {
  auto msg = parse<sotto::wire::PreKeyBundle>(genuine);
  edit(msg);
  return concat({serialize(msg), extra});
}

void bundles(CorpusWriter& w, const fuzz::Conversation& c) {
  constexpr std::string_view kTarget = "pre_key_bundle_fuzz";
  for (std::size_t i = 0; i < c.bundles.size(); ++i) {
    w.write(kTarget, "genuine_" + std::to_string(i), c.bundles[i]);
  }
  const Bytes& g = c.bundles[0];
  w.write(kTarget, "pre_key_id_without_key", edit_bundle(g, [](auto& m) { m.clear_pre_key(); }));
  w.write(kTarget, "bad_signature", edit_bundle(g, [](auto& m) {
            std::string sig = m.signed_pre_key_signature();
            sig[10] = static_cast<char>(sig[10] ^ 0x01);
            m.set_signed_pre_key_signature(sig);
          }));
  w.write(kTarget, "short_signature", edit_bundle(g, [](auto& m) {
            m.set_signed_pre_key_signature(m.signed_pre_key_signature().substr(0, 63));
          }));
  w.write(kTarget, "no_identity_key", edit_bundle(g, [](auto& m) { m.clear_identity_key(); }));
  w.write(kTarget, "bad_pre_key_type",
          edit_bundle(g, [](auto& m) { m.set_pre_key(str(with_bad_key_type(m.pre_key()))); }));
  w.write(kTarget, "unknown_field",
          edit_bundle(
              g, [](auto&) {}, kUnknownField));
}

// --- SessionRecord and SenderKeyRecord: storage protobufs ---------------------------------------
Bytes edit_session(const Bytes& genuine,
                   const std::function<void(pb_storage::SessionRecord&)>& edit) {
  auto msg = parse<pb_storage::SessionRecord>(genuine);
  edit(msg);
  return serialize(msg);
}

Bytes edit_sender_keys(const Bytes& genuine,
                       const std::function<void(pb_storage::SenderKeyRecord&)>& edit) {
  auto msg = parse<pb_storage::SenderKeyRecord>(genuine);
  edit(msg);
  return serialize(msg);
}

void records(CorpusWriter& w, const fuzz::Conversation& c) {
  constexpr std::string_view kTarget = "session_record_fuzz";
  w.write(kTarget, "bob_session", c.bob_record);
  w.write(kTarget, "alice_session", c.alice_record);
  w.write(kTarget, "empty_session", SessionRecord{}.encode().view());
  w.write(kTarget, "bob_sender_keys", c.bob_sender_key_record);
  w.write(kTarget, "alice_sender_keys", c.alice_sender_key_record);

  const Bytes& bob = c.bob_record;
  w.write(kTarget, "session_format_2", edit_session(bob, [](auto& r) { r.set_format(2); }));
  w.write(kTarget, "session_no_current", edit_session(bob, [](auto& r) { r.clear_current(); }));
  w.write(kTarget, "session_version_2",
          edit_session(bob, [](auto& r) { r.mutable_current()->set_version(2); }));
  w.write(kTarget, "session_archived_made_current",
          edit_session(bob, [](auto& r) { r.mutable_current()->Swap(r.mutable_previous(0)); }));
  w.write(
      kTarget, "session_sender_index_max", edit_session(bob, [](auto& r) {
        r.mutable_current()->mutable_sender_chain()->mutable_chain_key()->set_index(0xFFFFFFFFu);
      }));
  w.write(kTarget, "session_receiver_index_near_max", edit_session(bob, [](auto& r) {
            for (auto& rc : *r.mutable_previous(0)->mutable_receiver_chains()) {
              rc.mutable_chain_key()->set_index(0xFFFFFFF0u);
            }
          }));
  w.write(kTarget, "session_skipped_expired", edit_session(bob, [](auto& r) {
            for (auto& rc : *r.mutable_previous(0)->mutable_receiver_chains()) {
              for (auto& sk : *rc.mutable_skipped()) sk.set_created_at(0);
            }
          }));
  w.write(kTarget, "session_skipped_without_counter", edit_session(bob, [](auto& r) {
            for (auto& rc : *r.mutable_previous(0)->mutable_receiver_chains()) {
              for (auto& sk : *rc.mutable_skipped()) sk.clear_counter();
            }
          }));
  w.write(kTarget, "session_short_root_key", edit_session(bob, [](auto& r) {
            r.mutable_current()->set_root_key(r.current().root_key().substr(0, 31));
          }));

  const Bytes& keys = c.bob_sender_key_record;
  w.write(kTarget, "sender_keys_format_2",
          edit_sender_keys(keys, [](auto& r) { r.set_format(2); }));
  w.write(kTarget, "sender_keys_no_signing_public",
          edit_sender_keys(keys, [](auto& r) { r.mutable_states(0)->clear_signing_public(); }));
  w.write(kTarget, "sender_keys_index_near_max", edit_sender_keys(keys, [](auto& r) {
            r.mutable_states(0)->mutable_chain_key()->set_index(0xFFFFFFF0u);
          }));
  w.write(kTarget, "sender_keys_short_seed", edit_sender_keys(keys, [](auto& r) {
            auto* sk = r.mutable_states(0)->mutable_skipped(0);
            sk->set_seed(sk->seed().substr(0, 31));
          }));
}

// --- session_decrypt_fuzz: mode byte || ... (see session_decrypt_fuzz.cpp) ----------------------
void decrypt_inputs(CorpusWriter& w, const fuzz::Conversation& c) {
  constexpr std::string_view kTarget = "session_decrypt_fuzz";
  constexpr std::uint8_t kSignal = 0, kPreKey = 1, kMutate = 2, kAfter = 3, kAfterPreKey = 4 | 3;
  constexpr std::uint8_t kTrustEveryIdentity = 8;
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    const fuzz::Genuine& g = c.messages[i];
    const std::uint8_t mode = g.type == MessageType::pre_key ? kPreKey : kSignal;
    const std::string tag = std::to_string(i) + (g.delivered ? "_replay" : "_held");
    w.write(kTarget, "direct_" + tag, concat({Bytes{mode}, g.serialized}));
    if (g.delivered) continue;
    // An all-zero mask as long as the message: every byte is one mutation away from a change.
    w.write(kTarget, "xor_" + tag,
            concat({Bytes{kMutate, static_cast<std::uint8_t>(i)}, Bytes(g.serialized.size(), 0)}));
    if (g.type == MessageType::pre_key) {
      // Bob trusting any identity: a changed outer identity key gets past the trust check. The
      // second mask flips one bit of alice's identity key, which only the outer message carries
      // (a regression input: it must not decrypt and leave that key recorded as alice's).
      const Bytes header{kMutate | kTrustEveryIdentity, static_cast<std::uint8_t>(i)};
      w.write(kTarget, "xor_trusting_" + tag, concat({header, Bytes(g.serialized.size(), 0)}));
      const auto identity = c.alice_identity.serialize();
      const auto at =
          std::search(g.serialized.begin(), g.serialized.end(), identity.begin(), identity.end());
      if (at != g.serialized.end()) {
        Bytes mask(g.serialized.size(), 0);
        mask[static_cast<std::size_t>(at - g.serialized.begin()) + 5] = 0x40;
        w.write(kTarget, "forged_identity_" + tag, concat({header, mask}));
      }
    }
  }
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    const fuzz::Genuine& g = c.messages[i];
    if (g.delivered) continue;
    // The same message twice (the second must be refused), then another held message after it.
    const std::uint8_t again = g.type == MessageType::pre_key ? kAfterPreKey : kAfter;
    w.write(kTarget, "twice_" + std::to_string(i),
            concat({Bytes{again, static_cast<std::uint8_t>(i)}, g.serialized}));
    for (std::size_t j = i + 1; j < c.messages.size(); ++j) {
      const fuzz::Genuine& next = c.messages[j];
      if (next.delivered) continue;
      const std::uint8_t then = next.type == MessageType::pre_key ? kAfterPreKey : kAfter;
      w.write(kTarget, "after_" + std::to_string(i) + "_" + std::to_string(j),
              concat({Bytes{then, static_cast<std::uint8_t>(i)}, next.serialized}));
      break;
    }
  }
}

#ifdef SOTTO_FUZZ_CLIENT_STORE
// client_record_fuzz: a kind byte (0 settings, 1 contact state, 2 prekey, 3 signed prekey) then
// the plaintext of a sealed record, genuine or one step from it.
void client_records(CorpusWriter& w) {
  constexpr std::string_view kTarget = "client_record_fuzz";
  crypto::DeterministicRng rng(8101);
  auto put = [&](std::string_view name, std::uint8_t kind, ByteView plain) {
    w.write(kTarget, name, concat({Bytes{kind}, Bytes(plain.begin(), plain.end())}));
  };
  auto variants = [&](const std::string& name, std::uint8_t kind, ByteView plain) {
    put(name, kind, plain);
    put(name + "_truncated", kind, plain.first(plain.size() - 1));
    put(name + "_trailing", kind, concat({Bytes(plain.begin(), plain.end()), Bytes{0}}));
    Bytes version(plain.begin(), plain.end());
    version[0] ^= 0x01;
    put(name + "_version", kind, version);
  };

  store::AccountSettings s;
  s.username = "alice";
  s.device_id = 2;
  s.server_host = "chat.example.org";
  s.server_port = 7443;
  s.server_fingerprint = std::string(64, 'a');
  s.auth_key = crypto::Ed25519KeyPair::generate(rng);
  s.identity = IdentityKeyPair::generate(rng);
  s.registration_id = generate_registration_id(rng);
  s.next_pre_key_id = 101;
  s.next_signed_pre_key_id = 2;
  const crypto::SecretBuffer settings = store::detail::encode_settings(s);
  variants("settings", 0, settings.view());
  // Another key's public key in front of the seed (refused: it is not the seed's own).
  const auto other = crypto::Ed25519KeyPair::generate(rng);
  Bytes swapped(settings.view().begin(), settings.view().end());
  const auto& pub = s.auth_key.public_key();
  const auto at = std::search(swapped.begin(), swapped.end(), pub.begin(), pub.end());
  std::copy(other.public_key().begin(), other.public_key().end(), at);
  put("settings_foreign_auth_key", 0, swapped);

  store::detail::ContactState contact{IdentityKeyPair::generate(rng).public_key, true, true,
                                      1700000000};
  variants("contact", 1, store::detail::encode_contact(contact).view());
  variants("contact_without_key", 1, store::detail::encode_contact({}).view());

  const auto pre_keys = generate_pre_keys(rng, PreKeyId(7), 1);
  variants("pre_key", 2, store::detail::encode_pre_key(pre_keys.front()).view());
  const auto spk = generate_signed_pre_key(rng, s.identity, SignedPreKeyId(3), 1700000000);
  variants("signed_pre_key", 3, store::detail::encode_signed_pre_key(spk).view());
  // A version 1 contact state (before "accepted"): it decodes, and re-encodes as version 2.
  {
    Bytes v1{1, 1};
    const auto key = IdentityKeyPair::generate(rng).public_key;
    v1.insert(v1.end(), key.view().begin(), key.view().end());
    v1.push_back(0);
    for (int i = 0; i < 8; ++i) v1.push_back(static_cast<std::uint8_t>(i == 7 ? 9 : 0));
    put("contact_v1", 1, v1);
  }
  const store::StoredMessage held{"0011aabb", "bob", "bob", 2, 1700000000000, "held text", false};
  variants("held_message", 4, store::detail::encode_held_message(held).view());
#ifdef SOTTO_FUZZ_CLIENT
  Event e;
  e.kind = Event::Kind::identity_changed;
  e.user = "bob";
  e.changed_at = 1700000000000;
  e.held = 2;
  put("event_identity_changed", 5, client::encode_event(e));
  Event m;
  m.message.body = "hello";
  m.message.from = "bob";
  m.message.conversation = "bob";
  put("event_message", 5, client::encode_event(m));
  Event d;
  d.kind = Event::Kind::devices_changed;
  d.added = {2, 3};
  d.removed = {4};
  put("event_devices_changed", 5, client::encode_event(d));
#endif
}
#endif

#ifdef SOTTO_FUZZ_CLIENT
// client_content_fuzz: a reader byte (0 Content from another account, 1 from our own account,
// 2 PlaintextContent), then the bytes.
void client_contents(CorpusWriter& w) {
  constexpr std::string_view kTarget = "client_content_fuzz";
  namespace content = sotto::wire::content;
  auto put = [&](std::string_view name, std::uint8_t reader, const std::string& bytes) {
    w.write(kTarget, name, concat({Bytes{reader}, Bytes(bytes.begin(), bytes.end())}));
  };
  content::Content data;
  data.mutable_data()->set_body("hello");
  data.mutable_data()->set_timestamp(1700000000000);
  put("data", 0, data.SerializeAsString());
  // Gossip: a tree head beside the message (its bytes need not be a real head to be read).
  content::Content gossip = data;
  gossip.set_kt_tree_head(std::string(112, '\x07'));
  put("data_with_tree_head", 0, gossip.SerializeAsString());
  gossip.set_kt_tree_head(std::string(111, '\x07'));
  put("data_with_short_tree_head", 1, gossip.SerializeAsString());
  content::Content sent;
  sent.mutable_sync()->mutable_sent()->set_destination("bob");
  sent.mutable_sync()->mutable_sent()->set_timestamp(1700000000000);
  sent.mutable_sync()->mutable_sent()->mutable_message()->set_body("to bob");
  put("sync_sent_own", 1, sent.SerializeAsString());
  put("sync_sent_foreign", 0, sent.SerializeAsString());
  content::Content request;
  request.mutable_sync()->mutable_history_request()->set_history(true);
  put("history_request", 1, request.SerializeAsString());
  content::Content chunk;
  auto* h = chunk.mutable_sync()->mutable_history();
  h->set_sequence(0);
  h->set_last(true);
  h->set_total(3);
  for (const char* peer : {"bob", "Not A User", "carol"}) {
    auto* r = h->add_messages();
    r->set_id("00112233");
    r->set_peer(peer);
    r->set_sender("alice");
    r->set_timestamp(1700000000000);
    r->set_body("old message");
    r->set_outgoing(true);
  }
  put("history_chunk", 1, chunk.SerializeAsString());
  // Key transparency: another device of the account linked or removed one (OwnDeviceChange).
  content::Content change;
  change.mutable_sync()->mutable_device_change()->set_link_started(true);
  put("device_change_link_started", 1, change.SerializeAsString());
  auto* named = change.mutable_sync()->mutable_device_change();
  named->set_link_started(false);
  named->set_device_id(3);
  named->set_registration_id(4242);
  named->set_auth_key(std::string(32, '\x67'));
  put("device_change_linked", 1, change.SerializeAsString());
  put("device_change_foreign", 0, change.SerializeAsString());
  named->set_auth_key(std::string(31, '\x67'));
  put("device_change_short_key", 1, change.SerializeAsString());
  named->clear_auth_key();
  named->set_removed(true);
  put("device_change_removed", 1, change.SerializeAsString());
  content::PlaintextContent plain;
  plain.mutable_decryption_error()->set_timestamp(1700000000000);
  plain.mutable_decryption_error()->set_ratchet_key(std::string(33, '\x05'));
  plain.mutable_decryption_error()->set_device_id(2);
  put("decryption_error", 2, plain.SerializeAsString());
  plain.mutable_decryption_error()->set_ratchet_key(std::string(5, '\x05'));
  put("decryption_error_short_key", 2, plain.SerializeAsString());

  // The everyday message types, well formed and not.
  content::Content reply;
  auto* d = reply.mutable_data();
  d->set_body("@bob yes");
  d->set_timestamp(1700000000100);
  d->mutable_quote()->set_author("bob");
  d->mutable_quote()->set_timestamp(1700000000000);
  d->mutable_quote()->set_text("question?");
  auto* mention = d->add_mentions();
  mention->set_user("bob");
  mention->set_start(0);
  mention->set_length(4);
  d->set_expire_timer(3600);
  put("reply_mention_timer", 0, reply.SerializeAsString());
  mention->set_length(40);
  put("mention_past_body", 0, reply.SerializeAsString());
  content::Content reaction;
  reaction.mutable_data()->set_timestamp(1700000000200);
  auto* r = reaction.mutable_data()->mutable_reaction();
  r->set_emoji("\xF0\x9F\x91\x8D");
  r->set_target_author("bob");
  r->set_target_timestamp(1700000000000);
  put("reaction", 0, reaction.SerializeAsString());
  r->set_emoji("\xff\xfe");
  put("reaction_not_utf8", 0, reaction.SerializeAsString());
  reaction.mutable_data()->mutable_delete_()->set_target_timestamp(1700000000000);
  put("reaction_and_delete", 0, reaction.SerializeAsString());
  content::Content del;
  del.mutable_data()->set_timestamp(1700000000300);
  del.mutable_data()->mutable_delete_()->set_target_timestamp(1700000000000);
  put("delete", 0, del.SerializeAsString());
  content::Content timer;
  timer.mutable_data()->set_timestamp(1700000000400);
  timer.mutable_data()->set_expire_timer(86400);
  timer.mutable_data()->set_expire_timer_update(true);
  put("timer_update", 0, timer.SerializeAsString());
  timer.mutable_data()->set_expire_timer(0xffffffffu);
  put("timer_out_of_range", 0, timer.SerializeAsString());
  content::Content edit;
  edit.mutable_edit()->set_target_timestamp(1700000000000);
  edit.mutable_edit()->mutable_data()->set_body("fixed");
  edit.mutable_edit()->mutable_data()->set_timestamp(1700000000500);
  put("edit", 0, edit.SerializeAsString());
  content::Content sent_edit;
  sent_edit.mutable_sync()->mutable_sent()->set_destination("bob");
  sent_edit.mutable_sync()->mutable_sent()->set_timestamp(1700000000500);
  *sent_edit.mutable_sync()->mutable_sent()->mutable_edit() = edit.edit();
  put("sync_sent_edit", 1, sent_edit.SerializeAsString());
  edit.mutable_edit()->set_target_timestamp(1700000000600);
  put("edit_of_later_message", 0, edit.SerializeAsString());
  content::Content receipt;
  receipt.mutable_receipt()->set_type(content::ReceiptMessage::READ);
  receipt.mutable_receipt()->add_timestamps(1700000000000);
  receipt.mutable_receipt()->add_timestamps(0);
  put("read_receipt", 0, receipt.SerializeAsString());
  content::Content typing;
  typing.mutable_typing()->set_timestamp(1700000000700);
  typing.mutable_typing()->set_action(content::TypingMessage::STOPPED);
  put("typing", 0, typing.SerializeAsString());
  content::Content read;
  auto* entry = read.mutable_sync()->add_read();
  entry->set_author("bob");
  entry->set_timestamp(1700000000000);
  put("sync_read_own", 1, read.SerializeAsString());
  put("sync_read_foreign", 0, read.SerializeAsString());
  entry->set_author("Not A User");
  put("sync_read_bad_author", 1, read.SerializeAsString());
  content::Content settings;
  settings.mutable_sync()->mutable_settings()->set_read_receipts_off(true);
  put("sync_settings_own", 1, settings.SerializeAsString());
  put("sync_settings_foreign", 0, settings.SerializeAsString());
}
#endif

#ifdef SOTTO_FUZZ_ACCOUNT_DATA
// backup_file_fuzz: genuine backups under the target's fixed passphrase and cheap parameters, and
// near-valid ones; then "sealed chunks" inputs (backup_file_fuzz.h) with good and bad records.
void backup_files(CorpusWriter& w) {
  constexpr std::string_view kTarget = "backup_file_fuzz";
  namespace fb = fuzz::backup;
  using client::BackupError;
  using wire::backup::BackupRecord;

  std::vector<BackupRecord> records(3);
  auto* account = records[0].mutable_account();
  account->set_username("alice");
  account->set_server_host("chat.example.org");
  account->set_server_port(7443);
  account->set_server_fingerprint(std::string(64, 'a'));
  account->set_trust_policy("on-first-use");
  account->set_created_at(1'800'000'000'000);
  auto* contact = records[1].mutable_contact();
  contact->set_username("bob");
  contact->set_identity_key(std::string(33, '\x05'));
  contact->set_accepted(true);
  auto* message = records[2].mutable_message();
  message->set_id("0011223344556677");
  message->set_peer("bob");
  message->set_sender("bob");
  message->set_sender_device(1);
  message->set_timestamp(1'800'000'000'123);
  message->set_body("hello");

  std::uint64_t seed = 8201;
  const auto backup = [&](std::size_t count, const client::BackupSecret& secret) {
    crypto::DeterministicRng rng(seed++);
    std::ostringstream out;
    auto writer = client::BackupWriter::open(out, secret, rng, fb::kKdf);
    for (std::size_t i = 0; writer && i < count; ++i) (void)writer->add(records[i]);
    if (!writer || !writer->finish()) {
      std::fprintf(stderr, "cannot write a backup seed\n");
      std::exit(1);
    }
    const std::string s = out.str();
    return Bytes(s.begin(), s.end());
  };
  const auto passphrase = client::BackupSecret::passphrase(fb::kPassphrase);
  w.write(kTarget, "file_empty", backup(0, passphrase));
  w.write(kTarget, "file_one_record", backup(1, passphrase));
  const Bytes three = backup(3, passphrase);
  w.write(kTarget, "file_three_records", three);
  Bytes trailing = three;
  trailing.push_back(0);
  w.write(kTarget, "file_trailing_byte", trailing);
  w.write(kTarget, "file_cut_short", ByteView(three).first(three.size() - 5));
  w.write(kTarget, "file_header_only", ByteView(three).first(client::kBackupHeaderSize));
  Bytes version = three;
  version[8] = 2;
  w.write(kTarget, "file_version_2", version);
  Bytes dear = three;
  dear[33] = 0x40;  // mem limit 1 GiB: within the format's bounds, above the target's
  w.write(kTarget, "file_dear_kdf", dear);
  crypto::DeterministicRng code_rng(8299);
  w.write(kTarget, "file_recovery_code",
          backup(1, client::BackupSecret::recovery_code(client::RecoveryCode::generate(code_rng))));
  w.write(kTarget, "file_wrong_passphrase", backup(1, client::BackupSecret::passphrase("other")));

  // Sealed chunks: a mode byte, then u16 BE lengths and chunk plaintexts.
  const auto framed = [](const BackupRecord& r) {
    const std::string body = r.SerializeAsString();
    Bytes out{static_cast<std::uint8_t>(body.size() >> 24),
              static_cast<std::uint8_t>(body.size() >> 16),
              static_cast<std::uint8_t>(body.size() >> 8), static_cast<std::uint8_t>(body.size())};
    out.insert(out.end(), body.begin(), body.end());
    return out;
  };
  const auto sealed = [](fb::SealMode mode, std::initializer_list<Bytes> chunks) {
    Bytes out{static_cast<std::uint8_t>(mode)};
    for (const Bytes& c : chunks) {
      out.push_back(static_cast<std::uint8_t>(c.size() >> 8));
      out.push_back(static_cast<std::uint8_t>(c.size()));
      append(out, c);
    }
    return out;
  };
  const Bytes all = concat({framed(records[0]), framed(records[1]), framed(records[2])});
  w.write(kTarget, "sealed_one_chunk", sealed(fb::SealMode::complete, {all}));
  w.write(
      kTarget, "sealed_three_chunks",
      sealed(fb::SealMode::complete, {framed(records[0]), framed(records[1]), framed(records[2])}));
  w.write(kTarget, "sealed_empty_chunks", sealed(fb::SealMode::complete, {{}, all, {}}));
  w.write(kTarget, "sealed_no_chunk", sealed(fb::SealMode::complete, {}));
  w.write(kTarget, "sealed_no_final", sealed(fb::SealMode::no_final, {all, all}));
  w.write(kTarget, "sealed_trailing", sealed(fb::SealMode::trailing, {all}));
  w.write(kTarget, "sealed_cut_short", sealed(fb::SealMode::cut_short, {all, all}));
  Bytes oversized = framed(records[1]);
  oversized[3] = static_cast<std::uint8_t>(oversized[3] + 1);
  w.write(kTarget, "sealed_oversized_record", sealed(fb::SealMode::complete, {all, oversized}));
  Bytes malformed = framed(records[1]);
  malformed[4] = 0xFF;  // wire type 7
  w.write(kTarget, "sealed_malformed_record", sealed(fb::SealMode::complete, {malformed}));
  w.write(kTarget, "sealed_short_length",
          sealed(fb::SealMode::complete, {concat({all, Bytes{0, 0}})}));
}
#endif

}  // namespace

#ifdef SOTTO_FUZZ_CLIENT
// group_fuzz: a reader byte (0-3 a Content with a change by that member of the fixed state, 4 a
// GroupState, 5 an invite link), then the bytes.
void group_seeds(CorpusWriter& w) {
  constexpr std::string_view kTarget = "group_fuzz";
  namespace content = sotto::wire::content;
  auto put = [&](std::string_view name, std::uint8_t reader, const std::string& bytes) {
    w.write(kTarget, name, concat({Bytes{reader}, Bytes(bytes.begin(), bytes.end())}));
  };
  const auto change = [](std::uint64_t revision) {
    content::Content c;
    c.mutable_data()->set_timestamp(1700000000000);
    c.mutable_data()->mutable_group()->set_id(std::string(32, '\x5a'));
    c.mutable_data()->mutable_group()->set_revision(revision);
    return c;
  };
  content::Content add = change(7);
  add.mutable_data()->mutable_group_change()->add_add_members()->set_user("erin");
  put("add_by_admin", 0, add.SerializeAsString());
  put("add_by_member", 1, add.SerializeAsString());
  content::Content stale = add;
  stale.mutable_data()->mutable_group()->set_revision(6);
  put("add_stale_revision", 0, stale.SerializeAsString());
  content::Content leave = change(7);
  leave.mutable_data()->mutable_group_change()->set_leave(true);
  put("leave_admin", 0, leave.SerializeAsString());
  put("leave_member", 3, leave.SerializeAsString());
  content::Content remove = change(7);
  remove.mutable_data()->mutable_group_change()->add_remove_members("bob");
  put("remove", 2, remove.SerializeAsString());
  content::Content demote = change(7);
  demote.mutable_data()->mutable_group_change()->add_demote_admins("alice");
  demote.mutable_data()->mutable_group_change()->add_demote_admins("carol");
  put("demote_all", 0, demote.SerializeAsString());
  content::Content rename = change(7);
  rename.mutable_data()->mutable_group_change()->set_set_name(true);
  rename.mutable_data()->mutable_group_change()->set_name("new name");
  put("rename", 2, rename.SerializeAsString());
  content::Content secret = change(7);
  secret.mutable_data()->mutable_group_change()->set_set_invite_secret(true);
  secret.mutable_data()->mutable_group_change()->set_invite_secret(std::string(32, 'k'));
  put("reset_link", 0, secret.SerializeAsString());
  // The group picture: a pointer to a PNG, one to a file that is not an image, none.
  content::Content avatar = change(7);
  avatar.mutable_data()->mutable_group_change()->set_set_avatar(true);
  auto* picture = avatar.mutable_data()->mutable_group_change()->mutable_avatar();
  picture->set_id(std::string(16, '\x01'));
  picture->set_key(std::string(32, '\x02'));
  picture->set_digest(std::string(32, '\x03'));
  picture->set_size(1000);
  picture->set_chunk_size(65536);
  picture->set_ciphertext_size(1000 + 24 + 17);
  picture->set_content_type("image/png");
  put("set_avatar", 0, avatar.SerializeAsString());
  content::Content not_image = avatar;
  not_image.mutable_data()->mutable_group_change()->mutable_avatar()->set_content_type(
      "application/pdf");
  put("set_avatar_not_image", 2, not_image.SerializeAsString());
  content::Content no_avatar = change(7);
  no_avatar.mutable_data()->mutable_group_change()->set_set_avatar(true);
  put("remove_avatar", 0, no_avatar.SerializeAsString());
  content::Content join = change(0);
  join.mutable_data()->mutable_group_change()->set_join_secret(std::string(32, '\x11'));
  put("join_request", 3, join.SerializeAsString());
  // A change with the state a new member takes.
  content::Content with_state = add;
  auto* s = with_state.mutable_data()->mutable_group_change()->mutable_state();
  s->set_id(std::string(32, '\x5a'));
  s->set_revision(8);
  s->set_name("fuzz");
  for (const char* name : {"alice", "bob", "carol", "dave", "erin"}) {
    auto* m = s->add_members();
    m->set_user(name);
    m->set_admin(std::string(name) == "alice");
  }
  put("add_with_state", 0, with_state.SerializeAsString());
  put("state", 4, s->SerializeAsString());
  content::GroupState twice = *s;
  twice.add_members()->set_user("bob");
  put("state_member_twice", 4, twice.SerializeAsString());
  const std::string link =
      "sotto-group:" + std::string(64, 'a') + "." + std::string(64, 'b') + ".alice.1";
  put("link", 5, link);
  put("link_dotted_admin", 5,
      "sotto-group:" + std::string(64, 'a') + "." + std::string(64, 'B') + ".a.b.c.12");
  put("link_device_zero", 5, link.substr(0, link.size() - 1) + "0");
}
#endif

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus root, e.g. fuzz/corpus>\n", argv[0]);
    return 2;
  }
  const fuzz::Conversation& c = fuzz::conversation();
  CorpusWriter w(argv[1]);
  signal_messages(w, c);
  pre_key_messages(w, c);
  sender_key_messages(w, c);
  distribution_messages(w, c);
  bundles(w, c);
  records(w, c);
  decrypt_inputs(w, c);
#ifdef SOTTO_FUZZ_CLIENT_STORE
  client_records(w);
#endif
#ifdef SOTTO_FUZZ_ACCOUNT_DATA
  backup_files(w);
#endif
#ifdef SOTTO_FUZZ_CLIENT
  client_contents(w);
  group_seeds(w);
#endif
  std::printf("wrote %zu files under %s\n", w.written(), argv[1]);
  return 0;
}
