// 2-D convolution as a matrix product over an implicit im2col matrix, or directly for small layers.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

#include <Eigen/Core>

#include "distopt/core/compiler.hpp"
#include "distopt/core/error.hpp"
#include "distopt/nn/direct_conv.hpp"
#include "distopt/nn/gemm/kernel.hpp"
#include "distopt/nn/isa.hpp"

DISTOPT_PR105593_OFF

namespace distopt::nn {

/// Where a chunk of images lives in memory: element (c, i, y, x) of `channels` planes of
/// `height` x `width`, for images i in [0, images), is at data[c * channel_stride + i * image_stride
/// + y * width + x]. NCHW batches (image_stride = C*H*W) and the layers' channel-major CNHW chunks
/// (channel_stride = N*H*W) are both such views, so layers read either without a transpose.
struct PlaneLayout {
  std::ptrdiff_t channels, images, height, width;
  std::ptrdiff_t channel_stride, image_stride;

  [[nodiscard]] static PlaneLayout nchw(std::ptrdiff_t n, std::ptrdiff_t c, std::ptrdiff_t h, std::ptrdiff_t w) {
    return {c, n, h, w, h * w, c * h * w};
  }
  [[nodiscard]] static PlaneLayout cnhw(std::ptrdiff_t c, std::ptrdiff_t n, std::ptrdiff_t h, std::ptrdiff_t w) {
    return {c, n, h, w, n * h * w, h * w};
  }
  [[nodiscard]] std::ptrdiff_t at(std::ptrdiff_t c, std::ptrdiff_t i, std::ptrdiff_t y, std::ptrdiff_t x) const {
    return c * channel_stride + i * image_stride + y * width + x;
  }
};

/// Output positions [j0, j0 + count) of a convolution over `images` planes of oh x ow, cut
/// into runs of consecutive columns x0 .. x0 + length - 1 of one output row (image i, row y):
/// f(offset of the run from j0, length, i, y, x0). The implicit im2col packers and the col2im
/// epilogue read and write whole runs, which are contiguous in the image.
template <class F>
inline void for_each_run(std::ptrdiff_t j0, std::ptrdiff_t count, std::ptrdiff_t oh, std::ptrdiff_t ow, F&& f) {
  if (count <= 0) return;
  // Two divisions for the first run, then counters: the epilogues call this once per tile.
  const std::ptrdiff_t first_row = j0 / ow;
  std::ptrdiff_t x0 = j0 - first_row * ow, i = first_row / oh, y = first_row - i * oh;
  for (std::ptrdiff_t at = 0; at < count; x0 = 0) {
    const std::ptrdiff_t length = std::min(ow - x0, count - at);
    f(at, length, i, y, x0);
    at += length;
    if (++y == oh) y = 0, ++i;
  }
}

/// Conv2d (stride 1, zero padding `padding`, bias), PyTorch's layout: weight [out, in, k, k] and
/// bias [out] as blocks of a parameter set. A matrix product over the im2col matrix
///   col(X)[(c, ky, kx), (i, y, x)] = X(c, i, y + ky - padding, x + kx - padding)  (0 outside),
/// forward Y = W col(X) + b, Y [out, images * out_h * out_w] (the channel-major CNHW layout the
/// next layer reads); backward dW += dY col(X)^T, db += row sums of dY, dX = col^-1(W^T dY).
/// col(X) is never formed: the product's packers read its panels straight from X (implicit
/// im2col), and the input gradient's epilogue adds each tile of W^T dY back where im2col would
/// have read it. Layers with few output channels (the classic LeNet-5's conv1 and conv2) skip the
/// product: their forward pass and weight gradient run as a direct convolution
/// (nn/kernels/direct_conv-inl.hpp), vectorised over the output width or over the output channels.
/// The layer holds geometry only; weights, gradients and scratch are passed in.
struct Conv2d {
  std::string name;
  std::ptrdiff_t in_channels;
  std::ptrdiff_t out_channels;
  std::ptrdiff_t kernel;
  std::ptrdiff_t padding = 0;

