// The product engine and the layers built on it, in float (the SIMD paths) against plain loops
// in double: every shape edge the blocking has, every transpose, every fused epilogue.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "distopt/core/rng.hpp"
#include "distopt/nn/conv2d.hpp"
#include "distopt/nn/gemm/kernel.hpp"
#include "distopt/nn/gemm/matrix.hpp"
#include "distopt/nn/maxpool2d.hpp"

#include "../support/isa.hpp"

namespace nn = distopt::nn;
namespace gemm = distopt::nn::gemm;
using Index = std::ptrdiff_t;

namespace {

template <class T>
std::vector<T> random_values(Index n, std::uint64_t seed) {
  distopt::Rng rng(seed);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (T& x : v) x = static_cast<T>(rng.normal());
  return v;
}

// C = op(A) op(B) in double, with the bound sum |a| |b| of each element's rounding error scale.
struct Reference {
  std::vector<double> c, scale;
};
template <class T>
Reference reference_product(bool ta, bool tb, Index m, Index n, Index k, const std::vector<T>& a,
                            const std::vector<T>& b) {
  Reference r{std::vector<double>(static_cast<std::size_t>(m * n)), std::vector<double>(static_cast<std::size_t>(m * n))};
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double sum = 0, bound = 0;
      for (Index p = 0; p < k; ++p) {
        const double x = a[static_cast<std::size_t>(ta ? p * m + i : i * k + p)];
        const double y = b[static_cast<std::size_t>(tb ? j * k + p : p * n + j)];
        sum += x * y;
        bound += std::abs(x * y);
      }
      r.c[static_cast<std::size_t>(i * n + j)] = sum;
      r.scale[static_cast<std::size_t>(i * n + j)] = bound;
    }
  return r;
}

template <class T>
void check_product(Index m, Index n, Index k) {
  const double tolerance = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const bool accumulate : {false, true}) {
        INFO("m " << m << " n " << n << " k " << k << " ta " << ta << " tb " << tb << " accumulate " << accumulate);
        const auto a = random_values<T>(m * k, 1), b = random_values<T>(k * n, 2), c0 = random_values<T>(m * n, 3);
        auto c = c0;
        gemm::Gemm<T> product;
        product(ta, tb, m, n, k, a.data(), ta ? m : k, b.data(), tb ? k : n, accumulate, c.data(), n);
        const Reference r = reference_product(ta, tb, m, n, k, a, b);
        double worst = 0;
        for (std::size_t e = 0; e < c.size(); ++e) {
          const double expected = r.c[e] + (accumulate ? static_cast<double>(c0[e]) : 0.0);
          const double scale = r.scale[e] + (accumulate ? std::abs(static_cast<double>(c0[e])) : 0.0);
          worst = std::max(worst, std::abs(static_cast<double>(c[e]) - expected) / std::max(scale, 1e-30));
        }
        CHECK(worst <= tolerance * static_cast<double>(k + 1));
      }
}

}  // namespace

TEST_CASE("gemm matches a plain product at every blocking edge", "[nn][gemm]") {
  DISTOPT_EACH_ISA();
  const gemm::Shape B = gemm::shape<float>();
  // Tiles that are full and partial in m and n, one and several k blocks, more rows than mc.
  const auto [m, n, k] = GENERATE_COPY(table<Index, Index, Index>({{1, 1, 1},
                                                               {B.mr, B.nr, 3},
                                                               {B.mr + 1, B.nr + 1, B.kc},
                                                               {13, 37, B.kc + 1},
                                                               {64, 40, 2 * B.kc + 7},
                                                               {B.mc + 5, 9, 20}}));
  check_product<float>(m, n, k);
  check_product<double>(m, n, k);
}

