// From uint8 pixels to the float input of the model: normalisation and augmentation.
//
// The pipeline is torchvision's
//   RandomCrop(size, padding) -> RandomHorizontalFlip() -> ToTensor() -> Normalize(mean, std)
// (CIFAR-100: RandomCrop(32, padding=4); images of any size and channel count)
// fused into one pass per image: the crop and flip only move pixels, so they become index
// arithmetic, and ToTensor + Normalize map each of the 256 byte values of a channel to one float,
// so they become a table lookup that gives exactly PyTorch's float32 result,
//   (float(v) / 255 - mean_c) / std_c,
// for every pixel, padding included (torchvision pads the uint8 image with 0).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/data/images.hpp"
#include "distopt/data/statistics.hpp"

namespace distopt::data {

/// Per-channel normalisation x -> (x / 255 - mean_c) / std_c, as torchvision's ToTensor followed
/// by Normalize(mean, std), in float32 like PyTorch. Throws std::invalid_argument naming the
/// channel for a non-finite mean or a std that is not positive, or for no channels.
class Normalizer {
 public:
  using Table = std::vector<std::array<float, 256>>;  ///< one lookup table per channel

  /// The identity scale (mean 0, std 1) on `channels` channels.
  explicit Normalizer(std::size_t channels = 3)
      : Normalizer(ChannelStats{std::vector<double>(channels, 0.0), std::vector<double>(channels, 1.0)}) {}
  explicit Normalizer(const ChannelStats& stats) : stats_(stats), table_(stats.mean.size()) {
    require(!stats.mean.empty() && stats.mean.size() == stats.std.size(), "Normalizer: ", stats.mean.size(), " means and ",
            stats.std.size(), " standard deviations; need one of each per channel");
    for (std::size_t c = 0; c < stats.mean.size(); ++c) {
      require(std::isfinite(stats.mean[c]), "Normalizer: mean of channel ", c, " is not finite: ", stats.mean[c]);
      require(std::isfinite(stats.std[c]) && stats.std[c] > 0.0, "Normalizer: std of channel ", c,
              " must be positive and finite, got ", stats.std[c]);
      const auto mean = static_cast<float>(stats.mean[c]);
      const auto std = static_cast<float>(stats.std[c]);
      for (int v = 0; v < 256; ++v) table_[c][static_cast<std::size_t>(v)] = (static_cast<float>(v) / 255.0f - mean) / std;
    }
  }

  [[nodiscard]] const ChannelStats& stats() const noexcept { return stats_; }
  [[nodiscard]] std::size_t channels() const noexcept { return table_.size(); }
  /// The float a byte value `v` of channel `c` becomes.
  [[nodiscard]] float operator()(std::size_t c, std::uint8_t v) const noexcept { return table_[c][v]; }
  [[nodiscard]] const Table& table() const noexcept { return table_; }

 private:
  ChannelStats stats_;
  Table table_;
};

/// Per-feature standardisation x_j -> (x_j - mean_j) / std_j in float32, for data sets of float
/// features (scikit-learn's StandardScaler; a feature of deviation 0 is only centred, as there).
/// Default-constructed, it is the identity.
class FeatureNormalizer {
 public:
  FeatureNormalizer() = default;
  /// Throws std::invalid_argument naming the feature for a non-finite mean or deviation.
  explicit FeatureNormalizer(const FeatureStats& stats) : stats_(stats) {
    require(stats.mean.size() == stats.std.size(), "FeatureNormalizer: ", stats.mean.size(), " means and ", stats.std.size(),
            " standard deviations; need one of each per feature");
    for (std::size_t j = 0; j < stats.mean.size(); ++j) {
      require(std::isfinite(stats.mean[j]) && std::isfinite(stats.std[j]) && stats.std[j] >= 0, "FeatureNormalizer: feature ", j,
              " has mean ", stats.mean[j], " and std ", stats.std[j]);
      mean_.push_back(static_cast<float>(stats.mean[j]));
      std_.push_back(stats.std[j] > 0 ? static_cast<float>(stats.std[j]) : 1.0f);
    }
  }
  [[nodiscard]] bool identity() const noexcept { return mean_.empty(); }
  [[nodiscard]] std::size_t features() const noexcept { return mean_.size(); }
  [[nodiscard]] const FeatureStats& stats() const noexcept { return stats_; }
  /// Standardises `count` samples of features() values each, in place.
  void apply(float* x, std::size_t count) const {
    const std::size_t d = mean_.size();
    for (std::size_t k = 0; k < count; ++k)
      for (std::size_t j = 0; j < d; ++j) x[k * d + j] = (x[k * d + j] - mean_[j]) / std_[j];
  }

 private:
  FeatureStats stats_;
  std::vector<float> mean_, std_;
};

/// Random crop with zero padding and random horizontal flip, the augmentation of the study
/// (as torchvision's RandomCrop(32, padding) and RandomHorizontalFlip(0.5)).
struct Augmentation {
  int padding = 4;
  bool horizontal_flip = true;

  friend bool operator==(const Augmentation&, const Augmentation&) = default;
};

/// Where one sample's crop starts in the padded image (top, left in [0, 2 * padding]) and
/// whether it is mirrored. The identity is {padding, padding, false}.
struct CropFlip {
  int top = 0;
  int left = 0;
  bool flip = false;

