# Warnings are errors, attached per target through this interface target (never global flags).
add_library(sotto_warnings INTERFACE)
target_compile_options(sotto_warnings INTERFACE
  -Wall -Wextra -Werror -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused
  -Woverloaded-virtual -Wdouble-promotion
  -Wformat=2 -Wimplicit-fallthrough)
