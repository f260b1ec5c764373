// TLS 1.3 record protection after the handshake (src/net/tls_record.h) and the server stream
// that hands its records over to it (src/net/tls_stream.h): RFC 8448's trace, malformed
// records, and a real OpenSSL client over a loopback socket for every suite, KeyUpdate in both
// directions, close_notify, tampering and resumption.
#include "net/tls_record.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "crypto/bytes.h"
#include "net/handover/record_handover.h"
#include "net/tls.h"
#include "net/tls_internal.h"
#include "net/tls_stream.h"
#include "net_test_support.h"
#include "tcp_segments.h"

namespace sotto::net {
namespace {

using test_support::pattern;
using test_support::tcp_segments;
using test_support::TempDir;

using detail::TlsRecordError;
using detail::TlsRecordLayer;
using detail::TlsStep;
using detail::TlsStream;
using Opened = TlsRecordLayer::Opened;
namespace fs = std::filesystem;

Bytes hex(std::string_view h) {
  Bytes out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

// --- RFC 8448 section 3 (TLS_AES_128_GCM_SHA256) --------------------------------------------

const Bytes kServerSecret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
const Bytes kClientSecret = hex("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5");
const Bytes kClientKey = hex("17422dda596ed5d9acd890e3c63f5051");
const Bytes kClientIv = hex("5b78923dee08579033e523d9");
const Bytes kClientData = hex(
    "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395bd54a9a2044"
    "1e2b62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4");
const Bytes kServerData = hex(
    "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc602dcb501a"
    "59a8fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d");
const Bytes kClientAlert = hex("1703030013c9872760655666b74d7ff1153efd6db6d0b0e3");
const Bytes kServerAlert = hex("1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9");

Bytes payload50() {
  Bytes p(50);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>(i);
  return p;
}

// The server of the trace: it has sent its NewSessionTicket (sequence 0) already.
TlsRecordLayer server_of_trace() {
  auto layer =
      TlsRecordLayer::create(TlsRecordLayer::kAes128GcmSha256, kClientSecret, 0, kServerSecret, 1);
  if (!layer) throw std::runtime_error("no layer");
  return std::move(*layer);
}

Opened open_copy(TlsRecordLayer& layer, Bytes& record) {
  return layer.open(record.data(), record.size());
}

TEST(TlsRecordRfc8448, ServerSealsTheTracesApplicationDataAndCloseNotify) {
  TlsRecordLayer server = server_of_trace();
  const Bytes p = payload50();
  Bytes out(p.size() + TlsRecordLayer::kMaxSealExpansion);
  const std::size_t n = server.seal_data(p.data(), p.size(), out.data());
  EXPECT_EQ(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n)), kServerData);
  const std::size_t a = server.seal_alert(TlsRecordLayer::kCloseNotify, out.data());
  EXPECT_EQ(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(a)), kServerAlert);
  EXPECT_EQ(server.write_sequence(), 3u);
}

TEST(TlsRecordRfc8448, ServerOpensTheClientsApplicationDataAndCloseNotify) {
  TlsRecordLayer server = server_of_trace();
  Bytes record = kClientData;
  const Opened r = open_copy(server, record);
  ASSERT_EQ(r.kind, Opened::data);
  EXPECT_EQ(r.consumed, kClientData.size());
  EXPECT_EQ(Bytes(r.bytes, r.bytes + r.size), payload50());
  Bytes alert = kClientAlert;
  EXPECT_EQ(open_copy(server, alert).kind, Opened::closed);
  Bytes again = kClientData;
  EXPECT_EQ(open_copy(server, again).kind, Opened::closed);  // nothing is read after close_notify
}

TEST(TlsRecordRfc8448, ClientSideOfTheTraceMatchesToo) {
  // The same layer with the directions swapped plays the client: it opens the server's record
  // at sequence 1 and produces the client's records.
  auto client =
      TlsRecordLayer::create(TlsRecordLayer::kAes128GcmSha256, kServerSecret, 1, kClientSecret, 0);
  ASSERT_TRUE(client);
  Bytes record = kServerData;
  const Opened r = open_copy(*client, record);
  ASSERT_EQ(r.kind, Opened::data);
  EXPECT_EQ(Bytes(r.bytes, r.bytes + r.size), payload50());
  const Bytes p = payload50();
  Bytes out(p.size() + TlsRecordLayer::kMaxSealExpansion);
  const std::size_t n = client->seal_data(p.data(), p.size(), out.data());
  EXPECT_EQ(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n)), kClientData);
  const std::size_t a = client->seal_alert(TlsRecordLayer::kCloseNotify, out.data());
  EXPECT_EQ(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(a)), kClientAlert);
}

TEST(TlsRecordRfc8448, TheWrongSequenceNumberFailsAuthentication) {
  auto server =
      TlsRecordLayer::create(TlsRecordLayer::kAes128GcmSha256, kClientSecret, 1, kServerSecret, 1);
  ASSERT_TRUE(server);
  Bytes record = kClientData;
  const Opened r = open_copy(*server, record);
  EXPECT_EQ(r.kind, Opened::failed);
  EXPECT_EQ(r.error, make_error_code(TlsRecordError::bad_record_mac));
  EXPECT_EQ(r.alert, TlsRecordLayer::kBadRecordMac);
}

TEST(TlsRecordLayer, RejectsUnknownSuitesAndSecretsOfTheWrongSize) {
  EXPECT_FALSE(TlsRecordLayer::create(0x1304, kClientSecret, 0, kServerSecret, 0));
  EXPECT_FALSE(TlsRecordLayer::create(TlsRecordLayer::kAes256GcmSha384, kClientSecret, 0,
                                      kServerSecret, 0));  // SHA-384 secrets are 48 bytes
  EXPECT_FALSE(TlsRecordLayer::create(TlsRecordLayer::kAes128GcmSha256,
                                      ByteView(kClientSecret).first(31), 0, kServerSecret, 0));
}

// --- malformed records, made with the trace's client key ---------------------------------------

// Seals `inner` (content, type and padding as given) as the trace's client record `seq`, with
// OpenSSL's AES-128-GCM directly, so any inner plaintext can be made.
Bytes client_record(const Bytes& inner, std::uint64_t seq, std::uint8_t outer_type = 0x17) {
  const std::size_t len = inner.size() + 16;
  Bytes rec = {outer_type, 0x03, 0x03, static_cast<std::uint8_t>(len >> 8),
               static_cast<std::uint8_t>(len)};
  std::array<std::uint8_t, 12> nonce{};
  std::memcpy(nonce.data(), kClientIv.data(), 12);
  for (int i = 0; i < 8; ++i) nonce[11 - i] ^= static_cast<std::uint8_t>(seq >> (8 * i));
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int outl = 0;
  Bytes body(inner.size() + 16);
  EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), nullptr, kClientKey.data(), nonce.data());
  EVP_EncryptUpdate(ctx, nullptr, &outl, rec.data(), 5);
  EVP_EncryptUpdate(ctx, body.data(), &outl, inner.data(), static_cast<int>(inner.size()));
  EVP_EncryptFinal_ex(ctx, body.data() + outl, &outl);
  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, body.data() + inner.size());
  EVP_CIPHER_CTX_free(ctx);
  rec.insert(rec.end(), body.begin(), body.end());
  return rec;
}

