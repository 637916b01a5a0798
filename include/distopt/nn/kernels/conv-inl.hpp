// Conv2d's kernels on one path (included once per path by nn/kernels/conv.hpp, inside its
// namespace): the implicit im2col packers, col2im in the product's epilogue, the input gradient
// as a gather, and the choice among those and the direct convolutions. The layer (nn/conv2d.hpp)
// holds the geometry and calls the entry points at the end of this file.

/// out[0, n) = src[0, n): runs of at least one register as two overlapping unaligned packets,
/// shorter runs under a mask (AVX-512) or element by element (nothing outside either range is
/// read or written).
template <class T>
inline void copy_run(T* out, const T* src, Index n) {
  constexpr Index L = lanes<T>;
  if (L > 1 && n >= L) {
    for (Index t = 0; t + L < n; t += L) pstoreu(out + t, ploadu(src + t));
    pstoreu(out + n - L, ploadu(src + n - L));
    return;
  }
  if constexpr (masked_packets<T>) {
    pstoreu_first(out, ploadu_first(src, n), n);
  } else {
    for (Index t = 0; t < n; ++t) out[t] = src[t];
  }
}

/// out[0, n) += src[0, n) in packets of the full width, then, with masks, one packet under a
/// mask (no element outside [0, n) is read or written), otherwise in packets of half the width
/// and element by element (AVX's masked moves are slow on AMD's cores). Each element gets one
/// addition, so the bits do not depend on the split.
template <class T>
inline void add_run(T* out, const T* src, Index n) {
  constexpr Index L = lanes<T>;
  Index u = 0;
  if constexpr (L > 1)
    for (; u + L <= n; u += L) pstoreu(out + u, padd(ploadu(out + u), ploadu(src + u)));
  if (u == n) return;
  if constexpr (masked_packets<T>) {
    pstoreu_first(out + u, padd(ploadu_first(out + u, n - u), ploadu_first(src + u, n - u)), n - u);
  } else {
    padd_halves(out, src, u, n);
    for (; u < n; ++u) out[u] += src[u];
  }
}

/// out[0, n) = the first n < lanes elements of v: under a mask, or through a buffer.
template <class T>
inline void store_first(T* out, const Packet<T>& v, Index n) {
  if constexpr (masked_packets<T>) {
    pstoreu_first(out, v, n);
  } else {
    alignas(64) T all[lanes<T>];
    pstore(all, v);
    for (Index t = 0; t < n; ++t) out[t] = all[t];
  }
}

namespace convolution {

/// The gather's packets of an input row of `width`: one when narrower than a packet.
inline constexpr Index max_gather_masks = 64;
template <class T>
[[nodiscard]] Index row_packets(Index width) {
  return width >= lanes<T> ? (width + lanes<T> - 1) / lanes<T> : 1;
}
template <class T>
[[nodiscard]] Index packet_start(Index p, Index width) {
  return width < lanes<T> ? 0 : std::min(p * lanes<T>, width - lanes<T>);
}

template <class T>
[[nodiscard]] bool direct_path(const Conv2d& conv, const PlaneLayout& in) {
  return direct::takes<T>(conv.geometry(in), conv.padding);
}
template <class T>
[[nodiscard]] bool channel_path(const Conv2d& conv, const PlaneLayout& in) {
  return !direct_path<T>(conv, in) && direct::takes_channels<T>(conv.geometry(in), conv.padding);
}
template <class T>
[[nodiscard]] bool gather_path(const Conv2d& conv, const PlaneLayout& in) {
  constexpr Index L = lanes<T>;
  return conv.padding == 0 && L >= 4 && conv.out_channels <= 16 && (in.width >= L || masked_packets<T>) &&
         row_packets<T>(in.width) * conv.kernel <= max_gather_masks;
}

/// Packs the mr-row panels of W^T [patch, out] with its rows in tap-major order.
template <class T>
struct TapMajorWeights {
  const Conv2d* conv;
  const T* weight;

