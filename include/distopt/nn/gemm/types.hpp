// What the product's callers and its kernels share, whatever the path (nn/isa.hpp): scratch
// buffers, the plain operands and result of a product, and the shape of the path's blocking.
#pragma once

#include <cstddef>

#include "distopt/core/aligned_buffer.hpp"

namespace distopt::nn::gemm {

using Index = std::ptrdiff_t;

/// Packing buffers of one thread; grown, never shrunk, so a steady state allocates nothing.
template <class T>
struct Workspace {
  AlignedBuffer<T> a, b;
  AlignedBuffer<Index> offsets;  ///< index tables of the direct convolutions (nn/kernels/direct_conv-inl.hpp)
  AlignedBuffer<T> rows;         ///< W^T dY of a convolution's input gradient (Conv2d::backward_input)
};

/// op(A) for a row-major A with row stride `ld`: A itself [m, k], or, transposed, A^T of an A
/// stored [k, m].
template <class T>
struct MatrixA {
  const T* data;
  Index ld;
  bool transposed = false;
};

/// op(B) for a row-major B with row stride `ld`: B itself [k, n], or B^T of a B stored [n, k].
template <class T>
struct MatrixB {
  const T* data;
  Index ld;
  bool transposed = false;
};

/// C (row-major, row stride `ld`) written by a product:
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
};

/// A path's register width (lanes of T) and blocking: micro-tiles of mr x nr, k blocks of kc, row
/// blocks of mc.
struct Shape {
  Index lanes, mr, nr, kc, mc;
};

}  // namespace distopt::nn::gemm
