// What every optimizer shares: the concept, non-finite gradients, determinism across thread
// counts, state save/load, reset and averaging, layout checks.
#include "distopt/core/archive.hpp"
#include "distopt/optim/optimizer.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "distopt/core/parallel.hpp"
#include "distopt/core/parameter_set.hpp"
#include "distopt/core/rng.hpp"
#include "distopt/optim/adamw.hpp"
#include "distopt/optim/lamb.hpp"
#include "distopt/optim/lars.hpp"
#include "distopt/optim/sgdm.hpp"

namespace optim = distopt::optim;
using distopt::ParameterSet;

using SgdmF = optim::Sgdm<ParameterSet>;
using AdamWF = optim::AdamW<ParameterSet>;
using LarsF = optim::Lars<ParameterSet>;
using LambF = optim::Lamb<ParameterSet>;

static_assert(optim::Optimizer<SgdmF>);
static_assert(optim::Optimizer<AdamWF>);
static_assert(optim::Optimizer<LarsF>);
static_assert(optim::Optimizer<LambF>);
static_assert(optim::Optimizer<optim::Lamb<distopt::ParameterSetD>>);
static_assert(!optim::Optimizer<ParameterSet>);

namespace {

// Options that exercise every buffer: momentum for SGDM and LARS, amsgrad for AdamW.
template <class O>
typename O::options_type full_options(optim::NonFinite policy = optim::NonFinite::raise) {
  if constexpr (std::is_same_v<O, SgdmF>) return {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .on_non_finite = policy};
  if constexpr (std::is_same_v<O, AdamWF>) return {.lr = 1e-2, .amsgrad = true, .on_non_finite = policy};
  if constexpr (std::is_same_v<O, LarsF>) return {.lr = 0.5, .weight_decay = 1e-3, .on_non_finite = policy};
  if constexpr (std::is_same_v<O, LambF>) return {.lr = 1e-2, .max_grad_norm = 10.0, .on_non_finite = policy};
}

// A LeNet-sized layout (blocks of 2-D weights and 1-D biases, several work items per block).
ParameterSet layout() {
  ParameterSet params;
  params.add("conv.weight", {64, 3, 5, 5});
  params.add("conv.bias", {64});
  params.add("fc.weight", {100, 700});
  params.add("fc.bias", {100});
  distopt::Rng rng(8);
  for (std::size_t b = 0; b < params.num_blocks(); ++b)  // blocks only: padding stays zero
    for (float& w : params.value(b)) w = static_cast<float>(rng.normal(0.0, 0.1));
  return params;
}

// A deterministic gradient that depends on the weights and the step.
void gradient(ParameterSet& params, int step) {
  distopt::Rng rng = distopt::Rng(99).split(static_cast<std::uint64_t>(step));
  for (const auto& b : params.blocks())
    for (auto i = b.offset; i < b.end(); ++i)
      params.grads()(i) = 0.5f * params.values()(i) + static_cast<float>(rng.normal(0.0, 0.05));
}

template <class O>
ParameterSet train(int threads, int steps) {
  distopt::parallel::ThreadCount scope(threads);
  ParameterSet params = layout();
  O opt(params, full_options<O>());
  for (int s = 0; s < steps; ++s) {
    gradient(params, s);
    opt.step(params);
  }
  return params;
}

bool same_bits(const ParameterSet& a, const ParameterSet& b) {
  return std::memcmp(a.values().data(), b.values().data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

}  // namespace

TEMPLATE_TEST_CASE("Optimizers give the same bits with 1, 2 and 3 threads", "[optim][determinism]", SgdmF, AdamWF, LarsF, LambF) {
  const ParameterSet one = train<TestType>(1, 5);
  CHECK(same_bits(one, train<TestType>(2, 5)));
  CHECK(same_bits(one, train<TestType>(3, 5)));
  CHECK_FALSE(same_bits(one, layout()));  // and the weights did move
}

TEMPLATE_TEST_CASE("A non-finite gradient raises naming block and step, or is skipped and counted", "[optim][non_finite]",
                   SgdmF, AdamWF, LarsF, LambF) {
  const float bad = GENERATE(std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity());
  ParameterSet params = layout();
  TestType opt(params, full_options<TestType>());
  gradient(params, 0);
  REQUIRE(opt.step(params));

  gradient(params, 1);
  params.grad("fc.weight")(1234) = bad;
  const ParameterSet before = params;
  const auto state_before = opt.state();
  REQUIRE_THROWS_AS(opt.step(params), std::domain_error);
  REQUIRE_THROWS_WITH(opt.step(params), Catch::Matchers::Contains("non-finite gradient in block 'fc.weight' at step 2"));
  CHECK(same_bits(params, before));  // nothing applied
  CHECK(opt.step_count() == 1);

  TestType skipping(before, full_options<TestType>(optim::NonFinite::skip));
  ParameterSet copy = before;
  CHECK_FALSE(skipping.step(copy));
  CHECK(skipping.skipped_steps() == 1);
  CHECK(skipping.step_count() == 0);
  CHECK(same_bits(copy, before));
  for (const auto& name : skipping.state().buffer_names()) {  // state untouched too
    const auto buffer = skipping.state().buffer(name);
    CHECK(std::all_of(buffer.begin(), buffer.end(), [](float x) { return x == 0.0f; }));
  }
  for (const auto& name : opt.state().buffer_names()) {  // and for the raising optimizer
    const auto now = opt.state().buffer(name);
    const auto then = state_before.buffer(name);
    CHECK(std::memcmp(now.data(), then.data(), now.size_bytes()) == 0);
  }
}

TEMPLATE_TEST_CASE("Saved optimizer state resumes the same trajectory bit for bit", "[optim][state]", SgdmF, AdamWF, LarsF, LambF) {
  ParameterSet params = layout();
  TestType opt(params, full_options<TestType>());
  for (int s = 0; s < 3; ++s) {
    gradient(params, s);
    opt.step(params);
  }
  distopt::Archive archive;
  opt.save_state(archive);
  const auto file = std::filesystem::temp_directory_path() / ("distopt_optim_state_" + opt.state().kind() + ".npz");
  archive.save(file);
  const ParameterSet snapshot = params;

  for (int s = 3; s < 6; ++s) {
    gradient(params, s);
    opt.step(params);
  }

  ParameterSet resumed_params = snapshot;
  TestType resumed(resumed_params, full_options<TestType>());
  resumed.load_state(distopt::Archive::load(file));
  std::filesystem::remove(file);
  CHECK(resumed.step_count() == 3);
  for (int s = 3; s < 6; ++s) {
    gradient(resumed_params, s);
    resumed.step(resumed_params);
  }
  CHECK(same_bits(resumed_params, params));
  for (const auto& name : opt.state().buffer_names()) {
    const auto a = opt.state().buffer(name);
    const auto b = resumed.state().buffer(name);
    CHECK(std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
  }
}

TEMPLATE_TEST_CASE("Loading state of another layout or optimizer names the field", "[optim][state]", SgdmF, LambF) {
  ParameterSet params = layout();
  TestType opt(params, full_options<TestType>());
  distopt::Archive archive;
  opt.save_state(archive);

  ParameterSet other;
  other.add("conv.weight", {64, 3, 5, 5});
  other.add("conv.bias", {64});
  other.add("fc.weight", {100, 701});
  other.add("fc.bias", {100});
  TestType mismatched(other, full_options<TestType>());
  const std::string first_buffer = opt.state().buffer_names().front();
  REQUIRE_THROWS_MATCHES(mismatched.load_state(archive), std::invalid_argument,
                         Catch::Matchers::Message("optimizer state: field 'optimizer." + first_buffer +
                                                  ".fc.weight' has shape [100, 700], this layout needs [100, 701]"));
  CHECK(mismatched.step_count() == 0);

  AdamWF adam(params, {});
  REQUIRE_THROWS_WITH(adam.load_state(archive), Catch::Matchers::Contains("field 'optimizer.kind' is '" + opt.state().kind() +
                                                                          "', this optimizer is 'AdamW'"));
}

TEMPLATE_TEST_CASE("reset_state gives a fresh optimizer, and average makes replicas' buffers their mean", "[optim][state]",
                   SgdmF, AdamWF, LarsF, LambF) {
  ParameterSet a = layout();
  ParameterSet b = layout();
  TestType opt_a(a, full_options<TestType>());
  TestType opt_b(b, full_options<TestType>());
  gradient(a, 0);
  gradient(b, 1);
  opt_a.step(a);
  opt_b.step(b);

  const std::string name = opt_a.state().buffer_names().front();
  std::vector<float> expected(opt_a.state().buffer(name).size());
  for (std::size_t i = 0; i < expected.size(); ++i)
    expected[i] = (opt_a.state().buffer(name)[i] + opt_b.state().buffer(name)[i]) * 0.5f;
  std::array<optim::OptimizerState<float>*, 2> replicas{&opt_a.state(), &opt_b.state()};
  optim::OptimizerState<float>::average(replicas);
  const auto averaged_a = opt_a.state().buffer(name);
  const auto averaged_b = opt_b.state().buffer(name);
  CHECK(std::equal(expected.begin(), expected.end(), averaged_a.begin()));
  CHECK(std::equal(expected.begin(), expected.end(), averaged_b.begin()));

  ParameterSet fresh_params = layout();
  TestType fresh(fresh_params, full_options<TestType>());
  opt_a.reset_state();
  CHECK(opt_a.step_count() == 0);
  ParameterSet c = layout();
  gradient(c, 7);
  ParameterSet d = c;
  opt_a.step(c);
  fresh.step(d);
  CHECK(same_bits(c, d));
}

TEST_CASE("step refuses a parameter container of another layout", "[optim]") {
  ParameterSet params = layout();
  SgdmF opt(params, {});
  ParameterSet other;
  other.add("w", {10});
  REQUIRE_THROWS_WITH(opt.step(other), Catch::Matchers::Contains("Sgdm: step on a parameter container of another layout"));
}

TEST_CASE("Per-block lr_scale and decay act like PyTorch parameter groups", "[optim]") {
  ParameterSet params;
  params.add("w", {4, 4});
  params.add("frozen", {4, 4}, {.lr_scale = 0.0f});
  params.values().setOnes();
  params.grads().setOnes();
  optim::AdamW<ParameterSet> adam(params, {.lr = 0.1, .weight_decay = 0.1});
  adam.step(params);
  CHECK((params.value("frozen").array() == 1.0f).all());  // lr_scale 0: neither step nor decay
  CHECK((params.value("w").array() < 1.0f).all());
}
