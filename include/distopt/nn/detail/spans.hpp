// Copies and adds of short contiguous runs, the inner loop of im2col and col2im.
//
// A convolution's rows are short (10 floats in LeNet's conv2), too short for a compiler's
// vectorised loop to pay for its own setup. With AVX-512 a run of up to 16 floats is one masked
// load and one masked store (masked lanes neither read nor write memory, so nothing past the run
// is touched); elsewhere a plain loop.
#pragma once

#include <cstddef>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace distopt::nn::detail {

/// out[0, n) = src[0, n).
template <class T>
inline void copy_run(T* out, const T* src, std::ptrdiff_t n) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    for (; n > 0; n -= 16, out += 16, src += 16) {
      const __mmask16 mask = n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
      _mm512_mask_storeu_ps(out, mask, _mm512_maskz_loadu_ps(mask, src));
    }
    return;
  }
#endif
  for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = src[i];
}

/// out[0, n) += src[0, n).
template <class T>
inline void add_run(T* out, const T* src, std::ptrdiff_t n) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    for (; n > 0; n -= 16, out += 16, src += 16) {
      const __mmask16 mask = n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
      _mm512_mask_storeu_ps(out, mask,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), _mm512_maskz_loadu_ps(mask, src)));
    }
    return;
  }
#endif
  for (std::ptrdiff_t i = 0; i < n; ++i) out[i] += src[i];
}

/// For k runs src_j (j = 0..k-1, each `run` long, src_j = first + j * stride) added into out at
/// offset j: out[j + t] += src_j[t]. With AVX-512 and k + run - 1 <= 16 the sum is formed in one
/// register and stored once: storing after each run and reloading the overlapping bytes would
/// defeat store-to-load forwarding at every step.
template <class T>
inline void add_shifted_runs(T* out, const T* first, std::ptrdiff_t stride, std::ptrdiff_t k, std::ptrdiff_t run) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    if (k + run - 1 <= 16) {
      const auto span = static_cast<__mmask16>((1u << (k + run - 1)) - 1);
      __m512 acc = _mm512_maskz_loadu_ps(span, out);
      for (std::ptrdiff_t j = 0; j < k; ++j) {
        // Lanes [j, j + run) of a load starting j elements before src_j: masked-out lanes are
        // neither read nor faulted on.
        const auto lanes = static_cast<__mmask16>(((1u << run) - 1) << j);
        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(lanes, first + j * stride - j));
      }
      _mm512_mask_storeu_ps(out, span, acc);
      return;
    }
  }
#endif
  for (std::ptrdiff_t j = 0; j < k; ++j) add_run(out + j, first + j * stride, run);
}

}  // namespace distopt::nn::detail
