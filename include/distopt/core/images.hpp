// A view of a batch of images: what the data pipeline hands out and a model reads.
#pragma once

#include <cstddef>

#include "distopt/core/error.hpp"

namespace distopt {

/// A read-only batch of images in NCHW order (PyTorch's): image i, channel c, row y, column x at
/// data[((i * channels + c) * height + y) * width + x].
template <class T>
struct Images {
  const T* data = nullptr;
  std::ptrdiff_t count = 0;
  std::ptrdiff_t channels = 0;
  std::ptrdiff_t height = 0;
  std::ptrdiff_t width = 0;

  [[nodiscard]] std::ptrdiff_t image_size() const noexcept { return channels * height * width; }
  /// Images [begin, end) of this batch.
  [[nodiscard]] Images slice(std::ptrdiff_t begin, std::ptrdiff_t end) const {
    require(begin >= 0 && begin <= end && end <= count, "Images::slice: [", begin, ", ", end, ") outside [0, ", count, ")");
    return {data + begin * image_size(), end - begin, channels, height, width};
  }
};

}  // namespace distopt
