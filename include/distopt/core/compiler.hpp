// Compiler workarounds shared by the headers.
#pragma once

// GCC before 12.3 writes some AVX-512 intrinsics (_mm512_extractf64x4_pd, the 512-to-256 casts, ...)
// over a register it declares `__m256d __Y = __Y;`, and reports -W(maybe-)uninitialized wherever
// they are inlined (GCC PR 105593), with any warning flags a consumer chooses: Eigen's AVX-512
// reductions inline them into our code under -march=native on such a CPU. Code that runs Eigen's
// packets sits between these two macros; nothing else is silenced, and clang still checks it all.
#if defined(__GNUC__) && !defined(__clang__) && (__GNUC__ * 100 + __GNUC_MINOR__) < 1203
#define DISTOPT_PR105593_OFF \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define DISTOPT_PR105593_ON _Pragma("GCC diagnostic pop")
#else
#define DISTOPT_PR105593_OFF
#define DISTOPT_PR105593_ON
#endif
