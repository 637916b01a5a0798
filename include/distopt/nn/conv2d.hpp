// 2-D convolution as a matrix product over an implicit im2col matrix, or directly for small layers.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "distopt/core/error.hpp"
#include "distopt/nn/direct_conv.hpp"
#include "distopt/nn/gemm/kernel.hpp"
#include "distopt/nn/gemm/matrix.hpp"

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

/// out[0, n) = src[0, n): runs of at least one register as two overlapping unaligned packets,
/// shorter runs under an AVX-512 mask or element by element (nothing outside either range is read
/// or written).
template <class T>
inline void copy_run(T* out, const T* src, std::ptrdiff_t n);

// A packet type named through Eigen's traits drops its vector attributes as a template argument,
// harmlessly (the traits are keyed on the type itself); Eigen silences the same warning inside
// its own headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif
/// add_run's packets of P, then of its half width, while a whole packet fits.
template <class P, class T>
inline void add_run_packets(T* out, const T* src, std::ptrdiff_t& u, std::ptrdiff_t n) {
  namespace ei = Eigen::internal;
  using Half = typename ei::unpacket_traits<P>::half;
  constexpr std::ptrdiff_t L = ei::unpacket_traits<P>::size;
  if constexpr (L > 1) {
    for (; u + L <= n; u += L) ei::pstoreu(out + u, ei::padd(ei::ploadu<P>(out + u), ei::ploadu<P>(src + u)));
    if constexpr (ei::unpacket_traits<Half>::size < L) add_run_packets<Half>(out, src, u, n);
  }
}

/// out[0, n) += src[0, n) in packets of the full width, then, with AVX-512, one packet under a
/// mask (no element outside [0, n) is read or written), otherwise in packets of half and a quarter
/// of it and element by element (AVX's masked moves are slow on AMD's cores). Each element gets
/// one addition, so the bits do not depend on the split.
template <class T>
inline void add_run(T* out, const T* src, std::ptrdiff_t n) {
  namespace ei = Eigen::internal;
  using P = gemm::Packet<T>;
  constexpr std::ptrdiff_t L = gemm::lanes<T>;
  if constexpr (L >= 16 && ei::unpacket_traits<P>::masked_load_available &&
                ei::unpacket_traits<P>::masked_store_available) {
    std::ptrdiff_t u = 0;
    for (; u + L <= n; u += L) ei::pstoreu(out + u, ei::padd(ei::ploadu<P>(out + u), ei::ploadu<P>(src + u)));
    if (u == n) return;
    using Mask = typename ei::unpacket_traits<P>::mask_t;
    const auto mask = static_cast<Mask>((Mask(1) << (n - u)) - 1);
    ei::pstoreu(out + u, ei::padd(ei::ploadu<P>(out + u, mask), ei::ploadu<P>(src + u, mask)), mask);
  } else {
    std::ptrdiff_t u = 0;
    add_run_packets<P>(out, src, u, n);
    for (; u < n; ++u) out[u] += src[u];
  }
}

template <class T>
inline void copy_run(T* out, const T* src, std::ptrdiff_t n) {
  namespace ei = Eigen::internal;
  using P = gemm::Packet<T>;
  constexpr std::ptrdiff_t L = gemm::lanes<T>;
  if (L > 1 && n >= L) {
    for (std::ptrdiff_t t = 0; t + L < n; t += L) ei::pstoreu(out + t, ei::ploadu<P>(src + t));
    ei::pstoreu(out + n - L, ei::ploadu<P>(src + n - L));
    return;
  }
  if constexpr (L >= 16 && ei::unpacket_traits<P>::masked_load_available &&
                ei::unpacket_traits<P>::masked_store_available) {
    using Mask = typename ei::unpacket_traits<P>::mask_t;
    const auto mask = static_cast<Mask>((Mask(1) << n) - 1);
    ei::pstoreu(out, ei::ploadu<P>(src, mask), mask);
  } else {
    for (std::ptrdiff_t t = 0; t < n; ++t) out[t] = src[t];
  }
}

/// Whether a packet of T can be stored under a mask (AVX-512; AVX's masked store is left aside,
/// slow on AMD's cores).
template <class T>
inline constexpr bool masked_packets = gemm::lanes<T> >= 16 &&
                                       Eigen::internal::unpacket_traits<gemm::Packet<T>>::masked_store_available;

