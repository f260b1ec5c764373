// What backup_file_fuzz.cpp and its seed generator (make_corpus.cpp) share: the fixed secret, the
// Argon2id parameters the target accepts, and the layout of its "sealed chunks" inputs.
#pragma once

#include <cstdint>
#include <string_view>

#include "crypto/pwhash.h"

namespace sotto::fuzz::backup {

// Every input is read with this passphrase; the seeds are encrypted with it.
inline constexpr std::string_view kPassphrase = "fuzz passphrase";
// The target refuses anything dearer (BackupReader::limit_kdf), so no input costs more than one
// cheap Argon2id run however its header is mutated; the seeds use exactly these.
inline constexpr crypto::Argon2Params kKdf{1, 64 * 1024};

// An input whose first byte is 'S' (the magic's first) is a backup file as it is. Any other is a
// list of chunk plaintexts that the target seals itself (under a fixed header and the key of
// kPassphrase), to reach the record layer behind the authentication:
//   byte 0: mode (byte0 % 4, below); then chunks, each a u16 BE length and that many bytes (a
//   length beyond the input takes what is left).
enum class SealMode : std::uint8_t {
  complete = 0,   // the last chunk is final
  no_final = 1,   // every chunk is tagged message
  trailing = 2,   // a zero byte after the final chunk
  cut_short = 3,  // the file's last byte removed
};

}  // namespace sotto::fuzz::backup
