// The matrix-product engine under every layer: BLIS-style blocking, packed panels and a
// register-blocked micro-kernel over Eigen's SIMD packets.
//
// Why our own and not Eigen's product: the layers need what a library GEMM does not offer, the
// operands packed straight from an image (implicit im2col) and the result handed to a fused
// epilogue (bias, ReLU, the ReLU mask, col2im), so no intermediate matrix is written and read
// back. Why Eigen's packets (pload, pset1, pmadd) and not xsimd or intrinsics: Eigen is already
// the math layer, its packet type is the widest the compiler targets (AVX-512, AVX2 + FMA, SSE,
// NEON, or the plain scalar when nothing is enabled), and the micro-kernel reaches the FMA peak
// measured beside it (bench_lenet, BM_Gemm_MicroKernel), so a second SIMD layer could add
// nothing but a dependency.
//
// Every element of C is one sum over k in a fixed order (k blocks of `kc` in turn, each
// accumulated in a register in k order), whatever the blocking over m and n: splitting m or n
// among threads never changes a bit.
#pragma once

#include <algorithm>
#include <cstddef>

#include <Eigen/Core>

#include "distopt/core/aligned_buffer.hpp"

namespace distopt::nn::gemm {

using Index = std::ptrdiff_t;

/// The widest SIMD register of T the build targets, as Eigen sees it.
template <class T>
using Packet = typename Eigen::internal::packet_traits<T>::type;
template <class T>
inline constexpr Index lanes = Eigen::internal::unpacket_traits<Packet<T>>::size;

/// The instruction set the kernels are compiled for (printed beside every benchmark figure).
[[nodiscard]] constexpr const char* isa() noexcept {
#if defined(EIGEN_VECTORIZE_AVX512)
  return "AVX-512F";
#elif defined(EIGEN_VECTORIZE_AVX) && defined(EIGEN_VECTORIZE_FMA)
  return "AVX2+FMA";
#elif defined(EIGEN_VECTORIZE_AVX)
  return "AVX";
#elif defined(EIGEN_VECTORIZE_SSE2)
  return "SSE2";
#elif defined(EIGEN_VECTORIZE_NEON)
  return "NEON";
#else
  return "scalar";
#endif
}

/// Register and cache blocking (Goto and van de Geijn 2008; sizes after Low et al. 2016).
/// The micro-tile is mr x nr = 6 x (2 registers): 12 accumulators, two B registers and one
/// broadcast fit the 16 vector registers of AVX2 (AVX-512 has 32 and uses the same tile), and
/// 12 independent FMA chains cover 2 pipes x 4 cycles of latency. kc keeps a B micro-panel
/// (kc x nr) in half of a 32 KiB L1; mc keeps the packed A block (mc x kc) in half of a 512 KiB
/// L2; nc bounds the packed B panel. The sizes are constants, not read from the running CPU:
/// kc fixes the order of every sum, and the same build must give the same bits on every machine.
template <class T>
struct Blocking {
  static constexpr Index mr = 6;
  static constexpr Index nr = 2 * lanes<T>;
  static constexpr Index kc = std::max<Index>(16, Index(16 * 1024) / (nr * Index(sizeof(T))));
  static constexpr Index mc = (Index(256 * 1024) / (kc * Index(sizeof(T)))) / mr * mr;
  static constexpr Index nc = 4096 / nr * nr;
};

/// tile [mr, nr] (row-major, stride nr) = sum over kk < kc of a[kk * mr + r] * b[kk * nr + j]:
/// one packed A micro-panel against one packed B micro-panel.
template <class T>
inline void micro_kernel(Index kc, const T* __restrict a, const T* __restrict b, T* __restrict tile) {
  namespace ei = Eigen::internal;
  using P = Packet<T>;
  constexpr Index mr = Blocking<T>::mr, nr = Blocking<T>::nr, L = lanes<T>;
  P c00 = ei::pset1<P>(T(0)), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  P c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (Index kk = 0; kk < kc; ++kk, a += mr, b += nr) {
    const P b0 = ei::pload<P>(b), b1 = ei::pload<P>(b + L);
    P x = ei::pset1<P>(a[0]);
    c00 = ei::pmadd(x, b0, c00);
    c01 = ei::pmadd(x, b1, c01);
    x = ei::pset1<P>(a[1]);
    c10 = ei::pmadd(x, b0, c10);
    c11 = ei::pmadd(x, b1, c11);
    x = ei::pset1<P>(a[2]);
    c20 = ei::pmadd(x, b0, c20);
    c21 = ei::pmadd(x, b1, c21);
    x = ei::pset1<P>(a[3]);
    c30 = ei::pmadd(x, b0, c30);
    c31 = ei::pmadd(x, b1, c31);
    x = ei::pset1<P>(a[4]);
    c40 = ei::pmadd(x, b0, c40);
    c41 = ei::pmadd(x, b1, c41);
    x = ei::pset1<P>(a[5]);
    c50 = ei::pmadd(x, b0, c50);
    c51 = ei::pmadd(x, b1, c51);
  }
  ei::pstore(tile + 0 * nr, c00);
  ei::pstore(tile + 0 * nr + L, c01);
  ei::pstore(tile + 1 * nr, c10);
  ei::pstore(tile + 1 * nr + L, c11);
  ei::pstore(tile + 2 * nr, c20);
  ei::pstore(tile + 2 * nr + L, c21);
  ei::pstore(tile + 3 * nr, c30);
  ei::pstore(tile + 3 * nr + L, c31);
  ei::pstore(tile + 4 * nr, c40);
  ei::pstore(tile + 4 * nr + L, c41);
  ei::pstore(tile + 5 * nr, c50);
  ei::pstore(tile + 5 * nr + L, c51);
  static_assert(mr == 6 && nr == 2 * L, "the unrolled kernel above is 6 x (2 registers)");
}

/// Packing buffers of one thread; grown, never shrunk, so a steady state allocates nothing.
template <class T>
struct Workspace {
  AlignedBuffer<T> a, b;
  AlignedBuffer<Index> offsets;  ///< index tables of the direct convolutions (nn/direct_conv.hpp)
  AlignedBuffer<T> rows;         ///< W^T dY of a convolution's input gradient (Conv2d::backward_input)
};

/// A block of a product to be written: rows [row, row + rows) and columns [col, col + cols) of
/// C, in `tile` (row-major, stride nr). `first` and `last` say whether this is the first and the
/// last k block of the sum, so an epilogue knows when to overwrite and when the sum is complete.
template <class T>
struct Tile {
  const T* values;
  Index row, col, rows, cols;
  bool first, last;
  static constexpr Index stride = Blocking<T>::nr;
};

/// C [m, n] = op(A) [m, k] op(B) [k, n], with the operands supplied by packers and the result
/// taken by an epilogue:
///   pack_a(T* out, i0, rows, k0, depth): the mr-row panels of op(A)[i0 .. i0+rows, k0 .. k0+depth],
///     panel q at out + q * mr * depth, element (kk, r) at kk * mr + r, rows past the end zero;
///   pack_b(T* out, k0, depth, j0, cols): the nr-column panels of op(B), panel q at
///     out + q * nr * depth, element (kk, j) at kk * nr + j, columns past the end zero;
///   write(const Tile<T>&): called once per micro-tile and k block, k blocks in order.
/// k = 0 calls no one: the caller decides what an empty sum writes.
template <class T, class PackA, class PackB, class Write>
void product(Index m, Index n, Index k, PackA&& pack_a, PackB&& pack_b, Write&& write, Workspace<T>& ws) {
  using B = Blocking<T>;
  if (m <= 0 || n <= 0 || k <= 0) return;
  const Index kc_max = std::min(k, B::kc);
  const Index mc_max = std::min((m + B::mr - 1) / B::mr * B::mr, B::mc);
  const Index nc_max = std::min((n + B::nr - 1) / B::nr * B::nr, B::nc);
  // A packet of slack after each packing buffer: packers may write a whole packet at the end.
  if (ws.a.size() < mc_max * kc_max + lanes<T>) ws.a = AlignedBuffer<T>(mc_max * kc_max + lanes<T>);
  if (ws.b.size() < nc_max * kc_max + lanes<T>) ws.b = AlignedBuffer<T>(nc_max * kc_max + lanes<T>);
  alignas(64) T tile[B::mr * B::nr];
  for (Index jc = 0; jc < n; jc += B::nc) {
    const Index nc = std::min(B::nc, n - jc);
    for (Index pc = 0; pc < k; pc += B::kc) {
      const Index kc = std::min(B::kc, k - pc);
      pack_b(ws.b.data(), pc, kc, jc, nc);
      for (Index ic = 0; ic < m; ic += B::mc) {
        const Index mc = std::min(B::mc, m - ic);
        pack_a(ws.a.data(), ic, mc, pc, kc);
        for (Index jr = 0; jr < nc; jr += B::nr)
          for (Index ir = 0; ir < mc; ir += B::mr) {
            micro_kernel(kc, ws.a.data() + ir * kc, ws.b.data() + jr * kc, tile);
            write(Tile<T>{tile, ic + ir, jc + jr, std::min(B::mr, mc - ir), std::min(B::nr, nc - jr), pc == 0,
                          pc + kc >= k});
          }
      }
    }
  }
}

}  // namespace distopt::nn::gemm
