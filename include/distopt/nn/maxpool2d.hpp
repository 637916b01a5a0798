// 2 x 2 max pooling with stride 2, keeping the argmax for the backward pass; the ReLU after it
// fused in.
#pragma once

#include <cstddef>
#include <cstdint>

#include "distopt/nn/conv2d.hpp"
#include "distopt/nn/isa.hpp"

namespace distopt::nn {

/// MaxPool2d(2, 2): y(c, i, y, x) = max over the window x(c, i, 2y + dy, 2x + dx), dy, dx in {0, 1};
/// odd trailing rows and columns are dropped, as in PyTorch. The position of the maximum (0..3,
/// the first one on ties, as PyTorch's CPU kernel) is kept so the backward pass routes each
/// gradient to it: dx(window[argmax]) = dy, 0 elsewhere. The argmax of output (c, i, r, q) is at
/// ((c * images + i) * out_h + r) * out_w + q whatever the layouts of x and y.
///
/// With `relu`, y = max(pool(x), 0), which is pool(max(x, 0)) (max and ReLU commute), and the
/// backward pass takes the ReLU's mask from y: the two layers in one pass each way.
struct MaxPool2d {
  [[nodiscard]] static std::ptrdiff_t out_size(std::ptrdiff_t in) { return in / 2; }

  /// y (laid out as `out`) and the argmax from x (laid out as `in`), on the path in use
  /// (nn/kernels/pool-inl.hpp).
  template <class T>
  static void forward(const T* x, const PlaneLayout& in, T* y, const PlaneLayout& out, std::uint8_t* argmax,
                      bool relu) {
    with_kernels([&](auto k) { pool_forward(k, x, in, y, out, argmax, relu); });
  }
  /// Channel-major output, no ReLU.
  template <class T>
  static void forward(const T* x, const PlaneLayout& in, T* y, std::uint8_t* argmax) {
    forward(x, in, y, PlaneLayout::cnhw(in.channels, in.images, out_size(in.height), out_size(in.width)), argmax,
            false);
  }

  /// dx (all of it, laid out as `in`) from dy (laid out as `out`) and the argmax; with `y` (the
  /// forward output after the ReLU, laid out as `out`), through the ReLU's mask y > 0.
  template <class T>
  static void backward(const T* dy, const PlaneLayout& out, const std::uint8_t* argmax, const T* y,
                       const PlaneLayout& in, T* dx) {
    with_kernels([&](auto k) { pool_backward(k, dy, out, argmax, y, in, dx); });
  }
  /// Channel-major dy, no ReLU.
  template <class T>
  static void backward(const T* dy, const std::uint8_t* argmax, const PlaneLayout& in, T* dx) {
    backward(dy, PlaneLayout::cnhw(in.channels, in.images, out_size(in.height), out_size(in.width)), argmax,
             static_cast<const T*>(nullptr), in, dx);
  }
};

}  // namespace distopt::nn
