// Fully connected layer over a batch.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

#include "distopt/nn/detail/gemm.hpp"

namespace distopt::nn {

/// Linear: Y = X W^T + b for X [rows, in], W [out, in] (PyTorch's layout), b [out]. Backward:
/// dW += dY^T X, db += column sums of dY, dX = dY W. Each function computes a fixed piece of its
/// output ([row_begin, row_end) of Y or dX, [out_begin, out_end) of dW), so a caller can spread the
/// pieces over threads and get the same bits for any thread count.
struct Linear {
  std::string name;
  std::ptrdiff_t in_features;
  std::ptrdiff_t out_features;

  [[nodiscard]] std::ptrdiff_t fan_in() const { return in_features; }

  /// Rows [row_begin, row_end) of Y.
  template <class T>
  void forward(const T* weight, const T* bias, const T* x, T* y, std::ptrdiff_t row_begin, std::ptrdiff_t row_end,
               detail::Gemm<T>& gemm) const {
    const std::ptrdiff_t rows = row_end - row_begin;
    T* y_rows = y + row_begin * out_features;
    gemm(false, true, rows, out_features, in_features, T(1), x + row_begin * in_features, in_features, weight,
         in_features, T(0), y_rows, out_features);
    for (std::ptrdiff_t r = 0; r < rows; ++r)
      for (std::ptrdiff_t o = 0; o < out_features; ++o) y_rows[r * out_features + o] += bias[o];
  }

  /// Adds rows [out_begin, out_end) of dW = dY^T X and of db over all `rows` of the batch.
  template <class T>
  void backward_weights(const T* x, const T* dy, std::ptrdiff_t rows, T* weight_grad, T* bias_grad,
                        std::ptrdiff_t out_begin, std::ptrdiff_t out_end, detail::Gemm<T>& gemm) const {
    const std::ptrdiff_t outs = out_end - out_begin;
    gemm(true, false, outs, in_features, rows, T(1), dy + out_begin, out_features, x, in_features, T(1),
         weight_grad + out_begin * in_features, in_features);
    for (std::ptrdiff_t o = out_begin; o < out_end; ++o) {
      T sum = 0;
      for (std::ptrdiff_t r = 0; r < rows; ++r) sum += dy[r * out_features + o];
      bias_grad[o] += sum;
    }
  }

  /// Rows [row_begin, row_end) of dX = dY W.
  template <class T>
  void backward_input(const T* weight, const T* dy, T* dx, std::ptrdiff_t row_begin, std::ptrdiff_t row_end,
                      detail::Gemm<T>& gemm) const {
    gemm(false, false, row_end - row_begin, in_features, out_features, T(1), dy + row_begin * out_features,
         out_features, weight, in_features, T(0), dx + row_begin * in_features, in_features);
  }
};

}  // namespace distopt::nn
