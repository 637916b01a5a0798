#include "distopt/optim/adamw.hpp"

#include <catch2/catch.hpp>

#include "golden.hpp"

using distopt::optim::AdamW;
using distopt::optim::AdamWOptions;

namespace {

template <class Params>
AdamW<Params> make_adamw(const Params& params, const nlohmann::json& o) {
  const auto betas = o.value("betas", std::vector<double>{0.9, 0.999});
  return AdamW<Params>(params, {.lr = o.value("lr", 1e-3),
                                .beta1 = betas.at(0),
                                .beta2 = betas.at(1),
                                .eps = o.value("eps", 1e-8),
                                .weight_decay = o.value("weight_decay", 1e-2),
                                .amsgrad = o.value("amsgrad", false)});
}

}  // namespace

TEST_CASE("AdamW follows torch.optim.AdamW for 100 steps within 1e-5 in float", "[optim][adamw][golden]") {
  const char* name = GENERATE("adamw_default", "adamw_amsgrad", "adamw_no_decay");
  golden::replay(name, make_adamw<distopt::ParameterSet>);
}

TEST_CASE("AdamW in double follows torch.optim.AdamW to 1e-12", "[optim][adamw][golden]") {
  const char* name = GENERATE("adamw_default", "adamw_amsgrad");
  golden::replay<distopt::ParameterSetD>(name, make_adamw<distopt::ParameterSetD>, 1e-12);
}

TEST_CASE("AdamW decays decoupled: not the same as Adam with L2 in the gradient", "[optim][adamw]") {
  // With wd in the gradient (Adam + L2), Adam's normalisation would scale the decay away; AdamW
  // shrinks the weights by exactly (1 - lr * wd) on top of the Adam step.
  distopt::ParameterSet params;
  params.add("w", {4});
  params.value(0) << 1.0f, -2.0f, 3.0f, 0.5f;
  params.grad(0).setConstant(0.1f);
  distopt::ParameterSet without_decay = params;
  AdamW decayed(params, {.lr = 0.1, .weight_decay = 0.5});
  AdamW plain(without_decay, {.lr = 0.1, .weight_decay = 0.0});
  const Eigen::VectorXf before = params.value(0);
  decayed.step(params);
  plain.step(without_decay);
  // Difference between the two is exactly the decoupled shrink lr * wd * w.
  const Eigen::VectorXf shrink = 0.1f * 0.5f * before;
  CHECK((without_decay.value(0) - params.value(0)).isApprox(shrink, 1e-5f));
}

TEST_CASE("AdamW rejects bad options naming the field and value", "[optim][adamw]") {
  distopt::ParameterSet params;
  params.add("w", {3});
  using Catch::Matchers::Message;
  REQUIRE_THROWS_MATCHES(AdamW(params, {.lr = -1}), std::invalid_argument, Message("AdamW: lr must be finite and >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(AdamW(params, {.beta1 = 1.0}), std::invalid_argument, Message("AdamW: beta1 must be in [0, 1), got 1"));
  REQUIRE_THROWS_MATCHES(AdamW(params, {.beta2 = -0.1}), std::invalid_argument,
                         Message("AdamW: beta2 must be in [0, 1), got -0.1"));
  REQUIRE_THROWS_MATCHES(AdamW(params, {.eps = 0}), std::invalid_argument, Message("AdamW: eps must be > 0, got 0"));
  REQUIRE_THROWS_MATCHES(AdamW(params, {.weight_decay = -0.01}), std::invalid_argument,
                         Message("AdamW: weight_decay must be >= 0, got -0.01"));
}
