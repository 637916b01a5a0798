// Per-channel mean and standard deviation of a set of images, the constants of the normalisation.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "distopt/core/error.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/data/cifar.hpp"

namespace distopt::data {

/// Mean and standard deviation of each colour channel, on the [0, 1] scale of torchvision's
/// ToTensor (pixel / 255), over every pixel of every image:
///   mean_c = sum x / (N H W),  std_c = sqrt(sum x^2 / (N H W) - mean_c^2)
/// (the population deviation, numpy's `x.std(axis=(0, 2, 3))`, which the study normalises with).
struct ChannelStats {
  std::array<double, cifar100::channels> mean{};
  std::array<double, cifar100::channels> std{};

  friend bool operator==(const ChannelStats&, const ChannelStats&) = default;
};

/// The statistics of `images` ([N, 3, 32, 32] uint8), meant for the training split only, so no
/// validation or test pixel leaks into the normalisation. The sums of x and x^2 are accumulated
/// in 64-bit integers, exactly, so the result is the same bits for any number of threads and the
/// only rounding is in the final double arithmetic. Throws std::invalid_argument for no images.
[[nodiscard]] inline ChannelStats channel_statistics(const xt::xtensor<std::uint8_t, 4>& images) {
  const std::size_t n = images.shape()[0];
  require(n > 0, "channel_statistics: no images");
  constexpr std::size_t channels = cifar100::channels;
  constexpr std::size_t plane = cifar100::height * cifar100::width;
  struct Sums {
    std::array<std::uint64_t, channels> sum{}, squares{};
    Sums& operator+=(const Sums& o) {
      for (std::size_t c = 0; c < channels; ++c) sum[c] += o.sum[c], squares[c] += o.squares[c];
      return *this;
    }
  };
  const std::uint8_t* pixels = images.data();
  // Per image at most 1024 * 255^2 < 2^27 per channel: 32-bit inner sums cannot overflow.
  const Sums total = parallel::ordered_sum<Sums>(
      static_cast<std::ptrdiff_t>(n), 256, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
        Sums s;
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
  ChannelStats stats;
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

}  // namespace distopt::data
