// Small labelled image sets for the data tests: random pixels, labels chosen by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "distopt/core/rng.hpp"
#include "distopt/data/cifar.hpp"
#include "distopt/data/images.hpp"

namespace test_support {

/// `labels.size()` images of `shape` of random bytes (from `seed`) with the given fine labels;
/// with `coarse`, the coarse label is fine / 5, as in CIFAR-100's grouping of 5 fine classes per
/// coarse class, else there are no coarse labels (as in Fashion-MNIST).
inline distopt::data::LabelledImages random_images(const std::vector<std::uint8_t>& labels, std::uint64_t seed,
                                                   const distopt::data::ImageShape& shape, bool coarse = true) {
  distopt::data::LabelledImages data;
  data.images = xt::xtensor<std::uint8_t, 4>::from_shape({labels.size(), shape.channels, shape.height, shape.width});
  distopt::Rng rng(seed);
  for (auto& pixel : data.images) pixel = static_cast<std::uint8_t>(rng.below(256));
  data.fine = labels;
  if (coarse)
    for (const auto label : labels) data.coarse.push_back(static_cast<std::uint8_t>(label / 5));
  return data;
}

/// CIFAR-100-shaped images (3 x 32 x 32) with fine and coarse labels, as random_images above.
inline distopt::data::LabelledImages random_images(const std::vector<std::uint8_t>& labels, std::uint64_t seed) {
  namespace cifar100 = distopt::data::cifar100;
  return random_images(labels, seed, {cifar100::channels, cifar100::height, cifar100::width});
}

/// `per_class[c]` samples of class c, interleaved in a fixed, uneven order.
inline std::vector<std::uint8_t> class_labels(const std::vector<std::size_t>& per_class) {
  std::vector<std::uint8_t> labels;
  std::vector<std::size_t> left = per_class;
  for (bool any = true; any;) {
    any = false;
    for (std::size_t c = 0; c < left.size(); ++c)
      if (left[c] > 0) {
        labels.push_back(static_cast<std::uint8_t>(c));
        --left[c];
        any = true;
      }
  }
  return labels;
}

}  // namespace test_support
