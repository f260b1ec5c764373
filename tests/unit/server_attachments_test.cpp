// The attachment service (src/server/attachments.h) and its blob store over the real SQLite store,
// in process: the upload protocol (append at the received offset, status, read only when
// complete), who may do what, the size limit, the quota, the rate of uploads, malformed requests,
// and expiry of incomplete and complete blobs (by the server's clock). The process-level tests
// (memory, resume after a kill, an altered blob) are tests/e2e/test_attachments.py.

#include <algorithm>
#include <filesystem>

#include "store/server/blob_store.h"
#include "util/server_harness.h"

namespace sotto::server {
namespace {

namespace svc = sotto::wire::service;
using sotto::testing::Client;

class AttachmentsTest : public sotto::testing::ServerHarness {
 protected:
  server::ServerConfig config() const override {
    server::ServerConfig c;
    c.data_dir = dir_;
    c.min_free_disk_bytes = 0;
    c.max_attachment_bytes = 3000;
    c.attachment_quota_bytes = 5000;
    c.attachment_uploads_per_hour = 5;
    return c;
  }

  svc::Response create(Client& c, std::uint64_t size) {
    svc::Request r;
    r.mutable_attachment_create()->set_size(size);
    return call(c, r);
  }
  svc::Response write(Client& c, const std::string& id, std::uint64_t offset,
                      const std::string& data) {
    svc::Request r;
    r.mutable_attachment_write()->set_id(id);
    r.mutable_attachment_write()->set_offset(offset);
    r.mutable_attachment_write()->set_data(data);
    return call(c, r);
  }
  svc::Response status(Client& c, const std::string& id) {
    svc::Request r;
    r.mutable_attachment_status()->set_id(id);
    return call(c, r);
  }
  svc::Response read(Client& c, const std::string& id, std::uint64_t offset, std::uint32_t n) {
    svc::Request r;
    r.mutable_attachment_read()->set_id(id);
    r.mutable_attachment_read()->set_offset(offset);
    r.mutable_attachment_read()->set_length(n);
    return call(c, r);
  }
  std::size_t blob_files() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_ / "blobs")) ++n;
    return n;
  }
};

TEST_F(AttachmentsTest, UploadAppendsInOrderAndOnlyACompleteBlobCanBeRead) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  auto created = create(alice, 1000);
  ASSERT_EQ(created.status().code(), svc::OK) << created.status().message();
  const std::string id = created.attachment_create().id();
  ASSERT_EQ(id.size(), 16u);
  EXPECT_GT(created.attachment_create().max_chunk_bytes(), 0u);
  EXPECT_EQ(created.attachment_create().expires_at(), kNowMs / 1000 + 24 * 3600);

  const std::string first(600, 'a'), second(400, 'b');
  auto w = write(alice, id, 0, first);
  ASSERT_EQ(w.status().code(), svc::OK);
  EXPECT_EQ(w.attachment_write().received(), 600u);
  EXPECT_FALSE(w.attachment_write().complete());
  // Not yet complete: nobody can read it.
  EXPECT_EQ(read(bob, id, 0, 100).status().code(), svc::NOT_FOUND);
  // A write at the wrong offset is refused with where to go on from, and writes nothing.
  w = write(alice, id, 500, second);
  EXPECT_EQ(w.status().code(), svc::CONFLICT);
  EXPECT_EQ(w.attachment_write().received(), 600u);
  // Past the announced size.
  EXPECT_EQ(write(alice, id, 600, std::string(401, 'c')).status().code(), svc::BAD_REQUEST);
  // Another account cannot write, nor learn how far the upload got.
  EXPECT_EQ(write(bob, id, 600, second).status().code(), svc::NOT_FOUND);
  EXPECT_EQ(status(bob, id).status().code(), svc::NOT_FOUND);
  auto st = status(alice, id);
  ASSERT_EQ(st.status().code(), svc::OK);
  EXPECT_EQ(st.attachment_status().received(), 600u);
  EXPECT_EQ(st.attachment_status().size(), 1000u);

  w = write(alice, id, 600, second);
  ASSERT_EQ(w.status().code(), svc::OK);
  EXPECT_TRUE(w.attachment_write().complete());
  EXPECT_EQ(write(alice, id, 1000, "x").status().code(), svc::CONFLICT);

  auto r = read(bob, id, 500, 200);
  ASSERT_EQ(r.status().code(), svc::OK);
  EXPECT_EQ(r.attachment_read().data(), std::string(100, 'a') + std::string(100, 'b'));
  EXPECT_EQ(r.attachment_read().size(), 1000u);
  r = read(bob, id, 900, 1000);  // fewer at the end
  EXPECT_EQ(r.attachment_read().data(), std::string(100, 'b'));
  EXPECT_EQ(read(bob, id, 1001, 10).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(read(bob, std::string(16, 'z'), 0, 10).status().code(), svc::NOT_FOUND);
}