  friend bool operator==(const CropFlip&, const CropFlip&) = default;
};

namespace detail::transforms {
inline constexpr std::uint64_t stream = 0xA06;
}

/// The crop and flip of sample `sample` in epoch `epoch`: a pure function of (seed, epoch,
/// sample), drawn from its own Philox stream, so an image is augmented the same way whichever
/// thread, worker or batch prepares it. Throws std::invalid_argument for a padding outside [0, 32].
[[nodiscard]] inline CropFlip draw_crop_flip(const Augmentation& augmentation, std::uint64_t seed,
                                             std::uint64_t epoch, std::uint64_t sample) {
  require(augmentation.padding >= 0 && augmentation.padding <= 32, "Augmentation.padding must be in [0, 32], got ",
          augmentation.padding);
  Rng rng = Rng(seed).split({detail::transforms::stream, epoch, sample});
  const auto positions = static_cast<std::uint32_t>(2 * augmentation.padding + 1);
  CropFlip cf;
  cf.top = static_cast<int>(rng.below(positions));
  cf.left = static_cast<int>(rng.below(positions));
  cf.flip = augmentation.horizontal_flip && rng.bernoulli(0.5);
  return cf;
}

/// Writes one float image of `shape` to `out` from the uint8 image `in` of the same shape: crop
/// the image padded by `padding` zeros at (crop.top, crop.left), mirror it if crop.flip,
/// normalise. The normalizer must have `shape.channels` channels (the loader checks it once).
inline void transform_image(const std::uint8_t* in, float* out, const Normalizer& normalizer, const ImageShape& shape,
                            int padding = 0, CropFlip crop = {}) {
  const int height = static_cast<int>(shape.height);
  const int width = static_cast<int>(shape.width);
  const int dy = crop.top - padding;
  const int dx = crop.left - padding;
  // Output columns [x_begin, x_end) read a pixel of the image (column x + dx, or width - 1 - x + dx
  // when mirrored); the others read the zero padding.
  const int x_begin = std::clamp(crop.flip ? dx : -dx, 0, width);
  const int x_end = std::clamp(crop.flip ? width + dx : width - dx, 0, width);
  for (std::size_t c = 0; c < shape.channels; ++c) {
    const auto& lut = normalizer.table()[c];
    const float pad = lut[0];
    const std::uint8_t* plane = in + c * shape.plane();
    for (int y = 0; y < height; ++y) {
      float* row_out = out + (c * shape.height + static_cast<std::size_t>(y)) * shape.width;
      const int sy = y + dy;
      if (sy < 0 || sy >= height) {
        std::fill(row_out, row_out + width, pad);
        continue;
      }
      const std::uint8_t* row_in = plane + sy * width;
      std::fill(row_out, row_out + x_begin, pad);
      if (crop.flip) {
        for (int x = x_begin; x < x_end; ++x) row_out[x] = lut[row_in[width - 1 - x + dx]];
      } else {
        for (int x = x_begin; x < x_end; ++x) row_out[x] = lut[row_in[x + dx]];
      }
      std::fill(row_out + x_end, row_out + width, pad);
    }
  }
}

/// The crop and flip of transform_image on a float sample of shape [channels, height, width],
/// the padding filled with zeros of the data's own scale (before normalisation, as torchvision's
/// RandomCrop on a tensor): `in` and `out` must not overlap.
inline void crop_flip(const float* in, float* out, const ImageShape& shape, int padding, CropFlip crop) {
  const int height = static_cast<int>(shape.height);
  const int width = static_cast<int>(shape.width);
  const int dy = crop.top - padding;
  const int dx = crop.left - padding;
  for (std::size_t c = 0; c < shape.channels; ++c)
    for (int y = 0; y < height; ++y) {
      float* row_out = out + (c * shape.height + static_cast<std::size_t>(y)) * shape.width;
      const int sy = y + dy;
      for (int x = 0; x < width; ++x) {
        const int sx = crop.flip ? width - 1 - x + dx : x + dx;
        row_out[x] = sy < 0 || sy >= height || sx < 0 || sx >= width
                         ? 0.0f
                         : in[(c * shape.height + static_cast<std::size_t>(sy)) * shape.width + static_cast<std::size_t>(sx)];
      }
    }
}

/// Throws std::invalid_argument naming `who` unless `normalizer` has one table per channel of `shape`.
inline void check_channels(const Normalizer& normalizer, const ImageShape& shape, std::string_view who) {
  require(normalizer.channels() == shape.channels, who, ": the normalizer has ", normalizer.channels(),
          " channel(s), the images ", shape.channels);
}

/// The whole of `images` normalised, without augmentation: [N, C, H, W] float32, what an
/// evaluation pass feeds the model. Parallel over images; the same bits for any thread count.
[[nodiscard]] inline xt::xtensor<float, 4> normalize(const xt::xtensor<std::uint8_t, 4>& images, const Normalizer& normalizer) {
  auto out = xt::xtensor<float, 4>::from_shape(images.shape());
  const std::uint8_t* in = images.data();
  float* dst = out.data();
  const ImageShape shape{images.shape()[1], images.shape()[2], images.shape()[3]};
  check_channels(normalizer, shape, "normalize");
  const std::size_t pixels = shape.pixels();
  parallel::for_each_chunk(static_cast<std::ptrdiff_t>(images.shape()[0]), 64, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
    for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i)
      transform_image(in + i * pixels, dst + i * pixels, normalizer, shape);
  });
  return out;
}

}  // namespace distopt::data
