// The matrix-product engine under every layer, as its callers see it: the kernels of every path
// (nn/kernels/gemm-inl.hpp, compiled once per path) and which path runs (nn/isa.hpp).
#pragma once

#include <string>

#include "distopt/nn/gemm/types.hpp"
#include "distopt/nn/isa.hpp"
#include "distopt/nn/kernels/gemm.hpp"

namespace distopt::nn::gemm {

/// The register width and blocking of the path in use.
template <class T>
[[nodiscard]] Shape shape() {
  return with_kernels([](auto tag) { return path_shape<T>(tag); });
}

/// The path in use and its register, as the benchmarks print it: "avx2 (8 floats)".
[[nodiscard]] inline std::string isa() {
  return std::string(isa_name(active_isa())) + " (" + std::to_string(shape<float>().lanes) + " floats)";
}

}  // namespace distopt::nn::gemm
