// Built with -O3 -Wall -Wextra -Wpedantic -Werror three times (CMake's default flags, -march=native,
// -march=x86-64-v4 where the compiler targets x86-64): no warning may arise from distopt's headers,
// including those GCC reports inside its intrinsics headers for code inlined from ours. Run (the
// first two), it trains both LeNet-5 presets and a Sequential CNN, in float and double, on every
// path of the kernels the CPU runs, and checks that the paths agree.
#include <distopt/distopt.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

template <class Model>
double one_step(Model& model, std::ptrdiff_t batch, std::ptrdiff_t channels, std::ptrdiff_t size, int classes) {
  using T = typename Model::scalar_type;
  std::vector<T> pixels(static_cast<std::size_t>(batch * channels * size * size));
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<T>((i * 7) % 13) / T(13);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int32_t>(i % static_cast<std::size_t>(classes));
  distopt::optim::Sgdm sgdm(model.parameters(), {.lr = 0.05, .momentum = 0.9});
  double loss = 0;
  for (int t = 0; t < 3; ++t) {
    model.parameters().zero_grad();
    loss = model.loss_and_gradient(distopt::Images<T>{pixels.data(), batch, channels, size, size}, labels).loss;
    sgdm.step(model.parameters());
  }
  return loss;
}

template <class T>
std::vector<double> losses() {
  using namespace distopt::nn::layers;
  distopt::nn::LeNet5<T> classic({.preset = distopt::nn::Preset::classic, .classes = 10, .channels = 1, .image_size = 28,
                                  .padding = 2});
  distopt::nn::LeNet5<T> hsu({.preset = distopt::nn::Preset::hsu, .classes = 10});
  distopt::nn::Sequential<T> cnn({3, 12, 12}, {conv2d(20, 3, 1), relu(), maxpool2d(), flatten(), linear(7)}, {.seed = 1});
  std::vector<double> out{one_step(classic, 9, 1, 28, 10), one_step(hsu, 5, 3, 32, 10), one_step(cnn, 6, 3, 12, 7)};
  // Every optimizer's fused loops and norms, on the Sequential's parameters.
  auto& p = cnn.parameters();
  for (auto& g : p.grads()) g = T(0.01);
  distopt::optim::AdamW adamw(p, {.lr = 1e-3, .weight_decay = 0.01});
  distopt::optim::Lars lars(p, {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
  distopt::optim::Lamb lamb(p, {.lr = 1e-3, .weight_decay = 0.01});
  adamw.step(p);
  lars.step(p);
  lamb.step(p);
  out.push_back(static_cast<double>(p.values()[0]));
  return out;
}

}  // namespace

int main() {
  bool ok = true;
  std::vector<double> first;
  std::string paths;
  for (distopt::nn::Isa isa : distopt::nn::supported_isas()) {
    const distopt::nn::ScopedIsa path(isa);
    paths += (paths.empty() ? "" : ", ") + distopt::nn::gemm::isa();
    std::vector<double> now = losses<float>();
    for (double loss : losses<double>()) now.push_back(loss);
    for (std::size_t i = 0; i < now.size(); ++i) {
      ok = ok && std::isfinite(now[i]);
      if (!first.empty()) ok = ok && std::abs(now[i] - first[i]) <= 1e-3 * (1 + std::abs(first[i]));
    }
    if (first.empty()) first = now;
  }
  std::printf("%s (kernels on %s agree: classic, hsu and Sequential losses %.4f %.4f %.4f)\n",
              ok ? "consumer ok" : "consumer FAILED", paths.c_str(), first[0], first[1], first[2]);
  return ok ? 0 : 1;
}
