// A consumer of distopt::distopt alone: optimizers, a schedule and the model, with Eigen and OpenMP.
#include <distopt/nn/lenet5.hpp>
#include <distopt/optim/adamw.hpp>
#include <distopt/optim/schedule.hpp>
#include <distopt/optim/sgdm.hpp>
#include <distopt/optim/step.hpp>
#include <distopt/version.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  distopt::nn::LeNet5<float> net({.preset = distopt::nn::Preset::classic, .classes = 10, .channels = 1, .image_size = 16});
  distopt::optim::Sgdm sgdm(net.parameters(), {.lr = 0.1, .momentum = 0.9});
  const distopt::optim::Schedule schedule = distopt::optim::Cosine{.lr = 0.1, .t_max = 10};
  std::vector<float> pixels(8 * 16 * 16);
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>((i * 7) % 13) / 13.0f;
  const std::vector<std::int32_t> labels{0, 1, 2, 3, 4, 5, 6, 7};
  const distopt::Images<float> images{pixels.data(), 8, 1, 16, 16};
  double first = 0, last = 0;
  for (int t = 0; t < 10; ++t) {
    const auto s = distopt::optim::step(net, sgdm, images, labels, schedule(t), 8, "", t + 1);
    (t == 0 ? first : last) = s.loss;
  }
  const bool ok = std::isfinite(last) && last < first && distopt::version.major == DISTOPT_VERSION_MAJOR;
  std::printf("%s (distopt::distopt: loss %.3f -> %.3f)\n", ok ? "consumer ok" : "consumer FAILED", first, last);
  return ok ? 0 : 1;
}
