// nn::Sequential: shapes checked at construction, exact gradients (finite differences in double),
// PyTorch's numbers (tools/golden/sequential.py), the same bits for any thread count.
#include "distopt/nn/sequential.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <omp.h>

#include <xtensor/xarray.hpp>
#include <xtensor/xnpy.hpp>

#include "distopt/core/parallel.hpp"
#include "distopt/core/rng.hpp"

#include "../support/isa.hpp"

namespace nn = distopt::nn;
using namespace distopt::nn::layers;
using distopt::Samples;
using distopt::Shape;
using distopt::Targets;

static_assert(nn::check_model<nn::Sequential<float>>());
static_assert(nn::check_model<nn::Sequential<double>>());

namespace {

template <class T>
std::vector<T> random_vector(std::size_t n, std::uint64_t seed) {
  distopt::Rng rng(seed);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(rng.normal());
  return v;
}

std::vector<std::int32_t> random_labels(std::size_t n, std::uint32_t classes, std::uint64_t seed) {
  distopt::Rng rng(seed);
  std::vector<std::int32_t> labels(n);
  for (auto& l : labels) l = static_cast<std::int32_t>(rng.below(classes));
  return labels;
}

// --- golden data (tests/data/sequential/, written by tools/golden/sequential.py) --------------

std::string golden_path(const std::string& test_case, const std::string& file) {
  return std::string(DISTOPT_TEST_DATA_DIR) + "/sequential/" + test_case + "/" + file;
}
template <class T>
xt::xarray<T> load(const std::string& test_case, const std::string& file) {
  return xt::load_npy<T>(golden_path(test_case, file));
}

/// max |x - y| / max |y| over n values.
template <class A, class B>
double relative_error(const A* x, const B* y, std::size_t n) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(x[i]) - static_cast<double>(y[i])));
    scale = std::max(scale, std::abs(static_cast<double>(y[i])));
  }
  return diff / scale;
}

struct GoldenCase {
  std::string name;
  Shape input;
  std::vector<nn::LayerSpec> layers;
  nn::Loss loss;
};

GoldenCase golden_case(const std::string& name) {
  if (name == "mlp") return {name, {13}, {linear(16), relu(), linear(8), tanh(), linear(3)}, nn::Loss::cross_entropy()};
  if (name == "regression") return {name, {5}, {linear(8), tanh(), linear(2)}, nn::Loss::mean_squared_error()};
  return {name,
          {1, 12, 12},
          {conv2d(4, 3, 1), relu(), maxpool2d(), conv2d(6, 3), relu(), maxpool2d(), flatten(), linear(3)},
          nn::Loss::cross_entropy()};
}

/// The case's model with PyTorch's initial weights, loaded by state_dict name.
nn::Sequential<float> golden_model(const GoldenCase& c, nn::Loss loss) {
  nn::Sequential<float> model(c.input, c.layers, {.loss = loss});
  auto& params = model.parameters();
  for (const auto& block : params.blocks()) {
    const auto w = load<float>(c.name, "weights/" + block.name + ".npy");
    const std::vector<std::ptrdiff_t> shape(w.shape().begin(), w.shape().end());
    REQUIRE(shape == block.shape);
    std::copy_n(w.data(), block.size, params.values().data() + block.offset);
  }
  return model;
}

/// The case's batch: inputs, and class ids or real targets (kept alive by the struct).
struct GoldenBatch {
  xt::xarray<float> input;
  std::vector<std::int32_t> labels;
  xt::xarray<float> values;
  Targets targets;
  Samples<float> samples;
};
GoldenBatch golden_batch(const GoldenCase& c) {
  GoldenBatch b;
  b.input = load<float>(c.name, "input.npy");
  const auto batch = static_cast<std::ptrdiff_t>(b.input.shape()[0]);
  b.samples = {b.input.data(), batch, c.input};
  if (c.loss.classifies()) {
    const auto ids = load<std::int64_t>(c.name, "targets.npy");
    for (const auto id : ids) b.labels.push_back(static_cast<std::int32_t>(id));
    b.targets = Targets(b.labels);
  } else {
    b.values = load<float>(c.name, "targets.npy");
    b.targets = Targets::real({b.values.data(), b.values.size()}, static_cast<std::ptrdiff_t>(b.values.shape()[1]));
  }
  return b;
}

