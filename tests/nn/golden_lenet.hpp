// Loads the PyTorch exports of tools/golden/lenet.py (tests/data/lenet/).
#pragma once

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "distopt/nn/lenet5.hpp"

namespace golden_lenet {

inline std::string path(const std::string& preset, const std::string& file) {
  return std::string(DISTOPT_TEST_DATA_DIR) + "/lenet/" + preset + "/" + file;
}

template <class T>
xt::xarray<T> load(const std::string& preset, const std::string& file) {
  return xt::load_npy<T>(path(preset, file));
}

/// A model of the preset with PyTorch's initial weights.
template <class T = float>
distopt::nn::LeNet5<T> model(const std::string& preset) {
  distopt::nn::LeNet5<T> net({.preset = preset == "hsu" ? distopt::nn::Preset::hsu : distopt::nn::Preset::classic});
  auto& params = net.parameters();
  for (const auto& block : params.blocks()) {
    const auto w = load<float>(preset, "weights/" + block.name + ".npy");
    REQUIRE(static_cast<std::ptrdiff_t>(w.size()) == block.size);
    std::vector<std::ptrdiff_t> shape(w.shape().begin(), w.shape().end());
    REQUIRE(shape == block.shape);
    for (std::ptrdiff_t i = 0; i < block.size; ++i) params.values()(block.offset + i) = static_cast<T>(w.flat(static_cast<std::size_t>(i)));
  }
  return net;
}

/// max |x - y| / max |y| over a range.
template <class A, class B>
double relative_error(const A& x, const B& y, std::size_t n) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(x[i]) - static_cast<double>(y[i])));
    scale = std::max(scale, std::abs(static_cast<double>(y[i])));
  }
  return diff / scale;
}

}  // namespace golden_lenet
