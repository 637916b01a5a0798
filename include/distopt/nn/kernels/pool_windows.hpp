// The vector paths of MaxPool2d's windows (nn/kernels/pool-inl.hpp) for float rows: AVX-512 with
// masked loads and stores (any number of windows, no tail), AVX2 eight windows at a time and the
// tail under maskload/maskstore (measured faster than copies through a buffer, on an AMD EPYC with AVX-512
// built for x86-64-v3), nothing on the portable path (the caller's scalar loop takes every window).
//
// Why intrinsics and not Eigen's packets: a window is a pair of neighbours, and taking the even
// and odd elements of a row apart (and putting them back together in the backward pass) is a
// cross-lane permutation Eigen's packet layer does not offer. A compiler leaves the scalar loop
// scalar and branchy, and random data mispredicts every other window.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "distopt/nn/kernels/targets.hpp"

#if DISTOPT_KERNELS_X86
#include <immintrin.h>

#if DISTOPT_KERNELS_AVX512
DISTOPT_TARGET_AVX512_BEGIN
namespace distopt::nn::kernels::avx512 {

// Zero-masked conversions throughout: the unmasked ones start from an undefined register, which
// GCC before 12.3 reports as maybe-uninitialized wherever they are inlined (PR 105593).

// The first n of 16 lanes (n clamped to [0, 16]).
inline __mmask16 first_lanes(std::ptrdiff_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u);
}

// n < 16 bytes to and from the low lanes of a vector, with byte masks where the CPU has them.
inline void store_bytes(std::uint8_t* out, __m128i bytes, std::ptrdiff_t n) {
  _mm_mask_storeu_epi8(out, first_lanes(n), bytes);
}
inline __m128i load_bytes(const std::uint8_t* in, std::ptrdiff_t n) {
  return _mm_maskz_loadu_epi8(first_lanes(n), in);
}

// Windows [0, ow) of a row pair, 16 at a time; returns ow (every window done).
inline std::ptrdiff_t pool_windows(const float* top, const float* bottom, std::ptrdiff_t ow, bool relu,
                                   float* pooled, std::uint8_t* where) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 zero = _mm512_setzero_ps();
  for (std::ptrdiff_t q = 0; q < ow; q += 16) {
    const std::ptrdiff_t n = std::min<std::ptrdiff_t>(16, ow - q);
    const __mmask16 low = first_lanes(2 * n), high = first_lanes(2 * n - 16), valid = first_lanes(n);
    const __m512 t0 = _mm512_maskz_loadu_ps(low, top + 2 * q), t1 = _mm512_maskz_loadu_ps(high, top + 2 * q + 16);
    const __m512 b0 = _mm512_maskz_loadu_ps(low, bottom + 2 * q), b1 = _mm512_maskz_loadu_ps(high, bottom + 2 * q + 16);
    const __m512 a = _mm512_permutex2var_ps(t0, even, t1), b = _mm512_permutex2var_ps(t0, odd, t1);
    const __m512 c = _mm512_permutex2var_ps(b0, even, b1), d = _mm512_permutex2var_ps(b0, odd, b1);
    const __mmask16 upper_right = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ), lower_right = _mm512_cmp_ps_mask(d, c, _CMP_GT_OQ);
    const __m512 upper = _mm512_mask_blend_ps(upper_right, a, b), lower = _mm512_mask_blend_ps(lower_right, c, d);
    const __mmask16 lower_wins = _mm512_cmp_ps_mask(lower, upper, _CMP_GT_OQ);
    __m512 best = _mm512_mask_blend_ps(lower_wins, upper, lower);
    if (relu) best = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(best, zero, _CMP_GT_OQ), best);
    _mm512_mask_storeu_ps(pooled + q, valid, best);
    const auto right = static_cast<__mmask16>((lower_wins & lower_right) | (~lower_wins & upper_right));
    const __m512i index = _mm512_or_si512(_mm512_maskz_mov_epi32(lower_wins, _mm512_set1_epi32(2)),
                                          _mm512_maskz_mov_epi32(right, _mm512_set1_epi32(1)));
    store_bytes(where + q, _mm512_maskz_cvtepi32_epi8(0xFFFF, index), n);
  }
  return ow;
}