// A blob whose bytes are all in but that was never marked complete (the server stopped while
// the commit thread was making it durable) is completed by the uploader's status request, so
// that the uploader does not take it for done while readers are refused.
TEST_F(AttachmentsTest, StatusCompletesABlobWhoseBytesAreAllIn) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  const std::string id = create(alice, 1000).attachment_create().id();
  ASSERT_EQ(id.size(), 16u);
  auto blobs = store::BlobStore::open(dir_);
  ASSERT_TRUE(blobs.has_value());
  store::BlobId bid{};
  std::copy(id.begin(), id.end(), bid.begin());
  const std::string data(1000, 'q');
  auto appended = (*blobs)->append(
      bid, 0, ByteView(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()),
      kNowMs / 1000 + 86400, /*commit_now=*/false);
  ASSERT_TRUE(appended.has_value());
  EXPECT_EQ(appended->received, 1000u);
  EXPECT_FALSE(appended->complete);
  EXPECT_EQ(read(bob, id, 0, 10).status().code(), svc::NOT_FOUND);

  auto st = status(alice, id);
  ASSERT_EQ(st.status().code(), svc::OK);
  EXPECT_TRUE(st.attachment_status().complete());
  EXPECT_EQ(st.attachment_status().received(), 1000u);
  auto r = read(bob, id, 990, 100);
  ASSERT_EQ(r.status().code(), svc::OK);
  EXPECT_EQ(r.attachment_read().data(), std::string(10, 'q'));
  // A commit of a complete blob changes nothing; one with bytes missing is refused.
  EXPECT_TRUE((*blobs)->commit(bid, 1).has_value());
  EXPECT_EQ((*blobs)->find(bid)->expires_at, st.attachment_status().expires_at());
  const std::string other = create(alice, 500).attachment_create().id();
  store::BlobId oid{};
  std::copy(other.begin(), other.end(), oid.begin());
  EXPECT_EQ((*blobs)->commit(oid, 1).error(), store::Error::conflict);
}

TEST_F(AttachmentsTest, MalformedRequestsAreRefusedAndChangeNothing) {
  Client alice("alice", 1, 1);
  join(alice);
  EXPECT_EQ(create(alice, 0).status().code(), svc::BAD_REQUEST);
  const std::string id = create(alice, 100).attachment_create().id();
  EXPECT_EQ(write(alice, "short", 0, "x").status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(write(alice, id, 0, "").status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(status(alice, std::string(17, 'x')).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(read(alice, std::string(15, 'x'), 0, 1).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(read(alice, id, 0, 0).status().code(), svc::BAD_REQUEST);
  EXPECT_EQ(status(alice, id).attachment_status().received(), 0u);
}

TEST_F(AttachmentsTest, UnauthenticatedConnectionsCannotUseTheBlobStore) {
  Client stranger("stranger", 3, 3);
  server_->on_open(stranger.conn, {});
  EXPECT_EQ(create(stranger, 10).status().code(), svc::UNAUTHENTICATED);
  EXPECT_EQ(read(stranger, std::string(16, 'a'), 0, 10).status().code(), svc::UNAUTHENTICATED);
}

TEST_F(AttachmentsTest, SizeLimitQuotaAndUploadRate) {
  Client alice("alice", 1, 1), bob("bob", 2, 2);
  join(alice);
  join(bob);
  EXPECT_EQ(create(alice, 3001).status().code(), svc::TOO_LARGE);
  EXPECT_EQ(create(alice, 3000).status().code(), svc::OK);
  auto over = create(alice, 2001);  // 3000 + 2001 > 5000
  EXPECT_EQ(over.status().code(), svc::FORBIDDEN);
  EXPECT_NE(over.status().message().find("quota"), std::string::npos);
  EXPECT_EQ(create(alice, 2000).status().code(), svc::OK);
  // The quota is per account.
  EXPECT_EQ(create(bob, 3000).status().code(), svc::OK);
  // Five uploads an hour (two refused ones above counted too: one was too large before the
  // bucket, the quota refusal after it).
  EXPECT_EQ(create(alice, 1).status().code(), svc::FORBIDDEN);  // quota, 4th token
  EXPECT_EQ(create(alice, 1).status().code(), svc::FORBIDDEN);  // 5th token
  auto limited = create(alice, 1);
  EXPECT_EQ(limited.status().code(), svc::RATE_LIMITED);
  EXPECT_GT(limited.status().retry_after_ms(), 0u);
}

TEST_F(AttachmentsTest, IncompleteUploadsExpireSoonerThanCompleteBlobs) {
  Client alice("alice", 1, 1);
  join(alice);
  const std::string unfinished = create(alice, 100).attachment_create().id();
  ASSERT_EQ(write(alice, unfinished, 0, std::string(50, 'u')).status().code(), svc::OK);
  const std::string done = create(alice, 100).attachment_create().id();
  ASSERT_TRUE(write(alice, done, 0, std::string(100, 'd')).attachment_write().complete());
  EXPECT_EQ(blob_files(), 2u);

  server_now_ms_ = kNowMs + 25ull * 3600 * 1000;  // past the upload's 24 hours
  server_->maintenance();
  EXPECT_EQ(status(alice, unfinished).status().code(), svc::NOT_FOUND);
  EXPECT_EQ(read(alice, done, 0, 10).status().code(), svc::OK);
  EXPECT_EQ(blob_files(), 1u);
  // The quota the unfinished upload held is free again.
  EXPECT_EQ(create(alice, 2900).status().code(), svc::OK);

  server_now_ms_ = kNowMs + 31ull * 86400 * 1000;  // past the blob's 30 days
  server_->maintenance();
  EXPECT_EQ(read(alice, done, 0, 10).status().code(), svc::NOT_FOUND);
  EXPECT_EQ(blob_files(), 0u);
}

}  // namespace
}  // namespace sotto::server
