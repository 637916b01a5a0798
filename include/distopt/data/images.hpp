// Labelled uint8 images of any geometry, and the description of a data set that the loader, the
// model and the study read, so one pipeline serves CIFAR-100 (3 x 32 x 32, 100 classes),
// Fashion-MNIST or MNIST (1 x 28 x 28, 10 classes) and the synthetic CIFAR-format set alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "distopt/core/error.hpp"
#include "distopt/core/samples.hpp"
#include "distopt/data/dataset.hpp"

namespace distopt::data {

/// Labels are bytes: a function that needs a class count and is not told one allows them all.
inline constexpr std::size_t any_label = 256;

/// The geometry of one image: `channels` planes of `height` x `width` pixels, row-major.
struct ImageShape {
  std::size_t channels = 3;
  std::size_t height = 32;
  std::size_t width = 32;

  [[nodiscard]] std::size_t pixels() const noexcept { return channels * height * width; }
  [[nodiscard]] std::size_t plane() const noexcept { return height * width; }
  friend bool operator==(const ImageShape&, const ImageShape&) = default;
};

/// Images with their labels: `images` is [N, C, H, W] (channel planes, each row-major) and
/// `fine[i]` labels image i. `coarse` holds a second, coarser label per image where the data set
/// has one (CIFAR-100's 20 superclasses) and is empty where it has not (Fashion-MNIST).
struct LabelledImages {
  xt::xtensor<std::uint8_t, 4> images = xt::xtensor<std::uint8_t, 4>::from_shape({0, 3, 32, 32});
  std::vector<std::uint8_t> fine;
  std::vector<std::uint8_t> coarse;

  /// Number of images (the first dimension of `images`).
  [[nodiscard]] std::size_t size() const { return images.shape()[0]; }
  /// The geometry of every image.
  [[nodiscard]] ImageShape shape() const { return {images.shape()[1], images.shape()[2], images.shape()[3]}; }
  /// True when there is a coarse label per image.
  [[nodiscard]] bool has_coarse() const { return !coarse.empty(); }

  // --- the Dataset concept (data/dataset.hpp) ------------------------------------------------
  [[nodiscard]] Shape sample_shape() const {
    const ImageShape s = shape();
    return {static_cast<std::ptrdiff_t>(s.channels), static_cast<std::ptrdiff_t>(s.height), static_cast<std::ptrdiff_t>(s.width)};
  }
  /// Fine labels as class ids; bytes, so at most any_label (256) classes.
  [[nodiscard]] TargetInfo target_info() const { return TargetInfo::class_ids(any_label); }
  /// Pixels as float v / 255 (torchvision's ToTensor) and fine labels.
  void copy(std::span<const std::size_t> indices, std::span<float> features, std::span<std::int32_t> classes,
            std::span<float> /*values*/) const {
    const std::size_t pixels = shape().pixels();
    require(features.size() >= indices.size() * pixels && classes.size() >= indices.size(), "LabelledImages::copy: room for ",
            features.size(), " floats and ", classes.size(), " labels; ", indices.size(), " images need ",
            indices.size() * pixels, " and ", indices.size());
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const std::uint8_t* in = images.data() + indices[k] * pixels;
      float* out = features.data() + k * pixels;
      for (std::size_t p = 0; p < pixels; ++p) out[p] = static_cast<float>(in[p]) / 255.0f;
      classes[k] = fine[indices[k]];
    }
  }
};

/// Room for `n` images of `shape`, their fine labels and, when `coarse`, their coarse labels.
[[nodiscard]] inline LabelledImages allocate_images(std::size_t n, const ImageShape& shape, bool coarse) {
  LabelledImages out;
  out.images = xt::xtensor<std::uint8_t, 4>::from_shape({n, shape.channels, shape.height, shape.width});
  out.fine.resize(n);
  if (coarse) out.coarse.resize(n);
  return out;
}

/// Throws std::invalid_argument naming `who` unless `set` has a fine label per image and either
/// no coarse labels or one per image.
inline void check_labels_match(const LabelledImages& set, std::string_view who) {
  require(set.fine.size() == set.size() && (set.coarse.empty() || set.coarse.size() == set.size()), who, ": the set has ",
          set.size(), " images but ", set.fine.size(), " fine and ", set.coarse.size(), " coarse labels");
}

/// What a data set is: its name (for tables), the geometry of its images, its number of classes
/// and their names (`class_names[label]`).
struct DatasetInfo {
  std::string name;
  ImageShape shape{};
  std::size_t classes = 0;
  std::vector<std::string> class_names{};
};

/// A whole image data set: its description and its two official splits (train, test).
struct ImageDataset {
  DatasetInfo info;
  LabelledImages train, test;
};

}  // namespace distopt::data