TEST_CASE("gemm gives the same bits for any split of the output", "[nn][gemm]") {
  DISTOPT_EACH_ISA();
  const Index m = 29, n = 70, k = 600;  // k spans three float k blocks
  const auto a = random_values<float>(m * k, 4), b = random_values<float>(k * n, 5);
  std::vector<float> whole(static_cast<std::size_t>(m * n)), pieces(whole.size());
  gemm::Gemm<float> product;
  product(false, false, m, n, k, a.data(), k, b.data(), n, false, whole.data(), n);
  // Rows [0, 11) and [11, m), columns [0, 23) and [23, n): splits off every tile boundary.
  for (const auto& [r0, r1] : {std::pair<Index, Index>{0, 11}, {11, m}})
    for (const auto& [c0, c1] : {std::pair<Index, Index>{0, 23}, {23, n}})
      product(false, false, r1 - r0, c1 - c0, k, a.data() + r0 * k, k, b.data() + c0, n, false,
              pieces.data() + r0 * n + c0, n);
  CHECK(pieces == whole);
}

TEST_CASE("gemm epilogues add the bias to the finished sum, then apply the ReLU or its mask", "[nn][gemm]") {
  DISTOPT_EACH_ISA();
  const Index m = 7, n = 19, k = 300;
  const auto a = random_values<float>(m * k, 6), b = random_values<float>(k * n, 7);
  const auto row_bias = random_values<float>(m, 8), col_bias = random_values<float>(n, 9),
             mask = random_values<float>(m * n, 10);
  std::vector<float> plain(static_cast<std::size_t>(m * n));
  gemm::Workspace<float> ws;
  gemm::product(m, n, k, gemm::MatrixA<float>{a.data(), k}, gemm::MatrixB<float>{b.data(), n},
                gemm::MatrixC<float>{.data = plain.data(), .ld = n}, ws);
  auto fused = plain;
  gemm::product(m, n, k, gemm::MatrixA<float>{a.data(), k}, gemm::MatrixB<float>{b.data(), n},
                gemm::MatrixC<float>{.data = fused.data(), .ld = n, .row_bias = row_bias.data(), .relu = true}, ws);
  auto masked = plain;
  gemm::product(m, n, k, gemm::MatrixA<float>{a.data(), k}, gemm::MatrixB<float>{b.data(), n},
                gemm::MatrixC<float>{.data = masked.data(), .ld = n, .col_bias = col_bias.data(), .mask = mask.data()},
                ws);
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      const auto e = static_cast<std::size_t>(i * n + j);
      const float with_row = plain[e] + row_bias[static_cast<std::size_t>(i)];
      const float with_col = plain[e] + col_bias[static_cast<std::size_t>(j)];
      CHECK(fused[e] == (with_row > 0 ? with_row : 0.0f));
      CHECK(masked[e] == (mask[e] > 0 ? with_col : 0.0f));
    }
}

