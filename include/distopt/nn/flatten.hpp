// Flatten: from the channel-major chunks the convolutions produce to one row per image.
#pragma once

#include <algorithm>
#include <cstddef>

#include "distopt/nn/conv2d.hpp"

namespace distopt::nn {

/// torch.flatten(x, 1) for a chunk held channel-major: image i of the chunk becomes row
/// `first_row + i` of `rows` (width channels * height * width), in PyTorch's per-image order
/// (channel, row, column), so fc1's weights are PyTorch's. Backward is the inverse copy.
struct Flatten {
  template <class T>
  static void forward(const T* x, const PlaneLayout& in, T* rows, std::ptrdiff_t first_row) {
    const std::ptrdiff_t plane = in.height * in.width, width = in.channels * plane;
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i)
        std::copy_n(x + in.at(c, i, 0, 0), plane, rows + (first_row + i) * width + c * plane);
  }
  template <class T>
  static void backward(const T* d_rows, std::ptrdiff_t first_row, const PlaneLayout& in, T* dx) {
    const std::ptrdiff_t plane = in.height * in.width, width = in.channels * plane;
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i)
        std::copy_n(d_rows + (first_row + i) * width + c * plane, plane, dx + in.at(c, i, 0, 0));
  }
};

}  // namespace distopt::nn
