// The load tool plays thousands of TLS clients on the machine it measures, so what each of its
// handshakes costs in OpenSSL is CPU taken from the server under test.
//
// OpenSSL 3.0 decodes the public key of every certificate it parses through its provider decoder
// list, which it builds again for each certificate: about 95 us for the server's P-256
// certificate on one core, and more when the tool's threads contend for the locks of that list
// (3.2 added a cache for it). Each X25519 and EC key operation also goes through provider
// fetches. For these two key types, use_builtin_key_methods() makes libcrypto take its built-in
// methods instead, the code path of OpenSSL 1.1.1 that 3.0 keeps for engines: it registers an
// ENGINE whose key methods are OpenSSL's own (EVP_PKEY_meth_find). The primitives and their
// checks (the point on the curve, strict DER signatures, the all-zero X25519 secret) are the same
// code, and so is every byte on the wire.
//
// What changes besides the cost, for the whole process:
// - EC keys can no longer be made by group name through EVP_PKEY_CTX_set_group_name ("P-256"
//   is unknown to the built-in method), so net::load_or_create_identity fails after the switch;
//   the tool never makes one. libssl names its groups in a form the built-in method knows.
// - Provider configuration (FIPS, default properties in openssl.cnf) no longer applies to EC and
//   X25519 keys.
// - Every EVP_PKEY_CTX creation takes the engine table's lock. The tool still spends far less
//   per handshake (bench/README.md, session 9).
//
// For the load tool only: the server and the `sotto` client never call it.
#pragma once

namespace sotto::load {

// Registers the methods for EC and X25519 keys; true when both are in place. False when this
// OpenSSL has no engine support or the registration failed, and then nothing is left registered.
// Idempotent. Call it before the first handshake and after any key is made by group name.
bool use_builtin_key_methods();

}  // namespace sotto::load
