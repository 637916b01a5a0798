// 2 x 2 max pooling with stride 2, keeping the argmax for the backward pass.
#pragma once

#include <cstddef>
#include <cstdint>

#include "distopt/nn/conv2d.hpp"

namespace distopt::nn {

/// MaxPool2d(2, 2): y(c, i, y, x) = max over the window x(c, i, 2y + dy, 2x + dx), dy, dx in {0, 1};
/// odd trailing rows and columns are dropped, as in PyTorch. The position of the maximum (0..3,
/// the first one on ties, as PyTorch's CPU kernel) is kept so the backward pass routes each
/// gradient to it: dx(window[argmax]) = dy, 0 elsewhere. Output in CNHW layout.
struct MaxPool2d {
  [[nodiscard]] static std::ptrdiff_t out_size(std::ptrdiff_t in) { return in / 2; }

  template <class T>
  static void forward(const T* x, const PlaneLayout& in, T* y, std::uint8_t* argmax) {
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width);
    const PlaneLayout out = PlaneLayout::cnhw(in.channels, in.images, oh, ow);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i)
        for (std::ptrdiff_t r = 0; r < oh; ++r) {
          const T* top = x + in.at(c, i, 2 * r, 0);
          const T* bottom = top + in.width;
          const std::ptrdiff_t o = out.at(c, i, r, 0);
          // Branch-free so it vectorises: the better of each pair, then the better pair; a
          // strict > at every comparison keeps the first position on ties.
          T* pooled = y + o;
          std::uint8_t* where = argmax + o;
          for (std::ptrdiff_t q = 0; q < ow; ++q) {
            const T a = top[2 * q], b = top[2 * q + 1], c2 = bottom[2 * q], d = bottom[2 * q + 1];
            const bool upper_right = b > a, lower_right = d > c2;
            const T upper = upper_right ? b : a, lower = lower_right ? d : c2;
            const bool lower_wins = lower > upper;
            pooled[q] = lower_wins ? lower : upper;
            where[q] = static_cast<std::uint8_t>(lower_wins ? (lower_right ? 3 : 2) : (upper_right ? 1 : 0));
          }
        }
  }

  /// dx (the whole input, zeroed here) from dy and the kept argmax.
  template <class T>
  static void backward(const T* dy, const std::uint8_t* argmax, const PlaneLayout& in, T* dx) {
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width);
    const PlaneLayout out = PlaneLayout::cnhw(in.channels, in.images, oh, ow);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i) {
        T* plane = dx + in.at(c, i, 0, 0);
        for (std::ptrdiff_t p = 0; p < in.height * in.width; ++p) plane[p] = T(0);
        for (std::ptrdiff_t r = 0; r < oh; ++r)
          for (std::ptrdiff_t q = 0; q < ow; ++q) {
            const std::ptrdiff_t o = out.at(c, i, r, q);
            const std::ptrdiff_t dy_row = argmax[o] >> 1, dx_col = argmax[o] & 1;
            plane[(2 * r + dy_row) * in.width + 2 * q + dx_col] = dy[o];
          }
      }
  }
};

}  // namespace distopt::nn