TEST_CASE("Conv2d in float (implicit im2col, col2im or gather, direct paths) matches a direct convolution",
          "[nn][conv2d][gemm]") {
  DISTOPT_EACH_ISA();
  // Output widths below and above a panel's width, with and without padding, NCHW input; input
  // rows narrower than a packet and wider, channel counts that leave a partial block of the gather
  // (7 = 4 + 3); output channel counts on each side of the gather's limit of 16.
  const auto [channels, size, padding, outputs] = GENERATE(table<Index, Index, Index, Index>(
      {{1, 28, 2, 5}, {3, 32, 0, 5}, {6, 14, 0, 16}, {4, 9, 1, 5}, {6, 14, 0, 20}, {7, 21, 0, 8}, {2, 6, 0, 3}}));
  INFO("channels " << channels << " size " << size << " padding " << padding << " outputs " << outputs);
  const nn::Conv2d conv{"conv", channels, outputs, 5, padding};
  const Index n = 3, out = conv.out_size(size), positions = n * out * out, lanes = gemm::shape<float>().lanes;
  const nn::PlaneLayout in = nn::PlaneLayout::nchw(n, channels, size, size);
  CHECK(conv.gather_path<float>(in) == (padding == 0 && outputs <= 16 && (size >= lanes || lanes >= 16)));
  const auto x = random_values<float>(n * channels * size * size, 11), w = random_values<float>(outputs * conv.patch(), 12),
             bias = random_values<float>(outputs, 13), dy = random_values<float>(outputs * positions, 14);
  gemm::Workspace<float> ws;
  std::vector<float> y(static_cast<std::size_t>(outputs * positions)), dw(w.size(), 0.0f),
      db(static_cast<std::size_t>(outputs), 0.0f), dx(x.size(), 1.0f), dx_product(x.size(), 2.0f);
  conv.forward(w.data(), bias.data(), x.data(), in, y.data(), ws);
  conv.backward_weights(dy.data(), x.data(), in, dw.data(), db.data(), ws);
  conv.backward_input(w.data(), dy.data(), in, dx.data(), ws);
  conv.backward_input_product(w.data(), dy.data(), in, dx_product.data(), ws);

  std::vector<double> ry(y.size()), rdw(dw.size()), rdx(dx.size()), sy(y.size()), sdw(dw.size()), sdx(dx.size());
  for (Index o = 0; o < outputs; ++o)
    for (Index i = 0; i < n; ++i)
      for (Index oy = 0; oy < out; ++oy)
        for (Index ox = 0; ox < out; ++ox) {
          const auto at = static_cast<std::size_t>(o * positions + (i * out + oy) * out + ox);
          ry[at] = bias[static_cast<std::size_t>(o)];
          sy[at] = std::abs(ry[at]);
          for (Index c = 0; c < channels; ++c)
            for (Index ky = 0; ky < 5; ++ky)
              for (Index kx = 0; kx < 5; ++kx) {
                const Index sy_ = oy + ky - padding, sx = ox + kx - padding;
                if (sy_ < 0 || sy_ >= size || sx < 0 || sx >= size) continue;
                const auto xi = static_cast<std::size_t>(in.at(c, i, sy_, sx));
                const auto wi = static_cast<std::size_t>(((o * channels + c) * 5 + ky) * 5 + kx);
                ry[at] += double(w[wi]) * x[xi];
                sy[at] += std::abs(double(w[wi]) * x[xi]);
                rdw[wi] += double(dy[at]) * x[xi];
                sdw[wi] += std::abs(double(dy[at]) * x[xi]);
                rdx[xi] += double(w[wi]) * dy[at];
                sdx[xi] += std::abs(double(w[wi]) * dy[at]);
              }
        }
  auto worst = [](const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale) {
    double e = 0;
    for (std::size_t i = 0; i < got.size(); ++i) e = std::max(e, std::abs(got[i] - want[i]) / std::max(scale[i], 1e-30));
    return e;
  };
  CHECK(worst(y, ry, sy) < 1e-5);
  CHECK(worst(dw, rdw, sdw) < 1e-5);
  CHECK(worst(dx, rdx, sdx) < 1e-5);
  CHECK(worst(dx_product, rdx, sdx) < 1e-5);
  for (Index o = 0; o < outputs; ++o) {
    double sum = 0, magnitude = 0;
    for (Index j = 0; j < positions; ++j) {
      sum += dy[static_cast<std::size_t>(o * positions + j)];
      magnitude += std::abs(dy[static_cast<std::size_t>(o * positions + j)]);
    }
    CHECK(std::abs(db[static_cast<std::size_t>(o)] - sum) <= 1e-6 * magnitude);
  }
}