// --- finite differences ----------------------------------------------------------------------

/// The worst relative error between the analytic gradient of a double model and central
/// differences of its loss, over up to 24 positions of every block; also checks most sampled
/// gradients are non-zero (dead ReLUs give exact zeros).
double gradient_check(nn::Sequential<double>& model, const Samples<double>& x, const Targets& y) {
  auto& params = model.parameters();
  params.zero_grad();
  (void)model.loss_and_gradient(x, y, 1.0);
  const Eigen::VectorXd analytic = params.grads();
  distopt::Rng rng(14);
  double worst = 0;
  int sampled = 0, nonzero = 0;
  for (const auto& block : params.blocks()) {
    const std::ptrdiff_t samples = std::min<std::ptrdiff_t>(block.size, 24);
    for (std::ptrdiff_t s = 0; s < samples; ++s) {
      const auto drawn = static_cast<std::ptrdiff_t>(rng.below(static_cast<std::uint32_t>(block.size)));
      const std::ptrdiff_t i = block.offset + (samples == block.size ? s : drawn);
      const double saved = params.values()(i), h = 1e-6;
      params.values()(i) = saved + h;
      const double up = model.evaluate(x, y).loss;
      params.values()(i) = saved - h;
      const double down = model.evaluate(x, y).loss;
      params.values()(i) = saved;
      const double numeric = (up - down) / (2 * h);
      // A central difference of a loss near 1 carries rounding noise of about eps / h, 2e-10:
      // below that, relative agreement means nothing.
      const double error = std::max(0.0, std::abs(numeric - analytic(i)) - 1e-9) /
                           std::max({std::abs(numeric), std::abs(analytic(i)), 1e-12});
      INFO(block.name << "[" << i - block.offset << "]: numeric " << numeric << ", analytic " << analytic(i));
      CHECK(error < 1e-6);
      worst = std::max(worst, error);
      ++sampled;
      nonzero += std::abs(numeric) > 1e-8 ? 1 : 0;
    }
  }
  INFO(nonzero << " of " << sampled << " sampled gradients are non-zero");
  CHECK(nonzero * 2 > sampled);
  return worst;
}

}  // namespace

