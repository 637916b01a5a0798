#include "distopt/core/rng.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

using distopt::Philox4x32;
using distopt::Rng;
using distopt::RngState;

TEST_CASE("Philox4x32-10 reproduces Random123's known-answer vectors", "[core][rng]") {
  // tests/kat_vectors of Random123 (D. E. Shaw Research): counter, key, expected output.
  CHECK(Philox4x32::apply({0, 0, 0, 0}, {0, 0}) ==
        Philox4x32::Counter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(Philox4x32::apply({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        Philox4x32::Counter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(Philox4x32::apply({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        Philox4x32::Counter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
  // Usable at compile time too.
  STATIC_REQUIRE(Philox4x32::apply({0, 0, 0, 0}, {0, 0})[0] == 0x6627e8d5);
}

TEST_CASE("Rng words are the Philox blocks of (seed, stream) in counter order", "[core][rng]") {
  Rng rng(0x299f31d0a4093822ull, 0x0370734413198a2eull);
  rng = rng.at(0x85a308d3243f6a88ull);
  const std::array<std::uint32_t, 4> words{rng(), rng(), rng(), rng()};
  CHECK(words == std::array<std::uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("Same seed and stream give the same numbers, other seeds or streams other numbers", "[core][rng]") {
  auto draw = [](Rng rng) {
    std::vector<std::uint32_t> out(64);
    for (auto& x : out) x = rng.next_u32();
    return out;
  };
  CHECK(draw(Rng(7)) == draw(Rng(7)));
  CHECK(draw(Rng(7)) != draw(Rng(8)));
  CHECK(draw(Rng(7, 1)) != draw(Rng(7, 2)));
  CHECK(draw(Rng(7).split(3)) == draw(Rng(7).split(3)));
  CHECK(draw(Rng(7).split(3)) != draw(Rng(7).split(4)));
  CHECK(draw(Rng(7).split(3)) != draw(Rng(7)));
  // A path is ordered: (epoch 1, sample 2) is not (epoch 2, sample 1).
  CHECK(draw(Rng(7).split({1, 2})) != draw(Rng(7).split({2, 1})));
  CHECK(draw(Rng(7).split({1, 2})) == draw(Rng(7).split(1).split(2)));
  // Splitting does not depend on the parent's position, only on its stream.
  Rng advanced(7);
  for (int i = 0; i < 10; ++i) advanced.next_u32();
  CHECK(draw(advanced.split(5)) == draw(Rng(7).split(5)));
}

TEST_CASE("at(block) jumps exactly to word 4 * block of the stream", "[core][rng]") {
  Rng walker(11, 3);
  for (int i = 0; i < 4 * 25; ++i) walker.next_u32();
  Rng jumped = Rng(11, 3).at(25);
  for (int i = 0; i < 12; ++i) CHECK(walker.next_u32() == jumped.next_u32());
}

TEST_CASE("A saved RngState resumes the sequence exactly, mid-block included", "[core][rng]") {
  for (int consumed : {0, 1, 3, 4, 6}) {
    Rng rng(123, 9);
    for (int i = 0; i < consumed; ++i) rng.next_u32();
    const RngState saved = rng.state();
    Rng resumed(saved);
    CHECK(resumed.state() == saved);
    for (int i = 0; i < 10; ++i) CHECK(resumed.next_u32() == rng.next_u32());
  }
  REQUIRE_THROWS_WITH(Rng(RngState{.seed = 1, .stream = 0, .block = 0, .lane = 2}),
                      Catch::Matchers::Contains("lane 2 of a block before block 0"));
  REQUIRE_THROWS_WITH(Rng(RngState{.seed = 1, .stream = 0, .block = 3, .lane = 5}),
                      Catch::Matchers::Contains("lane must be in [0, 4], got 5"));
}

TEST_CASE("uniform() covers the unit interval evenly", "[core][rng]") {
  Rng rng(2024);
  constexpr int n = 200000;
  std::array<int, 10> bins{};
  double sum = 0;
  int outside = 0;
  for (int i = 0; i < n; ++i) {
    const float u = rng.uniform();
    outside += (u < 0.0f || u >= 1.0f) ? 1 : 0;
    sum += u;
    ++bins[std::min<std::size_t>(static_cast<std::size_t>(u * 10.0f), 9)];
  }
  REQUIRE(outside == 0);
  CHECK(sum / n == Approx(0.5).margin(5 * std::sqrt(1.0 / 12 / n)));
  // Chi-square with 9 degrees of freedom: 27.9 is its 0.999 quantile.
  double chi2 = 0;
  for (int count : bins) chi2 += (count - n / 10.0) * (count - n / 10.0) / (n / 10.0);
  CHECK(chi2 < 27.9);

  const double d = rng.uniform_double();
  CHECK((d >= 0.0 && d < 1.0));
  const double ranged = rng.uniform(-3.0, -2.0);
  CHECK((ranged >= -3.0 && ranged < -2.0));
}

TEST_CASE("below(n) is uniform on 0 to n - 1 and rejects n = 0", "[core][rng]") {
  Rng rng(5);
  constexpr std::uint32_t n = 7;
  constexpr int draws = 70000;
  std::array<int, n> counts{};
  int outside = 0;
  for (int i = 0; i < draws; ++i) {
    const std::uint32_t k = rng.below(n);
    if (k < n)
      ++counts[k];
    else
      ++outside;
  }
  REQUIRE(outside == 0);
  double chi2 = 0;
  for (int c : counts) chi2 += (c - draws / double(n)) * (c - draws / double(n)) / (draws / double(n));
  CHECK(chi2 < 22.5);  // 0.999 quantile, 6 degrees of freedom
  CHECK(rng.below(1) == 0);
  // A range just above 2^31 rejects often: values still stay in range.
  int out_of_range = 0;
  for (int i = 0; i < 1000; ++i) out_of_range += rng.below(0x80000001u) < 0x80000001u ? 0 : 1;
  CHECK(out_of_range == 0);
  REQUIRE_THROWS_WITH(rng.below(0), Catch::Matchers::Contains("n must be positive, got 0"));
}

TEST_CASE("normal() has mean 0 and variance 1", "[core][rng]") {
  Rng rng(99);
  constexpr int n = 100000;
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < n; ++i) {
    const double x = rng.normal();
    sum += x;
    sum_sq += x * x;
  }
  REQUIRE(std::isfinite(sum_sq));
  const double mean = sum / n;
  CHECK(std::abs(mean) < 5.0 / std::sqrt(n));
  CHECK(sum_sq / n - mean * mean == Approx(1.0).margin(0.02));
  CHECK(rng.normal(10.0, 0.0) == 10.0);
}

TEST_CASE("shuffle gives a permutation that depends only on the stream", "[core][rng]") {
  std::vector<int> a(100), b(100);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 0);
  Rng(4).shuffle(a.begin(), a.end());
  Rng(4).shuffle(b.begin(), b.end());
  CHECK(a == b);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> identity(100);
  std::iota(identity.begin(), identity.end(), 0);
  CHECK(sorted == identity);
  CHECK(a != identity);

  STATIC_REQUIRE(std::uniform_random_bit_generator<Rng>);
  Rng engine(1);
  std::shuffle(b.begin(), b.end(), engine);  // usable with the standard algorithms
  std::sort(b.begin(), b.end());
  CHECK(b == identity);
}
