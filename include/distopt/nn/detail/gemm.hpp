// Matrix products for the layers: Eigen's level-3 kernel, serial, with packing buffers we own.
//
// Why not `C.noalias() = A * B`: Eigen's product allocates its packing buffers on the heap on
// every call and parallelises on its own whenever it is not already inside an OpenMP team of two
// or more threads, so the bits of a result could depend on the thread count. The layers split
// work into fixed pieces themselves; each piece is one serial product through this wrapper, and
// after the first step of a given shape no product allocates. Uses Eigen's internal
// general_matrix_matrix_product (stable across Eigen 3.3 and 3.4).
#pragma once

#include <cstddef>

#include <Eigen/Core>

#include "distopt/core/aligned_buffer.hpp"

namespace distopt::nn::detail {

/// Serial GEMM with reusable packing buffers, in BLAS terms for row-major matrices:
///   C = alpha * op(A) * op(B) + beta * C,  beta in {0, 1},
/// op(A) of shape [m, k], op(B) [k, n], C [m, n]; `lda`, `ldb`, `ldc` are row strides.
/// One object per thread: the buffers are scratch.
template <class T>
class Gemm {
 public:
  void operator()(bool transpose_a, bool transpose_b, Eigen::Index m, Eigen::Index n, Eigen::Index k, T alpha,
                  const T* a, Eigen::Index lda, const T* b, Eigen::Index ldb, T beta, T* c, Eigen::Index ldc) {
    if (beta == T(0))
      for (Eigen::Index i = 0; i < m; ++i)
        for (Eigen::Index j = 0; j < n; ++j) c[i * ldc + j] = T(0);
    if (m == 0 || n == 0 || k == 0) return;
    // Row-major C [m, n] is column-major C^T [n, m] = op(B)^T op(A)^T: Eigen's column-major
    // kernel with op(B)^T on the left and op(A)^T on the right.
    if (!transpose_b && !transpose_a)
      run<Eigen::ColMajor, Eigen::ColMajor>(n, m, k, b, ldb, a, lda, c, ldc, alpha);
    else if (!transpose_b && transpose_a)
      run<Eigen::ColMajor, Eigen::RowMajor>(n, m, k, b, ldb, a, lda, c, ldc, alpha);
    else if (transpose_b && !transpose_a)
      run<Eigen::RowMajor, Eigen::ColMajor>(n, m, k, b, ldb, a, lda, c, ldc, alpha);
    else
      run<Eigen::RowMajor, Eigen::RowMajor>(n, m, k, b, ldb, a, lda, c, ldc, alpha);
  }

 private:
  // Eigen's blocking descriptor pointed at our buffers.
  struct Blocking : Eigen::internal::level3_blocking<T, T> {
    Blocking(T* block_a, T* block_b, Eigen::Index mc, Eigen::Index nc, Eigen::Index kc) {
      this->m_blockA = block_a;
      this->m_blockB = block_b;
      this->m_mc = mc;
      this->m_nc = nc;
      this->m_kc = kc;
    }
  };

  // res [rows, cols] (column-major, leading dimension ld_res) += alpha * lhs [rows, depth] * rhs [depth, cols].
  template <int LhsOrder, int RhsOrder>
  void run(Eigen::Index rows, Eigen::Index cols, Eigen::Index depth, const T* lhs, Eigen::Index ld_lhs, const T* rhs,
           Eigen::Index ld_rhs, T* res, Eigen::Index ld_res, T alpha) {
    Eigen::Index kc = depth, mc = rows, nc = cols;
    Eigen::internal::computeProductBlockingSizes<T, T, 1, Eigen::Index>(kc, mc, nc, 1);
    const auto size_a = static_cast<std::ptrdiff_t>(kc * mc);
    const auto size_b = static_cast<std::ptrdiff_t>(kc * nc);
    if (block_a_.size() < size_a) block_a_ = AlignedBuffer<T>(size_a);
    if (block_b_.size() < size_b) block_b_ = AlignedBuffer<T>(size_b);
    Blocking blocking(block_a_.data(), block_b_.data(), mc, nc, kc);
    Eigen::internal::general_matrix_matrix_product<Eigen::Index, T, LhsOrder, false, T, RhsOrder, false,
                                                   Eigen::ColMajor, 1>::run(rows, cols, depth, lhs, ld_lhs, rhs,
                                                                            ld_rhs, res, 1, ld_res, alpha, blocking);
  }

  AlignedBuffer<T> block_a_;
  AlignedBuffer<T> block_b_;
};

}  // namespace distopt::nn::detail