TEST_CASE("the direct convolution gives the product's forward bits and its weight gradient", "[nn][conv2d][direct]") {
  DISTOPT_EACH_ISA();
  // Output widths of whole packets and of an overlapped last packet; channel blocks with a
  // remainder (1, 6, 7 outputs); row-packet counts that are not a multiple of four; the NCHW
  // batch and a channel-major chunk.
  const auto [channels, outputs, size, images] =
      GENERATE(table<Index, Index, Index, Index>({{1, 6, 32, 4}, {3, 6, 32, 3}, {1, 1, 28, 1}, {2, 5, 20, 2},
                                                  {1, 6, 12 + 4, 5}, {3, 4, 37, 2}}));
  const nn::Conv2d conv{"conv", channels, outputs, 5, 0};
  const bool cnhw = images == 2;
  const nn::PlaneLayout in = cnhw ? nn::PlaneLayout::cnhw(channels, images, size, size)
                                  : nn::PlaneLayout::nchw(images, channels, size, size);
  INFO("channels " << channels << " outputs " << outputs << " size " << size << " images " << images
                   << " lanes " << gemm::shape<float>().lanes);
  const Index out = conv.out_size(size), positions = images * out * out;
  const bool direct = out >= gemm::shape<float>().lanes;
  CHECK(conv.direct_path<float>(in) == direct);
  // Below a packet's width the product takes the layer; nothing else to compare on this ISA.
  if (!direct) return;
  const auto x = random_values<float>(images * channels * size * size, 21),
             w = random_values<float>(outputs * conv.patch(), 22), bias = random_values<float>(outputs, 23),
             dy = random_values<float>(outputs * positions, 24), start = random_values<float>(outputs * conv.patch(), 25);
  gemm::Workspace<float> ws;
  std::vector<float> y_direct(static_cast<std::size_t>(outputs * positions), -7.0f), y_product = y_direct;
  conv.forward(w.data(), bias.data(), x.data(), in, y_direct.data(), ws);
  conv.forward_product(w.data(), bias.data(), x.data(), in, y_product.data(), ws);
  CHECK(y_direct == y_product);

  auto dw_direct = start, dw_product = start;
  std::vector<float> db_direct(static_cast<std::size_t>(outputs), 0.5f), db_product = db_direct;
  conv.backward_weights(dy.data(), x.data(), in, dw_direct.data(), db_direct.data(), ws);
  conv.backward_weights_product(dy.data(), x.data(), in, dw_product.data(), db_product.data(), ws);
  CHECK(db_direct == db_product);
  // The two sum each weight's terms in different orders; both against the float64 sum.
  std::vector<double> want(w.size()), scale(w.size());
  for (std::size_t e = 0; e < w.size(); ++e) want[e] = start[e], scale[e] = std::abs(start[e]);
  for (Index o = 0; o < outputs; ++o)
    for (Index i = 0; i < images; ++i)
      for (Index oy = 0; oy < out; ++oy)
        for (Index ox = 0; ox < out; ++ox)
          for (Index c = 0; c < channels; ++c)
            for (Index ky = 0; ky < 5; ++ky)
              for (Index kx = 0; kx < 5; ++kx) {
                const auto wi = static_cast<std::size_t>(((o * channels + c) * 5 + ky) * 5 + kx);
                const double term = double(dy[static_cast<std::size_t>(o * positions + (i * out + oy) * out + ox)]) *
                                    x[static_cast<std::size_t>(in.at(c, i, oy + ky, ox + kx))];
                want[wi] += term;
                scale[wi] += std::abs(term);
              }
  double worst_direct = 0, worst_product = 0;
  for (std::size_t e = 0; e < w.size(); ++e) {
    worst_direct = std::max(worst_direct, std::abs(dw_direct[e] - want[e]) / scale[e]);
    worst_product = std::max(worst_product, std::abs(dw_product[e] - want[e]) / scale[e]);
  }
  CHECK(worst_direct < 1e-6);
  CHECK(worst_product < 1e-6);
}

