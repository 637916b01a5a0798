// How one kernel source becomes a kernel per instruction set, in the consumer's own translation
// unit and whatever its flags: the source (a `-inl.hpp` file) is included once per path, inside
// that path's namespace, with the compiler told to generate that path's instructions for every
// function defined there (GCC's `#pragma GCC target`, clang's `#pragma clang attribute`). Code
// from outside (std::min, the layers' geometry) inlines into it; nothing of it inlines outwards,
// so a CPU without AVX never executes an AVX instruction before the dispatch (nn/isa.hpp) has
// chosen.
//
// Why this and not Highway's dynamic dispatch or xsimd's: the kernels were already written
// against a small packet interface (Eigen's pset1, pmadd, predux, ...), which each path provides
// in a few lines of intrinsics (nn/kernels/packets.hpp), so the avx2 path gives the bits the
// earlier -march=native AVX2 build gave (checked: the same training runs, byte for byte); three
// targets cost three compilations of the kernels, where Highway compiles its whole attainable set
// (SSSE3 to AVX3_DL on x86); the consumer links nothing new (Highway's dispatch calls libhwy's
// target detection); and xsimd's dispatch wants each target in a translation unit built with that
// target's flags, which a header-only library cannot give. Highway itself was not measured here.
#pragma once

#include "distopt/core/compiler.hpp"
#include "distopt/nn/isa.hpp"

#if DISTOPT_KERNELS_X86
#if defined(__clang__)
#define DISTOPT_TARGET_AVX512_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,avx512f,avx512bw,avx512vl,avx512dq\"))), apply_to = function)")
#define DISTOPT_TARGET_AVX2_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define DISTOPT_TARGET_END _Pragma("clang attribute pop")
#else
#define DISTOPT_TARGET_AVX512_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,avx512f,avx512bw,avx512vl,avx512dq\")")
#define DISTOPT_TARGET_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define DISTOPT_TARGET_END _Pragma("GCC pop_options")
#endif
#endif

// Vector types named as template arguments lose their alignment attributes, harmlessly (nothing
// here keys on them); GCC would say so in a consumer's build. Eigen silences the same warning
// inside its own headers. And GCC before 12.3 reports its own AVX-512 intrinsics (core/compiler.hpp).
#if defined(__GNUC__) && !defined(__clang__)
#define DISTOPT_KERNELS_WARNINGS_OFF \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wignored-attributes\"") DISTOPT_PR105593_OFF
#define DISTOPT_KERNELS_WARNINGS_ON DISTOPT_PR105593_ON _Pragma("GCC diagnostic pop")
#else
#define DISTOPT_KERNELS_WARNINGS_OFF
#define DISTOPT_KERNELS_WARNINGS_ON
#endif
