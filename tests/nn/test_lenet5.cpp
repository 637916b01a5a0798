#include "distopt/nn/lenet5.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>

#include "distopt/core/parallel.hpp"
#include "distopt/optim/sgdm.hpp"
#include "golden_lenet.hpp"

#include "../support/isa.hpp"

using distopt::nn::Images;
using distopt::nn::LeNet5;
using distopt::nn::Preset;

namespace {

std::vector<std::int32_t> labels_of(const xt::xarray<std::int64_t>& labels, std::size_t offset, std::size_t n) {
  std::vector<std::int32_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::int32_t>(labels.flat(offset + i));
  return out;
}

}  // namespace

TEST_CASE("LeNet5 logits, loss and every gradient match PyTorch within 1e-4", "[nn][lenet5][golden]") {
  DISTOPT_EACH_ISA();
  const std::string preset = GENERATE("hsu", "classic");
  auto net = golden_lenet::model(preset);
  const auto input = golden_lenet::load<float>(preset, "input.npy");
  const auto labels = labels_of(golden_lenet::load<std::int64_t>(preset, "labels.npy"), 0, 8);
  const Images<float> x{input.data(), 8, 3, 32, 32};

  std::vector<float> logits(8 * 100);
  net.forward(x, logits.data());
  const auto expected_logits = golden_lenet::load<double>(preset, "logits.npy");
  CHECK(golden_lenet::relative_error(logits.data(), expected_logits.data(), logits.size()) <= 1e-4);

  net.parameters().zero_grad();
  const auto stats = net.loss_and_gradient(x, labels);
  const double expected_loss = golden_lenet::load<double>(preset, "loss.npy")();
  CHECK(stats.loss == Approx(expected_loss).epsilon(1e-4));
  CHECK(stats.count == 8);
  for (const auto& block : net.parameters().blocks()) {
    const auto expected = golden_lenet::load<float>(preset, "grads/" + block.name + ".npy");
    const double error = golden_lenet::relative_error(net.parameters().grads().data() + block.offset, expected.data(),
                                                      static_cast<std::size_t>(block.size));
    INFO(preset << " " << block.name << " relative error " << error);
    CHECK(error <= 1e-4);
  }
}

TEST_CASE("LeNet5 label smoothing matches PyTorch's cross_entropy(label_smoothing=0.1)", "[nn][lenet5][golden]") {
  DISTOPT_EACH_ISA();
  auto reference = golden_lenet::model("hsu");
  LeNet5<float> net({.preset = Preset::hsu, .label_smoothing = 0.1});
  net.load_parameters(reference.parameters());
  const auto input = golden_lenet::load<float>("hsu", "input.npy");
  const auto labels = labels_of(golden_lenet::load<std::int64_t>("hsu", "labels.npy"), 0, 8);
  const auto stats = net.loss_and_gradient({input.data(), 8, 3, 32, 32}, labels);
  CHECK(stats.loss == Approx(golden_lenet::load<double>("hsu", "loss_smoothing.npy")()).epsilon(1e-4));
  for (const std::string name : {"fc3.weight", "fc3.bias", "conv1.weight"}) {
    const auto& block = net.parameters().block(name);
    const auto expected = golden_lenet::load<float>("hsu", "grads_smoothing/" + name + ".npy");
    CHECK(golden_lenet::relative_error(net.parameters().grads().data() + block.offset, expected.data(),
                                       static_cast<std::size_t>(block.size)) <= 1e-4);
  }
}

TEST_CASE("LeNet5 follows PyTorch's 50-step SGDM trajectory within 1e-3", "[nn][lenet5][golden]") {
  DISTOPT_EACH_ISA();
  const std::string preset = GENERATE("hsu", "classic");
  auto net = golden_lenet::model(preset);
  const auto inputs = golden_lenet::load<float>(preset, "train_inputs.npy");
  const auto all_labels = golden_lenet::load<std::int64_t>(preset, "train_labels.npy");
  const auto losses = golden_lenet::load<double>(preset, "trajectory_loss.npy");
  const auto logits_at = golden_lenet::load<double>(preset, "trajectory_logits.npy");
  distopt::optim::Sgdm optimizer(net.parameters(), {.lr = 0.01, .momentum = 0.9, .weight_decay = 4e-4});
  const std::ptrdiff_t image = 3 * 32 * 32;
  std::vector<float> logits(8 * 100);
  for (std::size_t step = 1; step <= 50; ++step) {
    const std::size_t b = (step - 1) % 4;
    const Images<float> x{inputs.data() + b * 8 * image, 8, 3, 32, 32};
    net.parameters().zero_grad();
    const auto stats = net.loss_and_gradient(x, labels_of(all_labels, b * 8, 8));
    INFO(preset << " step " << step << ": loss " << stats.loss << ", PyTorch " << losses(step - 1));
    REQUIRE(stats.loss == Approx(losses(step - 1)).epsilon(1e-3));
    optimizer.step(net.parameters());
    if (step % 10 == 0) {
      net.forward({inputs.data(), 8, 3, 32, 32}, logits.data());
      const double error = golden_lenet::relative_error(logits.data(), logits_at.data() + (step / 10 - 1) * 800, 800);
      INFO("logits after step " << step << ": relative error " << error);
      REQUIRE(error <= 1e-3);
    }
  }
  CHECK(losses(49) < losses(0) - 1.0);  // the trajectory trained: the comparison means something
}