struct Malformed {
  const char* what;
  Bytes inner;
  TlsRecordError error;
  int alert;
};

TEST(TlsRecordLayer, MalformedInnerPlaintextFailsWithTheRfcsAlert) {
  const std::vector<Malformed> cases = {
      {"all padding, no content type", Bytes(20, 0), TlsRecordError::unexpected_message,
       TlsRecordLayer::kUnexpectedMessage},
      {"empty inner plaintext", Bytes{}, TlsRecordError::unexpected_message,
       TlsRecordLayer::kUnexpectedMessage},
      {"unknown content type", Bytes{1, 2, 3, 0x30}, TlsRecordError::unexpected_message,
       TlsRecordLayer::kUnexpectedMessage},
      {"change_cipher_spec inside", Bytes{1, 0x14}, TlsRecordError::unexpected_message,
       TlsRecordLayer::kUnexpectedMessage},
      {"alert of three bytes", Bytes{1, 0, 0, 0x15}, TlsRecordError::decode_error,
       TlsRecordLayer::kDecodeError},
      {"fatal alert from the peer", Bytes{2, 40, 0x15}, TlsRecordError::peer_alert, -1},
      {"empty handshake record", Bytes{0x16}, TlsRecordError::unexpected_message,
       TlsRecordLayer::kUnexpectedMessage},
      {"NewSessionTicket from a client", Bytes{4, 0, 0, 1, 0, 0x16},
       TlsRecordError::unexpected_message, TlsRecordLayer::kUnexpectedMessage},
      {"KeyUpdate of length 2", Bytes{24, 0, 0, 2, 0, 0, 0x16}, TlsRecordError::decode_error,
       TlsRecordLayer::kDecodeError},
      {"KeyUpdate request 2", Bytes{24, 0, 0, 1, 2, 0x16}, TlsRecordError::illegal_parameter,
       TlsRecordLayer::kIllegalParameter},
      {"KeyUpdate not ending its record", Bytes{24, 0, 0, 1, 0, 24, 0x16},
       TlsRecordError::unexpected_message, TlsRecordLayer::kUnexpectedMessage},
      {"content of 2^14 + 1 bytes",
       [] {
         Bytes b(16385, 'x');
         b.push_back(0x17);
         return b;
       }(),
       TlsRecordError::record_overflow, TlsRecordLayer::kRecordOverflow},
  };
  for (const Malformed& c : cases) {
    SCOPED_TRACE(c.what);
    TlsRecordLayer server = server_of_trace();
    Bytes rec = client_record(c.inner, 0);
    const Opened r = open_copy(server, rec);
    EXPECT_EQ(r.kind, Opened::failed);
    EXPECT_EQ(r.error, make_error_code(c.error));
    EXPECT_EQ(r.alert, c.alert);
    EXPECT_FALSE(r.error.message().empty());
    // Sticky: nothing after a failure is opened.
    Bytes good = kClientData;
    EXPECT_EQ(open_copy(server, good).kind, Opened::failed);
  }
}

TEST(TlsRecordLayer, MalformedFramingFails) {
  {
    TlsRecordLayer server = server_of_trace();
    Bytes plain = {0x16, 0x03, 0x03, 0x00, 0x01, 0x00};  // an unprotected record
    EXPECT_EQ(open_copy(server, plain).error, make_error_code(TlsRecordError::unexpected_message));
  }
  {
    TlsRecordLayer server = server_of_trace();
    Bytes ccs = {0x14, 0x03, 0x03, 0x00, 0x01, 0x01};  // compatibility CCS, too late
    EXPECT_EQ(open_copy(server, ccs).error, make_error_code(TlsRecordError::unexpected_message));
  }
  {
    TlsRecordLayer server = server_of_trace();
    Bytes big = {0x17, 0x03, 0x03, 0x41, 0x01};  // 2^14 + 257: over the ciphertext limit
    EXPECT_EQ(open_copy(server, big).error, make_error_code(TlsRecordError::record_overflow));
  }
  {
    TlsRecordLayer server = server_of_trace();
    Bytes tiny = {0x17, 0x03, 0x03, 0x00, 0x0f};
    tiny.resize(5 + 15, 0);  // shorter than a tag
    EXPECT_EQ(open_copy(server, tiny).error, make_error_code(TlsRecordError::bad_record_mac));
  }
  {
    TlsRecordLayer server = server_of_trace();
    Bytes flipped = kClientData;
    flipped[20] ^= 1;
    EXPECT_EQ(open_copy(server, flipped).error, make_error_code(TlsRecordError::bad_record_mac));
    EXPECT_EQ(server.read_sequence(), 0u);
  }
}

TEST(TlsRecordLayer, PaddingCountsAgainstThePlaintextLimit) {
  {
    TlsRecordLayer server = server_of_trace();
    Bytes inner(16384, 'x');  // the largest content, then its type: exactly 2^14 + 1
    inner.push_back(0x17);
    Bytes rec = client_record(inner, 0);
    const Opened r = open_copy(server, rec);
    ASSERT_EQ(r.kind, Opened::data);
    EXPECT_EQ(r.size, 16384u);
  }
  {
    TlsRecordLayer server = server_of_trace();
    Bytes inner = {'x', 0x17};
    inner.resize(16386, 0);  // small content, padded one byte past 2^14 + 1
    Bytes rec = client_record(inner, 0);
    EXPECT_EQ(open_copy(server, rec).error, make_error_code(TlsRecordError::record_overflow));
  }
}

TEST(TlsRecordLayer, IncompleteInputConsumesNothingAndChangesNothing) {
  TlsRecordLayer server = server_of_trace();
  Bytes rec = kClientData;
  for (std::size_t n = 0; n < rec.size(); ++n) {
    const Opened r = server.open(rec.data(), n);
    ASSERT_EQ(r.kind, Opened::incomplete) << n;
    ASSERT_EQ(r.consumed, 0u);
  }
  EXPECT_EQ(server.read_sequence(), 0u);
  EXPECT_EQ(open_copy(server, rec).kind, Opened::data);
  EXPECT_EQ(server.read_sequence(), 1u);
}

TEST(TlsRecordLayer, PaddingAndEmptyApplicationDataAreAccepted) {
  TlsRecordLayer server = server_of_trace();
  Bytes padded = client_record(Bytes{'h', 'i', 0x17, 0, 0, 0, 0, 0, 0}, 0);
  Opened r = open_copy(server, padded);
  ASSERT_EQ(r.kind, Opened::data);
  EXPECT_EQ(Bytes(r.bytes, r.bytes + r.size), (Bytes{'h', 'i'}));
  Bytes empty = client_record(Bytes{0x17}, 1);
  r = open_copy(server, empty);
  EXPECT_EQ(r.kind, Opened::data);
  EXPECT_EQ(r.size, 0u);
  Bytes canceled = client_record(Bytes{1, 90, 0x15}, 2);  // user_canceled: not an error
  EXPECT_EQ(open_copy(server, canceled).kind, Opened::control);
}