TEST_CASE("Sequential checks shapes at construction, naming the layer and the shapes", "[nn][sequential]") {
  using Catch::Matchers::Message;
  using S = nn::Sequential<float>;
  REQUIRE_THROWS_MATCHES(S({1, 28, 28}, {conv2d(6, 5), relu(), maxpool2d(), conv2d(16, 5), relu(), maxpool2d(), linear(10)}),
                         std::invalid_argument,
                         Message("Sequential: layer 6 (linear) needs samples of rank 1, got [16, 4, 4]; add flatten()"));
  REQUIRE_THROWS_MATCHES(S({13}, {linear(8), relu(), conv2d(4, 3)}), std::invalid_argument,
                         Message("Sequential: layer 2 (conv2d) needs samples of shape [channels, height, width], got [8]"));
  REQUIRE_THROWS_MATCHES(S({1, 4, 4}, {conv2d(2, 5)}), std::invalid_argument,
                         Message("Sequential: layer 0 (conv2d): a 5 x 5 kernel with padding 0 does not fit samples of [1, 4, 4]"));
  CHECK_NOTHROW(S({1, 4, 4}, {conv2d(2, 5, 1)}));  // padding 1 makes a 6 x 6 field: 2 x 2 outputs
  REQUIRE_THROWS_MATCHES(S({1, 3, 3}, {conv2d(2, 3), maxpool2d()}), std::invalid_argument,
                         Message("Sequential: layer 1 (maxpool2d): a 2 x 2 window does not fit samples of [2, 1, 1]"));
  REQUIRE_THROWS_MATCHES(S({13}, {maxpool2d()}), std::invalid_argument,
                         Message("Sequential: layer 0 (maxpool2d) needs samples of shape [channels, height, width], got [13]"));
  REQUIRE_THROWS_MATCHES(S({13}, {linear(4), linear(0)}), std::invalid_argument,
                         Message("Sequential: layer 1 (linear): out_features must be >= 1, got 0"));
  REQUIRE_THROWS_MATCHES(S({3, 8, 8}, {conv2d(4, 3, -1)}), std::invalid_argument,
                         Message("Sequential: layer 0 (conv2d): padding must be >= 0, got -1"));
  REQUIRE_THROWS_MATCHES(S({13}, {}), std::invalid_argument, Message("Sequential: needs at least one layer"));
  REQUIRE_THROWS_MATCHES(S({13}, {linear(2)}, {.chunk = 0}), std::invalid_argument,
                         Message("Sequential: chunk must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(S({13}, {linear(2)}, {.loss = nn::Loss::cross_entropy(1.5)}),
                      Catch::Matchers::Contains("label_smoothing must be in [0, 1], got 1.5"));
}

TEST_CASE("Sequential rejects a batch or targets that do not fit, naming both", "[nn][sequential]") {
  using Catch::Matchers::Message;
  nn::Sequential<float> mlp({13}, {linear(8), relu(), linear(3)});
  std::vector<float> x(2 * 13, 0.5f);
  std::vector<std::int32_t> labels{0, 2};
  REQUIRE_THROWS_MATCHES(mlp.loss_and_gradient({x.data(), 2, {12}}, labels), std::invalid_argument,
                         Message("Sequential: expected samples of shape [13], got [12]"));
  REQUIRE_THROWS_MATCHES(mlp.forward({x.data(), 2, {1, 13}}, x.data()), std::invalid_argument,
                         Message("Sequential: expected samples of shape [13], got [1, 13]"));
  REQUIRE_THROWS_MATCHES(mlp.evaluate({x.data(), 0, {13}}, Targets{}), std::invalid_argument,
                         Message("Sequential: empty batch"));
  std::vector<std::int32_t> bad{0, 3};
  REQUIRE_THROWS_WITH(mlp.evaluate({x.data(), 2, {13}}, bad),
                      Catch::Matchers::Contains("label 3 at position 1 is outside [0, 3)"));
  const std::vector<float> values(2 * 3, 0.0f);
  REQUIRE_THROWS_WITH(mlp.evaluate({x.data(), 2, {13}}, Targets::real(values, 3)),
                      Catch::Matchers::Contains("cross-entropy needs class ids"));
  nn::Sequential<float> regression({13}, {linear(2)}, {.loss = nn::Loss::mean_squared_error()});
  REQUIRE_THROWS_WITH(regression.evaluate({x.data(), 2, {13}}, Targets::real(values, 3)),
                      Catch::Matchers::Contains("targets of width 3 for a model of 2 outputs"));
  CHECK(mlp.parameters().grads().isZero(0));  // nothing was half-done
}

TEST_CASE("Sequential names its blocks as torch.nn.Sequential's state_dict and initialises them as PyTorch",
          "[nn][sequential][init]") {
  const std::vector<nn::LayerSpec> lenet{conv2d(6, 5, 2), relu(),      maxpool2d(), conv2d(16, 5),
                                         relu(),          maxpool2d(), flatten(),   linear(120),
                                         relu(),          linear(84),  relu(),      linear(10)};
  const nn::Sequential<float> cnn({1, 28, 28}, lenet, {.seed = 1});
  const auto& params = cnn.parameters();
  std::vector<std::string> names;
  for (const auto& block : params.blocks()) names.push_back(block.name);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight",
                                          "9.bias", "11.weight", "11.bias"});
  CHECK(params.block("0.weight").shape == std::vector<std::ptrdiff_t>{6, 1, 5, 5});
  CHECK(params.block("3.weight").shape == std::vector<std::ptrdiff_t>{16, 6, 5, 5});
  CHECK(params.block("7.weight").shape == std::vector<std::ptrdiff_t>{120, 400});
  CHECK(params.block("11.bias").shape == std::vector<std::ptrdiff_t>{10});
  CHECK(params.num_parameters() == 61706);  // PyTorch's LeNet-5 on 28 x 28 with padding 2
  CHECK(cnn.input_size() == 784);
  CHECK(cnn.output_size() == 10);
  CHECK(cnn.output_shape(5).str() == "[16, 5, 5]");
  CHECK(cnn.summary().find("7 linear [400] -> [120] (48120 parameters)") != std::string::npos);

  for (const auto& block : params.blocks()) {
    const std::string layer = block.name.substr(0, block.name.find('.'));
    const double fan_in = layer == "0" ? 25 : layer == "3" ? 150 : layer == "7" ? 400 : layer == "9" ? 120 : 84;
    const double bound = 1.0 / std::sqrt(fan_in);
    const auto v = params.value(params.index_of(block.name));
    INFO(block.name);
    CHECK(v.maxCoeff() < bound);
    CHECK(v.minCoeff() >= -bound);
    CHECK(v.cwiseAbs().maxCoeff() > 0.5 * bound);
  }
  // The seed decides the weights.
  const nn::Sequential<float> same({1, 28, 28}, lenet, {.seed = 1});
  const nn::Sequential<float> other({1, 28, 28}, lenet, {.seed = 2});
  CHECK(same.parameters().values() == params.values());
  CHECK(other.parameters().values() != params.values());
}

