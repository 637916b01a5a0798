// PyTorch's default initialisation, drawn from the library's seeded generator.
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "distopt/core/rng.hpp"

namespace distopt::nn {

/// PyTorch's default for Conv2d and Linear: weights kaiming_uniform(a = sqrt(5)) (He et al. 2015),
/// which for that a is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and biases U(-1/sqrt(fan_in),
/// 1/sqrt(fan_in)). The same distribution, not the same numbers: PyTorch draws from its own
/// generator. Each block draws from its own stream, so adding a layer does not change the others.
template <class View>
void uniform_fan_in(View&& values, std::ptrdiff_t fan_in, Rng rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  for (auto& v : values) v = static_cast<std::remove_reference_t<decltype(v)>>(rng.uniform(-bound, bound));
}

}  // namespace distopt::nn
