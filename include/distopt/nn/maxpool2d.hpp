// 2 x 2 max pooling with stride 2, keeping the argmax for the backward pass; the ReLU after it
// fused in.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "distopt/nn/conv2d.hpp"

namespace distopt::nn {

/// MaxPool2d(2, 2): y(c, i, y, x) = max over the window x(c, i, 2y + dy, 2x + dx), dy, dx in {0, 1};
/// odd trailing rows and columns are dropped, as in PyTorch. The position of the maximum (0..3,
/// the first one on ties, as PyTorch's CPU kernel) is kept so the backward pass routes each
/// gradient to it: dx(window[argmax]) = dy, 0 elsewhere. The argmax of output (c, i, r, q) is at
/// ((c * images + i) * out_h + r) * out_w + q whatever the layouts of x and y.
///
/// With `relu`, y = max(pool(x), 0), which is pool(max(x, 0)) (max and ReLU commute), and the
/// backward pass takes the ReLU's mask from y: the two layers in one pass each way.
struct MaxPool2d {
  [[nodiscard]] static std::ptrdiff_t out_size(std::ptrdiff_t in) { return in / 2; }

#if defined(__AVX2__)
  // Elements 0, 2, ..., 14 (even) or 1, 3, ..., 15 (odd) of p[0, 16), in order.
  static __m256 even(const float* p) { return deinterleave<0x88>(p); }
  static __m256 odd(const float* p) { return deinterleave<0xDD>(p); }
  template <int Pick>
  static __m256 deinterleave(const float* p) {
    const __m256 mixed = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), Pick);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(mixed), 0xD8));
  }
  // out[2j] = e[j], out[2j + 1] = o[j] for j < 8.
  static void interleave(__m256 e, __m256 o, float* out) {
    const __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
    _mm256_storeu_ps(out, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
  }
#endif

  /// y (laid out as `out`) and the argmax from x (laid out as `in`).
  template <class T>
  static void forward(const T* x, const PlaneLayout& in, T* y, const PlaneLayout& out, std::uint8_t* argmax,
                      bool relu) {
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i)
        for (std::ptrdiff_t r = 0; r < oh; ++r) {
          const T* top = x + in.at(c, i, 2 * r, 0);
          const T* bottom = top + in.width;
          T* pooled = y + out.at(c, i, r, 0);
          std::uint8_t* where = argmax + ((c * in.images + i) * oh + r) * ow;
          // The better of each pair, then the better pair; a strict > at every comparison
          // keeps the first position on ties.
          std::ptrdiff_t q = 0;
#if defined(__AVX2__)
          // Eight windows at a time: the even and odd columns of two registers per row. (A
          // compiler leaves this loop scalar and branchy, and random data mispredicts.)
          if constexpr (std::is_same_v<T, float>)
            for (; q + 8 <= ow; q += 8) {
              const __m256 a = even(top + 2 * q), b = odd(top + 2 * q);
              const __m256 c2 = even(bottom + 2 * q), d = odd(bottom + 2 * q);
              const __m256 upper_right = _mm256_cmp_ps(b, a, _CMP_GT_OQ), lower_right = _mm256_cmp_ps(d, c2, _CMP_GT_OQ);
              const __m256 upper = _mm256_blendv_ps(a, b, upper_right), lower = _mm256_blendv_ps(c2, d, lower_right);
              const __m256 lower_wins = _mm256_cmp_ps(lower, upper, _CMP_GT_OQ);
              __m256 best = _mm256_blendv_ps(upper, lower, lower_wins);
              if (relu) best = _mm256_and_ps(best, _mm256_cmp_ps(best, _mm256_setzero_ps(), _CMP_GT_OQ));
              _mm256_storeu_ps(pooled + q, best);
              // argmax = 2 [lower wins] + [the winning pair's right one wins], one byte per window.
              const __m256i index = _mm256_or_si256(
                  _mm256_and_si256(_mm256_castps_si256(lower_wins), _mm256_set1_epi32(2)),
                  _mm256_and_si256(_mm256_castps_si256(_mm256_blendv_ps(upper_right, lower_right, lower_wins)),
                                   _mm256_set1_epi32(1)));
              const __m256i bytes = _mm256_shuffle_epi8(
                  index, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                                          -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
              const std::int32_t low = _mm256_cvtsi256_si32(bytes), high = _mm256_extract_epi32(bytes, 4);
              std::copy_n(reinterpret_cast<const std::uint8_t*>(&low), 4, where + q);
              std::copy_n(reinterpret_cast<const std::uint8_t*>(&high), 4, where + q + 4);
            }
#endif
          for (; q < ow; ++q) {
            const T a = top[2 * q], b = top[2 * q + 1], c2 = bottom[2 * q], d = bottom[2 * q + 1];
            const int upper_right = b > a, lower_right = d > c2;
            const T upper = std::max(a, b), lower = std::max(c2, d);
            const int lower_wins = lower > upper;
            const T best = std::max(upper, lower);
            pooled[q] = relu ? std::max(T(0), best) : best;
            where[q] = static_cast<std::uint8_t>(lower_wins * 2 + (lower_wins ? lower_right : upper_right));
          }
        }
  }
  /// Channel-major output, no ReLU.
  template <class T>
  static void forward(const T* x, const PlaneLayout& in, T* y, std::uint8_t* argmax) {
    forward(x, in, y, PlaneLayout::cnhw(in.channels, in.images, out_size(in.height), out_size(in.width)), argmax,
            false);
  }

  /// dx (all of it, laid out as `in`) from dy (laid out as `out`) and the argmax; with `y` (the
  /// forward output after the ReLU, laid out as `out`), through the ReLU's mask y > 0.
  template <class T>
  static void backward(const T* dy, const PlaneLayout& out, const std::uint8_t* argmax, const T* y,
                       const PlaneLayout& in, T* dx) {
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i) {
        for (std::ptrdiff_t r = 0; r < oh; ++r) {
          const T* g = dy + out.at(c, i, r, 0);
          const T* kept = y != nullptr ? y + out.at(c, i, r, 0) : nullptr;
          const std::uint8_t* where = argmax + ((c * in.images + i) * oh + r) * ow;
          T* top = dx + in.at(c, i, 2 * r, 0);
          T* bottom = top + in.width;
          std::ptrdiff_t q = 0;
#if defined(__AVX2__)
          if constexpr (std::is_same_v<T, float>)
            for (; q + 8 <= ow; q += 8) {
              __m256 v = _mm256_loadu_ps(g + q);
              if (kept != nullptr)
                v = _mm256_and_ps(v, _mm256_cmp_ps(_mm256_loadu_ps(kept + q), _mm256_setzero_ps(), _CMP_GT_OQ));
              std::int64_t bytes;
              std::copy_n(where + q, 8, reinterpret_cast<std::uint8_t*>(&bytes));
              const __m256i index = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
              const auto at = [&](int k) {
                return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(index, _mm256_set1_epi32(k))));
              };
              interleave(at(0), at(1), top + 2 * q);
              interleave(at(2), at(3), bottom + 2 * q);
            }
#endif
          for (; q < ow; ++q) {
            const T v = kept == nullptr || kept[q] > T(0) ? g[q] : T(0);
            const std::uint8_t w = where[q];
            top[2 * q] = w == 0 ? v : T(0);
            top[2 * q + 1] = w == 1 ? v : T(0);
            bottom[2 * q] = w == 2 ? v : T(0);
            bottom[2 * q + 1] = w == 3 ? v : T(0);
          }
          if (in.width % 2 != 0) top[in.width - 1] = bottom[in.width - 1] = T(0);
        }
        if (in.height % 2 != 0) {
          T* last = dx + in.at(c, i, in.height - 1, 0);
          for (std::ptrdiff_t x = 0; x < in.width; ++x) last[x] = T(0);
        }
      }
  }
  /// Channel-major dy, no ReLU.
  template <class T>
  static void backward(const T* dy, const std::uint8_t* argmax, const PlaneLayout& in, T* dx) {
    backward(dy, PlaneLayout::cnhw(in.channels, in.images, out_size(in.height), out_size(in.width)), argmax,
             static_cast<const T*>(nullptr), in, dx);
  }
};

}  // namespace distopt::nn