TEST(TlsRecordLayer, KeyUpdateSplitAcrossRecordsUpdatesTheReadKeyAndOwesAnAnswer) {
  TlsRecordLayer server = server_of_trace();
  Bytes first = client_record(Bytes{24, 0, 0x16}, 0);
  Bytes second = client_record(Bytes{0, 1, 1, 0x16}, 1);  // update_requested
  EXPECT_EQ(open_copy(server, first).kind, Opened::control);
  EXPECT_FALSE(server.key_update_owed());
  // Nothing may come between the fragments of a handshake message.
  {
    TlsRecordLayer other = server_of_trace();
    Bytes f = client_record(Bytes{24, 0, 0x16}, 0);
    Bytes data = client_record(Bytes{'x', 0x17}, 1);
    EXPECT_EQ(open_copy(other, f).kind, Opened::control);
    EXPECT_EQ(open_copy(other, data).error, make_error_code(TlsRecordError::unexpected_message));
  }
  EXPECT_EQ(open_copy(server, second).kind, Opened::control);
  EXPECT_TRUE(server.key_update_owed());
  EXPECT_EQ(server.read_sequence(), 0u);
  // The old key no longer opens anything.
  Bytes old_key = client_record(Bytes{'x', 0x17}, 2);
  EXPECT_EQ(open_copy(server, old_key).error, make_error_code(TlsRecordError::bad_record_mac));
}

// Both directions of a connection, made with random secrets for `suite`.
std::pair<TlsRecordLayer, TlsRecordLayer> pair_of(std::uint16_t suite, std::size_t hash_len) {
  Bytes a(hash_len), b(hash_len);
  for (std::size_t i = 0; i < hash_len; ++i) {
    a[i] = static_cast<std::uint8_t>(i * 7 + 1);
    b[i] = static_cast<std::uint8_t>(i * 13 + 5);
  }
  auto server = TlsRecordLayer::create(suite, a, 0, b, 0);
  auto client = TlsRecordLayer::create(suite, b, 0, a, 0);
  if (!server || !client) throw std::runtime_error("no layer");
  return {std::move(*server), std::move(*client)};
}

TEST(TlsRecordLayer, EverySuiteRoundTripsThroughScheduledKeyUpdates) {
  const std::pair<std::uint16_t, std::size_t> suites[] = {
      {TlsRecordLayer::kAes128GcmSha256, 32},
      {TlsRecordLayer::kAes256GcmSha384, 48},
      {TlsRecordLayer::kChaCha20Poly1305Sha256, 32}};
  for (const auto& [suite, hash_len] : suites) {
    SCOPED_TRACE(suite);
    auto [server, client] = pair_of(suite, hash_len);
    server.set_key_update_after(3);
    Bytes out(TlsRecordLayer::kMaxPlaintext + TlsRecordLayer::kMaxSealExpansion);
    std::size_t updates = 0;
    for (std::size_t i = 0; i < 10; ++i) {
      const std::size_t size = i == 9 ? TlsRecordLayer::kMaxPlaintext : i * 100;
      Bytes msg(size, static_cast<std::uint8_t>(i));
      const std::size_t n = server.seal_data(msg.data(), msg.size(), out.data());
      std::size_t at = 0;
      bool got = false;
      while (at < n) {
        const Opened r = client.open(out.data() + at, n - at);
        ASSERT_NE(r.kind, Opened::failed) << r.error.message();
        ASSERT_NE(r.kind, Opened::incomplete);
        at += r.consumed;
        if (r.kind == Opened::control) ++updates;
        if (r.kind == Opened::data) {
          EXPECT_EQ(Bytes(r.bytes, r.bytes + r.size), msg);
          got = true;
        }
      }
      EXPECT_TRUE(got);
    }
    EXPECT_EQ(updates, 3u);  // after records 3, 6 and 9 (a KeyUpdate counts as a record)
  }
}

// --- the server stream against OpenSSL's client ------------------------------------------------

struct SslCtxFree {
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslFree {
  void operator()(SSL* p) const { SSL_free(p); }
};

// A listening socket on a free loopback port; `addr` gets its address.
int loopback_listener(sockaddr_in& addr) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  addr = sockaddr_in{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error("listen failed");
  }
  return listener;
}

// A blocking OpenSSL client on one end of a loopback connection, and a server TlsStream on
// the other, driven step by step with poll().
class StreamPair {
 public:
  StreamPair(SSL_CTX* server_ctx, SSL_CTX* client_ctx, SSL_SESSION* session = nullptr) {
    sockaddr_in addr{};
    const int listener = loopback_listener(addr);
    client_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(client_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect failed");
    }
    const int server_fd = ::accept(listener, nullptr, nullptr);
    ::close(listener);
    boost::asio::ip::tcp::socket socket(io_);
    socket.assign(boost::asio::ip::tcp::v4(), server_fd);
    server_ = std::make_unique<TlsStream>(std::move(socket), server_ctx);
    boost::system::error_code ec;
    server_->start(true, "", ec);
    if (ec) throw std::runtime_error("start failed");
    client_.reset(SSL_new(client_ctx));
    SSL_set_fd(client_.get(), client_fd_);
    if (session != nullptr) SSL_set_session(client_.get(), session);
  }
  ~StreamPair() {
    client_.reset();
    if (client_fd_ >= 0) ::close(client_fd_);
  }

  // Runs the server side of one operation until it completes; `lag` waits before each attempt
  // so that what the client sends piles up in the socket.
  TlsStep drive(const std::function<TlsStep()>& attempt,
                std::chrono::milliseconds lag = std::chrono::milliseconds(0)) {
    for (;;) {
      if (lag.count() != 0) std::this_thread::sleep_for(lag);
      const TlsStep step = attempt();
      if (step.kind == TlsStep::done) return step;
      pollfd p{server_->next_layer().native_handle(),
               static_cast<short>(step.kind == TlsStep::want_read ? POLLIN : POLLOUT), 0};
      if (::poll(&p, 1, 10000) != 1) throw std::runtime_error("server side timed out");
    }
  }

  void handshake() {
    auto client = std::async(std::launch::async, [this] { return SSL_connect(client_.get()); });
    const TlsStep step = drive([this] { return server_->try_handshake(); });
    ASSERT_FALSE(step.ec) << step.ec.message();
    ASSERT_EQ(client.get(), 1);
  }

  // The client sends `first` right behind its Finished, and the server reads its last flight
  // only after both arrived: the server's read-ahead holds records of the new keys.
  void handshake_with_early_data(const Bytes& first) {
    auto client = std::async(std::launch::async, [&] {
      return SSL_connect(client_.get()) == 1 &&
             SSL_write(client_.get(), first.data(), static_cast<int>(first.size())) ==
                 static_cast<int>(first.size());
    });
    const TlsStep step =
        drive([this] { return server_->try_handshake(); }, std::chrono::milliseconds(100));
    ASSERT_FALSE(step.ec) << step.ec.message();
    ASSERT_TRUE(client.get());
  }

  Bytes server_read(std::size_t n) {
    Bytes out(n);
    std::size_t got = 0;
    while (got < n) {
      const TlsStep step = drive([&] { return server_->try_read(out.data() + got, n - got); });
      if (step.ec) throw std::runtime_error("server read: " + step.ec.message());
      got += step.bytes;
    }
    return out;
  }

