// Time-ordered 16-byte ids (docs/wire-format.md, "Ids"): the time in milliseconds since the
// epoch, 6 bytes big-endian, then 10 bytes that make the id unique. The server gives envelopes
// such ids and clients give their sends such client message ids, so that the rows keyed by them
// grow at the end of their index. Pure; thread-safe (an Rng passed in must be, to be shared).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/bytes.h"
#include "crypto/rng.h"

namespace sotto::contract {

inline constexpr std::size_t kIdSize = 16;
inline constexpr std::size_t kIdTimeBytes = 6;
inline constexpr std::size_t kIdUniqueBytes = kIdSize - kIdTimeBytes;
using TimeOrderedId = std::array<std::uint8_t, kIdSize>;

// The id of `now_ms` with these unique bytes.
[[nodiscard]] TimeOrderedId time_ordered_id(std::uint64_t now_ms,
                                            std::span<const std::uint8_t, kIdUniqueBytes> unique);
// The id of `now_ms` with random unique bytes.
[[nodiscard]] TimeOrderedId time_ordered_id(std::uint64_t now_ms, crypto::Rng& rng);
// The time an id was made (its first 6 bytes); 0 for a value shorter than that.
[[nodiscard]] std::uint64_t id_time_ms(ByteView id);

}  // namespace sotto::contract
