// The library's models sized from a data set's description, so a model and its data cannot
// disagree: LeNet-5 for an image set in one call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "distopt/data/images.hpp"
#include "distopt/nn/lenet5.hpp"

namespace distopt::train {

/// LeNet5Options for the images `info` describes (channels, square size, classes): the classic
/// LeNet-5 on 28 x 28 images (Fashion-MNIST, MNIST), the hsu one on 32 x 32 (CIFAR-100), with
/// initial weights from `seed` (nn::LeNet5Options::for_images).
[[nodiscard]] inline nn::LeNet5Options model_options(const data::DatasetInfo& info, std::uint64_t seed = 0) {
  return nn::LeNet5Options::for_images(static_cast<std::ptrdiff_t>(info.shape.channels), static_cast<std::ptrdiff_t>(info.shape.height),
                                       static_cast<std::ptrdiff_t>(info.shape.width), static_cast<std::ptrdiff_t>(info.classes), seed);
}

}  // namespace distopt::train
