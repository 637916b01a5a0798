// Fully connected layer over a batch.
#pragma once

#include <cstddef>
#include <string>

#include "distopt/nn/gemm/kernel.hpp"
#include "distopt/nn/gemm/matrix.hpp"

namespace distopt::nn {

/// Linear: Y = X W^T + b for X [rows, in], W [out, in] (PyTorch's layout), b [out]. Backward:
/// dW += dY^T X, db += column sums of dY, dX = dY W. Each is one product over the whole batch;
/// each function computes a fixed block of its output (columns [begin, end) of Y or dX, rows
/// [begin, end) of dW), and every element is the same sum whatever the block, so a caller can
/// split the work over any number of threads and get the same bits.
struct Linear {
  std::string name;
  std::ptrdiff_t in_features;
  std::ptrdiff_t out_features;

  [[nodiscard]] std::ptrdiff_t fan_in() const { return in_features; }

  /// Columns [begin, end) of Y = X W^T + b for `rows` rows; with `relu`, Y = max(Y, 0) (fused).
  template <class T>
  void forward(const T* weight, const T* bias, const T* x, std::ptrdiff_t rows, T* y, std::ptrdiff_t begin,
               std::ptrdiff_t end, bool relu, gemm::Workspace<T>& ws) const {
    gemm::product(rows, end - begin, in_features, gemm::MatrixA<T>{x, in_features},
                  gemm::MatrixB<T>{weight + begin * in_features, in_features, true},
                  gemm::MatrixC<T>{.data = y + begin, .ld = out_features, .col_bias = bias + begin, .relu = relu}, ws);
  }

  /// Adds rows [begin, end) of dW = dY^T X and of db over all `rows` of the batch.
  template <class T>
  void backward_weights(const T* x, const T* dy, std::ptrdiff_t rows, T* weight_grad, T* bias_grad,
                        std::ptrdiff_t begin, std::ptrdiff_t end, gemm::Workspace<T>& ws) const {
    gemm::product(end - begin, in_features, rows, gemm::MatrixA<T>{dy + begin, out_features, true},
                  gemm::MatrixB<T>{x, in_features},
                  gemm::MatrixC<T>{.data = weight_grad + begin * in_features, .ld = in_features, .accumulate = true},
                  ws);
    for (std::ptrdiff_t o = begin; o < end; ++o) {
      T sum = 0;
      for (std::ptrdiff_t r = 0; r < rows; ++r) sum += dy[r * out_features + o];
      bias_grad[o] += sum;
    }
  }

  /// Columns [begin, end) of dX = dY W; with `mask` (laid out as dX), dX = dX * [mask > 0]: the
  /// backward pass of a ReLU whose output is `mask`, fused.
  template <class T>
  void backward_input(const T* weight, const T* dy, std::ptrdiff_t rows, T* dx, std::ptrdiff_t begin,
                      std::ptrdiff_t end, const T* mask, gemm::Workspace<T>& ws) const {
    gemm::product(rows, end - begin, out_features, gemm::MatrixA<T>{dy, out_features},
                  gemm::MatrixB<T>{weight + begin, in_features},
                  gemm::MatrixC<T>{.data = dx + begin, .ld = in_features, .mask = mask ? mask + begin : nullptr}, ws);
  }
};

}  // namespace distopt::nn