TEST_CASE("Sequential gradients match finite differences (double)", "[nn][sequential][gradcheck]") {
  DISTOPT_EACH_ISA();
  struct Case {
    const char* name;
    Shape input;
    std::vector<nn::LayerSpec> layers;
    nn::Loss loss;
    std::ptrdiff_t chunk;
  };
  // Chunks of 2 over a batch of 5: several chunks and a short one. The odd ones exercise a ReLU
  // on the batch itself, a ReLU after a Tanh and after a ReLU (not in place / in place), a
  // flatten of sample-major images, poolings with and without a ReLU on odd sizes, and a
  // convolution last (its channel-major output read as rows) under mean squared error.
  const auto c = GENERATE(values<Case>({
      {"mlp", {13}, {linear(16), relu(), linear(8), tanh(), linear(3)}, nn::Loss::cross_entropy(0.05), 2},
      {"mlp-mse", {5}, {linear(8), tanh(), linear(8), relu(), relu(), linear(2)}, nn::Loss::mean_squared_error(), 2},
      {"cnn", {2, 12, 12},
       {conv2d(4, 3, 1), relu(), maxpool2d(), conv2d(6, 3), relu(), maxpool2d(), flatten(), linear(8), relu(), linear(4)},
       nn::Loss::cross_entropy(), 2},
      {"cnn-5x5", {1, 16, 16}, {conv2d(6, 5, 2), relu(), maxpool2d(), conv2d(16, 5), relu(), maxpool2d(), flatten(), linear(5)},
       nn::Loss::cross_entropy(), 3},
      {"odd", {2, 7, 9},
       {relu(), conv2d(3, 2), tanh(), relu(), maxpool2d(), conv2d(4, 2, 1), flatten(), tanh(), linear(6), tanh(), linear(3)},
       nn::Loss::cross_entropy(0.1), 2},
      {"flat-images", {1, 6, 6}, {flatten(), linear(7), relu(), linear(3)}, nn::Loss::cross_entropy(), 2},
      {"odd-pool", {1, 10, 12}, {conv2d(3, 2), relu(), maxpool2d(), flatten(), linear(3)}, nn::Loss::cross_entropy(), 2},
      {"conv-last", {2, 8, 8}, {conv2d(3, 3), tanh(), maxpool2d(), conv2d(2, 2)}, nn::Loss::mean_squared_error(), 2},
  }));
  INFO(c.name);
  nn::Sequential<double> model(c.input, c.layers, {.loss = c.loss, .seed = 2, .chunk = c.chunk});
  const std::ptrdiff_t batch = 5;
  const auto x = random_vector<double>(static_cast<std::size_t>(batch * c.input.size()), 13);
  const auto classes = static_cast<std::uint32_t>(model.output_size());
  const auto labels = random_labels(static_cast<std::size_t>(batch), classes, 15);
  const auto values = random_vector<float>(static_cast<std::size_t>(batch * model.output_size()), 16);
  const Targets y = c.loss.classifies() ? Targets(labels) : Targets::real(values, model.output_size());
  const double worst = gradient_check(model, {x.data(), batch, c.input}, y);
  CHECK(worst < 1e-6);
}

