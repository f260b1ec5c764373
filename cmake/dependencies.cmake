# Third-party dependencies, all from Debian 12 packages (scripts/bootstrap installs them).
# Their headers are SYSTEM includes so that their warnings never fail our build.
find_package(PkgConfig REQUIRED)
find_package(OpenSSL 3.0 REQUIRED COMPONENTS Crypto SSL)
find_package(Protobuf REQUIRED)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)

find_path(TL_EXPECTED_INCLUDE_DIR tl/expected.hpp REQUIRED)
add_library(sotto_tl_expected INTERFACE)
target_include_directories(sotto_tl_expected SYSTEM INTERFACE ${TL_EXPECTED_INCLUDE_DIR})

if(SOTTO_INTEROP)
  pkg_check_modules(SIGNAL_C REQUIRED IMPORTED_TARGET libsignal-protocol-c)
  pkg_check_modules(OLM REQUIRED IMPORTED_TARGET olm)
endif()

# jemalloc for the server and the load tool (bench/README.md, "Where the time goes"): glibc's malloc was a sixth of
# the server's CPU at saturation, most of it frames allocated on one thread and freed on another.
# Not with a sanitizer, which brings its own allocator; SOTTO_JEMALLOC=OFF builds without it.
if(CMAKE_CXX_FLAGS MATCHES "-fsanitize")
  set(sotto_jemalloc_default OFF)
else()
  set(sotto_jemalloc_default ON)
endif()
option(SOTTO_JEMALLOC "Link sotto-server and sotto-load with jemalloc" ${sotto_jemalloc_default})
add_library(sotto_allocator INTERFACE)
if(SOTTO_JEMALLOC)
  pkg_check_modules(JEMALLOC REQUIRED IMPORTED_TARGET jemalloc)
  target_link_libraries(sotto_allocator INTERFACE PkgConfig::JEMALLOC)
endif()