/// The first n < lanes elements of v to out.
template <class T>
inline void store_first(T* out, const gemm::Packet<T>& v, std::ptrdiff_t n) {
  namespace ei = Eigen::internal;
  if constexpr (masked_packets<T>) {
    using Mask = typename ei::unpacket_traits<gemm::Packet<T>>::mask_t;
    ei::pstoreu(out, v, static_cast<Mask>((Mask(1) << n) - 1));
  } else {
    alignas(64) T all[gemm::lanes<T>];
    ei::pstore(all, v);
    for (std::ptrdiff_t t = 0; t < n; ++t) out[t] = all[t];
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// Conv2d (stride 1, zero padding `padding`, bias), PyTorch's layout: weight [out, in, k, k] and
/// bias [out] as blocks of a parameter set. A matrix product over the im2col matrix
///   col(X)[(c, ky, kx), (i, y, x)] = X(c, i, y + ky - padding, x + kx - padding)  (0 outside),
/// forward Y = W col(X) + b, Y [out, images * out_h * out_w] (the channel-major CNHW layout the
/// next layer reads); backward dW += dY col(X)^T, db += row sums of dY, dX = col^-1(W^T dY).
/// col(X) is never formed: the product's packers read its panels straight from X (implicit
/// im2col), and the input gradient's epilogue adds each tile of W^T dY back where im2col would
/// have read it. Layers with few output channels (the classic LeNet-5's conv1 and conv2) skip the
/// product: their forward pass and weight gradient run as a direct convolution
/// (nn/direct_conv.hpp), vectorised over the output width or over the output channels.
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
  /// few output channels (direct::takes). Same results either way; the forward pass the same bits.
  template <class T>
  [[nodiscard]] bool direct_path(const PlaneLayout& in) const {
    return direct::takes<T>(geometry(in), padding);
  }
  /// Whether it goes through the direct convolution vectorised over output channels instead
  /// (direct::takes_channels; never when direct_path() holds). The same bits either way.
  template <class T>
  [[nodiscard]] bool channel_path(const PlaneLayout& in) const {
    return !direct_path<T>(in) && direct::takes_channels<T>(geometry(in), padding);
  }

  /// y [out, images * oh * ow] = W col(x) + b.
  template <class T>
  void forward(const T* weight, const T* bias, const T* x, const PlaneLayout& in, T* y,
               gemm::Workspace<T>& ws) const {
    if (direct_path<T>(in)) return direct::forward(weight, bias, x, geometry(in), y, ws);
    if (channel_path<T>(in)) return direct::forward_by_channels(weight, bias, x, geometry(in), y, ws);
    forward_product(weight, bias, x, in, y, ws);
  }
  /// forward() through the product, whichever path it would take (for tests and benchmarks).
  template <class T>
  void forward_product(const T* weight, const T* bias, const T* x, const PlaneLayout& in, T* y,
                       gemm::Workspace<T>& ws) const {
    const std::ptrdiff_t columns = in.images * out_size(in.height) * out_size(in.width);
    gemm::product(out_channels, columns, patch(), gemm::MatrixA<T>{weight, patch()}, Columns<T>{this, x, in, extent(x, in)},
                  gemm::MatrixC<T>{.data = y, .ld = columns, .row_bias = bias}, ws);
  }

  /// Adds dW = dY col(x)^T into `weight_grad` and the row sums of dY into `bias_grad`.
  template <class T>
  void backward_weights(const T* dy, const T* x, const PlaneLayout& in, T* weight_grad, T* bias_grad,
                        gemm::Workspace<T>& ws) const {
    if (direct_path<T>(in)) {
      add_bias_grad(dy, in, bias_grad);
      return direct::backward_weights(dy, x, geometry(in), weight_grad, ws);
    }
    if (channel_path<T>(in)) {
      add_bias_grad(dy, in, bias_grad);
      return direct::backward_weights_by_channels(dy, x, geometry(in), weight_grad, ws);
    }
    backward_weights_product(dy, x, in, weight_grad, bias_grad, ws);
  }
  /// backward_weights() through the product, whichever path it would take.
  template <class T>
  void backward_weights_product(const T* dy, const T* x, const PlaneLayout& in, T* weight_grad, T* bias_grad,
                                gemm::Workspace<T>& ws) const {
    const std::ptrdiff_t columns = in.images * out_size(in.height) * out_size(in.width);
    add_bias_grad(dy, in, bias_grad);
    gemm::product(out_channels, patch(), columns, gemm::MatrixA<T>{dy, columns}, ColumnsTransposed<T>{this, x, in, extent(x, in)},
                  gemm::MatrixC<T>{.data = weight_grad, .ld = patch(), .accumulate = true}, ws);
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
    if (gather_path<T>(in)) return backward_input_gather(weight, dy, in, dx, ws);
    backward_input_product(weight, dy, in, dx, ws);
  }

  /// backward_input() through the product and col2im. The rows of W^T are taken tap-major,
  /// (ky, kx, c) rather than im2col's (c, ky, kx), so the rows of one micro-tile land in different
  /// channel planes and Col2im adds them as packets: with (c, ky, kx) rows, neighbouring rows add
  /// into the same image row shifted by one element, and a packet load overlapping the packet
  /// store just before it waits for that store to reach the cache.
  template <class T>
  void backward_input_product(const T* weight, const T* dy, const PlaneLayout& in, T* dx,
                              gemm::Workspace<T>& ws) const {
    const std::ptrdiff_t columns = in.images * out_size(in.height) * out_size(in.width);
    for (std::ptrdiff_t c = 0; c < in.channels; ++c)
      for (std::ptrdiff_t i = 0; i < in.images; ++i) std::fill_n(dx + in.at(c, i, 0, 0), in.height * in.width, T(0));
    gemm::product(patch(), columns, out_channels, TapMajorWeights<T>{this, weight}, gemm::MatrixB<T>{dy, columns},
                  Col2im<T>{this, dx, in}, ws);
  }

  /// Whether the input gradient goes through the gather: few output channels (at most 16: with a
  /// k of 16, col2im's scattered additions would be the product's whole cost), no padding, and
  /// input rows of at least a packet, or a CPU that stores packets under a mask.
  template <class T>
  [[nodiscard]] bool gather_path(const PlaneLayout& in) const {
    constexpr std::ptrdiff_t L = gemm::lanes<T>;
    return padding == 0 && L >= 4 && out_channels <= 16 && (in.width >= L || masked_packets<T>) &&
           row_packets<T>(in.width) * kernel <= max_gather_masks;
  }

  /// backward_input() as a gather: G = W^T dY [patch, positions] goes through the product into a
  /// plain matrix, then each packet of an input row adds, for every tap with 0 <= y' - ky < out_h,
  /// the packet of G's row of output row y' - ky that starts kx before it, its lanes outside the
  /// output row masked to zero:
  ///   dx(c, i, y', x') = sum over ky, then kx, of G[(c, ky, kx)][(i, y' - ky, x' - kx)].
  /// Every element of dx is one sum in a fixed order, written once; nothing is scattered.
  template <class T>
  void backward_input_gather(const T* weight, const T* dy, const PlaneLayout& in, T* dx, gemm::Workspace<T>& ws) const {
    namespace ei = Eigen::internal;
    using P = gemm::Packet<T>;
    constexpr std::ptrdiff_t L = gemm::lanes<T>;
    const std::ptrdiff_t oh = out_size(in.height), ow = out_size(in.width), columns = in.images * oh * ow;
    // A packet of slack on both sides: masked-off lanes may read up to a packet outside G.
    const std::ptrdiff_t size = patch() * columns + 2 * L;
    if (ws.rows.size() < size) ws.rows = AlignedBuffer<T>(size);
    T* g = ws.rows.data() + L;
    gemm::product(patch(), columns, out_channels, gemm::MatrixA<T>{weight, patch(), true}, gemm::MatrixB<T>{dy, columns},
                  gemm::MatrixC<T>{.data = g, .ld = columns}, ws);

    // Input rows in packets: starts 0, L, ... and a last one ending at the row's end (overlapping
    // the one before it, with the same sums), or one packet stored under a mask when the row is
    // narrower than a packet. mask[p * kernel + kx]: the lanes of packet p whose x' - kx falls
    // inside the output row.
    const std::ptrdiff_t width = in.width, taps = kernel * kernel, packets = row_packets<T>(width);
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    alignas(64) T lanes[max_gather_masks][L];
    for (std::ptrdiff_t p = 0; p < packets; ++p)
      for (std::ptrdiff_t kx = 0; kx < kernel; ++kx)
        for (std::ptrdiff_t l = 0; l < L; ++l) {
          const std::ptrdiff_t x = packet_start<T>(p, width) + l - kx;
          lanes[p * kernel + kx][l] = std::bit_cast<T>(x >= 0 && x < ow ? ~Bits(0) : Bits(0));
        }
    constexpr std::ptrdiff_t block = 4;  // channels summed side by side: independent chains of additions
    for (std::ptrdiff_t c0 = 0; c0 < in.channels; c0 += block) {
      const std::ptrdiff_t cb = std::min(block, in.channels - c0);
      for (std::ptrdiff_t i = 0; i < in.images; ++i)
        for (std::ptrdiff_t y = 0; y < in.height; ++y) {
          const std::ptrdiff_t ky_first = std::max<std::ptrdiff_t>(0, y - (oh - 1)), ky_last = std::min(kernel - 1, y);
          for (std::ptrdiff_t p = 0; p < packets; ++p) {
            const std::ptrdiff_t x0 = packet_start<T>(p, width);
            P acc[block];
            for (std::ptrdiff_t b = 0; b < block; ++b) acc[b] = ei::pset1<P>(T(0));
            for (std::ptrdiff_t ky = ky_first; ky <= ky_last; ++ky) {
              const T* row = g + (i * oh + y - ky) * ow + x0;
              for (std::ptrdiff_t kx = 0; kx < kernel; ++kx) {
                const P mask = ei::pload<P>(lanes[p * kernel + kx]);
                const T* tap = row - kx + (ky * kernel + kx) * columns;
                for (std::ptrdiff_t b = 0; b < cb; ++b)
                  acc[b] = ei::padd(acc[b], ei::pand(ei::ploadu<P>(tap + (c0 + b) * taps * columns), mask));
              }
            }
            for (std::ptrdiff_t b = 0; b < cb; ++b) {
              T* out = dx + in.at(c0 + b, i, y, x0);
              if (width < L)
                store_first(out, acc[b], width);
              else
                ei::pstoreu(out, acc[b]);
            }
          }
        }
    }
  }

  /// The gather's packets of an input row of `width`: one when narrower than a packet.
  static constexpr std::ptrdiff_t max_gather_masks = 64;
  template <class T>
  [[nodiscard]] static std::ptrdiff_t row_packets(std::ptrdiff_t width) {
    return width >= gemm::lanes<T> ? (width + gemm::lanes<T> - 1) / gemm::lanes<T> : 1;
  }
  template <class T>
  [[nodiscard]] static std::ptrdiff_t packet_start(std::ptrdiff_t p, std::ptrdiff_t width) {
    return width < gemm::lanes<T> ? 0 : std::min(p * gemm::lanes<T>, width - gemm::lanes<T>);
  }

  /// Row q of W^T in tap-major order, q = (ky * kernel + kx) * in_channels + c: the patch element
  /// (c, ky, kx), i.e. column c * kernel^2 + ky * kernel + kx of W.
  [[nodiscard]] std::ptrdiff_t tap_major_element(std::ptrdiff_t q) const {
    const std::ptrdiff_t taps = kernel * kernel;
    return (q % in_channels) * taps + q / in_channels;
  }

  /// Packs the mr-row panels of W^T [patch, out] with its rows in tap-major order.
  template <class T>
  struct TapMajorWeights {
    const Conv2d* conv;
    const T* weight;

    void operator()(T* out, std::ptrdiff_t i0, std::ptrdiff_t rows, std::ptrdiff_t k0, std::ptrdiff_t depth) const {
      constexpr std::ptrdiff_t mr = gemm::Blocking<T>::mr;
      const std::ptrdiff_t patch = conv->patch();
      for (std::ptrdiff_t q = 0; q * mr < rows; ++q, out += mr * depth) {
        const std::ptrdiff_t valid = std::min(mr, rows - q * mr);
        for (std::ptrdiff_t r = 0; r < mr; ++r) {
          if (r >= valid) {
            for (std::ptrdiff_t kk = 0; kk < depth; ++kk) out[kk * mr + r] = T(0);
            continue;
          }
          const T* src = weight + k0 * patch + conv->tap_major_element(i0 + q * mr + r);
          for (std::ptrdiff_t kk = 0; kk < depth; ++kk) out[kk * mr + r] = src[kk * patch];
        }
      }
    }
  };

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
  /// Packs nr-column panels of a matrix whose element (kk, jj) is x at rows[kk] + cols[jj] (see
  /// Coordinate): col(x) when rows are patch elements and columns positions, col(x)^T the other
  /// way round. Without padding every element is inside x, and a panel row is nr plain loads.
  template <class T, bool Transposed>
  struct Panels {
    const Conv2d* conv;
    const T* x;
    PlaneLayout in;
    const T* end;  ///< x may be read up to here (past the last element `in` names, if the caller has more)

    void operator()(T* out, std::ptrdiff_t k0, std::ptrdiff_t depth, std::ptrdiff_t j0, std::ptrdiff_t cols) const {
      constexpr std::ptrdiff_t nr = gemm::Blocking<T>::nr, kc = gemm::Blocking<T>::kc;
      Coordinate rows[kc];
      conv->coordinates(in, Transposed, k0, depth, rows);
      for (std::ptrdiff_t q = 0; q * nr < cols; ++q, out += nr * depth) {
        const std::ptrdiff_t valid = std::min(nr, cols - q * nr);
        Coordinate columns[nr];
        std::ptrdiff_t offsets[nr];
        conv->coordinates(in, !Transposed, j0 + q * nr, valid, columns);
        for (std::ptrdiff_t jj = valid; jj < nr; ++jj) columns[jj] = columns[valid - 1];
        for (std::ptrdiff_t jj = 0; jj < nr; ++jj) offsets[jj] = columns[jj].offset;
        if (conv->padding == 0) {
          // Without padding the columns' offsets form runs of consecutive elements. A run is
          // copied as packets; a short one as one whole packet when x has that much left, its
          // excess written over by the next run (or the next row: rows are packed in order, and
          // the product leaves a packet of slack after the panels).
          std::ptrdiff_t run_start[nr + 1], runs = 0;
          for (std::ptrdiff_t jj = 0; jj < valid; ++jj)
            if (jj == 0 || offsets[jj] != offsets[jj - 1] + 1) run_start[runs++] = jj;
          run_start[runs] = valid;  // columns past the end are zeroed below
          for (std::ptrdiff_t kk = 0; kk < depth; ++kk) {
            const T* src = x + rows[kk].offset;
            T* dst = out + kk * nr;
            for (std::ptrdiff_t r = 0; r < runs; ++r) {
              const std::ptrdiff_t first = run_start[r], length = run_start[r + 1] - first;
              const T* from = src + offsets[first];
              if (length <= gemm::lanes<T> && from + gemm::lanes<T> <= end)
                Eigen::internal::pstoreu(dst + first, Eigen::internal::ploadu<gemm::Packet<T>>(from));
              else
                copy_run(dst + first, from, length);
            }
          }
          if (valid < nr)
            for (std::ptrdiff_t kk = 0; kk < depth; ++kk) std::fill_n(out + kk * nr + valid, nr - valid, T(0));
          continue;
        }
        for (std::ptrdiff_t kk = 0; kk < depth; ++kk) {
          const Coordinate r = rows[kk];
          T* dst = out + kk * nr;
          for (std::ptrdiff_t jj = 0; jj < nr; ++jj) {
            const std::ptrdiff_t sy = r.y + columns[jj].y, sx = r.x + columns[jj].x;
            const bool inside = jj < valid && sy >= 0 && sy < in.height && sx >= 0 && sx < in.width;
            dst[jj] = inside ? x[r.offset + offsets[jj]] : T(0);
          }
        }
      }
    }
  };
  template <class T>
  using Columns = Panels<T, false>;
  template <class T>
  using ColumnsTransposed = Panels<T, true>;

  /// Adds tiles of W^T dY (rows: patch elements in tap-major order, columns: output positions)
  /// into dx where im2col read them. Each element of dx receives its terms in the product's fixed
  /// tile order.
  template <class T>
  struct Col2im {
    const Conv2d* conv;
    T* dx;
    PlaneLayout in;

    void operator()(const gemm::Tile<T>& t) const {
      const std::ptrdiff_t k = conv->kernel, pad = conv->padding, channels = conv->in_channels;
      const std::ptrdiff_t oh = conv->out_size(in.height), ow = conv->out_size(in.width);
      struct Row {
        std::ptrdiff_t c, ky, kx;
      } rows[gemm::Blocking<T>::mr];
      const std::ptrdiff_t first_tap = t.row / channels;
      std::ptrdiff_t c = t.row - first_tap * channels, ky = first_tap / k, kx = first_tap - ky * k;
      for (std::ptrdiff_t r = 0; r < t.rows; ++r) {
        rows[r] = {c, ky - pad, kx - pad};
        if (++c == channels) {
          c = 0;
          if (++kx == k) kx = 0, ++ky;
        }
      }
      for_each_run(t.col, t.cols, oh, ow, [&](std::ptrdiff_t at, std::ptrdiff_t length, std::ptrdiff_t i,
                                              std::ptrdiff_t y, std::ptrdiff_t x0) {
        for (std::ptrdiff_t r = 0; r < t.rows; ++r) {
          const std::ptrdiff_t sy = y + rows[r].ky, sx = x0 + rows[r].kx;
          if (sy < 0 || sy >= in.height) continue;
          const T* src = t.values + r * t.stride + at;
          T* row = dx + in.at(rows[r].c, i, sy, 0);
          if (sx >= 0 && sx + length <= in.width) {
            add_run(row + sx, src, length);
          } else {
            for (std::ptrdiff_t u = 0; u < length; ++u)
              if (sx + u >= 0 && sx + u < in.width) row[sx + u] += src[u];
          }
        }
      });
    }
  };
};

}  // namespace distopt::nn
