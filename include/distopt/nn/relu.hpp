// Rectified linear unit.
#pragma once

#include <cstddef>

namespace distopt::nn {

/// ReLU (Nair & Hinton 2010): y = max(x, 0); backward dx = dy where y > 0, else 0 (PyTorch's
/// choice of subgradient at 0). In place: the backward pass needs only the output.
struct Relu {
  template <class T>
  static void forward(T* x, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; ++i) x[i] = x[i] > T(0) ? x[i] : T(0);
  }
  /// dy <- dy * [y > 0], in place.
  template <class T>
  static void backward(const T* y, T* dy, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; ++i) dy[i] = y[i] > T(0) ? dy[i] : T(0);
  }
};

}  // namespace distopt::nn
