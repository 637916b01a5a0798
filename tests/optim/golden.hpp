// Replays the PyTorch trajectories of tools/golden/optimizers.py (tests/data/optim/) in float32.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>
#include <xtensor/xview.hpp>

#include "distopt/core/parameter_set.hpp"

namespace golden {

inline std::string data_path(const std::string& file) { return std::string(DISTOPT_TEST_DATA_DIR) + "/optim/" + file; }

inline const nlohmann::json& manifest() {
  static const nlohmann::json m = [] {
    std::ifstream in(data_path("manifest.json"));
    REQUIRE(in.good());
    return nlohmann::json::parse(in);
  }();
  return m;
}

inline const nlohmann::json& config(const std::string& name) {
  for (const auto& c : manifest()["configs"])
    if (c["name"] == name) return c;
  FAIL("no golden config named " << name);
  throw;  // unreachable: FAIL throws
}

inline const xt::xarray<double>& problem(const std::string& which) {
  static const xt::xarray<double> w0 = xt::load_npy<double>(data_path("w0.npy"));
  static const xt::xarray<double> a = xt::load_npy<double>(data_path("a.npy"));
  static const xt::xarray<double> c = xt::load_npy<double>(data_path("c.npy"));
  return which == "w0" ? w0 : which == "a" ? a : c;
}

/// The three-block parameter set of the manifest, with w0 and the config's block overrides.
template <class Params>
Params make_params(const nlohmann::json& cfg) {
  using T = typename Params::scalar_type;
  Params params;
  for (const auto& b : manifest()["blocks"]) params.add(b["name"], b["shape"].get<std::vector<std::ptrdiff_t>>());
  for (const auto& [name, o] : cfg["block_overrides"].items()) {
    distopt::BlockOptions options;
    options.lr_scale = o.value("lr_scale", 1.0f);
    if (o.contains("decay")) options.decay = o["decay"].template get<bool>() ? distopt::Toggle::on : distopt::Toggle::off;
    if (o.contains("adapt")) options.adapt = o["adapt"].template get<bool>() ? distopt::Toggle::on : distopt::Toggle::off;
    params.set_options(name, options);
  }
  std::size_t flat = 0;
  for (const auto& block : params.blocks())
    for (std::ptrdiff_t i = 0; i < block.size; ++i) params.values()(block.offset + i) = static_cast<T>(problem("w0")(flat++));
  return params;
}

/// g = a * (w - c) + 0.1 * w^3 at the current weights, evaluated in double and rounded once to the
/// set's precision: near the optimum the terms cancel, and a float evaluation would add its own
/// cancellation error (which Adam's normalisation amplifies) to what the test means to measure.
template <class Params>
void compute_gradient(Params& params) {
  using T = typename Params::scalar_type;
  std::size_t flat = 0;
  for (const auto& block : params.blocks())
    for (std::ptrdiff_t i = 0; i < block.size; ++i, ++flat) {
      const double w = params.values()(block.offset + i);
      params.grads()(block.offset + i) = static_cast<T>(problem("a")(flat) * (w - problem("c")(flat)) + 0.1 * w * w * w);
    }
}

/// Largest per-block relative error (max |x - y| / max |y|) between the weights and row `t`.
template <class Params>
double relative_error(const Params& params, const xt::xarray<double>& trajectory, std::size_t t) {
  double worst = 0;
  std::size_t flat = 0;
  for (const auto& block : params.blocks()) {
    double diff = 0, scale = 0;
    for (std::ptrdiff_t i = 0; i < block.size; ++i, ++flat) {
      const double expected = trajectory(t, flat);
      diff = std::max(diff, std::abs(static_cast<double>(params.values()(block.offset + i)) - expected));
      scale = std::max(scale, std::abs(expected));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

/// Runs config `name` with `make(params, options_json)` for every recorded step, in the precision
/// of `Params`; returns the largest relative error seen. Fails on the first step above `tolerance`.
template <class Params = distopt::ParameterSet, class Make>
double replay(const std::string& name, Make&& make, double tolerance = 1e-5) {
  const auto& cfg = config(name);
  const xt::xarray<double> trajectory = xt::load_npy<double>(data_path(name + ".npy"));
  REQUIRE(trajectory.shape(0) == manifest()["steps"].get<std::size_t>() + 1);
  Params params = make_params<Params>(cfg);
  auto optimizer = make(params, cfg["options"]);
  double worst = relative_error(params, trajectory, 0);
  REQUIRE(worst == 0.0);  // w0 is stored rounded to float: the start is exact
  for (std::size_t t = 1; t < trajectory.shape(0); ++t) {
    compute_gradient(params);
    REQUIRE(optimizer.step(params));
    const double error = relative_error(params, trajectory, t);
    INFO(name << ": step " << t << " relative error " << error);
    REQUIRE(error <= tolerance);
    worst = std::max(worst, error);
  }
  // The trajectory must have gone somewhere, or the comparison proves little.
  double moved = 0;
  for (std::size_t i = 0; i < trajectory.shape(1); ++i)
    moved = std::max(moved, std::abs(trajectory(trajectory.shape(0) - 1, i) - trajectory(0, i)));
  CHECK(moved > 1e-2);
  return worst;
}

}  // namespace golden
