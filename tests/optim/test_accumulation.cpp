#include "distopt/optim/accumulation.hpp"

#include <catch2/catch.hpp>

#include "distopt/core/parameter_set.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/optim/lamb.hpp"
#include "distopt/optim/sgdm.hpp"

namespace optim = distopt::optim;

TEST_CASE("split_batch cuts a batch into near-equal micro-batches whose weights sum to 1", "[optim][accumulation]") {
  const auto micro = optim::split_batch(16384, 4096);
  REQUIRE(micro.size() == 4);
  for (const auto& m : micro) CHECK(m.end - m.begin == 4096);
  CHECK(optim::accumulation_steps(16384, 4096) == 4);
  CHECK(optim::accumulation_steps(4096, 4096) == 1);
  CHECK(optim::accumulation_steps(4097, 4096) == 2);

  const auto odd = optim::split_batch(10, 4);  // 3 micro-batches: 4, 3, 3
  REQUIRE(odd.size() == 3);
  CHECK(odd[0].begin == 0);
  CHECK(odd[0].end == 4);
  CHECK(odd[1].end == 7);
  CHECK(odd[2].end == 10);
  double total = 0;
  for (const auto& m : odd) total += m.weight;
  CHECK(total == Approx(1.0));
  CHECK(odd[0].weight == Approx(0.4));
  REQUIRE_THROWS_WITH(optim::split_batch(0, 4), Catch::Matchers::Contains("batch must be > 0, got 0"));
  REQUIRE_THROWS_WITH(optim::split_batch(8, 0), Catch::Matchers::Contains("max_micro_batch must be > 0, got 0"));
}

namespace {

// Least squares on a batch: L = mean_i 0.5 * (x_i . w - y_i)^2. Adds weight * dL/dw into grads.
struct LinearRegression {
  Eigen::MatrixXf x;
  Eigen::VectorXf y;
  void accumulate_gradient(distopt::ParameterSet& params, std::int64_t begin, std::int64_t end, float weight) const {
    const auto rows = static_cast<Eigen::Index>(end - begin);
    const auto xb = x.middleRows(static_cast<Eigen::Index>(begin), rows);
    const Eigen::VectorXf residual = xb * params.value(0) - y.segment(static_cast<Eigen::Index>(begin), rows);
    params.grad(0) += (weight / static_cast<float>(rows)) * (xb.transpose() * residual);
  }
};

template <class Optimizer, class Options>
void check_accumulation_equals_large_batch(Options options) {
  distopt::Rng rng(3);
  LinearRegression problem{Eigen::MatrixXf(1000, 8), Eigen::VectorXf(1000)};
  for (auto& v : problem.x.reshaped()) v = static_cast<float>(rng.normal());
  for (auto& v : problem.y) v = static_cast<float>(rng.normal());

  distopt::ParameterSet large;
  large.add("w", {8, 1});  // 2-D: LAMB adapts it
  large.value(0).setConstant(0.5f);
  distopt::ParameterSet accumulated = large;
  Optimizer large_opt(large, options);
  Optimizer accumulated_opt(accumulated, options);

  for (int step = 0; step < 20; ++step) {
    large.zero_grad();
    problem.accumulate_gradient(large, 0, 1000, 1.0f);
    large_opt.step(large);

    accumulated.zero_grad();
    for (const auto& micro : optim::split_batch(1000, 256))  // 4 micro-batches of 250
      problem.accumulate_gradient(accumulated, micro.begin, micro.end, static_cast<float>(micro.weight));
    accumulated_opt.step(accumulated);
  }
  CHECK(accumulated.values().isApprox(large.values(), 1e-5f));
  CHECK((accumulated.values() - Eigen::VectorXf::Constant(accumulated.size(), 0.5f)).norm() > 0.1f);  // it trained
}

}  // namespace

TEST_CASE("Accumulated micro-batch gradients give the large-batch step", "[optim][accumulation]") {
  check_accumulation_equals_large_batch<optim::Sgdm<distopt::ParameterSet>>(optim::SgdmOptions{.lr = 0.1, .momentum = 0.9});
  check_accumulation_equals_large_batch<optim::Lamb<distopt::ParameterSet>>(optim::LambOptions{.lr = 0.05});
}