TEST_CASE("the channel-vectorised direct convolution gives the product's bits", "[nn][conv2d][direct]") {
  DISTOPT_EACH_ISA();
  // The classic LeNet-5's conv2 on a chunk of 4 images; odd sizes and counts; 8 outputs (one AVX2
  // packet, the product on AVX-512); a patch over several k blocks (20 channels x 25 taps); the
  // NCHW batch and a channel-major chunk.
  const auto [channels, outputs, size, images] = GENERATE(
      table<Index, Index, Index, Index>({{6, 16, 14, 4}, {3, 16, 9, 3}, {1, 16, 5, 1}, {2, 8, 11, 2}, {20, 16, 8, 2}}));
  const nn::Conv2d conv{"conv", channels, outputs, 5, 0};
  const bool cnhw = images % 2 == 0;
  const nn::PlaneLayout in = cnhw ? nn::PlaneLayout::cnhw(channels, images, size, size)
                                  : nn::PlaneLayout::nchw(images, channels, size, size);
  INFO("channels " << channels << " outputs " << outputs << " size " << size << " images " << images
                   << " lanes " << gemm::shape<float>().lanes);
  const Index lanes = gemm::shape<float>().lanes, out = conv.out_size(size), positions = images * out * out;
  const bool expected = lanes >= 4 && outputs > gemm::shape<float>().mr && outputs % lanes == 0;
  CHECK(conv.channel_path<float>(in) == expected);
  if (!conv.channel_path<float>(in)) return;
  const auto x = random_values<float>(images * channels * size * size, 31),
             w = random_values<float>(outputs * conv.patch(), 32), bias = random_values<float>(outputs, 33),
             dy = random_values<float>(outputs * positions, 34), start = random_values<float>(outputs * conv.patch(), 35);
  gemm::Workspace<float> ws;
  std::vector<float> y_direct(static_cast<std::size_t>(outputs * positions), -7.0f), y_product = y_direct;
  conv.forward(w.data(), bias.data(), x.data(), in, y_direct.data(), ws);
  conv.forward_product(w.data(), bias.data(), x.data(), in, y_product.data(), ws);
  CHECK(y_direct == y_product);
  auto dw_direct = start, dw_product = start;
  std::vector<float> db_direct(static_cast<std::size_t>(outputs), 0.5f), db_product = db_direct;
  conv.backward_weights(dy.data(), x.data(), in, dw_direct.data(), db_direct.data(), ws);
  conv.backward_weights_product(dy.data(), x.data(), in, dw_product.data(), db_product.data(), ws);
  CHECK(db_direct == db_product);
  CHECK(dw_direct == dw_product);
}

TEST_CASE("MaxPool2d with its ReLU, in float, matches plain loops bit for bit", "[nn][maxpool2d]") {
  DISTOPT_EACH_ISA();
  const bool relu = GENERATE(false, true);
  // Rows of 1 to 33 windows: whole vectors of 8 (AVX2) and 16 (AVX-512) windows and every tail;
  // odd widths and heights leave a row and a column outside every window.
  const Index w = GENERATE(2, 3, 10, 11, 21, 28, 31, 32, 33, 34, 67);
  const Index c = 3, n = 2, h = 7;
  INFO("width " << w << " relu " << relu);
  const nn::PlaneLayout in = nn::PlaneLayout::cnhw(c, n, h, w);
  const Index oh = h / 2, ow = w / 2;
  const nn::PlaneLayout out = nn::PlaneLayout::nchw(n, c, oh, ow);  // a different layout for the output
  auto x = random_values<float>(c * n * h * w, 15);
  x[1] = x[0];  // a tie: the first position wins
  std::vector<float> y(static_cast<std::size_t>(c * n * oh * ow)), dx(x.size(), 9.0f);
  std::vector<std::uint8_t> argmax(y.size());
  nn::MaxPool2d::forward(x.data(), in, y.data(), out, argmax.data(), relu);
  const auto dy = random_values<float>(static_cast<Index>(y.size()), 16);
  nn::MaxPool2d::backward(dy.data(), out, argmax.data(), relu ? y.data() : nullptr, in, dx.data());
  std::vector<float> expected_dx(x.size(), 0.0f);
  for (Index ch = 0; ch < c; ++ch)
    for (Index i = 0; i < n; ++i)
      for (Index r = 0; r < oh; ++r)
        for (Index q = 0; q < ow; ++q) {
          Index best = 0;
          float value = x[static_cast<std::size_t>(in.at(ch, i, 2 * r, 2 * q))];
          for (Index k = 1; k < 4; ++k) {
            const float v = x[static_cast<std::size_t>(in.at(ch, i, 2 * r + k / 2, 2 * q + k % 2))];
            if (v > value) value = v, best = k;
          }
          const auto o = static_cast<std::size_t>(out.at(ch, i, r, q));
          const auto a = static_cast<std::size_t>(((ch * n + i) * oh + r) * ow + q);
          const float kept = relu && !(value > 0) ? 0.0f : value;
          CHECK(y[o] == kept);
          CHECK(argmax[a] == best);
          const float g = !relu || kept > 0 ? dy[o] : 0.0f;
          expected_dx[static_cast<std::size_t>(in.at(ch, i, 2 * r + best / 2, 2 * q + best % 2))] = g;
        }
  CHECK(dx == expected_dx);
  CHECK(argmax[0] != 1);  // x[0] and x[1], window 0's top pair, tie: the left one is kept
}

