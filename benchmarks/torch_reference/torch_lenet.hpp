// LibTorch reference for the LeNet-5 benchmarks: the same model and training step as distopt's
// nn::LeNet5, written with torch::nn and torch::optim, so bench_lenet can time both in one run.
//
// This header includes no torch header (pimpl): a benchmark TU that includes it compiles in
// seconds and links distopt_torch_reference, which carries LibTorch as a link-only dependency.
//
// Model, preset "hsu" (Hsu et al. 2020): conv1 3->64 5x5, ReLU, maxpool 2, conv2 64->64 5x5, ReLU,
// maxpool 2, flatten, fc1 1600->384, ReLU, fc2 384->192, ReLU, fc3 192->100. Preset "classic":
// conv1 3->6, conv2 6->16, fc1 400->120, fc2 120->84, fc3 84->100. Convolutions have stride 1 and
// no padding; pooling is 2x2 with stride 2. Parameter names follow the state_dict
// (conv1.weight, conv1.bias, ..., fc3.bias).
//
// Input geometry (TorchInput): channels x size x size images, conv1 zero-padded by `padding`,
// `classes` logits; the default is CIFAR's 3 x 32 x 32 with 100 classes, and {1, 28, 2, 10} is
// the study's Fashion-MNIST model (PyTorch's Conv2d(1, 6, 5, padding=2)).
// Data: float32 input [batch, channels, size, size] drawn from N(0, 1) and int64 labels uniform
// in [0, classes), both fixed at construction (seeded), so every step sees the same batch.
//
// train_step(): zero_grad, forward, mean cross-entropy, backward, SGD step with lr 0.01,
// momentum 0.9, weight_decay 4e-4 (torch.optim.SGD semantics). forward(): the forward pass
// alone under c10::InferenceMode (no autograd graph), the output discarded.
//
// Threads: LibTorch's intra-op pool is OpenMP; set it with torch_set_threads(n) (or
// at::set_num_threads(n)) on the thread that calls train_step()/forward(). Which BLAS LibTorch
// uses (the Linear layers go through it) is chosen by the dynamic loader: see
// tools/bench/torch_env.sh; torch_blas_info() reports the one actually loaded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace distopt_bench {

// at::set_num_threads(n): the OpenMP threads of LibTorch's intra-op parallelism (n >= 1).
void torch_set_threads(int n);
// at::get_num_threads().
int torch_get_threads();
// One line naming the BLAS this process loaded, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY
// SkylakeX MAX_THREADS=64, core SkylakeX, openmp (/usr/lib/x86_64-linux-gnu/openblas-openmp/
// libopenblasp-r0.3.21.so)" or "libblas.so.3 (/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0)";
// for benchmark::AddCustomContext.
std::string torch_blas_info();
// LibTorch's version, e.g. "1.13.0".
std::string torch_version();

// The images a TorchLeNet takes and the classes it tells apart.
struct TorchInput {
  std::int64_t channels = 3, size = 32, padding = 0, classes = 100;
};

class TorchLeNet {
 public:
  // preset: "hsu" or "classic" (std::invalid_argument otherwise); batch >= 1. seed fixes the
  // initial weights (LibTorch's default init) and the batch.
  TorchLeNet(const std::string& preset, int batch, std::uint64_t seed = 0, TorchInput input = {});
  ~TorchLeNet();
  TorchLeNet(TorchLeNet&&) noexcept;
  TorchLeNet& operator=(TorchLeNet&&) noexcept;
  TorchLeNet(const TorchLeNet&) = delete;
  TorchLeNet& operator=(const TorchLeNet&) = delete;

  // zero_grad, forward, mean cross-entropy, backward, SGD step (lr 0.01, momentum 0.9, wd 4e-4).
  void train_step();
  // Forward pass under inference mode.
  void forward();

  [[nodiscard]] int batch() const;
  [[nodiscard]] std::int64_t parameter_count() const;
  // The loss computed by the last train_step() (NaN before the first).
  [[nodiscard]] float last_loss() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distopt_bench
