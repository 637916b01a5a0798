# Flags for the project's own tests, benchmarks and examples only. This target is not installed
# and not exported: a consumer of distopt::distopt never inherits warnings or -march.
# DISTOPT_MARCH picks the instruction set of the project's programs: `native` (the default) for
# the CPU that builds, `x86-64-v3` for AVX2 + FMA on an AVX-512 machine (to measure both ISAs on
# one CPU), empty for the compiler's default.
set(DISTOPT_MARCH "native" CACHE STRING "-march= for the project's own programs (empty: none)")
option(DISTOPT_WARNINGS_AS_ERRORS "Treat warnings in the project's own code as errors" OFF)

add_library(distopt_project_options INTERFACE)
# A program whose DISTOPT_CONSUMER_FLAGS property is set builds without -march, as a consumer with
# CMake's default flags would (test_nn, which so runs the portable kernels too, and bench_lenet).
set(_distopt_own_march "$<AND:$<BOOL:${DISTOPT_MARCH}>,$<NOT:$<BOOL:$<TARGET_PROPERTY:DISTOPT_CONSUMER_FLAGS>>>>")
target_compile_options(distopt_project_options INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion
  $<$<BOOL:${DISTOPT_WARNINGS_AS_ERRORS}>:-Werror>
  $<${_distopt_own_march}:-march=${DISTOPT_MARCH}>)

# The kernels are compiled once per instruction set (nn/isa.hpp). Our programs run on the machine
# that builds them, so where it has no AVX-512 they leave that path out and build faster; the
# package test still compiles all three paths in a consumer, warnings as errors.
if(EXISTS /proc/cpuinfo)
  file(STRINGS /proc/cpuinfo _distopt_avx512 REGEX "^flags.* avx512f" LIMIT_COUNT 1)
  if(NOT _distopt_avx512 AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
    target_compile_definitions(distopt_project_options INTERFACE DISTOPT_NO_AVX512_KERNELS)
  endif()
endif()

# GCC before 12.3 warns inside its own AVX-512 header: _mm512_undefined_ps() is written
# `__m512 __Y = __Y;`, which -W(maybe-)uninitialized reports wherever Eigen's AVX-512 packets are
# inlined (GCC PR 105593). Only those compilers lose the two flags; the clang preset keeps
# checking our code for uninitialized reads.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 12.3)
  target_compile_options(distopt_project_options INTERFACE -Wno-maybe-uninitialized -Wno-uninitialized)
endif()

# Where the committed golden data lives, for tests that read it.
set(DISTOPT_TEST_DATA_DIR ${PROJECT_SOURCE_DIR}/tests/data)