  boost::system::error_code server_read_error() {
    std::array<std::uint8_t, 64> sink{};
    for (;;) {
      const TlsStep step = drive([&] { return server_->try_read(sink.data(), sink.size()); });
      if (step.ec) return step.ec;
    }
  }

  void server_write(const Bytes& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
      const TlsStep step =
          drive([&] { return server_->try_write(data.data() + sent, data.size() - sent); });
      if (step.ec) throw std::runtime_error("server write: " + step.ec.message());
      sent += step.bytes;
    }
  }

  bool client_write(const Bytes& data) {
    return SSL_write(client_.get(), data.data(), static_cast<int>(data.size())) ==
           static_cast<int>(data.size());
  }

  Bytes client_read(std::size_t n) {
    Bytes out(n);
    std::size_t got = 0;
    while (got < n) {
      const int k = SSL_read(client_.get(), out.data() + got, static_cast<int>(n - got));
      if (k <= 0) throw std::runtime_error("client read failed");
      got += static_cast<std::size_t>(k);
    }
    return out;
  }

  TlsStream& server() { return *server_; }
  SSL* client() { return client_.get(); }
  int client_fd() const { return client_fd_; }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<TlsStream> server_;
  std::unique_ptr<SSL, SslFree> client_;
  int client_fd_ = -1;
};

class TlsHandoff : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    auto id = load_or_create_identity(dir_.path());
    ASSERT_TRUE(id);
    server_ctx_ = detail::make_server_context(*id);
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_min_proto_version(client_ctx_.get(), TLS1_3_VERSION);
    SSL_CTX_set_verify(client_ctx_.get(), SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_session_cache_mode(client_ctx_.get(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    ASSERT_EQ(SSL_CTX_set_ciphersuites(client_ctx_.get(), GetParam()), 1);
  }

  TempDir dir_;
  detail::SslCtxPtr server_ctx_;
  std::unique_ptr<SSL_CTX, SslCtxFree> client_ctx_;
};

TEST_P(TlsHandoff, ServerFreesOpenSslAndCarriesDataBothWays) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  ASSERT_TRUE(pair.server().own_records());
  EXPECT_EQ(pair.server().native_handle(), nullptr);
  EXPECT_EQ(pair.server().record_layer()->suite(),
            SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(pair.client())));

  const Bytes small = pattern(5, 1);
  const Bytes large = pattern(100000, 2);  // several records each way
  auto writer = std::async(std::launch::async,
                           [&] { return pair.client_write(small) && pair.client_write(large); });
  EXPECT_EQ(pair.server_read(small.size()), small);
  EXPECT_EQ(pair.server_read(large.size()), large);
  EXPECT_TRUE(writer.get());

  auto reader = std::async(std::launch::async, [&] { return pair.client_read(large.size()); });
  pair.server_write(large);
  EXPECT_EQ(reader.get(), large);
}

TEST_P(TlsHandoff, DataRightBehindTheClientsFinishedIsNotLost) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  const Bytes first = pattern(700, 8);
  pair.handshake_with_early_data(first);
  ASSERT_TRUE(pair.server().own_records());
  EXPECT_EQ(pair.server_read(first.size()), first);
  const Bytes more = pattern(20000, 9);
  ASSERT_TRUE(pair.client_write(more));
  EXPECT_EQ(pair.server_read(more.size()), more);
}

TEST_P(TlsHandoff, KeyUpdatesInBothDirections) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  ASSERT_TRUE(pair.server().own_records());
  // The client updates its key and asks the server to update too.
  ASSERT_EQ(SSL_key_update(pair.client(), SSL_KEY_UPDATE_REQUESTED), 1);
  const Bytes after = pattern(300, 3);
  ASSERT_TRUE(pair.client_write(after));
  EXPECT_EQ(pair.server_read(after.size()), after);
  EXPECT_TRUE(pair.server().record_layer()->key_update_owed());
  // The server's answer goes before its next data, which OpenSSL reads under the new key.
  const Bytes reply = pattern(200, 4);
  auto reader = std::async(std::launch::async, [&] { return pair.client_read(reply.size()); });
  pair.server_write(reply);
  EXPECT_EQ(reader.get(), reply);
  EXPECT_FALSE(pair.server().record_layer()->key_update_owed());
  // Scheduled updates from the server: one every 3 records.
  pair.server().record_layer()->set_key_update_after(3);
  Bytes all;
  for (int i = 0; i < 10; ++i) {
    const Bytes part = pattern(1000, 10 + static_cast<std::uint32_t>(i));
    all.insert(all.end(), part.begin(), part.end());
  }
  auto reader2 = std::async(std::launch::async, [&] { return pair.client_read(all.size()); });
  for (int i = 0; i < 10; ++i) {
    pair.server_write(Bytes(all.begin() + i * 1000, all.begin() + (i + 1) * 1000));
  }
  EXPECT_EQ(reader2.get(), all);
  // And the client still gets through after all that.
  ASSERT_TRUE(pair.client_write(after));
  EXPECT_EQ(pair.server_read(after.size()), after);
}

TEST_P(TlsHandoff, CloseNotifyBothWays) {
  {
    StreamPair pair(server_ctx_.get(), client_ctx_.get());
    pair.handshake();
    ASSERT_GE(SSL_shutdown(pair.client()), 0);
    EXPECT_EQ(pair.server_read_error(), boost::asio::error::eof);
  }
  {
    StreamPair pair(server_ctx_.get(), client_ctx_.get());
    pair.handshake();
    const TlsStep step = pair.drive([&] { return pair.server().try_shutdown(); });
    EXPECT_FALSE(step.ec);
    char byte = 0;
    EXPECT_EQ(SSL_read(pair.client(), &byte, 1), 0);
    EXPECT_EQ(SSL_get_error(pair.client(), 0), SSL_ERROR_ZERO_RETURN);
  }
  {
    // A peer that just drops the TCP connection truncated the stream.
    StreamPair pair(server_ctx_.get(), client_ctx_.get());
    pair.handshake();
    ::shutdown(pair.client_fd(), SHUT_WR);
    EXPECT_EQ(pair.server_read_error(), boost::asio::ssl::error::stream_truncated);
  }
}

TEST_P(TlsHandoff, TamperedRecordFailsAndTheClientHearsBadRecordMac) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  // A record of the right shape that no key made.
  Bytes forged = {0x17, 0x03, 0x03, 0x00, 0x20};
  const Bytes junk = pattern(32, 5);
  forged.insert(forged.end(), junk.begin(), junk.end());
  ASSERT_EQ(::send(pair.client_fd(), forged.data(), forged.size(), 0),
            static_cast<ssize_t>(forged.size()));
  EXPECT_EQ(pair.server_read_error(), make_error_code(TlsRecordError::bad_record_mac));
  char byte = 0;
  EXPECT_LE(SSL_read(pair.client(), &byte, 1), 0);
  const unsigned long e = ERR_peek_last_error();
  EXPECT_EQ(ERR_GET_REASON(e), SSL_R_SSLV3_ALERT_BAD_RECORD_MAC) << ERR_reason_error_string(e);
  ERR_clear_error();
  // The stream stays failed.
  EXPECT_EQ(pair.server_read_error(), make_error_code(TlsRecordError::bad_record_mac));
}

