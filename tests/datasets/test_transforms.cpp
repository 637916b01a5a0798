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

/// The torchvision pipeline written out step by step: pad with zeros into a (H + 2p) x (W + 2p)
/// image, cut the H x W window at (top, left), mirror, then ToTensor and Normalize in float32.
std::vector<float> reference(const std::uint8_t* image, int padding, CropFlip crop, const ChannelStats& s = stats,
                             ImageShape shape = {3, 32, 32}) {
  const int h = static_cast<int>(shape.height), w = static_cast<int>(shape.width);
  const int ph = h + 2 * padding, pw = w + 2 * padding;
  std::vector<float> out(shape.pixels());
  for (int c = 0; c < static_cast<int>(shape.channels); ++c) {
    std::vector<std::uint8_t> padded(static_cast<std::size_t>(ph * pw), 0);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        padded[static_cast<std::size_t>((y + padding) * pw + x + padding)] = image[c * h * w + y * w + x];
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int cx = crop.flip ? w - 1 - x : x;
        const std::uint8_t v = padded[static_cast<std::size_t>((y + crop.top) * pw + cx + crop.left)];
        const float t = static_cast<float>(v) / 255.0f;
        out[static_cast<std::size_t>(c * h * w + y * w + x)] =
            (t - static_cast<float>(s.mean[static_cast<std::size_t>(c)])) / static_cast<float>(s.std[static_cast<std::size_t>(c)]);
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
          transform_image(data.images.data(), out.data(), normalizer, data.shape(), padding, crop);
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
  CHECK_THROWS_WITH(Normalizer(ChannelStats{}), Contains("0 means and 0 standard deviations"));
  CHECK_THROWS_WITH(Normalizer(ChannelStats{{0.5, 0.5}, {0.2}}), Contains("2 means and 1 standard deviations"));
  // The identity scale on any number of channels.
  const Normalizer grey(1);
  REQUIRE(grey.channels() == 1);
  CHECK(grey(0, 255) == 1.0f);
  CHECK(grey(0, 0) == 0.0f);
  CHECK(Normalizer().channels() == 3);
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

TEST_CASE("transform_image on one grey 28 x 28 channel and on non-square images", "[data][transforms]") {
  const ChannelStats grey{{0.286}, {0.353}};
  const Normalizer normalizer(grey);
  int compared = 0;
  for (const ImageShape shape : {ImageShape{1, 28, 28}, ImageShape{2, 5, 9}}) {
    const auto data = test_support::random_images({0}, 6, shape, false);
    ChannelStats s = grey;
    s.mean.resize(shape.channels, 0.4);
    s.std.resize(shape.channels, 0.2);
    const Normalizer n(s);
    std::vector<float> out(shape.pixels());
    for (const int padding : {0, 2})
      for (int top = 0; top <= 2 * padding; ++top)
        for (int left = 0; left <= 2 * padding; ++left)
          for (const bool flip : {false, true}) {
            const CropFlip crop{top, left, flip};
            transform_image(data.images.data(), out.data(), n, shape, padding, crop);
            const auto expected = reference(data.images.data(), padding, crop, s, shape);
            INFO("shape " << shape.channels << "x" << shape.height << "x" << shape.width << " padding " << padding << " top " << top
                          << " left " << left << " flip " << flip);
            REQUIRE(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
            ++compared;
          }
  }
  CHECK(compared == 2 * 2 * (1 + 25));
  // normalize checks the channel count once.
  const auto rgb = test_support::random_images({0, 1}, 2);
  CHECK_THROWS_WITH(normalize(rgb.images, normalizer), Contains("normalize: the normalizer has 1 channel(s), the images 3"));
  const auto fashion = test_support::random_images({0, 1}, 2, {1, 28, 28}, false);
  const auto normalized = normalize(fashion.images, normalizer);
  REQUIRE(normalized.shape() == fashion.images.shape());
  const auto expected = reference(fashion.images.data() + 784, 0, {}, grey, {1, 28, 28});
  CHECK(std::memcmp(normalized.data() + 784, expected.data(), 784 * sizeof(float)) == 0);
}
