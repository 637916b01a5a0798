#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <set>

#include "distopt/core/parallel.hpp"
#include "distopt/data/loader.hpp"
#include "../support/data.hpp"

using namespace distopt::data;
using Catch::Matchers::Contains;

namespace {

const Normalizer normalizer(ChannelStats{{0.5, 0.4, 0.3}, {0.25, 0.2, 0.3}});

/// Every batch of epochs [0, epochs) as (samples, labels, pixels), for comparing loaders.
struct Recorded {
  std::vector<std::vector<std::size_t>> samples;
  std::vector<std::vector<std::int32_t>> labels;
  std::vector<std::vector<float>> pixels;
  friend bool operator==(const Recorded&, const Recorded&) = default;
};

Recorded record(Loader& loader, std::uint64_t epochs) {
  Recorded r;
  for (std::uint64_t e = 0; e < epochs; ++e) {
    loader.start_epoch(e);
    while (const Batch* b = loader.next()) {
      r.samples.emplace_back(b->samples().begin(), b->samples().end());
      r.labels.emplace_back(b->labels().begin(), b->labels().end());
      const float* p = b->images().data;
      r.pixels.emplace_back(p, p + b->size() * 3072);
    }
  }
  return r;
}

}  // namespace

TEST_CASE("Loader: every sample once per epoch, in a new order each epoch", "[data][loader]") {
  const auto data = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(10, 10)), 1);
  Loader loader(data, normalizer, {.batch_size = 32, .seed = 5});
  CHECK(loader.batches_per_epoch() == 4);
  std::vector<std::vector<std::size_t>> orders;
  for (std::uint64_t e = 0; e < 3; ++e) {
    loader.start_epoch(e);
    std::vector<std::size_t> order, sizes;
    while (const Batch* b = loader.next()) {
      CHECK(b->position() == LoaderPosition{e, sizes.size()});
      sizes.push_back(b->size());
      order.insert(order.end(), b->samples().begin(), b->samples().end());
      for (std::size_t k = 0; k < b->size(); ++k) REQUIRE(b->labels()[k] == data.fine[b->samples()[k]]);
    }
    CHECK(sizes == std::vector<std::size_t>{32, 32, 32, 4});
    CHECK(loader.next() == nullptr);
    std::vector<std::size_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::size_t> all(100);
    std::iota(all.begin(), all.end(), std::size_t{0});
    CHECK(sorted == all);
    orders.push_back(order);
  }
  CHECK(orders[0] != orders[1]);
  CHECK(orders[1] != orders[2]);
}

TEST_CASE("Loader: drop_last, no shuffle, coarse labels and a subset of indices", "[data][loader]") {
  const auto data = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(20, 3)), 2);
  const std::vector<std::size_t> shard = {3, 9, 11, 12, 40, 41, 59};
  Loader loader(data, normalizer, {.batch_size = 3, .shuffle = false, .drop_last = true, .labels = LabelKind::coarse}, shard);
  CHECK(loader.size() == 7);
  CHECK(loader.batches_per_epoch() == 2);
  std::vector<std::size_t> seen;
  while (const Batch* b = loader.next()) {
    CHECK(b->size() == 3);
    for (std::size_t k = 0; k < 3; ++k) CHECK(b->labels()[k] == data.coarse[b->samples()[k]]);
    seen.insert(seen.end(), b->samples().begin(), b->samples().end());
  }
  CHECK(seen == std::vector<std::size_t>{3, 9, 11, 12, 40, 41});
}

TEST_CASE("Loader: batch pixels are the sample's own augmentation, wherever it is loaded", "[data][loader]") {
  const auto data = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(10, 6)), 3);
  const LoaderOptions options{.batch_size = 7, .seed = 21, .augmentation = Augmentation{}};
  Loader full(data, normalizer, options);
  Loader shard(data, normalizer, options, std::vector<std::size_t>{5, 17, 33, 34, 50});
  std::vector<float> expected(3072);
  for (Loader* loader : {&full, &shard}) {
    loader->start_epoch(4);
    bool match = true;
    std::size_t batches = 0;
    while (const Batch* b = loader->next()) {
      ++batches;
      for (std::size_t k = 0; k < b->size(); ++k) {
        const std::size_t s = b->samples()[k];
        transform_image(data.images.data() + s * 3072, expected.data(), normalizer, data.shape(), 4, draw_crop_flip(Augmentation{}, 21, 4, s));
        match = match && std::memcmp(b->images().data + k * 3072, expected.data(), 3072 * sizeof(float)) == 0;
      }
    }
    CHECK(batches == loader->batches_per_epoch());
    CHECK(match);
  }
}