TEST_CASE("Sequential matches PyTorch's outputs, loss and gradients", "[nn][sequential][golden]") {
  DISTOPT_EACH_ISA();
  const std::string name = GENERATE("mlp", "regression", "cnn");
  const GoldenCase c = golden_case(name);
  auto model = golden_model(c, c.loss);
  const GoldenBatch b = golden_batch(c);
  const auto batch = static_cast<std::size_t>(b.samples.count);
  const auto outputs = static_cast<std::size_t>(model.output_size());

  std::vector<float> out(batch * outputs);
  model.forward(b.samples, out.data());
  const auto expected_outputs = load<double>(name, "outputs.npy");
  REQUIRE(expected_outputs.size() == out.size());
  const double output_error = relative_error(out.data(), expected_outputs.data(), out.size());

  model.parameters().zero_grad();
  const nn::LossStats stats = model.loss_and_gradient(b.samples, b.targets);
  const double expected_loss = load<double>(name, "loss.npy")();
  const double loss_error = std::abs(stats.loss - expected_loss) / std::abs(expected_loss);
  CHECK(stats.count == b.samples.count);
  CHECK(stats.classified == c.loss.classifies());
  double grad_error = 0;
  for (const auto& block : model.parameters().blocks()) {
    const auto expected = load<double>(name, "grads/" + block.name + ".npy");
    REQUIRE(static_cast<std::ptrdiff_t>(expected.size()) == block.size);
    const double error = relative_error(model.parameters().grads().data() + block.offset, expected.data(),
                                        static_cast<std::size_t>(block.size));
    INFO(name << " " << block.name << " relative error " << error);
    CHECK(error <= 1e-5);
    grad_error = std::max(grad_error, error);
  }
  // The numbers the report quotes: run with -s to see them.
  INFO(name << ": outputs " << output_error << ", loss " << loss_error << ", gradients " << grad_error);
  CHECK(output_error <= 1e-5);
  CHECK(loss_error <= 1e-5);
  SUCCEED(name << " max relative error vs PyTorch: outputs " << output_error << ", loss " << loss_error << ", gradients "
            << grad_error);
}

TEST_CASE("Sequential label smoothing matches PyTorch's cross_entropy(label_smoothing=0.1)", "[nn][sequential][golden]") {
  DISTOPT_EACH_ISA();
  const GoldenCase c = golden_case("mlp");
  auto model = golden_model(c, nn::Loss::cross_entropy(0.1));
  const GoldenBatch b = golden_batch(c);
  model.parameters().zero_grad();
  const auto stats = model.loss_and_gradient(b.samples, b.targets);
  CHECK(stats.loss == Approx(load<double>("mlp", "loss_smoothing.npy")()).epsilon(1e-5));
  for (const auto& block : model.parameters().blocks()) {
    const auto expected = load<double>("mlp", "grads_smoothing/" + block.name + ".npy");
    const double error = relative_error(model.parameters().grads().data() + block.offset, expected.data(),
                                        static_cast<std::size_t>(block.size));
    INFO(block.name << " relative error " << error);
    CHECK(error <= 1e-5);
  }
}

TEST_CASE("Sequential follows PyTorch's 10-step SGD trajectory", "[nn][sequential][golden]") {
  DISTOPT_EACH_ISA();
  const std::string name = GENERATE("mlp", "regression", "cnn");
  const GoldenCase c = golden_case(name);
  auto model = golden_model(c, c.loss);
  const GoldenBatch b = golden_batch(c);
  const auto losses = load<double>(name, "trajectory_loss.npy");
  auto& params = model.parameters();
  double worst = 0;
  for (std::size_t step = 0; step < losses.size(); ++step) {
    params.zero_grad();
    const auto stats = model.loss_and_gradient(b.samples, b.targets);
    const double error = std::abs(stats.loss - losses(step)) / std::abs(losses(step));
    INFO(name << " step " << step + 1 << ": loss " << stats.loss << ", PyTorch " << losses(step));
    REQUIRE(error <= 1e-5);
    worst = std::max(worst, error);
    params.values() -= 0.1f * params.grads();  // torch.optim.SGD(lr=0.1)
  }
  std::vector<float> out(static_cast<std::size_t>(b.samples.count * model.output_size()));
  model.forward(b.samples, out.data());
  const auto expected = load<double>(name, "trajectory_outputs.npy");
  const double output_error = relative_error(out.data(), expected.data(), out.size());
  CHECK(output_error <= 1e-5);
  CHECK(losses(losses.size() - 1) < 0.8 * losses(0));  // it trained: the comparison means something
  SUCCEED(name << " trajectory max relative error vs PyTorch: losses " << worst << ", final outputs " << output_error);
}

