// Which attachments a history row carried (docs/attachments.md): kept beside the row in the
// client store's sealed named values ("attachments.msg.<message id>", a content.proto
// DataMessage holding only the pointers), so that history shows them and they can be saved
// later. Also the conversion of a pointer to the public sotto::Attachment. Thread-safe as the
// store is.
#pragma once

#include <string>
#include <vector>

#include "sotto/client.h"
#include "store/client/client_store.h"

namespace sotto::client {

// Records the serialized pointers of message `id` (replacing any).
[[nodiscard]] bool save_message_attachments(store::ClientStore& store, const std::string& id,
                                            const std::vector<std::string>& pointers);
// The attachments recorded for message `id` (none when there are none or they cannot be read).
[[nodiscard]] std::vector<Attachment> load_message_attachments(store::ClientStore& store,
                                                               const std::string& id);
// A serialized pointer as the app sees it (file name, type, size...; the pointer itself kept
// opaque in Attachment::pointer).
[[nodiscard]] Attachment public_attachment(const std::string& pointer);

}  // namespace sotto::client
