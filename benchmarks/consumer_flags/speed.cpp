// What a consumer's program gets from distopt with its own flags: LeNet-5 training steps (the
// classic model on Fashion-MNIST's shape, and hsu's on CIFAR's), batch 64, and a whole
// train::run_training epoch on Fashion-MNIST as Debian installs it. Prints one line per workload:
//   <workload> <images per second> <kernel path>
// bench_consumer_flags.py builds this file twice (CMake's default flags, -march=native) and
// compares the two.
#include <distopt/data/idx.hpp>
#include <distopt/data/split.hpp>
#include <distopt/data/statistics.hpp>
#include <distopt/nn/gemm/kernel.hpp>
#include <distopt/nn/lenet5.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/train/run.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// Best-of images/s of `steps` training steps (zero_grad, loss and gradient, SGDM), after one.
double steps_per_second(const distopt::nn::LeNet5Options& options, int batch, int steps) {
  distopt::nn::LeNet5<float> net(options);
  distopt::optim::Sgdm sgdm(net.parameters(), {.lr = 0.01, .momentum = 0.9, .weight_decay = 4e-4});
  const std::ptrdiff_t pixels = options.channels * options.image_size * options.image_size;
  std::vector<float> images(static_cast<std::size_t>(batch * pixels));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < images.size(); ++i) images[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int32_t>(i % static_cast<std::size_t>(options.classes));
  const distopt::nn::Images<float> view{images.data(), batch, options.channels, options.image_size, options.image_size};
  double best = 1e30;
  for (int s = 0; s <= steps; ++s) {
    const auto start = Clock::now();
    net.parameters().zero_grad();
    (void)net.loss_and_gradient(view, labels);
    sgdm.step(net.parameters());
    if (s > 0) best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return batch / best;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 200;
  const std::string path = distopt::nn::gemm::isa();
  const distopt::nn::LeNet5Options fmnist{
      .preset = distopt::nn::Preset::classic, .classes = 10, .channels = 1, .image_size = 28, .padding = 2};
  std::printf("classic_fmnist_step %.1f %s\n", steps_per_second(fmnist, 64, steps), path.c_str());
  std::printf("hsu_cifar_step %.1f %s\n", steps_per_second({.preset = distopt::nn::Preset::hsu}, 64, steps / 10 + 1),
              path.c_str());

  // One epoch of train::run_training on 30,000 Fashion-MNIST images (SGDM, batch 64).
  namespace data = distopt::data;
  const data::ImageDataset fashion = data::load_fashion_mnist();
  std::vector<std::size_t> first(30'000);
  std::iota(first.begin(), first.end(), std::size_t{0});
  const data::LabelledImages train = data::subset(fashion.train, first);
  const data::Normalizer normalizer(data::channel_statistics(train));
  distopt::nn::LeNet5<float> net(fmnist);
  distopt::optim::Sgdm sgd(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  const auto result = distopt::train::run_training(net, sgd, distopt::optim::Constant{0.05},
                                                   {&train, nullptr, nullptr, normalizer}, {.epochs = 1, .batch_size = 64});
  std::printf("run_training_epoch %.1f %s\n", static_cast<double>(first.size()) / result.seconds, path.c_str());
  return 0;
}
