// A tiny learnable classification task for training tests: 10 classes, each image a noisy copy
// of its class's random template, and a small classic LeNet-5 to learn it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "distopt/data/statistics.hpp"
#include "distopt/data/transforms.hpp"
#include "distopt/nn/lenet5.hpp"
#include "data.hpp"

namespace test_support {

/// `n` images, label i % 10, three parts template to one part noise (from `seed`).
inline distopt::data::LabelledImages template_images(std::size_t n, std::uint64_t seed) {
  std::vector<std::uint8_t> labels;
  for (std::size_t i = 0; i < n; ++i) labels.push_back(static_cast<std::uint8_t>(i % 10));
  auto set = random_images(labels, seed);
  const auto templates = random_images({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 99);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t k = 0; k < 3072; ++k) {
      auto& p = set.images.data()[i * 3072 + k];
      p = static_cast<std::uint8_t>((3 * templates.images.data()[labels[i] * 3072 + k] + p) / 4);
    }
  return set;
}

/// The classic (6/16-channel) LeNet-5 with 10 classes: fast enough for many short runs.
inline distopt::nn::LeNet5<float> tiny_lenet(std::uint64_t seed = 1) {
  return distopt::nn::LeNet5<float>({.preset = distopt::nn::Preset::classic, .classes = 10, .seed = seed});
}

/// The local trainers' shared task: 96 template images (seed 1), built once, and its normaliser.
inline const distopt::data::LabelledImages& tiny_train_set() {
  static const auto set = template_images(96, 1);
  return set;
}
inline const distopt::data::Normalizer& tiny_normalizer() {
  static const distopt::data::Normalizer n(distopt::data::channel_statistics(tiny_train_set()));
  return n;
}

/// A model's flat values (padding included), to compare runs bit for bit.
template <class Model>
std::vector<float> values_of(const Model& m) {
  const auto v = m.parameters().values();
  return {v.data(), v.data() + v.size()};
}

}  // namespace test_support
