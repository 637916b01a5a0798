// Products of plain row-major matrices: packers that read op(A) and op(B) from memory and the
// epilogue that writes C, with the fused extras the layers need (bias, ReLU, a ReLU mask).
#pragma once

#include <algorithm>
#include <cstddef>

#include "distopt/nn/gemm/kernel.hpp"

namespace distopt::nn::gemm {

/// Packs `Width`-wide panels of the matrix M(k, c) = data[c * ld + k] (`k_contiguous`) or
/// data[k * ld + c], for c in [c0, c0 + count) and k in [k0, k0 + depth): panel q at
/// out + q * Width * depth, element (kk, j) at kk * Width + j, zero past `count`. Both operands
/// of a product are such panels: op(A)'s rows, op(B)'s columns.
template <Index Width, class T>
void pack_panels(T* out, const T* data, Index ld, bool k_contiguous, Index c0, Index count, Index k0, Index depth) {
  for (Index q = 0; q * Width < count; ++q, out += Width * depth) {
    const Index valid = std::min(Width, count - q * Width), first = c0 + q * Width;
    if (!k_contiguous) {
      for (Index kk = 0; kk < depth; ++kk) {
        const T* src = data + (k0 + kk) * ld + first;
        for (Index j = 0; j < Width; ++j) out[kk * Width + j] = j < valid ? src[j] : T(0);
      }
      continue;
    }
    for (Index j = 0; j < Width; ++j) {
      if (j >= valid) {
        for (Index kk = 0; kk < depth; ++kk) out[kk * Width + j] = T(0);
        continue;
      }
      const T* src = data + (first + j) * ld + k0;
      for (Index kk = 0; kk < depth; ++kk) out[kk * Width + j] = src[kk];
    }
  }
}

/// op(A) for a row-major A with row stride `ld`: A itself [m, k], or, transposed, A^T of an A
/// stored [k, m].
template <class T>
struct MatrixA {
  const T* data;
  Index ld;
  bool transposed = false;

  void operator()(T* out, Index i0, Index rows, Index k0, Index depth) const {
    pack_panels<Blocking<T>::mr>(out, data, ld, !transposed, i0, rows, k0, depth);
  }
};

/// op(B) for a row-major B with row stride `ld`: B itself [k, n], or B^T of a B stored [n, k].
template <class T>
struct MatrixB {
  const T* data;
  Index ld;
  bool transposed = false;

  void operator()(T* out, Index k0, Index depth, Index j0, Index cols) const {
    pack_panels<Blocking<T>::nr>(out, data, ld, transposed, j0, cols, k0, depth);
  }
};

/// Writes C (row-major, row stride `ld`) from the tiles of a product:
///   C = [C +] op(A) op(B) [+ row_bias (one per row) | + col_bias (one per column)],
/// then, on the finished sum, C = max(C, 0) if `relu`, or C = C * [mask > 0] if `mask` is given
/// (a ReLU's backward pass through its output, `mask` laid out as C). The bias is added to the
/// finished sum, so the bits are those of a product followed by a bias pass.
template <class T>
struct MatrixC {
  T* data;
  Index ld;
  bool accumulate = false;
  const T* row_bias = nullptr;
  const T* col_bias = nullptr;
  bool relu = false;
  const T* mask = nullptr;

  void operator()(const Tile<T>& t) const {
    namespace ei = Eigen::internal;
    using P = Packet<T>;
    constexpr Index L = lanes<T>;
    for (Index r = 0; r < t.rows; ++r) {
      const T* src = t.values + r * t.stride;
      T* dst = data + (t.row + r) * ld + t.col;
      // A whole tile row as packets: element by element, the compiler calls memmove for a copy
      // of 16 floats.
      const bool whole = t.cols == t.stride;
      if (t.first && !accumulate) {
        if (whole)
          for (Index j = 0; j < t.stride; j += L) ei::pstoreu(dst + j, ei::pload<P>(src + j));
        else
          for (Index j = 0; j < t.cols; ++j) dst[j] = src[j];
      } else {
        if (whole)
          for (Index j = 0; j < t.stride; j += L) ei::pstoreu(dst + j, ei::padd(ei::ploadu<P>(dst + j), ei::pload<P>(src + j)));
        else
          for (Index j = 0; j < t.cols; ++j) dst[j] += src[j];
      }
      if (!t.last) continue;
      if (row_bias != nullptr) {
        const T b = row_bias[t.row + r];
        for (Index j = 0; j < t.cols; ++j) dst[j] += b;
      }
      if (col_bias != nullptr)
        for (Index j = 0; j < t.cols; ++j) dst[j] += col_bias[t.col + j];
      if (relu)
        for (Index j = 0; j < t.cols; ++j) dst[j] = dst[j] > T(0) ? dst[j] : T(0);
      if (mask != nullptr) {
        const T* m = mask + (t.row + r) * ld + t.col;
        for (Index j = 0; j < t.cols; ++j) dst[j] = m[j] > T(0) ? dst[j] : T(0);
      }
    }
  }
};

/// Serial GEMM with reusable packing buffers, in BLAS terms for row-major matrices:
///   C = alpha * op(A) * op(B) + beta * C,  alpha = 1, beta in {0, 1},
/// op(A) of shape [m, k], op(B) [k, n], C [m, n]; `lda`, `ldb`, `ldc` are row strides. One object
/// per thread: the buffers are scratch. The layers call `product` with fused epilogues; this is
/// the plain form, for tests and callers that want a matrix product and nothing else.
template <class T>
class Gemm {
 public:
  void operator()(bool transpose_a, bool transpose_b, Index m, Index n, Index k, const T* a, Index lda, const T* b,
                  Index ldb, bool accumulate, T* c, Index ldc) {
    if (k == 0 && !accumulate)
      for (Index i = 0; i < m; ++i) std::fill_n(c + i * ldc, n, T(0));
    product(m, n, k, MatrixA<T>{a, lda, transpose_a}, MatrixB<T>{b, ldb, transpose_b},
            MatrixC<T>{.data = c, .ld = ldc, .accumulate = accumulate}, workspace_);
  }

  [[nodiscard]] Workspace<T>& workspace() noexcept { return workspace_; }

 private:
  Workspace<T> workspace_;
};

}  // namespace distopt::nn::gemm