// The backward pass of pool_windows over windows [0, ow); returns ow.
inline std::ptrdiff_t unpool_windows(const float* g, const float* kept, const std::uint8_t* where, std::ptrdiff_t ow,
                                     float* top, float* bottom) {
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
  const __m512 zero = _mm512_setzero_ps();
  for (std::ptrdiff_t q = 0; q < ow; q += 16) {
    const std::ptrdiff_t n = std::min<std::ptrdiff_t>(16, ow - q);
    const __mmask16 valid = first_lanes(n), low = first_lanes(2 * n), high = first_lanes(2 * n - 16);
    __m512 v = _mm512_maskz_loadu_ps(valid, g + q);
    if (kept != nullptr) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(valid, kept + q), zero, _CMP_GT_OQ), v);
    const __m512i index = _mm512_maskz_cvtepu8_epi32(0xFFFF, load_bytes(where + q, n));
    const auto at = [&](int k) { return _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(index, _mm512_set1_epi32(k)), v); };
    // Windows' left and right values back into the even and odd elements of each row.
    const auto put = [&](__m512 left, __m512 right, float* row) {
      _mm512_mask_storeu_ps(row + 2 * q, low, _mm512_permutex2var_ps(left, first, right));
      _mm512_mask_storeu_ps(row + 2 * q + 16, high, _mm512_permutex2var_ps(left, second, right));
    };
    put(at(0), at(1), top);
    put(at(2), at(3), bottom);
  }
  return ow;
}

}  // namespace distopt::nn::kernels::avx512
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_AVX2
DISTOPT_TARGET_AVX2_BEGIN
namespace distopt::nn::kernels::avx2 {

// The first n of 8 lanes (n clamped to [0, 8]), as a mask for maskload/maskstore.
inline __m256i first_lanes(std::ptrdiff_t n) {
  alignas(32) static constexpr std::int32_t window[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(window + 8 - std::clamp<std::ptrdiff_t>(n, 0, 8)));
}

// Elements 0, 2, ..., 14 (Pick 0x88) or 1, 3, ..., 15 (Pick 0xDD) of the 16 in (lo, hi), in order.
template <int Pick>
inline __m256 deinterleave(__m256 lo, __m256 hi) {
  const __m256 mixed = _mm256_shuffle_ps(lo, hi, Pick);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(mixed), 0xD8));
}
// (lo, hi) with lo[2j] = e[j], lo[2j + 1] = o[j] for j < 4, and hi the same for j >= 4.
inline void interleave(__m256 e, __m256 o, __m256& lo, __m256& hi) {
  const __m256 a = _mm256_unpacklo_ps(e, o), b = _mm256_unpackhi_ps(e, o);
  lo = _mm256_permute2f128_ps(a, b, 0x20);
  hi = _mm256_permute2f128_ps(a, b, 0x31);
}

// Eight windows from the 16 elements of each row, (t0, t1) and (b0, b1): their maxima (after the
// ReLU) and argmax bytes in the low 8 bytes of `bytes`.
inline __m256 pool8(__m256 t0, __m256 t1, __m256 b0, __m256 b1, bool relu, std::int64_t& bytes) {
  const __m256 a = deinterleave<0x88>(t0, t1), b = deinterleave<0xDD>(t0, t1);
  const __m256 c = deinterleave<0x88>(b0, b1), d = deinterleave<0xDD>(b0, b1);
  const __m256 upper_right = _mm256_cmp_ps(b, a, _CMP_GT_OQ), lower_right = _mm256_cmp_ps(d, c, _CMP_GT_OQ);
  const __m256 upper = _mm256_blendv_ps(a, b, upper_right), lower = _mm256_blendv_ps(c, d, lower_right);
  const __m256 lower_wins = _mm256_cmp_ps(lower, upper, _CMP_GT_OQ);
  __m256 best = _mm256_blendv_ps(upper, lower, lower_wins);
  if (relu) best = _mm256_and_ps(best, _mm256_cmp_ps(best, _mm256_setzero_ps(), _CMP_GT_OQ));
  const __m256i index = _mm256_or_si256(
      _mm256_and_si256(_mm256_castps_si256(lower_wins), _mm256_set1_epi32(2)),
      _mm256_and_si256(_mm256_castps_si256(_mm256_blendv_ps(upper_right, lower_right, lower_wins)), _mm256_set1_epi32(1)));
  const __m256i packed = _mm256_shuffle_epi8(index, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                                     -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                                                     -1, -1, -1, -1));
  const auto low = static_cast<std::uint32_t>(_mm256_cvtsi256_si32(packed));
  const auto high = static_cast<std::uint32_t>(_mm256_extract_epi32(packed, 4));
  bytes = static_cast<std::int64_t>(low | (std::uint64_t(high) << 32));
  return best;
}

