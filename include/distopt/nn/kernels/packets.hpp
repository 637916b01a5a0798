// The packet interface the kernels are written against, once per path (nn/kernels/targets.hpp):
//   Packet<T>, lanes<T>             the register of T and its lanes
//   pset1(x), pload(p), ploadu(p)   broadcast, aligned and unaligned loads (T from the argument)
//   pstore(p, v), pstoreu(p, v)     stores
//   padd, pmul, pand, pmadd(a,b,c)  a + b, a * b, bitwise and, a * b + c (one rounding with FMA)
//   predux(v)                       the sum of the lanes, in Eigen's order
//   masked_packets<T>               whether the path has ploadu_first / pstoreu_first, which touch
//                                   only the first n < lanes elements (AVX-512's masks)
//   padd_halves(out, src, u, n)     (paths without masks) the tail of a run added in half-width
//                                   packets where the path has them
// The vector paths give the bits Eigen's packets gave under -march=native on the same CPU: the
// same instructions (pmadd is one FMA) and the same reduction tree.
#pragma once

#include <cstddef>

#include <Eigen/Core>

#include "distopt/nn/kernels/targets.hpp"

#if DISTOPT_KERNELS_X86
#include <immintrin.h>
#endif

DISTOPT_KERNELS_WARNINGS_OFF