  [[nodiscard]] std::ptrdiff_t out_size(std::ptrdiff_t in) const { return in + 2 * padding - kernel + 1; }
  /// Rows of the im2col matrix: in_channels * kernel * kernel.
  [[nodiscard]] std::ptrdiff_t patch() const { return in_channels * kernel * kernel; }
  [[nodiscard]] std::ptrdiff_t fan_in() const { return patch(); }

  /// Rejects an input this layer cannot take, naming the layer.
  void check_input(const PlaneLayout& x) const {
    require(x.channels == in_channels, name, ": expected ", in_channels, " input channels, got ", x.channels);
    require(out_size(x.height) >= 1 && out_size(x.width) >= 1, name, ": input of ", x.height, " x ", x.width,
            " is smaller than the ", kernel, " x ", kernel, " kernel");
  }

  /// One past the last element of x that `in` names.
  template <class T>
  [[nodiscard]] static const T* extent(const T* x, const PlaneLayout& in) {
    return x + in.at(in.channels - 1, in.images - 1, in.height - 1, in.width - 1) + 1;
  }

  /// The layer's geometry as the direct path sees it (padding apart).
  [[nodiscard]] direct::Geometry geometry(const PlaneLayout& in) const {
    return {in.channels, in.images, in.height, in.width, in.channel_stride, in.image_stride, kernel, out_channels};
  }
  /// Whether this input goes through the direct convolution instead of the product: layers with
  /// few output channels (nn/kernels/direct_conv-inl.hpp), on the path in use. Same results either
  /// way; the forward pass the same bits.
  template <class T>
  [[nodiscard]] bool direct_path(const PlaneLayout& in) const {
    return with_kernels([&](auto k) { return conv_direct_path<T>(k, *this, in); });
  }
  /// Whether it goes through the direct convolution vectorised over output channels instead
  /// (never when direct_path() holds). The same bits either way.
  template <class T>
  [[nodiscard]] bool channel_path(const PlaneLayout& in) const {
    return with_kernels([&](auto k) { return conv_channel_path<T>(k, *this, in); });
  }
  /// Whether the input gradient goes through the gather: few output channels (at most 16: with a
  /// k of 16, col2im's scattered additions would be the product's whole cost), no padding, and
  /// input rows of at least a packet, or a path that stores packets under a mask.
  template <class T>
  [[nodiscard]] bool gather_path(const PlaneLayout& in) const {
    return with_kernels([&](auto k) { return conv_gather_path<T>(k, *this, in); });
  }

  /// y [out, images * oh * ow] = W col(x) + b.
  template <class T>
  void forward(const T* weight, const T* bias, const T* x, const PlaneLayout& in, T* y,
               gemm::Workspace<T>& ws) const {
    with_kernels([&](auto k) { conv_forward(k, *this, weight, bias, x, in, y, ws); });
  }
  /// forward() through the product, whichever path it would take (for tests and benchmarks).
  template <class T>
  void forward_product(const T* weight, const T* bias, const T* x, const PlaneLayout& in, T* y,
                       gemm::Workspace<T>& ws) const {
    with_kernels([&](auto k) { conv_forward_product(k, *this, weight, bias, x, in, y, ws); });
  }

  /// Adds dW = dY col(x)^T into `weight_grad` and the row sums of dY into `bias_grad`.
  template <class T>
  void backward_weights(const T* dy, const T* x, const PlaneLayout& in, T* weight_grad, T* bias_grad,
                        gemm::Workspace<T>& ws) const {
    add_bias_grad(dy, in, bias_grad);
    with_kernels([&](auto k) { conv_backward_weights(k, *this, dy, x, in, weight_grad, ws); });
  }
  /// backward_weights() through the product, whichever path it would take.
  template <class T>
  void backward_weights_product(const T* dy, const T* x, const PlaneLayout& in, T* weight_grad, T* bias_grad,
                                gemm::Workspace<T>& ws) const {
    add_bias_grad(dy, in, bias_grad);
    with_kernels([&](auto k) { conv_backward_weights_product(k, *this, dy, x, in, weight_grad, ws); });
  }