TEST_CASE("Loader: the same batches for 1 and 2 threads, with and without prefetch", "[data][loader]") {
  const auto data = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(10, 9)), 4);
  const LoaderOptions base{.batch_size = 16, .seed = 8, .augmentation = Augmentation{}};
  LoaderOptions ahead = base;
  ahead.prefetch = true;
  Recorded serial, two, prefetched;
  {
    distopt::parallel::ThreadCount threads(1);
    Loader loader(data, normalizer, base);
    serial = record(loader, 3);
  }
  {
    distopt::parallel::ThreadCount threads(2);
    Loader loader(data, normalizer, base);
    two = record(loader, 3);
    Loader with_prefetch(data, normalizer, ahead);
    prefetched = record(with_prefetch, 3);
  }
  CHECK(serial.samples.size() == 18);
  CHECK(serial == two);
  CHECK(serial == prefetched);
}

TEST_CASE("Loader: seek resumes the exact sequence of batches", "[data][loader]") {
  const auto data = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(5, 8)), 6);
  for (const bool prefetch : {false, true}) {
    const LoaderOptions options{.batch_size = 6, .seed = 2, .augmentation = Augmentation{}, .prefetch = prefetch};
    Loader uninterrupted(data, normalizer, options);
    uninterrupted.start_epoch(2);
    for (int i = 0; i < 3; ++i) uninterrupted.next();
    const LoaderPosition saved = uninterrupted.position();
    CHECK(saved == LoaderPosition{2, 3});
    std::vector<std::vector<float>> rest;
    while (const Batch* b = uninterrupted.next()) rest.emplace_back(b->images().data, b->images().data + b->size() * 3072);

    Loader resumed(data, normalizer, options);
    resumed.start_epoch(0);
    resumed.next();  // some unrelated work first
    resumed.seek(saved);
    std::vector<std::vector<float>> again;
    while (const Batch* b = resumed.next()) again.emplace_back(b->images().data, b->images().data + b->size() * 3072);
    CHECK(rest.size() == 4);
    CHECK(rest == again);
  }
}

TEST_CASE("Loader: bad options name the field", "[data][loader]") {
  const auto data = test_support::random_images({0, 1, 2}, 1);
  CHECK_THROWS_WITH(Loader(data, normalizer, {.batch_size = 0}), Contains("batch_size"));
  CHECK_THROWS_WITH(Loader(data, normalizer, {}, std::vector<std::size_t>{0, 3}), Contains("index 3") && Contains("position 1"));
  CHECK_THROWS_WITH(Loader(data, normalizer, {}, std::vector<std::size_t>{}), Contains("no samples"));
  CHECK_THROWS_WITH(Loader(data, normalizer, {.batch_size = 4, .drop_last = true}), Contains("drop_last"));
  CHECK_THROWS_WITH(Loader(data, normalizer, {.augmentation = Augmentation{.padding = -1}}), Contains("padding"));
  Loader loader(data, normalizer, {.batch_size = 2});
  CHECK_THROWS_WITH(loader.seek({0, 3}), Contains("batch 3"));
}

TEST_CASE("Loader: grey 28 x 28 images without coarse labels, batches carry their shape", "[data][loader]") {
  const ImageShape shape{1, 28, 28};
  const auto data = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(10, 3)), 9, shape, false);
  REQUIRE_FALSE(data.has_coarse());
  const Normalizer grey(ChannelStats{{0.286}, {0.353}});
  const LoaderOptions options{.batch_size = 8, .seed = 3, .augmentation = Augmentation{.padding = 2}};
  Loader loader(data, grey, options);
  CHECK(loader.batches_per_epoch() == 4);
  loader.start_epoch(1);
  std::vector<float> expected(784);
  std::size_t samples = 0;
  bool match = true;
  while (const Batch* b = loader.next()) {
    const auto images = b->images();
    REQUIRE(images.count == static_cast<std::ptrdiff_t>(b->size()));
    REQUIRE(images.channels == 1);
    REQUIRE(images.height == 28);
    REQUIRE(images.width == 28);
    for (std::size_t k = 0; k < b->size(); ++k) {
      const std::size_t s = b->samples()[k];
      REQUIRE(b->labels()[k] == data.fine[s]);
      transform_image(data.images.data() + s * 784, expected.data(), grey, shape, 2, draw_crop_flip(*options.augmentation, 3, 1, s));
      match = match && std::memcmp(images.data + k * 784, expected.data(), 784 * sizeof(float)) == 0;
    }
    samples += b->size();
  }
  CHECK(samples == 30);
  CHECK(match);
  // A normalizer of another channel count, or coarse labels the data lacks, are refused.
  CHECK_THROWS_WITH(Loader(data, normalizer, {}), Contains("normalizer has 3 channel(s), the images 1"));
  CHECK_THROWS_WITH(Loader(data, grey, {.labels = LabelKind::coarse}), Contains("no coarse labels"));
}
