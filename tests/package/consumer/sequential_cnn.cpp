// A CNN composed of the library's layers (nn::Sequential, no backward pass written) trained
// through train::run_training on Fashion-MNIST as Debian installs it, with CMake's default
// Release flags. Learning is asserted: test accuracy above 0.75 after two epochs on 12,000
// training images.
#include <distopt/data/idx.hpp>
#include <distopt/data/split.hpp>
#include <distopt/data/statistics.hpp>
#include <distopt/nn/sequential.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/train/run.hpp>

#include <cstdio>
#include <numeric>
#include <vector>

int main() {
  namespace data = distopt::data;
  using namespace distopt::nn::layers;
  const data::ImageDataset fashion = data::load_fashion_mnist();
  std::vector<std::size_t> first(12'000);
  std::iota(first.begin(), first.end(), std::size_t{0});
  const data::LabelledImages train = data::subset(fashion.train, first);
  const data::Normalizer normalizer(data::channel_statistics(train));
  distopt::nn::Sequential<float> cnn({1, 28, 28},
                                     {conv2d(6, 5, 2), relu(), maxpool2d(), conv2d(16, 5), relu(), maxpool2d(), flatten(),
                                      linear(120), relu(), linear(84), relu(), linear(10)},
                                     {.seed = 1});
  distopt::optim::Sgdm sgd(cnn.parameters(), {.lr = 0.05, .momentum = 0.9});
  const auto result = distopt::train::run_training(cnn, sgd, distopt::optim::Constant{0.05},
                                                   {&train, nullptr, &fashion.test, normalizer}, {.epochs = 2, .batch_size = 64});
  const bool ok = result.test.accuracy > 0.75;
  std::printf("%s: Sequential CNN on Fashion-MNIST (12000 images, 2 epochs): test accuracy %.4f (bar 0.75), %.1f s\n",
              ok ? "consumer ok" : "consumer FAILED", result.test.accuracy, result.seconds);
  return ok ? 0 : 1;
}
