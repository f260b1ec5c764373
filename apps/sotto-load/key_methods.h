// The load tool plays thousands of TLS clients on the machine it measures, so what each of its
// handshakes costs in OpenSSL is CPU taken from the server under test.
//
// OpenSSL 3.0 decodes the public key of every certificate it parses through its provider decoder
// list, which it builds again for each certificate: about 95 us for the server's P-256
// certificate on one core, and more when the tool's threads contend for the locks of that list
// (3.2 added a cache for it). Each X25519 and EC operation also goes through provider fetches.
// For these two key types, use_builtin_key_methods() makes libcrypto take its built-in methods
// instead, the code path of OpenSSL 1.1.1 that 3.0 keeps for engines: it registers an ENGINE
// whose methods are OpenSSL's own (EVP_PKEY_meth_find). The primitives, and every byte on the
// wire, stay the same.
//
// Process-wide and for the load tool only: the server and the client library never call it.
#pragma once

namespace sotto::load {

// False when this OpenSSL has no engine support (it changes nothing then); idempotent.
bool use_builtin_key_methods();

}  // namespace sotto::load
