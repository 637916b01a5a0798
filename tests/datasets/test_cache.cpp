#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>

#include "distopt/core/archive.hpp"
#include "distopt/data/cache.hpp"
#include "../support/data.hpp"
#include "../support/files.hpp"

using namespace distopt::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

Cifar100 small_source(std::uint64_t seed) {
  Cifar100 source;
  source.train = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(20, 6)), seed);
  source.test = test_support::random_images(test_support::class_labels(std::vector<std::size_t>(10, 3)), seed + 100);
  return source;
}

bool same(const LabelledImages& a, const LabelledImages& b) {
  return a.images == b.images && a.fine == b.fine && a.coarse == b.coarse;
}

bool same(const PreparedData& a, const PreparedData& b) {
  return same(a.train, b.train) && same(a.validation, b.validation) && same(a.test, b.test) && a.stats == b.stats &&
         a.split == b.split && a.source == b.source;
}

std::size_t leftovers(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) n += entry.path().filename().string().starts_with(".") ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("prepare_data splits the training set and takes its statistics", "[data][cache]") {
  const Cifar100 source = small_source(1);
  const PreparedData data = prepare_data(source, {.validation_ratio = 0.25, .seed = 4});
  CHECK(data.train.size() == 90);
  CHECK(data.validation.size() == 30);
  CHECK(same(data.test, source.test));
  CHECK(data.stats == channel_statistics(data.train));
  CHECK(data.stats != channel_statistics(source.train));  // validation pixels stay out
  CHECK(data.source == fingerprint(source));
}

TEST_CASE("save_data and load_data round trip through one .npz file", "[data][cache]") {
  test_support::TempDir dir("cache");
  const Cifar100 source = small_source(2);
  const SplitOptions split{.validation_ratio = 0.2, .seed = 7, .stratified = false};
  const PreparedData data = prepare_data(source, split);
  save_data(dir / "prepared", data);
  CHECK(leftovers(dir.path()) == 0);

  const PreparedData loaded = load_data(dir / "prepared", fingerprint(source), split);
  CHECK(same(loaded, data));

  // One archive, the arrays as NumPy reads them (the Archive's own tests check that format).
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir / "prepared")) ++files;
  CHECK(files == 1);
  const distopt::Archive archive = distopt::Archive::load(dir / "prepared" / "prepared.npz");
  CHECK(archive.dtype("train_images") == "|u1");
  CHECK(archive.shape("train_images") == std::vector<std::ptrdiff_t>{96, 3, 32, 32});
  CHECK(archive.dtype("mean") == "<f8");
  CHECK(archive.get_string("format") == "distopt-prepared 3");
}

TEST_CASE("load_data refuses a cache of another source or split, naming the field", "[data][cache]") {
  test_support::TempDir dir("cache");
  const Cifar100 source = small_source(3);
  const SplitOptions split{.validation_ratio = 0.1, .seed = 1};
  save_data(dir / "c", prepare_data(source, split));

  Cifar100 other = source;
  other.train.images(5, 1, 2, 3) ^= 1;  // one bit of one pixel
  CHECK_THROWS_WITH(load_data(dir / "c", fingerprint(other), split), Contains("prepared.npz") && Contains("source.train"));
  other = source;
  other.test.fine[0] = static_cast<std::uint8_t>((other.test.fine[0] + 1) % 100);
  CHECK_THROWS_WITH(load_data(dir / "c", fingerprint(other), split), Contains("source.test"));
  CHECK_THROWS_WITH(load_data(dir / "c", fingerprint(source), {.validation_ratio = 0.1, .seed = 2}), Contains("split.seed"));
  CHECK_THROWS_WITH(load_data(dir / "c", fingerprint(source), {.validation_ratio = 0.2, .seed = 1}),
                    Contains("split.validation_ratio"));
}

