// The convolutions' and the pooling's kernels (nn/kernels/direct_conv-inl.hpp, conv-inl.hpp,
// pool-inl.hpp), once per path (nn/kernels/targets.hpp). Included by nn/conv2d.hpp after Conv2d,
// whose geometry they read.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "distopt/nn/kernels/gemm.hpp"
#include "distopt/nn/kernels/pool_windows.hpp"

DISTOPT_KERNELS_WARNINGS_OFF

#if DISTOPT_KERNELS_AVX512
DISTOPT_TARGET_AVX512_BEGIN
namespace distopt::nn::kernels::avx512 {
#include "distopt/nn/kernels/direct_conv-inl.hpp"
#include "distopt/nn/kernels/conv-inl.hpp"
#include "distopt/nn/kernels/pool-inl.hpp"
}  // namespace distopt::nn::kernels::avx512
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_AVX2
DISTOPT_TARGET_AVX2_BEGIN
namespace distopt::nn::kernels::avx2 {
#include "distopt/nn/kernels/direct_conv-inl.hpp"
#include "distopt/nn/kernels/conv-inl.hpp"
#include "distopt/nn/kernels/pool-inl.hpp"
}  // namespace distopt::nn::kernels::avx2
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_PORTABLE
namespace distopt::nn::kernels::portable {
#include "distopt/nn/kernels/direct_conv-inl.hpp"
#include "distopt/nn/kernels/conv-inl.hpp"
#include "distopt/nn/kernels/pool-inl.hpp"
}  // namespace distopt::nn::kernels::portable
#endif

DISTOPT_KERNELS_WARNINGS_ON
