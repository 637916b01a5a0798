// The matrix-product engine of one path (included once per path by nn/kernels/gemm.hpp, inside
// its namespace: no include guard, no includes). BLIS-style blocking, packed panels and a
// register-blocked micro-kernel over the path's packets (nn/kernels/packets.hpp).
//
// Why our own and not Eigen's product: the layers need what a library GEMM does not offer, the
// operands packed straight from an image (implicit im2col) and the result handed to a fused
// epilogue (bias, ReLU, the ReLU mask, col2im), so no intermediate matrix is written and read
// back. The micro-kernel reaches the FMA peak measured beside it (bench_lenet,
// BM_Gemm_MicroKernel).
//
// Every element of C is one sum over k in a fixed order (k blocks of `kc` in turn, each
// accumulated in a register in k order), whatever the blocking over m and n: splitting m or n
// among threads never changes a bit.

/// Register and cache blocking (Goto and van de Geijn 2008; sizes after Low et al. 2016).
/// The micro-tile is mr x nr = 6 x (2 registers): 12 accumulators, two B registers and one
/// broadcast fit the 16 vector registers of AVX2 (AVX-512 has 32 and uses the same tile), and
/// 12 independent FMA chains cover 2 pipes x 4 cycles of latency. kc keeps a B micro-panel
/// (kc x nr) in half of a 32 KiB L1; mc keeps the packed A block (mc x kc) in half of a 512 KiB
/// L2; nc bounds the packed B panel. The sizes are constants of the path, not read from the
/// running CPU: kc fixes the order of every sum, and a path must give the same bits on every CPU.
template <class T>
struct Blocking {
  static constexpr Index mr = 6;
  static constexpr Index nr = 2 * lanes<T>;
  static constexpr Index kc = std::max<Index>(16, Index(16 * 1024) / (nr * Index(sizeof(T))));
  static constexpr Index mc = (Index(256 * 1024) / (kc * Index(sizeof(T)))) / mr * mr;
  static constexpr Index nc = 4096 / nr * nr;
};

/// tile [mr, nr] (row-major, stride nr) = sum over kk < kc of a[kk * mr + r] * b[kk * nr + j]:
/// one packed A micro-panel against one packed B micro-panel.
template <class T>
inline void micro_kernel(Index kc, const T* __restrict a, const T* __restrict b, T* __restrict tile) {
  using P = Packet<T>;
  constexpr Index mr = Blocking<T>::mr, nr = Blocking<T>::nr, L = lanes<T>;
  P c00 = pset1(T(0)), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  P c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (Index kk = 0; kk < kc; ++kk, a += mr, b += nr) {
    const P b0 = pload(b), b1 = pload(b + L);
    P x = pset1(a[0]);
    c00 = pmadd(x, b0, c00);
    c01 = pmadd(x, b1, c01);
    x = pset1(a[1]);
    c10 = pmadd(x, b0, c10);
    c11 = pmadd(x, b1, c11);
    x = pset1(a[2]);
    c20 = pmadd(x, b0, c20);
    c21 = pmadd(x, b1, c21);
    x = pset1(a[3]);
    c30 = pmadd(x, b0, c30);
    c31 = pmadd(x, b1, c31);
    x = pset1(a[4]);
    c40 = pmadd(x, b0, c40);
    c41 = pmadd(x, b1, c41);
    x = pset1(a[5]);
    c50 = pmadd(x, b0, c50);
    c51 = pmadd(x, b1, c51);
  }
  pstore(tile + 0 * nr, c00);
  pstore(tile + 0 * nr + L, c01);
  pstore(tile + 1 * nr, c10);
  pstore(tile + 1 * nr + L, c11);
  pstore(tile + 2 * nr, c20);
  pstore(tile + 2 * nr + L, c21);
  pstore(tile + 3 * nr, c30);
  pstore(tile + 3 * nr + L, c31);
  pstore(tile + 4 * nr, c40);
  pstore(tile + 4 * nr + L, c41);
  pstore(tile + 5 * nr, c50);
  pstore(tile + 5 * nr + L, c51);
  static_assert(mr == 6 && nr == 2 * L, "the unrolled kernel above is 6 x (2 registers)");
}

/// A block of a product to be written: rows [row, row + rows) and columns [col, col + cols) of
/// C, in `tile` (row-major, stride nr). `first` and `last` say whether this is the first and the
/// last k block of the sum, so an epilogue knows when to overwrite and when the sum is complete.
template <class T>
struct Tile {
  const T* values;
  Index row, col, rows, cols;
  bool first, last;
  static constexpr Index stride = Blocking<T>::nr;
};