TEST_P(TlsHandoff, ResumedConnectionsHandOverToo) {
  SSL_SESSION* session = nullptr;
  {
    StreamPair pair(server_ctx_.get(), client_ctx_.get());
    pair.handshake();
    // The ticket arrives before the server's first data.
    const Bytes hello = pattern(10, 6);
    auto reader = std::async(std::launch::async, [&] { return pair.client_read(hello.size()); });
    pair.server_write(hello);
    EXPECT_EQ(reader.get(), hello);
    session = SSL_get1_session(pair.client());
    ASSERT_NE(session, nullptr);
    ASSERT_EQ(SSL_SESSION_is_resumable(session), 1);
    SSL_shutdown(pair.client());  // OpenSSL spoils the session of a connection dropped unclosed
  }
  StreamPair pair(server_ctx_.get(), client_ctx_.get(), session);
  SSL_SESSION_free(session);
  pair.handshake();
  EXPECT_EQ(SSL_session_reused(pair.client()), 1);
  ASSERT_TRUE(pair.server().own_records());
  const Bytes data = pattern(3000, 7);
  ASSERT_TRUE(pair.client_write(data));
  EXPECT_EQ(pair.server_read(data.size()), data);
  auto reader = std::async(std::launch::async, [&] { return pair.client_read(data.size()); });
  pair.server_write(data);
  EXPECT_EQ(reader.get(), data);
}

// A ticket bigger than a record (ticket application data, 512-byte records): the server's
// sequence counts records, not messages, or its first data would reuse the ticket's nonce.
int big_ticket(SSL* ssl, void*) {
  const std::string appdata(1500, 'a');
  return SSL_SESSION_set1_ticket_appdata(SSL_get_session(ssl), appdata.data(), appdata.size());
}

TEST_P(TlsHandoff, TicketsSpanningRecordsAreCountedPerRecord) {
  ASSERT_EQ(SSL_CTX_set_max_send_fragment(server_ctx_.get(), 512), 1);
  ASSERT_EQ(SSL_CTX_set_session_ticket_cb(server_ctx_.get(), big_ticket, nullptr, nullptr), 1);
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  ASSERT_TRUE(pair.server().own_records());
  EXPECT_GE(pair.server().record_layer()->write_sequence(), 4u);  // one ticket, several records
  const Bytes data = pattern(2000, 11);
  auto reader = std::async(std::launch::async, [&] { return pair.client_read(data.size()); });
  pair.server_write(data);
  EXPECT_EQ(reader.get(), data);
}

TEST_P(TlsHandoff, AServerStreamEndsAfterTooManyEmptyRecords) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  ASSERT_TRUE(pair.server().own_records());
  // KeyUpdates deliver nothing; 40 in a row without data is a peer wasting the server's time.
  for (int i = 0; i < 40; ++i) {
    ASSERT_EQ(SSL_key_update(pair.client(), SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    ASSERT_EQ(SSL_do_handshake(pair.client()), 1);  // sends it
  }
  EXPECT_EQ(pair.server_read_error(), make_error_code(TlsRecordError::unexpected_message));
}

bool readable_within(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

std::uint32_t data_segments_in(int fd) {
  const auto s = tcp_segments(fd);
  if (!s) throw std::runtime_error("TCP_INFO has no segment counters");
  return s->data_in;
}

TEST_P(TlsHandoff, TheTicketWaitsForTheServersFirstWriteAndLeavesWithIt) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  ASSERT_TRUE(pair.server().own_records());
  EXPECT_TRUE(pair.server().has_unowned_output());
  EXPECT_FALSE(readable_within(pair.client_fd(), std::chrono::milliseconds(100)));
  const std::uint32_t before = data_segments_in(pair.client_fd());
  const Bytes hello = pattern(10, 12);
  auto reader = std::async(std::launch::async, [&] { return pair.client_read(hello.size()); });
  pair.server_write(hello);
  EXPECT_EQ(reader.get(), hello);
  EXPECT_FALSE(pair.server().has_unowned_output());
  EXPECT_EQ(data_segments_in(pair.client_fd()) - before, 1u);  // the ticket and the data
  SSL_SESSION* session = SSL_get1_session(pair.client());
  ASSERT_NE(session, nullptr);
  EXPECT_EQ(SSL_SESSION_is_resumable(session), 1);
  SSL_SESSION_free(session);
}

TEST_P(TlsHandoff, AClientThatClosesRightAwayStillGetsItsTicket) {
  for (const bool with_close_notify : {true, false}) {
    StreamPair pair(server_ctx_.get(), client_ctx_.get());
    pair.handshake();
    if (with_close_notify) {
      ASSERT_GE(SSL_shutdown(pair.client()), 0);
      EXPECT_EQ(pair.server_read_error(), boost::asio::error::eof);
    } else {  // a bare half-close: the stream was truncated, but the client still reads
      // (OpenSSL would answer the server's plain EOF with an alert, on a closed socket.)
      SSL_set_options(pair.client(), SSL_OP_IGNORE_UNEXPECTED_EOF);
      ::shutdown(pair.client_fd(), SHUT_WR);
      EXPECT_EQ(pair.server_read_error(), boost::asio::ssl::error::stream_truncated);
    }
    pair.server().close_socket();
    char sink[64];
    while (SSL_read(pair.client(), sink, sizeof sink) > 0) {
    }
    ERR_clear_error();
    SSL_SESSION* session = SSL_get1_session(pair.client());
    ASSERT_NE(session, nullptr);
    EXPECT_EQ(SSL_SESSION_is_resumable(session), 1) << with_close_notify;
    SSL_SESSION_free(session);
  }
}

TEST_P(TlsHandoff, HeldOutputLeavesWithTheNextWriteAReadWaitAFlushOrTheClose) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  ASSERT_TRUE(pair.server().own_records());
  const int fd = pair.client_fd();
  const Bytes a = pattern(100, 20), b = pattern(200, 21), c = pattern(300, 22),
              d = pattern(400, 23), e = pattern(500, 24);

  // Held: the write completes, nothing is sent; the next write takes it along, in order.
  pair.server().hold_output(true);
  pair.server_write(a);
  EXPECT_TRUE(pair.server().has_unowned_output());
  EXPECT_FALSE(readable_within(fd, std::chrono::milliseconds(100)));
  pair.server().hold_output(false);
  std::uint32_t before = data_segments_in(fd);
  auto reader =
      std::async(std::launch::async, [&] { return pair.client_read(a.size() + b.size()); });
  pair.server_write(b);
  Bytes ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  EXPECT_EQ(reader.get(), ab);
  EXPECT_EQ(data_segments_in(fd) - before, 1u);

  // A read that has to wait sends what nobody owns first (the peer may be waiting for it)...
  pair.server().hold_output(true);
  pair.server_write(c);
  std::array<std::uint8_t, 16> buf{};
  EXPECT_EQ(pair.server().try_read(buf.data(), buf.size()).kind, TlsStep::want_read);
  EXPECT_FALSE(readable_within(fd, std::chrono::milliseconds(100)));  // ...unless held
  pair.server().hold_output(false);
  EXPECT_EQ(pair.server().try_read(buf.data(), buf.size()).kind, TlsStep::want_read);
  EXPECT_EQ(pair.client_read(c.size()), c);

  // A flush sends it.
  pair.server().hold_output(true);
  pair.server_write(d);
  const TlsStep flushed = pair.drive([&] { return pair.server().try_flush(); });
  EXPECT_FALSE(flushed.ec);
  EXPECT_FALSE(pair.server().has_unowned_output());
  EXPECT_EQ(pair.client_read(d.size()), d);

  // Only small answers are held: a large write ends the hold and leaves as it is made.
  const Bytes big = pattern(50000, 25);
  pair.server().hold_output(true);
  auto big_reader = std::async(std::launch::async, [&] { return pair.client_read(big.size()); });
  pair.server_write(big);
  EXPECT_FALSE(pair.server().holding_output());
  EXPECT_EQ(big_reader.get(), big);

  // And close_notify goes after it.
  pair.server_write(e);
  const TlsStep closed = pair.drive([&] { return pair.server().try_shutdown(); });
  EXPECT_FALSE(closed.ec);
  EXPECT_EQ(pair.client_read(e.size()), e);
  char byte = 0;
  EXPECT_EQ(SSL_read(pair.client(), &byte, 1), 0);
  EXPECT_EQ(SSL_get_error(pair.client(), 0), SSL_ERROR_ZERO_RETURN);
}

