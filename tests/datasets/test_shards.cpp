#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>

#include "distopt/data/shards.hpp"
#include "../support/data.hpp"

using namespace distopt::data;
using Catch::Matchers::Contains;

namespace {

bool is_partition(const Shards& shards, std::size_t n) {
  std::vector<std::size_t> all;
  for (const auto& s : shards) {
    if (!std::is_sorted(s.begin(), s.end())) return false;
    all.insert(all.end(), s.begin(), s.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<std::size_t> expected(n);
  std::iota(expected.begin(), expected.end(), std::size_t{0});
  return all == expected;
}

std::size_t classes_held(const std::vector<std::size_t>& counts) {
  return static_cast<std::size_t>(std::count_if(counts.begin(), counts.end(), [](std::size_t c) { return c > 0; }));
}

// Uneven classes: 20 classes of 23 to 61 samples.
std::vector<std::uint8_t> uneven_labels() {
  std::vector<std::size_t> per_class;
  for (std::size_t c = 0; c < 20; ++c) per_class.push_back(23 + (c * 17) % 39);
  return test_support::class_labels(per_class);
}

}  // namespace

TEST_CASE("iid_shards: a partition, balanced per class and in total", "[data][shards]") {
  const auto labels = uneven_labels();
  for (const std::size_t workers : {1u, 3u, 7u, 16u}) {
    const Shards shards = iid_shards(labels, workers, 42, 20);
    INFO(workers << " workers");
    REQUIRE(shards.size() == workers);
    CHECK(is_partition(shards, labels.size()));
    const auto counts = shard_class_counts(shards, labels, 20);
    for (std::size_t c = 0; c < 20; ++c) {
      std::size_t lo = labels.size(), hi = 0;
      for (std::size_t k = 0; k < workers; ++k) lo = std::min(lo, counts[k][c]), hi = std::max(hi, counts[k][c]);
      CHECK(hi - lo <= 1);
    }
    std::size_t lo = labels.size(), hi = 0;
    for (const auto& s : shards) lo = std::min(lo, s.size()), hi = std::max(hi, s.size());
    CHECK(hi - lo <= 1);
  }
  CHECK(iid_shards(labels, 4, 1, 20) == iid_shards(labels, 4, 1, 20));
  CHECK(iid_shards(labels, 4, 1, 20) != iid_shards(labels, 4, 2, 20));
}

TEST_CASE("dirichlet_shards: a partition whose skew follows alpha", "[data][shards]") {
  const auto labels = test_support::class_labels(std::vector<std::size_t>(20, 50));
  const Shards skewed = dirichlet_shards(labels, 8, 3, {.alpha = 0.05}, 20);
  const Shards mild = dirichlet_shards(labels, 8, 3, {.alpha = 1000.0}, 20);
  CHECK(is_partition(skewed, labels.size()));
  CHECK(is_partition(mild, labels.size()));
  CHECK(dirichlet_shards(labels, 8, 3, {.alpha = 0.05}, 20) == skewed);
  const auto skewed_counts = shard_class_counts(skewed, labels, 20);
  const auto mild_counts = shard_class_counts(mild, labels, 20);
  double skewed_classes = 0, mild_classes = 0;
  for (std::size_t k = 0; k < 8; ++k) {
    skewed_classes += static_cast<double>(classes_held(skewed_counts[k])) / 8;
    mild_classes += static_cast<double>(classes_held(mild_counts[k])) / 8;
    CHECK(skewed[k].size() >= 1);  // min_samples = 1 by default
    // alpha = 1000: proportions within a few percent of 1/8 of each class's 50 samples.
    for (std::size_t c = 0; c < 20; ++c) CHECK(std::abs(static_cast<double>(mild_counts[k][c]) - 6.25) <= 2.0);
  }
  CHECK(mild_classes == 20.0);
  CHECK(skewed_classes < 10.0);  // alpha = 0.05: most of a class lands on one or two workers
}

TEST_CASE("dirichlet_shards: min_samples is met or reported", "[data][shards]") {
  const auto labels = test_support::class_labels(std::vector<std::size_t>(10, 30));
  const Shards shards = dirichlet_shards(labels, 6, 9, {.alpha = 0.3, .min_samples = 20}, 10);
  CHECK(is_partition(shards, labels.size()));
  for (const auto& s : shards) CHECK(s.size() >= 20);
  CHECK_THROWS_WITH(dirichlet_shards(labels, 6, 9, {.alpha = 0.001, .min_samples = 49}, 10), Contains("min_samples"));
  CHECK_THROWS_WITH(dirichlet_shards(labels, 6, 9, {.alpha = 0.0}, 10), Contains("alpha"));
  CHECK_THROWS_WITH(dirichlet_shards(labels, 6, 9, {.alpha = 1.0, .min_samples = 51}, 10), Contains("min_samples"));
}

TEST_CASE("label_shards: each worker holds classes_per_worker classes", "[data][shards]") {
  const auto labels = uneven_labels();
  for (const auto& [workers, per_worker] : std::vector<std::pair<std::size_t, std::size_t>>{{10, 2}, {4, 5}, {7, 3}, {20, 1}}) {
    const Shards shards = label_shards(labels, workers, per_worker, 5, 20);
    INFO(workers << " workers x " << per_worker << " classes");
    CHECK(is_partition(shards, labels.size()));
    const auto counts = shard_class_counts(shards, labels, 20);
    for (std::size_t k = 0; k < workers; ++k) CHECK(classes_held(counts[k]) == per_worker);
  }
  CHECK_THROWS_WITH(label_shards(labels, 4, 2, 0, 20), Contains("classes_per_worker"));
  CHECK_THROWS_WITH(label_shards(labels, 4, 21, 0, 20), Contains("classes_per_worker"));
}

TEST_CASE("shards: bad worker counts and labels are named", "[data][shards]") {
  const std::vector<std::uint8_t> labels = {0, 1, 2};
  CHECK_THROWS_WITH(iid_shards(labels, 0, 0, 3), Contains("workers must be positive"));
  CHECK_THROWS_WITH(iid_shards(labels, 4, 0, 3), Contains("4 workers for 3 samples"));
  CHECK_THROWS_WITH(iid_shards(labels, 2, 0, 2), Contains("sample 2"));
  CHECK_THROWS_WITH(label_shards(labels, 5, 1, 0, 3), Contains("5 workers for 3 samples"));
}
