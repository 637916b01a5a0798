// The geometry of a direct convolution (the kernels are in nn/kernels/direct_conv-inl.hpp, one
// per path): layers too small for the product's blocking, whose im2col matrix would be the whole
// cost, read the image where it lies.
#pragma once

#include <cstddef>

namespace distopt::nn::direct {

using Index = std::ptrdiff_t;

/// Geometry of one call: `images` images of `channels` planes of height x width (plane (c, i)
/// at x + c * channel_stride + i * image_stride, rows of `width`), a k x k kernel, stride 1, no
/// padding; outputs [out, images * oh * ow] channel-major, as Conv2d writes them.
struct Geometry {
  Index channels, images, height, width, channel_stride, image_stride, kernel, out_channels;
  [[nodiscard]] Index oh() const { return height - kernel + 1; }
  [[nodiscard]] Index ow() const { return width - kernel + 1; }
  [[nodiscard]] Index columns() const { return images * oh() * ow(); }
};

}  // namespace distopt::nn::direct