INSTANTIATE_TEST_SUITE_P(Suites, TlsHandoff,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256"));

// An operator's certificate from a CA: the server sends the chain its PEM file holds, in order,
// and nothing else (OpenSSL does not build one from a store: the server keeps none).
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

PkeyPtr p256_key() {
  return {EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free};
}

// A certificate for `key` named `cn`, signed by `issuer` (itself when null) with `issuer_key`.
X509Ptr certificate(const char* cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, bool ca) {
  X509Ptr c(X509_new(), X509_free);
  if (!c) return c;
  X509_NAME* name = X509_get_subject_name(c.get());
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer != nullptr ? issuer : c.get(), c.get(), nullptr, nullptr, 0);
  bool ok =
      X509_set_version(c.get(), X509_VERSION_3) == 1 &&
      ASN1_INTEGER_set(X509_get_serialNumber(c.get()), ca ? 1 : 2) == 1 &&
      X509_gmtime_adj(X509_getm_notBefore(c.get()), -60) != nullptr &&
      X509_gmtime_adj(X509_getm_notAfter(c.get()), 86400) != nullptr &&
      X509_set_pubkey(c.get(), key) == 1 &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(cn), -1, -1, 0) == 1 &&
      X509_set_issuer_name(c.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name) == 1;
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &v3, NID_basic_constraints,
                                             ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  ok = ok && ext != nullptr && X509_add_ext(c.get(), ext, -1) == 1 &&
       X509_sign(c.get(), issuer_key, EVP_sha256()) > 0;
  X509_EXTENSION_free(ext);
  if (!ok) c.reset();
  return c;
}

template <typename Write>
std::string pem(Write&& write) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || !write(bio.get())) return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

bool write_text(const fs::path& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  return std::fclose(f) == 0 && ok;
}

std::string common_name(X509* cert) {
  char cn[128] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  return cn;
}