/// C [m, n] = op(A) [m, k] op(B) [k, n], with the operands supplied by packers and the result
/// taken by an epilogue:
///   pack_a(T* out, i0, rows, k0, depth): the mr-row panels of op(A)[i0 .. i0+rows, k0 .. k0+depth],
///     panel q at out + q * mr * depth, element (kk, r) at kk * mr + r, rows past the end zero;
///   pack_b(T* out, k0, depth, j0, cols): the nr-column panels of op(B), panel q at
///     out + q * nr * depth, element (kk, j) at kk * nr + j, columns past the end zero;
///   write(const Tile<T>&): called once per micro-tile and k block, k blocks in order.
/// k = 0 calls no one: the caller decides what an empty sum writes.
template <class T, class PackA, class PackB, class Write>
void product(Index m, Index n, Index k, PackA&& pack_a, PackB&& pack_b, Write&& write, gemm::Workspace<T>& ws) {
  using B = Blocking<T>;
  if (m <= 0 || n <= 0 || k <= 0) return;
  const Index kc_max = std::min(k, B::kc);
  const Index mc_max = std::min((m + B::mr - 1) / B::mr * B::mr, B::mc);
  const Index nc_max = std::min((n + B::nr - 1) / B::nr * B::nr, B::nc);
  // A packet of slack after each packing buffer: packers may write a whole packet at the end.
  if (ws.a.size() < mc_max * kc_max + lanes<T>) ws.a = AlignedBuffer<T>(mc_max * kc_max + lanes<T>);
  if (ws.b.size() < nc_max * kc_max + lanes<T>) ws.b = AlignedBuffer<T>(nc_max * kc_max + lanes<T>);
  alignas(64) T tile[B::mr * B::nr];
  for (Index jc = 0; jc < n; jc += B::nc) {
    const Index nc = std::min(B::nc, n - jc);
    for (Index pc = 0; pc < k; pc += B::kc) {
      const Index kc = std::min(B::kc, k - pc);
      pack_b(ws.b.data(), pc, kc, jc, nc);
      for (Index ic = 0; ic < m; ic += B::mc) {
        const Index mc = std::min(B::mc, m - ic);
        pack_a(ws.a.data(), ic, mc, pc, kc);
        for (Index jr = 0; jr < nc; jr += B::nr)
          for (Index ir = 0; ir < mc; ir += B::mr) {
            micro_kernel(kc, ws.a.data() + ir * kc, ws.b.data() + jr * kc, tile);
            write(Tile<T>{tile, ic + ir, jc + jr, std::min(B::mr, mc - ir), std::min(B::nr, nc - jr), pc == 0,
                          pc + kc >= k});
          }
      }
    }
  }
}

/// Packs `Width`-wide panels of the matrix M(k, c) = data[c * ld + k] (`k_contiguous`) or
/// data[k * ld + c], for c in [c0, c0 + count) and k in [k0, k0 + depth): panel q at
/// out + q * Width * depth, element (kk, j) at kk * Width + j, zero past `count`. Both operands
/// of a product are such panels: op(A)'s rows, op(B)'s columns.
template <Index Width, class T>
void pack_panels(T* out, const T* data, Index ld, bool k_contiguous, Index c0, Index count, Index k0, Index depth) {
  for (Index q = 0; q * Width < count; ++q, out += Width * depth) {
    const Index valid = std::min(Width, count - q * Width), first = c0 + q * Width;
    if (!k_contiguous) {
      for (Index kk = 0; kk < depth; ++kk) {
        const T* src = data + (k0 + kk) * ld + first;
        for (Index j = 0; j < Width; ++j) out[kk * Width + j] = j < valid ? src[j] : T(0);
      }
      continue;
    }
    for (Index j = 0; j < Width; ++j) {
      if (j >= valid) {
        for (Index kk = 0; kk < depth; ++kk) out[kk * Width + j] = T(0);
        continue;
      }
      const T* src = data + (first + j) * ld + k0;
      for (Index kk = 0; kk < depth; ++kk) out[kk * Width + j] = src[kk];
    }
  }
}

/// The packer of op(A) for a gemm::MatrixA.
template <class T>
struct PackMatrixA {
  gemm::MatrixA<T> a;
  void operator()(T* out, Index i0, Index rows, Index k0, Index depth) const {
    pack_panels<Blocking<T>::mr>(out, a.data, a.ld, !a.transposed, i0, rows, k0, depth);
  }
};