namespace distopt::nn::kernels {

using Index = std::ptrdiff_t;


#if DISTOPT_KERNELS_X86

#if DISTOPT_KERNELS_AVX512
DISTOPT_TARGET_AVX512_BEGIN
namespace avx512 {

/// Keeps v in a register the optimiser cannot see through: GCC folds a packet loaded once and used
/// by several FMAs into each of them as a memory operand (several unaligned loads, each split across
/// two cache lines, where one would do), and folds constant chains away.
template <class P>
inline void opaque([[maybe_unused]] P& v) {
#if DISTOPT_KERNELS_X86
  asm("" : "+v"(v));
#endif
}

template <class T>
struct packet_of;
template <>
struct packet_of<float> {
  using type = __m512;
};
template <>
struct packet_of<double> {
  using type = __m512d;
};
template <class T>
using Packet = typename packet_of<T>::type;
template <class T>
inline constexpr Index lanes = Index(64 / sizeof(T));
template <class T>
inline constexpr bool masked_packets = true;

inline __m512 pset1(float x) { return _mm512_set1_ps(x); }
inline __m512d pset1(double x) { return _mm512_set1_pd(x); }
inline __m512 pload(const float* p) { return _mm512_load_ps(p); }
inline __m512d pload(const double* p) { return _mm512_load_pd(p); }
inline __m512 ploadu(const float* p) { return _mm512_loadu_ps(p); }
inline __m512d ploadu(const double* p) { return _mm512_loadu_pd(p); }
inline void pstore(float* p, __m512 v) { _mm512_store_ps(p, v); }
inline void pstore(double* p, __m512d v) { _mm512_store_pd(p, v); }
inline void pstoreu(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void pstoreu(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
inline __m512 padd(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
inline __m512d padd(__m512d a, __m512d b) { return _mm512_add_pd(a, b); }
inline __m512 pmul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
inline __m512d pmul(__m512d a, __m512d b) { return _mm512_mul_pd(a, b); }
inline __m512 pand(__m512 a, __m512 b) { return _mm512_and_ps(a, b); }
inline __m512d pand(__m512d a, __m512d b) { return _mm512_and_pd(a, b); }
inline __m512 pmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
inline __m512d pmadd(__m512d a, __m512d b, __m512d c) { return _mm512_fmadd_pd(a, b, c); }
// Eigen's trees: the two halves added, then AVX's (halves, then SSE's pairs). The zero-masked
// extractions: GCC before 12.3 warns (maybe-uninitialized, PR 105593) wherever the unmasked ones,
// written over an undefined register, are inlined, so a consumer's -Wall build would see them.
inline float predux(__m512 a) {
  const __m256 x = _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xFF, a, 0), _mm512_maskz_extractf32x8_ps(0xFF, a, 1));
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  const __m128 t = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}
inline double predux(__m512d a) {
  const __m256d sum = _mm256_add_pd(_mm512_maskz_extractf64x4_pd(0xF, a, 0), _mm512_maskz_extractf64x4_pd(0xF, a, 1));
  const __m256d t = _mm256_hadd_pd(sum, _mm256_permute2f128_pd(sum, sum, 1));
  return _mm_cvtsd_f64(_mm256_castpd256_pd128(_mm256_hadd_pd(t, t)));
}
inline __m512 ploadu_first(const float* p, Index n) { return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p); }
inline __m512d ploadu_first(const double* p, Index n) { return _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p); }
inline void pstoreu_first(float* p, __m512 v, Index n) { _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v); }
inline void pstoreu_first(double* p, __m512d v, Index n) { _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), v); }

}  // namespace avx512
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_AVX2
DISTOPT_TARGET_AVX2_BEGIN
namespace avx2 {

/// Keeps v in a register the optimiser cannot see through: GCC folds a packet loaded once and used
/// by several FMAs into each of them as a memory operand (several unaligned loads, each split across
/// two cache lines, where one would do), and folds constant chains away.
template <class P>
inline void opaque([[maybe_unused]] P& v) {
#if DISTOPT_KERNELS_X86
  asm("" : "+v"(v));
#endif
}

template <class T>
struct packet_of;
template <>
struct packet_of<float> {
  using type = __m256;
};
template <>
struct packet_of<double> {
  using type = __m256d;
};
template <class T>
using Packet = typename packet_of<T>::type;
template <class T>
inline constexpr Index lanes = Index(32 / sizeof(T));
// AVX's masked moves exist but are slow on AMD's cores: the kernels take other ways.
template <class T>
inline constexpr bool masked_packets = false;

inline __m256 pset1(float x) { return _mm256_set1_ps(x); }
inline __m256d pset1(double x) { return _mm256_set1_pd(x); }
inline __m256 pload(const float* p) { return _mm256_load_ps(p); }
inline __m256d pload(const double* p) { return _mm256_load_pd(p); }
inline __m256 ploadu(const float* p) { return _mm256_loadu_ps(p); }
inline __m256d ploadu(const double* p) { return _mm256_loadu_pd(p); }
inline void pstore(float* p, __m256 v) { _mm256_store_ps(p, v); }
inline void pstore(double* p, __m256d v) { _mm256_store_pd(p, v); }
inline void pstoreu(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void pstoreu(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
inline __m256 padd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
inline __m256d padd(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
inline __m256 pmul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
inline __m256d pmul(__m256d a, __m256d b) { return _mm256_mul_pd(a, b); }
inline __m256 pand(__m256 a, __m256 b) { return _mm256_and_ps(a, b); }
inline __m256d pand(__m256d a, __m256d b) { return _mm256_and_pd(a, b); }
inline __m256 pmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
inline __m256d pmadd(__m256d a, __m256d b, __m256d c) { return _mm256_fmadd_pd(a, b, c); }
inline float predux(__m256 a) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 t = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}
inline double predux(__m256d a) {
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
// out[u, ...) += src[u, ...) in half-width (SSE) packets while one fits, u advanced past them.
inline void padd_halves(float* out, const float* src, Index& u, Index n) {
  for (; u + 4 <= n; u += 4) _mm_storeu_ps(out + u, _mm_add_ps(_mm_loadu_ps(out + u), _mm_loadu_ps(src + u)));
}
inline void padd_halves(double* out, const double* src, Index& u, Index n) {
  for (; u + 2 <= n; u += 2) _mm_storeu_pd(out + u, _mm_add_pd(_mm_loadu_pd(out + u), _mm_loadu_pd(src + u)));
}

}  // namespace avx2
DISTOPT_TARGET_END
#endif

#endif  // DISTOPT_KERNELS_X86

#if DISTOPT_KERNELS_PORTABLE
namespace portable {

/// Keeps v in a register the optimiser cannot see through: GCC folds a packet loaded once and used
/// by several FMAs into each of them as a memory operand (several unaligned loads, each split across
/// two cache lines, where one would do), and folds constant chains away.
template <class P>
inline void opaque([[maybe_unused]] P& v) {
#if DISTOPT_KERNELS_X86
  asm("" : "+v"(v));
#endif
}

namespace ei = Eigen::internal;
template <class T>
using Packet = typename ei::packet_traits<T>::type;
template <class T>
inline constexpr Index lanes = ei::unpacket_traits<Packet<T>>::size;
template <class T>
inline constexpr bool masked_packets = false;

inline Packet<float> pset1(float x) { return ei::pset1<Packet<float>>(x); }
inline Packet<double> pset1(double x) { return ei::pset1<Packet<double>>(x); }
inline Packet<float> pload(const float* p) { return ei::pload<Packet<float>>(p); }
inline Packet<double> pload(const double* p) { return ei::pload<Packet<double>>(p); }
inline Packet<float> ploadu(const float* p) { return ei::ploadu<Packet<float>>(p); }
inline Packet<double> ploadu(const double* p) { return ei::ploadu<Packet<double>>(p); }
inline void pstore(float* p, const Packet<float>& v) { ei::pstore(p, v); }
inline void pstore(double* p, const Packet<double>& v) { ei::pstore(p, v); }
inline void pstoreu(float* p, const Packet<float>& v) { ei::pstoreu(p, v); }
inline void pstoreu(double* p, const Packet<double>& v) { ei::pstoreu(p, v); }
inline Packet<float> padd(const Packet<float>& a, const Packet<float>& b) { return ei::padd(a, b); }
inline Packet<double> padd(const Packet<double>& a, const Packet<double>& b) { return ei::padd(a, b); }
inline Packet<float> pmul(const Packet<float>& a, const Packet<float>& b) { return ei::pmul(a, b); }
inline Packet<double> pmul(const Packet<double>& a, const Packet<double>& b) { return ei::pmul(a, b); }
inline Packet<float> pand(const Packet<float>& a, const Packet<float>& b) { return ei::pand(a, b); }
inline Packet<double> pand(const Packet<double>& a, const Packet<double>& b) { return ei::pand(a, b); }
inline Packet<float> pmadd(const Packet<float>& a, const Packet<float>& b, const Packet<float>& c) {
  return ei::pmadd(a, b, c);
}
inline Packet<double> pmadd(const Packet<double>& a, const Packet<double>& b, const Packet<double>& c) {
  return ei::pmadd(a, b, c);
}
inline float predux(const Packet<float>& a) { return ei::predux(a); }
inline double predux(const Packet<double>& a) { return ei::predux(a); }
// Eigen's SSE packets have no narrower half: the tail goes element by element.
template <class T>
inline void padd_halves(T*, const T*, Index&, Index) {}

}  // namespace portable
#endif

}  // namespace distopt::nn::kernels

DISTOPT_KERNELS_WARNINGS_ON
