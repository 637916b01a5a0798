#include "distopt/optim/schedule.hpp"

#include <catch2/catch.hpp>

#include <fstream>

#include <nlohmann/json.hpp>

namespace optim = distopt::optim;

namespace {

optim::Schedule from_case(const nlohmann::json& c) {
  const auto& p = c["params"];
  const double lr = p["base_lr"];
  const std::string kind = c["kind"];
  if (kind == "cosine") return optim::Cosine{.lr = lr, .t_max = p["T_max"], .eta_min = p["eta_min"]};
  if (kind == "step") return optim::StepDecay{.lr = lr, .step_size = p["step_size"], .gamma = p["gamma"]};
  if (kind == "multistep") return optim::MultiStep{.lr = lr, .milestones = p["milestones"], .gamma = p["gamma"]};
  if (kind == "polynomial") return optim::Polynomial{.lr = lr, .total_steps = p["total_iters"], .power = p["power"]};
  REQUIRE(p["end_factor"] == 1.0);
  REQUIRE(p["warmup_iters"] == p["milestone"]);
  if (kind == "warmup_cosine")
    return optim::warmup(p["milestone"], p["start_factor"], optim::Cosine{.lr = lr, .t_max = p["T_max"], .eta_min = p["eta_min"]});
  if (kind == "warmup_multistep")
    return optim::warmup(p["milestone"], p["start_factor"],
                         optim::MultiStep{.lr = lr, .milestones = p["milestones"], .gamma = p["gamma"]});
  FAIL("unknown schedule kind " << kind);
  throw;
}

}  // namespace

TEST_CASE("Schedules match torch.optim.lr_scheduler sequences to 1e-7", "[optim][schedule][golden]") {
  std::ifstream in(std::string(DISTOPT_TEST_DATA_DIR) + "/optim/schedules.json");
  REQUIRE(in.good());
  const auto cases = nlohmann::json::parse(in)["cases"];
  REQUIRE(cases.size() >= 8);
  for (const auto& c : cases) {
    const optim::Schedule schedule = from_case(c);
    const auto& lrs = c["lrs"];
    for (std::size_t t = 0; t < lrs.size(); ++t) {
      const double expected = lrs[t];
      const double got = schedule(static_cast<std::int64_t>(t));
      INFO(c["name"].get<std::string>() << " at step " << t << ": torch " << expected << ", distopt " << got);
      REQUIRE(std::abs(got - expected) <= 1e-7 * std::max(std::abs(expected), 1e-9));
    }
  }
}

TEST_CASE("A schedule is a pure function of the step", "[optim][schedule]") {
  const optim::Schedule s = optim::warmup(5, 0.1, optim::Cosine{.lr = 0.4, .t_max = 100});
  const double at_37 = s(37);
  for (int i = 0; i < 100; ++i) (void)s(i);
  CHECK(s(37) == at_37);  // evaluating other steps changes nothing
  const optim::Schedule copy = s;
  CHECK(copy(37) == at_37);
  CHECK(s(0) == Approx(0.04));
  CHECK(s(5) == Approx(0.4));
  CHECK(optim::Schedule(optim::Constant{.lr = 0.3})(1000000) == 0.3);
}

TEST_CASE("Batch-size scaling rules", "[optim][schedule]") {
  CHECK(optim::linear_scaling(0.1, 256, 8192) == Approx(3.2));
  CHECK(optim::sqrt_scaling(0.1, 256, 1024) == Approx(0.2));
  REQUIRE_THROWS_WITH(optim::linear_scaling(0.1, 0, 64), Catch::Matchers::Contains("batch sizes must be > 0, got 0 and 64"));
}

TEST_CASE("Schedules reject bad parameters naming the field and value", "[optim][schedule]") {
  using Catch::Matchers::Message;
  REQUIRE_THROWS_MATCHES(optim::Schedule(optim::Cosine{.lr = 0.1, .t_max = 0}), std::invalid_argument,
                         Message("Cosine: t_max must be > 0, got 0"));
  REQUIRE_THROWS_MATCHES(optim::Schedule(optim::Constant{.lr = -1}), std::invalid_argument,
                         Message("Constant: lr must be finite and >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(optim::Schedule(optim::StepDecay{.lr = 0.1, .step_size = -3}), std::invalid_argument,
                         Message("StepDecay: step_size must be > 0, got -3"));
  REQUIRE_THROWS_MATCHES(optim::Schedule(optim::MultiStep{.lr = 0.1, .milestones = {10, 5}}), std::invalid_argument,
                         Message("MultiStep: milestones must increase, got [10, 5]"));
  REQUIRE_THROWS_MATCHES(optim::Schedule(optim::Polynomial{.lr = 0.1, .total_steps = 10, .power = -1}),
                         std::invalid_argument, Message("Polynomial: power must be >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(optim::warmup(0, 0.1, optim::Constant{.lr = 0.1}), std::invalid_argument,
                         Message("Warmup: steps must be > 0, got 0"));
  REQUIRE_THROWS_MATCHES(optim::warmup(5, 1.5, optim::Constant{.lr = 0.1}), std::invalid_argument,
                         Message("Warmup: start_factor must be in [0, 1], got 1.5"));
  REQUIRE_THROWS_MATCHES(optim::Schedule(optim::Constant{.lr = 0.1})(-1), std::invalid_argument,
                         Message("Schedule: step must be >= 0, got -1"));
}
