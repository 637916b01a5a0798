#include <catch2/catch.hpp>

#include <cmath>

#include "distopt/core/parallel.hpp"
#include "distopt/data/statistics.hpp"
#include "../support/data.hpp"

using namespace distopt::data;

TEST_CASE("channel_statistics matches a direct two-pass computation", "[data][statistics]") {
  auto data = test_support::random_images(std::vector<std::uint8_t>(300, 0), 11);
  // Different distributions per channel: the blue plane is darker and narrower.
  for (std::size_t i = 0; i < data.size(); ++i)
    for (std::size_t k = 0; k < 1024; ++k) {
      auto& b = data.images.data()[i * 3072 + 2 * 1024 + k];
      b = static_cast<std::uint8_t>(b / 4);
    }
  const ChannelStats stats = channel_statistics(data);
  for (std::size_t c = 0; c < 3; ++c) {
    long double sum = 0;
    std::size_t count = 0;
    for (std::size_t i = 0; i < data.size(); ++i)
      for (std::size_t k = 0; k < 1024; ++k, ++count) sum += data.images.data()[i * 3072 + c * 1024 + k] / 255.0L;
    const long double mean = sum / count;
    long double squares = 0;
    for (std::size_t i = 0; i < data.size(); ++i)
      for (std::size_t k = 0; k < 1024; ++k) {
        const long double d = data.images.data()[i * 3072 + c * 1024 + k] / 255.0L - mean;
        squares += d * d;
      }
    const long double deviation = std::sqrt(squares / count);
    INFO("channel " << c);
    CHECK(stats.mean[c] == Approx(static_cast<double>(mean)).epsilon(1e-14));
    CHECK(stats.std[c] == Approx(static_cast<double>(deviation)).epsilon(1e-12));
  }
  CHECK(stats.mean[2] < stats.mean[0] / 2);
}

TEST_CASE("channel_statistics: the same bits for any number of threads", "[data][statistics]") {
  const auto data = test_support::random_images(std::vector<std::uint8_t>(1000, 0), 2);
  ChannelStats one, two;
  {
    distopt::parallel::ThreadCount threads(1);
    one = channel_statistics(data);
  }
  {
    distopt::parallel::ThreadCount threads(2);
    two = channel_statistics(data);
  }
  CHECK(one == two);
}

TEST_CASE("channel_statistics: constant planes and no images", "[data][statistics]") {
  auto data = test_support::random_images(std::vector<std::uint8_t>(3, 0), 1);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t k = 0; k < 3072; ++k) data.images.data()[i * 3072 + k] = k < 1024 ? 255 : (k < 2048 ? 0 : 51);
  const auto stats = channel_statistics(data);
  CHECK(stats.mean[0] == 1.0);
  CHECK(stats.mean[1] == 0.0);
  CHECK(stats.mean[2] == Approx(0.2));
  CHECK(stats.channels() == 3);
  CHECK(stats.std == std::vector<double>{0.0, 0.0, 0.0});
  LabelledImages empty;
  CHECK_THROWS_WITH(channel_statistics(empty), Catch::Matchers::Contains("no images"));
}

TEST_CASE("channel_statistics: one grey channel of 28 x 28 (Fashion-MNIST's geometry)", "[data][statistics]") {
  const ImageShape shape{1, 28, 28};
  const auto data = test_support::random_images(std::vector<std::uint8_t>(50, 0), 3, shape, false);
  const ChannelStats stats = channel_statistics(data.images);
  REQUIRE(stats.channels() == 1);
  REQUIRE(stats.std.size() == 1);
  long double sum = 0, squares = 0;
  for (const std::uint8_t v : data.images) sum += v / 255.0L;
  const long double count = static_cast<long double>(data.images.size());
  const long double mean = sum / count;
  for (const std::uint8_t v : data.images) squares += (v / 255.0L - mean) * (v / 255.0L - mean);
  CHECK(stats.mean[0] == Approx(static_cast<double>(mean)).epsilon(1e-14));
  CHECK(stats.std[0] == Approx(static_cast<double>(std::sqrt(squares / count))).epsilon(1e-12));
  // Uniform random bytes: mean near 127.5 / 255, std near 73.9 / 255.
  CHECK(stats.mean[0] == Approx(0.5).margin(0.01));
  CHECK(stats.std[0] == Approx(73.9 / 255).margin(0.01));
  // A plane too large for the exact 32-bit inner sums is refused.
  const auto large = xt::xtensor<std::uint8_t, 4>::from_shape({1, 1, 257, 257});
  CHECK_THROWS_WITH(channel_statistics(large), Catch::Matchers::Contains("too large"));
}
