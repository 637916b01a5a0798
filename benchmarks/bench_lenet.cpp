// LeNet-5 training and inference throughput, beside the machine's measured fp32 FMA peak and,
// when LibTorch is installed, beside LibTorch running the same model and step in the same run.
//
// BM_Peak_Fma/<threads>: fused multiply-adds on independent registers, the machine's fp32 ceiling.
// BM_Torch_LeNet5_TrainStep/<preset>/<batch>/<threads>: LibTorch (torch::nn, torch::optim::SGD).
// BM_LeNet5_TrainStep/<preset>/<batch>/<threads>: zero_grad, forward, cross-entropy, backward,
//   SGDM step (lr 0.01, momentum 0.9, weight decay 4e-4); items/s = images/s. Counters: `of_peak`,
//   the share of the FMA peak the step's arithmetic reaches; `vs_torch`, LibTorch's step time
//   over ours (> 1: faster than LibTorch). Both from best-of timings (the machine is shared).
// BM_LeNet5_Forward/<preset>/<batch>/<threads>: logits only.
#include <distopt/distopt.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#if DISTOPT_HAVE_TORCH
#include "torch_reference/torch_lenet.hpp"
#endif

namespace {

namespace nn = distopt::nn;
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// --- the machine's fp32 FMA peak ------------------------------------------------------------

// Sixteen independent chains of 64-byte vector FMAs per thread: enough to cover the latency of
// two FMA pipes. GCC's vector extension compiles to the widest FMA -march=native offers.
using Vector = float __attribute__((vector_size(64)));
constexpr int chains = 16;
constexpr int lanes = static_cast<int>(sizeof(Vector) / sizeof(float));

double peak_flops(int threads, std::int64_t iterations) {
  distopt::parallel::ThreadCount scope(threads);
  const auto start = Clock::now();
  float sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    Vector acc[chains];
    for (int c = 0; c < chains; ++c)
      for (int l = 0; l < lanes; ++l) acc[c][l] = 1.0f + static_cast<float>(c + l) * 1e-3f;
    Vector x, y;
    for (int l = 0; l < lanes; ++l) {
      x[l] = 0.9999999f;
      y[l] = 1e-7f;
    }
    // Hide the values from the optimiser, or it folds the whole loop into constants.
    benchmark::DoNotOptimize(x);
    benchmark::DoNotOptimize(y);
    for (int c = 0; c < chains; ++c) benchmark::DoNotOptimize(acc[c]);
    Vector chain[chains];  // a copy whose address is never taken, so it stays in registers
    for (int c = 0; c < chains; ++c) chain[c] = acc[c];
    for (std::int64_t i = 0; i < iterations; ++i)
      for (int c = 0; c < chains; ++c) chain[c] = chain[c] * x + y;
    for (int c = 0; c < chains; ++c)
      for (int l = 0; l < lanes; ++l) sink += chain[c][l];
  }
  benchmark::DoNotOptimize(sink);
  return 2.0 * chains * lanes * static_cast<double>(iterations) * threads / seconds_since(start);
}

std::map<int, double> best_peak;  // threads -> FLOP/s

double peak(int threads) {
  auto& best = best_peak[threads];
  if (best == 0)
    for (int rep = 0; rep < 5; ++rep) best = std::max(best, peak_flops(threads, 20'000'000));
  return best;
}

void BM_Peak_Fma(benchmark::State& state, int threads) {
  for (auto _ : state) state.counters["GFLOPs"] = peak(threads) / 1e9;
}

// --- the model --------------------------------------------------------------------------------

// Multiply-adds of one training image (counted as 2 FLOPs each): the forward pass, the weight
// gradients (as much again), and the input gradients of every layer but conv1 (nothing needs
// the gradient of the images).
double training_flops(const nn::LeNet5Options& o) {
  const bool hsu = o.preset == nn::Preset::hsu;
  const double c1 = hsu ? 64 : 6, c2 = hsu ? 64 : 16, f1 = hsu ? 384 : 120, f2 = hsu ? 192 : 84;
  const double s1 = static_cast<double>(o.image_size) - 4, p1 = std::floor(s1 / 2), s2 = p1 - 4, p2 = std::floor(s2 / 2);
  const double conv1 = 2 * c1 * static_cast<double>(o.channels) * 25 * s1 * s1;
  const double rest = 2 * c2 * c1 * 25 * s2 * s2 + 2 * (c2 * p2 * p2 * f1 + f1 * f2 + f2 * static_cast<double>(o.classes));
  return 2 * conv1 + 3 * rest;
}

