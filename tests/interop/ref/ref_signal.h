// Reference wrapper around Debian's libsignal-protocol-c 2.3.3, used by the interop
// tests and the comparison benchmarks.  It is test-only code: it is not part of Sotto.
//
// Each RefParty owns its own signal_context (crypto provider on OpenSSL 3, recursive
// mutex for the library's lock callbacks) and a signal_protocol_store_context backed by
// in-memory std::map stores that keep exactly the serialized bytes libsignal hands over.
//
// This header deliberately includes no libsignal header; code that wants the SG_ERR_*
// constants can include <signal_protocol.h> itself (the CMake target exports the include
// path).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sotto::testing::ref {

using Bytes = std::vector<std::uint8_t>;

struct RefBundle {
  std::uint32_t registration_id = 0;
  std::uint32_t device_id = 0;
  std::optional<std::uint32_t> prekey_id;  // absent: bundle without a one-time prekey
  Bytes prekey_public;                     // 33 bytes (0x05 || u) when prekey_id is set
  std::uint32_t signed_prekey_id = 0;
  Bytes signed_prekey_public;     // 33 bytes
  Bytes signed_prekey_signature;  // 64 bytes (XEdDSA over signed_prekey_public)
  Bytes identity_key;             // 33 bytes
};

// Thrown by the throwing members (encrypt, group_encrypt, ...); code() is the SG_ERR_* value.
class RefError : public std::runtime_error {
 public:
  RefError(const std::string& message, int code) : std::runtime_error(message), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// type: 2 = SignalMessage (CIPHERTEXT_SIGNAL_TYPE), 3 = PreKeySignalMessage (CIPHERTEXT_PREKEY_TYPE).
struct RefCiphertext {
  int type = 0;
  Bytes bytes;
};

// error: 0 on success, otherwise the (negative) SG_ERR_* code returned by libsignal.
struct RefResult {
  int error = 0;
  Bytes plaintext;
};

class RefParty {
 public:
  // Generates an identity key pair, a registration id, 100 one-time prekeys (ids 1..100)
  // and a signed prekey (id 1).  Throws RefError on failure.
  explicit RefParty(std::string name, std::uint32_t device_id = 1);
  ~RefParty();  // frees every libsignal object
  // Move-only.  A moved-from RefParty may only be destroyed or assigned to.
  RefParty(RefParty&&) noexcept;
  RefParty& operator=(RefParty&&) noexcept;
  RefParty(const RefParty&) = delete;
  RefParty& operator=(const RefParty&) = delete;

  const std::string& name() const;
  std::uint32_t device_id() const;
  Bytes identity_public() const;   // 33 bytes
  Bytes identity_private() const;  // 32 bytes
  std::uint32_t registration_id() const;

  // Hands out the next unused one-time prekey (ids 1, 2, ...; a further batch of 100 is
  // generated when the first 100 are used up).  The prekey stays in the store until a
  // PreKeySignalMessage consumes it.
  RefBundle bundle(bool with_one_time_prekey);

  // session_builder_process_pre_key_bundle for address (peer, peer_device).
  // Returns 0 or the SG_ERR_* code (key decoding errors included).  An empty signature is
  // reported as SG_ERR_INVAL without calling the library (2.3.3 dereferences a null
  // signature buffer); a non-empty signature of the wrong length gives SG_ERR_INVAL from
  // the library itself, a bad signature SG_ERR_INVALID_KEY.
  int process_bundle(const std::string& peer, std::uint32_t peer_device, const RefBundle& b);

  // session_cipher_encrypt; throws RefError (a std::runtime_error) on failure.  Note that
  // 2.3.3 reports "no session" here as SG_ERR_UNKNOWN, not SG_ERR_NO_SESSION.
  RefCiphertext encrypt(const std::string& peer, std::uint32_t peer_device, const Bytes& plaintext);

  // type 3 -> pre_key_signal_message_deserialize + session_cipher_decrypt_pre_key_signal_message,
  // type 2 -> signal_message_deserialize + session_cipher_decrypt_signal_message,
  // any other type -> SG_ERR_INVAL.  Deserialize errors are returned as error codes.
  RefResult decrypt(const std::string& peer, std::uint32_t peer_device, const RefCiphertext& c);

  // True when the session store holds a record for (peer, peer_device).
  bool has_session(const std::string& peer, std::uint32_t peer_device) const;
  // Serialized session record exactly as stored; empty if none.
  Bytes session_record_bytes(const std::string& peer, std::uint32_t peer_device) const;

  // Default false: the identity store is trust-on-first-use; a changed key for a known
  // address is untrusted, so the library reports SG_ERR_UNTRUSTED_IDENTITY.  When true,
  // changed keys are trusted (and then saved by the library, replacing the old one).
  void set_trust_changed_identities(bool trust);

  // Sender keys.  Sender key name = {group_id, {name, device}}.
  // group_session_builder_create_session for our own address; returns the serialized
  // SenderKeyDistributionMessage.  Throws on failure.
  Bytes create_sender_key_distribution(const std::string& group_id);
  int process_sender_key_distribution(const std::string& group_id, const std::string& sender,
                                      std::uint32_t sender_device, const Bytes& skdm);
  // Returns the serialized SenderKeyMessage; throws on failure.
  Bytes group_encrypt(const std::string& group_id, const Bytes& plaintext);
  RefResult group_decrypt(const std::string& group_id, const std::string& sender,
                          std::uint32_t sender_device, const Bytes& message);

  // Fingerprints: fingerprint_generator_create(iterations, scannable_version) +
  // fingerprint_generator_create_for(local_stable_id, our identity, remote_stable_id,
  // remote_identity).  scannable_version must be 0 or 1 (the library rejects others with
  // SG_ERR_INVAL).  displayable/scannable throw RefError on failure.
  std::string displayable_fingerprint(const std::string& local_stable_id, const std::string& remote_stable_id,
                                      const Bytes& remote_identity, int iterations = 5200,
                                      int scannable_version = 1) const;
  // Serialized CombinedFingerprints protobuf.
  Bytes scannable_fingerprint(const std::string& local_stable_id, const std::string& remote_stable_id,
                              const Bytes& remote_identity, int iterations = 5200,
                              int scannable_version = 1) const;
  // 1 if `theirs` (the other side's serialized scannable fingerprint) matches ours, 0 if
  // not, < 0 on error (deserialize error, SG_ERR_FP_VERSION_MISMATCH,
  // SG_ERR_FP_IDENT_MISMATCH, or an error generating ours).
  int compare_scannable(const std::string& local_stable_id, const std::string& remote_stable_id,
                        const Bytes& remote_identity, const Bytes& theirs, int iterations = 5200,
                        int scannable_version = 1) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// curve_calculate_agreement(their_public33, our_private32).  Throws RefError on
// bad key encodings.  Note: libsignal-protocol-c does not reject an all-zero result.
Bytes ref_calculate_agreement(const Bytes& their_public33, const Bytes& our_private32);

// Symbolic name of an SG_ERR_* code ("SG_ERR_INVALID_MAC", ...), for test diagnostics.
const char* ref_error_name(int code);

}  // namespace sotto::testing::ref