TEST_CASE("the kernels' path: the widest the CPU runs, DISTOPT_ISA's when valid, refused by name otherwise",
          "[nn][isa]") {
  const std::vector<nn::Isa> runs = nn::supported_isas();
  REQUIRE(!runs.empty());
  // portable is left out when the build's flags already require AVX2 (it would be avx2 again).
  CHECK(runs.back() == (nn::compiled(nn::Isa::portable) ? nn::Isa::portable : nn::Isa::avx2));
  for (nn::Isa isa : {nn::Isa::avx512, nn::Isa::avx2, nn::Isa::portable}) {
    const bool listed = std::find(runs.begin(), runs.end(), isa) != runs.end();
    CHECK(nn::cpu_runs(isa) == listed);
    if (listed) {
      CHECK(nn::parse_isa(nn::isa_name(isa)) == isa);
      const nn::ScopedIsa scope(isa);
      CHECK(nn::active_isa() == isa);
      CHECK(gemm::isa().starts_with(std::string(nn::isa_name(isa)) + " ("));
    } else {
      CHECK_THROWS_WITH(nn::parse_isa(nn::isa_name(isa), "DISTOPT_ISA"),
                        Catch::Contains("DISTOPT_ISA=" + std::string(nn::isa_name(isa))) &&
                            Catch::Contains(nn::compiled(isa) ? "this CPU does not run" : "built without") &&
                            Catch::Contains(std::string(nn::isa_name(runs.front()))));
      CHECK_THROWS_AS(nn::set_isa(isa), std::invalid_argument);
    }
  }
  CHECK_THROWS_WITH(nn::parse_isa("sse9", "DISTOPT_ISA"),
                    Catch::Contains("DISTOPT_ISA=sse9: expected avx512, avx2 or portable"));
  // The variable is read where the process first asks (the models' constructors).
  ::setenv("DISTOPT_ISA", std::string(nn::isa_name(runs.back())).c_str(), 1);
  CHECK(nn::detail::initial_isa() == runs.back());
  ::setenv("DISTOPT_ISA", "avx3", 1);
  CHECK_THROWS_WITH(nn::detail::initial_isa(), Catch::Contains("DISTOPT_ISA=avx3"));
  ::unsetenv("DISTOPT_ISA");
  CHECK(nn::detail::initial_isa() == runs.front());
  // Two paths of one CPU give the same product up to rounding (their sums are grouped differently).
  const Index m = 17, n = 45, k = 700;
  const auto a = random_values<float>(m * k, 41), b = random_values<float>(k * n, 42);
  std::vector<std::vector<float>> results;
  for (nn::Isa isa : runs) {
    const nn::ScopedIsa scope(isa);
    std::vector<float> c(static_cast<std::size_t>(m * n));
    gemm::Gemm<float>{}(false, false, m, n, k, a.data(), k, b.data(), n, false, c.data(), n);
    results.push_back(c);
  }
  for (std::size_t p = 1; p < results.size(); ++p)
    for (std::size_t e = 0; e < results[0].size(); ++e) CHECK(std::abs(results[p][e] - results[0][e]) <= 1e-3f);
}
