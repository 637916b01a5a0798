// Float arrays as a data set (data/arrays.hpp): reading .npz files, refusing bad ones with the
// file, array and index named, and the generic pipeline over them (statistics, loader, splits,
// shards).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "distopt/core/archive.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/data/arrays.hpp"
#include "distopt/data/loader.hpp"
#include "distopt/data/shards.hpp"
#include "distopt/data/split.hpp"
#include "distopt/data/statistics.hpp"
#include "../support/files.hpp"

namespace data = distopt::data;
using Catch::Matchers::Contains;

namespace {

const std::filesystem::path tables = std::filesystem::path(DISTOPT_TEST_DATA_DIR) / "tables";

// 12 samples of [2, 3] features, value 100 i + j, class i % 3.
data::ArrayDataset small(bool regression = false) {
  std::vector<float> x(12 * 6);
  for (std::size_t i = 0; i < 12; ++i)
    for (std::size_t j = 0; j < 6; ++j) x[i * 6 + j] = static_cast<float>(100 * i + j);
  if (regression) {
    std::vector<float> y(12 * 2);
    for (std::size_t i = 0; i < 24; ++i) y[i] = 0.5f * static_cast<float>(i);
    return data::ArrayDataset::regression(x, {2, 3}, y, 2, "small");
  }
  std::vector<std::int32_t> y(12);
  for (std::size_t i = 0; i < 12; ++i) y[i] = static_cast<std::int32_t>(i % 3);
  return data::ArrayDataset::classification(x, {2, 3}, y, 0, "small");
}

}  // namespace

TEST_CASE("ArrayDataset models the Dataset concept and copies samples and targets", "[data][arrays]") {
  static_assert(data::Dataset<data::ArrayDataset>);
  static_assert(data::Dataset<data::LabelledImages>);
  static_assert(data::Dataset<data::Source>);
  const auto d = small();
  CHECK(d.size() == 12);
  CHECK(d.sample_shape() == distopt::Shape{2, 3});
  CHECK(d.target_info() == data::TargetInfo::class_ids(3));
  const std::vector<std::size_t> idx = {5, 0};
  std::vector<float> f(12);
  std::vector<std::int32_t> c(2);
  d.copy(idx, f, c, {});
  CHECK(f[0] == 500.0f);
  CHECK(f[5] == 505.0f);
  CHECK(f[6] == 0.0f);
  CHECK(c == std::vector<std::int32_t>{2, 0});
  const auto r = small(true);
  CHECK(r.target_info() == data::TargetInfo::values(2));
  std::vector<float> v(4);
  r.copy(idx, f, {}, v);
  CHECK(v == std::vector<float>{5.0f, 5.5f, 0.0f, 0.5f});
}