TEST_CASE("load_data: truncated, altered and missing files are named", "[data][cache]") {
  test_support::TempDir dir("cache");
  const Cifar100 source = small_source(4);
  save_data(dir / "c", prepare_data(source, {}));
  const fs::path file = dir / "c" / "prepared.npz";
  auto bytes = test_support::read_bytes(file);

  SECTION("truncated") {
    test_support::write_bytes(file, std::span(bytes).first(bytes.size() - 1));
    CHECK_THROWS_AS(load_data(dir / "c"), std::runtime_error);
    CHECK_THROWS_WITH(load_data(dir / "c"), Contains("prepared.npz"));
  }
  SECTION("one byte of the images changed") {
    bytes[bytes.size() / 2] ^= 0x40;
    test_support::write_bytes(file, bytes);
    CHECK_THROWS_WITH(load_data(dir / "c"), Contains("prepared.npz") && Contains("CRC"));
  }
  SECTION("no cache at all") {
    CHECK_THROWS_WITH(load_data(dir / "nothing"), Contains("prepared.npz") && Contains("missing"));
  }
  SECTION("load_or_prepare rebuilds a damaged cache") {
    bytes[bytes.size() / 2] ^= 0x40;
    test_support::write_bytes(file, bytes);
    bool loaded = true;
    const PreparedData rebuilt = load_or_prepare(dir / "c", source, {}, &loaded);
    CHECK_FALSE(loaded);
    CHECK(same(load_data(dir / "c"), rebuilt));
  }
}

TEST_CASE("save_data replaces a cache of the older format whole", "[data][cache]") {
  test_support::TempDir dir("cache");
  fs::create_directories(dir / "c");
  test_support::write_bytes(dir / "c" / "manifest.txt", std::vector<std::uint8_t>{'f', 'o', 'r', 'm', 'a', 't'});
  bool loaded = true;
  const PreparedData data = load_or_prepare(dir / "c", small_source(9), {}, &loaded);
  CHECK_FALSE(loaded);
  CHECK_FALSE(fs::exists(dir / "c" / "manifest.txt"));
  CHECK(same(load_data(dir / "c"), data));
}

TEST_CASE("save_data replaces a cache whole, and a failed save leaves the old one", "[data][cache]") {
  test_support::TempDir dir("cache");
  const PreparedData first = prepare_data(small_source(5), {});
  const PreparedData second = prepare_data(small_source(6), {});
  save_data(dir / "c", first);
  save_data(dir / "c", second);
  CHECK(same(load_data(dir / "c"), second));
  CHECK(leftovers(dir.path()) == 0);

  PreparedData broken = first;
  broken.validation.fine.pop_back();
  CHECK_THROWS_WITH(save_data(dir / "c", broken), Contains("validation"));
  CHECK(same(load_data(dir / "c"), second));
  CHECK(leftovers(dir.path()) == 0);
}

TEST_CASE("load_or_prepare reuses a matching cache and rebuilds a stale one", "[data][cache]") {
  test_support::TempDir dir("cache");
  const Cifar100 source = small_source(7);
  bool loaded = true;
  const PreparedData a = load_or_prepare(dir / "c", source, {}, &loaded);
  CHECK_FALSE(loaded);
  const PreparedData b = load_or_prepare(dir / "c", source, {}, &loaded);
  CHECK(loaded);
  CHECK(same(a, b));
  const Cifar100 other = small_source(8);
  const PreparedData c = load_or_prepare(dir / "c", other, {}, &loaded);
  CHECK_FALSE(loaded);
  CHECK(c.source == fingerprint(other));
  CHECK(same(load_data(dir / "c"), c));
}

TEST_CASE("fingerprint: the same for any thread count, different for any change", "[data][cache]") {
  std::vector<std::uint8_t> bytes(3 * (1u << 20) + 77);
  distopt::Rng rng(1);
  for (auto& b : bytes) b = static_cast<std::uint8_t>(rng.below(256));
  std::uint64_t one = 0, two = 0;
  {
    distopt::parallel::ThreadCount threads(1);
    one = fingerprint(bytes);
  }
  {
    distopt::parallel::ThreadCount threads(2);
    two = fingerprint(bytes);
  }
  CHECK(one == two);
  for (const std::size_t at : {std::size_t{0}, std::size_t{1} << 20, bytes.size() - 1}) {
    auto changed = bytes;
    changed[at] ^= 1;
    CHECK(fingerprint(changed) != one);
  }
  bytes.push_back(0);
  CHECK(fingerprint(bytes) != one);
}
