// The convolutions' and the pooling's kernels (nn/kernels/direct_conv-inl.hpp, conv-inl.hpp,
// pool-inl.hpp), once per path (nn/kernels/foreach_path.hpp). Included by nn/conv2d.hpp after
// Conv2d, whose geometry they read.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include "distopt/nn/kernels/gemm.hpp"
#include "distopt/nn/kernels/pool_windows.hpp"

#define DISTOPT_KERNELS_INL "distopt/nn/kernels/direct_conv-inl.hpp"
#include "distopt/nn/kernels/foreach_path.hpp"
#define DISTOPT_KERNELS_INL "distopt/nn/kernels/conv-inl.hpp"
#include "distopt/nn/kernels/foreach_path.hpp"
#define DISTOPT_KERNELS_INL "distopt/nn/kernels/pool-inl.hpp"
#include "distopt/nn/kernels/foreach_path.hpp"