TEST_CASE("Sequential gives the same bits with 1, 2 and 3 threads", "[nn][sequential][determinism]") {
  DISTOPT_EACH_ISA();
  const bool convolutional = GENERATE(false, true);
  // Every linear layer but the last and every convolution has enough work for a team.
  const Shape input = convolutional ? Shape{3, 16, 16} : Shape{64};
  const std::vector<nn::LayerSpec> specs =
      convolutional ? std::vector<nn::LayerSpec>{conv2d(8, 3, 1), relu(), maxpool2d(), conv2d(16, 3), tanh(), maxpool2d(),
                                                 flatten(), linear(48), relu(), linear(10)}
                    : std::vector<nn::LayerSpec>{linear(96), relu(), linear(64), tanh(), linear(10)};
  const std::ptrdiff_t batch = 50;  // chunks of 4 and a short one
  const auto x = random_vector<float>(static_cast<std::size_t>(batch * input.size()), 5);
  const auto labels = random_labels(static_cast<std::size_t>(batch), 10, 6);

  struct Run {
    distopt::ParameterSet params;
    double loss = 0;
    std::vector<float> out;
  };
  auto run = [&](int threads) {
    distopt::parallel::ThreadCount scope(threads);
    nn::Sequential<float> model(input, specs, {.seed = 3});
    Run r;
    for (int step = 0; step < 3; ++step) {
      model.parameters().zero_grad();
      r.loss = model.loss_and_gradient({x.data(), batch, input}, labels).loss;
      model.parameters().values() -= 0.05f * model.parameters().grads();
    }
    r.out.resize(static_cast<std::size_t>(batch * 10));
    model.forward({x.data(), batch, input}, r.out.data());
    r.params = model.parameters();
    return r;
  };
  const Run one = run(1);
  for (int threads : {2, 3}) {
    const Run other = run(threads);
    INFO(threads << " threads");
    CHECK(other.loss == one.loss);
    CHECK(other.out == one.out);
    const auto bytes = sizeof(float) * static_cast<std::size_t>(one.params.size());
    CHECK(std::memcmp(one.params.values().data(), other.params.values().data(), bytes) == 0);
    CHECK(std::memcmp(one.params.grads().data(), other.params.grads().data(), bytes) == 0);
  }
}

TEST_CASE("Sequential inside a parallel region runs on the calling thread with the same bits", "[nn][sequential][determinism]") {
  DISTOPT_EACH_ISA();
  const Shape input{2, 10, 10};
  const std::vector<nn::LayerSpec> specs{conv2d(4, 3), relu(), maxpool2d(), flatten(), linear(16), relu(), linear(5)};
  const std::ptrdiff_t batch = 9;
  const auto x = random_vector<float>(static_cast<std::size_t>(batch * input.size()), 7);
  const auto labels = random_labels(static_cast<std::size_t>(batch), 5, 8);
  nn::Sequential<float> model(input, specs, {.seed = 4});
  model.parameters().zero_grad();
  const auto serial = model.loss_and_gradient({x.data(), batch, input}, labels);

  distopt::parallel::ThreadCount scope(2);
  std::vector<nn::Sequential<float>> replicas(2, model);
  std::vector<double> losses(2);
#pragma omp parallel for num_threads(2)
  for (int k = 0; k < 2; ++k) {
    auto& r = replicas[static_cast<std::size_t>(k)];
    r.parameters().zero_grad();
    losses[static_cast<std::size_t>(k)] = r.loss_and_gradient({x.data(), batch, input}, labels).loss;
  }
  const auto bytes = sizeof(float) * static_cast<std::size_t>(model.parameters().size());
  for (std::size_t k = 0; k < 2; ++k) {
    CHECK(losses[k] == serial.loss);
    CHECK(std::memcmp(replicas[k].parameters().grads().data(), model.parameters().grads().data(), bytes) == 0);
  }
}