struct Batch {
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  Batch(std::ptrdiff_t n, std::uint64_t seed) : images(static_cast<std::size_t>(n * 3 * 32 * 32)), labels(static_cast<std::size_t>(n)) {
    distopt::Rng rng(seed);
    for (float& v : images) v = static_cast<float>(rng.normal());
    for (auto& l : labels) l = static_cast<std::int32_t>(rng.below(100));
  }
  [[nodiscard]] nn::Images<float> view() const {
    return {images.data(), static_cast<std::ptrdiff_t>(labels.size()), 3, 32, 32};
  }
};

std::map<std::tuple<std::string, int, int>, double> best_torch_step;  // (preset, batch, threads) -> s

nn::Preset preset_of(const std::string& name) { return name == "hsu" ? nn::Preset::hsu : nn::Preset::classic; }

void BM_LeNet5_TrainStep(benchmark::State& state, const std::string& preset, int batch, int threads) {
  distopt::parallel::ThreadCount scope(threads);
  const nn::LeNet5Options options{.preset = preset_of(preset)};
  nn::LeNet5<float> net(options);
  distopt::optim::Sgdm sgdm(net.parameters(), {.lr = 0.01, .momentum = 0.9, .weight_decay = 4e-4});
  const Batch data(batch, 1);
  auto step = [&] {
    net.parameters().zero_grad();
    benchmark::DoNotOptimize(net.loss_and_gradient(data.view(), data.labels));
    sgdm.step(net.parameters());
  };
  step();  // sizes the workspace outside the timing
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    step();
    best = std::min(best, seconds_since(t0));
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["best_img_per_s"] = batch / best;
  state.counters["of_peak"] = training_flops(options) * batch / best / peak(threads);
  const auto torch = best_torch_step.find({preset, batch, threads});
  if (torch != best_torch_step.end()) state.counters["vs_torch"] = torch->second / best;
}

void BM_LeNet5_Forward(benchmark::State& state, const std::string& preset, int batch, int threads) {
  distopt::parallel::ThreadCount scope(threads);
  nn::LeNet5<float> net({.preset = preset_of(preset)});
  const Batch data(batch, 1);
  std::vector<float> logits(static_cast<std::size_t>(batch * 100));
  net.forward(data.view(), logits.data());
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    net.forward(data.view(), logits.data());
    benchmark::DoNotOptimize(logits.data());
    best = std::min(best, seconds_since(t0));
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["best_img_per_s"] = batch / best;
}

#if DISTOPT_HAVE_TORCH
void BM_Torch_LeNet5_TrainStep(benchmark::State& state, const std::string& preset, int batch, int threads) {
  distopt_bench::torch_set_threads(threads);
  distopt_bench::TorchLeNet net(preset, batch);
  net.train_step();
  double best = 1e30;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    net.train_step();
    best = std::min(best, seconds_since(t0));
  }
  auto& reference = best_torch_step[{preset, batch, threads}];
  reference = reference > 0 ? std::min(reference, best) : best;
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["best_img_per_s"] = batch / best;
}
#endif

std::string name(const char* what, const std::string& preset, int batch, int threads) {
  return distopt::message(what, "/", preset, "/", batch, "/", threads);
}

void register_all() {
  for (int t : {1, 2})
    benchmark::RegisterBenchmark(distopt::message("BM_Peak_Fma/", t).c_str(), [t](benchmark::State& s) { BM_Peak_Fma(s, t); })
        ->Iterations(1);
  for (const std::string preset : {"hsu", "classic"})
    for (int batch : {64, 256})
      for (int t : {1, 2}) {
#if DISTOPT_HAVE_TORCH
        benchmark::RegisterBenchmark(name("BM_Torch_LeNet5_TrainStep", preset, batch, t).c_str(),
                                     [=](benchmark::State& s) { BM_Torch_LeNet5_TrainStep(s, preset, batch, t); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
#endif
        benchmark::RegisterBenchmark(name("BM_LeNet5_TrainStep", preset, batch, t).c_str(),
                                     [=](benchmark::State& s) { BM_LeNet5_TrainStep(s, preset, batch, t); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark(name("BM_LeNet5_Forward", preset, batch, t).c_str(),
                                     [=](benchmark::State& s) { BM_LeNet5_Forward(s, preset, batch, t); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
#if DISTOPT_HAVE_TORCH
  benchmark::AddCustomContext("torch", distopt_bench::torch_version() + ", BLAS: " + distopt_bench::torch_blas_info());
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
