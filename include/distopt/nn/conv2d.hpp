// 2-D convolution as a matrix product over an im2col matrix.
#pragma once

#include <cstddef>
#include <string>

#include "distopt/core/error.hpp"
#include "distopt/nn/detail/gemm.hpp"
#include "distopt/nn/detail/spans.hpp"

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

/// Conv2d (stride 1, zero padding `padding`, bias), PyTorch's layout: weight [out, in, k, k] and
/// bias [out] as blocks of a parameter set. Computed as Y = W * col(X) + b with
///   col(X)[(c, ky, kx), (i, y, x)] = X(c, i, y + ky - padding, x + kx - padding)  (0 outside),
/// so Y is [out, images * out_h * out_w]: the channel-major (CNHW) layout the next layer reads.
/// Backward: dW += dY col(X)^T, db += row sums of dY, dX = col^-1(W^T dY) (scatter-add).
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

  /// col [patch, images * oh * ow] from x.
  template <class T>
  void im2col(const T* x, const PlaneLayout& in, T* col) const {
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width), n = in.images;
    const std::ptrdiff_t row_length = n * oh * ow;
    for (std::ptrdiff_t c = 0; c < in_channels; ++c)
      for (std::ptrdiff_t ky = 0; ky < kernel; ++ky)
        for (std::ptrdiff_t kx = 0; kx < kernel; ++kx) {
          T* row = col + ((c * kernel + ky) * kernel + kx) * row_length;
          for (std::ptrdiff_t i = 0; i < n; ++i)
            for (std::ptrdiff_t y = 0; y < oh; ++y) {
              T* out = row + (i * oh + y) * ow;
              const std::ptrdiff_t sy = y + ky - padding;
              if (sy < 0 || sy >= in.height) {
                for (std::ptrdiff_t xx = 0; xx < ow; ++xx) out[xx] = T(0);
                continue;
              }
              const T* src = x + in.at(c, i, sy, 0);
              const std::ptrdiff_t shift = kx - padding;
              if (shift >= 0 && shift + ow <= in.width) {  // the whole run inside the image
                detail::copy_run(out, src + shift, ow);
                continue;
              }
              for (std::ptrdiff_t xx = 0; xx < ow; ++xx) {
                const std::ptrdiff_t sx = xx + shift;
                out[xx] = (sx >= 0 && sx < in.width) ? src[sx] : T(0);
              }
            }
        }
  }

  /// dx += col^-1(dcol): every patch element added back where im2col read it, in a fixed order
  /// (for each input row, the kernel columns kx = 0..k-1 in turn).
  template <class T>
  void col2im(const T* dcol, const PlaneLayout& in, T* dx) const {
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width), n = in.images;
    const std::ptrdiff_t row_length = n * oh * ow;
    for (std::ptrdiff_t c = 0; c < in_channels; ++c)
      for (std::ptrdiff_t ky = 0; ky < kernel; ++ky) {
        const T* rows = dcol + (c * kernel + ky) * kernel * row_length;  // kx = 0; kx rows follow
        for (std::ptrdiff_t i = 0; i < n; ++i)
          for (std::ptrdiff_t y = 0; y < oh; ++y) {
            const std::ptrdiff_t sy = y + ky - padding;
            if (sy < 0 || sy >= in.height) continue;
            const T* src = rows + (i * oh + y) * ow;
            T* out = dx + in.at(c, i, sy, 0);
            if (padding == 0) {  // every run inside the image: out[kx + t] += row_kx[t]
              detail::add_shifted_runs(out, src, row_length, kernel, ow);
              continue;
            }
            for (std::ptrdiff_t kx = 0; kx < kernel; ++kx)
              for (std::ptrdiff_t xx = 0; xx < ow; ++xx) {
                const std::ptrdiff_t sx = xx + kx - padding;
                if (sx >= 0 && sx < in.width) out[sx] += src[kx * row_length + xx];
              }
          }
      }
  }

  /// y [out, images * oh * ow] = W col(x) + b. `col` is scratch of patch() * images * oh * ow.
  template <class T>
  void forward(const T* weight, const T* bias, const T* x, const PlaneLayout& in, T* col, T* y,
               detail::Gemm<T>& gemm) const {
    const std::ptrdiff_t columns = in.images * out_size(in.height) * out_size(in.width);
    im2col(x, in, col);
    gemm(false, false, out_channels, columns, patch(), T(1), weight, patch(), col, columns, T(0), y, columns);
    for (std::ptrdiff_t o = 0; o < out_channels; ++o) {
      T* row = y + o * columns;
      for (std::ptrdiff_t j = 0; j < columns; ++j) row[j] += bias[o];
    }
  }

  /// Adds dW and db into `weight_grad`, `bias_grad`; if `dx` is given, writes the input gradient
  /// there (zeroed first). `col` must hold col(x) (as forward left it, or recomputed); `dcol` is
  /// scratch of the same size, used only for dx.
  template <class T>
  void backward(const T* weight, const T* dy, const PlaneLayout& in, const T* col, T* dcol, T* weight_grad,
                T* bias_grad, T* dx, detail::Gemm<T>& gemm) const {
    const std::ptrdiff_t columns = in.images * out_size(in.height) * out_size(in.width);
    for (std::ptrdiff_t o = 0; o < out_channels; ++o)
      bias_grad[o] += Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(dy + o * columns, columns).sum();
    gemm(false, true, out_channels, patch(), columns, T(1), dy, columns, col, columns, T(1), weight_grad, patch());
    if (dx == nullptr) return;
    gemm(true, false, patch(), columns, out_channels, T(1), weight, patch(), dy, columns, T(0), dcol, columns);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i)
        for (std::ptrdiff_t p = 0; p < in.height * in.width; ++p) dx[in.at(c, i, 0, 0) + p] = T(0);
    col2im(dcol, in, dx);
  }
};

}  // namespace distopt::nn
