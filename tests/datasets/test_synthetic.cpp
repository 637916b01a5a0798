#include "distopt/data/synthetic.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "distopt/core/parallel.hpp"
#include "../support/files.hpp"

using distopt::data::LabelledImages;
using distopt::data::SyntheticOptions;
using distopt::data::SyntheticSplit;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
namespace cifar100 = distopt::data::cifar100;

namespace {

bool same(const LabelledImages& a, const LabelledImages& b) {
  return a.images.shape() == b.images.shape() && a.fine == b.fine && a.coarse == b.coarse &&
         std::equal(a.images.begin(), a.images.end(), b.images.begin());
}

// Fraction of pixel bytes in which two images differ.
double fraction_differing(const std::uint8_t* a, const std::uint8_t* b) {
  std::size_t differ = 0;
  for (std::size_t k = 0; k < cifar100::pixels_per_image; ++k) differ += a[k] != b[k] ? 1 : 0;
  return static_cast<double>(differ) / static_cast<double>(cifar100::pixels_per_image);
}

const std::uint8_t* image(const LabelledImages& d, std::size_t i) {
  return d.images.data() + i * cifar100::pixels_per_image;
}

}  // namespace

TEST_CASE("synthetic data: the same seed gives the same bytes with 1 and 2 threads", "[data][synthetic]") {
  const SyntheticOptions options{.seed = 7, .train_records = 300, .test_records = 100};
  LabelledImages one, two, test_one, test_two;
  {
    const distopt::parallel::ThreadCount threads(1);
    one = distopt::data::synthetic_cifar100_split(options, SyntheticSplit::train);
    test_one = distopt::data::synthetic_cifar100_split(options, SyntheticSplit::test);
  }
  {
    const distopt::parallel::ThreadCount threads(2);
    two = distopt::data::synthetic_cifar100_split(options, SyntheticSplit::train);
    test_two = distopt::data::synthetic_cifar100_split(options, SyntheticSplit::test);
  }
  CHECK(one.size() == 300);
  CHECK(test_one.size() == 100);
  CHECK(same(one, two));
  CHECK(same(test_one, test_two));
  // And again in the same process: nothing carries over from one call to the next.
  CHECK(same(one, distopt::data::synthetic_cifar100_split(options, SyntheticSplit::train)));
}

TEST_CASE("synthetic data: another seed or the other split gives other images", "[data][synthetic]") {
  const SyntheticOptions a{.seed = 1, .train_records = 200, .test_records = 200};
  SyntheticOptions b = a;
  b.seed = 2;
  const auto train_a = distopt::data::synthetic_cifar100_split(a, SyntheticSplit::train);
  const auto train_b = distopt::data::synthetic_cifar100_split(b, SyntheticSplit::train);
  const auto test_a = distopt::data::synthetic_cifar100_split(a, SyntheticSplit::test);
  CHECK(train_a.fine != train_b.fine);  // the order is seeded too
  CHECK(train_a.fine != test_a.fine);
  // Image by image, almost every byte differs (independent streams: noise alone moves most pixels).
  double least = 1.0;
  for (std::size_t i = 0; i < train_a.size(); ++i) {
    least = std::min(least, fraction_differing(image(train_a, i), image(train_b, i)));
    least = std::min(least, fraction_differing(image(train_a, i), image(test_a, i)));
  }
  CHECK(least > 0.5);
}

TEST_CASE("synthetic data: labels in range and coarse = fine / 5 and classes balanced", "[data][synthetic]") {
  for (const std::size_t n : {std::size_t{500}, std::size_t{250}, std::size_t{37}}) {
    const auto d = distopt::data::synthetic_cifar100_split({.seed = 3, .train_records = n}, SyntheticSplit::train);
    REQUIRE(d.size() == n);
    REQUIRE(d.fine.size() == n);
    REQUIRE(d.coarse.size() == n);
    std::array<std::size_t, cifar100::fine_classes> counts{};
    bool labels_ok = true;
    for (std::size_t i = 0; i < n; ++i) {
      labels_ok = labels_ok && d.fine[i] < cifar100::fine_classes && d.coarse[i] == d.fine[i] / 5;
      if (d.fine[i] < cifar100::fine_classes) ++counts[d.fine[i]];
    }
    INFO("n = " << n);
    CHECK(labels_ok);
    const auto [low, high] = std::minmax_element(counts.begin(), counts.end());
    CHECK(*low >= n / 100);
    CHECK(*high <= n / 100 + 1);
    // Shuffled: not the sorted order 0, 1, 2, ... the assignment starts from.
    std::size_t in_place = 0;
    for (std::size_t i = 0; i < n; ++i) in_place += d.fine[i] == i % 100 ? 1 : 0;
    CHECK(in_place < n / 2);
  }
}

