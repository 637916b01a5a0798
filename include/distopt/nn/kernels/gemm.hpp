// The product's kernels (nn/kernels/gemm-inl.hpp), once per path (nn/kernels/targets.hpp).
#pragma once

#include <algorithm>
#include <cstddef>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/nn/gemm/types.hpp"
#include "distopt/nn/kernels/packets.hpp"

DISTOPT_KERNELS_WARNINGS_OFF

#if DISTOPT_KERNELS_AVX512
DISTOPT_TARGET_AVX512_BEGIN
namespace distopt::nn::kernels::avx512 {
#include "distopt/nn/kernels/gemm-inl.hpp"
}  // namespace distopt::nn::kernels::avx512
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_AVX2
DISTOPT_TARGET_AVX2_BEGIN
namespace distopt::nn::kernels::avx2 {
#include "distopt/nn/kernels/gemm-inl.hpp"
}  // namespace distopt::nn::kernels::avx2
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_PORTABLE
namespace distopt::nn::kernels::portable {
#include "distopt/nn/kernels/gemm-inl.hpp"
}  // namespace distopt::nn::kernels::portable
#endif

DISTOPT_KERNELS_WARNINGS_ON
