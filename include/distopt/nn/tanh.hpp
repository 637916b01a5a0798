// Hyperbolic tangent.
#pragma once

#include <cmath>
#include <cstddef>

namespace distopt::nn {

/// Tanh: y = tanh(x); backward dx = dy (1 - y^2), from the output alone (as torch's
/// tanh_backward). In place, like Relu.
struct Tanh {
  template <class T>
  static void forward(T* x, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; ++i) x[i] = std::tanh(x[i]);
  }
  /// dy <- dy * (1 - y^2), in place.
  template <class T>
  static void backward(const T* y, T* dy, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; ++i) dy[i] = dy[i] * (T(1) - y[i] * y[i]);
  }
};

}  // namespace distopt::nn
