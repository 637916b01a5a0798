// The product's kernels (nn/kernels/gemm-inl.hpp), once per path (nn/kernels/foreach_path.hpp).
#pragma once

#include <algorithm>
#include <cstddef>

#include "distopt/core/aligned_buffer.hpp"
#include "distopt/nn/gemm/types.hpp"
#include "distopt/nn/kernels/packets.hpp"

#define DISTOPT_KERNELS_INL "distopt/nn/kernels/gemm-inl.hpp"
#include "distopt/nn/kernels/foreach_path.hpp"