// The gradient v of eight windows routed by their argmax bytes: rows (t0, t1) and (b0, b1).
inline void unpool8(__m256 v, std::int64_t bytes, __m256& t0, __m256& t1, __m256& b0, __m256& b1) {
  const __m256i index = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
  const auto at = [&](int k) {
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(index, _mm256_set1_epi32(k))));
  };
  interleave(at(0), at(1), t0, t1);
  interleave(at(2), at(3), b0, b1);
}

// Windows [0, ow): eight at a time, the last few under masks (a masked-off lane never touches
// memory); returns ow.
inline std::ptrdiff_t pool_windows(const float* top, const float* bottom, std::ptrdiff_t ow, bool relu,
                                   float* pooled, std::uint8_t* where) {
  std::int64_t bytes = 0;
  std::ptrdiff_t q = 0;
  for (; q + 8 <= ow; q += 8) {
    const float *t = top + 2 * q, *b = bottom + 2 * q;
    _mm256_storeu_ps(pooled + q, pool8(_mm256_loadu_ps(t), _mm256_loadu_ps(t + 8), _mm256_loadu_ps(b),
                                       _mm256_loadu_ps(b + 8), relu, bytes));
    std::copy_n(reinterpret_cast<const std::uint8_t*>(&bytes), 8, where + q);
  }
  if (q == ow) return ow;
  const std::ptrdiff_t n = ow - q;
  const __m256i low = first_lanes(2 * n), high = first_lanes(2 * n - 8);
  const float *t = top + 2 * q, *b = bottom + 2 * q;
  const __m256 best = pool8(_mm256_maskload_ps(t, low), _mm256_maskload_ps(t + 8, high), _mm256_maskload_ps(b, low),
                            _mm256_maskload_ps(b + 8, high), relu, bytes);
  _mm256_maskstore_ps(pooled + q, first_lanes(n), best);
  std::copy_n(reinterpret_cast<const std::uint8_t*>(&bytes), n, where + q);
  return ow;
}

inline std::ptrdiff_t unpool_windows(const float* g, const float* kept, const std::uint8_t* where, std::ptrdiff_t ow,
                                     float* top, float* bottom) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 t0, t1, b0, b1;
  std::ptrdiff_t q = 0;
  for (; q + 8 <= ow; q += 8) {
    __m256 v = _mm256_loadu_ps(g + q);
    if (kept != nullptr) v = _mm256_and_ps(v, _mm256_cmp_ps(_mm256_loadu_ps(kept + q), zero, _CMP_GT_OQ));
    std::int64_t bytes;
    std::copy_n(where + q, 8, reinterpret_cast<std::uint8_t*>(&bytes));
    unpool8(v, bytes, t0, t1, b0, b1);
    _mm256_storeu_ps(top + 2 * q, t0);
    _mm256_storeu_ps(top + 2 * q + 8, t1);
    _mm256_storeu_ps(bottom + 2 * q, b0);
    _mm256_storeu_ps(bottom + 2 * q + 8, b1);
  }
  if (q == ow) return ow;
  const std::ptrdiff_t n = ow - q;
  const __m256i valid = first_lanes(n);
  __m256 v = _mm256_maskload_ps(g + q, valid);
  if (kept != nullptr) v = _mm256_and_ps(v, _mm256_cmp_ps(_mm256_maskload_ps(kept + q, valid), zero, _CMP_GT_OQ));
  std::int64_t bytes = 0;
  std::copy_n(where + q, n, reinterpret_cast<std::uint8_t*>(&bytes));
  unpool8(v, bytes, t0, t1, b0, b1);
  const __m256i low = first_lanes(2 * n), high = first_lanes(2 * n - 8);
  _mm256_maskstore_ps(top + 2 * q, low, t0);
  _mm256_maskstore_ps(top + 2 * q + 8, high, t1);
  _mm256_maskstore_ps(bottom + 2 * q, low, b0);
  _mm256_maskstore_ps(bottom + 2 * q + 8, high, b1);
  return ow;
}

}  // namespace distopt::nn::kernels::avx2
DISTOPT_TARGET_END
#endif
#endif  // DISTOPT_KERNELS_X86

#if DISTOPT_KERNELS_PORTABLE
namespace distopt::nn::kernels::portable {

// No vector path: the caller's scalar loop takes every window.
inline std::ptrdiff_t pool_windows(const float*, const float*, std::ptrdiff_t, bool, float*, std::uint8_t*) { return 0; }
inline std::ptrdiff_t unpool_windows(const float*, const float*, const std::uint8_t*, std::ptrdiff_t, float*, float*) {
  return 0;
}

}  // namespace distopt::nn::kernels::portable
#endif
