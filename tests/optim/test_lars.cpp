#include "distopt/optim/lars.hpp"

#include <catch2/catch.hpp>

#include "golden.hpp"

using distopt::optim::Lars;

namespace {

template <class Params>
Lars<Params> make_lars(const Params& params, const nlohmann::json& o) {
  return Lars<Params>(params, {.lr = o.value("lr", 0.1),
                               .momentum = o.value("momentum", 0.9),
                               .trust_coefficient = o.value("trust_coefficient", 1e-3),
                               .eps = o.value("eps", 1e-8),
                               .weight_decay = o.value("weight_decay", 0.0),
                               .nesterov = o.value("nesterov", false),
                               .trust_clip = o.value("trust_clip", false)});
}

}  // namespace

TEST_CASE("Lars follows the LARS equations (PyTorch, float64) within 1e-5 in float", "[optim][lars][golden]") {
  const char* name = GENERATE("lars_default", "lars_trust_clip", "lars_nesterov", "lars_no_exclusions");
  golden::replay(name, make_lars<distopt::ParameterSet>);
}

TEST_CASE("Lars in double follows the equations to 1e-12", "[optim][lars][golden]") {
  const char* name = GENERATE("lars_default", "lars_trust_clip", "lars_no_exclusions");
  golden::replay<distopt::ParameterSetD>(name, make_lars<distopt::ParameterSetD>, 1e-12);
}

TEST_CASE("Lars scales each block by its own trust ratio", "[optim][lars]") {
  // Plain LARS step (no momentum, no decay): w <- w - lr * eta * ||w|| / ||g|| * g per block, so the
  // step's length is lr * eta * ||w|| whatever the gradient's scale.
  distopt::ParameterSet params;
  params.add("a.weight", {2, 2});
  params.add("b.weight", {3, 1});
  params.add("b.bias", {3});
  params.value(0) << 3, 4, 0, 0;         // ||w|| = 5
  params.value(1) << 1, 2, 2;            // ||w|| = 3
  params.value(2) << 1, 1, 1;
  params.grad(0) << 100, 0, 0, 0;
  params.grad(1) << 0, 0, 0.001f;
  params.grad(2) << 1, 2, 3;
  const distopt::ParameterSet before = params;
  Lars lars(params, {.lr = 2.0, .momentum = 0.0, .trust_coefficient = 0.01, .eps = 0.0 + 1e-30});
  lars.step(params);
  CHECK((before.value(0) - params.value(0)).norm() == Approx(2.0 * 0.01 * 5).epsilon(1e-6));
  CHECK((before.value(1) - params.value(1)).norm() == Approx(2.0 * 0.01 * 3).epsilon(1e-6));
  // The bias is excluded from adaptation by default: a plain SGD step.
  CHECK((before.value(2) - params.value(2)).isApprox(2.0f * before.grad(2)));
}

TEST_CASE("Lars rejects bad options naming the field and value", "[optim][lars]") {
  distopt::ParameterSet params;
  params.add("w", {3, 3});
  using Catch::Matchers::Message;
  REQUIRE_THROWS_MATCHES(Lars(params, {.lr = -1}), std::invalid_argument, Message("Lars: lr must be finite and >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(Lars(params, {.momentum = -0.9}), std::invalid_argument,
                         Message("Lars: momentum must be >= 0, got -0.9"));
  REQUIRE_THROWS_MATCHES(Lars(params, {.trust_coefficient = 0}), std::invalid_argument,
                         Message("Lars: trust_coefficient must be > 0, got 0"));
  REQUIRE_THROWS_MATCHES(Lars(params, {.eps = -1e-8}), std::invalid_argument, Message("Lars: eps must be > 0, got -1e-08"));
  REQUIRE_THROWS_MATCHES(Lars(params, {.momentum = 0, .nesterov = true}), std::invalid_argument,
                         Message("Lars: nesterov needs momentum > 0, got momentum 0"));
}