TEST_CASE("A copied Sequential is an independent replica", "[nn][sequential]") {
  const Shape input{1, 8, 8};
  nn::Sequential<float> model(input, {conv2d(3, 3), relu(), maxpool2d(), flatten(), linear(4)}, {.seed = 9});
  const std::ptrdiff_t batch = 6;
  const auto x = random_vector<float>(static_cast<std::size_t>(batch * input.size()), 10);
  const auto labels = random_labels(static_cast<std::size_t>(batch), 4, 11);
  std::vector<float> before(static_cast<std::size_t>(batch * 4)), after(before.size()), copied(before.size());
  model.forward({x.data(), batch, input}, before.data());  // the original has grown its scratch

  nn::Sequential<float> copy = model;
  copy.parameters().zero_grad();
  (void)copy.loss_and_gradient({x.data(), batch, input}, labels);
  copy.parameters().values() -= 0.5f * copy.parameters().grads();
  copy.forward({x.data(), batch, input}, copied.data());

  model.forward({x.data(), batch, input}, after.data());
  CHECK(after == before);  // neither weights nor scratch are shared
  CHECK(copied != before);
  CHECK(model.parameters().grads().isZero(0));
  nn::Sequential<float> assigned({5}, {linear(2)});
  assigned = copy;
  std::vector<float> again(before.size());
  assigned.forward({x.data(), batch, input}, again.data());
  CHECK(again == copied);
}

TEST_CASE("A Sequential regression reports its loss and no accuracy", "[nn][sequential]") {
  const Shape input{4};
  nn::Sequential<float> model(input, {linear(8), tanh(), linear(3)}, {.loss = nn::Loss::mean_squared_error(), .seed = 1});
  const std::ptrdiff_t batch = 7;
  const auto x = random_vector<float>(static_cast<std::size_t>(batch * 4), 12);
  const auto y = random_vector<float>(static_cast<std::size_t>(batch * 3), 13);
  const Targets targets = Targets::real(y, 3);
  const auto stats = model.evaluate({x.data(), batch, input}, targets);
  CHECK_FALSE(stats.classified);
  CHECK(stats.correct1 == 0);
  CHECK(stats.correct5 == 0);
  CHECK(stats.count == batch);
  // The loss is the mean of (z - y)^2 over every value.
  std::vector<float> z(static_cast<std::size_t>(batch * 3));
  model.forward({x.data(), batch, input}, z.data());
  double sum = 0;
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double d = static_cast<double>(z[i]) - static_cast<double>(y[i]);
    sum += d * d;
  }
  CHECK(stats.loss == Approx(sum / static_cast<double>(z.size())).epsilon(1e-12));

  // A classifier counts its hits.
  nn::Sequential<float> classifier(input, {linear(6)}, {.seed = 1});
  const auto labels = random_labels(static_cast<std::size_t>(batch), 6, 14);
  const auto c = classifier.evaluate({x.data(), batch, input}, labels);
  CHECK(c.classified);
  CHECK(c.correct5 >= c.correct1);
  CHECK(c.correct5 > 0);
}

TEST_CASE("loss_and_gradient adds weight times the gradient", "[nn][sequential]") {
  const Shape input{6};
  nn::Sequential<double> model(input, {linear(5), relu(), linear(3)}, {.seed = 2});
  const std::ptrdiff_t batch = 8;
  const auto x = random_vector<double>(static_cast<std::size_t>(batch * 6), 15);
  const auto labels = random_labels(static_cast<std::size_t>(batch), 3, 16);
  auto& params = model.parameters();
  params.zero_grad();
  (void)model.loss_and_gradient({x.data(), batch, input}, labels, 1.0);
  const Eigen::VectorXd whole = params.grads();
  // Two halves weighted 1/2 each add up to the whole batch's gradient.
  params.zero_grad();
  (void)model.loss_and_gradient({x.data(), 4, input}, std::span(labels).first(4), 0.5);
  (void)model.loss_and_gradient({x.data() + 4 * 6, 4, input}, std::span(labels).subspan(4), 0.5);
  CHECK((params.grads() - whole).cwiseAbs().maxCoeff() < 1e-15);
}
