// Finite-difference gradient checks in double for every layer and for the whole model.
#include <catch2/catch.hpp>

#include <cmath>
#include <algorithm>
#include <functional>
#include <vector>

#include "distopt/core/rng.hpp"
#include "distopt/core/parallel.hpp"
#include "distopt/nn/conv2d.hpp"
#include "distopt/nn/flatten.hpp"
#include "distopt/nn/lenet5.hpp"
#include "distopt/nn/linear.hpp"
#include "distopt/nn/loss.hpp"
#include "distopt/nn/maxpool2d.hpp"
#include "distopt/nn/relu.hpp"

#include "../support/isa.hpp"

namespace nn = distopt::nn;
using Vec = std::vector<double>;

namespace {

Vec random_vector(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  distopt::Rng rng(seed);
  Vec v(n);
  for (double& x : v) x = rng.normal(0.0, scale);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Largest relative difference between `analytic` and the central difference of `loss` with
// respect to `variable` (perturbed in place), over every element.
double check(Vec& variable, const Vec& analytic, const std::function<double()>& loss, double h = 1e-6) {
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < variable.size(); ++i) {
    const double saved = variable[i];
    variable[i] = saved + h;
    const double up = loss();
    variable[i] = saved - h;
    const double down = loss();
    variable[i] = saved;
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::abs(numeric - analytic[i]));
    scale = std::max(scale, std::abs(numeric));
  }
  return worst / std::max(scale, 1e-12);
}

}  // namespace

TEST_CASE("Conv2d gradients match finite differences (double)", "[nn][conv2d][gradcheck]") {
  DISTOPT_EACH_ISA();
  const std::ptrdiff_t padding = GENERATE(0, 2);
  const nn::Conv2d conv{"conv", 3, 4, 3, padding};
  const std::ptrdiff_t n = 2, h = 6, w = 5;
  const nn::PlaneLayout in = nn::PlaneLayout::nchw(n, 3, h, w);
  const std::ptrdiff_t oh = conv.out_size(h), ow = conv.out_size(w), columns = n * oh * ow;
  Vec x = random_vector(static_cast<std::size_t>(n * 3 * h * w), 1), weight = random_vector(4 * 27, 2, 0.3),
      bias = random_vector(4, 3);
  const Vec r = random_vector(static_cast<std::size_t>(4 * columns), 4);  // loss = sum r * y
  nn::gemm::Workspace<double> gemm;
  Vec y(r.size());
  auto loss = [&] {
    conv.forward(weight.data(), bias.data(), x.data(), in, y.data(), gemm);
    return dot(r, y);
  };
  loss();
  Vec dw(weight.size(), 0.0), db(bias.size(), 0.0), dx(x.size(), 7.0);  // backward_input overwrites dx
  conv.backward_weights(r.data(), x.data(), in, dw.data(), db.data(), gemm);
  conv.backward_input(weight.data(), r.data(), in, dx.data(), gemm);
  CHECK(check(weight, dw, loss) < 1e-7);
  CHECK(check(bias, db, loss) < 1e-7);
  CHECK(check(x, dx, loss) < 1e-7);
  CHECK(oh == h + 2 * padding - 2);
}

TEST_CASE("Conv2d reads channel-major chunks as well as NCHW batches", "[nn][conv2d]") {
  DISTOPT_EACH_ISA();
  const nn::Conv2d conv{"conv", 2, 3, 3, 1};
  const std::ptrdiff_t n = 3, h = 4, w = 4;
  const Vec nchw = random_vector(static_cast<std::size_t>(n * 2 * h * w), 9);
  Vec cnhw(nchw.size());
  for (std::ptrdiff_t i = 0; i < n; ++i)
    for (std::ptrdiff_t c = 0; c < 2; ++c)
      for (std::ptrdiff_t p = 0; p < h * w; ++p)
        cnhw[static_cast<std::size_t>((c * n + i) * h * w + p)] = nchw[static_cast<std::size_t>((i * 2 + c) * h * w + p)];
  const Vec weight = random_vector(3 * 18, 10), bias = random_vector(3, 11);
  nn::gemm::Workspace<double> gemm;
  Vec a(static_cast<std::size_t>(3 * n * h * w)), b(a.size());
  conv.forward(weight.data(), bias.data(), nchw.data(), nn::PlaneLayout::nchw(n, 2, h, w), a.data(), gemm);
  conv.forward(weight.data(), bias.data(), cnhw.data(), nn::PlaneLayout::cnhw(2, n, h, w), b.data(), gemm);
  CHECK(a == b);
  CHECK_THROWS_WITH(conv.check_input(nn::PlaneLayout::nchw(1, 3, 4, 4)), Catch::Matchers::Contains("conv: expected 2 input channels, got 3"));
}

