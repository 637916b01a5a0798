// Direct convolution (one path's kernels: included once per path by nn/kernels/conv.hpp, inside its
// namespace) for layers too small for the product's blocking, in two kinds:
// - vectorised over the output width, for few output channels (the first layer of the classic
//   LeNet-5, on 1- or 3-channel images: 6 outputs, rows of 28);
// - vectorised over the output channels, for one or two packets of them and rows narrower than a
//   packet (the classic LeNet-5's second layer: 16 outputs, rows of 10).
//
// Why not the product: with 6 or 16 output channels the im2col matrix is the whole cost. Its
// panels hold every input element kernel^2 times, and packing them costs more than the 6- or
// 16-row product that reads them (bench_lenet's per-layer table: conv1's weight gradient ran at
// 15 GFLOP/s, a third of the classic step). Here the image is read where it lies: a row of it
// per tap feeding every output channel of a block from registers, or one element of it
// broadcast against a packet of output channels.
namespace direct {

using ::distopt::nn::direct::Geometry;

/// One output row cut into packets of L lanes: starts 0, L, 2L, ... and, when L does not divide
/// the width, one last packet ending at the row's end. That one overlaps the packet before it by
/// `overlap` lanes, so every load stays inside the row (no masking, no reads past the image): the
/// forward pass writes the overlapped outputs twice with the same bits, the weight gradient
/// zeroes the overlapped lanes of dY so each position counts once.
struct RowPackets {
  Index lanes, per_row, last_start, overlap;
  [[nodiscard]] Index start(Index p) const { return p + 1 < per_row ? p * lanes : last_start; }
};


/// Whether the direct path takes a layer: few output channels (the product's 6-row panels would
/// hold at most one), whole packets across the output row, the patch inside one k block of the
/// product (so the forward pass gives the product's bits: see forward()), and a 5 x 5 kernel.
template <class T>
[[nodiscard]] bool takes(const Geometry& g, Index padding) {
  return padding == 0 && g.kernel == 5 && g.out_channels <= Blocking<T>::mr && g.ow() >= lanes<T> &&
         g.channels * g.kernel * g.kernel <= Blocking<T>::kc;
}

template <class T>
[[nodiscard]] RowPackets row_packets(Index ow) {
  constexpr Index L = lanes<T>;
  const Index whole = ow / L;
  if (whole * L == ow) return {L, whole, (whole - 1) * L, 0};
  return {L, whole + 1, ow - L, whole * L - (ow - L)};
}

namespace detail {


// The starts of every row-packet r (image i, row y, packet p, in that order) in an image plane,
// in[r], and in the output, out[r]: made once per call, for every block of channels and taps to
// read (a division per lookup would cost as much as the block's arithmetic).
inline void row_packet_starts(const Geometry& g, const RowPackets& rp, Index* in, Index* out) {
  for (Index i = 0, r = 0; i < g.images; ++i)
    for (Index y = 0; y < g.oh(); ++y)
      for (Index p = 0; p < rp.per_row; ++p, ++r) {
        in[r] = i * g.image_stride + y * g.width + rp.start(p);
        out[r] = (i * g.oh() + y) * g.ow() + rp.start(p);
      }
}

// Outputs of OB channels [o0, o0 + OB) at NP row-packets: acc = sum over (c, ky, kx) in that
// order of w * x, from zero, then + bias.
template <class T, int OB, int NP>
void forward_block(const T* w, const T* bias, const T* x, T* y, const Geometry& g, const Index* in, const Index* out,
                   Index o0) {
  using P = Packet<T>;
  const Index k = g.kernel, patch = g.channels * k * k, columns = g.columns();
  P acc[OB][NP];
  for (int o = 0; o < OB; ++o)
    for (int q = 0; q < NP; ++q) acc[o][q] = pset1(T(0));
  const T* wo = w + o0 * patch;
  for (Index c = 0; c < g.channels; ++c)
    for (Index ky = 0; ky < k; ++ky) {
      const T* row = x + c * g.channel_stride + ky * g.width;
      const T* wr = wo + (c * k + ky) * k;
      for (Index kx = 0; kx < k; ++kx) {
        P xv[NP];
        for (int q = 0; q < NP; ++q) {
          xv[q] = ploadu(row + in[q] + kx);
          opaque(xv[q]);
        }
        for (int o = 0; o < OB; ++o) {
          const P wv = pset1(wr[o * patch + kx]);
          for (int q = 0; q < NP; ++q) acc[o][q] = pmadd(wv, xv[q], acc[o][q]);
        }
      }
    }
  for (int o = 0; o < OB; ++o) {
    const P b = pset1(bias[o0 + o]);
    for (int q = 0; q < NP; ++q) pstoreu(y + (o0 + o) * columns + out[q], padd(acc[o][q], b));
  }
}

// Row-packets per forward block: 3 channels x 4 packets of accumulators beside 4 image packets and
// a weight fill 17 of AVX-512's 32 registers; AVX2's 16 take 3 x 3 + 3 + 1.
template <class T>
inline constexpr int forward_row_packets = lanes<T> >= 16 ? 4 : 3;

template <class T, int OB>
void forward_channels(const T* w, const T* bias, const T* x, T* y, const Geometry& g, const Index* in,
                      const Index* out, Index total, Index o0) {
  constexpr int NP = forward_row_packets<T>;
  Index r = 0;
  for (; r + NP <= total; r += NP) forward_block<T, OB, NP>(w, bias, x, y, g, in + r, out + r, o0);
  for (; r < total; ++r) forward_block<T, OB, 1>(w, bias, x, y, g, in + r, out + r, o0);
}

// dW[o0 .. o0 + OB, c, ky, 0 .. k) += sum over every output position of dY * x: one lane sum per
// (channel, kx) over the row-packets in order, then each packet's lanes summed.
template <class T, int OB, int K>
void weights_block(const T* dy, const T* x, T* wg, const Geometry& g, const RowPackets& rp, const Index* in,
                   const Index* out, Index c, Index ky, Index o0) {
  using P = Packet<T>;
  constexpr Index L = lanes<T>;
  const Index total = g.images * g.oh() * rp.per_row, columns = g.columns();
  alignas(64) T keep[L];
  for (Index l = 0; l < L; ++l) keep[l] = l < rp.overlap ? T(0) : T(1);
  const P overlap_mask = pload(keep);
  P acc[OB][K];
  for (int o = 0; o < OB; ++o)
    for (int kx = 0; kx < K; ++kx) acc[o][kx] = pset1(T(0));
  const T* plane = x + c * g.channel_stride + ky * g.width;
  for (Index r = 0, p = 0; r < total; ++r) {
    // The last packet of a row overlaps the one before it; its overlapped lanes count once.
    const bool overlapped = ++p == rp.per_row && rp.overlap > 0;
    if (p == rp.per_row) p = 0;
    P d[OB];
    for (int o = 0; o < OB; ++o) {
      d[o] = ploadu(dy + (o0 + o) * columns + out[r]);
      if (overlapped) d[o] = pmul(d[o], overlap_mask);
      opaque(d[o]);
    }
    for (int kx = 0; kx < K; ++kx) {
      P xv = ploadu(plane + in[r] + kx);
      opaque(xv);
      for (int o = 0; o < OB; ++o) acc[o][kx] = pmadd(d[o], xv, acc[o][kx]);
    }
  }
  const Index patch = g.channels * K * K;
  for (int o = 0; o < OB; ++o)
    for (int kx = 0; kx < K; ++kx) wg[(o0 + o) * patch + (c * K + ky) * K + kx] += predux(acc[o][kx]);
}

// Channel blocks: as many as the registers hold beside the block's dY and one row of x
// (AVX-512's 32 hold 3 x 5 accumulators, AVX2's 16 hold 2 x 5).
template <class T>
inline constexpr int weight_block = lanes<T> >= 16 ? 3 : 2;

}  // namespace detail

/// y [out, columns] = W * x + b for every output position (the convolution as Conv2d defines it,
/// with padding 0). Each output is the sum over (c, ky, kx) in that order, from zero, plus the
/// bias: the bits of Conv2d's product when the patch fits one k block (takes() asks for it).
template <class T>
void forward(const T* weight, const T* bias, const T* x, const Geometry& g, T* y, gemm::Workspace<T>& ws) {
  constexpr int OB = 3;
  const RowPackets rp = row_packets<T>(g.ow());
  const Index total = g.images * g.oh() * rp.per_row;
  if (ws.offsets.size() < 2 * total) ws.offsets = AlignedBuffer<Index>(2 * total);
  Index *in = ws.offsets.data(), *out = in + total;
  detail::row_packet_starts(g, rp, in, out);
  Index o0 = 0;
  for (; o0 + OB <= g.out_channels; o0 += OB) detail::forward_channels<T, OB>(weight, bias, x, y, g, in, out, total, o0);
  for (; o0 < g.out_channels; ++o0) detail::forward_channels<T, 1>(weight, bias, x, y, g, in, out, total, o0);
}

/// weight_grad [out, channels, 5, 5] += dY col(x)^T (dY [out, columns]); the bias gradient is
/// Conv2d's. The order of each sum is fixed by the geometry alone.
template <class T>
void backward_weights(const T* dy, const T* x, const Geometry& g, T* weight_grad, gemm::Workspace<T>& ws) {
  constexpr int OB = detail::weight_block<T>, K = 5;
  const RowPackets rp = row_packets<T>(g.ow());
  const Index total = g.images * g.oh() * rp.per_row;
  if (ws.offsets.size() < 2 * total) ws.offsets = AlignedBuffer<Index>(2 * total);
  Index *in = ws.offsets.data(), *out = in + total;
  detail::row_packet_starts(g, rp, in, out);
  for (Index c = 0; c < g.channels; ++c)
    for (Index ky = 0; ky < K; ++ky) {
      Index o0 = 0;
      for (; o0 + OB <= g.out_channels; o0 += OB)
        detail::weights_block<T, OB, K>(dy, x, weight_grad, g, rp, in, out, c, ky, o0);
      for (; o0 < g.out_channels; ++o0) detail::weights_block<T, 1, K>(dy, x, weight_grad, g, rp, in, out, c, ky, o0);
    }
}

// --- vectorised over the output channels ------------------------------------------------------

/// The largest patch (channels x kernel^2) the channel-vectorised path takes: its tap table lives
/// on the stack.
inline constexpr Index max_channel_patch = 1024;

/// Whether the channel-vectorised path takes a layer: more output channels than the width path's
/// blocks hold (the product's 6-row panels would be partly empty), at most 16 and a whole number of
/// packets of at least 4 lanes, no padding. Its forward pass and weight gradient give the
/// product's bits: each sum runs over the same k blocks in the same order.
template <class T>
[[nodiscard]] bool takes_channels(const Geometry& g, Index padding) {
  constexpr Index L = lanes<T>;
  return padding == 0 && L >= 4 && g.out_channels > Blocking<T>::mr && g.out_channels <= 16 &&
         g.out_channels % L == 0 && g.channels * g.kernel * g.kernel <= max_channel_patch;
}

namespace detail {

// x offsets of patch elements k = (c, ky, kx), in im2col's order.
inline void patch_offsets(const Geometry& g, Index* out) {
  for (Index c = 0, k = 0; c < g.channels; ++c)
    for (Index ky = 0; ky < g.kernel; ++ky)
      for (Index kx = 0; kx < g.kernel; ++kx) out[k++] = c * g.channel_stride + ky * g.width + kx;
}
// x offsets of output positions j = (i, y, x), in the product's column order.
inline void position_offsets(const Geometry& g, Index* out) {
  for (Index i = 0, j = 0; i < g.images; ++i)
    for (Index y = 0; y < g.oh(); ++y)
      for (Index x = 0; x < g.ow(); ++x) out[j++] = i * g.image_stride + y * g.width + x;
}

// Registers of accumulators: R positions (or taps) by NP packets of output channels, 12 in all
// (16 with AVX-512's 32 registers) beside the NP packets of the operand and one broadcast.
template <class T, int NP>
inline constexpr int channel_rows = (lanes<T> >= 16 ? 16 : 12) / NP;

// Outputs at positions at[0, R) (x offsets), every channel: tile[r][o] = sum over the k blocks of
// the product, in turn, of (sum over k in the block of x[at[r] + taps[k]] * wt[k][o]), + bias[o].
template <class T, int NP, int R>
void channels_forward_block(const T* wt, const T* bias, const T* x, const Index* at, const Index* taps, Index patch,
                            T* tile) {
  using P = Packet<T>;
  constexpr Index L = lanes<T>, out = NP * L, kc = Blocking<T>::kc;
  // Set before the loop only so that no compiler sees a read before a write (GCC warns in a
  // consumer's -Wall build otherwise); the first block overwrites it, so the sums are unchanged.
  P total[R][NP];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NP; ++q) total[r][q] = pset1(T(0));
  for (Index k0 = 0; k0 < patch; k0 += kc) {
    const Index k1 = std::min(patch, k0 + kc);
    P acc[R][NP];
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) acc[r][q] = pset1(T(0));
    for (Index k = k0; k < k1; ++k) {
      P w[NP];
      for (int q = 0; q < NP; ++q) w[q] = pload(wt + k * out + q * L);
      const T* xk = x + taps[k];
      for (int r = 0; r < R; ++r) {
        const P xv = pset1(xk[at[r]]);
        for (int q = 0; q < NP; ++q) acc[r][q] = pmadd(xv, w[q], acc[r][q]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) total[r][q] = k0 == 0 ? acc[r][q] : padd(total[r][q], acc[r][q]);
  }
  for (int q = 0; q < NP; ++q) {
    const P b = ploadu(bias + q * L);
    for (int r = 0; r < R; ++r) pstore(tile + r * out + q * L, padd(total[r][q], b));
  }
}

// dW[o][first + r] += sum over positions p of dY[o][p] * x[at[p] + taps[r]], r < R, over the
// product's k blocks of positions, each block's sum added in turn (dyt: dY transposed, [p][o]).
template <class T, int NP, int R>
void channels_weights_block(const T* dyt, const T* x, const Index* at, Index columns, const Index* taps, Index count,
                            Index patch, Index first, T* weight_grad) {
  using P = Packet<T>;
  constexpr Index L = lanes<T>, out = NP * L, kc = Blocking<T>::kc;
  alignas(64) T tile[R * out];
  for (Index p0 = 0; p0 < columns; p0 += kc) {
    const Index p1 = std::min(columns, p0 + kc);
    P acc[R][NP];
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) acc[r][q] = pset1(T(0));
    for (Index p = p0; p < p1; ++p) {
      P d[NP];
      for (int q = 0; q < NP; ++q) d[q] = pload(dyt + p * out + q * L);
      const T* xp = x + at[p];
      for (int r = 0; r < R; ++r) {
        const P xv = pset1(xp[taps[r]]);
        for (int q = 0; q < NP; ++q) acc[r][q] = pmadd(xv, d[q], acc[r][q]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < NP; ++q) pstore(tile + r * out + q * L, acc[r][q]);
    for (Index o = 0; o < out; ++o)
      for (Index r = 0; r < count; ++r) weight_grad[o * patch + first + r] += tile[r * out + o];
  }
}

template <class T, int NP>
void channels_forward(const T* weight, const T* bias, const T* x, const Geometry& g, T* y, gemm::Workspace<T>& ws) {
  constexpr Index out = NP * lanes<T>;
  constexpr int R = channel_rows<T, NP>;
  const Index patch = g.channels * g.kernel * g.kernel, columns = g.columns();
  if (ws.a.size() < patch * out) ws.a = AlignedBuffer<T>(patch * out);
  if (ws.offsets.size() < columns + R) ws.offsets = AlignedBuffer<Index>(columns + R);
  T* wt = ws.a.data();
  for (Index o = 0; o < out; ++o)
    for (Index k = 0; k < patch; ++k) wt[k * out + o] = weight[o * patch + k];
  Index taps[max_channel_patch];
  patch_offsets(g, taps);
  Index* at = ws.offsets.data();
  position_offsets(g, at);
  // A last block of fewer than R positions repeats the last one; its copies are not stored.
  for (Index r = 0; r < R; ++r) at[columns + r] = at[columns - 1];
  alignas(64) T tile[R * out];
  for (Index j0 = 0; j0 < columns; j0 += R) {
    channels_forward_block<T, NP, R>(wt, bias, x, at + j0, taps, patch, tile);
    const Index valid = std::min<Index>(R, columns - j0);
    for (Index o = 0; o < out; ++o)
      for (Index r = 0; r < valid; ++r) y[o * columns + j0 + r] = tile[r * out + o];
  }
}

template <class T, int NP>
void channels_weights(const T* dy, const T* x, const Geometry& g, T* weight_grad, gemm::Workspace<T>& ws) {
  constexpr Index out = NP * lanes<T>;
  constexpr int R = channel_rows<T, NP>;
  const Index patch = g.channels * g.kernel * g.kernel, columns = g.columns();
  if (ws.b.size() < columns * out) ws.b = AlignedBuffer<T>(columns * out);
  if (ws.offsets.size() < columns + R) ws.offsets = AlignedBuffer<Index>(columns + R);
  T* dyt = ws.b.data();
  for (Index o = 0; o < out; ++o)
    for (Index p = 0; p < columns; ++p) dyt[p * out + o] = dy[o * columns + p];
  // Taps past the patch repeat its last one; their sums are not added anywhere.
  Index taps[max_channel_patch + R];
  patch_offsets(g, taps);
  for (Index r = 0; r < R; ++r) taps[patch + r] = taps[patch - 1];
  Index* at = ws.offsets.data();
  position_offsets(g, at);
  for (Index k0 = 0; k0 < patch; k0 += R)
    channels_weights_block<T, NP, R>(dyt, x, at, columns, taps + k0, std::min<Index>(R, patch - k0), patch, k0,
                                     weight_grad);
}

// f(std::integral_constant<int, NP>) for NP = out_channels / lanes in {1, 2, 4}.
template <class T, class F>
void with_channel_packets(Index out_channels, F&& f) {
  switch (out_channels / lanes<T>) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    default: throw std::logic_error("direct: no channel-vectorised kernel for this many output channels");
  }
}

}  // namespace detail

/// y [out, columns] = W col(x) + b, vectorised over the output channels (takes_channels()): the
/// product's bits.
template <class T>
void forward_by_channels(const T* weight, const T* bias, const T* x, const Geometry& g, T* y, gemm::Workspace<T>& ws) {
  detail::with_channel_packets<T>(g.out_channels, [&](auto np) {
    detail::channels_forward<T, decltype(np)::value>(weight, bias, x, g, y, ws);
  });
}

/// weight_grad [out, patch] += dY col(x)^T, vectorised over the output channels: the product's
/// bits (the bias gradient is Conv2d's).
template <class T>
void backward_weights_by_channels(const T* dy, const T* x, const Geometry& g, T* weight_grad, gemm::Workspace<T>& ws) {
  detail::with_channel_packets<T>(g.out_channels, [&](auto np) {
    detail::channels_weights<T, decltype(np)::value>(dy, x, g, weight_grad, ws);
  });
}

}  // namespace direct
