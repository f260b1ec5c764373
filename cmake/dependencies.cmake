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
