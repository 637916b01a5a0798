// Includes the kernel source DISTOPT_KERNELS_INL once per path this translation unit compiles
// (nn/isa.hpp), inside that path's namespace and under its target pragma (nn/kernels/targets.hpp).
// No include guard: included once per source, with DISTOPT_KERNELS_INL defined before and
// undefined here after.
#ifndef DISTOPT_KERNELS_INL
#error "define DISTOPT_KERNELS_INL (the -inl.hpp kernel source) before including foreach_path.hpp"
#endif

DISTOPT_KERNELS_WARNINGS_OFF

#if DISTOPT_KERNELS_AVX512
DISTOPT_TARGET_AVX512_BEGIN
namespace distopt::nn::kernels::avx512 {
#include DISTOPT_KERNELS_INL
}  // namespace distopt::nn::kernels::avx512
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_AVX2
DISTOPT_TARGET_AVX2_BEGIN
namespace distopt::nn::kernels::avx2 {
#include DISTOPT_KERNELS_INL
}  // namespace distopt::nn::kernels::avx2
DISTOPT_TARGET_END
#endif

#if DISTOPT_KERNELS_PORTABLE
namespace distopt::nn::kernels::portable {
#include DISTOPT_KERNELS_INL
}  // namespace distopt::nn::kernels::portable
#endif

DISTOPT_KERNELS_WARNINGS_ON

#undef DISTOPT_KERNELS_INL
