// LibTorch reference LeNet-5: see torch_lenet.hpp. The only translation unit that sees torch.
#include "torch_lenet.hpp"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <fstream>
#include <limits>
#include <string>
#include <stdexcept>
#include <utility>

namespace distopt_bench {

namespace {

struct Shape {
  std::int64_t conv1, conv2, fc1, fc2;
};

Shape preset_shape(const std::string& preset) {
  if (preset == "hsu") return {64, 64, 384, 192};
  if (preset == "classic") return {6, 16, 120, 84};
  throw std::invalid_argument("TorchLeNet: preset must be \"hsu\" or \"classic\", got \"" + preset +
                              "\"");
}

// Side of conv2's pooled output: two 5 x 5 convolutions, each followed by a 2 x 2 pool.
std::int64_t pooled2(const TorchInput& in) { return ((in.size + 2 * in.padding - 4) / 2 - 4) / 2; }

struct LeNet5Impl : torch::nn::Module {
  LeNet5Impl(const Shape& s, const TorchInput& in)
      : conv1(register_module(
            "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in.channels, s.conv1, 5).padding(in.padding)))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(s.conv1, s.conv2, 5)))),
        fc1(register_module("fc1", torch::nn::Linear(s.conv2 * pooled2(in) * pooled2(in), s.fc1))),
        fc2(register_module("fc2", torch::nn::Linear(s.fc1, s.fc2))),
        fc3(register_module("fc3", torch::nn::Linear(s.fc2, in.classes))) {}

  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), {2, 2}, {2, 2});
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), {2, 2}, {2, 2});
    x = torch::flatten(x, 1);
    x = torch::relu(fc1->forward(x));
    x = torch::relu(fc2->forward(x));
    return fc3->forward(x);
  }

  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, fc2, fc3;
};

}  // namespace

struct TorchLeNet::Impl {
  Impl(const Shape& shape, int batch_size, std::uint64_t seed, const TorchInput& in)
      : batch(batch_size),
        model((torch::manual_seed(seed), std::make_shared<LeNet5Impl>(shape, in))),
        input(torch::randn({batch_size, in.channels, in.size, in.size})),
        labels(torch::randint(0, in.classes, {batch_size}, torch::kLong)),
        optimizer(model->parameters(),
                  torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(4e-4)) {}

  int batch;
  std::shared_ptr<LeNet5Impl> model;
  torch::Tensor input, labels;
  torch::optim::SGD optimizer;
  torch::Tensor loss;
};

TorchLeNet::TorchLeNet(const std::string& preset, int batch, std::uint64_t seed, TorchInput input) {
  const Shape shape = preset_shape(preset);
  if (batch < 1) throw std::invalid_argument("TorchLeNet: batch must be >= 1");
  if (input.channels < 1 || input.classes < 1 || input.padding < 0 || pooled2(input) < 1)
    throw std::invalid_argument("TorchLeNet: input of " + std::to_string(input.channels) + " x " +
                                std::to_string(input.size) + " x " + std::to_string(input.size) + ", padding " +
                                std::to_string(input.padding) + ", " + std::to_string(input.classes) +
                                " classes cannot feed LeNet-5");
  impl_ = std::make_unique<Impl>(shape, batch, seed, input);
}

TorchLeNet::~TorchLeNet() = default;
TorchLeNet::TorchLeNet(TorchLeNet&&) noexcept = default;
TorchLeNet& TorchLeNet::operator=(TorchLeNet&&) noexcept = default;

void TorchLeNet::train_step() {
  Impl& m = *impl_;
  m.optimizer.zero_grad();
  torch::Tensor logits = m.model->forward(m.input);
  m.loss = torch::nn::functional::cross_entropy(logits, m.labels);  // mean reduction
  m.loss.backward();
  m.optimizer.step();
}

void TorchLeNet::forward() {
  c10::InferenceMode guard;
  torch::Tensor logits = impl_->model->forward(impl_->input);
  (void)logits;
}

int TorchLeNet::batch() const { return impl_->batch; }

std::int64_t TorchLeNet::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& p : impl_->model->parameters()) n += p.numel();
  return n;
}

float TorchLeNet::last_loss() const {
  return impl_->loss.defined() ? impl_->loss.item<float>() : std::numeric_limits<float>::quiet_NaN();
}

void torch_set_threads(int n) {
  if (n < 1) throw std::invalid_argument("torch_set_threads: n must be >= 1");
  at::set_num_threads(n);
}

int torch_get_threads() { return at::get_num_threads(); }

std::string torch_version() { return TORCH_VERSION; }

std::string torch_blas_info() {
  // The BLAS the dynamic loader mapped for libtorch_cpu's NEEDED libblas.so.3: OpenBLAS (any
  // build) maps libopenblas*.so; otherwise report the libblas.so.3 file itself.
  std::string openblas, blas;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string file = path.substr(path.rfind('/') + 1);
    if (openblas.empty() && file.rfind("libopenblas", 0) == 0) openblas = path;
    if (blas.empty() && file.rfind("libblas.so", 0) == 0) blas = path;
  }
  if (openblas.empty()) return blas.empty() ? "no BLAS mapped" : "libblas.so.3 (" + blas + ")";

  std::string info = "OpenBLAS";
  if (void* h = dlopen(openblas.c_str(), RTLD_LAZY | RTLD_NOLOAD)) {
    using CharFn = char* (*)();
    using IntFn = int (*)();
    if (auto config = reinterpret_cast<CharFn>(dlsym(h, "openblas_get_config"))) info = config();
    if (auto core = reinterpret_cast<CharFn>(dlsym(h, "openblas_get_corename")))
      info += std::string(", core ") + core();
    if (auto parallel = reinterpret_cast<IntFn>(dlsym(h, "openblas_get_parallel"))) {
      const int mode = parallel();
      info += mode == 0 ? ", sequential" : mode == 1 ? ", pthreads" : ", openmp";
    }
    dlclose(h);
  }
  return info + " (" + openblas + ")";
}

}  // namespace distopt_bench
