// Runs a fuzz target's LLVMFuzzerTestOneInput over files without libFuzzer, so that the normal
// (GCC) build replays the committed corpora as CTest tests. Arguments are files or directories
// (each directory's regular files, in name order; names starting with '.' are skipped).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
// Optional, as in libFuzzer: targets with fixed state to build define it.
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace {

namespace fs = std::filesystem;

bool collect(const fs::path& arg, std::vector<fs::path>& out) {
  std::error_code ec;
  if (fs::is_directory(arg, ec)) {
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(arg, ec)) {
      if (entry.is_regular_file() && entry.path().filename().string().front() != '.') {
        found.push_back(entry.path());
      }
    }
    if (ec) return false;
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
    return true;
  }
  if (fs::is_regular_file(arg, ec)) {
    out.push_back(arg);
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <file or directory>...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize != nullptr) (void)LLVMFuzzerInitialize(&argc, &argv);
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) {
    if (!collect(argv[i], files)) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[i]);
      return 2;
    }
  }
  std::size_t ran = 0;
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot open %s\n", argv[0], path.c_str());
      return 2;
    }
    const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in),
                                          std::istreambuf_iterator<char>()};
    // libFuzzer never passes a null pointer, even for an empty input.
    static const std::uint8_t kEmpty = 0;
    (void)LLVMFuzzerTestOneInput(bytes.empty() ? &kEmpty : bytes.data(), bytes.size());
    ++ran;
  }
  std::printf("%s: ran %zu inputs\n", argv[0], ran);
  // An empty corpus replays nothing, which would let a broken setup pass unnoticed.
  return ran == 0 ? 1 : 0;
}