  template <class T>
  void add_bias_grad(const T* dy, const PlaneLayout& in, T* bias_grad) const {
    const std::ptrdiff_t columns = in.images * out_size(in.height) * out_size(in.width);
    for (std::ptrdiff_t o = 0; o < out_channels; ++o)
      bias_grad[o] += Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(dy + o * columns, columns).sum();
  }

  /// dx = col^-1(W^T dY), written over the whole of dx (laid out as `in`). Through the gather
  /// (gather_path()) or through the product with col2im in its epilogue.
  template <class T>
  void backward_input(const T* weight, const T* dy, const PlaneLayout& in, T* dx, gemm::Workspace<T>& ws) const {
    with_kernels([&](auto k) { conv_backward_input(k, *this, weight, dy, in, dx, ws); });
  }
  /// backward_input() through the product and col2im, whichever path it would take.
  template <class T>
  void backward_input_product(const T* weight, const T* dy, const PlaneLayout& in, T* dx,
                              gemm::Workspace<T>& ws) const {
    with_kernels([&](auto k) { conv_backward_input_product(k, *this, weight, dy, in, dx, ws); });
  }
  /// backward_input() as a gather (only where gather_path() holds).
  template <class T>
  void backward_input_gather(const T* weight, const T* dy, const PlaneLayout& in, T* dx, gemm::Workspace<T>& ws) const {
    with_kernels([&](auto k) { conv_backward_input_gather(k, *this, weight, dy, in, dx, ws); });
  }

  /// Row q of W^T in tap-major order, q = (ky * kernel + kx) * in_channels + c: the patch element
  /// (c, ky, kx), i.e. column c * kernel^2 + ky * kernel + kx of W.
  [[nodiscard]] std::ptrdiff_t tap_major_element(std::ptrdiff_t q) const {
    const std::ptrdiff_t taps = kernel * kernel;
    return (q % in_channels) * taps + q / in_channels;
  }

  /// Where patch element p = (c, ky, kx) and output position j = (i, y, x) meet in x: the element
  /// col(x)[p, j] is x[patch_offset + position_offset] when 0 <= patch_y + position_y < height
  /// and 0 <= patch_x + position_x < width, and 0 otherwise.
  struct Coordinate {
    std::ptrdiff_t offset, y, x;
  };
  /// out[0, count) = the coordinates of patch elements (or, `positions`, of output positions)
  /// first, first + 1, ...: one decomposition, then counters (the packers fill these per panel,
  /// and divisions would cost as much as the copying).
  void coordinates(const PlaneLayout& in, bool positions, std::ptrdiff_t first, std::ptrdiff_t count,
                   Coordinate* out) const {
    if (count <= 0) return;
    // Both kinds are a plane index, a row and a column with limits: (image, y, x) over
    // (oh, ow), or (channel, ky, kx) over (kernel, kernel), the row and column offset by -padding.
    const std::ptrdiff_t rows = positions ? out_size(in.height) : kernel, cols = positions ? out_size(in.width) : kernel;
    const std::ptrdiff_t plane_stride = positions ? in.image_stride : in.channel_stride;
    const std::ptrdiff_t shift = positions ? 0 : padding;
    const std::ptrdiff_t line = first / cols;
    std::ptrdiff_t col = first - line * cols, plane = line / rows, row = line - plane * rows;
    for (std::ptrdiff_t n = 0; n < count; ++n) {
      const std::ptrdiff_t y = row - shift, x = col - shift;
      out[n] = {plane * plane_stride + y * in.width + x, y, x};
      if (++col == cols) {
        col = 0;
        if (++row == rows) row = 0, ++plane;
      }
    }
  }
};

}  // namespace distopt::nn

DISTOPT_PR105593_ON

// The kernels read the layer's geometry: they follow it.
#include "distopt/nn/kernels/conv.hpp"
