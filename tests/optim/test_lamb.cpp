#include "distopt/optim/lamb.hpp"

#include <catch2/catch.hpp>

#include "golden.hpp"

using distopt::optim::Lamb;

namespace {

template <class Params>
Lamb<Params> make_lamb(const Params& params, const nlohmann::json& o) {
  const auto betas = o.value("betas", std::vector<double>{0.9, 0.999});
  return Lamb<Params>(params, {.lr = o.value("lr", 1e-3),
                               .beta1 = betas.at(0),
                               .beta2 = betas.at(1),
                               .eps = o.value("eps", 1e-6),
                               .weight_decay = o.value("weight_decay", 1e-2),
                               .bias_correction = o.value("bias_correction", true),
                               .phi_min = o.value("phi_min", 0.0),
                               .phi_max = o.value("phi_max", std::numeric_limits<double>::infinity()),
                               .max_grad_norm = o.value("max_grad_norm", 0.0)});
}

}  // namespace

TEST_CASE("Lamb follows Algorithm 2 (PyTorch, float64) within 1e-5 in float", "[optim][lamb][golden]") {
  const char* name = GENERATE("lamb_default", "lamb_no_bias_correction", "lamb_phi_bounds", "lamb_phi_min",
                              "lamb_grad_clipping", "lamb_grad_clipping_partial", "lamb_no_exclusions");
  golden::replay(name, make_lamb<distopt::ParameterSet>);
}

TEST_CASE("Lamb in double follows Algorithm 2 to 1e-12", "[optim][lamb][golden]") {
  const char* name = GENERATE("lamb_default", "lamb_phi_bounds", "lamb_grad_clipping");
  golden::replay<distopt::ParameterSetD>(name, make_lamb<distopt::ParameterSetD>, 1e-12);
}

TEST_CASE("Lamb rejects bad options naming the field and value", "[optim][lamb]") {
  distopt::ParameterSet params;
  params.add("w", {3, 3});
  using Catch::Matchers::Message;
  REQUIRE_THROWS_MATCHES(Lamb(params, {.lr = -1}), std::invalid_argument, Message("Lamb: lr must be finite and >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(Lamb(params, {.beta1 = 1.5}), std::invalid_argument, Message("Lamb: beta1 must be in [0, 1), got 1.5"));
  REQUIRE_THROWS_MATCHES(Lamb(params, {.eps = 0}), std::invalid_argument, Message("Lamb: eps must be > 0, got 0"));
  REQUIRE_THROWS_MATCHES(Lamb(params, {.phi_min = 2.0, .phi_max = 1.0}), std::invalid_argument,
                         Message("Lamb: phi bounds reversed: phi_min 2 > phi_max 1"));
  REQUIRE_THROWS_MATCHES(Lamb(params, {.phi_min = -1.0}), std::invalid_argument, Message("Lamb: phi_min must be >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(Lamb(params, {.max_grad_norm = -1.0}), std::invalid_argument,
                         Message("Lamb: max_grad_norm must be >= 0, got -1"));
}
