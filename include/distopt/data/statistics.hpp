// Per-channel mean and standard deviation of a set of images, the constants of the normalisation.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/data/dataset.hpp"
#include "distopt/data/images.hpp"

namespace distopt::data {

/// Mean and standard deviation of each colour channel, on the [0, 1] scale of torchvision's
/// ToTensor (pixel / 255), over every pixel of every image:
///   mean_c = sum x / (N H W),  std_c = sqrt(sum x^2 / (N H W) - mean_c^2)
/// (the population deviation, numpy's `x.std(axis=(0, 2, 3))`, which the study normalises with).
struct ChannelStats {
  std::vector<double> mean{};  ///< one value per channel
  std::vector<double> std{};

  [[nodiscard]] std::size_t channels() const noexcept { return mean.size(); }

  friend bool operator==(const ChannelStats&, const ChannelStats&) = default;
};

/// The statistics of `images` ([N, C, H, W] uint8), meant for the training split only, so no
/// validation or test pixel leaks into the normalisation. The sums of x and x^2 are accumulated
/// in 64-bit integers, exactly, so the result is the same bits for any number of threads and the
/// only rounding is in the final double arithmetic. Throws std::invalid_argument for no images.
[[nodiscard]] inline ChannelStats channel_statistics(const xt::xtensor<std::uint8_t, 4>& images) {
  const std::size_t n = images.shape()[0];
  require(n > 0, "channel_statistics: no images");
  const std::size_t channels = images.shape()[1];
  const std::size_t plane = images.shape()[2] * images.shape()[3];
  require(channels > 0 && plane > 0, "channel_statistics: images of shape [", n, ", ", channels, ", ", images.shape()[2], ", ",
          images.shape()[3], "] hold no pixels");
  // 32-bit inner sums per image hold plane * 255^2 exactly up to 66,000 pixels a plane.
  require(plane <= 66'000, "channel_statistics: planes of ", plane, " pixels are too large for exact 32-bit sums");
  struct Sums {
    std::vector<std::uint64_t> sum, squares;
    Sums& operator+=(const Sums& o) {
      if (sum.empty()) sum.assign(o.sum.size(), 0), squares.assign(o.squares.size(), 0);
      for (std::size_t c = 0; c < o.sum.size(); ++c) sum[c] += o.sum[c], squares[c] += o.squares[c];
      return *this;
    }
  };
  const std::uint8_t* pixels = images.data();
  const Sums total = parallel::ordered_sum<Sums>(
      static_cast<std::ptrdiff_t>(n), 256, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
        Sums s{std::vector<std::uint64_t>(channels, 0), std::vector<std::uint64_t>(channels, 0)};
        for (auto i = static_cast<std::size_t>(begin); i < static_cast<std::size_t>(end); ++i)
          for (std::size_t c = 0; c < channels; ++c) {
            const std::uint8_t* p = pixels + (i * channels + c) * plane;
            std::uint32_t sum = 0, squares = 0;
            for (std::size_t k = 0; k < plane; ++k) {
              sum += p[k];
              squares += std::uint32_t{p[k]} * p[k];
            }
            s.sum[c] += sum;
            s.squares[c] += squares;
          }
        return s;
      });
  ChannelStats stats{std::vector<double>(channels), std::vector<double>(channels)};
  const double count = static_cast<double>(n * plane);
  for (std::size_t c = 0; c < channels; ++c) {
    const double mean = static_cast<double>(total.sum[c]) / count;
    const double mean_square = static_cast<double>(total.squares[c]) / count;
    stats.mean[c] = mean / 255.0;
    stats.std[c] = std::sqrt(std::max(0.0, mean_square - mean * mean)) / 255.0;
  }
  return stats;
}

[[nodiscard]] inline ChannelStats channel_statistics(const LabelledImages& data) { return channel_statistics(data.images); }

/// Mean and standard deviation of every feature (every element of a sample) over a data set,
/// on the data's own scale: what a table is standardised with (scikit-learn's StandardScaler:
/// population deviation).
struct FeatureStats {
  std::vector<double> mean{};  ///< one value per element of a sample
  std::vector<double> std{};

  [[nodiscard]] std::size_t features() const noexcept { return mean.size(); }
  friend bool operator==(const FeatureStats&, const FeatureStats&) = default;
};

/// The statistics of every feature of `data` (meant for the training split only), in two passes
/// (the mean, then the squared deviations from it) in double, over fixed chunks of samples added
/// in order: the same bits for any number of threads. Throws std::invalid_argument for no samples.
template <Dataset D>
[[nodiscard]] FeatureStats feature_statistics(const D& data) {
  const std::size_t n = data.size();
  require(n > 0, "feature_statistics: no samples");
  const auto d = static_cast<std::size_t>(Shape(data.sample_shape()).size());
  const TargetInfo info = data.target_info();
  struct Sums {
    std::vector<double> v;
    Sums& operator+=(const Sums& o) {
      if (v.empty()) v.assign(o.v.size(), 0.0);
      for (std::size_t j = 0; j < o.v.size(); ++j) v[j] += o.v[j];
      return *this;
    }
  };
  constexpr std::ptrdiff_t chunk = 256;
  const auto pass = [&](const std::vector<double>* mean) {
    return parallel::ordered_sum<Sums>(static_cast<std::ptrdiff_t>(n), chunk, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      const auto count = static_cast<std::size_t>(end - begin);
      std::vector<std::size_t> indices(count);
      for (std::size_t k = 0; k < count; ++k) indices[k] = static_cast<std::size_t>(begin) + k;
      std::vector<float> x(count * d);
      std::vector<std::int32_t> classes(info.are_classes() ? count : 0);
      std::vector<float> values(info.are_classes() ? 0 : count * info.width);
      data.copy(indices, x, classes, values);
      Sums s{std::vector<double>(d, 0.0)};
      for (std::size_t k = 0; k < count; ++k)
        for (std::size_t j = 0; j < d; ++j) {
          const double v = static_cast<double>(x[k * d + j]);
          s.v[j] += mean ? (v - (*mean)[j]) * (v - (*mean)[j]) : v;
        }
      return s;
    }).v;
  };
  FeatureStats stats;
  stats.mean = pass(nullptr);
  for (double& m : stats.mean) m /= static_cast<double>(n);
  stats.std = pass(&stats.mean);
  for (double& v : stats.std) v = std::sqrt(v / static_cast<double>(n));
  return stats;
}

}  // namespace distopt::data