TEST_CASE("LeNet5 gives the same bits with 1, 2 and 3 threads", "[nn][lenet5][determinism]") {
  DISTOPT_EACH_ISA();
  const Preset preset = GENERATE(Preset::hsu, Preset::classic);
  distopt::Rng rng(5);
  const std::ptrdiff_t batch = 50;  // chunks of 4 and a short one
  std::vector<float> images(static_cast<std::size_t>(batch * 3 * 32 * 32));
  for (float& v : images) v = static_cast<float>(rng.normal());
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (auto& l : labels) l = static_cast<std::int32_t>(rng.below(100));

  auto run = [&](int threads) {
    distopt::parallel::ThreadCount scope(threads);
    LeNet5<float> net({.preset = preset, .seed = 3});
    distopt::optim::Sgdm optimizer(net.parameters(), {.lr = 0.05, .momentum = 0.9});
    for (int step = 0; step < 3; ++step) {
      net.parameters().zero_grad();
      (void)net.loss_and_gradient({images.data(), batch, 3, 32, 32}, labels);
      optimizer.step(net.parameters());
    }
    return net.parameters();
  };
  const auto one = run(1);
  for (int threads : {2, 3}) {
    const auto other = run(threads);
    CHECK(std::memcmp(one.values().data(), other.values().data(), sizeof(float) * static_cast<std::size_t>(one.size())) == 0);
    CHECK(std::memcmp(one.grads().data(), other.grads().data(), sizeof(float) * static_cast<std::size_t>(one.size())) == 0);
  }
}

TEST_CASE("A padded conv1 gives the bits of an unpadded one on images padded by hand", "[nn][lenet5]") {
  DISTOPT_EACH_ISA();
  // Fashion-MNIST's shape: the model frames each batch in zeros itself; here the frame is made by
  // hand and given to a model without padding. Same weights, same arithmetic: the same bits.
  distopt::Rng rng(6);
  const std::ptrdiff_t batch = 10, size = 28, pad = 2, framed = size + 2 * pad;
  std::vector<float> images(static_cast<std::size_t>(batch * size * size)), padded(static_cast<std::size_t>(batch * framed * framed));
  for (float& v : images) v = static_cast<float>(rng.normal());
  for (std::ptrdiff_t i = 0; i < batch; ++i)
    for (std::ptrdiff_t y = 0; y < size; ++y)
      std::copy_n(images.data() + (i * size + y) * size, size, padded.data() + (i * framed + y + pad) * framed + pad);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (auto& l : labels) l = static_cast<std::int32_t>(rng.below(10));
  LeNet5<float> with_padding({.preset = Preset::classic, .classes = 10, .channels = 1, .image_size = size, .padding = pad, .seed = 4});
  LeNet5<float> by_hand({.preset = Preset::classic, .classes = 10, .channels = 1, .image_size = framed, .seed = 4});
  for (auto* net : {&with_padding, &by_hand}) net->parameters().zero_grad();
  const auto a = with_padding.loss_and_gradient({images.data(), batch, 1, size, size}, labels);
  const auto b = by_hand.loss_and_gradient({padded.data(), batch, 1, framed, framed}, labels);
  CHECK(a.loss == b.loss);
  const auto& g = with_padding.parameters().grads();
  CHECK(std::memcmp(g.data(), by_hand.parameters().grads().data(), sizeof(float) * static_cast<std::size_t>(g.size())) == 0);
}

TEST_CASE("LeNet5 rejects bad input naming the layer or the value", "[nn][lenet5]") {
  LeNet5<float> net({.preset = Preset::classic});
  std::vector<float> images(2 * 3 * 32 * 32, 0.5f);
  std::vector<std::int32_t> labels{1, 2};
  using Catch::Matchers::Message;
  REQUIRE_THROWS_MATCHES(net.loss_and_gradient({images.data(), 2, 1, 32, 32}, labels), std::invalid_argument,
                         Message("conv1: expected images of 3 x 32 x 32, got 1 x 32 x 32"));
  REQUIRE_THROWS_MATCHES(net.loss_and_gradient({images.data(), 2, 3, 28, 28}, labels), std::invalid_argument,
                         Message("conv1: expected images of 3 x 32 x 32, got 3 x 28 x 28"));
  std::vector<std::int32_t> bad{1, 100};
  REQUIRE_THROWS_MATCHES(net.loss_and_gradient({images.data(), 2, 3, 32, 32}, bad), std::invalid_argument,
                         Message("cross_entropy: label 100 at position 1 is outside [0, 100)"));
  std::vector<std::int32_t> negative{-1, 0};
  REQUIRE_THROWS_WITH(net.evaluate({images.data(), 2, 3, 32, 32}, negative), Catch::Matchers::Contains("label -1 at position 0"));
  REQUIRE_THROWS_MATCHES(net.loss_and_gradient({images.data(), 0, 3, 32, 32}, {}), std::invalid_argument,
                         Message("LeNet5: empty batch"));
  REQUIRE_THROWS_WITH(net.loss_and_gradient({images.data(), 2, 3, 32, 32}, std::span(labels).first(1)),
                      Catch::Matchers::Contains("cross_entropy: 1 labels for a batch of 2 images"));
  LeNet5<float> other({.preset = Preset::hsu});
  REQUIRE_THROWS_WITH(net.load_parameters(other.parameters()),
                      Catch::Matchers::Contains("block 0 is 'conv1.weight' of shape [6, 3, 5, 5] here and 'conv1.weight' of shape [64, 3, 5, 5]"));
  REQUIRE_THROWS_WITH(LeNet5<float>({.image_size = 12}), Catch::Matchers::Contains("image_size 12 is too small"));
  CHECK(net.parameters().grads().isZero(0));  // nothing was half-done
}