TEST(TlsServerChain, TheServerSendsTheChainOfItsCertificateFileAndNoMore) {
  PkeyPtr ca_key = p256_key();
  PkeyPtr leaf_key = p256_key();
  ASSERT_TRUE(ca_key && leaf_key);
  X509Ptr ca = certificate("Sotto Test Issuing CA", ca_key.get(), nullptr, ca_key.get(), true);
  ASSERT_TRUE(ca);
  X509Ptr leaf = certificate("chat.example.org", leaf_key.get(), ca.get(), ca_key.get(), false);
  ASSERT_TRUE(leaf);

  // As an operator configures it: the leaf then its issuer in one file, the key in another.
  TempDir dir;
  const std::string chain_pem =
      pem([&](BIO* b) { return PEM_write_bio_X509(b, leaf.get()) == 1; }) +
      pem([&](BIO* b) { return PEM_write_bio_X509(b, ca.get()) == 1; });
  const std::string key_pem = pem([&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, leaf_key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
  ASSERT_FALSE(chain_pem.empty() || key_pem.empty());
  ASSERT_TRUE(write_text(dir.path() / "cert.pem", chain_pem) &&
              write_text(dir.path() / "key.pem", key_pem));
  auto id = load_identity(dir.path() / "cert.pem", dir.path() / "key.pem");
  ASSERT_TRUE(id);
  EXPECT_EQ(id->fingerprint, detail::fingerprint_of(leaf.get()));  // clients pin the leaf

  const detail::SslCtxPtr server_ctx = detail::make_server_context(*id);
  std::unique_ptr<SSL_CTX, SslCtxFree> client_ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_NONE, nullptr);
  {
    StreamPair pair(server_ctx.get(), client_ctx.get());
    pair.handshake();
    STACK_OF(X509)* sent = SSL_get_peer_cert_chain(pair.client());
    ASSERT_NE(sent, nullptr);
    ASSERT_EQ(sk_X509_num(sent), 2);
    EXPECT_EQ(X509_cmp(sk_X509_value(sent, 0), leaf.get()), 0);
    EXPECT_EQ(X509_cmp(sk_X509_value(sent, 1), ca.get()), 0);
    EXPECT_EQ(common_name(sk_X509_value(sent, 1)), "Sotto Test Issuing CA");
  }

  // A file with the leaf alone sends the leaf alone, even when the context's store could
  // complete the chain: OpenSSL builds none (SSL_MODE_NO_AUTO_CHAIN).
  TempDir leaf_only;
  const std::string leaf_pem = pem([&](BIO* b) { return PEM_write_bio_X509(b, leaf.get()) == 1; });
  ASSERT_TRUE(write_text(leaf_only.path() / "cert.pem", leaf_pem) &&
              write_text(leaf_only.path() / "key.pem", key_pem));
  auto leaf_id = load_identity(leaf_only.path() / "cert.pem", leaf_only.path() / "key.pem");
  ASSERT_TRUE(leaf_id);
  const detail::SslCtxPtr leaf_ctx = detail::make_server_context(*leaf_id);
  ASSERT_EQ(X509_STORE_add_cert(SSL_CTX_get_cert_store(leaf_ctx.get()), ca.get()), 1);
  {
    StreamPair pair(leaf_ctx.get(), client_ctx.get());
    pair.handshake();
    STACK_OF(X509)* sent = SSL_get_peer_cert_chain(pair.client());
    ASSERT_NE(sent, nullptr);
    ASSERT_EQ(sk_X509_num(sent), 1);
    EXPECT_EQ(X509_cmp(sk_X509_value(sent, 0), leaf.get()), 0);
  }

  // The generated self-signed certificate goes alone.
  TempDir own;
  auto self_signed = load_or_create_identity(own.path());
  ASSERT_TRUE(self_signed);
  const detail::SslCtxPtr own_ctx = detail::make_server_context(*self_signed);
  StreamPair pair(own_ctx.get(), client_ctx.get());
  pair.handshake();
  STACK_OF(X509)* sent = SSL_get_peer_cert_chain(pair.client());
  ASSERT_NE(sent, nullptr);
  EXPECT_EQ(sk_X509_num(sent), 1);
}

// A client TlsStream against a blocking OpenSSL server (no hand-over on that side).
class ClientStreamPair {
 public:
  explicit ClientStreamPair(SSL_CTX* server_ctx) {
    sockaddr_in addr{};
    const int listener = loopback_listener(addr);
    boost::asio::ip::tcp::socket socket(io_);
    socket.connect({boost::asio::ip::address_v4::loopback(), ntohs(addr.sin_port)});
    server_fd_ = ::accept(listener, nullptr, nullptr);
    ::close(listener);
    client_ = std::make_unique<TlsStream>(std::move(socket), detail::client_context());
    boost::system::error_code ec;
    client_->start(false, "", ec);
    if (ec) throw std::runtime_error("start failed");
    server_.reset(SSL_new(server_ctx));
    SSL_set_fd(server_.get(), server_fd_);
  }
  ~ClientStreamPair() {
    server_.reset();
    if (server_fd_ >= 0) ::close(server_fd_);
  }

  TlsStep drive(const std::function<TlsStep()>& attempt) {
    for (;;) {
      const TlsStep step = attempt();
      if (step.kind == TlsStep::done) return step;
      pollfd p{client_->next_layer().native_handle(),
               static_cast<short>(step.kind == TlsStep::want_read ? POLLIN : POLLOUT), 0};
      if (::poll(&p, 1, 10000) != 1) throw std::runtime_error("client side timed out");
    }
  }

  TlsStream& client() { return *client_; }
  SSL* server() { return server_.get(); }
  int client_fd() { return client_->next_layer().native_handle(); }

 private:
  boost::asio::io_context io_;
  std::unique_ptr<TlsStream> client_;
  std::unique_ptr<SSL, SslFree> server_;
  int server_fd_ = -1;
};

class TlsClientStream : public ::testing::Test {
 protected:
  void SetUp() override {
    auto id = load_or_create_identity(dir_.path());
    ASSERT_TRUE(id);
    server_ctx_ = detail::make_server_context(*id);
    SSL_CTX_set_keylog_callback(server_ctx_.get(), nullptr);  // an OpenSSL server throughout
  }

  TempDir dir_;
  detail::SslCtxPtr server_ctx_;
};

TEST_F(TlsClientStream, TheFinishedWaitsForTheFirstWriteAndLeavesWithIt) {
  ClientStreamPair pair(server_ctx_.get());
  auto accepted = std::async(std::launch::async, [&] { return SSL_accept(pair.server()); });
  const TlsStep hs = pair.drive([&] { return pair.client().try_handshake(); });
  ASSERT_FALSE(hs.ec) << hs.ec.message();
  // The server cannot finish its handshake: the client's Finished has not left.
  EXPECT_EQ(accepted.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  const auto before = tcp_segments(pair.client_fd());
  ASSERT_TRUE(before);
  const Bytes request = pattern(350, 30);
  const TlsStep wrote =
      pair.drive([&] { return pair.client().try_write(request.data(), request.size()); });
  ASSERT_FALSE(wrote.ec);
  EXPECT_EQ(wrote.bytes, request.size());
  EXPECT_EQ(tcp_segments(pair.client_fd())->data_out - before->data_out, 1u);  // both at once
  ASSERT_EQ(accepted.get(), 1);
  Bytes got(request.size());
  ASSERT_EQ(SSL_read(pair.server(), got.data(), static_cast<int>(got.size())),
            static_cast<int>(got.size()));
  EXPECT_EQ(got, request);
}

TEST_F(TlsClientStream, AReadOrACloseSendsTheDeferredFinished) {
  {
    ClientStreamPair pair(server_ctx_.get());
    auto accepted = std::async(std::launch::async, [&] { return SSL_accept(pair.server()); });
    ASSERT_FALSE(pair.drive([&] { return pair.client().try_handshake(); }).ec);
    std::array<std::uint8_t, 8> buf{};
    EXPECT_EQ(pair.client().try_read(buf.data(), buf.size()).kind, TlsStep::want_read);
    ASSERT_EQ(accepted.get(), 1);  // the read sent it before waiting
    const std::string hello = "hello";
    ASSERT_EQ(SSL_write(pair.server(), hello.data(), static_cast<int>(hello.size())), 5);
    const TlsStep read = pair.drive([&] { return pair.client().try_read(buf.data(), buf.size()); });
    ASSERT_FALSE(read.ec);
    EXPECT_EQ(std::string(reinterpret_cast<char*>(buf.data()), read.bytes), hello);
  }
  {
    ClientStreamPair pair(server_ctx_.get());
    auto accepted = std::async(std::launch::async, [&] { return SSL_accept(pair.server()); });
    ASSERT_FALSE(pair.drive([&] { return pair.client().try_handshake(); }).ec);
    ASSERT_FALSE(pair.drive([&] { return pair.client().try_shutdown(); }).ec);
    ASSERT_EQ(accepted.get(), 1);
    char byte = 0;
    EXPECT_EQ(SSL_read(pair.server(), &byte, 1), 0);
    EXPECT_EQ(SSL_get_error(pair.server(), 0), SSL_ERROR_ZERO_RETURN);
  }
}

// --- both record paths of the server stream ---------------------------------------------------

// What the server stream does on either path: its records handed over to TlsRecordLayer, or kept
// by OpenSSL (a context made with record_handover = false, as a server whose handover is off).
class TlsServerStream : public ::testing::TestWithParam<std::tuple<const char*, bool>> {
 protected:
  void SetUp() override {
    auto id = load_or_create_identity(dir_.path());
    ASSERT_TRUE(id);
    server_ctx_ = detail::make_server_context(*id, handover());
    client_ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_min_proto_version(client_ctx_.get(), TLS1_3_VERSION);
    SSL_CTX_set_verify(client_ctx_.get(), SSL_VERIFY_NONE, nullptr);
    ASSERT_EQ(SSL_CTX_set_ciphersuites(client_ctx_.get(), std::get<0>(GetParam())), 1);
  }
  bool handover() const { return std::get<1>(GetParam()); }

  TempDir dir_;
  detail::SslCtxPtr server_ctx_;
  std::unique_ptr<SSL_CTX, SslCtxFree> client_ctx_;
};

TEST_P(TlsServerStream, CarriesDataBothWaysOnItsPath) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  EXPECT_EQ(pair.server().own_records(), handover());
  EXPECT_EQ(pair.server().native_handle() == nullptr, handover());
  const Bytes large = pattern(100000, 31);
  auto writer = std::async(std::launch::async, [&] { return pair.client_write(large); });
  EXPECT_EQ(pair.server_read(large.size()), large);
  EXPECT_TRUE(writer.get());
  auto reader = std::async(std::launch::async, [&] { return pair.client_read(large.size()); });
  pair.server_write(large);
  EXPECT_EQ(reader.get(), large);
}

TEST_P(TlsServerStream, AnswersARequestedKeyUpdate) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  for (const int type : {SSL_KEY_UPDATE_REQUESTED, SSL_KEY_UPDATE_NOT_REQUESTED}) {
    ASSERT_EQ(SSL_key_update(pair.client(), type), 1);
    const Bytes after = pattern(300, 32);
    ASSERT_TRUE(pair.client_write(after));
    EXPECT_EQ(pair.server_read(after.size()), after);
    const Bytes reply = pattern(200, 33);
    auto reader = std::async(std::launch::async, [&] { return pair.client_read(reply.size()); });
    pair.server_write(reply);
    EXPECT_EQ(reader.get(), reply);
  }
}