TEST_CASE("MaxPool2d routes gradients to the maximum and matches finite differences", "[nn][maxpool2d][gradcheck]") {
  DISTOPT_EACH_ISA();
  const std::ptrdiff_t c = 2, n = 2, h = 5, w = 6;  // odd height: the last row is dropped, as in PyTorch
  const nn::PlaneLayout in = nn::PlaneLayout::cnhw(c, n, h, w);
  Vec x = random_vector(static_cast<std::size_t>(c * n * h * w), 5);
  const std::ptrdiff_t outs = c * n * (h / 2) * (w / 2);
  const Vec r = random_vector(static_cast<std::size_t>(outs), 6);
  Vec y(static_cast<std::size_t>(outs));
  std::vector<std::uint8_t> argmax(y.size());
  auto loss = [&] {
    nn::MaxPool2d::forward(x.data(), in, y.data(), argmax.data());
    return dot(r, y);
  };
  loss();
  Vec dx(x.size());
  nn::MaxPool2d::backward(r.data(), argmax.data(), in, dx.data());
  CHECK(check(x, dx, loss) < 1e-7);
  // Ties go to the first position of the window, as in PyTorch.
  const Vec flat(16, 1.0);
  Vec out(4);
  std::vector<std::uint8_t> where(4);
  nn::MaxPool2d::forward(flat.data(), nn::PlaneLayout::cnhw(1, 1, 4, 4), out.data(), where.data());
  CHECK(where == std::vector<std::uint8_t>{0, 0, 0, 0});
}

TEST_CASE("ReLU and Linear gradients match finite differences", "[nn][relu][linear][gradcheck]") {
  DISTOPT_EACH_ISA();
  const nn::Linear fc{"fc", 7, 5};
  const std::ptrdiff_t rows = 3;
  Vec x = random_vector(21, 7), weight = random_vector(35, 8, 0.4), bias = random_vector(5, 9);
  const Vec r = random_vector(15, 10);
  nn::gemm::Workspace<double> gemm;
  Vec y(15);
  auto loss = [&] {
    fc.forward(weight.data(), bias.data(), x.data(), rows, y.data(), 0, 5, false, gemm);
    Vec z = y;
    nn::Relu::forward(z.data(), 15);
    return dot(r, z);
  };
  loss();
  Vec z = y;
  nn::Relu::forward(z.data(), 15);
  Vec dy = r;
  nn::Relu::backward(z.data(), dy.data(), 15);
  Vec dw(weight.size(), 0.0), db(bias.size(), 0.0), dx(x.size());
  fc.backward_weights(x.data(), dy.data(), rows, dw.data(), db.data(), 0, 5, gemm);
  fc.backward_input(weight.data(), dy.data(), rows, dx.data(), 0, 7, static_cast<const double*>(nullptr), gemm);
  CHECK(check(weight, dw, loss) < 1e-7);
  CHECK(check(bias, db, loss) < 1e-7);
  CHECK(check(x, dx, loss) < 1e-7);
}

