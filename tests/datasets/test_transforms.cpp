#include <catch2/catch.hpp>

#include <array>
#include <cstring>
#include <set>

#include "distopt/core/parallel.hpp"
#include "distopt/data/transforms.hpp"
#include "../support/data.hpp"

using namespace distopt::data;
using Catch::Matchers::Contains;

namespace {

const ChannelStats stats{{0.507, 0.4865, 0.441}, {0.267, 0.256, 0.276}};

/// The torchvision pipeline written out step by step: pad with zeros into a 40x40 image, cut the
/// 32x32 window at (top, left), mirror, then ToTensor and Normalize in float32.
std::vector<float> reference(const std::uint8_t* image, int padding, CropFlip crop) {
  const int size = 32 + 2 * padding;
  std::vector<float> out(3072);
  for (int c = 0; c < 3; ++c) {
    std::vector<std::uint8_t> padded(static_cast<std::size_t>(size * size), 0);
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x)
        padded[static_cast<std::size_t>((y + padding) * size + x + padding)] = image[c * 1024 + y * 32 + x];
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) {
        const int cx = crop.flip ? 31 - x : x;
        const std::uint8_t v = padded[static_cast<std::size_t>((y + crop.top) * size + cx + crop.left)];
        const float t = static_cast<float>(v) / 255.0f;
        out[static_cast<std::size_t>(c * 1024 + y * 32 + x)] =
            (t - static_cast<float>(stats.mean[static_cast<std::size_t>(c)])) / static_cast<float>(stats.std[static_cast<std::size_t>(c)]);
      }
  }
  return out;
}

}  // namespace

TEST_CASE("transform_image equals pad, crop, flip, ToTensor, Normalize done one by one", "[data][transforms]") {
  const auto data = test_support::random_images({0}, 4);
  const Normalizer normalizer(stats);
  std::vector<float> out(3072);
  int compared = 0;
  for (const int padding : {0, 4, 7})
    for (int top = 0; top <= 2 * padding; ++top)
      for (int left = 0; left <= 2 * padding; ++left)
        for (const bool flip : {false, true}) {
          const CropFlip crop{top, left, flip};
          transform_image(data.images.data(), out.data(), normalizer, padding, crop);
          const auto expected = reference(data.images.data(), padding, crop);
          INFO("padding " << padding << " top " << top << " left " << left << " flip " << flip);
          REQUIRE(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
          ++compared;
        }
  CHECK(compared == 2 * (1 + 81 + 225));
}

TEST_CASE("Normalizer: bad statistics name the channel", "[data][transforms]") {
  ChannelStats bad = stats;
  bad.std[1] = 0.0;
  CHECK_THROWS_WITH(Normalizer(bad), Contains("std of channel 1"));
  bad = stats;
  bad.mean[2] = std::nan("");
  CHECK_THROWS_WITH(Normalizer(bad), Contains("mean of channel 2"));
}

TEST_CASE("draw_crop_flip: a pure function of seed, epoch and sample, covering every crop", "[data][transforms]") {
  const Augmentation aug{};
  CHECK(draw_crop_flip(aug, 1, 2, 3) == draw_crop_flip(aug, 1, 2, 3));
  std::set<std::pair<int, int>> offsets;
  int flips = 0, differs_by_epoch = 0;
  constexpr int samples = 4000;
  for (int s = 0; s < samples; ++s) {
    const CropFlip cf = draw_crop_flip(aug, 7, 0, static_cast<std::uint64_t>(s));
    REQUIRE((cf.top >= 0 && cf.top <= 8 && cf.left >= 0 && cf.left <= 8));
    offsets.insert({cf.top, cf.left});
    flips += cf.flip ? 1 : 0;
    differs_by_epoch += draw_crop_flip(aug, 7, 1, static_cast<std::uint64_t>(s)) == cf ? 0 : 1;
  }
  CHECK(offsets.size() == 81);
  CHECK(flips > samples * 45 / 100);
  CHECK(flips < samples * 55 / 100);
  CHECK(differs_by_epoch > samples * 9 / 10);  // two draws agree with probability 1/162
  const CropFlip no_flip = draw_crop_flip({.padding = 2, .horizontal_flip = false}, 7, 0, 1);
  CHECK_FALSE(no_flip.flip);
  CHECK(no_flip.top <= 4);
  CHECK_THROWS_WITH(draw_crop_flip({.padding = 33}, 0, 0, 0), Contains("padding"));
}

TEST_CASE("normalize: every image as transform_image without augmentation, any thread count", "[data][transforms]") {
  const auto data = test_support::random_images(std::vector<std::uint8_t>(150, 0), 8);
  const Normalizer normalizer(stats);
  xt::xtensor<float, 4> one, two;
  {
    distopt::parallel::ThreadCount threads(1);
    one = normalize(data.images, normalizer);
  }
  {
    distopt::parallel::ThreadCount threads(2);
    two = normalize(data.images, normalizer);
  }
  REQUIRE(one.shape() == data.images.shape());
  CHECK(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
  const auto expected = reference(data.images.data() + 149 * 3072, 0, {});
  CHECK(std::memcmp(one.data() + 149 * 3072, expected.data(), 3072 * sizeof(float)) == 0);
}