TEST_CASE("synthetic data: 100 fine and 20 coarse names that are distinct and non-empty", "[data][synthetic]") {
  const auto fine = distopt::data::synthetic_fine_names();
  const auto coarse = distopt::data::synthetic_coarse_names();
  CHECK(fine.size() == cifar100::fine_classes);
  CHECK(coarse.size() == cifar100::coarse_classes);
  CHECK(std::set<std::string>(fine.begin(), fine.end()).size() == fine.size());
  CHECK(std::set<std::string>(coarse.begin(), coarse.end()).size() == coarse.size());
  bool clean = true;
  for (const auto* names : {&fine, &coarse})
    for (const auto& name : *names) clean = clean && !name.empty() && name.find_first_of("\r\n") == std::string::npos;
  CHECK(clean);
  CHECK(distopt::data::synthetic_coarse_of(99) == 19);
  CHECK(distopt::data::synthetic_coarse_of(5) == 1);
}

TEST_CASE("synthetic data: written in the official layout and read back by load_cifar100", "[data][synthetic]") {
  const test_support::TempDir dir("synthetic");
  const fs::path root = distopt::data::make_synthetic_cifar100(dir.path(), 11, 500, 200);
  CHECK(root == dir / "cifar-100-binary");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(root)) files.push_back(entry.path().filename().string());
  std::sort(files.begin(), files.end());
  // No temporary left beside the four files.
  CHECK(files == std::vector<std::string>{"coarse_label_names.txt", "fine_label_names.txt", "test.bin", "train.bin"});
  CHECK(fs::file_size(root / "train.bin") == 500 * cifar100::record_bytes);
  CHECK(fs::file_size(root / "test.bin") == 200 * cifar100::record_bytes);

  const auto loaded = distopt::data::load_cifar100(dir.path(), {.train_records = 500, .test_records = 200});
  const auto memory = distopt::data::synthetic_cifar100({.seed = 11, .train_records = 500, .test_records = 200});
  CHECK(same(loaded.train, memory.train));
  CHECK(same(loaded.test, memory.test));
  CHECK(loaded.fine_names == distopt::data::synthetic_fine_names());
  CHECK(loaded.coarse_names == distopt::data::synthetic_coarse_names());

  // Byte layout by hand: record i = coarse, fine, then the 3072 pixels.
  const auto bytes = test_support::read_bytes(root / "test.bin");
  bool layout_ok = true;
  for (const std::size_t i : {std::size_t{0}, std::size_t{1}, std::size_t{199}}) {
    const std::uint8_t* record = bytes.data() + i * cifar100::record_bytes;
    layout_ok = layout_ok && record[0] == memory.test.coarse[i] && record[1] == memory.test.fine[i] &&
                std::equal(record + 2, record + cifar100::record_bytes, image(memory.test, i));
  }
  CHECK(layout_ok);

  // Writing again with another seed replaces every file whole.
  distopt::data::make_synthetic_cifar100(dir.path(), 12, 100, 0);
  const auto again = distopt::data::load_cifar100(dir.path(), {.train_records = 100, .test_records = 0});
  CHECK(same(again.train, distopt::data::synthetic_cifar100_split({.seed = 12, .train_records = 100},
                                                                 SyntheticSplit::train)));
  CHECK(again.test.size() == 0);
}

