# Flags for the project's own tests, benchmarks and examples only. This target is not installed
# and not exported: a consumer of distopt::distopt never inherits warnings or -march.
# DISTOPT_MARCH picks the instruction set of the project's programs: `native` (the default) for
# the CPU that builds, `x86-64-v3` for AVX2 + FMA on an AVX-512 machine (to measure both ISAs on
# one CPU), empty for the compiler's default.
set(DISTOPT_MARCH "native" CACHE STRING "-march= for the project's own programs (empty: none)")
option(DISTOPT_WARNINGS_AS_ERRORS "Treat warnings in the project's own code as errors" OFF)

add_library(distopt_project_options INTERFACE)
target_compile_options(distopt_project_options INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion
  $<$<BOOL:${DISTOPT_WARNINGS_AS_ERRORS}>:-Werror>
  $<$<BOOL:${DISTOPT_MARCH}>:-march=${DISTOPT_MARCH}>)

# GCC before 12.3 warns inside its own AVX-512 header: _mm512_undefined_ps() is written
# `__m512 __Y = __Y;`, which -W(maybe-)uninitialized reports wherever Eigen's AVX-512 packets are
# inlined (GCC PR 105593). Only those compilers lose the two flags; the clang preset keeps
# checking our code for uninitialized reads.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 12.3)
  target_compile_options(distopt_project_options INTERFACE -Wno-maybe-uninitialized -Wno-uninitialized)
endif()

# Where the committed golden data lives, for tests that read it.
set(DISTOPT_TEST_DATA_DIR ${PROJECT_SOURCE_DIR}/tests/data)