TEST_CASE("Arrays from an Eigen matrix: its rows are the samples, whatever its storage order", "[data][arrays]") {
  Eigen::MatrixXd x(3, 2);  // column-major doubles
  x << 1, 2, 3, 4, 5, 6;
  const auto d = data::ArrayDataset::regression(data::rows(x), {2}, {0.5f, 1.5f, 2.5f});
  CHECK(d.size() == 3);
  CHECK(std::vector<float>(d.features().begin(), d.features().end()) == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(d.target_info() == data::TargetInfo::values(1));
}

TEST_CASE("Real tables from .npz: classes by integer dtype, regression by float dtype", "[data][arrays][npz]") {
  const auto cancer = data::load_arrays(tables / "breast_cancer.npz");
  CHECK(cancer.size() == 569);
  CHECK(cancer.sample_shape() == distopt::Shape{30});
  CHECK(cancer.target_info() == data::TargetInfo::class_ids(2));
  const auto diabetes = data::load_arrays(tables / "diabetes.npz");
  CHECK(diabetes.size() == 442);
  CHECK(diabetes.target_info() == data::TargetInfo::values(1));
  CHECK(diabetes.values()[0] == 151.0f);  // the first target of the CSV sklearn ships
}

TEST_CASE("Bad .npz arrays are refused naming the file, the array and the index", "[data][arrays][npz][errors]") {
  test_support::TempDir dir("arrays");
  const auto path = dir / "bad.npz";
  const auto write = [&](const std::vector<float>& x, std::vector<std::ptrdiff_t> xshape, const auto& y,
                         std::vector<std::ptrdiff_t> yshape) {
    distopt::Archive a;
    a.put<float>("x", std::span<const float>(x), std::move(xshape));
    using Y = typename std::decay_t<decltype(y)>::value_type;
    a.put<Y>("y", std::span<const Y>(y), std::move(yshape));
    a.save(path);
  };
  const std::vector<float> x(12, 1.0f);
  SECTION("counts differ") {
    write(x, {4, 3}, std::vector<std::int64_t>{0, 1, 0}, {3});
    REQUIRE_THROWS_WITH(data::load_arrays(path), Contains("bad.npz") && Contains("'x' holds 4 samples") && Contains("'y' 3"));
  }
  SECTION("a missing array") {
    write(x, {4, 3}, std::vector<std::int64_t>{0, 1, 0, 1}, {4});
    REQUIRE_THROWS_WITH(data::load_arrays(path, {.features = "features"}), Contains("no array 'features'") && Contains("[x, y]"));
  }
  SECTION("features of rank 1") {
    write(x, {12}, std::vector<std::int64_t>(12, 0), {12});
    REQUIRE_THROWS_WITH(data::load_arrays(path), Contains("'x' has shape [12]") && Contains("[N, ...]"));
  }
  SECTION("targets of rank 3") {
    write(x, {4, 3}, std::vector<float>(8, 0.0f), {4, 1, 2});
    REQUIRE_THROWS_WITH(data::load_arrays(path), Contains("'y' has shape [4, 1, 2]"));
  }
  SECTION("NaN in features") {
    auto bad = x;
    bad[7] = std::nanf("");
    write(bad, {4, 3}, std::vector<std::int64_t>{0, 1, 0, 1}, {4});
    REQUIRE_THROWS_WITH(data::load_arrays(path), Contains("'x'") && Contains("sample 2") && Contains("element 1") && Contains("finite"));
  }
  SECTION("inf in targets") {
    write(x, {4, 3}, std::vector<float>{0.0f, 1.0f, std::numeric_limits<float>::infinity(), 2.0f}, {4});
    REQUIRE_THROWS_WITH(data::load_arrays(path), Contains("'y'") && Contains("target 2") && Contains("finite"));
  }
  SECTION("a class id outside [0, classes)") {
    write(x, {4, 3}, std::vector<std::int64_t>{0, 1, 5, 1}, {4});
    REQUIRE_THROWS_WITH(data::load_arrays(path, {.classes = 3}), Contains("class id 5 of sample 2") && Contains("[0, 3)"));
    write(x, {4, 3}, std::vector<std::int64_t>{0, -1, 0, 1}, {4});
    REQUIRE_THROWS_WITH(data::load_arrays(path), Contains("target 1 is -1"));
  }
  SECTION("class ids asked of fractional targets") {
    write(x, {4, 3}, std::vector<float>{0.0f, 1.5f, 0.0f, 1.0f}, {4});
    REQUIRE_THROWS_WITH(data::load_arrays(path, {.kind = data::TargetInfo::Kind::classes}), Contains("target 1 is 1.5"));
  }
  SECTION("a dtype that is not a number") {
    // np.savez(f, x=np.array(["ab", "cd"])): a unicode array, which the reader names and refuses.
    const auto unicode = std::filesystem::path(DISTOPT_TEST_DATA_DIR) / ".." / ".." / "fuzz" / "corpus" / "npz_reader" / "unicode_string_array";
    REQUIRE_THROWS_WITH(data::load_arrays(unicode), Contains("unicode_string_array") && Contains("dtype"));
  }
  SECTION("a file that is not an .npz") {
    test_support::write_bytes(path, std::vector<std::uint8_t>{1, 2, 3});
    REQUIRE_THROWS_WITH(data::load_arrays(path), Contains("bad.npz"));
  }
}

TEST_CASE("Feature statistics: two passes in double, the same bits for any thread count", "[data][arrays][statistics]") {
  const auto d = small();
  const auto one = [&] {
    distopt::parallel::ThreadCount t(1);
    return data::feature_statistics(d);
  }();
  for (const int threads : {2, 3}) {
    distopt::parallel::ThreadCount t(threads);
    CHECK(data::feature_statistics(d) == one);
  }
  // Feature j over i = 0..11 of 100 i + j: mean 550 + j, population std 100 sqrt((144 - 1) / 12).
  for (std::size_t j = 0; j < 6; ++j) {
    CHECK(one.mean[j] == Approx(550.0 + static_cast<double>(j)).epsilon(1e-15));
    CHECK(one.std[j] == Approx(100.0 * std::sqrt(143.0 / 12.0)).epsilon(1e-14));
  }
}

TEST_CASE("The loader reads arrays: standardised features, targets, the same batches with prefetch", "[data][arrays][loader]") {
  const auto d = small(true);
  const data::FeatureNormalizer norm(data::feature_statistics(d));
  data::Loader plain(data::Source(d, norm), {.batch_size = 5, .seed = 3});
  data::Loader ahead(data::Source(d, norm), {.batch_size = 5, .seed = 3, .prefetch = true});
  std::size_t seen = 0;
  while (const data::Batch* b = plain.next()) {
    const data::Batch* c = ahead.next();
    REQUIRE(c != nullptr);
    const auto x = b->inputs();
    REQUIRE(x.shape == distopt::Shape{2, 3});
    const auto y = b->targets();
    REQUIRE(!y.are_classes());
    REQUIRE(y.width == 2);
    for (std::size_t k = 0; k < b->size(); ++k) {
      const std::size_t s = b->samples()[k];
      for (std::size_t j = 0; j < 6; ++j) {
        const float expected = (static_cast<float>(100 * s + j) - static_cast<float>(norm.stats().mean[j])) /
                               static_cast<float>(norm.stats().std[j]);
        REQUIRE(x.data[k * 6 + j] == expected);
        REQUIRE(c->inputs().data[k * 6 + j] == expected);
      }
      REQUIRE(y.values[2 * k] == 0.5f * static_cast<float>(2 * s));
    }
    seen += b->size();
  }
  CHECK(seen == 12);
  CHECK(plain.batches_per_epoch() == 3);
}

TEST_CASE("A crop on a table is refused, naming both, and on float images it crops like the image path", "[data][arrays][transforms]") {
  const auto table = small();
  REQUIRE_THROWS_WITH(data::Loader(data::Source(table), {.augmentation = data::Augmentation{}}),
                      Contains("random crop") && Contains("'small'") && Contains("[2, 3]"));
  // The same images as uint8 and as float arrays of v / 255: the float path's crop and flip
  // equals the fused uint8 path's, pixel for pixel (both normalise with mean 0 and std 1).
  data::LabelledImages images = data::allocate_images(6, {1, 4, 4}, false);
  std::vector<float> floats(6 * 16);
  std::vector<std::int32_t> labels(6);
  for (std::size_t i = 0; i < 6 * 16; ++i) {
    images.images.data()[i] = static_cast<std::uint8_t>((37 * i) % 251);
    floats[i] = static_cast<float>(images.images.data()[i]) / 255.0f;
  }
  for (std::size_t i = 0; i < 6; ++i) images.fine[i] = static_cast<std::uint8_t>(labels[i] = static_cast<std::int32_t>(i % 2));
  const auto arrays = data::ArrayDataset::classification(floats, {1, 4, 4}, labels);
  const data::LoaderOptions options{.batch_size = 6, .seed = 9, .augmentation = data::Augmentation{.padding = 1}};
  data::Loader a(images, data::Normalizer(1), options);
  data::Loader b(data::Source(arrays), options);
  const data::Batch* x = a.next();
  const data::Batch* y = b.next();
  for (std::size_t i = 0; i < 6 * 16; ++i) REQUIRE(x->inputs().data[i] == y->inputs().data[i]);
}

TEST_CASE("Splits and shards over arrays: stratified by class, a seeded deal for a regression", "[data][arrays][shards]") {
  const auto d = small();
  const auto split = data::split_indices(d, {.validation_ratio = 0.25, .seed = 1});
  CHECK(split.validation.size() == 3);
  std::vector<int> per_class(3, 0);
  for (const auto i : split.validation) ++per_class[i % 3];
  CHECK(per_class == std::vector<int>{1, 1, 1});
  const auto shards = data::iid_shards(data::Source(d), 4, 5);  // 4 samples of each class for 4 workers
  REQUIRE(shards.size() == 4);
  for (const auto& s : shards) {
    std::vector<int> count(3, 0);
    for (const auto i : s) ++count[i % 3];
    CHECK(count == std::vector<int>{1, 1, 1});  // class-balanced
  }
  const auto r = small(true);
  const auto deal = data::iid_shards(data::Source(r), 5, 5);
  std::vector<std::size_t> all;
  for (const auto& s : deal) {
    CHECK((s.size() == 2 || s.size() == 3));
    all.insert(all.end(), s.begin(), s.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<std::size_t> expected(12);
  std::iota(expected.begin(), expected.end(), std::size_t{0});
  CHECK(all == expected);
  const auto sub = r.subset(deal[0]);
  CHECK(sub.size() == deal[0].size());
  CHECK(sub.features()[0] == r.features()[deal[0][0] * 6]);
}