TEST_CASE("Cross-entropy with and without label smoothing matches finite differences", "[nn][loss][gradcheck]") {
  const double smoothing = GENERATE(0.0, 0.1);
  const nn::CrossEntropy criterion{smoothing};
  Vec z = random_vector(10, 12, 3.0);
  Vec grad(10);
  (void)criterion.row(z.data(), 10, 4, grad.data(), 1.0);
  CHECK(check(z, grad, [&] { return criterion.row(z.data(), 10, 4, static_cast<double*>(nullptr), 1.0); }) < 1e-7);
  // Huge logits: subtracting the max keeps loss and gradient finite; the gradient sums to 0.
  const std::vector<float> huge{1000.0f, -1000.0f, 999.0f};
  std::vector<float> huge_grad(3);
  const double huge_loss = criterion.row(huge.data(), 3, 1, huge_grad.data(), 1.0);
  CHECK(std::isfinite(huge_loss));
  CHECK(huge_loss > 1000.0);
  CHECK(std::abs(huge_grad[0] + huge_grad[1] + huge_grad[2]) < 1e-6);
  // Uniform logits: loss is log(C) whatever the smoothing.
  const Vec uniform(10, 0.5);
  CHECK(criterion.row(uniform.data(), 10, 2, static_cast<double*>(nullptr), 1.0) == Approx(std::log(10.0)));
}

TEST_CASE("Top-k accuracy", "[nn][loss]") {
  const std::vector<float> z{0.1f, 0.9f, 0.3f, 0.8f, 0.2f, 0.7f, 0.0f};
  CHECK(nn::in_top_k(z.data(), 7, 1, 1));
  CHECK_FALSE(nn::in_top_k(z.data(), 7, 3, 1));
  CHECK(nn::in_top_k(z.data(), 7, 2, 5));   // 0.3 is 4th
  CHECK_FALSE(nn::in_top_k(z.data(), 7, 0, 5));  // 0.1 is 6th
}

TEST_CASE("Whole LeNet5 gradient matches finite differences (double)", "[nn][lenet5][gradcheck]") {
  DISTOPT_EACH_ISA();
  // The last case pads conv1 (as on Fashion-MNIST): the model runs it over a zero-framed copy.
  const auto [preset, channels, size, padding] = GENERATE(table<nn::Preset, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t>(
      {{nn::Preset::classic, 3, 20, 0}, {nn::Preset::hsu, 3, 20, 0}, {nn::Preset::classic, 1, 16, 2}}));
  nn::LeNet5<double> net({.preset = preset, .classes = 10, .channels = channels, .image_size = size, .padding = padding,
                          .seed = 2, .label_smoothing = 0.05, .chunk = 2});
  const std::ptrdiff_t batch = 4;
  const Vec images = random_vector(static_cast<std::size_t>(batch * channels * size * size), 13);
  const std::vector<std::int32_t> labels{3, 0, 9, 3};
  const nn::Images<double> x{images.data(), batch, channels, size, size};
  auto& params = net.parameters();
  params.zero_grad();
  net.loss_and_gradient(x, labels);
  const Eigen::VectorXd analytic = params.grads();

  // A spread of positions in every block.
  distopt::Rng rng(14);
  double worst = 0;
  int sampled = 0, nonzero = 0;
  for (const auto& block : params.blocks()) {
    const std::ptrdiff_t samples = std::min<std::ptrdiff_t>(block.size, 24);
    for (std::ptrdiff_t s = 0; s < samples; ++s) {
      const std::ptrdiff_t i = block.offset + (samples == block.size ? s : static_cast<std::ptrdiff_t>(rng.below(static_cast<std::uint32_t>(block.size))));
      const double saved = params.values()(i), h = 1e-6;
      params.values()(i) = saved + h;
      const double up = net.evaluate(x, labels).loss;
      params.values()(i) = saved - h;
      const double down = net.evaluate(x, labels).loss;
      params.values()(i) = saved;
      const double numeric = (up - down) / (2 * h);
      // A central difference of a loss near 2.3 carries rounding noise of about eps * 2.3 / h,
      // 5e-10: below that, relative agreement means nothing.
      const double error = std::max(0.0, std::abs(numeric - analytic(i)) - 1e-9) /
                           std::max({std::abs(numeric), std::abs(analytic(i)), 1e-12});
      INFO(block.name << "[" << i - block.offset << "]: numeric " << numeric << ", analytic " << analytic(i));
      CHECK(error < 1e-5);
      worst = std::max(worst, error);
      ++sampled;
      nonzero += std::abs(numeric) > 1e-8 ? 1 : 0;
    }
  }
  CHECK(worst < 1e-5);
  INFO(nonzero << " of " << sampled << " sampled gradients are non-zero");
  CHECK(nonzero * 2 > sampled);  // dead ReLU units give exact zeros; most samples must not be
}

