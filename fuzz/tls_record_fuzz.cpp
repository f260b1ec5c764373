// Fuzzes the server's TLS 1.3 record layer (src/net/tls_record.h), which opens every byte a
// client sends after the handshake. The layer is RFC 8448's server (AES-128-GCM), so inputs can
// be real records as well as noise:
//   byte 0 even: the rest is a raw byte stream, opened record by record;
//   byte 0 odd:  the rest is a list of inner plaintexts (a length byte, then that many bytes),
//                each sealed here as the client's next record with the trace's key, so the
//                fuzzer reaches the content type, padding, alert and KeyUpdate rules.
// Invariants: nothing is read outside the input; `incomplete` consumes nothing; a record is
// consumed whole; delivered data lies inside its record and is at most 2^14 bytes; after
// `failed` or `closed` every call returns the same; a KeyUpdate the client asked for is sent
// before the next data, which a client layer with the trace's keys opens.
#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.h"
#include "net/tls_record.h"

namespace {

using sotto::Bytes;
using sotto::ByteView;
using sotto::net::detail::TlsRecordLayer;
using Opened = TlsRecordLayer::Opened;

constexpr std::array<std::uint8_t, 32> kServerSecret = {
    0xa1, 0x1a, 0xf9, 0xf0, 0x55, 0x31, 0xf8, 0x56, 0xad, 0x47, 0x11, 0x6b, 0x45, 0xa9, 0x50, 0x32,
    0x82, 0x04, 0xb4, 0xf4, 0x4b, 0xfb, 0x6b, 0x3a, 0x4b, 0x4f, 0x1f, 0x3f, 0xcb, 0x63, 0x16, 0x43};
constexpr std::array<std::uint8_t, 32> kClientSecret = {
    0x9e, 0x40, 0x64, 0x6c, 0xe7, 0x9a, 0x7f, 0x9d, 0xc0, 0x5a, 0xf8, 0x88, 0x9b, 0xce, 0x65, 0x52,
    0x87, 0x5a, 0xfa, 0x0b, 0x06, 0xdf, 0x00, 0x87, 0xf7, 0x92, 0xeb, 0xb7, 0xc1, 0x75, 0x04, 0xa5};
constexpr std::array<std::uint8_t, 16> kClientKey = {
    0x17, 0x42, 0x2d, 0xda, 0x59, 0x6e, 0xd5, 0xd9, 0xac, 0xd8, 0x90, 0xe3, 0xc6, 0x3f, 0x50, 0x51};
constexpr std::array<std::uint8_t, 12> kClientIv = {0x5b, 0x78, 0x92, 0x3d, 0xee, 0x08,
                                                    0x57, 0x90, 0x33, 0xe5, 0x23, 0xd9};

// The client's record number `seq` carrying `inner` (as the peer would seal it).
Bytes client_record(const std::uint8_t* inner, std::size_t n, std::uint64_t seq) {
  const std::size_t len = n + 16;
  Bytes rec = {0x17, 0x03, 0x03, static_cast<std::uint8_t>(len >> 8),
               static_cast<std::uint8_t>(len)};
  std::array<std::uint8_t, 12> nonce = kClientIv;
  for (int i = 0; i < 8; ++i) nonce[11 - i] ^= static_cast<std::uint8_t>(seq >> (8 * i));
  rec.resize(5 + len);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int outl = 0;
  bool ok =
      ctx != nullptr &&
      EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), nullptr, kClientKey.data(), nonce.data()) == 1 &&
      EVP_EncryptUpdate(ctx, nullptr, &outl, rec.data(), 5) == 1;
  if (ok && n != 0)
    ok = EVP_EncryptUpdate(ctx, rec.data() + 5, &outl, inner, static_cast<int>(n)) == 1;
  ok = ok && EVP_EncryptFinal_ex(ctx, rec.data() + 5 + n, &outl) == 1 &&
       EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, rec.data() + 5 + n) == 1;
  EVP_CIPHER_CTX_free(ctx);
  sotto::fuzz::require(ok, "the fuzzer's own encryption failed");
  return rec;
}

