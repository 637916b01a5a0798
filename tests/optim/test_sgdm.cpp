#include "distopt/optim/sgdm.hpp"

#include <catch2/catch.hpp>

#include "golden.hpp"

using distopt::optim::Sgdm;
using distopt::optim::SgdmOptions;

namespace {

SgdmOptions sgdm_options(const nlohmann::json& o) {
  return {.lr = o.value("lr", 0.01),
          .momentum = o.value("momentum", 0.0),
          .dampening = o.value("dampening", 0.0),
          .weight_decay = o.value("weight_decay", 0.0),
          .nesterov = o.value("nesterov", false)};
}

template <class Params>
Sgdm<Params> make_sgdm(const Params& params, const nlohmann::json& o) {
  return Sgdm<Params>(params, sgdm_options(o));
}

}  // namespace

TEST_CASE("Sgdm follows torch.optim.SGD for 100 steps within 1e-5 in float", "[optim][sgdm][golden]") {
  const char* name = GENERATE("sgdm_plain", "sgdm_momentum", "sgdm_nesterov", "sgdm_dampening", "sgdm_weight_decay",
                              "sgdm_block_overrides");
  const double worst = golden::replay(name, make_sgdm<distopt::ParameterSet>);
  INFO(name << " worst relative error " << worst);
  CHECK(worst <= 1e-5);
}

TEST_CASE("Sgdm in double follows torch.optim.SGD to 1e-12", "[optim][sgdm][golden]") {
  const char* name = GENERATE("sgdm_momentum", "sgdm_nesterov", "sgdm_block_overrides");
  golden::replay<distopt::ParameterSetD>(name, make_sgdm<distopt::ParameterSetD>, 1e-12);
}

TEST_CASE("Sgdm rejects bad options naming the field and value", "[optim][sgdm]") {
  distopt::ParameterSet params;
  params.add("w", {3});
  using Catch::Matchers::Message;
  REQUIRE_THROWS_MATCHES(Sgdm(params, {.lr = -0.1}), std::invalid_argument,
                         Message("Sgdm: lr must be finite and >= 0, got -0.1"));
  REQUIRE_THROWS_MATCHES(Sgdm(params, {.momentum = -0.5}), std::invalid_argument,
                         Message("Sgdm: momentum must be >= 0, got -0.5"));
  REQUIRE_THROWS_MATCHES(Sgdm(params, {.dampening = 1.5}), std::invalid_argument,
                         Message("Sgdm: dampening must be in [0, 1], got 1.5"));
  REQUIRE_THROWS_MATCHES(Sgdm(params, {.weight_decay = -1}), std::invalid_argument,
                         Message("Sgdm: weight_decay must be >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(Sgdm(params, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}), std::invalid_argument,
                         Message("Sgdm: nesterov needs momentum > 0 and dampening 0, got momentum 0.9 and dampening 0.1"));
  REQUIRE_THROWS_WITH(Sgdm(params, {.nesterov = true}), Catch::Matchers::Contains("nesterov needs momentum > 0"));
  Sgdm ok(params, {.lr = 0.1});
  REQUIRE_THROWS_WITH(ok.set_lr(std::nan("")), Catch::Matchers::Contains("lr must be finite and >= 0, got nan"));
  CHECK(ok.lr() == 0.1);
}
