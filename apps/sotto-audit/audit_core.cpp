#include "audit_core.h"

#include <algorithm>
#include <array>

#include "crypto/encoding.h"
#include "crypto/hash.h"

namespace sotto::audit {

namespace kt = transparency;

namespace {

constexpr std::size_t kCheckBytes = 8;

ByteView as_view(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

tl::unexpected<Failure> misbehaved(std::string message) {
  return tl::unexpected(Failure{true, std::move(message)});
}
tl::unexpected<Failure> broken(std::string message) {
  return tl::unexpected(Failure{false, std::move(message)});
}

}  // namespace

tl::expected<kt::SignedTreeHead, Failure> apply_answer(kt::Auditor& auditor,
                                                       const kt::LogPublicKeys& keys,
                                                       const wire::service::KtAuditResponse& answer,
                                                       std::vector<Bytes>& accepted) {
  auto head = kt::decode_signed_tree_head(as_view(answer.tree_head()));
  if (!head) return broken("the server's tree head is malformed");
  if (!kt::verify_tree_head(*head, keys.signing_key)) {
    return broken(
        "the server's tree head (size " + std::to_string(head->head.size) +
        ") is not signed by the log key in use (--log-keys, or the ones pinned in log.keys: "
        "are they this log's, the signing key first?)");
  }
  const std::uint64_t replayed = auditor.size();
  if (head->head.size < replayed) {
    return misbehaved("the log shrank: the server's signed tree head has " +
                      std::to_string(head->head.size) + " entries, and this auditor replayed " +
                      std::to_string(replayed) + " entries of it before");
  }
  for (const std::string& bytes : answer.records()) {
    const std::uint64_t entry = auditor.size();
    auto record = kt::decode_audit_record(as_view(bytes));
    if (!record)
      return broken("the audit record of entry " + std::to_string(entry) + " is malformed");
    if (auto ok = auditor.apply(*record); !ok) {
      return misbehaved("entry " + std::to_string(entry) +
                        " does not extend the log this auditor replayed (" +
                        std::string(kt::to_string(ok.error())) +
                        "): the log rewrote or dropped an earlier entry, or took back a version");
    }
    accepted.emplace_back(as_view(bytes).begin(), as_view(bytes).end());
  }
  if (answer.records_size() == 0 && auditor.size() < head->head.size) {
    return broken("the server sent no audit records from entry " + std::to_string(auditor.size()) +
                  " though its head has " + std::to_string(head->head.size));
  }
  return *head;
}

tl::expected<void, Failure> check_head(const kt::Auditor& auditor, const kt::SignedTreeHead& head) {
  auto ok = auditor.check(head);
  if (ok) return {};
  if (ok.error() == kt::Error::invalid_argument) {
    return broken("the head of size " + std::to_string(head.head.size) +
                  " is beyond the records replayed (" + std::to_string(auditor.size()) + ")");
  }
  if (ok.error() == kt::Error::bad_signature) {
    return broken("the server's tree head is not signed by the log key in use");
  }
  return misbehaved("the server's signed tree head of size " + std::to_string(head.head.size) +
                    " is not the one this auditor's replay of the log gives at that size: the log "
                    "rewrote or dropped an earlier entry");
}

Bytes frame_record(ByteView record) {
  Bytes out;
  out.reserve(4 + record.size() + kCheckBytes);
  const auto n = static_cast<std::uint32_t>(record.size());
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(n >> shift));
  out.insert(out.end(), record.begin(), record.end());
  const auto digest = crypto::sha256({record});
  out.insert(out.end(), digest.begin(), digest.begin() + kCheckBytes);
  return out;
}

StoredRecords parse_records_file(ByteView file) {
  StoredRecords out;
  std::size_t at = 0;
  while (file.size() - at >= 4) {
    std::uint32_t n = 0;
    for (std::size_t i = 0; i < 4; ++i) n = n << 8 | file[at + i];
    if (file.size() - at - 4 < std::size_t{n} + kCheckBytes) break;
    const ByteView record = file.subspan(at + 4, n);
    const auto digest = crypto::sha256({record});
    if (!std::equal(digest.begin(), digest.begin() + kCheckBytes, file.begin() + at + 4 + n)) break;
    out.records.emplace_back(record.begin(), record.end());
    at += 4 + n + kCheckBytes;
  }
  out.valid_bytes = at;
  return out;
}

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

char lower(char c) {
  return (c >= 'A' && c <= 'F') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

// 32 bytes from exactly 64 hex digits (either case), nothing else.
std::optional<std::array<std::uint8_t, 32>> key_from_hex(std::string_view text) {
  if (text.size() != 64) return std::nullopt;
  std::string digits;
  for (char c : text) {
    c = lower(c);
    if (!is_hex(c)) return std::nullopt;
    digits.push_back(c);
  }
  auto bytes = crypto::from_hex(digits);
  if (!bytes || bytes->size() != 32) return std::nullopt;
  std::array<std::uint8_t, 32> out{};
  std::copy(bytes->begin(), bytes->end(), out.begin());
  return out;
}

}  // namespace

std::optional<std::string> normalize_pin(std::string_view text) {
  std::string out;
  for (char c : trim(text)) {
    if (c == ':' || c == ' ') continue;
    c = lower(c);
    if (!is_hex(c)) return std::nullopt;
    out.push_back(c);
  }
  if (out.size() != 64) return std::nullopt;
  return out;
}

std::optional<kt::LogPublicKeys> parse_log_keys(std::string_view text) {
  text = trim(text);
  constexpr std::string_view kPrefix = "kt keys:";
  if (text.substr(0, kPrefix.size()) == kPrefix) text = trim(text.substr(kPrefix.size()));
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto signing = key_from_hex(text.substr(0, colon));
  auto vrf = key_from_hex(text.substr(colon + 1));
  if (!signing || !vrf) return std::nullopt;
  kt::LogPublicKeys keys;
  keys.signing_key = *signing;
  keys.vrf_key = *vrf;
  return keys;
}

std::string log_keys_text(const kt::LogPublicKeys& keys) {
  return crypto::to_hex(keys.signing_key) + ":" + crypto::to_hex(keys.vrf_key);
}

}  // namespace sotto::audit