/// The packer of op(B) for a gemm::MatrixB.
template <class T>
struct PackMatrixB {
  gemm::MatrixB<T> b;
  void operator()(T* out, Index k0, Index depth, Index j0, Index cols) const {
    pack_panels<Blocking<T>::nr>(out, b.data, b.ld, b.transposed, j0, cols, k0, depth);
  }
};

/// The epilogue of a gemm::MatrixC: the sum, then the bias, then the ReLU or its mask (the bias
/// is added to the finished sum, so the bits are those of a product followed by a bias pass).
template <class T>
struct WriteMatrixC {
  gemm::MatrixC<T> c;

  void operator()(const Tile<T>& t) const {
    constexpr Index L = lanes<T>;
    for (Index r = 0; r < t.rows; ++r) {
      const T* src = t.values + r * t.stride;
      T* dst = c.data + (t.row + r) * c.ld + t.col;
      // A whole tile row as packets: element by element, the compiler calls memmove for a copy
      // of 16 floats.
      const bool whole = t.cols == t.stride;
      if (t.first && !c.accumulate) {
        if (whole)
          for (Index j = 0; j < t.stride; j += L) pstoreu(dst + j, pload(src + j));
        else
          for (Index j = 0; j < t.cols; ++j) dst[j] = src[j];
      } else {
        if (whole)
          for (Index j = 0; j < t.stride; j += L) pstoreu(dst + j, padd(ploadu(dst + j), pload(src + j)));
        else
          for (Index j = 0; j < t.cols; ++j) dst[j] += src[j];
      }
      if (!t.last) continue;
      if (c.row_bias != nullptr) {
        const T b = c.row_bias[t.row + r];
        for (Index j = 0; j < t.cols; ++j) dst[j] += b;
      }
      if (c.col_bias != nullptr)
        for (Index j = 0; j < t.cols; ++j) dst[j] += c.col_bias[t.col + j];
      if (c.relu)
        for (Index j = 0; j < t.cols; ++j) dst[j] = dst[j] > T(0) ? dst[j] : T(0);
      if (c.mask != nullptr) {
        const T* m = c.mask + (t.row + r) * c.ld + t.col;
        for (Index j = 0; j < t.cols; ++j) dst[j] = m[j] > T(0) ? dst[j] : T(0);
      }
    }
  }
};

// --- entry points (the Tag picks this path's overloads: nn/isa.hpp) ---------------------------

/// C = op(A) op(B) [+ the extras of MatrixC]: gemm::product.
template <class T>
void matrix_product(Tag, Index m, Index n, Index k, const gemm::MatrixA<T>& a, const gemm::MatrixB<T>& b,
                    const gemm::MatrixC<T>& c, gemm::Workspace<T>& ws) {
  product(m, n, k, PackMatrixA<T>{a}, PackMatrixB<T>{b}, WriteMatrixC<T>{c}, ws);
}

/// The path's register width and blocking, for callers that split work along them.
template <class T>
gemm::Shape path_shape(Tag) {
  return {lanes<T>, Blocking<T>::mr, Blocking<T>::nr, Blocking<T>::kc, Blocking<T>::mc};
}

/// `repeats` micro-kernels over packed panels of depth Blocking::kc (a of mr x kc, b of kc x nr,
/// tile of mr x nr), for the benchmark of the micro-kernel alone.
template <class T>
void micro_kernels(Tag, Index repeats, const T* a, const T* b, T* tile) {
  for (Index r = 0; r < repeats; ++r) micro_kernel(Blocking<T>::kc, a, b, tile);
}

/// `steps` rounds of 12 independent chains of FMAs on float packets (the peak the micro-kernel
/// is measured against); returns a sum of the chains so none is optimised away.
inline float fma_chains(Tag, Index steps) {
  using P = Packet<float>;
  P x = pset1(0.9999999f), y = pset1(1e-7f);
  opaque(x);  // or the optimiser folds the chains into constants
  opaque(y);
  P c[12];
  for (int i = 0; i < 12; ++i) c[i] = pset1(1.0f + static_cast<float>(i) * 1e-3f);
  for (Index s = 0; s < steps; ++s)
    for (int i = 0; i < 12; ++i) c[i] = pmadd(c[i], x, y);
  P sum = c[0];
  for (int i = 1; i < 12; ++i) sum = padd(sum, c[i]);
  return predux(sum);
}
