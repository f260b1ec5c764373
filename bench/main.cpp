// Entry point of sotto_bench: the cases register themselves from sotto_bench.cpp,
// libsignal_c_bench.cpp and olm_bench.cpp.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
