// 2 x 2 max pooling with stride 2, keeping the argmax for the backward pass; the ReLU after it
// fused in.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "distopt/nn/conv2d.hpp"
#include "distopt/nn/detail/pool_simd.hpp"

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

  /// y (laid out as `out`) and the argmax from x (laid out as `in`).
  template <class T>
  static void forward(const T* x, const PlaneLayout& in, T* y, const PlaneLayout& out, std::uint8_t* argmax,
                      bool relu) {
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i)
        for (std::ptrdiff_t r = 0; r < oh; ++r) {
          const T* top = x + in.at(c, i, 2 * r, 0);
          pool_row(top, top + in.width, ow, relu, y + out.at(c, i, r, 0), argmax + ((c * in.images + i) * oh + r) * ow);
        }
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
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i) {
        for (std::ptrdiff_t r = 0; r < oh; ++r) {
          T* top = dx + in.at(c, i, 2 * r, 0);
          T* bottom = top + in.width;
          unpool_row(dy + out.at(c, i, r, 0), y != nullptr ? y + out.at(c, i, r, 0) : nullptr,
                     argmax + ((c * in.images + i) * oh + r) * ow, ow, top, bottom);
          if (in.width % 2 != 0) top[in.width - 1] = bottom[in.width - 1] = T(0);
        }
        if (in.height % 2 != 0) {
          T* last = dx + in.at(c, i, in.height - 1, 0);
          for (std::ptrdiff_t x = 0; x < in.width; ++x) last[x] = T(0);
        }
      }
  }
  /// Channel-major dy, no ReLU.
  template <class T>
  static void backward(const T* dy, const std::uint8_t* argmax, const PlaneLayout& in, T* dx) {
    backward(dy, PlaneLayout::cnhw(in.channels, in.images, out_size(in.height), out_size(in.width)), argmax,
             static_cast<const T*>(nullptr), in, dx);
  }

 private:
  // One output row: windows q < ow over the row pair (top, bottom). The better of each pair, then
  // the better pair; a strict > at every comparison keeps the first position on ties, as
  // PyTorch's scan does. argmax = 2 [lower pair wins] + [the winning pair's right one wins].
  template <class T>
  static void pool_row(const T* top, const T* bottom, std::ptrdiff_t ow, bool relu, T* pooled, std::uint8_t* where) {
    std::ptrdiff_t q = 0;
    if constexpr (std::is_same_v<T, float>) q = detail::pool_windows(top, bottom, ow, relu, pooled, where);
    for (; q < ow; ++q) {
      const T a = top[2 * q], b = top[2 * q + 1], c = bottom[2 * q], d = bottom[2 * q + 1];
      const bool upper_right = b > a, lower_right = d > c;
      const T upper = upper_right ? b : a, lower = lower_right ? d : c;
      const bool lower_wins = lower > upper;
      const T best = lower_wins ? lower : upper;
      pooled[q] = relu && !(best > T(0)) ? T(0) : best;
      where[q] = static_cast<std::uint8_t>(lower_wins ? 2 + lower_right : upper_right);
    }
  }

  // The gradient of one output row, routed to its windows' maxima; every element of the row pair
  // is written (zero where no maximum was).
  template <class T>
  static void unpool_row(const T* g, const T* kept, const std::uint8_t* where, std::ptrdiff_t ow, T* top, T* bottom) {
    std::ptrdiff_t q = 0;
    if constexpr (std::is_same_v<T, float>) q = detail::unpool_windows(g, kept, where, ow, top, bottom);
    for (; q < ow; ++q) {
      const T v = kept == nullptr || kept[q] > T(0) ? g[q] : T(0);
      const std::uint8_t w = where[q];
      top[2 * q] = w == 0 ? v : T(0);
      top[2 * q + 1] = w == 1 ? v : T(0);
      bottom[2 * q] = w == 2 ? v : T(0);
      bottom[2 * q + 1] = w == 3 ? v : T(0);
    }
  }
};

}  // namespace distopt::nn
