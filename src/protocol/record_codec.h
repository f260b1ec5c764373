// Pieces of the storage-record codecs shared by SessionRecord (session_state.cpp) and
// SenderKeyRecord (sender_keys.cpp): the messages both records embed (ChainKey, and SkippedKey,
// which has the same fields as SenderMessageKey) and the strictness rules every reader follows.
// Internal to src/protocol; see proto_codec.h for the wire-level reader and writers.
#pragma once

#include <cstdint>
#include <cstring>

#include "crypto/secret.h"
#include "protocol/keys.h"
#include "protocol/proto_codec.h"
#include "protocol/ratchet_kdf.h"
#include "protocol/session_state.h"

namespace sotto::protocol::detail {

// proto/storage.proto: ChainKey, and SkippedKey / SenderMessageKey (same numbers and types).
namespace field {
inline constexpr std::uint32_t kChainIndex = 1, kChainKey = 2;
inline constexpr std::uint32_t kSkippedCounter = 1, kSkippedSeed = 2, kSkippedCreatedAt = 3;
}  // namespace field

template <typename W>
void write_chain_key(W& w, const ChainKey& ck) {
  w.varint(field::kChainIndex, ck.index);
  w.bytes(field::kChainKey, ck.key.view());
}

template <typename W>
void write_skipped(W& w, const SkippedKey& k) {
  w.varint(field::kSkippedCounter, k.counter);
  w.bytes(field::kSkippedSeed, k.seed.view());
  w.varint(field::kSkippedCreatedAt, k.created_at);
}

// Readers: each returns false on any malformation (unknown field, wrong type or size, missing
// required field, a duplicate of a singular field).

// Copies straight into the record's Secret: no temporary secret to wipe.
inline bool read32(ByteView v, crypto::Secret<32>& out) {
  if (v.size() != 32) return false;
  std::memcpy(out.data(), v.data(), 32);
  return true;
}

inline bool read_public(ByteView v, PublicKey& out) {
  auto k = PublicKey::from_raw(v);
  if (!k) return false;
  out = *k;
  return true;
}

// Marks a field as seen; false if it was seen before (singular fields appear once).
inline bool once(std::uint32_t& seen, std::uint32_t field) {
  if (field >= 32) return false;  // no known field is that high
  const std::uint32_t bit = 1u << field;
  if (seen & bit) return false;
  seen |= bit;
  return true;
}

inline bool read_chain_key(ByteView in, ChainKey& out) {
  ProtoReader r(in);
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    ByteView v;
    if (!once(seen, f)) return false;
    switch (f) {
      case field::kChainIndex:
        if (!r.u32(wt, out.index)) return false;
        break;
      case field::kChainKey:
        if (!r.bytes(wt, v) || !read32(v, out.key)) return false;
        break;
      default:
        return false;
    }
  }
  return r.ok() && seen == ((1u << field::kChainIndex) | (1u << field::kChainKey));
}

// Counter and seed are required, created_at is optional (0 when absent).
inline bool read_skipped(ByteView in, SkippedKey& out) {
  ProtoReader r(in);
  std::uint32_t f = 0, wt = 0, seen = 0;
  while (r.next(f, wt)) {
    ByteView v;
    if (!once(seen, f)) return false;
    switch (f) {
      case field::kSkippedCounter:
        if (!r.u32(wt, out.counter)) return false;
        break;
      case field::kSkippedSeed:
        if (!r.bytes(wt, v) || !read32(v, out.seed)) return false;
        break;
      case field::kSkippedCreatedAt:
        if (!r.varint(wt, out.created_at)) return false;
        break;
      default:
        return false;
    }
  }
  const std::uint32_t required = (1u << field::kSkippedCounter) | (1u << field::kSkippedSeed);
  return r.ok() && (seen & required) == required;
}

}  // namespace sotto::protocol::detail
