#include "distopt/core/parallel.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "distopt/core/rng.hpp"

namespace parallel = distopt::parallel;

namespace {

// Values spanning many magnitudes, so the order of additions shows in the low bits.
std::vector<float> awkward_values(std::size_t n) {
  distopt::Rng rng(17);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal() * std::pow(10.0, rng.uniform(-6.0, 6.0)));
  return v;
}

float chunked_sum(const std::vector<float>& v, std::ptrdiff_t chunk) {
  return parallel::ordered_sum<float>(static_cast<std::ptrdiff_t>(v.size()), chunk,
                                      [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
                                        float s = 0;
                                        for (auto i = begin; i < end; ++i) s += v[static_cast<std::size_t>(i)];
                                        return s;
                                      });
}

}  // namespace

TEST_CASE("Chunks cut a range into fixed pieces, the last one shorter", "[core][parallel]") {
  const parallel::Chunks chunks{10, 4};
  CHECK(chunks.count() == 3);
  CHECK(chunks.begin(2) == 8);
  CHECK(chunks.end(2) == 10);
  CHECK(parallel::Chunks{0, 4}.count() == 0);
  CHECK(parallel::Chunks{8, 4}.count() == 2);
}

TEST_CASE("for_each_chunk visits every index exactly once, for any thread count", "[core][parallel]") {
  for (int threads : {1, 2, 3}) {
    parallel::ThreadCount scope(threads);
    std::vector<int> visits(1001, 0);
    parallel::for_each_chunk(1001, 64, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (auto i = begin; i < end; ++i) ++visits[static_cast<std::size_t>(i)];
    });
    for (int v : visits) REQUIRE(v == 1);
  }
}

TEST_CASE("ordered_sum gives the same bits with 1, 2, 3 and 4 threads", "[core][parallel]") {
  const auto values = awkward_values(100003);
  float reference = 0;
  {
    parallel::ThreadCount scope(1);
    reference = chunked_sum(values, 1024);
  }
  // The fixed order is the chunk order: a serial sum of chunk sums.
  float by_hand = 0;
  for (std::size_t begin = 0; begin < values.size(); begin += 1024) {
    float s = 0;
    for (std::size_t i = begin; i < std::min(values.size(), begin + 1024); ++i) s += values[i];
    by_hand += s;
  }
  CHECK(std::memcmp(&reference, &by_hand, sizeof(float)) == 0);

  for (int threads : {2, 3, 4}) {
    parallel::ThreadCount scope(threads);
    const float sum = chunked_sum(values, 1024);
    CHECK(std::memcmp(&sum, &reference, sizeof(float)) == 0);
  }
  // The chunk size is part of the algorithm: another one groups differently.
  CHECK(chunked_sum(values, 1000) != reference);
}

TEST_CASE("ordered_sum refuses scratch smaller than the chunk count", "[core][parallel]") {
  std::vector<double> scratch(2);
  auto partial = [](std::ptrdiff_t begin, std::ptrdiff_t end) { return static_cast<double>(end - begin); };
  CHECK(parallel::ordered_sum<double>(20, 10, partial, std::span<double>(scratch)) == 20.0);
  REQUIRE_THROWS_WITH(parallel::ordered_sum<double>(21, 10, partial, std::span<double>(scratch)),
                      Catch::Matchers::Contains("scratch holds 2 slots, 3 chunks need one each"));
}

TEST_CASE("ThreadCount sets and restores the team size", "[core][parallel]") {
  const int before = parallel::max_threads();
  {
    parallel::ThreadCount scope(3);
    CHECK(parallel::max_threads() == 3);
  }
  CHECK(parallel::max_threads() == before);
  REQUIRE_THROWS_AS(parallel::ThreadCount(0), std::invalid_argument);
}

TEST_CASE("Inside a parallel region the helpers run on the calling thread", "[core][parallel]") {
  parallel::ThreadCount scope(2);
  std::vector<int> nested_team(2, -1);
#pragma omp parallel num_threads(2)
  {
    const int me = omp_get_thread_num();
    CHECK(parallel::in_parallel());
    int team = 0;
    parallel::for_each_chunk(100, 10, [&](std::ptrdiff_t, std::ptrdiff_t) {
#pragma omp atomic
      team += omp_get_num_threads() == 1 ? 0 : 1;
    });
    nested_team[static_cast<std::size_t>(me)] = team;
  }
  CHECK(nested_team == std::vector<int>{0, 0});
}