// Opens `stream` record by record and checks the invariants. Returns the last kind seen.
Opened::Kind open_all(TlsRecordLayer& layer, Bytes& stream) {
  std::size_t at = 0;
  Opened::Kind last = Opened::incomplete;
  for (int guard = 0; guard < 100000; ++guard) {
    const std::size_t left = stream.size() - at;
    const std::uint64_t seq_before = layer.read_sequence();
    const Opened r = layer.open(stream.data() + at, left);
    sotto::fuzz::require(r.consumed <= left, "consumed more than the input");
    if (r.kind == Opened::incomplete) {
      sotto::fuzz::require(r.consumed == 0, "an incomplete record was consumed");
      sotto::fuzz::require(layer.read_sequence() == seq_before, "an incomplete record counted");
      return last;
    }
    if (r.kind == Opened::failed || r.kind == Opened::closed) {
      sotto::fuzz::require(r.kind != Opened::failed || static_cast<bool>(r.error),
                           "a failure without an error");
      const Opened again = layer.open(stream.data() + at, left);
      sotto::fuzz::require(again.kind == r.kind && again.consumed == 0, "the end is not sticky");
      return r.kind;
    }
    sotto::fuzz::require(r.consumed >= TlsRecordLayer::kHeaderSize + TlsRecordLayer::kTagSize,
                         "a record shorter than header and tag was accepted");
    if (r.kind == Opened::data) {
      sotto::fuzz::require(r.size <= TlsRecordLayer::kMaxPlaintext, "data over 2^14 bytes");
      sotto::fuzz::require(r.size == 0 || (r.bytes >= stream.data() + at + 5 &&
                                           r.bytes + r.size <= stream.data() + at + r.consumed),
                           "data outside its record");
    }
    last = r.kind;
    at += r.consumed;
  }
  return last;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  auto made = TlsRecordLayer::create(TlsRecordLayer::kAes128GcmSha256, ByteView(kClientSecret), 0,
                                     ByteView(kServerSecret), 1);
  sotto::fuzz::require(made.has_value(), "cannot make the trace's layer");
  TlsRecordLayer& server = *made;
  Bytes stream;
  if ((data[0] & 1) == 0) {
    stream.assign(data + 1, data + size);
  } else {
    std::size_t at = 1;
    std::uint64_t seq = 0;
    while (at < size) {
      const std::size_t n = std::min<std::size_t>(data[at], size - at - 1);
      const Bytes rec = client_record(data + at + 1, n, seq++);
      stream.insert(stream.end(), rec.begin(), rec.end());
      at += 1 + n;
    }
  }
  const Opened::Kind last = open_all(server, stream);
  if (last == Opened::failed || last == Opened::closed) return 0;

  // The server can still send; an owed KeyUpdate goes first, and a client layer that follows
  // the trace's keys (and the update) opens everything.
  const bool owed = server.key_update_owed();
  auto client = TlsRecordLayer::create(TlsRecordLayer::kAes128GcmSha256, ByteView(kServerSecret), 1,
                                       ByteView(kClientSecret), 0);
  sotto::fuzz::require(client.has_value(), "cannot make the client layer");
  const std::uint8_t msg[3] = {'o', 'k', '!'};
  Bytes out(sizeof msg + TlsRecordLayer::kMaxSealExpansion);
  const std::size_t n = server.seal_data(msg, sizeof msg, out.data());
  out.resize(n);
  std::size_t at = 0;
  bool got = false;
  int controls = 0;
  while (at < out.size()) {
    const Opened r = client->open(out.data() + at, out.size() - at);
    sotto::fuzz::require(r.kind == Opened::data || r.kind == Opened::control,
                         "the client cannot open what the server sealed");
    if (r.kind == Opened::control) ++controls;
    if (r.kind == Opened::data) {
      got = r.size == sizeof msg && std::memcmp(r.bytes, msg, sizeof msg) == 0;
    }
    at += r.consumed;
  }
  sotto::fuzz::require(got, "the sealed data did not come back");
  sotto::fuzz::require(controls == (owed ? 1 : 0), "an owed KeyUpdate was not sent first");
  return 0;
}
