// Fuzzes the server's attachment service (src/server/attachments.h) and its blob store: the
// requests of service.proto fields 50-53 from an authenticated account, over a real SQLite store
// and blob directory in a temporary directory. Input: a sequence of Requests, each prefixed by a
// 2-byte big-endian length; the first byte of each picks the account (two of them). Checked
// besides "no crash": every answer has a known status; a refused write leaves the upload's
// received bytes unchanged; a read returns at most the chunk size and only from a complete blob;
// the bytes on disk never exceed what the uploads announced.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "crypto/rng.h"
#include "fuzz_check.h"
#include "server/attachments.h"
#include "service.pb.h"
#include "store/server/sqlite_store.h"

namespace {

using namespace sotto;
namespace svc = sotto::wire::service;

struct World {
  std::filesystem::path dir;
  std::unique_ptr<store::SqliteServerStore> store;
  std::unique_ptr<server::AttachmentService> service;
  crypto::DeterministicRng rng{7};
  std::uint64_t now_ms = 1'700'000'000'000;
  store::AccountId accounts[2] = {0, 0};
};

store::AccountId make_account(store::SqliteServerStore& s, const std::string& name) {
  store::DeviceRecord d;
  d.id = 1;
  d.registration_id = 1;
  d.auth_key = Bytes(32, 1);
  store::SignedPreKeyRecord spk{1, Bytes(33, 5), Bytes(64, 0)};
  spk.public_key[0] = 0x05;
  Bytes identity(33, 5);
  auto id = s.accounts().create_account(name, identity, d, spk, {});
  return id ? *id : 0;
}

World& world() {
  static World* w = [] {
    auto* out = new World;
    char tmpl[] = "/tmp/sotto-attachment-fuzz-XXXXXX";
    out->dir = mkdtemp(tmpl);
    store::SqliteOptions options;
    options.log = [](std::string_view) {};
    out->store = std::move(*store::SqliteServerStore::open(out->dir / "sotto.db", options));
    out->accounts[0] = make_account(*out->store, "alice");
    out->accounts[1] = make_account(*out->store, "bob");
    server::ServerConfig c;
    c.data_dir = out->dir;
    c.min_free_disk_bytes = 0;
    c.max_attachment_bytes = 64 * 1024;
    c.attachment_quota_bytes = 256 * 1024;
    c.attachment_uploads_per_hour = 1'000'000;
    out->service =
        std::make_unique<server::AttachmentService>(c, out->rng, [out] { return out->now_ms; });
    return out;
  }();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = world();
  std::size_t at = 0;
  while (at + 3 <= size) {
    const std::size_t n = (static_cast<std::size_t>(data[at]) << 8) | data[at + 1];
    at += 2;
    if (n == 0 || n > size - at) break;
    const store::AccountId account = w.accounts[data[at] & 1];
    svc::Request r;
    if (!r.ParseFromArray(data + at + 1, static_cast<int>(n - 1))) {
      at += n;
      continue;
    }
    at += n;
    if (!server::AttachmentService::handles(r)) continue;
    std::optional<store::BlobRecord> before;
    if (r.has_attachment_write() && r.attachment_write().id().size() == store::kBlobIdSize) {
      store::BlobId id{};
      std::copy(r.attachment_write().id().begin(), r.attachment_write().id().end(), id.begin());
      if (auto b = w.service->blobs()->find(id)) before = *b;
    }
    svc::Response out;
    out.mutable_status()->set_code(svc::OK);
    w.service->handle(account, r, out);
    const auto code = out.status().code();
    fuzz::require(svc::Code_IsValid(code), "a known status");
    if (r.has_attachment_write() && code != svc::OK && before) {
      auto after = w.service->blobs()->find(before->id);
      fuzz::require(after && after->received == before->received,
                    "a refused write leaves the upload unchanged");
    }
    if (r.has_attachment_read() && code == svc::OK) {
      fuzz::require(out.attachment_read().data().size() <= w.service->chunk_bytes(),
                    "a read returns at most a chunk");
    }
    if (r.has_attachment_create() && code == svc::OK) {
      fuzz::require(out.attachment_create().id().size() == store::kBlobIdSize, "a 16-byte id");
    }
  }
  // Keep the directory small across runs: expire everything now and then.
  if ((size & 0x3F) == 0) {
    w.now_ms += 40ull * 86400 * 1000;
    (void)w.service->sweep();
  }
  return 0;
}