TEST_CASE("synthetic data: the class shows in the image and images of a class vary", "[data][synthetic]") {
  // With the nuisances off (no noise, clutter, distractor, colour swap, jitter, shift or rotation),
  // the class is what is left: a nearest-class-mean classifier on the central 10 x 10 pixels (the
  // object; the random background would swamp the distance) fitted on one split must name the
  // class of the other's images far more often than chance (1 in 100). If images did not depend on
  // the class, or all classes drew the same, it could not.
  const SyntheticOptions quiet{.seed = 5, .train_records = 1000, .test_records = 300, .noise = 0, .distractor = 0,
                               .clutter = 0, .hue_jitter = 0, .colour_swap = 0, .max_shift = 0, .max_rotation = 0};
  const auto fit = distopt::data::synthetic_cifar100_split(quiet, SyntheticSplit::train);
  const auto held_out = distopt::data::synthetic_cifar100_split(quiet, SyntheticSplit::test);
  std::vector<std::size_t> centre;  // byte offsets of the central 10 x 10 pixels, three channels
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t y = 11; y < 21; ++y)
      for (std::size_t x = 11; x < 21; ++x) centre.push_back(c * 1024 + y * 32 + x);
  const std::size_t pixels = centre.size(), per_class = fit.size() / 100;
  std::vector<double> means(cifar100::fine_classes * pixels, 0.0);
  for (std::size_t i = 0; i < fit.size(); ++i)
    for (std::size_t k = 0; k < pixels; ++k)
      means[fit.fine[i] * pixels + k] += image(fit, i)[centre[k]] / static_cast<double>(per_class);
  std::size_t hits = 0;
  for (std::size_t i = 0; i < held_out.size(); ++i) {
    std::size_t best = 0;
    double best_distance = 0;
    for (std::size_t c = 0; c < cifar100::fine_classes; ++c) {
      double distance = 0;
      for (std::size_t k = 0; k < pixels; ++k) {
        const double e = image(held_out, i)[centre[k]] - means[c * pixels + k];
        distance += e * e;
      }
      if (c == 0 || distance < best_distance) {
        best = c;
        best_distance = distance;
      }
    }
    hits += best == held_out.fine[i] ? 1 : 0;
  }
  const double accuracy = static_cast<double>(hits) / static_cast<double>(held_out.size());
  INFO("nearest-class-mean accuracy " << accuracy);
  CHECK(accuracy > 0.1);

  // With the default nuisances, two images of a class differ in most bytes (pose, colours,
  // clutter and noise vary).
  const auto d = distopt::data::synthetic_cifar100_split({.seed = 5, .train_records = 200}, SyntheticSplit::train);
  double least = 1.0;
  for (std::size_t c = 0; c < cifar100::fine_classes; ++c) {
    std::vector<std::size_t> members;
    for (std::size_t i = 0; i < d.size() && members.size() < 2; ++i)
      if (d.fine[i] == c) members.push_back(i);
    REQUIRE(members.size() == 2);
    least = std::min(least, fraction_differing(image(d, members[0]), image(d, members[1])));
  }
  CHECK(least > 0.5);
}

TEST_CASE("synthetic data: the difficulty knobs change the images but not the labels", "[data][synthetic]") {
  const SyntheticOptions base{.seed = 9, .train_records = 100};
  SyntheticOptions quiet = base;
  quiet.noise = 0;
  quiet.distractor = 0;
  quiet.clutter = 0;
  const auto a = distopt::data::synthetic_cifar100_split(base, SyntheticSplit::train);
  const auto b = distopt::data::synthetic_cifar100_split(quiet, SyntheticSplit::train);
  CHECK(a.fine == b.fine);
  CHECK(!std::equal(a.images.begin(), a.images.end(), b.images.begin()));
  // Without noise, neighbouring pixels are mostly equal (flat fills); with it, mostly not.
  const auto smooth = [](const LabelledImages& d) {
    std::size_t equal = 0, pairs = 0;
    for (std::size_t i = 0; i < d.size(); ++i)
      for (std::size_t k = 0; k + 1 < cifar100::pixels_per_image; ++k, ++pairs)
        equal += image(d, i)[k] == image(d, i)[k + 1] ? 1 : 0;
    return static_cast<double>(equal) / static_cast<double>(pairs);
  };
  CHECK(smooth(b) > 2 * smooth(a));
}

TEST_CASE("synthetic data: bad options are refused naming the field", "[data][synthetic]") {
  using distopt::data::synthetic_cifar100_split;
  const auto refuse = [](SyntheticOptions o, const std::string& field) {
    o.train_records = 10;
    INFO(field);
    CHECK_THROWS_WITH(synthetic_cifar100_split(o, SyntheticSplit::train), Contains(field));
  };
  SyntheticOptions o;
  o.noise = -1;
  refuse(o, "noise");
  o = {};
  o.distractor = 1.5;
  refuse(o, "distractor");
  o = {};
  o.clutter = -2;
  refuse(o, "clutter");
  o = {};
  o.colour_swap = std::nan("");
  refuse(o, "colour_swap");
  o = {};
  o.min_radius = 10;
  o.max_radius = 8;
  refuse(o, "max_radius");
  o = {};
  o.max_rotation = 400;
  refuse(o, "max_rotation");

  // A folder that cannot be created: a regular file stands in the way.
  const test_support::TempDir dir("synthetic-bad");
  test_support::write_bytes(dir / "blocker", std::vector<std::uint8_t>{1});
  CHECK_THROWS_AS(distopt::data::make_synthetic_cifar100(dir / "blocker", 0, 10, 10), std::runtime_error);
  CHECK_THROWS_WITH(distopt::data::make_synthetic_cifar100(dir / "blocker", 0, 10, 10), Contains("blocker"));
}
