// Products of plain row-major matrices, on the path in use (nn/isa.hpp).
#pragma once

#include <algorithm>
#include <cstddef>

#include "distopt/nn/gemm/kernel.hpp"

namespace distopt::nn::gemm {

/// C [m, n] = op(A) [m, k] op(B) [k, n] with the extras MatrixC asks for (bias, ReLU, mask).
/// k = 0 writes nothing.
template <class T>
void product(Index m, Index n, Index k, const MatrixA<T>& a, const MatrixB<T>& b, const MatrixC<T>& c,
             Workspace<T>& ws) {
  with_kernels([&](auto tag) { matrix_product(tag, m, n, k, a, b, c, ws); });
}

/// Serial GEMM with reusable packing buffers, in BLAS terms for row-major matrices:
///   C = alpha * op(A) * op(B) + beta * C,  alpha = 1, beta in {0, 1},
/// op(A) of shape [m, k], op(B) [k, n], C [m, n]; `lda`, `ldb`, `ldc` are row strides. One object
/// per thread: the buffers are scratch. The layers call the kernels' product with fused
/// epilogues; this is the plain form, for tests and callers that want a matrix product and
/// nothing else.
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