  void operator()(T* out, Index i0, Index rows, Index k0, Index depth) const {
    constexpr Index mr = Blocking<T>::mr;
    const Index patch = conv->patch();
    for (Index q = 0; q * mr < rows; ++q, out += mr * depth) {
      const Index valid = std::min(mr, rows - q * mr);
      for (Index r = 0; r < mr; ++r) {
        if (r >= valid) {
          for (Index kk = 0; kk < depth; ++kk) out[kk * mr + r] = T(0);
          continue;
        }
        const T* src = weight + k0 * patch + conv->tap_major_element(i0 + q * mr + r);
        for (Index kk = 0; kk < depth; ++kk) out[kk * mr + r] = src[kk * patch];
      }
    }
  }
};

/// Packs nr-column panels of a matrix whose element (kk, jj) is x at rows[kk] + cols[jj] (see
/// Conv2d::Coordinate): col(x) when rows are patch elements and columns positions, col(x)^T the
/// other way round. Without padding every element is inside x, and a panel row is nr plain loads.
template <class T, bool Transposed>
struct Panels {
  const Conv2d* conv;
  const T* x;
  PlaneLayout in;
  const T* end;  ///< x may be read up to here (past the last element `in` names, if the caller has more)

  void operator()(T* out, Index k0, Index depth, Index j0, Index cols) const {
    using Coordinate = Conv2d::Coordinate;
    constexpr Index nr = Blocking<T>::nr, kc = Blocking<T>::kc;
    Coordinate rows[kc];
    conv->coordinates(in, Transposed, k0, depth, rows);
    for (Index q = 0; q * nr < cols; ++q, out += nr * depth) {
      const Index valid = std::min(nr, cols - q * nr);
      Coordinate columns[nr];
      Index offsets[nr];
      conv->coordinates(in, !Transposed, j0 + q * nr, valid, columns);
      for (Index jj = valid; jj < nr; ++jj) columns[jj] = columns[valid - 1];
      for (Index jj = 0; jj < nr; ++jj) offsets[jj] = columns[jj].offset;
      if (conv->padding == 0) {
        // Without padding the columns' offsets form runs of consecutive elements. A run is
        // copied as packets; a short one as one whole packet when x has that much left, its
        // excess written over by the next run (or the next row: rows are packed in order, and
        // the product leaves a packet of slack after the panels).
        Index run_start[nr + 1], runs = 0;
        for (Index jj = 0; jj < valid; ++jj)
          if (jj == 0 || offsets[jj] != offsets[jj - 1] + 1) run_start[runs++] = jj;
        run_start[runs] = valid;  // columns past the end are zeroed below
        for (Index kk = 0; kk < depth; ++kk) {
          const T* src = x + rows[kk].offset;
          T* dst = out + kk * nr;
          for (Index r = 0; r < runs; ++r) {
            const Index first = run_start[r], length = run_start[r + 1] - first;
            const T* from = src + offsets[first];
            if (length <= lanes<T> && from + lanes<T> <= end)
              pstoreu(dst + first, ploadu(from));
            else
              copy_run(dst + first, from, length);
          }
        }
        if (valid < nr)
          for (Index kk = 0; kk < depth; ++kk) std::fill_n(out + kk * nr + valid, nr - valid, T(0));
        continue;
      }
      for (Index kk = 0; kk < depth; ++kk) {
        const Coordinate r = rows[kk];
        T* dst = out + kk * nr;
        for (Index jj = 0; jj < nr; ++jj) {
          const Index sy = r.y + columns[jj].y, sx = r.x + columns[jj].x;
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

  void operator()(const Tile<T>& t) const {
    const Index k = conv->kernel, pad = conv->padding, channels = conv->in_channels;
    const Index oh = conv->out_size(in.height), ow = conv->out_size(in.width);
    struct Row {
      Index c, ky, kx;
    } rows[Blocking<T>::mr];
    const Index first_tap = t.row / channels;
    Index c = t.row - first_tap * channels, ky = first_tap / k, kx = first_tap - ky * k;
    for (Index r = 0; r < t.rows; ++r) {
      rows[r] = {c, ky - pad, kx - pad};
      if (++c == channels) {
        c = 0;
        if (++kx == k) kx = 0, ++ky;
      }
    }
    for_each_run(t.col, t.cols, oh, ow, [&](Index at, Index length, Index i, Index y, Index x0) {
      for (Index r = 0; r < t.rows; ++r) {
        const Index sy = y + rows[r].ky, sx = x0 + rows[r].kx;
        if (sy < 0 || sy >= in.height) continue;
        const T* src = t.values + r * t.stride + at;
        T* row = dx + in.at(rows[r].c, i, sy, 0);
        if (sx >= 0 && sx + length <= in.width) {
          add_run(row + sx, src, length);
        } else {
          for (Index u = 0; u < length; ++u)
            if (sx + u >= 0 && sx + u < in.width) row[sx + u] += src[u];
        }
      }
    });
  }
};

template <class T>
void forward_product(const Conv2d& conv, const T* weight, const T* bias, const T* x, const PlaneLayout& in, T* y,
                     gemm::Workspace<T>& ws) {
  const Index columns = in.images * conv.out_size(in.height) * conv.out_size(in.width);
  product(conv.out_channels, columns, conv.patch(), PackMatrixA<T>{{weight, conv.patch()}},
          Columns<T>{&conv, x, in, Conv2d::extent(x, in)}, WriteMatrixC<T>{{.data = y, .ld = columns, .row_bias = bias}},
          ws);
}

template <class T>
void backward_weights_product(const Conv2d& conv, const T* dy, const T* x, const PlaneLayout& in, T* weight_grad,
                              gemm::Workspace<T>& ws) {
  const Index columns = in.images * conv.out_size(in.height) * conv.out_size(in.width);
  product(conv.out_channels, conv.patch(), columns, PackMatrixA<T>{{dy, columns}},
          ColumnsTransposed<T>{&conv, x, in, Conv2d::extent(x, in)},
          WriteMatrixC<T>{{.data = weight_grad, .ld = conv.patch(), .accumulate = true}}, ws);
}

/// The input gradient through the product and col2im. The rows of W^T are taken tap-major,
/// (ky, kx, c) rather than im2col's (c, ky, kx), so the rows of one micro-tile land in different
/// channel planes and Col2im adds them as packets: with (c, ky, kx) rows, neighbouring rows add
/// into the same image row shifted by one element, and a packet load overlapping the packet
/// store just before it waits for that store to reach the cache.
template <class T>
void backward_input_product(const Conv2d& conv, const T* weight, const T* dy, const PlaneLayout& in, T* dx,
                            gemm::Workspace<T>& ws) {
  const Index columns = in.images * conv.out_size(in.height) * conv.out_size(in.width);
  for (Index c = 0; c < in.channels; ++c)
    for (Index i = 0; i < in.images; ++i) std::fill_n(dx + in.at(c, i, 0, 0), in.height * in.width, T(0));
  product(conv.patch(), columns, conv.out_channels, TapMajorWeights<T>{&conv, weight}, PackMatrixB<T>{{dy, columns}},
          Col2im<T>{&conv, dx, in}, ws);
}

/// The input gradient as a gather: G = W^T dY [patch, positions] goes through the product into a
/// plain matrix, then each packet of an input row adds, for every tap with 0 <= y' - ky < out_h,
/// the packet of G's row of output row y' - ky that starts kx before it, its lanes outside the
/// output row masked to zero:
///   dx(c, i, y', x') = sum over ky, then kx, of G[(c, ky, kx)][(i, y' - ky, x' - kx)].
/// Every element of dx is one sum in a fixed order, written once; nothing is scattered.
template <class T>
void backward_input_gather(const Conv2d& conv, const T* weight, const T* dy, const PlaneLayout& in, T* dx,
                           gemm::Workspace<T>& ws) {
  using P = Packet<T>;
  constexpr Index L = lanes<T>;
  const Index kernel = conv.kernel, patch = conv.patch();
  const Index oh = conv.out_size(in.height), ow = conv.out_size(in.width), columns = in.images * oh * ow;
  // A packet of slack on both sides: masked-off lanes may read up to a packet outside G.
  const Index size = patch * columns + 2 * L;
  if (ws.rows.size() < size) ws.rows = AlignedBuffer<T>(size);
  T* g = ws.rows.data() + L;
  product(patch, columns, conv.out_channels, PackMatrixA<T>{{weight, patch, true}}, PackMatrixB<T>{{dy, columns}},
          WriteMatrixC<T>{{.data = g, .ld = columns}}, ws);

  // Input rows in packets: starts 0, L, ... and a last one ending at the row's end (overlapping
  // the one before it, with the same sums), or one packet stored under a mask when the row is
  // narrower than a packet. mask[p * kernel + kx]: the lanes of packet p whose x' - kx falls
  // inside the output row.
  const Index width = in.width, taps = kernel * kernel, packets = row_packets<T>(width);
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  alignas(64) T masks[max_gather_masks][L];
  for (Index p = 0; p < packets; ++p)
    for (Index kx = 0; kx < kernel; ++kx)
      for (Index l = 0; l < L; ++l) {
        const Index x = packet_start<T>(p, width) + l - kx;
        masks[p * kernel + kx][l] = std::bit_cast<T>(x >= 0 && x < ow ? ~Bits(0) : Bits(0));
      }
  constexpr Index block = 4;  // channels summed side by side: independent chains of additions
  for (Index c0 = 0; c0 < in.channels; c0 += block) {
    const Index cb = std::min(block, in.channels - c0);
    for (Index i = 0; i < in.images; ++i)
      for (Index y = 0; y < in.height; ++y) {
        const Index ky_first = std::max<Index>(0, y - (oh - 1)), ky_last = std::min(kernel - 1, y);
        for (Index p = 0; p < packets; ++p) {
          const Index x0 = packet_start<T>(p, width);
          P acc[block];
          for (Index b = 0; b < block; ++b) acc[b] = pset1(T(0));
          for (Index ky = ky_first; ky <= ky_last; ++ky) {
            const T* row = g + (i * oh + y - ky) * ow + x0;
            for (Index kx = 0; kx < kernel; ++kx) {
              const P mask = pload(masks[p * kernel + kx]);
              const T* tap = row - kx + (ky * kernel + kx) * columns;
              for (Index b = 0; b < cb; ++b) acc[b] = padd(acc[b], pand(ploadu(tap + (c0 + b) * taps * columns), mask));
            }
          }
          for (Index b = 0; b < cb; ++b) {
            T* out = dx + in.at(c0 + b, i, y, x0);
            if (width < L)
              store_first(out, acc[b], width);
            else
              pstoreu(out, acc[b]);
          }
        }
      }
  }
}

}  // namespace convolution

// --- entry points (the Tag picks this path's overloads: nn/isa.hpp) ---------------------------

template <class T>
bool conv_direct_path(Tag, const Conv2d& conv, const PlaneLayout& in) {
  return convolution::direct_path<T>(conv, in);
}
template <class T>
bool conv_channel_path(Tag, const Conv2d& conv, const PlaneLayout& in) {
  return convolution::channel_path<T>(conv, in);
}
template <class T>
bool conv_gather_path(Tag, const Conv2d& conv, const PlaneLayout& in) {
  return convolution::gather_path<T>(conv, in);
}

template <class T>
void conv_forward(Tag, const Conv2d& conv, const T* weight, const T* bias, const T* x, const PlaneLayout& in, T* y,
                  gemm::Workspace<T>& ws) {
  if (convolution::direct_path<T>(conv, in)) return direct::forward(weight, bias, x, conv.geometry(in), y, ws);
  if (convolution::channel_path<T>(conv, in)) return direct::forward_by_channels(weight, bias, x, conv.geometry(in), y, ws);
  convolution::forward_product(conv, weight, bias, x, in, y, ws);
}
template <class T>
void conv_forward_product(Tag, const Conv2d& conv, const T* weight, const T* bias, const T* x, const PlaneLayout& in,
                          T* y, gemm::Workspace<T>& ws) {
  convolution::forward_product(conv, weight, bias, x, in, y, ws);
}

/// dW += dY col(x)^T (the bias gradient is the layer's).
template <class T>
void conv_backward_weights(Tag, const Conv2d& conv, const T* dy, const T* x, const PlaneLayout& in, T* weight_grad,
                           gemm::Workspace<T>& ws) {
  if (convolution::direct_path<T>(conv, in)) return direct::backward_weights(dy, x, conv.geometry(in), weight_grad, ws);
  if (convolution::channel_path<T>(conv, in))
    return direct::backward_weights_by_channels(dy, x, conv.geometry(in), weight_grad, ws);
  convolution::backward_weights_product(conv, dy, x, in, weight_grad, ws);
}
template <class T>
void conv_backward_weights_product(Tag, const Conv2d& conv, const T* dy, const T* x, const PlaneLayout& in,
                                   T* weight_grad, gemm::Workspace<T>& ws) {
  convolution::backward_weights_product(conv, dy, x, in, weight_grad, ws);
}

template <class T>
void conv_backward_input(Tag, const Conv2d& conv, const T* weight, const T* dy, const PlaneLayout& in, T* dx,
                         gemm::Workspace<T>& ws) {
  if (convolution::gather_path<T>(conv, in)) return convolution::backward_input_gather(conv, weight, dy, in, dx, ws);
  convolution::backward_input_product(conv, weight, dy, in, dx, ws);
}
template <class T>
void conv_backward_input_product(Tag, const Conv2d& conv, const T* weight, const T* dy, const PlaneLayout& in, T* dx,
                                 gemm::Workspace<T>& ws) {
  convolution::backward_input_product(conv, weight, dy, in, dx, ws);
}
template <class T>
void conv_backward_input_gather(Tag, const Conv2d& conv, const T* weight, const T* dy, const PlaneLayout& in, T* dx,
                                gemm::Workspace<T>& ws) {
  convolution::backward_input_gather(conv, weight, dy, in, dx, ws);
}