// close_with_notify (every way the server ends a connection short of the WebSocket close): the
// client reads close_notify after what was queued, and the server never blocks on it.
TEST_P(TlsServerStream, CloseWithNotifySendsCloseNotifyAfterQueuedOutput) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  const Bytes last = pattern(500, 34);
  pair.server().hold_output(true);  // queued, not sent (on the handover path)
  pair.server_write(last);
  pair.server().close_with_notify();
  EXPECT_FALSE(pair.server().next_layer().is_open());
  EXPECT_EQ(pair.client_read(last.size()), last);
  char byte = 0;
  EXPECT_EQ(SSL_read(pair.client(), &byte, 1), 0);
  EXPECT_EQ(SSL_get_error(pair.client(), 0), SSL_ERROR_ZERO_RETURN);
  pair.server().close_with_notify();  // idempotent
}

// Before the handshake is done there is nothing to say close_notify with: the socket just closes.
TEST_P(TlsServerStream, CloseWithNotifyBeforeTheHandshakeOnlyCloses) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.server().close_with_notify();
  EXPECT_FALSE(pair.server().next_layer().is_open());
  char byte = 0;
  EXPECT_EQ(::recv(pair.client_fd(), &byte, 1, 0), 0);  // a FIN, and nothing before it
}

// A peer that does not read: close_with_notify gives up on what the socket does not take at
// once instead of waiting.
TEST_P(TlsServerStream, CloseWithNotifyDoesNotWaitForAPeerThatDoesNotRead) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  const Bytes chunk = pattern(16384, 35);
  // Fill the socket buffers: writes until one has to wait.
  for (int i = 0; i < 10000; ++i) {
    const TlsStep st = pair.server().try_write(chunk.data(), chunk.size());
    if (st.ec || st.kind != TlsStep::done) break;
  }
  pair.server().close_with_notify();  // returns: nothing here waits
  EXPECT_FALSE(pair.server().next_layer().is_open());
}

TEST_P(TlsServerStream, ATamperedRecordIsRefusedWithBadRecordMac) {
  StreamPair pair(server_ctx_.get(), client_ctx_.get());
  pair.handshake();
  Bytes forged = {0x17, 0x03, 0x03, 0x00, 0x20};
  const Bytes junk = pattern(32, 36);
  forged.insert(forged.end(), junk.begin(), junk.end());
  ASSERT_EQ(::send(pair.client_fd(), forged.data(), forged.size(), 0),
            static_cast<ssize_t>(forged.size()));
  EXPECT_TRUE(pair.server_read_error());
  char byte = 0;
  EXPECT_LE(SSL_read(pair.client(), &byte, 1), 0);
  const unsigned long e = ERR_peek_last_error();
  EXPECT_EQ(ERR_GET_REASON(e), SSL_R_SSLV3_ALERT_BAD_RECORD_MAC) << ERR_reason_error_string(e);
  ERR_clear_error();
}

INSTANTIATE_TEST_SUITE_P(SuitesAndPaths, TlsServerStream,
                         ::testing::Combine(::testing::Values("TLS_AES_128_GCM_SHA256",
                                                              "TLS_AES_256_GCM_SHA384",
                                                              "TLS_CHACHA20_POLY1305_SHA256"),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<const char*, bool>>& p) {
                           return std::string(std::get<0>(p.param)) +
                                  (std::get<1>(p.param) ? "_Handover" : "_OpenSslRecords");
                         });

// --- the handover's start-up self-check (net/handover/record_handover.h) ---------------------

class RecordHandoverCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    auto id = load_or_create_identity(dir_.path());
    ASSERT_TRUE(id);
    identity_ = *id;
  }
  void TearDown() override { handover::testing::set_write_sequence_offset(0); }

  TempDir dir_;
  TlsIdentity identity_;
};

TEST_F(RecordHandoverCheck, PassesOnThisOpenSsl) {
  const detail::SslCtxPtr ctx = detail::make_server_context(identity_, true);
  const handover::Verdict v = handover::self_check(ctx.get());
  EXPECT_TRUE(v.enabled) << v.reason;
  EXPECT_NE(v.reason.find("passed"), std::string::npos) << v.reason;
  EXPECT_TRUE(handover::decide(ctx.get(), OpenSSL_version_num()).enabled);
}

// A miscounted first write sequence number (what a future OpenSSL counting its records otherwise
// would cause): the client cannot read the first handed-over record, and the check says so.
TEST_F(RecordHandoverCheck, AMiscountedWriteSequenceFailsTheCheck) {
  const detail::SslCtxPtr ctx = detail::make_server_context(identity_, true);
  for (const std::int64_t offset : {1, -1, 2}) {
    handover::testing::set_write_sequence_offset(offset);
    const handover::Verdict v = handover::self_check(ctx.get());
    EXPECT_FALSE(v.enabled) << offset;
    EXPECT_NE(v.reason.find("could not read the first handed-over record"), std::string::npos)
        << v.reason;
  }
  handover::testing::set_write_sequence_offset(0);
  EXPECT_TRUE(handover::self_check(ctx.get()).enabled);
}

TEST_F(RecordHandoverCheck, OnlyTheTestedOpenSslSeriesIsTrusted) {
  EXPECT_TRUE(handover::version_tested(0x30000000UL));   // 3.0.0
  EXPECT_TRUE(handover::version_tested(0x30000130UL));   // 3.0.19
  EXPECT_FALSE(handover::version_tested(0x30100000UL));  // 3.1.0
  EXPECT_FALSE(handover::version_tested(0x30500010UL));  // 3.5.1
  EXPECT_FALSE(handover::version_tested(0x1010117fUL));  // 1.1.1w
  const detail::SslCtxPtr ctx = detail::make_server_context(identity_, true);
  const handover::Verdict v = handover::decide(ctx.get(), 0x30500010UL);
  EXPECT_FALSE(v.enabled);
  EXPECT_NE(v.reason.find("OpenSSL 3.5.1"), std::string::npos) << v.reason;
}

TEST_F(RecordHandoverCheck, AContextThatDoesNotHandOverIsNotChecked) {
  const detail::SslCtxPtr ctx = detail::make_server_context(identity_, false);
  EXPECT_FALSE(handover::enabled(ctx.get()));
  EXPECT_FALSE(handover::self_check(ctx.get()).enabled);
}

}  // namespace
}  // namespace sotto::net