TEST_CASE("Flatten gives PyTorch's per-image order and its backward inverts it", "[nn][flatten]") {
  const std::ptrdiff_t c = 3, n = 2, h = 2, w = 2;
  Vec chunk(static_cast<std::size_t>(c * n * h * w));
  for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<double>(i);  // CNHW
  Vec rows(static_cast<std::size_t>((n + 1) * c * h * w), -1.0);
  nn::Flatten::forward(chunk.data(), nn::PlaneLayout::cnhw(c, n, h, w), rows.data(), 1);
  // Row 1 is image 0: channel 0's plane (0..3), channel 1's (8..11), channel 2's (16..19).
  CHECK(rows[12] == 0.0);
  CHECK(rows[16] == 8.0);
  CHECK(rows[20] == 16.0);
  CHECK(rows[24] == 4.0);  // row 2 is image 1
  CHECK(rows[0] == -1.0);  // row 0 untouched
  Vec back(chunk.size());
  nn::Flatten::backward(rows.data(), 1, nn::PlaneLayout::cnhw(c, n, h, w), back.data());
  CHECK(back == chunk);
}

TEST_CASE("LeNet5 initial weights follow PyTorch's default distributions", "[nn][lenet5][init]") {
  const nn::LeNet5<float> net({.preset = nn::Preset::hsu, .seed = 11});
  for (const auto& block : net.parameters().blocks()) {
    const double fan_in = block.name.rfind("conv1", 0) == 0   ? 3 * 25
                          : block.name.rfind("conv2", 0) == 0 ? 64 * 25
                          : block.name.rfind("fc1", 0) == 0   ? 1600
                          : block.name.rfind("fc2", 0) == 0   ? 384
                                                              : 192;
    const double bound = 1.0 / std::sqrt(fan_in);
    const auto v = net.parameters().value(net.parameters().index_of(block.name));
    INFO(block.name);
    CHECK(v.maxCoeff() < bound);
    CHECK(v.minCoeff() >= -bound);
    // U(-b, b): mean 0 and variance b^2 / 3, within a few standard errors.
    const double n = static_cast<double>(v.size());
    const double mean = static_cast<double>(v.mean());
    const double variance = static_cast<double>(v.array().square().mean()) - mean * mean;
    CHECK(std::abs(mean) < 5 * bound / std::sqrt(3 * n));
    CHECK(variance == Approx(bound * bound / 3).epsilon(n > 1000 ? 0.05 : 0.5));
  }
  // The seed decides the weights; each block has its own stream.
  const nn::LeNet5<float> same({.preset = nn::Preset::hsu, .seed = 11}), other({.preset = nn::Preset::hsu, .seed = 12});
  CHECK(same.parameters().values() == net.parameters().values());
  CHECK(other.parameters().values() != net.parameters().values());
}

TEST_CASE("Inside a parallel region LeNet5 runs on the calling thread with the same bits", "[nn][lenet5][determinism]") {
  DISTOPT_EACH_ISA();
  const std::ptrdiff_t batch = 20;
  const Vec source = random_vector(static_cast<std::size_t>(batch * 3 * 32 * 32), 21);
  std::vector<float> images(source.begin(), source.end());
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch), 5);
  const nn::LeNet5<float> prototype({.preset = nn::Preset::classic});
  auto gradient = [&](nn::LeNet5<float>& net) {
    net.parameters().zero_grad();
    (void)net.loss_and_gradient({images.data(), batch, 3, 32, 32}, labels);
    return Eigen::VectorXf(net.parameters().grads());
  };
  nn::LeNet5<float> outside = prototype;
  const Eigen::VectorXf expected = gradient(outside);
  std::vector<nn::LeNet5<float>> replicas(2, prototype);  // two workers, as LocalTrainer hosts them
  std::vector<Eigen::VectorXf> results(2);
  distopt::parallel::ThreadCount scope(2);
#pragma omp parallel for num_threads(2)
  for (int k = 0; k < 2; ++k) results[static_cast<std::size_t>(k)] = gradient(replicas[static_cast<std::size_t>(k)]);
  CHECK(results[0] == expected);
  CHECK(results[1] == expected);
}
