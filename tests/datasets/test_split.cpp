#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "distopt/data/split.hpp"
#include "../support/data.hpp"

using namespace distopt::data;
using Catch::Matchers::Contains;

namespace {

bool is_partition(const SplitIndices& s, std::size_t n) {
  std::vector<std::size_t> all = s.train;
  all.insert(all.end(), s.validation.begin(), s.validation.end());
  std::sort(all.begin(), all.end());
  std::vector<std::size_t> expected(n);
  std::iota(expected.begin(), expected.end(), std::size_t{0});
  return all == expected && std::is_sorted(s.train.begin(), s.train.end()) &&
         std::is_sorted(s.validation.begin(), s.validation.end());
}

std::vector<std::size_t> count_classes(const std::vector<std::uint8_t>& labels, const std::vector<std::size_t>& idx,
                                       std::size_t classes) {
  std::vector<std::size_t> counts(classes, 0);
  for (const auto i : idx) ++counts[labels[i]];
  return counts;
}

}  // namespace

TEST_CASE("split_indices: a stratified split keeps every class's share", "[data][split]") {
  // Uneven classes (7 to 130 samples) so the per-class rounding matters.
  std::vector<std::size_t> per_class;
  for (std::size_t c = 0; c < 20; ++c) per_class.push_back(7 + 13 * ((c * 7) % 11));
  const auto labels = test_support::class_labels(per_class);
  const std::size_t n = labels.size();
  const SplitOptions options{.validation_ratio = 0.15, .seed = 3, .stratified = true};
  const SplitIndices s = split_indices(labels, options, 20);

  CHECK(is_partition(s, n));
  CHECK(s.validation.size() == static_cast<std::size_t>(std::llround(0.15 * static_cast<double>(n))));
  const auto in_validation = count_classes(labels, s.validation, 20);
  for (std::size_t c = 0; c < 20; ++c) {
    INFO("class " << c << " of " << per_class[c] << " samples");
    CHECK(std::abs(static_cast<double>(in_validation[c]) - 0.15 * static_cast<double>(per_class[c])) < 1.0);
  }
}

TEST_CASE("split_indices: same options give the same split, another seed another one", "[data][split]") {
  const auto labels = test_support::class_labels(std::vector<std::size_t>(10, 50));
  for (const bool stratified : {true, false}) {
    const SplitOptions a{.validation_ratio = 0.2, .seed = 1, .stratified = stratified};
    SplitOptions b = a;
    b.seed = 2;
    const auto s1 = split_indices(labels, a, 10);
    const auto s2 = split_indices(labels, a, 10);
    const auto s3 = split_indices(labels, b, 10);
    CHECK(s1.validation == s2.validation);
    CHECK(s1.train == s2.train);
    CHECK(s1.validation != s3.validation);
    CHECK(is_partition(s3, labels.size()));
    CHECK(s1.validation.size() == 100);
  }
}

TEST_CASE("split_indices: an unstratified split draws uniformly, so class shares vary", "[data][split]") {
  const auto labels = test_support::class_labels(std::vector<std::size_t>(10, 200));
  const auto s = split_indices(labels, {.validation_ratio = 0.5, .seed = 9, .stratified = false}, 10);
  CHECK(is_partition(s, labels.size()));
  CHECK(s.validation.size() == 1000);
  const auto counts = count_classes(labels, s.validation, 10);
  // Hypergeometric spread (sd ~7): some class must miss the exact share of 100.
  CHECK(std::any_of(counts.begin(), counts.end(), [](std::size_t c) { return c != 100; }));
  for (const auto c : counts) CHECK(std::abs(static_cast<double>(c) - 100.0) < 40.0);
}

TEST_CASE("split_indices: ratio 0 keeps everything for training", "[data][split]") {
  const auto labels = test_support::class_labels({3, 4, 5});
  const auto s = split_indices(labels, {.validation_ratio = 0.0}, 3);
  CHECK(s.validation.empty());
  CHECK(s.train.size() == 12);
}

TEST_CASE("split_indices: bad options and labels name the field", "[data][split]") {
  const auto labels = test_support::class_labels({3, 4});
  for (const double ratio : {1.0, -0.1, 1.5, std::nan("")})
    CHECK_THROWS_WITH(split_indices(labels, {.validation_ratio = ratio}, 2), Contains("validation_ratio"));
  const std::vector<std::uint8_t> bad = {0, 1, 7};
  CHECK_THROWS_WITH(split_indices(bad, {}, 5), Contains("sample 2") && Contains("7"));
}

TEST_CASE("subset and split copy images and both labels of the chosen samples", "[data][split]") {
  const auto data = test_support::random_images(test_support::class_labels({6, 6, 6}), 5);
  const std::vector<std::size_t> pick = {17, 0, 4, 4};
  const LabelledImages s = subset(data, pick);
  REQUIRE(s.size() == 4);
  bool same = true;
  for (std::size_t k = 0; k < pick.size(); ++k) {
    same = same && std::memcmp(s.images.data() + k * 3072, data.images.data() + pick[k] * 3072, 3072) == 0;
    same = same && s.fine[k] == data.fine[pick[k]] && s.coarse[k] == data.coarse[pick[k]];
  }
  CHECK(same);
  CHECK_THROWS_WITH(subset(data, std::vector<std::size_t>{1, 18}), Contains("index 18") && Contains("position 1"));

  const auto parts = split(data, {.validation_ratio = 1.0 / 3.0, .seed = 0});
  CHECK(parts.validation.size() == 6);
  CHECK(parts.train.size() == 12);
  const auto counts = count_classes(parts.validation.fine, [&] {
    std::vector<std::size_t> all(parts.validation.size());
    std::iota(all.begin(), all.end(), std::size_t{0});
    return all;
  }(), 3);
  CHECK(counts == std::vector<std::size_t>{2, 2, 2});
}

TEST_CASE("concatenate puts the second set's samples after the first's", "[data][split]") {
  const auto a = test_support::random_images(test_support::class_labels({2, 3}), 11);
  const auto b = test_support::random_images(test_support::class_labels({1, 1, 2}), 12);
  const LabelledImages both = concatenate(a, b);
  REQUIRE(both.size() == 9);
  REQUIRE(both.fine.size() == 9);
  REQUIRE(both.coarse.size() == 9);
  bool same = true;
  for (std::size_t k = 0; k < 9; ++k) {
    const LabelledImages& from = k < 5 ? a : b;
    const std::size_t i = k < 5 ? k : k - 5;
    same = same && std::memcmp(both.images.data() + k * 3072, from.images.data() + i * 3072, 3072) == 0;
    same = same && both.fine[k] == from.fine[i] && both.coarse[k] == from.coarse[i];
  }
  CHECK(same);
  CHECK(concatenate(LabelledImages{}, b).fine == b.fine);
  CHECK(concatenate(a, LabelledImages{}).size() == 5);

  LabelledImages broken = b;
  broken.coarse.pop_back();
  CHECK_THROWS_WITH(concatenate(a, broken), Contains("second") && Contains("3 coarse"));
}
